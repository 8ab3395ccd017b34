//! Egress proxies on purpose only: a proxy named in the environment is
//! ignored (it would resolve names where the address rules cannot see), and
//! an explicit `--proxy` carries every request while the host allow-list
//! still applies to the target names. The `token` command, as a process.

mod support;

use serde_json::json;
use support::fault_server::{Behaviour, FaultServer};

const EHR: &str = "ehr.invalid";

async fn token_command(
    args: &[&str],
    envs: &[(&str, &str)],
    key: &std::path::Path,
) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_smart-backend-operator"))
        .args([
            "token",
            "--client-id",
            "c",
            "--scope",
            "system/Patient.rs",
            "--insecure-allow-http",
        ])
        .args(["--key", key.to_str().unwrap()])
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .await
        .expect("run the token command")
}

/// Runs the token command and fails the test unless it succeeds.
async fn token_succeeds(args: &[&str], envs: &[(&str, &str)], key: &std::path::Path) {
    let output = token_command(args, envs, key).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Answers as the EHR would: metadata and a token, at the paths the
/// requests name (a plain-http proxy request carries the whole URL).
fn serve_ehr(server: &FaultServer, token_endpoint: &str) {
    server.on(
        "/fhir/.well-known/smart-configuration",
        Behaviour::json(200, json!({"token_endpoint": token_endpoint, "token_endpoint_auth_signing_alg_values_supported": ["ES384"]})),
    );
    server.on(
        "/token",
        Behaviour::json(
            200,
            json!({"access_token": "t", "token_type": "Bearer", "expires_in": 300}),
        ),
    );
}

fn key_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let key = support::signing_key(smart_backend_operator::smart::SigningAlgorithm::ES384);
    let path = dir.path().join("key.pem");
    std::fs::write(&path, support::pem(&key)).unwrap();
    path
}

#[tokio::test]
async fn proxies_in_the_environment_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(&dir);
    let ehr = FaultServer::start().await;
    serve_ehr(&ehr, &ehr.url("/token"));
    let proxy = FaultServer::start().await;
    let proxy_url = proxy.url("");
    let envs = [
        ("HTTP_PROXY", proxy_url.as_str()),
        ("http_proxy", proxy_url.as_str()),
        ("HTTPS_PROXY", proxy_url.as_str()),
        ("ALL_PROXY", proxy_url.as_str()),
    ];
    let base = ehr.url("/fhir");
    token_succeeds(
        &["--fhir-base-url", &base, "--allow-host", "127.0.0.1"],
        &envs,
        &key,
    )
    .await;
    assert_eq!(
        ehr.requests("/token").len(),
        1,
        "the request went straight to the server"
    );
    assert!(
        proxy
            .requests("/fhir/.well-known/smart-configuration")
            .is_empty()
    );
    assert!(proxy.requests("/token").is_empty());
}

#[tokio::test]
async fn an_explicit_proxy_carries_every_request_within_the_allow_list() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(&dir);
    // The proxy answers for ehr.invalid, a name nothing else resolves.
    let proxy = FaultServer::start().await;
    serve_ehr(&proxy, &format!("http://{EHR}/token"));
    let proxy_url = proxy.url("");
    let base = format!("http://{EHR}/fhir");
    token_succeeds(
        &[
            "--fhir-base-url",
            &base,
            "--proxy",
            &proxy_url,
            "--allow-host",
            EHR,
        ],
        &[],
        &key,
    )
    .await;
    assert_eq!(
        proxy
            .requests("/fhir/.well-known/smart-configuration")
            .len(),
        1
    );
    assert_eq!(proxy.requests("/token").len(), 1);

    // A target outside the allow-list is refused before the proxy sees it.
    let elsewhere = "http://internal.invalid/fhir";
    let output = token_command(
        &[
            "--fhir-base-url",
            elsewhere,
            "--proxy",
            &proxy_url,
            "--allow-host",
            EHR,
        ],
        &[],
        &key,
    )
    .await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("allow-list"), "{stderr}");
    assert_eq!(
        proxy
            .requests("/fhir/.well-known/smart-configuration")
            .len(),
        1,
        "nothing more reached the proxy"
    );
}
