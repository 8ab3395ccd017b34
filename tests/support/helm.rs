//! The chart through the real `helm` binary, and RBAC questions through
//! `kubectl auth can-i`.

use std::process::{Command, Output};

use super::cluster::{self, bin_dir, kubeconfig_path, repo_root};

pub const CHART: &str = "charts/smart-backend-operator";

pub fn helm(args: &[&str]) -> Output {
    Command::new(bin_dir().join("helm"))
        .args(args)
        .current_dir(repo_root())
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .expect("run helm from target/control-plane/bin")
}

/// Installs the chart as `release` into `namespace` (the CRD is installed
/// by the test), with more `--set` values; fails the test if helm does.
/// Returns what helm printed (the notes).
pub fn install<S: AsRef<str>>(release: &str, namespace: &str, values: &[S]) -> String {
    let mut args = vec![
        "install",
        release,
        CHART,
        "-n",
        namespace,
        "--set",
        "crds.install=false",
    ];
    for value in values {
        args.extend(["--set", value.as_ref()]);
    }
    let installed = helm(&args);
    let printed = text(&installed);
    assert!(installed.status.success(), "{printed}");
    printed
}

/// Both streams of a command, for assertion messages.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `kubectl auth can-i ARGS --as=SA`: "yes" or "no".
pub fn can_i(sa: &str, args: &[&str]) -> String {
    let output = cluster::kubectl(&[&["auth", "can-i"], args, &[&format!("--as={sa}")]].concat());
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A release name unique to a test namespace.
pub fn release_name(prefix: &str, namespace: &str) -> String {
    format!("{prefix}-{}", &namespace[namespace.len() - 8..])
}
