//! The hostile tenant: SmartBackendClients generated anywhere inside the
//! CRD's schema (strings at their longest, unicode, durations at both
//! bounds, every enum value, odd and unreachable URLs, large annotations,
//! CA bundles that name megabyte Secrets, random labels) are applied in
//! batches beside 20 healthy clients with 60-second tokens in another
//! namespace, all under one operator that watches the whole cluster (one
//! pool of workers). Nothing the hostile namespace holds may panic a
//! reconcile, stop the operator, leave a resource without a word on its
//! status, or delay a healthy refresh by more than 5 s.
//!
//! CI runs a fixed seed; `HOSTILE_SEED` and `HOSTILE_CASES` change it
//! (`make fuzz` runs more cases with a random seed and prints it).

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};
use smart_backend_operator::crd::SmartBackendClient;
use support::cluster::TestNamespace;
use support::operator::Harness;
use support::victims::Victims;

const DEFAULT_SEED: u64 = 0x5eed_2026_1206;
const DEFAULT_CASES: usize = 300;
const VICTIMS: usize = 20;
const WATCH_FOR: Duration = Duration::from_secs(120);
/// The label that marks this test's clients (the operator's selector).
const RUN: &str = "tests.smartbackend.dev/run";
/// Megabyte Secrets in the hostile namespace that CA bundles may name.
const BIG_SECRETS: usize = 4;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// URLs the schema admits: loopback ports where nothing listens, names
/// that never resolve (and that the allow-list refuses before any lookup),
/// link-local, IPv6, unicode hosts, and one at the longest length.
fn url() -> impl Strategy<Value = String> {
    let path = "[a-zA-Z0-9/._~%!$&'()*+,;=:-]{0,80}";
    prop_oneof![
        (1u16..1024, path).prop_map(|(port, p)| format!("http://127.0.0.1:{port}/{p}")),
        path.prop_map(|p| format!("https://ehr.invalid/{p}")),
        Just(format!("https://127.0.0.1/{}", "a".repeat(2000))),
        Just("https://ëhr.invalid/fhir?x=ü#frag".to_string()),
        Just("http://[::1]:9/fhir".to_string()),
        Just("https://169.254.169.254/latest/meta-data".to_string()),
        Just("http://localhost:1/".to_string()),
    ]
}

fn duration(max_unit: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        (1u64..100_000, prop::sample::select(max_unit)).prop_map(|(n, u)| format!("{n}{u}")),
        Just("1s".to_string()),
        Just("87600h".to_string()),
        Just("8784h".to_string()),
        Just("1h30m5s".to_string()),
    ]
}

fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        prop::string::string_regex(&format!("\\PC{{1,{}}}", max.min(64))).unwrap(),
        Just("é".repeat(max / 2).chars().take(max).collect()),
        Just("x".repeat(max)),
    ]
}

fn label_value() -> impl Strategy<Value = String> {
    prop::string::string_regex("([a-zA-Z0-9]([a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?)?").unwrap()
}

fn string_map(
    count: usize,
    key: &'static str,
    value: impl Strategy<Value = String>,
) -> impl Strategy<Value = Value> {
    prop::collection::btree_map(prop::string::string_regex(key).unwrap(), value, 0..=count)
        .prop_map(|m| json!(m))
}

fn signing() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::sample::select(vec!["RS384", "ES384"])),
        prop::option::of(text(256)),
        prop::option::of(prop::sample::select(vec![2048, 3072, 4096])),
        prop::option::of("[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"),
        prop::option::of(url()),
        prop::option::of(prop::sample::select(vec!["Retain", "Delete"])),
        prop::option::of(duration(&["s", "m", "h"])),
        prop::option::of(("[a-z0-9.-]{1,40}", "[a-zA-Z0-9._-]{1,40}")),
    )
        .prop_map(|(algorithm, kid, rsa, set, jku, policy, every, key_ref)| {
            let mut s = json!({});
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    s[k] = v;
                }
            };
            put("algorithm", algorithm.map(|a| json!(a)));
            put("kid", kid.map(|k| json!(k)));
            put("rsaKeySize", rsa.map(|r| json!(r)));
            put("jwksSet", set.map(|v| json!(v)));
            put("jku", jku.map(|v| json!(v)));
            put("generatedKeyPolicy", policy.map(|v| json!(v)));
            put("rotation", every.map(|e| json!({ "every": e })));
            put(
                "keySecretRef",
                key_ref.map(|(name, key)| json!({"name": name, "key": key})),
            );
            s
        })
}

