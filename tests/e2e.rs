//! End-to-end: the operator (in-process) against the real control plane and
//! real token servers (oidc-provider; the fault server where a fault is
//! needed). Each test checks cluster state and server-side counts, never
//! the operator's logs.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use serde_json::json;
use smart_backend_operator::controller::decide::secret_data::parse_rfc3339;
use smart_backend_operator::smart::SigningAlgorithm;
use support::cluster::{self, wait_deleted, wait_for};
use support::fault_server::{Behaviour, FaultServer};
use support::oidc::{Client, OidcServer, Registration};
use support::operator::{Harness, WAIT, condition};

const SCOPES: &[&str] = &["system/Patient.rs", "system/Observation.rs"];

fn registered_at(harness: &Harness, name: &str, scope: &'static str) -> Client<'static> {
    Client {
        id: "",
        scope,
        key: None,
        registration: Registration::JwksUriAt(harness.jwks_uri(name)),
    }
}

/// An oidc-provider with one client, `id`, allowed `scope`, whose keys the
/// server fetches from the operator's JWKS URL for the resource `id`.
fn oidc_for(h: &Harness, id: &'static str, scope: &'static str, token_ttl: u64) -> OidcServer {
    OidcServer::start(
        &[Client {
            id,
            ..registered_at(h, id, scope)
        }],
        SCOPES,
        token_ttl,
    )
}

/// Client "c", registered at the server through the operator's JWKS URL,
/// applied and Ready.
async fn ready_client_c(h: &Harness) -> OidcServer {
    let server = oidc_for(h, "c", "system/Patient.rs", 300);
    h.apply("c", spec(&server, "c")).await;
    h.wait_ready("c").await;
    server
}

fn spec(server: &OidcServer, client_id: &str) -> serde_json::Value {
    json!({"fhirBaseUrl": server.fhir_base_url, "clientId": client_id, "scopes": ["system/Patient.rs"]})
}

#[tokio::test]
async fn a_client_without_a_key_gets_a_key_a_hosted_jwks_and_a_token() {
    let h = Harness::new("e2e-basic").await;
    let server = oidc_for(&h, "billing", "system/Patient.rs", 300);
    h.apply("billing", spec(&server, "billing")).await;
    let sbc = h.wait_ready("billing").await;
    let status = sbc.status.clone().unwrap();

    let key_secret = h.secret("billing-signing-key").await.expect("key Secret");
    let jwks_in_secret = Harness::value(&key_secret, "public-jwks.json");
    assert_eq!(status.public_jwks.as_deref(), Some(jwks_in_secret.as_str()));
    assert!(
        Harness::value(&key_secret, "private-key.pem").starts_with("-----BEGIN PRIVATE KEY-----")
    );
    let served = reqwest::get(h.jwks_uri("billing")).await.unwrap();
    assert!(
        served.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
    assert_eq!(
        served.headers()["connection"],
        "close",
        "no kept-alive connection for the server to close under an EHR's reuse"
    );
    assert_eq!(served.text().await.unwrap(), jwks_in_secret);

    let token = h.secret("billing-token").await.expect("token Secret");
    let mut keys: Vec<String> = token.data.clone().unwrap().into_keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "access_token",
            "authorization",
            "expires_at",
            "fhir_base_url",
            "scope",
            "token_type"
        ]
    );
    let access = Harness::value(&token, "access_token");
    assert_eq!(
        Harness::value(&token, "authorization"),
        format!("Bearer {access}")
    );
    assert_eq!(Harness::value(&token, "scope"), "system/Patient.rs");
    assert_eq!(
        token.metadata.annotations.as_ref().unwrap()["reloader.stakater.com/ignore"],
        "true"
    );
    assert_eq!(
        token.metadata.owner_references.as_ref().unwrap()[0].uid,
        sbc.metadata.uid.clone().unwrap()
    );
    assert_eq!(
        status.algorithm,
        Some(SigningAlgorithm::RS384),
        "oidc-provider lists RS384 first"
    );
    assert_eq!(
        status.token_expires_at.as_deref(),
        Some(Harness::value(&token, "expires_at").as_str())
    );

    let table = cluster::kubectl(&["get", "sbc", "-n", &h.ns.name]);
    let table = String::from_utf8_lossy(&table.stdout);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "ALGORITHM", "EXPIRES", "AGE"],
        "{table}"
    );
    assert!(table.contains("True") && table.contains("RS384"), "{table}");
    h.wait_event("billing", "KeyGenerated").await;
    h.wait_event("billing", "TokenIssued").await;
    assert_eq!(server.stats().await.1, 1, "exactly one token was issued");

    // Settled: reconciles triggered by our own writes write nothing more.
    let writes = || async {
        h.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with("smart_backend_api_writes_total"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let settled = writes().await;
    assert!(
        settled.iter().any(|l| l.contains("token_secret")),
        "{settled:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        writes().await,
        settled,
        "no API writes while nothing changes"
    );
    // The first token's own writes (token Secret, status) triggered
    // reconciles that found nothing changed and ended without an API
    // request.
    let metrics = h.metrics().await;
    let unchanged: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("smart_backend_reconciles_unchanged_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the unchanged-reconciles counter is exported");
    assert!(unchanged >= 1.0, "{metrics}");
}

/// Waits for the token Secret `c-token` to hold a token other than `first`.
async fn wait_for_new_token(h: &Harness, what: &str, first: &str) -> Secret {
    wait_for(
        what,
        WAIT,
        || async { h.secrets().get_opt("c-token").await.ok().flatten() },
        |s| {
            let token = Harness::value(s, "access_token");
            !token.is_empty() && token != first
        },
    )
    .await
}

#[tokio::test]
async fn short_lived_tokens_are_replaced_before_they_expire() {
    let h = Harness::new("e2e-short").await;
    let server = oidc_for(&h, "c", "system/Patient.rs", 6);
    h.apply("c", spec(&server, "c")).await;
    h.wait_ready("c").await;
    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(16);
    while tokio::time::Instant::now() < deadline {
        let secret = h
            .secret("c-token")
            .await
            .expect("token Secret exists throughout");
        let expires = parse_rfc3339(&Harness::value(&secret, "expires_at")).expect("expires_at");
        assert!(
            expires > SystemTime::now(),
            "the Secret held an expired token"
        );
        seen.insert(Harness::value(&secret, "access_token"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        seen.len() >= 3,
        "expected several refreshes, saw {} tokens",
        seen.len()
    );
}

#[tokio::test]
async fn a_deleted_token_secret_comes_back() {
    let h = Harness::new("e2e-recreate").await;
    let _server = ready_client_c(&h).await;
    let first = Harness::value(&h.secret("c-token").await.unwrap(), "access_token");
    h.secrets()
        .delete("c-token", &Default::default())
        .await
        .expect("delete");
    let back = wait_for_new_token(&h, "the token Secret to come back", &first).await;
    assert!(!Harness::value(&back, "access_token").is_empty());
}

#[tokio::test]
async fn a_token_secret_emptied_by_hand_is_refilled() {
    let h = Harness::new("e2e-emptied").await;
    let _server = ready_client_c(&h).await;
    // Settled: the operator knows the Secret at the version it wrote and
    // reads it no more; a change by someone else must still be seen.
    let first = Harness::value(&h.secret("c-token").await.unwrap(), "access_token");
    h.secrets()
        .patch(
            "c-token",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"data": {"access_token": ""}})),
        )
        .await
        .expect("empty the token");
    let refilled = wait_for_new_token(&h, "the token Secret to hold a token again", &first).await;
    assert_ne!(Harness::value(&refilled, "access_token"), first);
}

