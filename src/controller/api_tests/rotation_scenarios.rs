//! Mocked-API scenarios of a generated key's rotation: trials, the race
//! for the key Secret, the fall-back to the retiring key, and the wait
//! that counts from when every replica serves the next key.

use serde_json::{Value, json};

use crate::crd::KeyState;

use super::fixtures::*;
use super::*;

#[tokio::test]
async fn a_rotation_that_loses_the_race_for_the_key_secret_writes_no_key_and_no_token() {
    let (endpoint, tokens) = token_server().await;
    let (theirs, kid) = key_secret();
    let mut sbc = client(spec(&endpoint));
    sbc.metadata.annotations = Some(
        [(
            crate::crd::ROTATE_KEY_ANNOTATION.to_string(),
            "now".to_string(),
        )]
        .into(),
    );
    let seen = reconcile_once(
        sbc,
        settings(),
        vec![
            Expect::new("GET", secret_path(TOKEN), 404, status(404, "NotFound")),
            Expect::new("GET", secret_path(KEY), 200, theirs.clone()),
            // The rotation reads the Secret again and writes at that version.
            Expect::new("GET", secret_path(KEY), 200, theirs),
            Expect::new("PUT", secret_path(KEY), 409, status(409, "Conflict")),
            Expect::written("PATCH", status_path(), resource(&endpoint)),
            Expect::written("POST", events_path(), json!({})),
        ],
    )
    .await;
    seen.exactly();
    let put = &seen.calls[3];
    assert!(put.by_operator());
    assert_eq!(
        put.body["metadata"]["resourceVersion"], "7",
        "compare and swap"
    );
    let status = &seen.calls[4].body["status"];
    let key = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "KeyReady")
        .unwrap();
    assert_eq!(key["reason"], "KeySecretUnavailable");
    assert!(key["message"].as_str().unwrap().contains("changed while"));
    assert!(status["kid"].is_null() || status["kid"] == kid.as_str());
    assert_eq!(*tokens.lock().unwrap(), 0);
}

#[tokio::test]
async fn a_refused_trial_backs_off_and_the_working_key_refreshes_in_the_same_reconcile() {
    let (theirs, kid, next_kid) = key_secret_rotating(true);
    let (endpoint, tokens) = token_server_refusing(Some(next_kid.clone())).await;
    let mut sbc = client(spec(&endpoint));
    let refresh = crate::crd::REFRESH_REQUESTED_ANNOTATION.to_string();
    sbc.metadata.annotations = Some([(refresh, "r1".to_string())].into());
    // An earlier status listed the next key: every replica serves it.
    sbc.status = Some(listing(&[
        (&kid, KeyState::Active),
        (&next_kid, KeyState::Next),
    ]));
    let seen = reconcile_once(
        sbc,
        settings(),
        vec![
            Expect::new("GET", secret_path(TOKEN), 404, status(404, "NotFound")),
            Expect::new("GET", secret_path(KEY), 200, theirs),
            // The trial is refused; the key Secret is not touched, and the
            // working key's token is written.
            Expect::written("PATCH", secret_path(TOKEN), json!({})),
            Expect::written("PATCH", status_path(), resource(&endpoint)),
            Expect::written("POST", events_path(), json!({})),
            Expect::written("POST", events_path(), json!({})),
        ],
    )
    .await;
    seen.exactly();
    assert_eq!(
        *tokens.lock().unwrap(),
        2,
        "the trial, then the working key"
    );
    let status = &seen.calls[3].body["status"];
    assert_eq!(status["kid"], kid.as_str(), "the working key still signs");
    assert!(status["tokenExpiresAt"].is_string(), "and has a token");
    assert_eq!(status["keyRotation"]["refusedTrials"], 1);
    assert!(status["keyRotation"]["nextTrialTime"].is_string());
    assert_eq!(
        status["handledRefreshRequest"], "r1",
        "the refresh request is met by the working key's token"
    );
    let reasons: Vec<&Value> = seen.calls[4..].iter().map(|c| &c.body["reason"]).collect();
    assert_eq!(reasons, [&json!("NextKeyRefused"), &json!("TokenIssued")]);
    let note = seen.calls[4].body["note"].as_str().unwrap();
    assert!(note.contains(&next_kid), "{note}");
}

