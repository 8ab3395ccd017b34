//! Serving the admin port (health, metrics, JWKS) to whoever can reach it:
//! a client that sends its request headers slowly is cut off, and the
//! number of open connections is capped, in all and per peer address, so
//! that slow or many clients cannot hold the port that EHRs fetch keys
//! from. The kubelet's probes have a listener of their own
//! (`--health-addr`), which no other pod needs to reach.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How long a client may take to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Open connections at once; one more is closed as soon as it is accepted.
pub const MAX_CONNECTIONS: usize = 256;
/// Open connections at once from one peer address: one pod cannot take
/// the port from the others.
pub const MAX_CONNECTIONS_PER_PEER: usize = 32;
/// The longest one connection is kept, keep-alive included.
pub const MAX_CONNECTION_LIFE: Duration = Duration::from_secs(300);

/// Serves `app` on `listener` until `shutdown` completes; connections
/// already open finish their requests.
pub async fn serve(listener: TcpListener, app: axum::Router, shutdown: impl Future<Output = ()>) {
    serve_with(
        listener,
        app,
        shutdown,
        HEADER_READ_TIMEOUT,
        Caps {
            total: MAX_CONNECTIONS,
            per_peer: MAX_CONNECTIONS_PER_PEER,
        },
    )
    .await
}

/// How many connections are open at once.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    pub total: usize,
    pub per_peer: usize,
}

/// Connections open per peer address; an entry leaves with its last one.
#[derive(Clone, Default)]
struct Peers(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One open connection of a peer, counted until dropped.
struct PeerSlot {
    peers: Peers,
    ip: IpAddr,
}

impl Peers {
    fn admit(&self, ip: IpAddr, cap: usize) -> Option<PeerSlot> {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_default();
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            peers: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.peers.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Like [`serve`], over TLS: the handshake must also end within the
/// header timeout.
pub async fn serve_tls(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
    tls: tokio_rustls::TlsAcceptor,
) {
    let caps = Caps {
        total: MAX_CONNECTIONS,
        per_peer: MAX_CONNECTIONS_PER_PEER,
    };
    accept_loop(
        listener,
        app,
        shutdown,
        HEADER_READ_TIMEOUT,
        caps,
        Some(tls),
    )
    .await
}

pub async fn serve_with(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
    header_timeout: Duration,
    caps: Caps,
) {
    accept_loop(listener, app, shutdown, header_timeout, caps, None).await
}

async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
    header_timeout: Duration,
    caps: Caps,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let permits = Arc::new(Semaphore::new(caps.total));
    let peers = Peers::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return,
        };
        let Ok((stream, peer)) = accepted else {
            // Out of file descriptors and the like: let it pass.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Some(slot) = peers.admit(peer.ip(), caps.per_peer) else {
            drop(stream);
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let tls = tls.clone();
        tokio::spawn(async move {
            let _held = (permit, slot);
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            match tls {
                None => {
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    let _ = tokio::time::timeout(MAX_CONNECTION_LIFE, connection).await;
                }
                Some(tls) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(header_timeout, tls.accept(stream)).await
                    else {
                        return;
                    };
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    let _ = tokio::time::timeout(MAX_CONNECTION_LIFE, connection).await;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn start(
        header_timeout: Duration,
        total: usize,
        per_peer: usize,
    ) -> std::net::SocketAddr {
        let caps = Caps { total, per_peer };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        tokio::spawn(serve_with(
            listener,
            app,
            std::future::pending(),
            header_timeout,
            caps,
        ));
        addr
    }

    async fn healthz(addr: std::net::SocketAddr) -> String {
        healthz_on(tokio::net::TcpStream::connect(addr).await.unwrap()).await
    }

    async fn healthz_on(mut stream: tokio::net::TcpStream) -> String {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer).await;
        answer
    }

    #[tokio::test]
    async fn a_client_that_sends_its_headers_slowly_is_cut_off() {
        let addr = start(Duration::from_millis(300), 8, 8).await;
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the server closed the slow connection");
        assert!(healthz(addr).await.contains("200 OK"));
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_are_closed_and_the_port_recovers() {
        let addr = start(Duration::from_secs(30), 2, 2).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            held.push(stream);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answer = healthz(addr).await;
        assert!(
            answer.is_empty(),
            "over the cap: closed without an answer ({answer})"
        );
        held.clear();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(healthz(addr).await.contains("200 OK"));
    }

    #[tokio::test]
    async fn one_peer_cannot_hold_more_than_its_share() {
        let addr = start(Duration::from_secs(30), 64, 3).await;
        // 127.0.0.1 takes its three connections and is refused a fourth...
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            healthz(addr).await.is_empty(),
            "a fourth from the same peer"
        );
        // ... while another peer address is still served.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let answer = healthz_on(socket.connect(addr).await.unwrap()).await;
        assert!(answer.contains("200 OK"), "another peer: {answer}");
        held.pop();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            healthz(addr).await.contains("200 OK"),
            "a slot freed is reused"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_keep_alive_connection_ends_after_its_maximum_life() {
        let addr = start(Duration::from_secs(30), 8, 8).await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let opened = tokio::time::Instant::now();
        let mut answers = 0;
        let mut buf = [0u8; 1024];
        loop {
            let sent = stream
                .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
                .await;
            let read = match sent {
                Ok(()) => stream.read(&mut buf).await.unwrap_or(0),
                Err(_) => 0,
            };
            if read == 0 {
                break;
            }
            answers += 1;
            assert!(answers < 100, "the connection was never closed");
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        let lived = opened.elapsed();
        assert!(answers >= 20, "it was served while young: {answers}");
        assert!(
            lived >= MAX_CONNECTION_LIFE && lived <= MAX_CONNECTION_LIFE + Duration::from_secs(15),
            "closed after {lived:?}"
        );
    }

    /// hyper counts a kept-alive connection's idle time against the header
    /// timeout: an idle connection is closed after it, and a client that
    /// reuses it at that moment sees it closed before an answer. Why the
    /// JWKS answers close their connection (`admin.rs`).
    #[tokio::test]
    async fn an_idle_kept_alive_connection_is_closed_after_the_header_timeout() {
        let addr = start(Duration::from_millis(300), 8, 8).await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
        let mut buf = [0u8; 1024];
        stream.write_all(request).await.unwrap();
        assert!(stream.read(&mut buf).await.unwrap() > 0, "answered");
        tokio::time::sleep(Duration::from_millis(700)).await;
        let _ = stream.write_all(request).await;
        assert_eq!(
            stream.read(&mut buf).await.unwrap_or(0),
            0,
            "closed while idle"
        );
    }
}