fn token_json(token: &str, expires_in: u64) -> Behaviour {
    Behaviour::json(
        200,
        json!({"access_token": token, "token_type": "Bearer", "expires_in": expires_in, "scope": "system/Patient.rs"}),
    )
}

#[tokio::test]
async fn an_outage_keeps_the_token_secret_byte_for_byte_and_recovery_follows() {
    let h = Harness::new("e2e-outage").await;
    let server = FaultServer::start().await;
    server.serve_metadata("/fhir");
    server.on("/token", token_json("token-one", 600));
    h.apply("c", json!({"fhirBaseUrl": server.url("/fhir"), "clientId": "c", "scopes": ["system/Patient.rs"]})).await;
    h.wait_ready("c").await;
    let before = h.secret("c-token").await.unwrap();

    server.on("/token", Behaviour::html(503));
    h.annotate("c", "smartbackend.dev/refresh-requested-at", "outage-1")
        .await;
    let failing = h
        .wait_condition("c", "Ready", "False", Some("TokenEndpointUnavailable"))
        .await;
    let message = &condition(&failing, "Ready").unwrap().message;
    assert!(message.contains("stays valid until"), "{message}");
    assert!(
        !message.contains("internal-host-42"),
        "server text must not leak: {message}"
    );
    // Several retries, each with a fresh assertion, and the Secret untouched.
    wait_for(
        "three failed attempts",
        WAIT,
        || async { Some(server.requests("/token").len()) },
        |n| *n >= 4,
    )
    .await;
    let after = h.secret("c-token").await.unwrap();
    assert_eq!(
        after.data, before.data,
        "the Secret's data must be byte-identical during the outage"
    );
    let jtis: BTreeSet<String> = server
        .requests("/token")
        .iter()
        .map(|r| r.body.clone())
        .collect();
    assert_eq!(
        jtis.len(),
        server.requests("/token").len(),
        "every attempt carries a new assertion"
    );

    server.on("/token", token_json("token-two", 600));
    let recovered = wait_for(
        "the new token after recovery",
        WAIT,
        || async { h.secrets().get_opt("c-token").await.ok().flatten() },
        |s| Harness::value(s, "access_token") == "token-two",
    )
    .await;
    assert_eq!(
        Harness::value(&recovered, "authorization"),
        "Bearer token-two"
    );
    h.wait_ready("c").await;
}