fn token() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop_oneof![
            "[a-z0-9]([-a-z0-9.]{0,60}[a-z0-9])?",
            text(253)
        ]),
        string_map(32, "[a-z0-9.]{1,20}/[a-z]{1,20}", label_value()),
        string_map(32, "[a-z0-9.]{1,20}/[a-z]{1,20}", text(4096)),
        prop::option::of(duration(&["ms", "s", "m", "h"])),
        string_map(16, "[a-z_]{1,128}", text(2048)),
    )
        .prop_map(|(name, labels, annotations, before, extra)| {
            let mut t = json!({
                "secretTemplate": {"labels": labels, "annotations": annotations},
                "extraParams": extra,
            });
            if let Some(name) = name {
                t["secretName"] = json!(name);
            }
            if let Some(before) = before {
                t["refreshBefore"] = json!(before);
            }
            t
        })
}

/// A whole resource: (metadata annotations, spec).
fn resource() -> impl Strategy<Value = (Value, Value)> {
    let scopes = prop_oneof![
        prop::collection::vec("[!#-\\[\\]-~]{1,40}", 1..8),
        Just(vec!["s".repeat(256); 64]),
    ];
    let annotations = (
        prop::option::of(text(64)),
        prop::option::of(text(300)),
        prop::option::of(text(64)),
        // Large, and rare: each status write of such a resource stores it
        // in etcd again, and the test cluster's etcd is shared.
        prop::option::weighted(0.1, 0usize..64 * 1024),
    )
        .prop_map(|(refresh, rotate, adopt, big)| {
            let mut a = json!({});
            if let Some(v) = refresh {
                a["smartbackend.dev/refresh-requested-at"] = json!(v);
            }
            if let Some(v) = rotate {
                a["smartbackend.dev/rotate-key"] = json!(v);
            }
            if let Some(v) = adopt {
                a["smartbackend.dev/adopt-key"] = json!(v);
            }
            if let Some(n) = big {
                a["tenant.example/blob"] = json!("b".repeat(n));
            }
            a
        });
    let spec = (
        url(),
        text(512),
        scopes,
        prop::option::of(url()),
        prop::option::of(url()),
        prop::option::of(url()),
        signing(),
        token(),
        prop::option::of(0..BIG_SECRETS + 2),
        any::<bool>(),
    )
        .prop_map(
            |(base, client, scopes, issuer, endpoint, audience, signing, token, ca, suspend)| {
                let mut s = json!({
                    "fhirBaseUrl": base, "clientId": client, "scopes": scopes,
                    "signing": signing, "token": token, "suspend": suspend,
                });
                if let Some(v) = issuer {
                    s["issuer"] = json!(v);
                }
                if let Some(v) = endpoint {
                    s["tokenEndpoint"] = json!(v);
                }
                if let Some(v) = audience {
                    s["audience"] = json!(v);
                }
                if let Some(i) = ca {
                    s["tls"] = json!({"caBundleSecretRef": {"name": format!("big-{i}"), "key": "release"}});
                }
                s
            },
        );
    (annotations, spec)
}

fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

