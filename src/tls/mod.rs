//! TLS at both edges, on Pingora's rustls backend: certificates read and checked once
//! (`certs`), served by SNI from a swappable store (`store`), handshakes run in front of the
//! apps with PROXY protocol support (`front`), what a handshake established and why one failed
//! (`handshake`), and their metrics.

mod authority;
mod certs;
mod front;
mod handshake;
mod metrics;
mod store;

pub use authority::{Authority, IssuedPem, Validity};
pub use certs::{
    CertificateInfo, KeyPair, KeyPairError, inspect, provider, read_certificates, read_key_pair,
    read_private_key, read_roots, subject_of,
};
pub use front::{Front, FrontSetup, TlsEndpoint};
pub use handshake::{
    ConnectionFacts, HANDSHAKE_FAILURE_REASONS, RecordFacts, UpstreamTlsFailure,
    handshake_failure_reason, rejects_certificate, upstream_tls_failure,
};
pub use metrics::TlsMetrics;
pub use store::CertificateStore;
