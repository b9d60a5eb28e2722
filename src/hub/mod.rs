//! The notification hub: a SignalR-compatible WebSocket service on the admin listener.
//!
//! ```text
//! POST {hub}/negotiate ─► a one-time connection token           (negotiate.rs)
//! GET  {hub}?id=… (or none, skipNegotiation) ─► 101 ─► WebSocket   (this file)
//!    handshake, then the connection joins tenant::{tenant of its token} (connection.rs)
//! events: the in-memory bus, or Redis channels of the tenants with members here (backplane.rs)
//!    ─► one message per event ─► each member's bounded queue (groups.rs) ─► its socket
//! ```

mod backplane;
mod connection;
mod cors;
mod groups;
mod limits;
mod metrics;
mod negotiate;
mod negotiate_rate;
pub mod protocol;
mod recovery;
mod session;
mod stateful;
mod subscriber;

use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderName, HeaderValue, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

pub use crate::config::HubSettings;
use crate::failure::Failure;
use crate::lifecycle::Lifecycle;
pub use backplane::{Backplane, HubFeed};
pub use cors::normalize as normalize_origin;
use groups::{EventFrame, Groups};
pub use limits::{LimitSettings, Refusal as LimitRefusal};
pub use metrics::HubMetrics;
use negotiate::{Claim, Negotiations};
pub use recovery::HistorySource;
use recovery::LiveFeed;
pub use session::HubAuth;
pub use stateful::StatefulSettings;

/// Bytes tungstenite reads at a time; small, because every idle connection holds its buffer.
const READ_BUFFER: usize = 512;

pub struct Hub {
    settings: HubSettings,
    /// Swapped whole by a reload (new keys, tenants, admin role): the next negotiate, connect or
    /// join uses it.
    auth: arc_swap::ArcSwap<HubAuth>,
    groups: Groups,
    negotiations: Negotiations,
    metrics: Option<Arc<HubMetrics>>,
    lifecycle: &'static Lifecycle,
    /// Where resuming clients' missed events are read.
    history: HistorySource,
    /// Which tenants' live events reach this instance.
    live: LiveFeed,
    /// Origins allowed, swapped by a reload.
    cors: arc_swap::ArcSwap<cors::Cors>,
    limits: Arc<limits::ConnectionLimits>,
    negotiate_rate: negotiate_rate::NegotiationRate,
    /// Stateful reconnect as offered to new negotiations, swapped by a reload.
    stateful_reconnect: arc_swap::ArcSwap<Option<StatefulSettings>>,
    /// Stateful connections whose client may come back on a new socket, by connection token.
    reattach: stateful::Reattach<connection::Reattached>,
}

/// What an accepted upgrade request becomes.
enum Upgrade {
    /// A new connection; with its token when it negotiated stateful reconnect. The slot counts
    /// it against the limits while it lives.
    New {
        caller: session::Caller,
        stateful_token: Option<String>,
        slot: limits::Slot,
    },
    /// The new socket of a stateful connection whose socket broke.
    Reattach {
        caller: session::Caller,
        to: tokio::sync::mpsc::Sender<connection::Reattached>,
    },
}

/// The hub's answer to a negotiate request (or its preflight): the outcome, and the CORS
/// headers to send with it whatever it is.
pub struct NegotiateAnswer {
    pub result: Result<(u16, String), Failure>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// What the admin service does with a request under the hub's path.
pub enum HubRequest {
    Negotiate,
    Connect,
    NotHub,
}

impl Hub {
    /// Checks tokens with `auth` from now on (a reload).
    pub fn set_auth(&self, auth: HubAuth) {
        self.auth.store(std::sync::Arc::new(auth));
    }

    /// The settings a reload may change: allowed origins, connection limits and stateful
    /// reconnect apply to negotiations and connections from now on; open connections keep
    /// what they started with.
    pub fn set_policy(&self, settings: &HubSettings) {
        self.cors.store(Arc::new(cors::Cors::new(
            settings.allowed_origins.iter().cloned(),
        )));
        self.limits.set(settings.limits);
        self.negotiate_rate
            .set(settings.limits.negotiations_per_minute);
        self.stateful_reconnect
            .store(Arc::new(settings.stateful_reconnect));
    }

    /// Stateful reconnect as offered now.
    fn stateful_settings(&self) -> Option<StatefulSettings> {
        **self.stateful_reconnect.load()
    }

