//! Secret hygiene: run the operator through issuance, refresh, an outage and
//! a rejected client with debug logging on, then search every log line,
//! event, condition and status field for each token, assertion and private
//! key the run produced. None may appear.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::json;
use support::fault_server::{Behaviour, FaultServer};
use support::operator::{Harness, condition};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn token(value: &str) -> Behaviour {
    Behaviour::token(value, 600, None)
}

#[tokio::test]
async fn no_token_assertion_or_key_reaches_logs_events_or_status() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .try_init()
        .expect("this test binary installs the only subscriber");

    let h = Harness::with("hygiene", |settings| {
        settings.rotation.jwks_max_age = std::time::Duration::from_secs(1);
        settings.rotation.margin = std::time::Duration::from_secs(1);
    })
    .await;
    let server = FaultServer::start().await;
    server.serve_metadata("/fhir");
    let first = format!("first-{}", uuid::Uuid::new_v4());
    let second = format!("second-{}", uuid::Uuid::new_v4());
    server.on("/token", token(&first));
    h.apply("c", json!({"fhirBaseUrl": server.url("/fhir"), "clientId": "c", "scopes": ["system/Patient.rs"]}))
        .await;
    h.wait_ready("c").await;

    server.on("/token", token(&second));
    h.annotate("c", "smartbackend.dev/refresh-requested-at", "1")
        .await;
    support::cluster::wait_for(
        "the second token",
        support::operator::WAIT,
        || async { h.secret("c-token").await },
        |s| Harness::value(s, "access_token") == second,
    )
    .await;

    server.on("/token", Behaviour::html(503));
    h.annotate("c", "smartbackend.dev/refresh-requested-at", "2")
        .await;
    h.wait_condition("c", "Ready", "False", Some("TokenEndpointUnavailable"))
        .await;
    server.on(
        "/token",
        Behaviour::json(
            401,
            json!({"error": "invalid_client", "error_description": "unknown key"}),
        ),
    );
    h.annotate("c", "smartbackend.dev/refresh-requested-at", "3")
        .await;
    let sbc = h
        .wait_condition("c", "Ready", "False", Some("InvalidClient"))
        .await;
    assert!(
        condition(&sbc, "TokenReady")
            .unwrap()
            .message
            .contains("unknown key")
    );

    // A key rotation: the old and the new private key both pass through.
    let old_key = Harness::value(&h.secret("c-signing-key").await.unwrap(), "private-key.pem");
    let third = format!("third-{}", uuid::Uuid::new_v4());
    server.on("/token", token(&third));
    h.annotate("c", "smartbackend.dev/refresh-requested-at", "4")
        .await;
    h.wait_ready("c").await;
    h.annotate("c", "smartbackend.dev/rotate-key", "1").await;
    let sbcs = h.sbcs();
    support::cluster::wait_for(
        "the rotated key to sign",
        support::operator::WAIT,
        || async { sbcs.get_opt("c").await.ok().flatten() },
        |sbc| {
            sbc.status.as_ref().is_some_and(|s| {
                s.keys.len() == 2
                    && s.keys
                        .iter()
                        .all(|k| k.state != smart_backend_operator::crd::KeyState::Next)
            })
        },
    )
    .await;

    // What must never be shown.
    let mut needles = vec![first.clone(), second.clone(), third.clone()];
    for request in server.requests("/token") {
        let form: Vec<(String, String)> = url::form_urlencoded::parse(request.body.as_bytes())
            .into_owned()
            .collect();
        let assertion = form
            .iter()
            .find(|(k, _)| k == "client_assertion")
            .map(|(_, v)| v.clone())
            .unwrap();
        // The signature alone is enough to recognise an assertion.
        needles.push(assertion.rsplit('.').next().unwrap().to_string());
        needles.push(assertion);
    }
    let key = Harness::value(&h.secret("c-signing-key").await.unwrap(), "private-key.pem");
    assert_ne!(key, old_key, "the rotation replaced the signing key");
    let key = format!("{key}\n{old_key}");
    needles.extend(
        key.lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 32)
            .map(str::to_string),
    );
    assert!(
        needles.len() >= 6,
        "the run produced tokens, assertions and a key"
    );

    // Where they must not be.
    let events: Vec<serde_json::Value> =
        h.ns.api::<k8s_openapi::api::events::v1::Event>()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect();
    let status = serde_json::to_string(&h.sbcs().get("c").await.unwrap().status).unwrap();
    let log_text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        log_text.lines().count() > 10,
        "debug logging captured the run"
    );
    for (place, haystack) in [
        ("logs", log_text),
        ("events", serde_json::to_string(&events).unwrap()),
        ("status", status),
    ] {
        for needle in &needles {
            assert!(
                !haystack.contains(needle.as_str()),
                "a secret value appeared in the {place}"
            );
        }
    }
}
