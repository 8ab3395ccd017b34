//! Keycloak, started by `tests/keycloak/keycloak up`, configured through its
//! admin REST API: a realm per test with SMART-style client scopes, and
//! clients that authenticate with signed JWTs (`client-jwt`), registered by
//! JWKS URL or by value.

use serde_json::{Value, json};
use smart_backend_operator::smart::SigningAlgorithm;

use super::cluster::repo_root;

const NOT_UP: &str = "Keycloak is not running: start it with `tests/keycloak/keycloak up` (or run `make test`, which does)";

pub struct Keycloak {
    pub url: String,
    http: reqwest::Client,
}

/// How the client's public keys reach Keycloak.
pub enum KeyRegistration {
    /// Keycloak fetches this JWKS URL.
    JwksUrl(String),
    /// A copy of the JWK Set.
    Jwks(String),
}

impl Keycloak {
    /// Fails (never skips) when Keycloak is not up.
    pub async fn connect() -> Self {
        let url = std::env::var("KEYCLOAK_URL").ok().unwrap_or_else(|| {
            std::fs::read_to_string(repo_root().join("target/keycloak/run/url"))
                .unwrap_or_else(|e| panic!("{NOT_UP} ({e})"))
                .trim()
                .to_string()
        });
        let http = reqwest::Client::new();
        http.get(format!("{url}/realms/master"))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("{NOT_UP} ({e})"));
        Self { url, http }
    }

    async fn admin_token(&self) -> String {
        let form = [
            ("grant_type", "password"),
            ("client_id", "admin-cli"),
            ("username", "admin"),
            ("password", "admin"),
        ];
        let answer: Value = self
            .http
            .post(format!(
                "{}/realms/master/protocol/openid-connect/token",
                self.url
            ))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form)
                    .finish(),
            )
            .send()
            .await
            .expect("admin token")
            .json()
            .await
            .expect("admin token json");
        answer["access_token"]
            .as_str()
            .expect("an admin access token")
            .to_string()
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Value) {
        let response = self
            .http
            .request(method, format!("{}/admin/realms{path}", self.url))
            .bearer_auth(self.admin_token().await)
            .json(&body)
            .send()
            .await
            .expect("admin request");
        let status = response.status();
        assert!(
            status.is_success(),
            "Keycloak admin {path}: {status} {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// A fresh realm whose client scopes are `scopes`.
    pub async fn realm(&self, prefix: &str, scopes: &[&str]) -> Realm<'_> {
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let scopes: Vec<Value> = scopes
            .iter()
            .map(|s| {
                json!({"name": s, "protocol": "openid-connect",
                       "attributes": {"include.in.token.scope": "true", "display.on.consent.screen": "false"}})
            })
            .collect();
        self.admin(
            reqwest::Method::POST,
            "",
            json!({"realm": name, "enabled": true, "clientScopes": scopes, "defaultDefaultClientScopes": []}),
        )
        .await;
        Realm {
            issuer: format!("{}/realms/{name}", self.url),
            name,
            keycloak: self,
        }
    }
}

pub struct Realm<'a> {
    pub name: String,
    /// The realm's issuer identifier, as its metadata names it.
    pub issuer: String,
    keycloak: &'a Keycloak,
}

impl Realm<'_> {
    /// A confidential client for the client_credentials grant that
    /// authenticates with a JWT signed by `alg`, allowed `scopes`.
    pub async fn client(
        &self,
        id: &str,
        alg: SigningAlgorithm,
        keys: KeyRegistration,
        scopes: &[&str],
    ) {
        let mut attributes = json!({
            "token.endpoint.auth.signing.alg": alg.as_str(),
            // Keycloak's default is 60 s; SMART allows up to five minutes.
            "token.endpoint.auth.signing.max.exp": "300",
        });
        match keys {
            KeyRegistration::JwksUrl(url) => {
                attributes["use.jwks.url"] = json!("true");
                attributes["jwks.url"] = json!(url);
            }
            KeyRegistration::Jwks(jwks) => {
                attributes["use.jwks.url"] = json!("false");
                attributes["use.jwks.string"] = json!("true");
                attributes["jwks.string"] = json!(jwks);
            }
        }
        self.keycloak
            .admin(
                reqwest::Method::POST,
                &format!("/{}/clients", self.name),
                json!({
                    "clientId": id,
                    "enabled": true,
                    "protocol": "openid-connect",
                    "publicClient": false,
                    "standardFlowEnabled": false,
                    "directAccessGrantsEnabled": false,
                    "serviceAccountsEnabled": true,
                    "clientAuthenticatorType": "client-jwt",
                    "attributes": attributes,
                    "defaultClientScopes": [],
                    "optionalClientScopes": scopes,
                }),
            )
            .await;
    }
}
