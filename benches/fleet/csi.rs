//! The fleet with tokens delivered by CSI: no Secret to resume from, so a
//! new leader requests one token per client. Measured by replacing the
//! operator process once every client is Ready and counting the new
//! process's successful token requests until each client has one again.

use std::time::{Duration, Instant};

use super::{OperatorProcess, successful_token_requests};

pub fn operator_args() -> Vec<String> {
    vec!["--csi-listen-addr".into(), "127.0.0.1:0".into()]
}

/// Starts the new leader with `start` and waits until it has obtained
/// `clients` tokens (then a little longer, to see any extra).
pub async fn leader_change(
    clients: usize,
    start: impl FnOnce() -> OperatorProcess,
) -> (OperatorProcess, serde_json::Value) {
    let started = Instant::now();
    let operator = start();
    operator.wait_ready().await;
    let ready_in = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut all_in = None;
    while Instant::now() < deadline {
        let got = successful_token_requests(&operator.metrics().await);
        if got >= clients as f64 {
            all_in = Some(started.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    let requests = successful_token_requests(&operator.metrics().await);
    let measured = serde_json::json!({
        "new_leader_ready_seconds": ready_in,
        "every_client_has_a_token_again_seconds": all_in,
        "token_requests_by_the_new_leader": requests,
        "token_requests_per_client": requests / clients as f64,
        "cpu_seconds": operator.cpu_seconds(),
        "rss_mib": operator.rss_kib() as f64 / 1024.0,
    });
    (operator, measured)
}
