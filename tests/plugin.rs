//! The kubectl plugin as users run it: the binary installed as
//! `kubectl-smart` on PATH and invoked through the real kubectl, against
//! the real control plane and an operator holding a Ready client.

mod support;

use std::process::Output;

use serde_json::json;
use support::cluster::{bin_dir, kubeconfig_path, wait_for};
use support::fault_server::{Behaviour, FaultServer};
use support::operator::{Harness, WAIT};

/// Runs `kubectl smart ARGS` with the plugin (this crate's binary, copied
/// as kubectl-smart) first on PATH.
fn kubectl_smart(plugin_dir: &std::path::Path, args: &[&str]) -> Output {
    let path = format!(
        "{}:{}:{}",
        plugin_dir.display(),
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = std::process::Command::new(bin_dir().join("kubectl"))
        .arg("smart")
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .expect("run kubectl");
    assert!(
        output.status.success(),
        "kubectl smart {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn install_plugin() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_smart-backend-operator"),
        dir.path().join("kubectl-smart"),
    )
    .unwrap();
    dir
}

fn token(value: &str) -> Behaviour {
    Behaviour::token(value, 600, Some("system/Patient.rs"))
}

#[tokio::test]
async fn kubectl_smart_registers_refreshes_and_lists_clients() {
    let h = Harness::with("plugin", |s| {
        s.jwks_public_url = Some("https://jwks.example-hospital.org".parse().unwrap())
    })
    .await;
    let server = FaultServer::start().await;
    server.serve_metadata("/fhir");
    server.on("/token", token("one"));
    h.apply(
        "billing",
        json!({"fhirBaseUrl": server.url("/fhir"), "clientId": "billing-svc", "scopes": ["system/Patient.rs"]}),
    )
    .await;
    let sbc = h.wait_ready("billing").await;
    let kid = sbc.status.as_ref().unwrap().kid.clone().unwrap();
    let plugin = install_plugin();
    let ns = h.ns.name.as_str();

    let register = kubectl_smart(
        plugin.path(),
        &["register", "billing", "-n", ns, "-o", "json"],
    );
    let registration: serde_json::Value = serde_json::from_slice(&register.stdout).unwrap();
    assert_eq!(registration["clientId"], "billing-svc");
    assert_eq!(registration["kid"], kid.as_str());
    assert_eq!(registration["algorithm"], "ES384");
    assert_eq!(registration["scopes"], json!(["system/Patient.rs"]));
    assert_eq!(
        registration["jwksUri"],
        format!("https://jwks.example-hospital.org/jwks/{ns}/billing")
    );
    assert_eq!(registration["publicJwks"]["keys"][0]["kid"], kid.as_str());
    let text = kubectl_smart(plugin.path(), &["register", "billing", "-n", ns]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("JWKS URL:") && text.contains(&kid), "{text}");

    let status = kubectl_smart(plugin.path(), &["status", "-n", ns]);
    let table = String::from_utf8_lossy(&status.stdout);
    let row = table
        .lines()
        .find(|l| l.contains("billing"))
        .unwrap_or_else(|| panic!("{table}"));
    for cell in [ns, "True", "TokenIssued", "ES384"] {
        assert!(row.contains(cell), "{cell}: {row}");
    }
    let all = kubectl_smart(plugin.path(), &["status", "-o", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&all.stdout).unwrap();
    assert!(
        rows.iter()
            .any(|r| r["namespace"] == ns && r["name"] == "billing"),
        "status lists every namespace without -n"
    );

    server.on("/token", token("two"));
    let refresh = kubectl_smart(plugin.path(), &["refresh", "billing", "-n", ns]);
    assert!(String::from_utf8_lossy(&refresh.stdout).contains("refresh requested"));
    wait_for(
        "the refreshed token",
        WAIT,
        || async { h.secret("billing-token").await },
        |s| Harness::value(s, "access_token") == "two",
    )
    .await;
}
