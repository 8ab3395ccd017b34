//! Each scenario: the resource, the server's answers, the exact requests.

use serde_json::{Value, json};

use super::fixtures::*;
use super::*;

#[tokio::test]
async fn a_new_client_generates_its_key_publishes_it_and_asks_for_no_token_yet() {
    let (endpoint, tokens) = token_server().await;
    let sbc = client(spec(&endpoint));
    let seen = reconcile_once(
        sbc,
        settings(),
        vec![
            Expect::new("GET", secret_path(TOKEN), 404, status(404, "NotFound")),
            Expect::new("GET", secret_path(KEY), 404, status(404, "NotFound")),
            Expect::written("POST", secrets_path(), json!({})),
            Expect::written("PATCH", status_path(), resource(&endpoint)),
            Expect::written("POST", events_path(), json!({})),
        ],
    )
    .await;
    seen.exactly();
    let [get_token, get_key, create, patch, event] = &seen.calls[..] else {
        panic!("{:#?}", requests(&seen));
    };
    assert!(get_token.body.is_null() && get_key.body.is_null());
    // The key Secret: created (never applied over another's), by the
    // operator, bound to this client's uid.
    assert!(create.by_operator(), "{create:?}");
    assert_eq!(create.body["metadata"]["name"], KEY);
    assert_eq!(
        create.body["metadata"]["annotations"]["smartbackend.dev/client-uid"],
        UID
    );
    // The status: applied by the operator, forced (it owns the status),
    // with the new key published and no token asked for yet.
    assert!(
        patch.by_operator() && patch.param("force") == Some("true"),
        "{patch:?}"
    );
    let status = &patch.body["status"];
    assert_eq!(status["algorithm"], "ES384");
    let kid = status["kid"].as_str().unwrap();
    assert_eq!(status["keys"][0]["state"], "Active");
    assert!(status["publicJwks"].as_str().unwrap().contains(kid));
    assert!(status["tokenExpiresAt"].is_null());
    assert_eq!(event.body["reason"], "KeyGenerated");
    assert_eq!(*tokens.lock().unwrap(), 0, "publish first, use after");
    assert!(seen.result.is_ok());
}

#[tokio::test]
async fn a_key_created_meanwhile_by_another_replica_is_adopted_and_signs() {
    let (endpoint, tokens) = token_server().await;
    let (theirs, kid) = key_secret();
    let seen = reconcile_once(
        client(spec(&endpoint)),
        settings(),
        vec![
            Expect::new("GET", secret_path(TOKEN), 404, status(404, "NotFound")),
            Expect::new("GET", secret_path(KEY), 404, status(404, "NotFound")),
            Expect::new("POST", secrets_path(), 409, status(409, "AlreadyExists")),
            Expect::new("GET", secret_path(KEY), 200, theirs),
        ]
        .into_iter()
        .chain(first_token_written(&endpoint))
        .collect(),
    )
    .await;
    seen.exactly();
    assert_eq!(seen.calls.len(), 7, "{:#?}", requests(&seen));
    let apply = &seen.calls[4];
    assert!(apply.by_operator() && apply.param("force") == Some("true"));
    assert_eq!(apply.body["metadata"]["name"], TOKEN);
    let status = &seen.calls[5].body["status"];
    assert_eq!(
        status["kid"],
        kid.as_str(),
        "their key signs: one key, not two"
    );
    assert!(status["tokenExpiresAt"].is_string());
    assert_eq!(seen.calls[6].body["reason"], "TokenIssued");
    assert_eq!(*tokens.lock().unwrap(), 1);
}

#[tokio::test]
async fn a_forbidden_read_is_said_on_the_resource_and_nothing_else_is_tried() {
    let (endpoint, tokens) = token_server().await;
    let seen = reconcile_once(
        client(spec(&endpoint)),
        settings(),
        vec![
            Expect::new("GET", secret_path(TOKEN), 403, status(403, "Forbidden")),
            Expect::written("PATCH", status_path(), resource(&endpoint)),
            Expect::written("POST", events_path(), json!({})),
        ],
    )
    .await;
    seen.exactly();
    let ready = &seen.calls[1].body["status"]["conditions"][0];
    assert_eq!(ready["reason"], "Forbidden");
    let message = ready["message"].as_str().unwrap();
    assert!(message.contains("get") && message.contains(NS), "{message}");
    assert_eq!(seen.calls[2].body["type"], "Warning");
    assert_eq!(*tokens.lock().unwrap(), 0);
}

#[tokio::test]
async fn a_client_backing_off_is_not_looked_at_at_all() {
    let (endpoint, tokens) = token_server().await;
    let mut sbc = client(spec(&endpoint));
    let retry_at = std::time::SystemTime::now() + Duration::from_secs(120);
    sbc.status = Some(crate::crd::SmartBackendClientStatus {
        consecutive_failures: 2,
        observed_generation: Some(1),
        next_retry_time: Some(crate::controller::decide::secret_data::rfc3339(retry_at)),
        ..Default::default()
    });
    let seen = reconcile_once(sbc, settings(), vec![]).await;
    seen.exactly();
    assert!(seen.calls.is_empty());
    assert_eq!(*tokens.lock().unwrap(), 0);
    let requeue = seen.result.unwrap();
    let wait = format!("{requeue:?}");
    assert!(
        wait.contains("requeue_after: Some"),
        "back when the backoff ends: {wait}"
    );
}

