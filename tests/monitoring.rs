//! The chart's PrometheusRule and Grafana dashboard, checked with a real
//! promtool (from Debian's `prometheus` package; `make test` unpacks it): the
//! rules and every dashboard query parse, the alerts fire exactly when they
//! should (`promtool test rules` over synthetic series), and every metric
//! they name is one the operator exports.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use smart_backend_operator::metrics::Metrics;
use support::helm::{CHART, helm, text};

fn promtool() -> PathBuf {
    let path = support::cluster::repo_root().join("target/tools/prometheus/usr/bin/promtool");
    assert!(
        path.exists(),
        "promtool is missing: `make promtool` takes it out of Debian's prometheus package (make test does it)"
    );
    path
}

fn run_promtool(dir: &Path, args: &[&str]) {
    let output = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    assert!(
        output.status.success(),
        "promtool {args:?}:\n{}",
        text(&output)
    );
}

/// One template of the chart, rendered with `values`, as YAML.
fn render(template: &str, values: &[&str]) -> serde_yaml::Value {
    let mut args = vec!["template", "r", CHART, "-n", "ops", "-s", template];
    for value in values {
        args.extend(["--set", value]);
    }
    let output = helm(&args);
    assert!(output.status.success(), "{}", text(&output));
    serde_yaml::from_slice(&output.stdout).expect("one YAML document")
}

fn rules() -> serde_yaml::Value {
    let rule = render(
        "templates/prometheusrule.yaml",
        &["prometheusRule.enabled=true"],
    );
    assert_eq!(rule["kind"].as_str(), Some("PrometheusRule"));
    rule["spec"].clone()
}

fn dashboard() -> serde_json::Value {
    let map = render(
        "templates/dashboard.yaml",
        &["grafanaDashboard.enabled=true"],
    );
    assert_eq!(
        map["metadata"]["labels"]["grafana_dashboard"].as_str(),
        Some("1")
    );
    let json = map["data"]["smart-backend-operator.json"]
        .as_str()
        .expect("the dashboard JSON");
    serde_json::from_str(json).expect("the dashboard is JSON")
}

fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "{} panels", panels.len());
    panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("an expr").to_string())
        .collect()
}

const ALERT_TESTS: &str = r#"
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  # Refreshes fail while the leader's earliest token is 100 s from expiry;
  # one permanent failure; transient failures do not page.
  - interval: 1m
    input_series:
      - series: 'smart_backend_leader{namespace="ops",pod="a"}'
        values: '1x30'
      - series: 'smart_backend_leader{namespace="ops",pod="b"}'
        values: '0x30'
      - series: 'smart_backend_earliest_token_expiry_seconds{namespace="ops",pod="a"}'
        values: '100x30'
      - series: 'smart_backend_earliest_token_expiry_seconds{namespace="ops",pod="b"}'
        values: '0x30'
      - series: 'smart_backend_token_requests_total{namespace="ops",pod="a",result="failure",error="server_error"}'
        values: '0+1x30'
      - series: 'smart_backend_reconcile_failures_total{namespace="ops",pod="a",category="registration",class="permanent"}'
        values: '0 0 0 3x27'
      - series: 'smart_backend_reconcile_failures_total{namespace="ops",pod="a",category="timeout",class="transient"}'
        values: '0+5x30'
    alert_rule_test:
      - eval_time: 10m
        alertname: SmartBackendTokenExpiringWhileRefreshesFail
        exp_alerts:
          - exp_labels: {severity: critical}
      - eval_time: 10m
        alertname: SmartBackendPermanentFailures
        exp_alerts:
          - exp_labels: {severity: warning, category: registration}
      - eval_time: 10m
        alertname: SmartBackendNoLeader
        exp_alerts: []
  # A token close to expiry while requests succeed is a refresh about to
  # happen, not an alert; no leader pages after 5 minutes.
  - interval: 1m
    input_series:
      - series: 'smart_backend_leader{namespace="ops",pod="a"}'
        values: '0x20'
      - series: 'smart_backend_earliest_token_expiry_seconds{namespace="ops",pod="a"}'
        values: '100x20'
      - series: 'smart_backend_token_requests_total{namespace="ops",pod="a",result="success",error="none"}'
        values: '0+1x20'
    alert_rule_test:
      - eval_time: 4m
        alertname: SmartBackendNoLeader
        exp_alerts: []
      - eval_time: 10m
        alertname: SmartBackendNoLeader
        exp_alerts:
          - exp_labels: {severity: critical}
      - eval_time: 10m
        alertname: SmartBackendTokenExpiringWhileRefreshesFail
        exp_alerts: []
  # A leader of another release does not count for this one; with no
  # series at all there is no leader either.
  - interval: 1m
    input_series:
      - series: 'smart_backend_leader{namespace="other",pod="x"}'
        values: '1x20'
    alert_rule_test:
      - eval_time: 10m
        alertname: SmartBackendNoLeader
        exp_alerts:
          - exp_labels: {severity: critical}
