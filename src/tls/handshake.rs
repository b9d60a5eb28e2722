//! What a client's TLS handshake established (its server name, its verified certificate), carried
//! to every request of the connection through Pingora's TLS digest; and why a handshake failed,
//! as a bounded metric label.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::listeners::TlsAccept;
use pingora::protocols::Digest;
use pingora::protocols::tls::TlsRef;
use rustls::AlertDescription;

use super::certs::subject_of;

/// What the TLS handshake established about a client connection.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConnectionFacts {
    /// The SNI the client sent: lower case, without a trailing dot.
    pub server_name: Option<String>,
    /// The subject of the client certificate, verified against `client_auth.ca_file`.
    pub client_subject: Option<String>,
    /// The client CA set it was verified under ([`crate::config::ClientAuth::id`]; 0: none).
    pub client_ca: u64,
}

impl ConnectionFacts {
    /// The facts of the connection a request arrived on; `None` for plain HTTP.
    pub fn of(digest: Option<&Digest>) -> Option<&Self> {
        digest?.ssl_digest.as_ref()?.extension.get::<Self>()
    }
}

/// Records [`ConnectionFacts`] when a handshake completes, under the listener's client CA set
/// `client_ca`.
pub struct RecordFacts {
    pub client_ca: u64,
}

#[async_trait]
impl TlsAccept for RecordFacts {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let server_name = tls
            .server_name()
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase());
        let client_subject = tls.peer_certificate_der().and_then(subject_of);
        Some(Arc::new(ConnectionFacts {
            server_name,
            client_subject,
            client_ca: self.client_ca,
        }))
    }
}

/// The reasons a client handshake fails, as `payedge_tls_handshake_failures_total` labels them.
pub const HANDSHAKE_FAILURE_REASONS: [&str; 10] = [
    "timeout",
    "closed",
    "not_tls",
    "protocol_version",
    "no_shared_cipher",
    "no_client_certificate",
    "bad_client_certificate",
    "certificate_rejected_by_client",
    "alert",
    "other",
];

// Pingora keeps only the text of a TLS error (its `explain_err` drops the cause), so reasons are
// read from rustls's messages. The tests below format real rustls errors, so a change of wording
// in rustls fails them rather than silently counting everything as `other`.

/// The label for a failed client handshake.
pub fn handshake_failure_reason(e: &pingora::Error) -> &'static str {
    downstream_reason(&e.to_string())
}

fn downstream_reason(text: &str) -> &'static str {
    if text.contains("peer sent no certificates") {
        "no_client_certificate"
    } else if text.contains("invalid peer certificate") {
        "bad_client_certificate"
    } else if text.contains("peer is incompatible") {
        if [
            "NoCipherSuitesInCommon",
            "NoKxGroupsInCommon",
            "NoSignatureSchemesInCommon",
        ]
        .iter()
        .any(|w| text.contains(w))
        {
            "no_shared_cipher"
        } else {
            // What clients older than TLS 1.2 lack: supported versions, signature algorithms.
            "protocol_version"
        }
    } else if let Some(alert) = alert_received(text) {
        if rejects_certificate(alert) {
            "certificate_rejected_by_client"
        } else if alert == "ProtocolVersion" {
            "protocol_version"
        } else {
            "alert"
        }
    } else if text.contains("received corrupt message")
        || text.contains("received unexpected message")
        || text.contains("received unexpected handshake message")
    {
        "not_tls"
    } else if text.contains("eof") || text.contains("Connection reset") {
        "closed"
    } else {
        "other"
    }
}