    pub fn new(
        settings: HubSettings,
        auth: HubAuth,
        metrics: Option<Arc<HubMetrics>>,
        lifecycle: &'static Lifecycle,
        history: HistorySource,
    ) -> Self {
        Self {
            auth: arc_swap::ArcSwap::from_pointee(auth),
            groups: Groups::default(),
            negotiations: Negotiations::default(),
            metrics,
            lifecycle,
            live: LiveFeed::for_source(&history),
            history,
            cors: arc_swap::ArcSwap::from_pointee(cors::Cors::new(
                settings.allowed_origins.iter().cloned(),
            )),
            stateful_reconnect: arc_swap::ArcSwap::from_pointee(settings.stateful_reconnect),
            limits: Arc::new(limits::ConnectionLimits::new(settings.limits)),
            negotiate_rate: negotiate_rate::NegotiationRate::new(
                settings.limits.negotiations_per_minute,
            ),
            reattach: stateful::Reattach::default(),
            settings,
        }
    }

    /// How many connections the hub holds, kept current as they come and go.
    pub fn audience(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        Arc::clone(&self.groups.audience)
    }

    pub fn classify(&self, req: &RequestHeader) -> HubRequest {
        let path = req.uri.path().trim_end_matches('/');
        let hub = self.settings.path.trim_end_matches('/');
        match path.strip_prefix(hub) {
            Some("") => HubRequest::Connect,
            Some("/negotiate") => HubRequest::Negotiate,
            _ => HubRequest::NotHub,
        }
    }

    /// `POST {hub}/negotiate?negotiateVersion=1` (and its CORS preflight): the JSON answer, or
    /// why not.
    pub fn negotiate(&self, req: &RequestHeader) -> NegotiateAnswer {
        let origin = match self.cors.load().check(req) {
            cors::OriginCheck::Refused => {
                self.refused("origin");
                return NegotiateAnswer {
                    result: Err(Failure::OriginNotAllowed),
                    headers: Vec::new(),
                };
            }
            cors::OriginCheck::Allowed(origin) => Some(origin),
            cors::OriginCheck::None => None,
        };
        if req.method == Method::OPTIONS
            && let Some(origin) = &origin
        {
            return NegotiateAnswer {
                result: Ok((204, String::new())),
                headers: cors::preflight_headers(origin),
            };
        }
        NegotiateAnswer {
            result: self.negotiate_checked(req),
            headers: origin
                .as_ref()
                .map(cors::response_headers)
                .unwrap_or_default(),
        }
    }