#[tokio::test]
async fn a_client_the_ehr_does_not_know_yet_awaits_registration_quietly() {
    // Waiting retries come no more often than the refresh floor.
    let h = Harness::with("e2e-invalid", |s| {
        s.timing.min_refresh_interval = Duration::from_secs(20)
    })
    .await;
    let other = support::signing_key(SigningAlgorithm::ES384);
    let server = OidcServer::start(
        &[Client {
            id: "c",
            scope: "system/Patient.rs",
            key: Some(&other),
            registration: Registration::Inline,
        }],
        SCOPES,
        300,
    );
    h.apply("c", spec(&server, "c")).await;
    let sbc = h
        .wait_condition("c", "Ready", "False", Some("AwaitingRegistration"))
        .await;
    let message = &condition(&sbc, "TokenReady").unwrap().message;
    let kid = sbc.status.as_ref().unwrap().kid.clone().unwrap();
    for needed in [kid.as_str(), "client id c", "/jwks/", "system/Patient.rs"] {
        assert!(
            message.contains(needed),
            "the message tells the EHR's administrators {needed}: {message}"
        );
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (requests, issued) = server.stats().await;
    assert_eq!(issued, 0);
    assert_eq!(
        requests, 1,
        "a client awaiting registration is retried slowly, not at the 0.5 s backoff"
    );
    assert!(h.secret("c-token").await.is_none());
    let reasons = h.event_reasons("c").await;
    assert_eq!(
        reasons
            .iter()
            .filter(|r| *r == "AwaitingRegistration")
            .count(),
        1,
        "one event, not a stream: {reasons:?}"
    );
}

#[tokio::test]
async fn changing_the_scopes_issues_a_token_with_the_new_scope() {
    let h = Harness::new("e2e-scopes").await;
    let server = oidc_for(&h, "c", "system/Patient.rs system/Observation.rs", 300);
    h.apply("c", spec(&server, "c")).await;
    h.wait_ready("c").await;
    let mut changed = spec(&server, "c");
    changed["scopes"] = json!(["system/Patient.rs", "system/Observation.rs"]);
    h.apply("c", changed).await;
    wait_for(
        "a token with the new scope",
        WAIT,
        || async { h.secrets().get_opt("c-token").await.ok().flatten() },
        |s| Harness::value(s, "scope") == "system/Patient.rs system/Observation.rs",
    )
    .await;
    assert_eq!(server.stats().await.1, 2);
}

#[tokio::test]
async fn deleting_the_resource_collects_the_token_secret_and_keeps_the_key() {
    let h = Harness::new("e2e-delete").await;
    let _server = ready_client_c(&h).await;
    h.sbcs()
        .delete("c", &Default::default())
        .await
        .expect("delete");
    wait_deleted(&h.secrets(), "c-token", WAIT).await;
    assert!(
        h.secret("c-signing-key").await.is_some(),
        "the generated key is retained by default"
    );
}

#[tokio::test]
async fn a_restarted_operator_requests_no_token_while_the_current_one_is_good() {
    let mut h = Harness::new("e2e-restart").await;
    let server = ready_client_c(&h).await;
    let before = h.secret("c-token").await.unwrap();
    assert_eq!(server.stats().await.0, 1);
    let ns = h.ns.name.clone();
    h.restart(support::operator::test_settings(&ns)).await;
    // The new operator reconciles (its readiness follows the first sync).
    wait_for(
        "the restarted operator to be ready",
        WAIT,
        || async {
            reqwest::get(h.admin_url("/readyz"))
                .await
                .ok()
                .map(|r| r.status().as_u16())
        },
        |s| *s == 200,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        server.stats().await.0,
        1,
        "no token was requested after the restart"
    );
    assert_eq!(h.secret("c-token").await.unwrap().data, before.data);
}

#[tokio::test]
async fn two_resources_naming_one_token_secret_conflict_without_flapping() {
    let h = Harness::new("e2e-conflict").await;
    let server = OidcServer::start(
        &[
            Client {
                id: "a",
                ..registered_at(&h, "a", "system/Patient.rs")
            },
            Client {
                id: "b",
                ..registered_at(&h, "b", "system/Patient.rs")
            },
        ],
        SCOPES,
        300,
    );
    let shared = |id: &str| {
        let mut s = spec(&server, id);
        s["token"] = json!({"secretName": "shared-token"});
        s
    };
    h.apply("a", shared("a")).await;
    h.wait_ready("a").await;
    h.apply("b", shared("b")).await;
    h.wait_condition("b", "Ready", "False", Some("TargetSecretConflict"))
        .await;
    let version = h
        .secret("shared-token")
        .await
        .unwrap()
        .metadata
        .resource_version;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        h.secret("shared-token")
            .await
            .unwrap()
            .metadata
            .resource_version,
        version,
        "the Secret is not flapping"
    );
    let b = h.sbcs().get("b").await.unwrap();
    assert_eq!(
        condition(&b, "Ready").unwrap().reason,
        "TargetSecretConflict"
    );
    assert_eq!(server.stats().await.0, 1, "b never requested a token");
}

