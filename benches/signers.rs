//! Signing latency per assertion: a key held in the operator's memory
//! beside a key that stays in OpenBao Transit (a dev server on loopback,
//! so the figure is the key manager's own cost plus one local HTTP round
//! trip; a Vault across a network adds its latency) and one in AWS KMS as
//! moto serves it on loopback (SigV4 signed and checked; moto is Python, so
//! this is the client's cost plus a slow local server, not AWS's latency). ES384 and RS384
//! (RSA-3072) each; every assertion is prepared, signed and finished as the
//! operator does it (`SigningKey::sign_assertion`).
//!
//! `cargo bench --bench signers` (`SIGNERS_N` assertions per signer,
//! default 500). Prints JSON, also written to target/bench/signers/.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use smart_backend_operator::smart::signer::{Kms, Transit, TransitConfig};
use smart_backend_operator::smart::{
    AssertionParams, HttpClient, HttpPolicy, PrivateKey, SecretString, SigningAlgorithm, SigningKey,
};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

async fn measure(key: &SigningKey, n: usize) -> serde_json::Value {
    let params = AssertionParams::new("bench-client", "https://ehr.example/token");
    for _ in 0..20 {
        key.sign_assertion(&params)
            .await
            .expect("warm-up signature");
    }
    let mut times = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        key.sign_assertion(&params).await.expect("signature");
        times.push(t.elapsed());
    }
    let total = started.elapsed();
    times.sort();
    serde_json::json!({
        "p50_ms": percentile(&times, 0.5),
        "p99_ms": percentile(&times, 0.99),
        "mean_ms": total.as_secs_f64() * 1000.0 / n as f64,
    })
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("signers: runs only under `cargo bench --bench signers`");
        return;
    }
    let n: usize = std::env::var("SIGNERS_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let moto = support::moto::Moto::start();
    moto.create_key("ECC_NIST_P384", "alias/bench/es");
    moto.create_key("RSA_3072", "alias/bench/rs");
    let (id, secret) = moto.user("bench", "kms:GetPublicKey,kms:Sign");
    // SAFETY: set before any thread of this process reads the environment.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", id);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", secret);
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let result = runtime.block_on(async {
        let bao = support::bao::Bao::start().await;
        bao.create_key("es", "ecdsa-p384").await;
        bao.create_key("rs", "rsa-3072").await;
        let http = HttpClient::new(HttpPolicy {
            allow_http: true,
            destinations: support::loopback_destinations(),
            ..HttpPolicy::default()
        })
        .unwrap();
        let endpoint = moto.endpoint.parse().unwrap();
        let timeout = Duration::from_secs(15);
        let kms = Arc::new(Kms::connect(Some("us-east-1".into()), Some(&endpoint), timeout).await);
        let mut out = serde_json::Map::new();
        for (name, algorithm, bits, transit_key) in [
            ("ES384", SigningAlgorithm::ES384, 0, "es"),
            ("RS384", SigningAlgorithm::RS384, 3072, "rs"),
        ] {
            let alias = format!("alias/bench/{transit_key}");
            let in_kms = SigningKey::remote(kms.key(&alias, None, None).await.unwrap());
            let local = PrivateKey::generate(algorithm, bits)
                .and_then(|k| k.into_signing_key(Some(algorithm), None))
                .unwrap();
            let config = TransitConfig {
                address: bao.address.parse().unwrap(),
                mount: "transit".into(),
                key: transit_key.into(),
            };
            let token = SecretString::new(bao.root_token.clone());
            let transit = Arc::new(Transit::with_token(http.clone(), config, token).unwrap());
            let remote = SigningKey::remote(transit.key(None, None, None).await.unwrap());
            out.insert(format!("{name} held in memory"), measure(&local, n).await);
            out.insert(
                format!("{name} in OpenBao Transit"),
                measure(&remote, n).await,
            );
            out.insert(
                format!("{name} in AWS KMS (moto)"),
                measure(&in_kms, n).await,
            );
        }
        serde_json::json!({"assertions_per_signer": n, "latency": out})
    });
    let text = serde_json::to_string_pretty(&result).unwrap();
    println!("{text}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/signers");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("result.json"), text).unwrap();
}
