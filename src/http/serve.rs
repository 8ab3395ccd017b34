//! Serving the admin port (health, metrics, JWKS) to whoever can reach it:
//! a client that sends its request headers slowly is cut off, and the
//! number of open connections is capped, so that slow or many clients
//! cannot hold the port that kubelet probes and EHRs fetch keys from.

use std::future::Future;
use std::sync::Arc;
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
        MAX_CONNECTIONS,
    )
    .await
}

pub async fn serve_with(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
    header_timeout: Duration,
    max_connections: usize,
) {
    let permits = Arc::new(Semaphore::new(max_connections));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return,
        };
        let Ok((stream, _)) = accepted else {
            // Out of file descriptors and the like: let it pass.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(MAX_CONNECTION_LIFE, connection).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn start(header_timeout: Duration, max: usize) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        tokio::spawn(serve_with(
            listener,
            app,
            std::future::pending(),
            header_timeout,
            max,
        ));
        addr
    }

    async fn healthz(addr: std::net::SocketAddr) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
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
        let addr = start(Duration::from_millis(300), 8).await;
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
        let addr = start(Duration::from_secs(30), 2).await;
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
}
