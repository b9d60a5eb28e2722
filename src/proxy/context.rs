//! What one request carries from phase to phase.

use std::sync::Arc;
use std::time::Instant;

use payedge_filters::auth::Principal;
use payedge_filters::forwarded::Forwarding;
use payedge_filters::tenant::Tenant;
use payedge_upstreams::TriedSet;

use super::capture::Capture;
use crate::failure::Failure;
use crate::lifecycle::InFlight;
use crate::runtime::Snapshot;
use crate::tls::UpstreamTlsFailure;

pub struct RequestCtx {
    /// The configuration this request runs on, from its arrival to its end.
    pub snap: Arc<Snapshot>,
    pub started: Instant,
    pub request_id: String,
    pub tenant: Option<Tenant>,
    pub principal: Option<Principal>,
    /// Index into the gateway's routes.
    pub route: Option<usize>,
    pub pool: Option<usize>,
    /// The provider of the current (last) attempt.
    pub provider: Option<usize>,
    pub tried: TriedSet,
    /// The providers that may ever take this request (tenant and currency), as a bitmask.
    pub candidates: u64,
    pub attempts: u32,
    pub attempt_started: Option<Instant>,
    /// Whether the current attempt's outcome was reported to the pool already.
    pub attempt_recorded: bool,
    /// Set when a provider's 5xx is discarded to retry the request elsewhere.
    pub retrying_after_status: bool,
    /// What the client is told if no further attempt can be made.
    pub last_attempt_failure: Option<Failure>,
    /// The failure the gateway answered (or will answer) itself.
    pub failure: Option<Failure>,
    /// Triggers whose method and path match this request (bit i: trigger i).
    pub trigger_candidates: u64,
    pub capture: Option<Capture>,
    /// Who the client is and what goes upstream in X-Forwarded-For (`None`: no peer address).
    pub forwarding: Option<Forwarding>,
    /// The verified client certificate's subject (TLS with client_auth).
    pub client_subject: Option<String>,
    /// The client came over TLS.
    pub https: bool,
    /// Why the last TLS handshake with a provider failed, if one did.
    pub upstream_tls_failure: Option<UpstreamTlsFailure>,
    /// The idempotency key this request holds (its first request), if any.
    pub idempotency: Option<super::idempotency::HeldKey>,
    /// The digest of the request's scoped idempotency key, for its log line and events.
    pub idempotency_digest: Option<String>,
    /// Providers the request may have reached (its bytes went out to them), in order.
    pub may_hold: Vec<usize>,
    pub idempotency_result: Option<crate::metrics::IdempotencyResult>,
    /// The route's cache settings when this request may be answered from the cache.
    pub cache: Option<crate::config::RouteCache>,
    /// The response was kept in the cache.
    pub cache_stored: bool,
    /// Set on a hit: how long the kept response stays fresh.
    pub cache_ttl_left: Option<std::time::Duration>,
    pub _in_flight: InFlight,
}

impl RequestCtx {
    pub fn new(in_flight: InFlight, snap: Arc<Snapshot>) -> Self {
        Self {
            snap,
            started: Instant::now(),
            request_id: String::new(),
            tenant: None,
            principal: None,
            route: None,
            pool: None,
            provider: None,
            tried: TriedSet::default(),
            candidates: 0,
            attempts: 0,
            attempt_started: None,
            attempt_recorded: false,
            retrying_after_status: false,
            last_attempt_failure: None,
            failure: None,
            trigger_candidates: 0,
            capture: None,
            forwarding: None,
            client_subject: None,
            https: false,
            upstream_tls_failure: None,
            idempotency: None,
            idempotency_digest: None,
            may_hold: Vec::new(),
            idempotency_result: None,
            cache: None,
            cache_stored: false,
            cache_ttl_left: None,
            _in_flight: in_flight,
        }
    }
}
