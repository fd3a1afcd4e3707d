//! The HTTP server around the API's router: accepting connections (plain or TLS), and the
//! limits that keep slow or many clients from exhausting the server.
//!
//! - Connections speak HTTP/1.1. A request's line and headers must arrive within the header
//!   timeout, which also bounds how long a connection waits for its first request and a
//!   kept-alive one for its next (hyper's header read timeout starts when the server begins
//!   waiting for a request).
//! - A TLS handshake must finish within the same time.
//! - A write to a connection may wait for the client to read for the send timeout; then the
//!   connection closes, and the answer it held is let go.
//! - At most `max_connections` connections are served at once; beyond them a connection is
//!   answered `503 ModelArts.0013` in the API's error format and closed (plain HTTP), or
//!   closed at once (TLS), with a log line at most once a second. A connection turned away
//!   is kept at most a second to read what its client sends (closing with unread bytes
//!   would reset it before the answer arrives), and at most an eighth of `max_connections`
//!   are kept so at once: beyond them the answer is written if the socket takes it at once,
//!   and the connection closed, so that a flood cannot hold the descriptors the limit
//!   leaves free.
//! - Failing accepts (out of descriptors, say) are logged at most once a second and retried
//!   after a short pause, so the loop neither spins nor stops.
//! - On shutdown, listening stops, in-flight requests finish (for at most a grace period),
//!   and idle connections close.
//!
//! Bodies are read within their own timeout and memory budget by the handlers' extractors
//! (`extract.rs`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;

use super::send_limit::SendLimit;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::tls::TlsAcceptor;

/// How long in-flight requests may take to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Pause after a failed accept (out of descriptors, say) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Longest a connection turned away is kept to read what its client sends.
const TURN_AWAY_LINGER: Duration = Duration::from_secs(1);
/// Most headers hyper parses; beyond them, it answers a bare 431. The API itself allows
/// fewer ([`super::MAX_HEADERS`]), answered in its error format.
const PARSED_HEADERS: usize = 256;

/// Limits on connections, for `serve`'s flags.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A request's line and headers must arrive within it; a kept-alive connection waits
    /// this long for its next request.
    pub header_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Longest a write to a connection may wait for the client to read: then the connection
    /// closes, and what was kept to send it is let go.
    pub send_timeout: Duration,
}

/// A log line at most once per second, counting what it did not log.
struct Throttled {
    last: std::sync::Mutex<Option<Instant>>,
    skipped: AtomicU64,
}

impl Throttled {
    const fn new() -> Self {
        Self {
            last: std::sync::Mutex::new(None),
            skipped: AtomicU64::new(0),
        }
    }

    /// Runs `log` with the number of events not logged since the last line, unless a line
    /// was logged within the last second.
    fn log(&self, log: impl FnOnce(u64)) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(Instant::now());
        log(self.skipped.swap(0, Ordering::Relaxed));
    }
}

static ACCEPT_FAILED: Throttled = Throttled::new();
static TOO_MANY: Throttled = Throttled::new();

/// The answer to a connection beyond the limit: 503 in the API's error format.
fn busy_answer() -> Vec<u8> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let body = serde_json::json!({
        "error_code": "ModelArts.0013",
        "error_msg": "The service is temporarily unavailable: too many connections.",
        "request_id": id,
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nx-request-id: {id}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers a connection beyond the limit and closes it, reading what the client sent
/// meanwhile (for at most `linger`) so that closing does not reset the connection before
/// the answer arrives.
async fn turn_away(mut stream: TcpStream, linger: Duration) {
    let _ = tokio::time::timeout(linger, async {
        stream.write_all(&busy_answer()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Answers a connection beyond the limit with what its socket takes at once, and closes it
/// (a client that sent bytes meanwhile may see the close reset the answer). The write goes
/// to the socket itself: tokio's stream would refuse it until its reactor had seen the new
/// socket writable.
fn answer_at_once(stream: TcpStream) {
    if let Ok(socket) = stream.into_std() {
        let _ = std::io::Write::write(&mut &socket, &busy_answer());
        let _ = socket.shutdown(std::net::Shutdown::Write);
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then drains.
/// Marks a response that must not be sent: its connection is closed instead (the
/// emulator's dropped-connection fault).
#[derive(Debug, Clone, Copy)]
pub struct DropConnection;

/// The connection's end that a [`DropConnection`] answer causes.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped on purpose")]
pub struct Dropped;

impl From<std::convert::Infallible> for Dropped {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

fn drop_marked(
    result: Result<axum::response::Response, std::convert::Infallible>,
) -> Result<axum::response::Response, Dropped> {
    let response = result?;
    if response.extensions().get::<DropConnection>().is_some() {
        return Err(Dropped);
    }
    Ok(response)
}

pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // HTTP/1.1 alone (what the SDKs and the CLI speak): hyper then reads a request head from
    // a connection's first byte, under the header timeout. Serving HTTP/2 too would first
    // wait, without a timeout, for the bytes that tell the two apart.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // Largest head hyper reads (beyond it, a bare 431); a head that arrives whole in one
        // read may pass it, and is refused in the error format instead.
        .max_buf_size(super::MAX_HEAD_BYTES.max(8192))
        .max_headers(PARSED_HEADERS);
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let lingering = Arc::new(Semaphore::new((limits.max_connections / 8).max(1)));
    let linger = limits.header_timeout.min(TURN_AWAY_LINGER);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    ACCEPT_FAILED.log(|skipped| {
                        tracing::warn!(error = %e, skipped, "cannot accept a connection");
                    });
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            TOO_MANY.log(|skipped| {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    turned_away = skipped + 1,
                    "too many connections: turning new ones away"
                );
            });
            if tls.is_none() {
                match lingering.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tokio::spawn(async move {
                            turn_away(stream, linger).await;
                            drop(permit);
                        });
                    }
                    Err(_) => answer_at_once(stream),
                }
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = app
            .clone()
            .map_request(move |mut request: axum::http::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        // A response marked `DropConnection` is not sent: the connection closes instead.
        let service = service.map_result(drop_marked);
        let service = TowerToHyperService::new(service);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let (header_timeout, send_timeout) = (limits.header_timeout, limits.send_timeout);
        let closing = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => {
                    let stream = SendLimit::new(stream, send_timeout, closing);
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    finish(watcher.watch(conn).await, peer);
                }
                Some(acceptor) => {
                    let Some(stream) = acceptor.accept(stream, header_timeout, peer).await else {
                        return;
                    };
                    let stream = SendLimit::new(stream, send_timeout, closing);
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    finish(watcher.watch(conn).await, peer);
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("shutdown: connections still open after {SHUTDOWN_GRACE:?}, closing them");
        }
    }
    Ok(())
}

/// Logs how a connection ended, when it ended badly.
fn finish(outcome: Result<(), hyper::Error>, peer: SocketAddr) {
    if let Err(e) = outcome {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::busy_answer;

    #[test]
    fn the_busy_answer_is_the_apis_error_format() {
        let answer = String::from_utf8(busy_answer()).expect("utf-8");
        let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains("retry-after: 1"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(json["error_code"], "ModelArts.0013");
        let id = json["request_id"].as_str().expect("request id");
        assert!(head.contains(&format!("x-request-id: {id}")));
    }
}
