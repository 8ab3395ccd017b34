//! Keys that stay in a key manager: the one-shot commands sign with a real
//! OpenBao Transit key, and a real OAuth server (oidc-provider) checks the
//! signatures against the JWK Set the `jwks` command printed for that key.
//! Each failure a person can meet says what to do.

mod support;

use std::process::{Command, Output};

use serde_json::{Value, json};
use support::bao::{Bao, signer_policy};
use support::key_managers::{SCOPE, assert_public_sets, server_knowing};
use support::oidc::OidcServer;

fn command(bao: &Bao, token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smart-backend-operator"))
        .args(args)
        .args(["--vault-address", &bao.address, "--insecure-allow-http"])
        .env("VAULT_TOKEN", token)
        .env_remove("BAO_TOKEN")
        .output()
        .expect("run the command")
}

fn jwks(bao: &Bao, token: &str, key: &str) -> Value {
    let output = command(bao, token, &["jwks", "--vault-transit-key", key]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("a JWK Set")
}

fn token(bao: &Bao, vault_token: &str, key: &str, server: &OidcServer, id: &str) -> Output {
    token_with(bao, vault_token, key, server, id, &[])
}

fn token_with(
    bao: &Bao,
    vault_token: &str,
    key: &str,
    server: &OidcServer,
    id: &str,
    extra: &[&str],
) -> Output {
    let mut args = vec![
        "token",
        "--fhir-base-url",
        &server.fhir_base_url,
        "--client-id",
        id,
        "--vault-transit-key",
        key,
        "--scope",
        SCOPE,
        "--allow-host",
        "127.0.0.1",
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    command(bao, vault_token, &args)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn both_algorithms_sign_in_transit_and_the_server_accepts_them() {
    let bao = Bao::start().await;
    bao.create_key("ec", "ecdsa-p384").await;
    bao.create_key("rsa", "rsa-3072").await;
    let signer = bao
        .token_with_policy(
            "signer",
            &(signer_policy("ec") + "\n" + &signer_policy("rsa")),
        )
        .await;
    let ec = jwks(&bao, &signer, "ec");
    let rsa = jwks(&bao, &signer, "rsa");
    assert_public_sets(&ec, &rsa);
    let server = server_knowing(&[("transit-ec", &ec), ("transit-rsa", &rsa)]);
    for (id, key, set, alg) in [
        ("transit-ec", "ec", &ec, "ES384"),
        ("transit-rsa", "rsa", &rsa, "RS384"),
    ] {
        let output = token(&bao, &signer, key, &server, id);
        assert!(output.status.success(), "{id}: {}", stderr(&output));
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["algorithm"], alg, "{id}");
        assert_eq!(report["kid"], set["keys"][0]["kid"], "{id}");
    }
    assert_eq!(server.stats().await, (2, 2));
}

/// A new key version is a new key: the published set of version 1 does not
/// verify version 2's signatures, and `--vault-transit-version` signs with
/// the old one until the new one is registered.
#[tokio::test]
async fn a_rotated_transit_key_signs_with_the_version_asked_for() {
    let bao = Bao::start().await;
    bao.create_key("ec", "ecdsa-p384").await;
    let signer = bao.token_with_policy("signer", &signer_policy("ec")).await;
    let first = jwks(&bao, &signer, "ec");
    bao.call("POST", "transit/keys/ec/rotate", json!({})).await;
    let second = jwks(&bao, &signer, "ec");
    assert_ne!(first["keys"][0]["kid"], second["keys"][0]["kid"]);
    let server = server_knowing(&[("c", &first)]);
    let latest = token(&bao, &signer, "ec", &server, "c");
    assert!(!latest.status.success(), "version 2 is not registered");
    let pinned = token_with(
        &bao,
        &signer,
        "ec",
        &server,
        "c",
        &["--vault-transit-version", "1"],
    );
    assert!(pinned.status.success(), "{}", stderr(&pinned));
    assert_eq!(server.stats().await, (2, 1));
}

#[tokio::test]
async fn each_failure_says_what_to_do() {
    let bao = Bao::start().await;
    bao.create_key("ec", "ecdsa-p384").await;
    bao.create_key("p256", "ecdsa-p256").await;
    bao.create_key("aes", "aes256-gcm96").await;
    let server = OidcServer::start(&[], &[SCOPE], 300);

    // Allowed to read the key but not to sign: the policy to grant is named.
    let reader = bao
        .token_with_policy(
            "reader",
            r#"path "transit/keys/*" { capabilities = ["read"] }"#,
        )
        .await;
    let denied = token(&bao, &reader, "ec", &server, "c");
    assert!(!denied.status.success());
    let text = stderr(&denied);
    assert!(text.contains("permission denied"), "{text}");
    assert!(
        text.contains(r#"path "transit/sign/ec/sha2-384" { capabilities = ["update"] }"#),
        "{text}"
    );

    let root = bao.root_token.clone();
    let missing = token(&bao, &root, "nope", &server, "c");
    assert!(
        stderr(&missing).contains("has no key nope"),
        "{}",
        stderr(&missing)
    );
    for (key, kind) in [("p256", "ecdsa-p256"), ("aes", "aes256-gcm96")] {
        let unusable = token(&bao, &root, key, &server, "c");
        let text = stderr(&unusable);
        assert!(
            text.contains(&format!("is of type {kind}, which cannot sign")),
            "{text}"
        );
        assert!(text.contains("ES384 needs type ecdsa-p384"), "{text}");
    }

    let wrong_token = token(&bao, "not-a-token", "ec", &server, "c");
    assert!(
        stderr(&wrong_token).contains("permission denied"),
        "{}",
        stderr(&wrong_token)
    );

    bao.seal().await;
    let sealed = token(&bao, &root, "ec", &server, "c");
    let text = stderr(&sealed);
    assert!(text.contains("unavailable (HTTP 503"), "{text}");
    assert!(text.contains("sealed"), "{text}");
    // No request reached the OAuth server: nothing was signed.
    assert_eq!(server.stats().await, (0, 0));
    drop(bao);

    let gone = Command::new(env!("CARGO_BIN_EXE_smart-backend-operator"))
        .args(["jwks", "--vault-transit-key", "ec", "--insecure-allow-http"])
        .args([
            "--vault-address",
            &format!("http://127.0.0.1:{}", support::process::free_port()),
        ])
        .env("VAULT_TOKEN", "t")
        .output()
        .unwrap();
    assert!(
        stderr(&gone).contains("could not be reached"),
        "{}",
        stderr(&gone)
    );
}
