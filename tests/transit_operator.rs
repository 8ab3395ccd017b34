//! The operator signs with a key that stays in a real OpenBao: it logs in
//! with Kubernetes auth (a ServiceAccount token with Vault's audience,
//! checked by OpenBao through a TokenReview against the test control
//! plane), publishes the Transit key's public versions at its JWKS URL,
//! and a real OAuth server (oidc-provider) verifies every assertion there.
//! A new Transit version is published first and signs after the wait and a
//! trial, through two operator restarts, with no refused request; no Secret
//! in the namespace holds key material; each key-manager failure keeps the
//! token and says what to do.

mod support;

use std::time::Duration;

use serde_json::json;
use smart_backend_operator::controller::Settings;
use smart_backend_operator::crd::REFRESH_REQUESTED_ANNOTATION;
use smart_backend_operator::smart::signer::{VaultLogin, VaultSettings};
use support::bao::{Bao, signer_policy};
use support::cluster::{kubeconfig_path, kubectl, wait_for};
use support::key_managers::{
    SCOPE, failed_with, no_key_material, server_fetching, token_of, wait_next_published,
    wait_promoted,
};
use support::oidc::OidcServer;
use support::operator::{Harness, condition};

/// OpenBao's Kubernetes auth, pointed at the test control plane; a role
/// `smart` for the ServiceAccount `sbo` of `namespace` (audience `vault`)
/// with `policy`.
async fn kubernetes_auth(bao: &Bao, namespace: &str, policy: &str) {
    let admin: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(kubeconfig_path()).unwrap()).unwrap();
    let cluster = &admin["clusters"][0]["cluster"];
    let ca = std::fs::read_to_string(cluster["certificate-authority"].as_str().unwrap()).unwrap();
    let reviewer = kubectl(&[
        "create",
        "token",
        "sbo-reviewer",
        "-n",
        namespace,
        "--duration=1h",
    ]);
    assert!(
        reviewer.status.success(),
        "{}",
        String::from_utf8_lossy(&reviewer.stderr)
    );
    bao.call("POST", "sys/auth/kubernetes", json!({"type": "kubernetes"}))
        .await;
    bao.call(
        "POST",
        "auth/kubernetes/config",
        json!({
            "kubernetes_host": cluster["server"].as_str().unwrap(),
            "kubernetes_ca_cert": ca,
            "token_reviewer_jwt": String::from_utf8_lossy(&reviewer.stdout).trim(),
            "disable_local_ca_jwt": true,
        }),
    )
    .await;
    bao.call("PUT", "sys/policies/acl/signer", json!({"policy": policy}))
        .await;
    bao.call(
        "POST",
        "auth/kubernetes/role/smart",
        json!({
            "bound_service_account_names": ["sbo"],
            "bound_service_account_namespaces": [namespace],
            "audience": "vault",
            "token_policies": ["signer"],
            "token_ttl": "1h",
        }),
    )
    .await;
}

