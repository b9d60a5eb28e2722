//! What happens to a connection before HTTP: the PROXY protocol header from a trusted balancer,
//! then, on a TLS listener, the handshake. Both run here, in front of the Pingora app, rather
//! than in Pingora's listener, so that the plain and TLS listeners share one PROXY protocol
//! path, a slow handshake has a deadline, and every failure is counted by reason.
//!
//! ```text
//! accept ─► [proxy_protocol] peer in trusted_proxies? header within the deadline? ─► client addr
//!        ─► [TLS listener] handshake within handshake_timeout: certificate by SNI, client
//!           certificate verified, ALPN h2/http1.1; SNI and client subject kept for requests
//!        ─► the app (proxy or admin), which serves HTTP/1.1 or HTTP/2 on the stream
//! ```

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use payedge_filters::forwarded::TrustedProxies;
use payedge_filters::proxy_protocol::{self, MAX_HEADER_BYTES, ProxyHeader};
use pingora::apps::ServerApp;
use pingora::listeners::tls::{Acceptor, TlsSettings};
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{ALPN, GetSocketDigest, SocketDigest, Stream};
use pingora::server::ShutdownWatch;
use rustls::server::WebPkiClientVerifier;
use tokio::io::AsyncReadExt;

use super::certs::provider;
use super::handshake::{ConnectionFacts, RecordFacts, handshake_failure_reason};
use super::metrics::TlsMetrics;
use super::store::CertificateStore;
use crate::config::TlsListener;

/// How long a trusted balancer has to send its PROXY header.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// A TLS listener of a service: where it listens and how it shakes hands. The handshake part
/// (certificates, client CAs, ALPN, deadline) is swapped whole by a reload.
pub struct TlsEndpoint {
    listen: SocketAddr,
    handshake: ArcSwap<Handshake>,
}

/// How a listener shakes hands, built from one configuration.
pub struct Handshake {
    acceptor: Acceptor,
    timeout: Duration,
    client_ca: u64,
    client_certificate_required: bool,
}

impl TlsEndpoint {
    pub fn new(listener: &TlsListener) -> Result<Self, String> {
        Ok(Self {
            listen: listener.listen,
            handshake: ArcSwap::from_pointee(Self::prepare_handshake(listener)?),
        })
    }

    /// Builds what `listener` asks for, without installing it.
    pub fn prepare(&self, listener: &TlsListener) -> Result<Handshake, String> {
        Self::prepare_handshake(listener)
    }

    /// Serves the next handshakes with `handshake`; those in progress finish with theirs.
    pub fn install(&self, handshake: Handshake) {
        self.handshake.store(Arc::new(handshake));
    }

    fn prepare_handshake(listener: &TlsListener) -> Result<Handshake, String> {
        let store = Arc::new(CertificateStore::new(&listener.certificates));
        let client_ca = listener.client_auth.as_ref().map_or(0, |a| a.id);
        let mut settings = TlsSettings::with_callbacks(Box::new(RecordFacts { client_ca }))
            .map_err(|e| e.to_string())?;
        settings.set_cert_resolver(store);
        if let Some(auth) = &listener.client_auth {
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::clone(&auth.roots), provider());
            let builder = if auth.required {
                builder
            } else {
                builder.allow_unauthenticated()
            };
            let verifier = builder
                .build()
                .map_err(|e| format!("client certificate verifier: {e}"))?;
            settings.set_client_cert_verifier(verifier);
        }
        if listener.http2 {
            settings.enable_h2();
        } else {
            settings.set_alpn(ALPN::H1);
        }
        Ok(Handshake {
            acceptor: settings.build(),
            timeout: listener.handshake_timeout,
            client_ca,
            client_certificate_required: listener.client_auth.as_ref().is_some_and(|a| a.required),
        })
    }

    /// The client CA set new handshakes verify against (0: none).
    pub fn client_ca(&self) -> u64 {
        self.handshake.load().client_ca
    }

    /// Whether new connections must present a client certificate.
    pub fn client_certificate_required(&self) -> bool {
        self.handshake.load().client_certificate_required
    }

    /// Whether a connection's handshake no longer vouches for its client: verified under client
    /// CAs a reload has since replaced, or admitted without a certificate that a reload has since
    /// made required. Its requests are refused (421 `client_certificate_stale`); a new connection
    /// is verified under the current settings.
    pub fn is_stale(&self, facts: &ConnectionFacts) -> bool {
        facts.client_ca != self.client_ca()
            && (facts.client_subject.is_some() || self.client_certificate_required())
    }

    fn serves(&self, local: &SocketAddr) -> bool {
        self.listen.port() == local.port()
            && (self.listen.ip().is_unspecified() || self.listen.ip() == local.ip())
    }
}