    fn negotiate_checked(&self, req: &RequestHeader) -> Result<(u16, String), Failure> {
        if req.method != Method::POST {
            return Err(Failure::MethodNotAllowed);
        }
        let caller = self.authenticate(req)?;
        self.limits.check(&caller).map_err(|refusal| {
            self.refused(refusal.label());
            Failure::TooManyConnections(refusal)
        })?;
        self.negotiate_rate
            .take(&caller, std::time::Instant::now())
            .map_err(|retry_after_seconds| {
                self.refused("negotiate_rate");
                Failure::TooManyNegotiations {
                    retry_after_seconds,
                }
            })?;
        let version = session::query_param(req, "negotiateVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let stateful = self.stateful_settings().is_some()
            && version >= 1
            && session::query_param(req, "useStatefulReconnect").as_deref() == Some("true");
        self.negotiations
            .create(caller, version, stateful)
            .map(|body| (200, body))
            .ok_or(Failure::HubBusy)
    }

    fn refused(&self, reason: &str) {
        if let Some(m) = self.metrics.as_deref() {
            m.refused(reason);
        }
    }

    fn authenticate(&self, req: &RequestHeader) -> Result<session::Caller, Failure> {
        self.auth.load().authenticate(req).inspect_err(|_| {
            if let Some(m) = self.metrics.as_deref() {
                m.unauthorized();
            }
        })
    }

    /// `GET {hub}` with a WebSocket upgrade: checks everything before the 101, then serves the
    /// connection until it ends. Errors are answered before any upgrade.
    pub async fn connect(self: &Arc<Self>, mut session: ServerSession, shutdown: &ShutdownWatch) {
        let checked = self.check_upgrade(session.req_header());
        let (upgrade, accept) = match checked {
            Ok(ok) => ok,
            Err(failure) => {
                let _ = crate::admin::write_failure(&mut session, &failure).await;
                let _ = session.finish().await;
                return;
            }
        };
        let Ok(mut header) = ResponseHeader::build(101, Some(4)) else {
            return;
        };
        let upgraded = header
            .insert_header(http::header::UPGRADE, "websocket")
            .is_ok()
            && header
                .insert_header(http::header::CONNECTION, "Upgrade")
                .is_ok()
            && header
                .insert_header(http::header::SEC_WEBSOCKET_ACCEPT, accept)
                .is_ok();
        if !upgraded
            || session
                .write_response_header(Box::new(header))
                .await
                .is_err()
        {
            return;
        }
        let ServerSession::H1(h1) = session else {
            return;
        };
        let mut stream = h1.into_inner();
        if stream.flush().await.is_err() {
            return;
        }
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(0)
            .max_message_size(Some(self.settings.max_message_bytes))
            .max_frame_size(Some(self.settings.max_message_bytes));
        let ws = WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await;
        let (caller, stateful_token, slot) = match upgrade {
            Upgrade::New {
                caller,
                stateful_token,
                slot,
            } => (caller, stateful_token, slot),
            Upgrade::Reattach { caller, to } => {
                // The connection is waiting for it (or gone: the socket closes with it).
                let _ = to.try_send((ws, caller));
                return;
            }
        };
        let in_flight = self.lifecycle.request_started();
        let (hub, shutdown) = (Arc::clone(self), shutdown.clone());
        // A task of its own: the connection lives long, and should not keep the memory of the
        // HTTP request that opened it.
        let ws = Box::new(ws);
        tokio::spawn(async move {
            let (_in_flight, _slot) = (in_flight, slot);
            connection::serve(hub, ws, caller, stateful_token, shutdown).await;
        });
    }

    fn check_upgrade(&self, req: &RequestHeader) -> Result<(Upgrade, HeaderValue), Failure> {
        let header = |name| {
            req.headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .unwrap_or("")
        };
        let is_websocket = req.method == Method::GET
            && header(http::header::UPGRADE).eq_ignore_ascii_case("websocket")
            && header(http::header::CONNECTION)
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            && header(http::header::SEC_WEBSOCKET_VERSION) == "13";
        let key = req.headers.get(http::header::SEC_WEBSOCKET_KEY);
        let (true, Some(key)) = (is_websocket, key) else {
            return Err(Failure::HubNeedsWebSocket);
        };
        // Browsers send the page's origin with the upgrade; no CORS protects a WebSocket.
        if self.cors.load().check(req) == cors::OriginCheck::Refused {
            self.refused("origin");
            return Err(Failure::OriginNotAllowed);
        }
        let caller = self.authenticate(req)?;
        let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .map_err(|_| Failure::BadRequest)?;
        let token = session::query_param(req, "id");
        let mut stateful_token = None;
        if let Some(token) = token {
            // A stateful connection coming back: no handshake, no new place in the limits.
            match self.reattach.find(&token, &caller) {
                Ok(to) => return Ok((Upgrade::Reattach { caller, to }, accept)),
                Err(stateful::Lookup::NotYours) => return Err(Failure::TenantMismatch),
                Err(stateful::Lookup::Unknown) => {}
            }
            let claimed =
                self.negotiations
                    .claim(&token, &caller)
                    .map_err(|claim| match claim {
                        Claim::Unknown => Failure::HubConnectionUnknown,
                        Claim::AlreadyUsed => Failure::HubConnectionTaken,
                        Claim::NotYours => Failure::TenantMismatch,
                    })?;
            stateful_token = claimed.stateful.then_some(token);
        }
        let slot = self.limits.acquire(&caller).map_err(|refusal| {
            self.refused(refusal.label());
            Failure::TooManyConnections(refusal)
        })?;
        let upgrade = Upgrade::New {
            caller,
            stateful_token,
            slot,
        };
        Ok((upgrade, accept))
    }

    /// Delivers one event to the connections of its tenant (everyone's when `tenant` is `None`);
    /// `position` is its place in that stream's history.
    pub fn deliver(
        &self,
        kind: &str,
        tenant: Option<&str>,
        envelope_json: &str,
        time: SystemTime,
        position: Option<crate::events::StreamId>,
    ) {
        let frame = Arc::new(EventFrame {
            text: Utf8Bytes::from(protocol::event_invocation(kind, envelope_json)),
            time,
            stream: tenant.map(Arc::from),
            position,
        });
        self.groups.deliver(tenant, &frame, self.metrics.as_deref());
    }
}