/// The ServiceAccounts: `sbo` (the operator's identity in Vault) and
/// `sbo-reviewer`, allowed to create TokenReviews (OpenBao's reviewer).
fn service_accounts(namespace: &str) {
    for args in [
        vec!["create", "serviceaccount", "sbo", "-n", namespace],
        vec!["create", "serviceaccount", "sbo-reviewer", "-n", namespace],
    ] {
        let out = kubectl(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let binding = format!("{namespace}-reviewer");
    let _ = kubectl(&[
        "delete",
        "clusterrolebinding",
        &binding,
        "--ignore-not-found",
    ]);
    let out = kubectl(&[
        "create",
        "clusterrolebinding",
        &binding,
        "--clusterrole=system:auth-delegator",
        &format!("--serviceaccount={namespace}:sbo-reviewer"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn vault_settings(bao: &Bao, jwt_file: &std::path::Path) -> impl FnOnce(&mut Settings) {
    let address = bao.address.parse().unwrap();
    let jwt_file = jwt_file.to_path_buf();
    move |settings: &mut Settings| {
        settings.vault = Some(VaultSettings {
            address,
            transit_mount: "transit".into(),
            login: VaultLogin::Kubernetes {
                mount: "kubernetes".into(),
                role: "smart".into(),
                jwt_file,
            },
            ca_bundle_pem: None,
        });
        // oidc-provider keeps a fetched JWK Set for at least 60 s whatever
        // the max-age says (tests/rotation.rs): the operator must wait that.
        settings.rotation.jwks_max_age = Duration::from_secs(60);
        settings.rotation.margin = Duration::from_secs(2);
    }
}

/// The operator's ServiceAccount token for Vault, as the chart projects it.
fn write_vault_jwt(namespace: &str, path: &std::path::Path) {
    let token = kubectl(&[
        "create",
        "token",
        "sbo",
        "-n",
        namespace,
        "--audience=vault",
        "--duration=1h",
    ]);
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    std::fs::write(path, token.stdout).unwrap();
}

/// What each test starts from: OpenBao with the Transit key
/// `<namespace>.billing` (ES384) and Kubernetes auth for the operator with
/// the policy `policy(key)`; an operator configured for it; oidc-provider
/// with the client `billing` registered at the operator's JWKS URL.
struct World {
    bao: Bao,
    h: Harness,
    ns: String,
    key: String,
    server: OidcServer,
    jwt_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new(prefix: &str, policy: impl FnOnce(&str) -> String) -> Self {
        let bao = Bao::start().await;
        let dir = tempfile::tempdir().unwrap();
        let jwt_file = dir.path().join("vault-token");
        let h = Harness::with(prefix, vault_settings(&bao, &jwt_file)).await;
        let ns = h.ns.name.clone();
        let key = format!("{ns}.billing");
        service_accounts(&ns);
        kubernetes_auth(&bao, &ns, &policy(&key)).await;
        write_vault_jwt(&ns, &jwt_file);
        bao.create_key(&key, "ecdsa-p384").await;
        let server = server_fetching(&h, "billing");
        World {
            bao,
            h,
            ns,
            key,
            server,
            jwt_file,
            _dir: dir,
        }
    }

    /// The operator stopped and started again, with the same settings and
    /// the same JWKS URL.
    async fn restart(&mut self) {
        let mut settings = support::operator::test_settings(&self.ns);
        vault_settings(&self.bao, &self.jwt_file)(&mut settings);
        self.h.restart_in_place(settings).await;
    }

    /// A client signing with the Transit key `<namespace>.<key>`.
    fn spec(&self, key: &str) -> serde_json::Value {
        json!({"fhirBaseUrl": self.server.fhir_base_url, "clientId": "billing", "scopes": [SCOPE],
               "signing": {"vaultTransit": {"key": key}}})
    }
}

#[tokio::test]
async fn an_operator_signs_in_transit_and_rotates_its_versions_with_no_refusal() {
    let mut w = World::new("transit-op", signer_policy).await;
    w.h.apply("billing", w.spec("billing")).await;
    let sbc = w.h.wait_ready("billing").await;
    assert_eq!(sbc.status.as_ref().unwrap().key_secret_name, None);
    let key_condition = condition(&sbc, "KeyReady")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        key_condition.contains(&format!("in Transit key {}", w.key)),
        "{key_condition}"
    );
    assert!(!token_of(&w.h.wait_secret("billing-token").await).is_empty());
    no_key_material(&w.h).await;

    // A new version in the key manager: published first ...
    w.bao
        .call("POST", &format!("transit/keys/{}/rotate", w.key), json!({}))
        .await;
    w.h.annotate("billing", REFRESH_REQUESTED_ANNOTATION, "v2-published")
        .await;
    let next_kid = wait_next_published(&w.h).await;
    // ... through an operator restart (its state is the status) ...
    w.restart().await;
    // ... and after the JWKS max-age (60 s here) and the margin, a token
    // request tries it, and the token it brings makes it the signing one.
    wait_promoted(&w.h, &next_kid).await;
    // Another restart: the new version goes on signing.
    w.restart().await;
    let before = token_of(&w.h.secret("billing-token").await.unwrap());
    w.h.annotate("billing", REFRESH_REQUESTED_ANNOTATION, "v2-signs")
        .await;
    let secrets = w.h.secrets();
    wait_for(
        "a token signed by the new version",
        Duration::from_secs(60),
        || async { secrets.get_opt("billing-token").await.ok().flatten() },
        |s| token_of(s) != before,
    )
    .await;
    let now = w.h.sbcs().get("billing").await.unwrap();
    assert_eq!(now.status.and_then(|s| s.kid), Some(next_kid));
    let (requests, issued) = w.server.stats().await;
    assert!(requests >= 3, "{requests}");
    assert_eq!(requests, issued, "no request was refused");
    no_key_material(&w.h).await;
}

#[tokio::test]
async fn key_manager_failures_keep_the_token_and_say_what_to_do() {
    // Allowed to read its key, not to sign with it.
    let reader = |key: &str| format!(r#"path "transit/keys/{key}" {{ capabilities = ["read"] }}"#);
    let w = World::new("transit-fail", reader).await;
    let (bao, h, ns, key) = (&w.bao, &w.h, &w.ns, &w.key);
    let spec = |key: &str| w.spec(key);
    h.apply("billing", spec("billing")).await;
    let message = failed_with(h, "billing", "TokenReady", "KeyManagerForbidden").await;
    assert!(
        message.contains(&format!(r#"path "transit/sign/{key}/sha2-384""#)),
        "{message}"
    );

    // Granted: the operator logs in again and signs.
    let granted = format!(
        "{}\npath \"transit/keys/{ns}.*\" {{ capabilities = [\"read\"] }}",
        signer_policy(key)
    );
    bao.call("PUT", "sys/policies/acl/signer", json!({"policy": granted}))
        .await;
    h.annotate("billing", REFRESH_REQUESTED_ANNOTATION, "granted")
        .await;
    h.wait_ready("billing").await;
    let token = token_of(&h.wait_secret("billing-token").await);

    // A key that does not exist is named, with how to create it.
    h.apply("other", spec("nope")).await;
    let message = failed_with(h, "other", "KeyReady", "KeyManagerKeyNotFound").await;
    assert!(
        message.contains(&format!("{ns}.nope")) && message.contains("create it"),
        "{message}"
    );

    // Sealed: transient, the token is kept.
    bao.seal().await;
    h.annotate("billing", REFRESH_REQUESTED_ANNOTATION, "sealed")
        .await;
    let message = failed_with(h, "billing", "KeyReady", "KeyManagerUnavailable").await;
    assert!(message.contains("sealed"), "{message}");
    assert_eq!(token_of(&h.secret("billing-token").await.unwrap()), token);
    no_key_material(h).await;
}
