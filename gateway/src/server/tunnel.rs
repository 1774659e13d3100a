//! Upgraded connections (WebSockets and any other `Upgrade`): once the
//! upstream answers 101, the client's connection and the upstream's are
//! spliced, bytes copied both ways until either side closes or neither has
//! sent anything for the API's `tunnel_idle_timeout_ms`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::telemetry::RequestId;

/// Waits for both sides to finish switching, then copies between them.
pub async fn splice(client: OnUpgrade, upstream: OnUpgrade, idle: Duration, request_id: RequestId) {
    let request_id = request_id.as_str();
    let (client, upstream) = match tokio::join!(client, upstream) {
        (Ok(client), Ok(upstream)) => (client, upstream),
        (client, upstream) => {
            let error = client.err().or(upstream.err()).map(|e| e.to_string());
            tracing::debug!(request_id, ?error, "upgrade did not complete");
            return;
        }
    };
    let clock = Clock::new();
    let mut client = Watched::new(TokioIo::new(client), &clock);
    let mut upstream = Watched::new(TokioIo::new(upstream), &clock);
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match copied {
            Ok((up, down)) => tracing::debug!(request_id, up, down, "tunnel closed"),
            Err(e) => tracing::debug!(request_id, error = %e, "tunnel ended with an error"),
        },
        () = clock.idle_for(idle) => tracing::debug!(request_id, ?idle, "tunnel idle: closed"),
    }
}

/// When either side last delivered bytes, in milliseconds since `start`.
#[derive(Debug, Clone)]
struct Clock {
    start: Instant,
    last: Arc<AtomicU64>,
}

impl Clock {
    fn new() -> Self {
        Clock {
            start: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last.store(now, Ordering::Relaxed);
    }

    /// Completes once nothing was read for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
            let quiet = self.start.elapsed().saturating_sub(last);
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    }
}

/// A connection that notes on the clock every read that delivers bytes.
struct Watched<T> {
    io: T,
    clock: Clock,
}

impl<T> Watched<T> {
    fn new(io: T, clock: &Clock) -> Self {
        Watched {
            io,
            clock: clock.clone(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
