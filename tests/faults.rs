//! Faults at the operator level, against the real control plane and the
//! fault server: rate limits, bad answers, a discovery outage with a cached
//! configuration, many clients due at once, and keys left behind by a crash
//! or created by racing replicas. Each test asserts cluster state and counts
//! the requests the server received.

mod support;

use std::time::Duration;

use kube::api::PostParams;
use serde_json::json;
use smart_backend_operator::smart::{PrivateKey, SigningAlgorithm};
use support::cluster::wait_for;
use support::fault_server::{Behaviour, FaultServer};
use support::operator::{Harness, WAIT, condition, start_operator, test_settings};

fn token(value: &str) -> Behaviour {
    Behaviour::token(value, 600, None)
}

async fn ready_client(h: &Harness, server: &FaultServer, name: &str) {
    h.apply(name, json!({"fhirBaseUrl": server.url("/fhir"), "clientId": name, "scopes": ["system/Patient.rs"]}))
        .await;
    h.wait_ready(name).await;
}

#[tokio::test]
async fn no_request_is_sent_before_retry_after() {
    let h = Harness::new("fault-429").await;
    let server = FaultServer::start().await;
    server.serve_metadata("/fhir");
    server.on("/token", token("one"));
    ready_client(&h, &server, "c").await;

    server.on(
        "/token",
        Behaviour::json(429, json!({})).with_header("retry-after", "4"),
    );
    h.annotate("c", "smartbackend.dev/refresh-requested-at", "1")
        .await;
    h.wait_condition("c", "Ready", "False", Some("RateLimited"))
        .await;
    server.on("/token", token("two"));
    wait_for(
        "the token after the rate limit",
        WAIT,
        || async { h.secret("c-token").await },
        |s| Harness::value(s, "access_token") == "two",
    )
    .await;
    let requests = server.requests("/token");
    let limited = &requests[requests.len() - 2];
    let next = &requests[requests.len() - 1];
    let waited = next.at.duration_since(limited.at);
    assert!(
        waited >= Duration::from_secs(4),
        "the next request came after {waited:?}, before Retry-After; all: {:?}",
        requests
            .iter()
            .map(|r| r.at.duration_since(requests[0].at))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn bad_token_answers_give_a_condition_and_keep_the_token() {
    let h = Harness::new("fault-bad").await;
    let server = FaultServer::start().await;
    server.serve_metadata("/fhir");
    server.on("/token", token("good"));
    ready_client(&h, &server, "c").await;
    let before = h.secret("c-token").await.unwrap().data;
    let cases = [
        ("html", Behaviour::html(200)),
        (
            "no-token",
            Behaviour::json(200, json!({"token_type": "Bearer", "expires_in": 60})),
        ),
        (
            "dpop",
            Behaviour::json(
                200,
                json!({"access_token": "x", "token_type": "DPoP", "expires_in": 60}),
            ),
        ),
        (
            "absurd",
            Behaviour::json(
                200,
                json!({"access_token": "x", "token_type": "Bearer", "expires_in": 1e12}),
            ),
        ),
    ];
    for (i, (name, behaviour)) in cases.into_iter().enumerate() {
        server.on("/token", behaviour);
        let sent = server.requests("/token").len();
        h.annotate(
            "c",
            "smartbackend.dev/refresh-requested-at",
            &format!("bad-{i}"),
        )
        .await;
        wait_for(
            &format!("the {name} answer"),
            WAIT,
            || async { Some(server.requests("/token").len()) },
            |n| *n > sent,
        )
        .await;
        let sbc = h
            .wait_condition("c", "TokenReady", "False", Some("InvalidTokenResponse"))
            .await;
        assert!(
            condition(&sbc, "Ready")
                .unwrap()
                .message
                .contains("stays valid until"),
            "{name}"
        );
        assert_eq!(
            h.secret("c-token").await.unwrap().data,
            before,
            "{name}: the token was kept"
        );
    }
}

#[tokio::test]
async fn a_discovery_outage_with_a_cached_configuration_keeps_refreshing() {
    let h = Harness::new("fault-disc").await;
    let server = FaultServer::start().await;
    server.serve_metadata("/fhir");
    server.on("/token", token("one"));
    ready_client(&h, &server, "c").await;
    // A token-endpoint error marks the cached configuration stale ...
    server.on("/token", Behaviour::html(503));
    h.annotate("c", "smartbackend.dev/refresh-requested-at", "1")
        .await;
    h.wait_condition("c", "Ready", "False", Some("TokenEndpointUnavailable"))
        .await;
    // ... so the retry re-discovers, which now fails, and the cache serves.
    server.on(
        "/fhir/.well-known/smart-configuration",
        Behaviour::html(503),
    );
    server.on("/token", token("two"));
    wait_for(
        "a token despite the discovery outage",
        WAIT,
        || async { h.secret("c-token").await },
        |s| Harness::value(s, "access_token") == "two",
    )
    .await;
    let sbc = h.wait_ready("c").await;
    assert!(
        condition(&sbc, "Discovered")
            .unwrap()
            .message
            .contains("cached"),
        "{:?}",
        condition(&sbc, "Discovered")
    );
}

#[tokio::test]
async fn token_requests_to_one_server_are_capped() {
    let h = Harness::with("fault-herd", |s| s.per_server_concurrency = 2).await;
    let server = FaultServer::start().await;
    server.serve_metadata("/fhir");
    server.on(
        "/token",
        Behaviour::Delayed(Duration::from_millis(400), Box::new(token("t"))),
    );
    let names: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
    for name in &names {
        h.apply(name, json!({"fhirBaseUrl": server.url("/fhir"), "clientId": name, "scopes": ["system/Patient.rs"]}))
            .await;
    }
    for name in &names {
        h.wait_ready(name).await;
    }
    assert_eq!(server.requests("/token").len(), 8);
    assert!(
        server.max_in_flight("/token") <= 2,
        "{} requests at once",
        server.max_in_flight("/token")
    );
}

fn managed_key_secret(
    name: &str,
    client: &str,
    uid: &str,
    key: &PrivateKey,
) -> k8s_openapi::api::core::v1::Secret {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": "smart-backend-operator"},
            "annotations": {"smartbackend.dev/client": client, "smartbackend.dev/client-uid": uid}
        },
        "stringData": {"private-key.pem": key.to_pkcs8_pem().unwrap()}
    }))
    .unwrap()
}

