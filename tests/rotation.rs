//! Key rotation against an independent server. oidc-provider keeps a JWK Set
//! it fetched from a client's jwks_uri for max(60 s, the served max-age) and
//! does not fetch it again for an unknown kid: a key used before that cache
//! expires is refused. Its own request and issue counts judge the rotation.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use serde_json::{Value, json};
use smart_backend_operator::crd::{KeyState, SmartBackendClient};
use smart_backend_operator::smart::SigningAlgorithm;
use support::cluster::{TestNamespace, kubeconfig_path};
use support::oidc::{Client, OidcServer, Registration};
use support::operator::{Harness, install_crd};
use support::process::{Launch, OperatorProcess, free_port};

const SCOPE: &str = "system/Patient.rs";
const ROTATE: &str = "smartbackend.dev/rotate-key";

/// The operator binary with the JWKS max-age oidc-provider honours at the
/// least (60 s), a short margin and short assertions.
fn operator(namespace: &str, port: u16) -> OperatorProcess {
    OperatorProcess::spawn_args(
        &Launch {
            kubeconfig: &kubeconfig_path(),
            watch_namespace: namespace,
            lease_namespace: namespace,
            lease_name: "sbo-rotation",
            lease_duration: Duration::from_secs(2),
            admin_port: port,
        },
        &[],
        &[
            "--jwks-max-age",
            "60",
            "--rotation-margin",
            "5s",
            "--assertion-lifetime",
            "10s",
        ],
    )
}

fn keys(sbc: &SmartBackendClient) -> Vec<(String, KeyState)> {
    let status = sbc.status.clone().unwrap_or_default();
    status.keys.into_iter().map(|k| (k.kid, k.state)).collect()
}