#[tokio::test]
async fn a_foreign_secret_in_the_way_is_never_overwritten() {
    let h = Harness::new("e2e-foreign").await;
    let server = oidc_for(&h, "c", "system/Patient.rs", 300);
    let foreign: Secret = serde_json::from_value(
        json!({"metadata": {"name": "c-token"}, "stringData": {"mine": "yes"}}),
    )
    .unwrap();
    h.secrets()
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    h.apply("c", spec(&server, "c")).await;
    h.wait_condition("c", "Ready", "False", Some("TargetSecretConflict"))
        .await;
    let secret = h.secret("c-token").await.unwrap();
    assert_eq!(Harness::value(&secret, "mine"), "yes");
    assert!(!secret.data.unwrap().contains_key("access_token"));
}

#[tokio::test]
async fn referenced_keys_of_the_wrong_type_or_garbage_give_key_invalid() {
    let h = Harness::new("e2e-badkey").await;
    let server = OidcServer::start(&[], SCOPES, 300);
    let p256 =
        std::fs::read(cluster::repo_root().join("tests/fixtures/keys/p256-pkcs8.pem")).unwrap();
    for (name, bytes, expected) in [
        ("p256", p256, "P-256"),
        ("garbage", b"not a key".to_vec(), "neither PEM nor"),
    ] {
        let secret = support::key_secret(&format!("{name}-key"), bytes, true);
        h.secrets()
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        let mut s = spec(&server, name);
        s["signing"] = json!({"keySecretRef": {"name": format!("{name}-key"), "key": "key.pem"}});
        h.apply(name, s).await;
        let sbc = h
            .wait_condition(name, "KeyReady", "False", Some("KeyInvalid"))
            .await;
        let message = &condition(&sbc, "KeyReady").unwrap().message;
        assert!(message.contains(expected), "{name}: {message}");
        assert!(
            message.contains(&format!("{name}-key")),
            "the message names the Secret: {message}"
        );
    }
    let mut missing = spec(&server, "missing");
    missing["signing"] = json!({"keySecretRef": {"name": "nope", "key": "key.pem"}});
    h.apply("missing", missing).await;
    h.wait_condition("missing", "KeyReady", "False", Some("KeySecretNotFound"))
        .await;
}

