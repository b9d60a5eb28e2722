//! Every error the gateway answers itself, with its HTTP status and stable `code`, and the one
//! JSON shape they all share:
//! `{"error":{"code":"tenant_mismatch","message":"…","request_id":"…"}}`.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use payedge_filters::auth::AuthFailure;
use payedge_filters::request_head::HeadRefusal;
use payedge_filters::tenant::TenantRejection;
use pingora::http::ResponseHeader;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The request head is too large, has too many headers, or states its body length twice.
    Head(HeadRefusal),
    PathInvalid,
    Tenant(TenantRejection),
    Unauthorized(AuthFailure),
    TenantMismatch,
    /// The request names another tenant than the TLS server name of its connection.
    MisdirectedRequest,
    /// The connection's client certificate was verified under client CAs since replaced.
    StaleClientCertificate,
    /// A browser page from an origin not in `notifications.cors.allowed_origins`.
    OriginNotAllowed,
    /// The caller or its tenant holds as many hub connections as it may.
    TooManyConnections(crate::hub::LimitRefusal),
    /// The caller negotiated more often than `notifications.limits.negotiations_per_minute`.
    TooManyNegotiations {
        retry_after_seconds: u64,
    },
    RouteNotFound,
    /// No provider serving the tenant takes the request's currency.
    CurrencyUnsupported,
    /// No provider of the pool serves the tenant.
    TenantNotServed,
    NoProviderAvailable {
        retry_after_seconds: u64,
    },
    /// The provider could not be reached; nothing was sent to it.
    UpstreamUnavailable {
        provider: String,
        /// Why, when it is worth telling (a TLS failure).
        reason: Option<&'static str>,
    },
    /// The provider did not answer in time.
    UpstreamTimeout {
        provider: String,
    },
    /// The exchange with the provider broke after it was reached.
    UpstreamFailed {
        provider: String,
    },
    BadRequest,
    /// A route that requires `Idempotency-Key` got none.
    IdempotencyKeyRequired,
    /// `Idempotency-Key` is not one 1–255 character visible-ASCII value.
    IdempotencyKeyInvalid,
    /// The body of a request with a key is larger than payedge keeps to compare retries.
    IdempotencyBodyTooLarge,
    /// The key was used for a different request (method, path or body).
    IdempotencyKeyReused,
    /// The first request with this key is still being worked on.
    IdempotencyInProgress {
        retry_after_seconds: u64,
    },
    /// The first request with this key may have reached `provider` and its outcome is unknown.
    IdempotencyOutcomeUnknown {
        provider: Option<String>,
    },
    /// The first request with this key completed; its response was too large to keep.
    IdempotencyResponseNotStored {
        status: u16,
    },
    /// The idempotency store cannot be reached (the route refuses rather than risk a double).
    IdempotencyUnavailable,
    /// A request to the hub's path that is not a WebSocket upgrade.
    HubNeedsWebSocket,
    /// `?id=` names no pending negotiation.
    HubConnectionUnknown,
    /// `?id=` names a negotiation whose WebSocket was opened already.
    HubConnectionTaken,
    /// The hub needs `auth` in the configuration.
    HubDisabled,
    /// Too many negotiations wait for their WebSocket (for the hub, or for this caller).
    HubBusy,
    NotFound,
    MethodNotAllowed,
    Forbidden,
    Internal,
}

