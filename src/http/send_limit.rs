//! A connection whose writes may wait only so long: a client that stops reading what it is
//! sent loses its connection then, and with it whatever was kept to send it (an answer, a
//! watch's events), rather than holding that memory for as long as it keeps the socket.
//! Once the server stops, a write waits [`CLOSING_LIMIT`] at most: the last bytes of a
//! stream whose client reads nothing hold up no stop.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Longest a write waits for its client once the server stops.
pub const CLOSING_LIMIT: Duration = Duration::from_secs(1);

/// `inner`, whose writes fail with `TimedOut` once one has waited `limit` for the client
/// (or [`CLOSING_LIMIT`], once `closing` is cancelled).
pub struct SendLimit<S> {
    inner: S,
    limit: Duration,
    /// Since when a write has been waiting, as the moment it may wait until.
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The server's stop; `None` once seen.
    closing: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl<S> SendLimit<S> {
    pub fn new(inner: S, limit: Duration, closing: CancellationToken) -> Self {
        Self {
            inner,
            limit,
            waiting: None,
            closing: Some(Box::pin(closing.cancelled_owned())),
        }
    }

    /// `polled`, a write's progress; a write still waiting past the limit is an error.
    fn within_limit<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.waiting = None;
            return polled;
        }
        let stopped = match &mut self.closing {
            Some(closing) => closing.as_mut().poll(cx).is_ready(),
            None => true,
        };
        if stopped {
            self.closing = None;
            self.limit = self.limit.min(CLOSING_LIMIT);
        }
        let limit = self.limit;
        let until = self
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        // A write that was waiting when the server stopped waits no longer than the limit.
        let latest = Instant::now() + limit;
        if until.deadline() > latest {
            until.as_mut().reset(latest);
        }
        match until.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing of what it was sent for {limit:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendLimit<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendLimit<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.within_limit(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.within_limit(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.within_limit(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_write_the_reader_never_takes_fails_after_the_limit() {
        // (The far end stays open, unread.)
        let (near, _far) = tokio::io::duplex(1024);
        let mut limited =
            SendLimit::new(near, Duration::from_millis(100), CancellationToken::new());
        let started = std::time::Instant::now();
        let failed = limited.write_all(&[7u8; 64 * 1024]).await;
        assert_eq!(failed.map_err(|e| e.kind()), Err(io::ErrorKind::TimedOut));
        assert!(started.elapsed() >= Duration::from_millis(100));
        // A reader that keeps reading is never cut off, however long the whole takes.
        let (near, mut far2) = tokio::io::duplex(1024);
        let mut limited =
            SendLimit::new(near, Duration::from_millis(100), CancellationToken::new());
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 64 * 1024];
            let mut read = 0;
            while read < got.len() {
                tokio::time::sleep(Duration::from_millis(10)).await;
                read += far2.read(&mut got[read..]).await.expect("read");
            }
            read
        });
        limited.write_all(&[7u8; 64 * 1024]).await.expect("written");
        assert_eq!(reader.await.expect("reader"), 64 * 1024);
    }

    /// Once the server stops, a write waiting for a client that reads nothing fails within
    /// the closing limit, though its own limit is far off.
    #[tokio::test]
    async fn a_waiting_write_fails_soon_after_the_server_stops() {
        let (near, _far) = tokio::io::duplex(1024);
        let closing = CancellationToken::new();
        let mut limited = SendLimit::new(near, Duration::from_secs(3600), closing.clone());
        let stop = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            closing.cancel();
        });
        let started = std::time::Instant::now();
        let failed = limited.write_all(&[7u8; 64 * 1024]).await;
        assert_eq!(failed.map_err(|e| e.kind()), Err(io::ErrorKind::TimedOut));
        let took = started.elapsed();
        assert!(took < CLOSING_LIMIT + Duration::from_secs(2), "{took:?}");
        stop.await.expect("stopped");
    }
}