#[tokio::test]
async fn algorithm_choice_follows_metadata_and_unsupported_lists_are_explained() {
    let h = Harness::new("e2e-algs").await;
    let omit = OidcServer::start_with(
        &[Client {
            id: "c",
            ..registered_at(&h, "c", "system/Patient.rs")
        }],
        SCOPES,
        300,
        json!("omit"),
    );
    h.apply("c", spec(&omit, "c")).await;
    let sbc = h.wait_ready("c").await;
    assert_eq!(
        sbc.status.as_ref().unwrap().algorithm,
        Some(SigningAlgorithm::RS384)
    );
    let discovered = &condition(&sbc, "Discovered").unwrap().message;
    assert!(discovered.contains("lists no algorithms"), "{discovered}");

    // The same server, no list: a referenced EC P-384 key signs with ES384.
    let ec = support::signing_key(SigningAlgorithm::ES384);
    let omit_ec = OidcServer::start_with(
        &[Client {
            id: "k",
            scope: "system/Patient.rs",
            key: Some(&ec),
            registration: Registration::Inline,
        }],
        SCOPES,
        300,
        json!("omit"),
    );
    let pem = support::pem(&ec);
    let secret = support::key_secret("k-key", pem.as_bytes().to_vec(), true);
    h.secrets()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let mut referenced = spec(&omit_ec, "k");
    referenced["signing"] = json!({"keySecretRef": {"name": "k-key", "key": "key.pem"}});
    h.apply("k", referenced).await;
    let sbc = h.wait_ready("k").await;
    assert_eq!(
        sbc.status.as_ref().unwrap().algorithm,
        Some(SigningAlgorithm::ES384)
    );

    let es = OidcServer::start_with(
        &[Client {
            id: "e",
            ..registered_at(&h, "e", "system/Patient.rs")
        }],
        SCOPES,
        300,
        json!(["ES384", "RS384"]),
    );
    h.apply("e", spec(&es, "e")).await;
    let sbc = h.wait_ready("e").await;
    assert_eq!(
        sbc.status.as_ref().unwrap().algorithm,
        Some(SigningAlgorithm::ES384)
    );

    let unsupported = OidcServer::start_with(&[], SCOPES, 300, json!(["RS256", "PS256"]));
    h.apply("u", spec(&unsupported, "u")).await;
    let sbc = h
        .wait_condition("u", "Discovered", "False", Some("NoSupportedAlgorithm"))
        .await;
    let message = &condition(&sbc, "Ready").unwrap().message;
    assert!(message.contains("RS256, PS256"), "{message}");
    assert!(
        h.secret("u-signing-key").await.is_none(),
        "no key is generated for a server that cannot accept it"
    );
}

