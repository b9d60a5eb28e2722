//! What a Pingora proxy error means for the client.

use pingora::{Error, ErrorSource, ErrorType};

use crate::failure::Failure;

/// The failure to answer for `e`, or `None` when the client is gone and nothing can be answered.
pub fn classify(e: &Error, provider: Option<&str>) -> Option<Failure> {
    let provider = provider.unwrap_or("unknown").to_string();
    let failure = match e.etype() {
        ErrorType::ConnectTimedout
        | ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::ConnectProxyFailure
        | ErrorType::TLSHandshakeFailure
        | ErrorType::TLSHandshakeTimedout
        | ErrorType::HandshakeError
        | ErrorType::SocketError
        | ErrorType::BindError => Failure::UpstreamUnavailable {
            provider,
            reason: crate::tls::upstream_tls_failure(e).map(|f| f.describe()),
        },
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            Failure::UpstreamTimeout { provider }
        }
        _ => match e.esource() {
            ErrorSource::Upstream => Failure::UpstreamFailed { provider },
            ErrorSource::Downstream => match e.etype() {
                // An HTTP/2 client that reset its stream or closed its connection (Pingora's
                // "Client closed H2"), or whose stream the h2 layer reset for breaking the
                // protocol: either way the stream is gone and nothing can be answered. It is a
                // client gone, not a bad request.
                ErrorType::ReadError
                | ErrorType::WriteError
                | ErrorType::ConnectionClosed
                | ErrorType::H2Error
                | ErrorType::ReadTimedout
                | ErrorType::WriteTimedout => return None,
                _ => Failure::BadRequest,
            },
            ErrorSource::Internal | ErrorSource::Unset => Failure::Internal,
        },
    };
    Some(failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(t: ErrorType) -> Box<Error> {
        Error::new(t).into_up()
    }

    #[test]
    fn classes() {
        assert_eq!(
            classify(&upstream(ErrorType::ConnectRefused), Some("a")),
            Some(Failure::UpstreamUnavailable {
                provider: "a".into(),
                reason: None,
            })
        );
        assert_eq!(
            classify(&upstream(ErrorType::ReadTimedout), Some("a")),
            Some(Failure::UpstreamTimeout {
                provider: "a".into()
            })
        );
        assert_eq!(
            classify(&upstream(ErrorType::ConnectionClosed), Some("a")),
            Some(Failure::UpstreamFailed {
                provider: "a".into()
            })
        );
        assert_eq!(
            classify(&Error::new(ErrorType::ReadError).into_down(), None),
            None
        );
        assert_eq!(
            classify(&Error::new(ErrorType::H2Error).into_down(), None),
            None
        );
        assert_eq!(
            classify(&Error::new(ErrorType::InvalidHTTPHeader).into_down(), None),
            Some(Failure::BadRequest)
        );
    }
}