/// The alert named by `received fatal alert: X` in `text`.
fn alert_received(text: &str) -> Option<&str> {
    let rest = text.split("received fatal alert: ").nth(1)?;
    let end = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Alerts a peer sends when it refuses the other side's certificate.
pub fn rejects_certificate(alert: &str) -> bool {
    [
        AlertDescription::BadCertificate,
        AlertDescription::UnsupportedCertificate,
        AlertDescription::CertificateRevoked,
        AlertDescription::CertificateExpired,
        AlertDescription::CertificateUnknown,
        AlertDescription::UnknownCA,
        AlertDescription::CertificateRequired,
        AlertDescription::AccessDenied,
    ]
    .iter()
    .any(|a| format!("{a:?}") == alert)
}

/// Why a connection to a provider failed its TLS handshake, as
/// `payedge_upstream_tls_failures_total` and the client's error name it; `None` when the error is
/// not a TLS failure.
pub fn upstream_tls_failure(e: &pingora::Error) -> Option<UpstreamTlsFailure> {
    let is_tls_type = matches!(
        e.etype(),
        pingora::ErrorType::TLSHandshakeFailure
            | pingora::ErrorType::TLSHandshakeTimedout
            | pingora::ErrorType::InvalidCert
            | pingora::ErrorType::HandshakeError
    );
    let text = e.to_string();
    upstream_reason(
        &text,
        is_tls_type,
        e.etype() == &pingora::ErrorType::TLSHandshakeTimedout,
    )
}

fn upstream_reason(text: &str, tls_error: bool, timed_out: bool) -> Option<UpstreamTlsFailure> {
    use UpstreamTlsFailure::*;
    let failure = if text.contains("invalid peer certificate") {
        if text.contains("UnknownIssuer")
            || text.contains("BadSignature")
            || text.contains("UnhandledCriticalExtension")
        {
            UnknownCa
        } else if text.contains("certificate expired")
            || text.contains("Expired")
            || text.contains("not valid yet")
            || text.contains("NotValidYet")
        {
            Expired
        } else if text.contains("not valid for name") || text.contains("NotValidForName") {
            HostnameMismatch
        } else {
            Handshake
        }
    } else if alert_received(text).is_some_and(rejects_certificate) {
        ClientCertificateRefused
    } else if timed_out {
        Timeout
    } else if tls_error {
        Handshake
    } else {
        return None;
    };
    Some(failure)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamTlsFailure {
    UnknownCa,
    Expired,
    HostnameMismatch,
    ClientCertificateRefused,
    /// The provider reset a new TLS connection before payedge could write its request: what a
    /// TLS 1.3 refusal of payedge's client certificate looks like when the reset wins the race
    /// with the alert.
    ClosedAfterHandshake,
    Timeout,
    Handshake,
}

impl UpstreamTlsFailure {
    pub const ALL: [Self; 7] = [
        Self::UnknownCa,
        Self::Expired,
        Self::HostnameMismatch,
        Self::ClientCertificateRefused,
        Self::ClosedAfterHandshake,
        Self::Timeout,
        Self::Handshake,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::UnknownCa => "unknown_ca",
            Self::Expired => "expired",
            Self::HostnameMismatch => "hostname_mismatch",
            Self::ClientCertificateRefused => "client_certificate_refused",
            Self::ClosedAfterHandshake => "closed_after_handshake",
            Self::Timeout => "timeout",
            Self::Handshake => "handshake",
        }
    }

    /// For the client's error message.
    pub fn describe(self) -> &'static str {
        match self {
            Self::UnknownCa => "its TLS certificate is not signed by a trusted CA",
            Self::Expired => "its TLS certificate is expired or not yet valid",
            Self::HostnameMismatch => "its TLS certificate is for another host",
            Self::ClientCertificateRefused => "it refused payedge's client certificate",
            Self::ClosedAfterHandshake => {
                "it closed the connection as TLS began, before reading the request (most often: \
                 it refused payedge's client certificate)"
            }
            Self::Timeout => "the TLS handshake timed out",
            Self::Handshake => "the TLS handshake failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{CertificateError, Error as TlsError, PeerIncompatible};

    /// How Pingora reports a rustls error: its text inside Pingora's own context.
    fn pingora_text(e: TlsError) -> String {
        format!(" TLSHandshakeFailure context: tls connect error: {e}")
    }

    #[test]
    fn client_handshake_failures_are_named_from_rustls_errors() {
        let cases = [
            (TlsError::NoCertificatesPresented, "no_client_certificate"),
            (
                TlsError::InvalidCertificate(CertificateError::UnknownIssuer),
                "bad_client_certificate",
            ),
            (
                TlsError::PeerIncompatible(PeerIncompatible::SignatureAlgorithmsExtensionRequired),
                "protocol_version",
            ),
            (
                TlsError::PeerIncompatible(PeerIncompatible::Tls12NotOffered),
                "protocol_version",
            ),
            (
                TlsError::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon),
                "no_shared_cipher",
            ),
            (
                TlsError::AlertReceived(AlertDescription::UnknownCA),
                "certificate_rejected_by_client",
            ),
            (
                TlsError::AlertReceived(AlertDescription::ProtocolVersion),
                "protocol_version",
            ),
            (
                TlsError::AlertReceived(AlertDescription::DecodeError),
                "alert",
            ),
            (
                TlsError::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
                "not_tls",
            ),
            (TlsError::DecryptError, "other"),
        ];
        for (error, reason) in cases {
            let text = pingora_text(error.clone());
            assert_eq!(downstream_reason(&text), reason, "{text}");
        }
        assert_eq!(
            downstream_reason("tls connect error: tls handshake eof"),
            "closed"
        );
    }

    #[test]
    fn provider_handshake_failures_are_named_from_rustls_errors() {
        use UpstreamTlsFailure::*;
        let now = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(9));
        let then = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(5));
        let cases = [
            (CertificateError::UnknownIssuer, UnknownCa),
            (CertificateError::Expired, Expired),
            (
                CertificateError::ExpiredContext {
                    time: now,
                    not_after: then,
                },
                Expired,
            ),
            (CertificateError::NotValidForName, HostnameMismatch),
            (
                CertificateError::NotValidForNameContext {
                    expected: rustls::pki_types::ServerName::try_from("a.example")
                        .unwrap()
                        .to_owned(),
                    presented: vec!["DnsName(\"b.example\")".into()],
                },
                HostnameMismatch,
            ),
        ];
        for (cert, failure) in cases {
            let text = format!(
                "TLS connect() failed: {}, SNI: a.example",
                TlsError::InvalidCertificate(cert)
            );
            assert_eq!(upstream_reason(&text, true, false), Some(failure), "{text}");
        }
        let refused = format!(
            " ReadError context: while reading response headers cause: {}",
            TlsError::AlertReceived(AlertDescription::CertificateRequired)
        );
        assert_eq!(
            upstream_reason(&refused, false, false),
            Some(ClientCertificateRefused)
        );
        assert_eq!(upstream_reason("connection refused", false, false), None);
        assert_eq!(upstream_reason("handshake", false, true), Some(Timeout));
        assert_eq!(upstream_reason("something", true, false), Some(Handshake));
    }
}