impl Failure {
    pub fn status(&self) -> u16 {
        match self {
            Self::PathInvalid
            | Self::BadRequest
            | Self::HubNeedsWebSocket
            | Self::IdempotencyKeyRequired
            | Self::IdempotencyKeyInvalid => 400,
            Self::IdempotencyBodyTooLarge => 413,
            Self::IdempotencyKeyReused => 422,
            Self::IdempotencyInProgress { .. } | Self::IdempotencyResponseNotStored { .. } => 409,
            Self::IdempotencyOutcomeUnknown { .. } => 502,
            Self::IdempotencyUnavailable => 503,
            Self::Tenant(r) => r.http_status(),
            Self::Head(r) => r.http_status(),
            Self::Unauthorized(_) => 401,
            Self::TenantMismatch
            | Self::Forbidden
            | Self::TenantNotServed
            | Self::OriginNotAllowed => 403,
            Self::TooManyConnections(_) | Self::TooManyNegotiations { .. } => 429,
            Self::RouteNotFound
            | Self::NotFound
            | Self::HubConnectionUnknown
            | Self::HubDisabled => 404,
            Self::HubConnectionTaken => 409,
            Self::MisdirectedRequest | Self::StaleClientCertificate => 421,
            Self::MethodNotAllowed => 405,
            Self::CurrencyUnsupported => 422,
            Self::NoProviderAvailable { .. } | Self::HubBusy => 503,
            Self::UpstreamUnavailable { .. } | Self::UpstreamFailed { .. } => 502,
            Self::UpstreamTimeout { .. } => 504,
            Self::Internal => 500,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::PathInvalid => "path_invalid",
            Self::Tenant(r) => r.code(),
            Self::Head(r) => r.code(),
            Self::Unauthorized(_) => "unauthorized",
            Self::TenantMismatch => "tenant_mismatch",
            Self::MisdirectedRequest => "misdirected_request",
            Self::StaleClientCertificate => "client_certificate_stale",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::TooManyConnections(_) => "too_many_connections",
            Self::TooManyNegotiations { .. } => "too_many_negotiations",
            Self::RouteNotFound => "route_not_found",
            Self::CurrencyUnsupported => "currency_unsupported",
            Self::TenantNotServed => "tenant_not_served",
            Self::NoProviderAvailable { .. } => "no_provider_available",
            Self::UpstreamUnavailable { .. } => "upstream_unavailable",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::UpstreamFailed { .. } => "upstream_failed",
            Self::BadRequest => "bad_request",
            Self::IdempotencyKeyRequired => "idempotency_key_required",
            Self::IdempotencyKeyInvalid => "idempotency_key_invalid",
            Self::IdempotencyBodyTooLarge => "idempotency_body_too_large",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::IdempotencyInProgress { .. } => "idempotency_in_progress",
            Self::IdempotencyOutcomeUnknown { .. } => "idempotency_outcome_unknown",
            Self::IdempotencyResponseNotStored { .. } => "idempotency_response_not_stored",
            Self::IdempotencyUnavailable => "idempotency_unavailable",
            Self::HubNeedsWebSocket => "websocket_required",
            Self::HubConnectionUnknown => "connection_unknown",
            Self::HubConnectionTaken => "connection_taken",
            Self::HubDisabled => "hub_disabled",
            Self::HubBusy => "hub_busy",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Forbidden => "forbidden",
            Self::Internal => "internal_error",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::PathInvalid => {
                "the path has dot segments, empty segments or encoded separators".into()
            }
            Self::Tenant(r) => r.message().into(),
            Self::Head(r) => r.message().into(),
            Self::Unauthorized(f) => f.message().into(),
            Self::TenantMismatch => "the token does not grant access to this tenant".into(),
            Self::OriginNotAllowed => {
                "pages from this origin may not use the hub (notifications.cors.allowed_origins)"
                    .into()
            }
            Self::TooManyNegotiations { .. } => {
                "this caller negotiates hub connections too often; retry after Retry-After seconds"
                    .into()
            }
            Self::TooManyConnections(crate::hub::LimitRefusal::Subject) => {
                "this caller holds as many hub connections as it may; close one first".into()
            }
            Self::TooManyConnections(crate::hub::LimitRefusal::Tenant) => {
                "this tenant holds as many hub connections as it may".into()
            }
            Self::StaleClientCertificate => {
                "this connection's client certificate was verified under client CAs that changed; \
                 connect again"
                    .into()
            }
            Self::MisdirectedRequest => {
                "this connection was opened for another tenant's host; connect to this tenant's host"
                    .into()
            }
            Self::RouteNotFound => "no route serves this path".into(),
            Self::CurrencyUnsupported => {
                "no provider serving this tenant takes the request's currency".into()
            }
            Self::TenantNotServed => "no provider of this route serves the tenant".into(),
            Self::NoProviderAvailable { .. } => "no provider can take this request now".into(),
            Self::UpstreamUnavailable {
                provider,
                reason: None,
            } => format!("provider {provider} could not be reached; the request was not sent"),
            Self::UpstreamUnavailable {
                provider,
                reason: Some(reason),
            } => format!(
                "provider {provider} could not be reached ({reason}); the request was not sent"
            ),
            Self::UpstreamTimeout { provider } => format!(
                "provider {provider} did not answer in time; the outcome at the provider is unknown"
            ),
            Self::UpstreamFailed { provider } => format!(
                "the exchange with provider {provider} failed; the outcome at the provider is unknown"
            ),
            Self::BadRequest => "the request could not be read".into(),
            Self::IdempotencyKeyRequired => {
                "this route requires an Idempotency-Key header on requests that change state".into()
            }
            Self::IdempotencyKeyInvalid => {
                "Idempotency-Key must be one value of 1 to 255 visible ASCII characters".into()
            }
            Self::IdempotencyBodyTooLarge => {
                "a request with an Idempotency-Key may carry at most 64 KiB of body".into()
            }
            Self::IdempotencyKeyReused => {
                "this Idempotency-Key was used for a different request; use a new key".into()
            }
            Self::IdempotencyInProgress { .. } => {
                "the first request with this Idempotency-Key is still in progress; retry later"
                    .into()
            }
            Self::IdempotencyOutcomeUnknown {
                provider: Some(provider),
            } => format!(
                "the first request with this Idempotency-Key reached provider {provider} and its \
                 outcome is unknown; it is not sent again: check with the provider before paying \
                 again"
            ),
            Self::IdempotencyOutcomeUnknown { provider: None } => {
                "the first request with this Idempotency-Key may have reached a provider and its \
                 outcome is unknown; it is not sent again: check before paying again"
                    .into()
            }
            Self::IdempotencyResponseNotStored { status } => format!(
                "the first request with this Idempotency-Key completed with status {status}; its \
                 response was too large to keep (idempotency.max_response_bytes)"
            ),
            Self::IdempotencyUnavailable => {
                "the idempotency store cannot be reached; the request was not sent".into()
            }
            Self::HubNeedsWebSocket => {
                "the hub speaks WebSockets only: negotiate, then open a WebSocket".into()
            }
            Self::HubConnectionUnknown => "no negotiated connection has this id".into(),
            Self::HubConnectionTaken => "this connection id is in use already".into(),
            Self::HubDisabled => "the notification hub needs an auth section".into(),
            Self::HubBusy => {
                "too many negotiations wait for their connection; open them or retry".into()
            }
            Self::NotFound => "not found".into(),
            Self::MethodNotAllowed => "method not allowed".into(),
            Self::Forbidden => "this endpoint needs an operator token".into(),
            Self::Internal => "internal error".into(),
        }
    }