/// What a [`Front`] would do for an app; nothing at all for plain HTTP without PROXY protocol,
/// where the app is served bare.
pub struct FrontSetup {
    tls: Option<Arc<TlsEndpoint>>,
    proxy_protocol: Option<Arc<ArcSwap<TrustedProxies>>>,
    metrics: Option<Arc<TlsMetrics>>,
}

impl FrontSetup {
    /// `Ok(front)` around `app`, or `Err(app)` back when no front is needed.
    pub fn into_front<A>(self, app: A) -> Result<Front<A>, A> {
        if self.tls.is_none() && self.proxy_protocol.is_none() {
            return Err(app);
        }
        Ok(Front::new(app, self.tls, self.proxy_protocol, self.metrics))
    }
}

/// A Pingora app behind the PROXY protocol and TLS steps.
pub struct Front<A> {
    app: Arc<A>,
    tls: Option<Arc<TlsEndpoint>>,
    /// `Some` when every connection must start with a PROXY header from one of these.
    proxy_protocol: Option<Arc<ArcSwap<TrustedProxies>>>,
    metrics: Option<Arc<TlsMetrics>>,
}

impl Front<()> {
    pub fn new_if_needed(
        tls: Option<Arc<TlsEndpoint>>,
        proxy_protocol: Option<Arc<ArcSwap<TrustedProxies>>>,
        metrics: Option<Arc<TlsMetrics>>,
    ) -> FrontSetup {
        FrontSetup {
            tls,
            proxy_protocol,
            metrics,
        }
    }
}

impl<A> Front<A> {
    pub fn new(
        app: A,
        tls: Option<Arc<TlsEndpoint>>,
        proxy_protocol: Option<Arc<ArcSwap<TrustedProxies>>>,
        metrics: Option<Arc<TlsMetrics>>,
    ) -> Self {
        Self {
            app: Arc::new(app),
            tls,
            proxy_protocol,
            metrics,
        }
    }

    /// The TLS endpoint of the listener `stream` came in on, if it is the TLS one. `Err` when
    /// that cannot be told (no local address): such a connection is refused rather than served
    /// as plain HTTP on what may be the TLS port.
    fn tls_for(&self, stream: &Stream) -> Result<Option<&TlsEndpoint>, ()> {
        let Some(tls) = self.tls.as_deref() else {
            return Ok(None);
        };
        let local = stream
            .get_socket_digest()
            .and_then(|digest| digest.local_addr().and_then(|a| a.as_inet()).copied())
            .ok_or(())?;
        Ok(tls.serves(&local).then_some(tls))
    }