#[tokio::test]
async fn a_published_key_that_disappears_is_not_replaced_until_asked() {
    let h = Harness::new("e2e-keymissing").await;
    let server = oidc_for(&h, "c", "system/Patient.rs", 300);
    h.apply("c", spec(&server, "c")).await;
    let sbc = h.wait_ready("c").await;
    let old_kid = sbc.status.unwrap().kid.unwrap();
    h.secrets()
        .delete("c-signing-key", &Default::default())
        .await
        .unwrap();
    h.annotate("c", "smartbackend.dev/refresh-requested-at", "1")
        .await;
    let sbc = h
        .wait_condition("c", "KeyReady", "False", Some("KeyMissing"))
        .await;
    assert!(
        condition(&sbc, "KeyReady")
            .unwrap()
            .message
            .contains("smartbackend.dev/regenerate-key")
    );
    assert!(
        h.secret("c-signing-key").await.is_none(),
        "no silent regeneration"
    );

    h.annotate("c", "smartbackend.dev/regenerate-key", "please")
        .await;
    let sbc = h.wait_condition("c", "KeyReady", "True", None).await;
    let new_kid = sbc.status.unwrap().kid.unwrap();
    assert_ne!(new_kid, old_kid);
    assert!(h.secret("c-signing-key").await.is_some());
}

#[tokio::test]
async fn suspend_stops_refreshing_and_keeps_the_secret() {
    let h = Harness::new("e2e-suspend").await;
    let server = ready_client_c(&h).await;
    let mut suspended = spec(&server, "c");
    suspended["suspend"] = json!(true);
    h.apply("c", suspended).await;
    h.wait_condition("c", "Ready", "False", Some("Suspended"))
        .await;
    h.annotate(
        "c",
        "smartbackend.dev/refresh-requested-at",
        "while-suspended",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(server.stats().await.0, 1);
    assert!(h.secret("c-token").await.is_some());
}

#[tokio::test]
async fn urls_aimed_at_internal_addresses_are_refused_before_any_request() {
    // Default destination rules: nothing on loopback or link-local.
    let h = Harness::with("e2e-ssrf", |s| s.http.destinations = Default::default()).await;
    let internal = FaultServer::start().await;
    internal.serve_metadata("/fhir");
    h.apply("loop", json!({"fhirBaseUrl": internal.url("/fhir"), "clientId": "c", "scopes": ["system/Patient.rs"]}))
        .await;
    let sbc = h
        .wait_condition("loop", "Discovered", "False", Some("DiscoveryFailed"))
        .await;
    let message = &condition(&sbc, "Discovered").unwrap().message;
    assert!(
        message.contains("loopback") && message.contains("--allow-host"),
        "{message}"
    );
    h.apply(
        "metadata",
        json!({"fhirBaseUrl": "http://169.254.169.254/latest", "clientId": "c", "scopes": ["system/Patient.rs"]}),
    )
    .await;
    let sbc = h
        .wait_condition("metadata", "Discovered", "False", Some("DiscoveryFailed"))
        .await;
    assert!(
        condition(&sbc, "Discovered")
            .unwrap()
            .message
            .contains("link-local")
    );
    assert!(
        internal
            .requests("/fhir/.well-known/smart-configuration")
            .is_empty(),
        "nothing reached the internal server"
    );
}

#[tokio::test]
async fn a_client_cannot_reach_a_secret_in_another_namespace() {
    let other = cluster::TestNamespace::new("e2e-victim").await;
    let victim_key =
        std::fs::read(cluster::repo_root().join("tests/fixtures/keys/p384-pkcs8.pem")).unwrap();
    let secret = support::key_secret("shared-key", victim_key, true);
    let victim = other
        .api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let other_name = other.name.clone();
    // The operator watches both namespaces, as a cluster-wide install would.
    let h = Harness::with("e2e-attacker", |s| s.namespaces.push(other_name)).await;
    let server = OidcServer::start(&[], SCOPES, 300);
    let mut attack = spec(&server, "c");
    attack["signing"] = json!({"keySecretRef": {"name": "shared-key", "key": "key.pem"}});
    h.apply("c", attack).await;
    let sbc = h
        .wait_condition("c", "KeyReady", "False", Some("KeySecretNotFound"))
        .await;
    assert!(
        condition(&sbc, "KeyReady")
            .unwrap()
            .message
            .contains(&h.ns.name),
        "the lookup stayed in its own namespace"
    );
    let after = other.api::<Secret>().get("shared-key").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, victim.metadata.resource_version,
        "the other namespace's Secret is untouched"
    );
    assert!(
        other
            .api::<Secret>()
            .get_opt("c-token")
            .await
            .unwrap()
            .is_none()
    );
}