async fn served_kids(uri: &str) -> Vec<String> {
    let Ok(response) = reqwest::get(uri).await else {
        return Vec::new();
    };
    let set: Value = response.json().await.unwrap_or_default();
    set["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["kid"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn keys_rotate_by_annotation_and_by_schedule_with_no_refused_request_through_crashes() {
    let ns = TestNamespace::new("rotation").await;
    install_crd(&ns.client).await;
    let port = free_port();
    let namespace = ns.name.clone();
    let uri = |name: &str| format!("http://127.0.0.1:{port}/jwks/{namespace}/{name}");
    let registered = |id: &'static str| Client {
        id,
        scope: SCOPE,
        key: None,
        registration: Registration::JwksUriAt(uri(id)),
    };
    let server = OidcServer::start(
        &[registered("asked"), registered("scheduled")],
        &[SCOPE],
        300,
    );
    let mut process = operator(&ns.name, port);
    let h = Harness { ns, operator: None };
    let spec = |id: &str, every: Option<&str>| {
        let mut spec =
            json!({"fhirBaseUrl": server.fhir_base_url, "clientId": id, "scopes": [SCOPE]});
        if let Some(every) = every {
            spec["signing"] = json!({"rotation": {"every": every}});
        }
        spec
    };
    h.apply("asked", spec("asked", None)).await;
    h.apply("scheduled", spec("scheduled", Some("90s"))).await;
    let mut first = BTreeMap::new();
    for name in ["asked", "scheduled"] {
        let sbc = h.wait_ready(name).await;
        first.insert(name, sbc.status.unwrap().kid.unwrap());
    }
    let asked_at = std::time::SystemTime::now();
    h.annotate("asked", ROTATE, "1").await;

    // Follow both rotations; kill the operator (as a crash) once the asked
    // client's next key is published and once it has switched.
    let mut next_kid: BTreeMap<&str, String> = BTreeMap::new();
    let mut done: BTreeMap<&str, String> = BTreeMap::new();
    let mut crashes = 0;
    let deadline = Instant::now() + Duration::from_secs(5 * 60);
    while done.len() < 2 {
        for name in ["asked", "scheduled"] {
            let sbc = h.sbcs().get(name).await.expect("get client");
            let keys = keys(&sbc);
            if let Some((kid, _)) = keys.iter().find(|(_, s)| *s == KeyState::Next) {
                let served = served_kids(&uri(name)).await;
                assert!(
                    served.contains(kid) || served.is_empty(),
                    "{name}: next key {kid} in the status but not served ({served:?})"
                );
                next_kid.insert(name, kid.clone());
            }
            if let [(kid, KeyState::Active)] = keys.as_slice()
                && *kid != first[name]
            {
                done.insert(name, kid.clone());
            }
        }
        let asked = keys(&h.sbcs().get("asked").await.expect("get client"));
        let switched = asked.iter().any(|(_, s)| *s == KeyState::Retiring);
        if (crashes == 0 && next_kid.contains_key("asked")) || (crashes == 1 && switched) {
            process.kill();
            process = operator(&h.ns.name, port);
            crashes += 1;
        }
        if Instant::now() > deadline {
            let scheduled = h.sbcs().get("scheduled").await.unwrap().status;
            panic!(
                "the rotations did not finish: asked {asked:?}, done {done:?}, next {next_kid:?}; scheduled: {scheduled:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(crashes, 2, "the operator was killed mid-rotation twice");

    let (requests, issued) = server.stats().await;
    assert_eq!(
        requests,
        issued,
        "the server refused {} token requests",
        requests - issued
    );
    assert!(issued >= 4, "a first token and a trial each: {issued}");
    for name in ["asked", "scheduled"] {
        assert_eq!(
            done[name], next_kid[name],
            "{name}: the published next key is the one that signs"
        );
        assert_eq!(
            served_kids(&uri(name)).await,
            [done[name].clone()],
            "{name}: only the new key is left"
        );
        let sbc = h.wait_ready(name).await;
        let status = sbc.status.unwrap();
        assert_eq!(status.kid.as_deref(), Some(done[name].as_str()));
        let key_secret = h
            .secret(&format!("{name}-signing-key"))
            .await
            .expect("key Secret");
        let data = key_secret.data.unwrap_or_default();
        assert!(
            !data.contains_key("next-private-key.pem"),
            "{name}: no key is left half-rotated"
        );
        for reason in ["KeyRotationStarted", "KeyRotated", "KeyRetired"] {
            h.wait_event(name, reason).await;
        }
        let token = h
            .secret(&format!("{name}-token"))
            .await
            .expect("token Secret");
        assert!(!Harness::value(&token, "access_token").is_empty());
    }
    let asked = h.sbcs().get("asked").await.unwrap().status.unwrap();
    assert_eq!(
        asked.key_rotation.unwrap().handled_request.as_deref(),
        Some("1")
    );
    // For BENCHMARKS.md: from the annotation to the new key signing (the
    // JWKS max-age, 60 s, plus the margin, 5 s, plus two restarts).
    let since = asked.keys[0]
        .since
        .parse::<k8s_openapi::jiff::Timestamp>()
        .unwrap();
    let switched = std::time::SystemTime::from(since);
    let took = switched.duration_since(asked_at).unwrap_or_default();
    eprintln!(
        "rotation by annotation: trigger to switch {} s",
        took.as_secs()
    );
}

/// A client registered by value: the EHR holds a copy of the JWKS. The
/// next key is refused until the new JWKS is registered, the old key keeps
/// signing, and the status says what to do; once registered, the next
/// trial switches.
#[tokio::test]
async fn a_registration_by_value_waits_for_the_new_jwks_and_says_so() {
    let h = Harness::with("rotation-by-value", |settings| {
        settings.rotation.jwks_max_age = Duration::from_secs(1);
        settings.rotation.margin = Duration::from_secs(1);
    })
    .await;
    let key = support::signing_key(SigningAlgorithm::ES384);
    let pem = support::pem(&key);
    let first = OidcServer::start(
        &[Client {
            id: "inline",
            scope: SCOPE,
            key: Some(&key),
            registration: Registration::Inline,
        }],
        &[SCOPE],
        300,
    );
    let spec = |server: &OidcServer| json!({"fhirBaseUrl": server.fhir_base_url, "clientId": "inline", "scopes": [SCOPE]});
    // The key the EHR was given, made for this resource.
    let uid = h.apply_suspended("inline", spec(&first)).await;
    let mut secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("inline-signing-key".into()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_string(),
                    "smart-backend-operator".to_string(),
                )]
                .into(),
            ),
            annotations: Some([("smartbackend.dev/client-uid".to_string(), uid)].into()),
            ..Default::default()
        },
        data: Some(
            [(
                "private-key.pem".to_string(),
                k8s_openapi::ByteString(pem.into_bytes()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    secret = h
        .secrets()
        .create(&PostParams::default(), &secret)
        .await
        .expect("create key Secret");
    assert!(secret.metadata.resource_version.is_some());
    h.apply("inline", spec(&first)).await;
    let ready = h.wait_ready("inline").await;
    assert_eq!(ready.status.unwrap().kid.as_deref(), Some(key.kid()));
    h.annotate("inline", ROTATE, "1").await;

    let api = h.sbcs();
    let refused = support::cluster::wait_for(
        "the next key to be refused and the status to say so",
        Duration::from_secs(60),
        || async { api.get_opt("inline").await.ok().flatten() },
        |sbc| {
            sbc.status
                .as_ref()
                .and_then(|s| s.key_rotation.as_ref())
                .is_some_and(|r| r.refused_trials > 0)
        },
    )
    .await;
    let status = refused.status.clone().unwrap();
    assert_eq!(
        status.kid.as_deref(),
        Some(key.kid()),
        "the old key keeps signing"
    );
    let next = status
        .keys
        .iter()
        .find(|k| k.state == KeyState::Next)
        .expect("a next key")
        .kid
        .clone();
    let message = support::operator::condition(&refused, "KeyReady")
        .unwrap()
        .message
        .clone();
    assert!(
        message.contains(&next) && message.contains("register"),
        "{message}"
    );
    let ready = support::operator::condition(&refused, "Ready").unwrap();
    assert_eq!(
        ready.status, "True",
        "the token in use is still good: {}",
        ready.message
    );
    h.wait_event("inline", "NextKeyRefused").await;

    // The EHR registers the JWKS now published (both keys).
    let published: Value = serde_json::from_str(status.public_jwks.as_deref().unwrap()).unwrap();
    let second = OidcServer::start(
        &[Client {
            id: "inline",
            scope: SCOPE,
            key: None,
            registration: Registration::InlineJwks(published),
        }],
        &[SCOPE],
        300,
    );
    h.apply("inline", spec(&second)).await;
    let switched = support::cluster::wait_for(
        "the next key to sign once registered",
        Duration::from_secs(150),
        || async { api.get_opt("inline").await.ok().flatten() },
        |sbc| {
            sbc.status
                .as_ref()
                .is_some_and(|s| s.kid.as_deref() == Some(next.as_str()))
        },
    )
    .await;
    assert_eq!(
        switched
            .status
            .unwrap()
            .key_rotation
            .unwrap_or_default()
            .refused_trials,
        0
    );
    let (requests, issued) = second.stats().await;
    assert_eq!(requests, issued, "once registered, nothing is refused");
}

/// A key the user provides: the next key is published from another Secret
/// before the user switches to it, and the old one stays published after
/// the switch until nothing it signed is valid.
#[tokio::test]
async fn a_provided_key_is_rotated_by_publishing_the_next_one_first() {
    let h = Harness::with("rotation-provided", |settings| {
        settings.rotation.jwks_max_age = Duration::from_secs(2);
        settings.rotation.margin = Duration::from_secs(1);
        settings.clocks.assertion_lifetime = Duration::from_secs(3);
    })
    .await;
    let (old, new) = (
        support::signing_key(SigningAlgorithm::ES384),
        support::signing_key(SigningAlgorithm::ES384),
    );
    for (name, key) in [("old-key", &old), ("new-key", &new)] {
        let pem = support::pem(key).into_bytes();
        let secret = support::key_secret(name, pem, true);
        h.secrets()
            .create(&PostParams::default(), &secret)
            .await
            .expect("create key Secret");
    }
    let uri = h.jwks_uri("mine");
    let server = OidcServer::start(
        &[Client {
            id: "mine",
            scope: SCOPE,
            key: None,
            registration: Registration::JwksUriAt(uri.clone()),
        }],
        &[SCOPE],
        300,
    );
    let signing = |current: &str, next: Option<&str>| {
        let mut signing = json!({"keySecretRef": {"name": current, "key": "key.pem"}});
        if let Some(next) = next {
            signing["nextKeySecretRef"] = json!({"name": next, "key": "key.pem"});
        }
        json!({"fhirBaseUrl": server.fhir_base_url, "clientId": "mine", "scopes": [SCOPE], "signing": signing})
    };
    h.apply("mine", signing("old-key", Some("new-key"))).await;
    let ready = h.wait_ready("mine").await;
    assert_eq!(
        keys(&ready),
        [
            (old.kid().to_string(), KeyState::Active),
            (new.kid().to_string(), KeyState::Next)
        ]
    );
    assert_eq!(served_kids(&uri).await, [old.kid(), new.kid()]);
    let message = support::operator::condition(&ready, "KeyReady")
        .unwrap()
        .message
        .clone();
    assert!(
        message.contains(new.kid()) && message.contains("switch"),
        "{message}"
    );

    // The switch, as the user makes it.
    h.apply("mine", signing("new-key", None)).await;
    let api = h.sbcs();
    let switched = support::cluster::wait_for(
        "the new key to sign and the old one to retire",
        Duration::from_secs(30),
        || async { api.get_opt("mine").await.ok().flatten() },
        |sbc| {
            keys(sbc)
                == [
                    (new.kid().to_string(), KeyState::Active),
                    (old.kid().to_string(), KeyState::Retiring),
                ]
        },
    )
    .await;
    assert_eq!(switched.status.unwrap().kid.as_deref(), Some(new.kid()));
    assert_eq!(served_kids(&uri).await, [new.kid(), old.kid()]);
    support::cluster::wait_for(
        "the old key to leave the JWKS",
        Duration::from_secs(30),
        || async { Some(served_kids(&uri).await) },
        |kids| kids == &[new.kid().to_string()],
    )
    .await;
    let (_, before) = server.stats().await;
    h.annotate(
        "mine",
        "smartbackend.dev/refresh-requested-at",
        "after-switch",
    )
    .await;
    support::cluster::wait_for(
        "a token signed with the new key",
        Duration::from_secs(30),
        || async { Some(server.stats().await) },
        |(_, issued)| *issued > before,
    )
    .await;
    let (requests, issued) = server.stats().await;
    assert_eq!(requests, issued, "nothing was refused");
}
