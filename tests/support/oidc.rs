//! Starts `tests/oidc/server.mjs` (oidc-provider as a SMART Backend Services
//! server) as a child process for one test, and stops it on drop.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};
use smart_backend_operator::smart::SigningKey;

/// How a client's public key reaches the server.
#[derive(Clone)]
pub enum Registration {
    /// The JWKS is part of the client's registration.
    Inline,
    /// The server fetches it from a URL (served by the test server itself).
    JwksUri,
    /// The server fetches it from this URL (e.g. the operator's /jwks endpoint).
    JwksUriAt(String),
    /// Registered by value: this JWK Set, held by the server.
    InlineJwks(Value),
}

pub struct Client<'a> {
    pub id: &'a str,
    pub scope: &'a str,
    /// The key whose public JWKS is registered (unused for `JwksUriAt`).
    pub key: Option<&'a SigningKey>,
    pub registration: Registration,
}

pub struct OidcServer {
    child: Child,
    pub issuer: String,
    pub fhir_base_url: String,
    _dir: tempfile::TempDir,
}

fn oidc_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

impl OidcServer {
    /// `scopes` is every scope the server knows; `token_ttl` in seconds.
    pub fn start(clients: &[Client<'_>], scopes: &[&str], token_ttl: u64) -> Self {
        Self::start_with(clients, scopes, token_ttl, json!(null))
    }

    /// As `start`, with `signing_algs` published in the smart-configuration
    /// (null: the default, both algorithms).
    pub fn start_with(
        clients: &[Client<'_>],
        scopes: &[&str],
        token_ttl: u64,
        signing_algs: Value,
    ) -> Self {
        Self::start_config(clients, scopes, token_ttl, signing_algs, None)
    }

    /// As `start`, serving HTTPS with the certificate and key (PEM files).
    pub fn start_tls(
        clients: &[Client<'_>],
        scopes: &[&str],
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Self {
        let tls = json!({"cert": cert, "key": key});
        Self::start_config(clients, scopes, 300, json!(null), Some(tls))
    }

    fn start_config(
        clients: &[Client<'_>],
        scopes: &[&str],
        token_ttl: u64,
        signing_algs: Value,
        tls: Option<Value>,
    ) -> Self {
        let modules = oidc_dir().join("node_modules/oidc-provider");
        assert!(
            modules.exists(),
            "oidc-provider is not installed: run `make test` (it runs `npm ci --prefix tests/oidc`) or `npm ci --prefix tests/oidc`"
        );
        let clients: Vec<Value> = clients
            .iter()
            .map(|c| {
                let jwks = c
                    .key
                    .map(|k| serde_json::to_value(k.public_jwks()).expect("jwks"))
                    .unwrap_or_default();
                match &c.registration {
                    Registration::Inline => {
                        json!({"client_id": c.id, "scope": c.scope, "jwks": jwks})
                    }
                    Registration::JwksUri => {
                        json!({"client_id": c.id, "scope": c.scope, "hosted_jwks": jwks})
                    }
                    Registration::JwksUriAt(uri) => {
                        json!({"client_id": c.id, "scope": c.scope, "jwks_uri": uri})
                    }
                    Registration::InlineJwks(set) => {
                        json!({"client_id": c.id, "scope": c.scope, "jwks": set})
                    }
                }
            })
            .collect();
        let mut config = json!({"clients": clients, "scopes": scopes, "token_ttl": token_ttl});
        if !signing_algs.is_null() {
            config["signing_algs"] = signing_algs;
        }
        if let Some(tls) = tls {
            config["tls"] = tls;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        std::fs::write(&path, config.to_string()).expect("write config");
        let mut child = Command::new("node")
            .arg(oidc_dir().join("server.mjs"))
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node must be on PATH to run the conformance server");
        let stdout = child.stdout.take().expect("stdout");
        // The banner is the first JSON line; anything before it is noise.
        let mut lines = BufReader::new(stdout).lines();
        let banner: Value = loop {
            match lines.next() {
                Some(Ok(line)) => match serde_json::from_str::<Value>(&line) {
                    Ok(v) if v.get("issuer").is_some() => break v,
                    _ => continue,
                },
                _ => panic!(
                    "the conformance server exited before announcing its address (see its stderr above)"
                ),
            }
        };
        Self {
            child,
            issuer: banner["issuer"].as_str().expect("issuer").to_string(),
            fhir_base_url: banner["fhir_base_url"]
                .as_str()
                .expect("fhir_base_url")
                .to_string(),
            _dir: dir,
        }
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// `(token requests received, tokens issued)`.
    pub async fn stats(&self) -> (u64, u64) {
        let stats: Value = reqwest::get(format!("{}/stats", self.issuer))
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json");
        (
            stats["token_requests"].as_u64().unwrap_or(0),
            stats["tokens_issued"].as_u64().unwrap_or(0),
        )
    }
}

impl Drop for OidcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