#[tokio::test]
async fn a_key_created_before_a_crash_is_adopted_not_replaced() {
    let h = Harness::new("fault-crash").await;
    let server = FaultServer::start().await;
    server.serve_metadata("/fhir");
    server.on("/token", token("t"));
    // What a crash between creating the key and writing status leaves.
    let key = PrivateKey::generate(SigningAlgorithm::ES384, 0).unwrap();
    let spec = json!({"fhirBaseUrl": server.url("/fhir"), "clientId": "c", "scopes": ["system/Patient.rs"]});
    let uid = h.apply_suspended("c", spec).await;
    let created = h
        .secrets()
        .create(
            &PostParams::default(),
            &managed_key_secret("c-signing-key", "c", &uid, &key),
        )
        .await
        .unwrap();
    ready_client(&h, &server, "c").await;
    let sbc = h.sbcs().get("c").await.unwrap();
    assert_eq!(sbc.status.unwrap().kid, Some(key.thumbprint()));
    let after = h.secret("c-signing-key").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, created.metadata.resource_version,
        "the key Secret was not rewritten"
    );
    assert!(
        !h.event_reasons("c")
            .await
            .contains(&"KeyGenerated".to_string())
    );
}

#[tokio::test]
async fn two_operators_racing_end_with_one_key() {
    let h = Harness::new("fault-race").await;
    let second = start_operator(h.ns.client.clone(), test_settings(&h.ns.name))
        .await
        .unwrap();
    let server = FaultServer::start().await;
    server.serve_metadata("/fhir");
    server.on("/token", token("t"));
    ready_client(&h, &server, "c").await;
    let secret = h.secret("c-signing-key").await.unwrap();
    let pem = Harness::value(&secret, "private-key.pem");
    let kid = PrivateKey::parse(pem.as_bytes()).unwrap().thumbprint();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sbc = h.sbcs().get("c").await.unwrap();
    assert_eq!(
        sbc.status.unwrap().kid,
        Some(kid),
        "both replicas use the one key that exists"
    );
    assert_eq!(
        h.secret("c-signing-key")
            .await
            .unwrap()
            .metadata
            .resource_version,
        secret.metadata.resource_version
    );
    second.kill();
}

fn metadata_answer(body: Vec<u8>) -> Behaviour {
    Behaviour::Respond {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body,
    }
}

#[tokio::test]
async fn broken_metadata_gives_a_condition_that_names_the_problem_and_no_token_request() {
    let h = Harness::new("fault-meta").await;
    let server = FaultServer::start().await;
    server.on("/token", token("never"));
    let endpoint = |value: &str| {
        metadata_answer(
            json!({
                "token_endpoint": value,
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                "token_endpoint_auth_signing_alg_values_supported": ["ES384"],
            })
            .to_string()
            .into_bytes(),
        )
    };
    let userinfo = format!("http://admin:s3cret@{}/token", server.addr);
    // (case, what the server answers, what the condition must say)
    let cases: Vec<(&str, Behaviour, &str)> = vec![
        (
            "malformed",
            metadata_answer(b"{\"token_endpoint\": ".to_vec()),
            "not a JSON object",
        ),
        ("huge", Behaviour::oversized(3 << 20), "64 KiB"),
        ("relative", endpoint("/token"), "not an absolute URL"),
        ("userinfo", endpoint(&userinfo), "user:password@"),
        (
            "missing",
            metadata_answer(b"{}".to_vec()),
            "set spec.tokenEndpoint",
        ),
        (
            "array",
            metadata_answer(b"[1, 2]".to_vec()),
            "not a JSON object",
        ),
    ];
    for (case, behaviour, _) in &cases {
        server.on(
            &format!("/{case}/.well-known/smart-configuration"),
            behaviour.clone(),
        );
        h.apply(case, json!({"fhirBaseUrl": server.url(&format!("/{case}")), "clientId": case, "scopes": ["system/Patient.rs"]}))
            .await;
    }
    for (case, _, says) in &cases {
        let sbc = h.wait_condition(case, "Ready", "False", None).await;
        let discovered = condition(&sbc, "Discovered").expect("Discovered condition");
        assert_eq!(discovered.status, "False", "{case}");
        assert!(
            discovered.message.contains(says),
            "{case}: the condition should say {says:?}: {:?}",
            discovered.message
        );
        assert!(
            discovered.message.len() < 1024 && !discovered.message.contains("xxxxxxxx"),
            "{case}: the server's answer must not flow back: {:?}",
            discovered.message
        );
        assert!(
            !discovered.message.contains("s3cret"),
            "{case}: a password in metadata is never repeated"
        );
        assert!(h.secret(&format!("{case}-token")).await.is_none(), "{case}");
    }
    assert!(
        server.requests("/token").is_empty(),
        "no token request follows broken metadata"
    );
}