    /// The stream the app is given, or `None` when the connection is refused.
    async fn accept(&self, stream: Stream) -> Option<Stream> {
        let Ok(tls) = self.tls_for(&stream) else {
            tracing::warn!("a connection whose local address is unknown was refused");
            return None;
        };
        if tls.is_none() && self.proxy_protocol.is_none() {
            return Some(stream);
        }
        let started = Instant::now();
        let mut l4: Box<L4Stream> = stream.into_any().downcast().ok()?;
        let handshake = tls.map(|t| t.handshake.load_full());
        let first_byte_within = handshake
            .as_ref()
            .map_or(PROXY_HEADER_TIMEOUT, |h| h.timeout);
        match first_byte(&mut l4, first_byte_within).await {
            FirstByte::Arrived => {}
            // A TCP health check, or the readiness probe: connected and left. Not a failure.
            FirstByte::Closed => return None,
            FirstByte::TimedOut => {
                self.count_failure(tls.is_some(), "timeout");
                return None;
            }
        }
        if let Some(trusted) = self.proxy_protocol.as_ref().map(|t| t.load_full())
            && let Err(reason) = read_proxy_header(&mut l4, &trusted).await
        {
            if let Some(m) = &self.metrics {
                m.proxy_refused(reason);
            }
            return None;
        }
        let Some(handshake) = handshake else {
            return Some(l4);
        };
        let left = handshake.timeout.saturating_sub(started.elapsed());
        let reason = match tokio::time::timeout(left, handshake.acceptor.tls_handshake(*l4)).await {
            Ok(Ok(stream)) => return Some(Box::new(stream)),
            Ok(Err(e)) => {
                let reason = handshake_failure_reason(&e);
                tracing::debug!(reason, error = %e, "TLS handshake failed");
                reason
            }
            Err(_) => "timeout",
        };
        self.count_failure(true, reason);
        None
    }

    fn count_failure(&self, tls: bool, reason: &'static str) {
        if let Some(m) = &self.metrics {
            if tls {
                m.handshake_failed(reason);
            } else {
                m.proxy_refused(reason);
            }
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Front<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let stream = self.accept(stream).await?;
        self.app.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

enum FirstByte {
    Arrived,
    Closed,
    TimedOut,
}

/// Waits for the connection's first byte and puts it back.
async fn first_byte(l4: &mut L4Stream, within: Duration) -> FirstByte {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(within, l4.read(&mut byte)).await {
        Ok(Ok(1)) => {
            l4.rewind(&byte);
            FirstByte::Arrived
        }
        Ok(_) => FirstByte::Closed,
        Err(_) => FirstByte::TimedOut,
    }
}

/// Reads the PROXY header a trusted peer must send first, and makes the client it names the
/// connection's peer address. Bytes read past the header are put back for TLS or HTTP.
async fn read_proxy_header(
    l4: &mut L4Stream,
    trusted: &TrustedProxies,
) -> Result<(), &'static str> {
    let digest = l4.get_socket_digest();
    let peer = digest
        .as_ref()
        .and_then(|d| d.peer_addr())
        .and_then(PeerAddr::as_inet)
        .copied();
    if !peer.is_some_and(|p| trusted.contains(p.ip())) {
        return Err("untrusted_peer");
    }
    let deadline = Instant::now() + PROXY_HEADER_TIMEOUT;
    let mut buf = vec![0u8; MAX_HEADER_BYTES];
    let mut filled = 0;
    let (length, client) = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = match tokio::time::timeout(left, l4.read(&mut buf[filled..])).await {
            Err(_) => return Err("timeout"),
            Ok(Err(_)) | Ok(Ok(0)) => return Err("bad_header"),
            Ok(Ok(n)) => n,
        };
        filled += n;
        match proxy_protocol::parse(&buf[..filled]) {
            ProxyHeader::Incomplete if filled < buf.len() => continue,
            ProxyHeader::Incomplete | ProxyHeader::Invalid => return Err("bad_header"),
            ProxyHeader::Complete { length, client } => break (length, client),
        }
    };
    l4.rewind(&buf[length..filled]);
    // A header naming no client (LOCAL, UNKNOWN: the balancer's own checks, or a source it
    // could not tell) leaves the client unknown: 0.0.0.0, which no trusted_proxies list holds,
    // so nothing the connection claims in X-Forwarded-For is believed either.
    let client = client.unwrap_or_else(|| match peer {
        Some(SocketAddr::V6(_)) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
        _ => SocketAddr::from(([0, 0, 0, 0], 0)),
    });
    let replaced = SocketDigest::from_raw_fd(l4.as_raw_fd());
    let _ = replaced.peer_addr.set(Some(PeerAddr::Inet(client)));
    if let Some(local) = digest.as_ref().and_then(|d| d.local_addr()) {
        let _ = replaced.local_addr.set(Some(local.clone()));
    }
    l4.set_socket_digest(replaced);
    Ok(())
}