"#;

#[test]
fn the_alert_rules_parse_and_fire_exactly_when_they_should() {
    let dir = tempfile::tempdir().unwrap();
    let spec = rules();
    std::fs::write(
        dir.path().join("chart-rules.yaml"),
        serde_yaml::to_string(&spec).unwrap(),
    )
    .unwrap();
    // Syntax, and the annotation templates.
    run_promtool(dir.path(), &["check", "rules", "chart-rules.yaml"]);

    // The unit tests compare labels; annotations are prose.
    let mut bare = spec.clone();
    for group in bare["groups"].as_sequence_mut().unwrap() {
        for rule in group["rules"].as_sequence_mut().unwrap() {
            rule.as_mapping_mut().unwrap().remove("annotations");
        }
    }
    let alerts: BTreeSet<&str> = spec["groups"][0]["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|r| r["alert"].as_str())
        .collect();
    assert_eq!(
        alerts,
        BTreeSet::from([
            "SmartBackendNoLeader",
            "SmartBackendPermanentFailures",
            "SmartBackendTokenExpiringWhileRefreshesFail"
        ])
    );
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml::to_string(&bare).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("tests.yaml"), ALERT_TESTS).unwrap();
    run_promtool(dir.path(), &["test", "rules", "tests.yaml"]);
}

#[test]
fn every_dashboard_query_parses() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"].as_str(), Some("smart-backend-operator"));
    // Each query as a recording rule, so that promtool parses it; the
    // dashboard's variable stands for any namespace.
    let records: Vec<serde_json::Value> = dashboard_queries(&dashboard)
        .iter()
        .enumerate()
        .map(|(i, expr)| {
            serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": expr.replace("$namespace", ".*")})
        })
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": records}]});
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dashboard.yaml"),
        serde_yaml::to_string(&file).unwrap(),
    )
    .unwrap();
    run_promtool(dir.path(), &["check", "rules", "dashboard.yaml"]);
}

/// The sample names the operator exposes, every family touched once.
fn exported() -> BTreeSet<String> {
    let metrics = Metrics::default();
    metrics.failure("registration", "permanent");
    metrics.token_request("failure", "server_error");
    metrics.write("token_secret");
    metrics.set_earliest_expiry(Some(120.0));
    metrics
        .encode()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

fn named_metrics(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("smart_backend_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

#[test]
fn every_metric_the_alerts_and_the_dashboard_name_is_exported() {
    let exported = exported();
    let rules = rules();
    let mut queries: Vec<String> = rules["groups"][0]["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r["expr"].as_str().unwrap().to_string())
        .collect();
    queries.extend(dashboard_queries(&dashboard()));
    let mut checked = 0;
    for query in &queries {
        for name in named_metrics(query) {
            assert!(
                exported.contains(&name),
                "{name} (in `{query}`) is not exported; the operator exports {exported:?}"
            );
            checked += 1;
        }
    }
    assert!(checked > queries.len(), "{checked} names checked");
}