#[tokio::test]
async fn bad_resources_are_refused_at_apply_time_naming_the_field() {
    let h = Harness::new("bad-input").await;
    let good = json!({"fhirBaseUrl": "https://ehr.example.org/fhir", "clientId": "c", "scopes": ["system/Patient.rs"]});
    let with = |path: &[&str], value: serde_json::Value| {
        let mut spec = good.clone();
        let mut at = &mut spec;
        for key in &path[..path.len() - 1] {
            at = at
                .as_object_mut()
                .unwrap()
                .entry(key.to_string())
                .or_insert(json!({}));
        }
        at[path[path.len() - 1]] = value;
        spec
    };
    // (what is wrong, the spec, what the API server's refusal must name)
    let cases = [
        (
            "not a URL",
            with(&["fhirBaseUrl"], json!("ehr.example.org/fhir")),
            "spec.fhirBaseUrl",
        ),
        (
            "ftp URL",
            with(&["fhirBaseUrl"], json!("ftp://ehr.example.org/fhir")),
            "spec.fhirBaseUrl",
        ),
        (
            "user:password@",
            with(&["fhirBaseUrl"], json!("https://u:p@ehr.example.org/fhir")),
            "without user:password@",
        ),
        (
            "bad token endpoint",
            with(&["tokenEndpoint"], json!("/oauth2/token")),
            "spec.tokenEndpoint",
        ),
        ("no scopes", with(&["scopes"], json!([])), "spec.scopes"),
        (
            "scope with a space",
            with(
                &["scopes"],
                json!(["system/Patient.rs system/Observation.rs"]),
            ),
            "spec.scopes[0]",
        ),
        (
            "empty client id",
            with(&["clientId"], json!("")),
            "spec.clientId",
        ),
        (
            "bad duration",
            with(&["token", "refreshBefore"], json!("5 minutes")),
            "spec.token.refreshBefore",
        ),
        (
            // Once accepted, and its time sum stopped every controller.
            "a rotation period past any time sum",
            with(
                &["signing", "rotation", "every"],
                json!("9999999999999999999s"),
            ),
            "spec.signing.rotation.every",
        ),
        (
            "a rotation period over ten years",
            with(&["signing", "rotation", "every"], json!("87601h")),
            "spec.signing.rotation.every",
        ),
        (
            "a refresh lead over a year",
            with(&["token", "refreshBefore"], json!("9000h")),
            "spec.token.refreshBefore",
        ),
        (
            "a huge extra parameter",
            with(
                &["token", "extraParams"],
                json!({"resource": "x".repeat(3000)}),
            ),
            "spec.token.extraParams",
        ),
        (
            "too many Secret labels",
            with(
                &["token", "secretTemplate", "labels"],
                serde_json::Value::Object((0..33).map(|i| (format!("l{i}"), json!("v"))).collect()),
            ),
            "spec.token.secretTemplate.labels",
        ),
        (
            "unknown algorithm",
            with(&["signing", "algorithm"], json!("HS256")),
            "spec.signing.algorithm",
        ),
        (
            "small RSA key",
            with(&["signing", "rsaKeySize"], json!(1024)),
            "spec.signing.rsaKeySize",
        ),
        (
            "key ref without key",
            with(&["signing", "keySecretRef"], json!({"name": "k"})),
            "spec.signing.keySecretRef.key",
        ),
        (
            "reserved token parameter",
            with(&["token", "extraParams"], json!({"scope": "x"})),
            "must not set grant_type",
        ),
    ];
    for (what, spec, names) in cases {
        let body = json!({
            "apiVersion": "smartbackend.dev/v1alpha1", "kind": "SmartBackendClient",
            "metadata": {"name": "bad"}, "spec": spec,
        });
        let refused = h
            .sbcs()
            .patch(
                "bad",
                &kube::api::PatchParams::apply("e2e-tests").force(),
                &kube::api::Patch::Apply(&body),
            )
            .await
            .expect_err(what);
        assert!(
            refused.to_string().contains(names),
            "{what}: the refusal should name {names:?}: {refused}"
        );
    }
    assert!(
        h.sbcs().get_opt("bad").await.unwrap().is_none(),
        "nothing was stored"
    );
}