#[tokio::test]
async fn a_server_that_refuses_the_promoted_key_is_answered_by_the_retiring_key() {
    let (theirs, new_kid, old_kid) = key_secret_promoted();
    let (endpoint, tokens) = token_server_refusing(Some(new_kid.clone())).await;
    let mut sbc = client(spec(&endpoint));
    sbc.status = Some(listing(&[
        (&new_kid, KeyState::Active),
        (&old_kid, KeyState::Retiring),
    ]));
    let seen = reconcile_once(
        sbc,
        settings(),
        vec![
            Expect::new("GET", secret_path(TOKEN), 404, status(404, "NotFound")),
            Expect::new("GET", secret_path(KEY), 200, theirs.clone()),
            // The new key is refused, the retiring one brings the token.
            Expect::written("PATCH", secret_path(TOKEN), json!({})),
            // The key Secret is read again and switched back, at its version.
            Expect::new("GET", secret_path(KEY), 200, theirs),
            Expect::written("PUT", secret_path(KEY), json!({})),
            Expect::written("PATCH", status_path(), resource(&endpoint)),
            Expect::written("POST", events_path(), json!({})),
            Expect::written("POST", events_path(), json!({})),
        ],
    )
    .await;
    seen.exactly();
    assert_eq!(
        *tokens.lock().unwrap(),
        2,
        "the refused key, then the retiring one"
    );
    let written = &seen.calls[4].body;
    let data = &written["data"];
    assert!(
        data["next-private-key.pem"].is_string(),
        "the refused key is next again"
    );
    assert!(data["retiring-private-key.pem"].is_null(), "{data}");
    let status = &seen.calls[5].body["status"];
    assert_eq!(
        status["kid"],
        old_kid.as_str(),
        "the retiring key signs again"
    );
    assert!(status["tokenExpiresAt"].is_string());
    let states: Vec<(&Value, &Value)> = status["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (&k["kid"], &k["state"]))
        .collect();
    assert_eq!(
        states,
        [
            (&json!(old_kid), &json!("Active")),
            (&json!(new_kid), &json!("Next"))
        ]
    );
    assert_eq!(status["keyRotation"]["refusedTrials"], 1);
    assert!(status["keyRotation"]["nextTrialTime"].is_string());
    let reasons: Vec<&Value> = seen.calls[6..].iter().map(|c| &c.body["reason"]).collect();
    assert_eq!(reasons, [&json!("KeyFellBack"), &json!("TokenIssued")]);
}

#[tokio::test]
async fn a_next_key_no_status_has_listed_is_not_tried_and_its_wait_starts_now() {
    // The key Secret holds a next key published an hour ago, but no status
    // carried it (its status writes failed): no replica served it yet.
    let (theirs, _, next_kid) = key_secret_rotating(true);
    let (endpoint, tokens) = token_server_refusing(Some(next_kid.clone())).await;
    let before = std::time::SystemTime::now();
    let seen = reconcile_once(
        client(spec(&endpoint)),
        settings(),
        vec![
            Expect::new("GET", secret_path(TOKEN), 404, status(404, "NotFound")),
            Expect::new("GET", secret_path(KEY), 200, theirs),
            Expect::written("PATCH", secret_path(TOKEN), json!({})),
            Expect::written("PATCH", status_path(), resource(&endpoint)),
            Expect::written("POST", events_path(), json!({})),
        ],
    )
    .await;
    seen.exactly();
    assert_eq!(*tokens.lock().unwrap(), 1, "no trial: only the working key");
    let served = &seen.calls[3].body["status"]["keyRotation"]["nextKeyServed"];
    assert_eq!(served["kid"], next_kid.as_str());
    let since =
        crate::controller::decide::secret_data::parse_rfc3339(served["since"].as_str().unwrap())
            .unwrap();
    assert!(since >= before, "its wait counts from this status write");
}
