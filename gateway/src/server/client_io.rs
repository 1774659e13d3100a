//! A client connection's socket with the two deadlines hyper does not keep:
//!
//! - **The first bytes.** hyper's HTTP/1 header timeout starts once a
//!   request head is being read, but the listener first reads up to 24
//!   bytes to tell HTTP/1 from HTTP/2's preface, with no deadline: a client
//!   that connects and says nothing (or a few bytes of the preface) would
//!   hold its connection forever. Until those bytes have arrived, a read
//!   that waits past the head timeout fails.
//! - **Slow readers.** A write that makes no progress for the send timeout
//!   fails, closing the connection: a client that stops reading a response
//!   cannot hold the gateway's buffers, its upstream connection and its
//!   in-flight slot indefinitely.
//!
//! Both timers are armed only while the socket has made the gateway wait,
//! so a connection that never blocks costs no timer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// HTTP/2's connection preface; the listener reads until the client's bytes
/// match it whole or differ from it.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A client's socket under the first-bytes and send deadlines.
#[derive(Debug)]
pub struct ClientIo<S> {
    inner: S,
    /// Until the protocol is known: when the client must have sent it by,
    /// and how many preface bytes it has matched so far.
    first_bytes: Option<(Pin<Box<Sleep>>, usize)>,
    send_timeout: Duration,
    /// Armed while a write waits.
    send_timer: Option<Pin<Box<Sleep>>>,
}

impl<S> ClientIo<S> {
    pub fn new(inner: S, head_timeout: Duration, send_timeout: Duration) -> Self {
        ClientIo {
            inner,
            first_bytes: Some((Box::pin(tokio::time::sleep(head_timeout)), 0)),
            send_timeout,
            send_timer: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ClientIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if let Some((_, matched)) = &mut this.first_bytes {
                    let read = &buf.filled()[before..];
                    let rest = &PREFACE[*matched..];
                    let common = read.iter().zip(rest).take_while(|(a, b)| a == b).count();
                    // Known once the bytes leave the preface or complete it.
                    if common < read.len().min(rest.len()) || *matched + common == PREFACE.len() {
                        this.first_bytes = None;
                    } else {
                        *matched += common;
                    }
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                if let Some((deadline, _)) = &mut this.first_bytes {
                    ready!(deadline.as_mut().poll(cx));
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client sent no request within the head timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> ClientIo<S> {
    /// `poll` (a write), failing once it has waited the send timeout.
    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if let Poll::Ready(result) = poll(Pin::new(&mut self.inner), cx) {
            self.send_timer = None;
            return Poll::Ready(result);
        }
        let timeout = self.send_timeout;
        let timer = self
            .send_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + timeout)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client read nothing within the send timeout",
        )))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClientIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.timed(cx, |inner, cx| inner.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.timed(cx, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.timed(cx, |inner, cx| inner.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.timed(cx, |inner, cx| inner.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_cut_at_the_head_timeout() {
        let (client, server) = tokio::io::duplex(64);
        let mut io = ClientIo::new(server, Duration::from_secs(5), Duration::from_secs(5));
        let started = Instant::now();
        let error = io.read(&mut [0; 16]).await.expect_err("times out");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_preface_does_not_stop_the_clock() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = ClientIo::new(server, Duration::from_secs(5), Duration::from_secs(5));
        client.write_all(b"PRI * HT").await.expect("write");
        let mut buf = [0; 64];
        assert_eq!(io.read(&mut buf).await.expect("first bytes"), 8);
        let error = io.read(&mut buf).await.expect_err("times out");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn once_the_protocol_is_known_reads_may_wait() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = ClientIo::new(server, Duration::from_secs(5), Duration::from_secs(5));
        client.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
        let mut buf = [0; 64];
        assert_eq!(io.read(&mut buf).await.expect("head"), 16);
        let late = async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            client.write_all(b"x").await.expect("write");
            client
        };
        let (read, _client) = tokio::join!(io.read(&mut buf), late);
        assert_eq!(read.expect("a later read waits as long as it takes"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_cut_at_the_send_timeout() {
        let (client, server) = tokio::io::duplex(16);
        let mut io = ClientIo::new(server, Duration::from_secs(5), Duration::from_secs(3));
        let started = Instant::now();
        let error = io.write_all(&[b'x'; 64]).await.expect_err("times out");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        drop(client);
    }
}
