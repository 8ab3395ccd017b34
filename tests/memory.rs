//! Memory is bounded by what the operator keeps, not by what tenants send:
//! many resources whose base URLs differ only in the query string, each
//! served a hostile metadata document (1 MiB, or just under the 64 KiB cap
//! and made of thousands of tiny scopes), leave the operator process's
//! resident memory within 20 MiB of where it was. Before the metadata cap,
//! the cache keyed by what is fetched and the list caps, the same load grew
//! it by 717 MiB in a minute.

mod support;

use std::time::Duration;

use serde_json::json;
use support::cluster::{TestNamespace, kubeconfig_path, wait_for};
use support::fault_server::{Behaviour, FaultServer};
use support::operator::{Harness, condition};
use support::process::{Launch, OperatorProcess, free_port};

const RESOURCES: usize = 50;
const LIMIT_KIB: u64 = 20 * 1024;

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// A document just under the size cap, nearly all of it one-character
/// scopes (the list caps keep 256 of them).
fn many_tiny_scopes(server: &FaultServer) -> serde_json::Value {
    let scopes: Vec<String> = (0..16_000)
        .map(|i| ((b'a' + (i % 26) as u8) as char).to_string())
        .collect();
    json!({
        "token_endpoint": server.url("/token"),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES384", "RS384"],
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": scopes,
    })
}

#[tokio::test]
async fn hostile_metadata_behind_many_query_variants_keeps_memory_bounded() {
    let ns = TestNamespace::new("memory").await;
    let server = FaultServer::start().await;
    server.serve_metadata("/fhir");
    server.on("/token", Behaviour::token("t", 600, None));
    server.on(
        "/big/.well-known/smart-configuration",
        Behaviour::oversized(1024 * 1024),
    );
    let tiny = many_tiny_scopes(&server);
    assert!(tiny.to_string().len() < 64 * 1024 && tiny.to_string().len() > 60 * 1024);
    server.on(
        "/tiny/.well-known/smart-configuration",
        Behaviour::json(200, tiny),
    );
    let operator = OperatorProcess::spawn(&Launch {
        kubeconfig: &kubeconfig_path(),
        watch_namespace: &ns.name,
        lease_namespace: &ns.name,
        lease_name: "sbo-memory",
        lease_duration: Duration::from_secs(5),
        admin_port: free_port(),
    });
    let pid = operator.pid().expect("running");
    let h = Harness { ns, operator: None };

    // Warm: a healthy client through every step once.
    h.apply(
        "warm",
        json!({"fhirBaseUrl": server.url("/fhir"), "clientId": "warm", "scopes": ["system/Patient.rs"]}),
    )
    .await;
    h.wait_ready("warm").await;
    let before = rss_kib(pid);

    for i in 0..RESOURCES {
        let base = if i % 2 == 0 { "/big" } else { "/tiny" };
        h.apply(
            &format!("q{i}"),
            json!({"fhirBaseUrl": server.url(&format!("{base}?variant={i}")), "clientId": format!("q{i}"),
                   "scopes": ["system/Patient.rs"]}),
        )
        .await;
    }
    // Every one of them was discovered (or refused) at least once.
    for i in 0..RESOURCES {
        wait_for(
            &format!("q{i} to have a Discovered condition"),
            Duration::from_secs(60),
            || async { h.sbcs().get_opt(&format!("q{i}")).await.ok().flatten() },
            |sbc| condition(sbc, "Discovered").is_some(),
        )
        .await;
    }
    let big = h.sbcs().get("q0").await.unwrap();
    let message = &condition(&big, "Discovered").unwrap().message;
    assert!(message.contains("64 KiB"), "{message}");
    let tiny = h.wait_ready("q1").await;
    assert_eq!(
        condition(&tiny, "Discovered").unwrap().status,
        "True",
        "a document within the cap is read, its lists capped"
    );
    assert!(
        !server
            .requests("/big/.well-known/smart-configuration")
            .is_empty()
            && !server
                .requests("/tiny/.well-known/smart-configuration")
                .is_empty()
    );

    let after = rss_kib(pid);
    let grown = after.saturating_sub(before);
    println!("operator RSS: {before} KiB before, {after} KiB after ({grown} KiB more)");
    assert!(
        grown < LIMIT_KIB,
        "the operator's resident memory grew by {grown} KiB (from {before} to {after}), more than {LIMIT_KIB} KiB"
    );
}