#[tokio::test]
async fn a_busy_server_means_no_request_and_no_write() {
    let (endpoint, tokens) = token_server().await;
    let (theirs, _) = key_secret();
    let mut settings = settings();
    settings.per_server_concurrency = 1;
    let authority = endpoint.authority().to_string();
    let seen = reconcile_holding(
        client(spec(&endpoint)),
        settings,
        vec![
            Expect::new("GET", secret_path(TOKEN), 404, status(404, "NotFound")),
            Expect::new("GET", secret_path(KEY), 200, theirs),
        ],
        // This namespace's one request slot on the server is taken.
        |ctx| {
            ctx.servers
                .admit(&authority, NS, std::time::Instant::now(), None)
        },
    )
    .await;
    seen.exactly();
    assert_eq!(seen.calls.len(), 2);
    assert_eq!(*tokens.lock().unwrap(), 0);
    assert!(seen.result.is_ok());
}

#[tokio::test]
async fn a_drifted_template_is_repaired_with_the_operators_fields_only() {
    use crate::controller::decide::secret_data::{
        TokenSecretInput, build_token_secret, token_inputs_hash,
    };
    use crate::controller::decide::validate::validate;
    let (endpoint, tokens) = token_server().await;
    let (theirs, kid) = key_secret();
    let mut spec = spec(&endpoint);
    spec["token"] = json!({"secretTemplate": {"labels": {"team": "billing"}}});
    let sbc = client(spec);
    let valid = validate(&sbc, NAME, settings().rules()).unwrap();
    let issued = crate::controller::decide::secret_data::whole_second(std::time::SystemTime::now());
    let token = crate::smart::AccessToken {
        access_token: crate::smart::SecretString::new("stored-token"),
        token_type: "Bearer".into(),
        expires_in: Duration::from_secs(3600),
        expires_in_defaulted: false,
        expires_at: issued + Duration::from_secs(3600),
        scope: Some("system/Patient.rs".into()),
    };
    let owner = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "smartbackend.dev/v1alpha1".into(),
        kind: "SmartBackendClient".into(),
        name: NAME.into(),
        uid: UID.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let mut stored = build_token_secret(&TokenSecretInput {
        spec: &valid,
        namespace: NS,
        client_name: NAME,
        owner,
        token: &token,
        issued_at: issued,
        inputs_hash: &token_inputs_hash(&valid, endpoint.as_str(), &kid),
    });
    // Someone removed the template's label and added one of their own.
    let labels = stored.metadata.labels.as_mut().unwrap();
    labels.remove("team");
    labels.insert("backup.example/include".into(), "true".into());
    stored.metadata.resource_version = Some("3".into());
    let seen = reconcile_once(
        sbc,
        settings(),
        vec![
            Expect::new(
                "GET",
                secret_path(TOKEN),
                200,
                serde_json::to_value(&stored).unwrap(),
            ),
            Expect::new("GET", secret_path(KEY), 200, theirs),
            Expect::written("PATCH", secret_path(TOKEN), json!({})),
            Expect::written("PATCH", status_path(), resource(&endpoint)),
        ],
    )
    .await;
    seen.exactly();
    let repair = &seen.calls[2];
    assert!(repair.by_operator() && repair.param("force") == Some("true"));
    let labels = &repair.body["metadata"]["labels"];
    assert_eq!(labels["team"], "billing", "the template is restored");
    assert!(
        labels.get("backup.example/include").is_none(),
        "another manager's label is not taken over: {labels}"
    );
    assert_eq!(
        repair.body["data"],
        serde_json::to_value(&stored).unwrap()["data"],
        "the token is the one stored"
    );
    assert_eq!(*tokens.lock().unwrap(), 0, "no token requested");
    assert_eq!(
        seen.calls[3].body["status"]["conditions"][0]["status"],
        "True"
    );
}

#[tokio::test]
async fn a_settled_client_whose_secrets_the_watches_show_unchanged_costs_no_request() {
    let (endpoint, tokens) = token_server().await;
    let (theirs, _) = key_secret();
    let sbc = client(spec(&endpoint));
    let api = MockApi::new(settings());
    // The first reconcile obtains and writes the token (the Secret comes
    // back at version 101, the status at 102).
    let first = api
        .reconcile(
            sbc.clone(),
            vec![
                Expect::new("GET", secret_path(TOKEN), 404, status(404, "NotFound")),
                Expect::new("GET", secret_path(KEY), 200, theirs),
            ]
            .into_iter()
            .chain(first_token_written(&endpoint))
            .collect(),
        )
        .await;
    first.exactly();
    let written = first.calls[2].body.clone();
    let status = first.calls[3].body["status"].clone();
    // The watches now show the operator's own writes, and the resource
    // carries the status it wrote: what the next look sees.
    for (name, version) in [(TOKEN, "101"), (KEY, "7")] {
        let key = (NS.to_string(), name.to_string());
        api.ctx
            .watched_versions
            .lock()
            .unwrap()
            .insert(key, version.to_string());
    }
    let mut settled = sbc.clone();
    settled.status = Some(serde_json::from_value(status).unwrap());
    let second = api.reconcile(settled.clone(), vec![]).await;
    second.exactly();
    assert!(second.calls.is_empty(), "settled: not one request");
    let requeue = format!("{:?}", second.result.unwrap());
    assert!(
        requeue.contains("requeue_after: Some"),
        "back at the refresh: {requeue}"
    );
    assert_eq!(*tokens.lock().unwrap(), 1);
    // Someone else writes the token Secret: the watch shows another
    // version, so the outcome no longer holds and the Secret is read again.
    api.ctx
        .watched_versions
        .lock()
        .unwrap()
        .insert((NS.to_string(), TOKEN.to_string()), "555".to_string());
    let mut changed: Value = written;
    changed["metadata"]["resourceVersion"] = json!("555");
    let third = api
        .reconcile(
            settled,
            vec![Expect::new("GET", secret_path(TOKEN), 200, changed)],
        )
        .await;
    // Read again, found good (the same token): nothing else to do.
    third.exactly();
    assert_eq!(*tokens.lock().unwrap(), 1);
    api.finish().await;
}
