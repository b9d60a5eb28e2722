//! A deadline for the first request head of every connection: a client that has not sent a whole
//! head (up to its blank line) within `server.limits.request_head_timeout_ms` of the connection's
//! start (after TLS) is disconnected, however steadily it trickles bytes. Pingora's own read
//! timeout restarts with every byte, so a client sending one byte a minute would otherwise hold
//! its socket forever (slowloris). Later requests on a kept-alive connection are bounded by
//! Pingora's keep-alive timeout instead.
//!
//! The deadline wraps the connection's stream for the app, so it costs one timer per connection
//! and a byte scan of the first head only; after the head it is a pass-through.
//!
//! It also answers Pingora's peek for the HTTP/2 preface (`h2c` on a cleartext listener), which
//! Pingora does with a `read_exact` of the preface's 24 bytes before the app reads anything: left
//! to the raw socket, that read had no deadline at all (a client sending nothing, or a few bytes,
//! held its connection for ever) and a whole request shorter than 24 bytes was never answered
//! (`GET / HTTP/1.0` and a blank line, 18 bytes, as a hand-typed health check sends it). Here the
//! peek reads through the deadline and stops at the first byte the preface cannot start with.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType,
};
use pingora::server::ShutdownWatch;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::runtime::Runtime;

/// Finds the end of a request head — a blank line, `\r\n\r\n`, or with bare line feeds as the
/// HTTP parser also accepts (`\n\n`, `\r\n\n`) — in bytes arriving in any pieces.
#[derive(Debug, Default, Clone, Copy)]
struct HeadEnd {
    /// 1: just after a line feed; 2: after a line feed and a carriage return.
    state: u8,
}

impl HeadEnd {
    /// Feeds `bytes`; true once the blank line has been seen.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        for &b in bytes {
            self.state = match (b, self.state) {
                (b'\n', 1 | 2) => return true,
                (b'\n', _) => 1,
                (b'\r', 1) => 2,
                _ => 0,
            };
        }
        false
    }
}

/// What a client opening HTTP/2 without TLS sends first (RFC 9113 §3.4); Pingora peeks for it.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A stream that fails its reads once the deadline passes before the first head has arrived.
pub struct DeadlineStream {
    inner: Stream,
    /// `None` once the head has arrived.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    head: HeadEnd,
    timed_out: Option<IntCounter>,
    /// Bytes `try_peek` read, given to the next reads before anything more from the socket.
    peeked: Vec<u8>,
    /// The client opened with the HTTP/2 preface: the deadline ends with the next bytes it sends
    /// (its SETTINGS), not with a blank line, which binary frames need not contain.
    h2: bool,
}

impl fmt::Debug for DeadlineStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadlineStream")
            .field("inner", &self.inner)
            .field("waiting_for_head", &self.timer.is_some())
            .finish()
    }
}

impl DeadlineStream {
    /// Reads from the socket, failing once the deadline passes while there is one.
    fn poll_timed(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        let Some(timer) = self.timer.as_mut() else {
            return read;
        };
        if read.is_ready() || timer.as_mut().poll(cx).is_pending() {
            return read;
        }
        self.timer = None;
        if let Some(counter) = &self.timed_out {
            counter.inc();
        }
        tracing::debug!("request head not received in time: connection closed");
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "request head not received in time",
        )))
    }

    /// Ends the deadline if `fresh`, just read, completes what it waits for.
    fn arrived(&mut self, fresh: &[u8]) {
        if self.timer.is_some()
            && (if self.h2 {
                !fresh.is_empty()
            } else {
                self.head.feed(fresh)
            })
        {
            self.timer = None;
        }
    }
}

impl AsyncRead for DeadlineStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.peeked.is_empty() {
            // Already looked at when the peek read them.
            let n = this.peeked.len().min(buf.remaining());
            buf.put_slice(&this.peeked[..n]);
            this.peeked.drain(..n);
            if this.peeked.is_empty() {
                this.peeked = Vec::new();
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let read = std::task::ready!(this.poll_timed(cx, buf));
        if read.is_ok() {
            this.arrived(&buf.filled()[before..]);
        }
        Poll::Ready(read)
    }
}

