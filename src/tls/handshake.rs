//! What a client's TLS handshake established (its server name, its verified certificate), carried
//! to every request of the connection through Pingora's TLS digest; and why a handshake failed,
//! as a bounded metric label.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::listeners::TlsAccept;
use pingora::protocols::Digest;
use pingora::protocols::tls::TlsRef;
use rustls::{AlertDescription, CertificateError, Error as TlsError, PeerIncompatible};

use super::certs::subject_of;

/// What the TLS handshake established about a client connection.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConnectionFacts {
    /// The SNI the client sent: lower case, without a trailing dot.
    pub server_name: Option<String>,
    /// The subject of the client certificate, verified against `client_auth.ca_file`.
    pub client_subject: Option<String>,
}

impl ConnectionFacts {
    /// The facts of the connection a request arrived on; `None` for plain HTTP.
    pub fn of(digest: Option<&Digest>) -> Option<&Self> {
        digest?.ssl_digest.as_ref()?.extension.get::<Self>()
    }
}

/// Records [`ConnectionFacts`] when a handshake completes.
pub struct RecordFacts;

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

/// The label for a failed client handshake.
pub fn handshake_failure_reason(e: &pingora::Error) -> &'static str {
    match root_tls_error(e) {
        Some(tls) => match tls {
            TlsError::NoCertificatesPresented => "no_client_certificate",
            TlsError::InvalidCertificate(_) => "bad_client_certificate",
            TlsError::PeerIncompatible(p) => match p {
                PeerIncompatible::Tls12NotOffered
                | PeerIncompatible::Tls12NotOfferedOrEnabled
                | PeerIncompatible::Tls13RequiredForQuic
                | PeerIncompatible::SupportedVersionsExtensionRequired => "protocol_version",
                PeerIncompatible::NoCipherSuitesInCommon
                | PeerIncompatible::NoKxGroupsInCommon
                | PeerIncompatible::NoSignatureSchemesInCommon => "no_shared_cipher",
                _ => "other",
            },
            TlsError::AlertReceived(alert) if rejects_certificate(*alert) => {
                "certificate_rejected_by_client"
            }
            TlsError::AlertReceived(AlertDescription::ProtocolVersion) => "protocol_version",
            TlsError::AlertReceived(_) => "alert",
            TlsError::InvalidMessage(_) | TlsError::InappropriateMessage { .. } => "not_tls",
            _ => "other",
        },
        None if io_kind(e) == Some(std::io::ErrorKind::UnexpectedEof) => "closed",
        None if io_kind(e).is_some() => "closed",
        None => "other",
    }
}

/// Alerts a peer sends when it refuses the other side's certificate.
pub fn rejects_certificate(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateRequired
            | AlertDescription::AccessDenied
    )
}

/// The rustls error at the bottom of a Pingora error, if that is what it is.
pub fn root_tls_error(e: &pingora::Error) -> Option<&TlsError> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(current) = cause {
        if let Some(tls) = current.downcast_ref::<TlsError>() {
            return Some(tls);
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<TlsError>())
            {
                return Some(tls);
            }
        }
        cause = match current.downcast_ref::<pingora::Error>() {
            Some(p) => p
                .cause
                .as_deref()
                .map(|c| c as &(dyn std::error::Error + 'static)),
            None => current.source(),
        };
    }
    None
}

fn io_kind(e: &pingora::Error) -> Option<std::io::ErrorKind> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cause = match current.downcast_ref::<pingora::Error>() {
            Some(p) => p
                .cause
                .as_deref()
                .map(|c| c as &(dyn std::error::Error + 'static)),
            None => current.source(),
        };
    }
    None
}

/// Why a connection to a provider failed its TLS handshake, as
/// `payedge_upstream_tls_failures_total` and the client's error name it; `None` when the error is
/// not a TLS failure.
pub fn upstream_tls_failure(e: &pingora::Error) -> Option<UpstreamTlsFailure> {
    use UpstreamTlsFailure::*;
    let is_tls_type = matches!(
        e.etype(),
        pingora::ErrorType::TLSHandshakeFailure
            | pingora::ErrorType::TLSHandshakeTimedout
            | pingora::ErrorType::InvalidCert
            | pingora::ErrorType::HandshakeError
    );
    let failure = match root_tls_error(e) {
        Some(TlsError::InvalidCertificate(cert)) => match cert {
            CertificateError::UnknownIssuer
            | CertificateError::BadSignature
            | CertificateError::UnhandledCriticalExtension
            | CertificateError::InvalidPurpose => UnknownCa,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => Expired,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                HostnameMismatch
            }
            _ => Handshake,
        },
        Some(TlsError::AlertReceived(alert)) if rejects_certificate(*alert) => {
            ClientCertificateRefused
        }
        Some(_) => Handshake,
        None if e.etype() == &pingora::ErrorType::TLSHandshakeTimedout => Timeout,
        None if is_tls_type => Handshake,
        None => return None,
    };
    Some(failure)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamTlsFailure {
    UnknownCa,
    Expired,
    HostnameMismatch,
    ClientCertificateRefused,
    Timeout,
    Handshake,
}

impl UpstreamTlsFailure {
    pub const ALL: [Self; 6] = [
        Self::UnknownCa,
        Self::Expired,
        Self::HostnameMismatch,
        Self::ClientCertificateRefused,
        Self::Timeout,
        Self::Handshake,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::UnknownCa => "unknown_ca",
            Self::Expired => "expired",
            Self::HostnameMismatch => "hostname_mismatch",
            Self::ClientCertificateRefused => "client_certificate_refused",
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
            Self::Timeout => "the TLS handshake timed out",
            Self::Handshake => "the TLS handshake failed",
        }
    }
}
