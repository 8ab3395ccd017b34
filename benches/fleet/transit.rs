//! The fleet with keys in OpenBao Transit: a dev server on loopback holds
//! one ES384 key per client (`fleet.c-<i>`), the operator logs in with a
//! token file, and the key manager's own CPU and memory are read beside
//! the operator's.

use std::path::PathBuf;

use futures_util::StreamExt;

use super::support::bao::Bao;

pub struct TransitFleet {
    bao: Bao,
    token_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl TransitFleet {
    pub async fn start(namespace: &str, clients: usize) -> Self {
        let bao = Bao::start().await;
        futures_util::stream::iter(0..clients)
            .map(|i| {
                let bao = &bao;
                async move {
                    bao.create_key(&format!("{namespace}.c-{i}"), "ecdsa-p384")
                        .await
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
        let dir = tempfile::tempdir().expect("a folder for the Vault token");
        let token_file = dir.path().join("vault-token");
        std::fs::write(&token_file, &bao.root_token).expect("write the Vault token");
        Self {
            bao,
            token_file,
            _dir: dir,
        }
    }

    /// The operator's flags for this key manager.
    pub fn operator_args(&self) -> Vec<String> {
        vec![
            format!("--vault-address={}", self.bao.address),
            format!("--vault-token-file={}", self.token_file.display()),
        ]
    }

    /// The key manager's user plus system CPU seconds so far, and its RSS
    /// in MiB.
    pub fn usage(&self) -> (f64, f64) {
        let pid = self.bao.pid();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss_kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        (
            ticks as f64 / super::clock_ticks_per_second(),
            rss_kib / 1024.0,
        )
    }
}