impl AsyncWrite for DeadlineStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for DeadlineStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for DeadlineStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for DeadlineStream {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for DeadlineStream {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for DeadlineStream {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for DeadlineStream {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for DeadlineStream {
    /// Fills `buf` with the stream's first bytes without consuming them, through the deadline,
    /// but only as far as they can still be the HTTP/2 preface: Pingora compares what it peeked
    /// with the preface and speaks HTTP/1 otherwise, so one byte that rules it out is enough. The
    /// rest of `buf` is zeroed (the preface has no zero byte). At the end of the stream what
    /// came is kept for the HTTP/1 parser: a client may send its request and close its side.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        // What an earlier peek read comes first (taken out, so the reads below go on from the
        // socket).
        let earlier = std::mem::take(&mut self.peeked);
        let mut filled = earlier.len().min(buf.len());
        buf[..filled].copy_from_slice(&earlier[..filled]);
        let from_socket = filled;
        while filled < buf.len() && H2_PREFACE.starts_with(&buf[..filled]) {
            // Not yet scanned for the head's end: the preface holds a blank line.
            let read = std::future::poll_fn(|cx| {
                let mut into = ReadBuf::new(&mut buf[filled..]);
                std::task::ready!(self.poll_timed(cx, &mut into))?;
                Poll::Ready(Ok::<_, io::Error>(into.filled().len()))
            })
            .await?; // an error (the deadline, a reset) ends the connection: Pingora drops it
            if read == 0 {
                break;
            }
            filled += read;
        }
        if buf[..filled] == *H2_PREFACE {
            self.h2 = true;
        } else {
            self.arrived(&buf[from_socket..filled]);
        }
        self.peeked = earlier;
        self.peeked.extend_from_slice(&buf[from_socket..filled]);
        buf[filled..].fill(0);
        Ok(true)
    }
}

/// The timeouts counter of one listener (`proxy` or `admin`).
pub fn timeouts_counter(listener: &str) -> prometheus::Result<IntCounter> {
    crate::metrics::listener_counter(
        "payedge_request_head_timeouts_total",
        "Connections closed because their first request head was not received within \
         server.limits.request_head_timeout_ms.",
        listener,
        &[],
    )
}

/// A Pingora app whose connections must deliver their first request head in time.
pub struct HeadDeadline<A> {
    app: Arc<A>,
    runtime: Arc<Runtime>,
    timed_out: Option<IntCounter>,
}

impl<A> HeadDeadline<A> {
    pub fn new(app: A, runtime: Arc<Runtime>, timed_out: Option<IntCounter>) -> Self {
        Self {
            app: Arc::new(app),
            runtime,
            timed_out,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for HeadDeadline<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let within = self.runtime.current().config.server.request_head_timeout;
        let stream = Box::new(DeadlineStream {
            inner: stream,
            timer: Some(Box::pin(tokio::time::sleep(within))),
            head: HeadEnd::default(),
            timed_out: self.timed_out.clone(),
            peeked: Vec::new(),
            h2: false,
        });
        self.app.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_head_is_found_in_any_split() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody";
        for split in 0..head.len() {
            let mut end = HeadEnd::default();
            let (a, b) = head.split_at(split);
            let found = end.feed(a) || end.feed(b);
            assert!(found, "split at {split}");
        }
        let mut byte_by_byte = HeadEnd::default();
        let at = head.iter().position(|b| byte_by_byte.feed(&[*b]));
        assert_eq!(at, Some(26), "on the blank line's last byte");
    }

    #[test]
    fn a_head_not_yet_ended_is_not_taken_for_one() {
        let mut end = HeadEnd::default();
        assert!(!end.feed(b"GET / HTTP/1.1\r\nHost: a\r\n"));
        assert!(!end.feed(b"X: \r\r\n"));
        assert!(!end.feed(b"Y: \r"));
        assert!(end.feed(b"\n\r\n"));
        for bare in [
            &b"GET / HTTP/1.1\nHost: a\n\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\n\n",
        ] {
            assert!(HeadEnd::default().feed(bare), "{bare:?}");
        }
    }
}