#[tokio::test]
async fn resources_anywhere_in_the_schema_never_stop_the_operator_nor_delay_another_namespace() {
    let seed: u64 = env_or("HOSTILE_SEED", DEFAULT_SEED);
    let cases: usize = env_or("HOSTILE_CASES", DEFAULT_CASES);
    eprintln!("hostile: seed {seed}, {cases} resources");
    let quiet = TestNamespace::new("hostile-quiet").await;
    let run = json!({RUN: quiet.name});
    let h = Harness::with("hostile", |s| {
        s.namespaces.clear();
        s.selector = Some(format!("{RUN}={}", quiet.name));
    })
    .await;
    // Megabyte Secrets a CA bundle may name (what a Helm release stores).
    let secrets: Api<Secret> = h.secrets();
    for i in 0..BIG_SECRETS {
        let big: Secret = serde_json::from_value(json!({
            "metadata": {"name": format!("big-{i}")},
            "data": {"release": k8s_openapi::ByteString(vec![b'r'; 900 * 1024])},
        }))
        .unwrap();
        secrets.create(&PostParams::default(), &big).await.unwrap();
    }
    let victims = Victims::create(quiet.api(), VICTIMS, run.clone()).await;
    let rss_before = rss_mib();

    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let generated: Vec<(Value, Value)> = (0..cases)
        .map(|_| resource().new_tree(&mut runner).unwrap().current())
        .collect();
    let sbcs = h.sbcs();
    let hostile = tokio::spawn(async move {
        let mut accepted = Vec::new();
        let mut refusals = Vec::new();
        for (batch, chunk) in generated.chunks(50).enumerate() {
            for (i, (annotations, spec)) in chunk.iter().enumerate() {
                let name = format!("h-{batch}-{i}");
                let mut labels = json!({RUN: run[RUN]});
                labels[format!("tenant.example/l{i}")] = json!(format!("v{batch}"));
                let body = json!({
                    "apiVersion": "smartbackend.dev/v1alpha1", "kind": "SmartBackendClient",
                    "metadata": {"name": name, "labels": labels, "annotations": annotations},
                    "spec": spec,
                });
                let applied = sbcs
                    .patch(
                        &name,
                        &PatchParams::apply("hostile").force(),
                        &Patch::Apply(&body),
                    )
                    .await;
                match applied {
                    Ok(_) => accepted.push(name),
                    Err(error) => refusals.push(error.to_string()),
                }
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        (accepted, refusals)
    });
    // The victims are watched while every batch goes in, and a while after.
    let batches = cases.div_ceil(50) as u64;
    let report = victims
        .watch(WATCH_FOR.max(Duration::from_secs(batches * 8 + 30)))
        .await;
    let (accepted, refusals) = hostile.await.unwrap();
    eprintln!(
        "hostile: {} accepted, {} refused by the API server (e.g. {:?}); victims: {report:?}",
        accepted.len(),
        refusals.len(),
        refusals.first()
    );
    assert!(
        accepted.len() * 2 >= cases,
        "the generator stays inside the schema: {} of {cases} accepted",
        accepted.len()
    );
    assert_eq!(report.with_tokens, VICTIMS, "every victim got a token");
    assert!(report.refreshes >= VICTIMS, "victims refreshed: {report:?}");

    // Every accepted resource has a word on its status, none a panic.
    let mut silent = Vec::new();
    for name in &accepted {
        let sbc: SmartBackendClient = h.sbcs().get(name).await.unwrap();
        let ready = sbc
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
        match ready {
            None => silent.push(name.clone()),
            Some(c) => assert_ne!(c.reason, "InternalError", "{name}: {}", c.message),
        }
    }
    assert!(
        silent.is_empty(),
        "{} resources have no Ready condition: {silent:?}",
        silent.len()
    );
    let metrics = h.metrics().await;
    let panics = metrics
        .lines()
        .find_map(|l| l.strip_prefix("smart_backend_reconcile_panics_total "))
        .unwrap_or("missing");
    assert_eq!(panics.trim(), "0", "no reconcile panicked");
    let healthz = reqwest::get(h.admin_url("/healthz")).await.unwrap();
    assert!(healthz.status().is_success(), "{:?}", healthz.text().await);
    let grown = rss_mib().saturating_sub(rss_before);
    eprintln!("hostile: the test process grew by {grown} MiB");
    assert!(grown < 400, "memory stays bounded: grew by {grown} MiB");
}
