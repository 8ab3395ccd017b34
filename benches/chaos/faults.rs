//! The soak's faults: the API server and etcd restarted, the token server
//! behind a proxy that drops and hangs connections, and the JWKS reached
//! through one address in front of both replicas (as a Service is).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// The token server's proxy: healthy, or dropping and hanging connections.
pub struct Faulty {
    failing: AtomicBool,
    /// Failing episodes begun so far: a connection open when one begins is
    /// cut; one opened during it is forwarded or failed as it starts.
    episodes: AtomicU64,
    connections: AtomicU64,
    faulted: AtomicU64,
}

impl Faulty {
    /// Connections dropped or hung so far.
    pub fn faulted(&self) -> u64 {
        self.faulted.load(Ordering::Relaxed)
    }
}

/// Listens on `port` and forwards to `target`. When it starts failing,
/// every open connection is cut; while failing, four new connections in
/// ten are closed at once, three are held without an answer for 45 s and
/// three are forwarded (a server that fails most requests, not all: with
/// none forwarded, every 60-second token due in the window would expire
/// whatever the operator did).
pub async fn proxy(port: u16, target: u16) -> Arc<Faulty> {
    let faulty = Arc::new(Faulty {
        failing: AtomicBool::new(false),
        episodes: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        faulted: AtomicU64::new(0),
    });
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the token server's proxy");
    let state = faulty.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let n = state.connections.fetch_add(1, Ordering::Relaxed) % 10;
            let failing = state.failing.load(Ordering::Relaxed);
            let episode = state.episodes.load(Ordering::Relaxed);
            if failing && n < 7 {
                state.faulted.fetch_add(1, Ordering::Relaxed);
            }
            let state = state.clone();
            tokio::spawn(async move {
                match (failing, n) {
                    (true, 0..4) => drop(inbound),
                    (true, 4..7) => {
                        tokio::time::sleep(Duration::from_secs(45)).await;
                        drop(inbound);
                    }
                    _ => forward_until_cut(inbound, target, &state, episode).await,
                }
            });
        }
    });
    faulty
}

/// One address in front of `ports`, as a Service is: each connection goes
/// to the next replica whose `/readyz` answered 200 at the last look (every
/// half second). Returns the port it listens on.
pub async fn balance(ports: Vec<u16>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the JWKS balancer");
    let port = listener.local_addr().expect("address").port();
    let ready: Arc<Vec<AtomicBool>> =
        Arc::new(ports.iter().map(|_| AtomicBool::new(false)).collect());
    let probed = ready.clone();
    let probe_ports = ports.clone();
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .expect("probe client");
        loop {
            for (i, port) in probe_ports.iter().enumerate() {
                let url = format!("http://127.0.0.1:{port}/readyz");
                let ok = http
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                probed[i].store(ok, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    tokio::spawn(async move {
        let mut turn = 0usize;
        while let Ok((inbound, _)) = listener.accept().await {
            turn += 1;
            let mut order: Vec<u16> = ports
                .iter()
                .zip(ready.iter())
                .filter(|(_, r)| r.load(Ordering::Relaxed))
                .map(|(p, _)| *p)
                .collect();
            if order.is_empty() {
                order = ports.clone();
            }
            let len = order.len();
            order.rotate_left(turn % len);
            tokio::spawn(async move { forward(inbound, &order).await });
        }
    });
    port
}

/// Forwards until the proxy begins a failing episode after `episode`: then
/// the connection is cut, as a server that restarts cuts its clients'
/// kept-alive connections, so the requests that follow meet the faults.
async fn forward_until_cut(inbound: TcpStream, target: u16, state: &Faulty, episode: u64) {
    let cut = async {
        while state.episodes.load(Ordering::Relaxed) == episode {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let targets = [target];
    tokio::select! {
        () = forward(inbound, &targets) => {}
        () = cut => {
            state.faulted.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn forward(mut inbound: TcpStream, targets: &[u16]) {
    for target in targets {
        if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", *target)).await {
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            return;
        }
    }
}

/// One fault of the plan.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// The API server stopped for 15 s, then started.
    ApiServerRestart,
    /// etcd stopped for 10 s, then started.
    EtcdRestart,
    /// The token server's connections dropped and hung for a minute.
    TokenServerFailing,
    TokenServerHealthy,
}

impl Fault {
    pub async fn apply(self, faulty: &Faulty) {
        let restart = |stop: &'static str, start: &'static str, down: u64| {
            tokio::task::spawn_blocking(move || {
                crate::control_plane(stop);
                std::thread::sleep(Duration::from_secs(down));
                crate::control_plane(start);
            });
        };
        match self {
            Fault::ApiServerRestart => restart("stop-apiserver", "start-apiserver", 15),
            Fault::EtcdRestart => restart("stop-etcd", "start-etcd", 10),
            Fault::TokenServerFailing => {
                faulty.failing.store(true, Ordering::Relaxed);
                faulty.episodes.fetch_add(1, Ordering::Relaxed);
            }
            Fault::TokenServerHealthy => faulty.failing.store(false, Ordering::Relaxed),
        }
    }
}

/// When each fault comes, as fractions of the window, and how often the
/// leader is killed.
pub struct Plan {
    at: Vec<(Duration, Fault)>,
    handed_out: usize,
    /// None: no kill.
    pub kill_every: Option<Duration>,
}

impl Plan {
    /// The plan over `window`, with only the kinds of fault `kinds` names
    /// (`apiserver`, `etcd`, `token`, `kill`; all of them when `None`), so
    /// that one kind can be studied on its own.
    pub fn over(window: Duration, kinds: Option<&str>) -> Self {
        let wanted = |kind: &str| kinds.is_none_or(|k| k.split(',').any(|w| w.trim() == kind));
        let at = |fraction: f64, fault| (window.mul_f64(fraction), fault);
        let mut faults = Vec::new();
        if wanted("apiserver") {
            faults.extend([0.15, 0.50, 0.85].map(|f| at(f, Fault::ApiServerRestart)));
        }
        if wanted("etcd") {
            faults.extend([0.33, 0.66].map(|f| at(f, Fault::EtcdRestart)));
        }
        if wanted("token") {
            for start in [0.23, 0.58, 0.75] {
                faults.push(at(start, Fault::TokenServerFailing));
                let end = window.mul_f64(start) + Duration::from_secs(60);
                faults.push((end, Fault::TokenServerHealthy));
            }
        }
        faults.sort_by_key(|(t, _)| *t);
        Self {
            at: faults,
            handed_out: 0,
            kill_every: wanted("kill").then_some(window / 8),
        }
    }

    /// The faults due by `t` not yet handed out.
    pub fn due(&mut self, t: Duration) -> Vec<Fault> {
        let due: Vec<Fault> = self.at[self.handed_out..]
            .iter()
            .take_while(|(at, _)| *at <= t)
            .map(|(_, f)| *f)
            .collect();
        self.handed_out += due.len();
        due
    }
}
