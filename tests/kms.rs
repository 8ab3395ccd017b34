//! Keys that stay in AWS KMS: the one-shot commands sign with real moto
//! KMS keys (SigV4 and IAM checked), with credentials from the standard
//! chain (the environment, and a web identity exchanged at STS as IRSA
//! does), and a real OAuth server (oidc-provider) checks the signatures
//! against the JWK Set the `jwks` command printed. Each failure a person can
//! meet says what to do.

mod support;

use std::process::{Command, Output};

use serde_json::Value;
use support::key_managers::{SCOPE, assert_public_sets, server_knowing};
use support::moto::{Credentials, Moto};
use support::oidc::OidcServer;
const SIGNER: &str = "kms:GetPublicKey,kms:Sign";

/// The binary with only the AWS settings given here.
fn command(moto: &Moto, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_smart-backend-operator"));
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .args([
            "--aws-kms-endpoint",
            &moto.endpoint,
            "--insecure-allow-http",
        ])
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .output()
        .expect("run the command")
}

fn as_user(credentials: &Credentials) -> Vec<(&str, &str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", credentials.0.as_str()),
        ("AWS_SECRET_ACCESS_KEY", credentials.1.as_str()),
    ]
}

fn jwks(moto: &Moto, env: &[(&str, &str)], key: &str) -> Value {
    let output = command(moto, env, &["jwks", "--aws-kms-key", key]);
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_slice(&output.stdout).expect("a JWK Set")
}

fn token(moto: &Moto, env: &[(&str, &str)], key: &str, server: &OidcServer, id: &str) -> Output {
    let args = [
        "token",
        "--fhir-base-url",
        &server.fhir_base_url,
        "--client-id",
        id,
        "--aws-kms-key",
        key,
        "--scope",
        SCOPE,
        "--allow-host",
        "127.0.0.1",
        "--output",
        "json",
    ];
    command(moto, env, &args)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn both_algorithms_sign_in_kms_and_the_server_accepts_them() {
    let moto = Moto::start();
    moto.create_key("ECC_NIST_P384", "alias/test/ec");
    let rsa_arn = moto.create_key("RSA_3072", "alias/test/rsa");
    let signer = moto.user("signer", SIGNER);
    let env = as_user(&signer);
    let ec = jwks(&moto, &env, "alias/test/ec");
    // A key named by its ARN is the same key.
    let rsa = jwks(&moto, &env, &rsa_arn);
    assert_eq!(rsa, jwks(&moto, &env, "alias/test/rsa"));
    assert_public_sets(&ec, &rsa);
    let server = server_knowing(&[("kms-ec", &ec), ("kms-rsa", &rsa)]);
    for (id, key, set, alg) in [
        ("kms-ec", "alias/test/ec", &ec, "ES384"),
        ("kms-rsa", "alias/test/rsa", &rsa, "RS384"),
    ] {
        let output = token(&moto, &env, key, &server, id);
        assert!(output.status.success(), "{id}: {}", stderr(&output));
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["algorithm"], alg, "{id}");
        assert_eq!(report["kid"], set["keys"][0]["kid"], "{id}");
    }
    assert_eq!(server.stats().await, (2, 2));
}

/// IRSA's way: a projected token in a file and a role ARN, exchanged at STS
/// (AssumeRoleWithWebIdentity) for short-lived credentials that sign. (moto
/// cannot check signatures and take an unsigned STS call at once: this one
/// checks nothing, the others check SigV4 and IAM.)
#[tokio::test]
async fn a_web_identity_signs_as_irsa_would() {
    let moto = Moto::start_open();
    moto.create_key("ECC_NIST_P384", "alias/test/ec");
    let role = moto.role("signer", SIGNER);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln").unwrap();
    let env = [
        ("AWS_ROLE_ARN", role.as_str()),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap()),
        ("AWS_ROLE_SESSION_NAME", "smart-backend-operator"),
        ("AWS_ENDPOINT_URL_STS", moto.endpoint.as_str()),
    ];
    let set = jwks(&moto, &env, "alias/test/ec");
    let server = server_knowing(&[("irsa", &set)]);
    let output = token(&moto, &env, "alias/test/ec", &server, "irsa");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(server.stats().await, (1, 1));
}

#[tokio::test]
async fn each_failure_says_what_to_do() {
    let moto = Moto::start();
    moto.create_key("ECC_NIST_P384", "alias/test/ec");
    moto.create_key("ECC_NIST_P256", "alias/test/p256");
    let server = OidcServer::start(&[], &[SCOPE], 300);

    // Allowed to read the public key, not to sign: the action is named.
    let reader = moto.user("reader", "kms:GetPublicKey");
    let denied = token(&moto, &as_user(&reader), "alias/test/ec", &server, "c");
    let text = stderr(&denied);
    assert!(!denied.status.success());
    assert!(
        text.contains("permission denied") && text.contains("allow kms:Sign"),
        "{text}"
    );

    let signer = moto.user("signer", SIGNER);
    let env = as_user(&signer);
    let missing = token(&moto, &env, "alias/test/nope", &server, "c");
    let text = stderr(&missing);
    assert!(
        text.contains("has no key alias/test/nope") && text.contains("create it"),
        "{text}"
    );
    let p256 = token(&moto, &env, "alias/test/p256", &server, "c");
    let text = stderr(&p256);
    assert!(
        text.contains("ECC_NIST_P256") && text.contains("ECC_NIST_P384"),
        "{text}"
    );

    let wrong = (signer.0.clone(), "not-the-secret".to_string());
    let refused = token(&moto, &as_user(&wrong), "alias/test/ec", &server, "c");
    let text = stderr(&refused);
    assert!(text.contains("refused the credentials in use"), "{text}");
    assert!(!text.contains("not-the-secret"), "{text}");
    // No request reached the OAuth server: nothing was signed.
    assert_eq!(server.stats().await, (0, 0));

    let endpoint = format!("http://127.0.0.1:{}", support::process::free_port());
    let gone = Command::new(env!("CARGO_BIN_EXE_smart-backend-operator"))
        .args([
            "jwks",
            "--aws-kms-key",
            "alias/test/ec",
            "--insecure-allow-http",
        ])
        .args(["--aws-kms-endpoint", &endpoint, "--aws-region", "us-east-1"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        stderr(&gone).contains("could not be reached"),
        "{}",
        stderr(&gone)
    );
}