    pub fn body(&self, request_id: &str) -> Bytes {
        let body = serde_json::json!({
            "error": {
                "code": self.code(),
                "message": self.message(),
                "request_id": request_id,
            }
        });
        Bytes::from(body.to_string())
    }

    /// The response header for [`Failure::body`] of `body_len` bytes.
    pub fn response_header(
        &self,
        request_id: &str,
        body_len: usize,
    ) -> pingora::Result<ResponseHeader> {
        let mut header = ResponseHeader::build(self.status(), Some(6))?;
        header.insert_header(CONTENT_TYPE, "application/json")?;
        header.insert_header(CONTENT_LENGTH, body_len.to_string())?;
        header.insert_header(CACHE_CONTROL, "no-store")?;
        header.insert_header(REQUEST_ID_HEADER, request_id)?;
        match self {
            Self::Unauthorized(AuthFailure::Missing) => {
                header.insert_header(WWW_AUTHENTICATE, r#"Bearer realm="payedge""#)?;
            }
            Self::Unauthorized(_) => {
                header.insert_header(
                    WWW_AUTHENTICATE,
                    r#"Bearer realm="payedge", error="invalid_token""#,
                )?;
            }
            Self::NoProviderAvailable {
                retry_after_seconds,
            } => {
                header.insert_header(RETRY_AFTER, retry_after_seconds.max(&1).to_string())?;
            }
            Self::HubBusy => {
                header.insert_header(RETRY_AFTER, "1")?;
            }
            Self::IdempotencyInProgress {
                retry_after_seconds,
            }
            | Self::TooManyNegotiations {
                retry_after_seconds,
            } => {
                header.insert_header(RETRY_AFTER, retry_after_seconds.max(&1).to_string())?;
            }
            _ => {}
        }
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_one_error_shape() {
        let f = Failure::TenantMismatch;
        let body: serde_json::Value = serde_json::from_slice(&f.body("req-1")).unwrap();
        assert_eq!(body["error"]["code"], "tenant_mismatch");
        assert_eq!(body["error"]["request_id"], "req-1");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert_eq!(f.status(), 403);
    }

    #[test]
    fn headers_carry_the_challenge_and_retry_hint() {
        let h = Failure::Unauthorized(AuthFailure::Expired)
            .response_header("r", 10)
            .unwrap();
        assert_eq!(h.status.as_u16(), 401);
        assert!(
            h.headers[WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
        assert_eq!(h.headers[CONTENT_TYPE], "application/json");
        let h = Failure::NoProviderAvailable {
            retry_after_seconds: 4,
        }
        .response_header("r", 10)
        .unwrap();
        assert_eq!(h.headers[RETRY_AFTER], "4");
        assert_eq!(Failure::CurrencyUnsupported.status(), 422);
        let h = Failure::UpstreamTimeout {
            provider: "cards-a".into(),
        };
        assert!(h.message().contains("cards-a"));
        assert_eq!(h.status(), 504);
    }
}
