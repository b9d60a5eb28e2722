//! Pingora wiring: the proxy service, the admin service, readiness, the drain on SIGTERM.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use pingora::apps::HttpServerOptions;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::ServiceWithDependents;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::{AdminApp, ReadinessProbe};
use crate::config::BusSettings;
use crate::config::{Config, TlsListener};
use crate::connection_cap::Capped;
use crate::events::{self, EventMetrics};
use crate::head_deadline::HeadDeadline;
use crate::hub::{Backplane, HistorySource, Hub, HubAuth, HubFeed, HubMetrics};
use crate::jwks::{First, Jwks};
use crate::lifecycle::{DrainOnSignal, Lifecycle};
use crate::logging::DroppedLines;
use crate::metrics::MetricFamilies;
use crate::providers::HealthChecks;
use crate::proxy::Gateway;
use crate::runtime::{Env, Overrides, Parts, ReloadOnHangup, Runtime};
use crate::tls::{Front, FrontSetup, TlsEndpoint, TlsMetrics};
use pingora::apps::ServerApp;

/// The admin listener's socket buffers (Pingora's defaults: 64 KiB to read, 1,460 bytes to
/// write), which every hub client keeps for its whole life. None to read: what reads there
/// buffers already (Pingora's HTTP/1 parser, tungstenite, rustls), so a read buffer only costs
/// 2 KiB or more per connection. Pingora's default to write: the hub writes a client's queued
/// frames one by one and flushes once, and this buffer makes that one `send` (without it, a
/// burst to everyone was delivered at four fifths of the rate).
const ADMIN_BUFFERS: L4BufferSettings = L4BufferSettings {
    read: Some(0),
    write: None,
};
/// Runtime services of the admin listener are light: one thread is plenty.
const ADMIN_THREADS: usize = 1;
/// An HTTP/2 connection with no request open for this long is closed, as Pingora closes an idle
/// HTTP/1 keep-alive connection after 60 s (without it, idle HTTP/2 connections were kept for
/// ever).
const H2_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// After the drain, how long Pingora's runtimes get to stop.
const RUNTIME_STOP_SECONDS: u64 = 1;
const BACKSTOP_EXTRA_SECONDS: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: String,
        source: std::io::Error,
    },
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("invalid pool: {0}")]
    Pool(#[from] payedge_upstreams::PoolError),
    /// A setting validation accepted that could not be put to use (a TLS file, a URL).
    #[error("{key}: {message}")]
    Tls { key: &'static str, message: String },
}

/// Services that run beside the gateway in the same process (the demo's connectors).
pub struct Companion {
    pub service: Box<dyn ServiceWithDependents>,
    pub listen: SocketAddr,
    pub what: String,
}

/// Called once the proxy accepts connections (the demo prints its instructions then).
pub type OnReady = Box<dyn Fn() + Send + Sync>;

/// A validated configuration and how to load it again.
pub struct Loaded {
    /// `run --upgrade`: take the listening sockets over from the running process.
    pub upgrade: bool,
    pub config: Config,
    /// sha256 of the file's bytes.
    pub sha256: String,
    pub env: Env,
    pub overrides: Overrides,
}

/// Runs the gateway until it is stopped by a signal.
pub fn serve(
    loaded: Loaded,
    log_drops: Arc<std::sync::atomic::AtomicU64>,
    companions: Vec<Companion>,
    on_ready: Option<OnReady>,
) -> Result<(), StartError> {
    let config = &loaded.config;
    let upgrade = loaded.upgrade;
    let server_settings = &config.server;
    let mut binds: Vec<(SocketAddr, String)> = [
        (server_settings.listen, "server.listen"),
        (
            server_settings.tls.as_ref().map(|t| t.listen),
            "server.tls.listen",
        ),
        (server_settings.admin_listen, "server.admin_listen"),
        (
            server_settings.admin_tls.as_ref().map(|t| t.listen),
            "server.admin_tls.listen",
        ),
    ]
    .into_iter()
    .filter_map(|(addr, what)| Some((addr?, what.to_string())))
    .collect();
    binds.extend(companions.iter().map(|c| (c.listen, c.what.clone())));
    // Pingora panics in a service thread when it cannot bind; find out here and say so. All
    // are held at once, so two listeners overlapping (0.0.0.0:P and 127.0.0.1:P) are found too.
    // An upgrade takes the sockets over from the running process instead.
    if !upgrade {
        let held = binds
            .into_iter()
            .map(|(addr, what)| {
                TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, what, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        drop(held);
    }
    for warning in &config.warnings {
        tracing::warn!(
            config = %config.source.display(),
            line = warning.line,
            key = warning.key,
            "{}",
            warning.message
        );
    }

    // Every hub client holds a socket: take the file descriptors the system allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
    let lifecycle = Lifecycle::leak();
    let families = if config.analytics.metrics_enabled() {
        let families = MetricFamilies::register()?;
        prometheus::default_registry().register(Box::new(DroppedLines::new(log_drops)?))?;
        Some(families)
    } else {
        None
    };
    let tls_metrics = if config.analytics.metrics_enabled() {
        let m = TlsMetrics::register()?;
        m.certificates(
            [&config.server.tls, &config.server.admin_tls]
                .into_iter()
                .flatten()
                .flat_map(|listener| &listener.certificates),
        );
        m.upstream_providers(config.pools.iter().flat_map(|pool| {
            pool.providers
                .iter()
                .filter(|p| p.tls.is_some())
                .map(|p| (pool.name.as_str(), p.name.as_str()))
        }));
        Some(Arc::new(m))
    } else {
        None
    };
    let proxy_tls = endpoint(config.server.tls.as_ref(), "server.tls")?;
    let admin_tls = endpoint(config.server.admin_tls.as_ref(), "server.admin_tls")?;
    let event_metrics = if config.analytics.metrics_enabled() {
        let names: Vec<&str> = config.triggers.iter().map(|t| t.rule.name()).collect();
        Some(Arc::new(EventMetrics::register(&names)?))
    } else {
        None
    };
    let (sink, event_service) = events::build(config, event_metrics);
    lifecycle.watch_event_backlog(sink.backlog());
    let (jwks, jwks_service) = Jwks::new(config.analytics.metrics_enabled())?;
    if let Some(auth) = &config.auth {
        // At start a key set that cannot be fetched is retried in the background.
        let _ = jwks.attach(auth, First::MayFail);
    }
    let Loaded {
        upgrade: _,
        config,
        sha256,
        env,
        overrides,
    } = loaded;
    let runtime = Runtime::new(
        config,
        sha256,
        env,
        overrides,
        Parts {
            families,
            jwks,
            sink: sink.clone(),
            tls_metrics: tls_metrics.clone(),
        },
    )
    .map_err(|message| StartError::Tls {
        key: "pools",
        message,
    })?;
    for (key, endpoint) in [("server.tls", &proxy_tls), ("server.admin_tls", &admin_tls)] {
        if let Some(endpoint) = endpoint {
            runtime.attach_tls(key, Arc::clone(endpoint));
        }
    }
    let snapshot = runtime.current();
    let config = &snapshot.config;
    crate::proxy::init_cache(config.cache_max_bytes);
    let gateway = Gateway::new(
        Arc::clone(&runtime),
        lifecycle,
        sink.clone(),
        tls_metrics.clone(),
        proxy_tls.clone(),
        Arc::new(
            crate::idempotency::IdempotencyStore::new(&config.idempotency).map_err(|message| {
                StartError::Tls {
                    key: "idempotency.redis",
                    message,
                }
            })?,
        ),
    );

    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), server_conf(config));
    server.bootstrap();

    let mut proxy_app = pingora::proxy::http_proxy(&server.configuration, gateway);
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    options.h2_idle_timeout = Some(H2_IDLE_TIMEOUT);
    proxy_app.server_options = Some(options);
    // The balancers allowed to send PROXY headers follow reloads (the switch itself does not).
    let proxy_protocol = config.server.proxy_protocol.then(|| {
        let trusted = Arc::new(arc_swap::ArcSwap::from_pointee(
            config.server.trusted_proxies.clone(),
        ));
        runtime.attach_proxy_protocol(Arc::clone(&trusted));
        trusted
    });
    let proxy_listeners: Vec<SocketAddr> = [
        config.server.listen,
        config.server.tls.as_ref().map(|t| t.listen),
    ]
    .into_iter()
    .flatten()
    .collect();
    let proxy = fronted_service(
        "payedge-proxy",
        proxy_app,
        Front::new_if_needed(proxy_tls, proxy_protocol, tls_metrics.clone()),
        CapSetup::new(&runtime, "proxy", config.analytics.metrics_enabled())?,
        &proxy_listeners,
        None,
        config.server.threads,
    );

    let metrics_path = config
        .analytics
        .metrics_enabled()
        .then(|| config.analytics.metrics_path.clone());
    let hub = match &config.auth {
        Some(auth) => {
            let hub_metrics = if config.analytics.metrics_enabled() {
                Some(Arc::new(HubMetrics::register(&config.tenancy.tenants)?))
            } else {
                None
            };
            let hub_auth = HubAuth::new(
                Arc::clone(&auth.verifier),
                payedge_filters::tenant::TenantResolver::new(&config.tenancy),
                auth.admin_role.clone(),
            );
            Some(Arc::new(Hub::new(
                config.notifications.hub.clone(),
                hub_auth,
                hub_metrics,
                lifecycle,
                history_source(&config.notifications, &sink),
            )))
        }
        None => {
            tracing::warn!("no auth section: the notification hub refuses every connection");
            None
        }
    };
    let redis_bus = match &config.notifications.bus {
        BusSettings::Redis {
            url,
            channel_prefix,
        } => Some((url.clone(), channel_prefix.clone())),
        BusSettings::InMemory => None,
    };
    if let Some(hub) = &hub {
        sink.set_local_audience(hub.audience());
        runtime.attach_hub(Arc::clone(hub));
    }
    let hub_feed = hub.as_ref().map(|hub| HubFeed {
        hub: Arc::clone(hub),
        backplane: std::sync::Mutex::new(Some(Backplane::for_bus(&sink, redis_bus))),
    });
    // The console's charts: sampled from the request metrics, so only when they are on.
    let traffic = metrics_path
        .is_some()
        .then(|| Arc::new(crate::admin::TrafficHistory::default()));
    let traffic_sampler = traffic
        .as_ref()
        .map(|history| crate::admin::TrafficSampler {
            history: Arc::clone(history),
        });
    let admin_app = AdminApp {
        traffic,
        metrics_path,
        lifecycle,
        runtime: Arc::clone(&runtime),
        sink,
        hub,
        hub_path: config.notifications.hub.path.clone(),
        tls: admin_tls.clone(),
    };
    let admin_listeners: Vec<SocketAddr> = [
        config.server.admin_listen,
        config.server.admin_tls.as_ref().map(|t| t.listen),
    ]
    .into_iter()
    .flatten()
    .collect();
    let admin = fronted_service(
        "payedge-admin",
        admin_app,
        Front::new_if_needed(admin_tls, None, tls_metrics),
        CapSetup::new(&runtime, "admin", config.analytics.metrics_enabled())?,
        &admin_listeners,
        Some(ADMIN_BUFFERS),
        ADMIN_THREADS,
    );

    let Some(proxy_addr) = config.server.proxy_addr() else {
        return Err(StartError::Tls {
            key: "server",
            message: "neither server.listen nor server.tls is set".into(),
        });
    };
    let mut readiness = background_service(
        "readiness",
        ReadinessProbe {
            proxy_addr,
            lifecycle,
            on_ready,
        },
    );
    readiness.threads = Some(1);

    let mut health_checks = background_service(
        "health-checks",
        HealthChecks {
            runtime: Arc::clone(&runtime),
        },
    );
    let mut hangups = background_service(
        "reload-on-sighup",
        ReloadOnHangup {
            runtime: Arc::clone(&runtime),
        },
    );
    hangups.threads = Some(1);
    health_checks.threads = Some(1);
    let mut event_service = background_service("events", event_service);
    event_service.threads = Some(1);

    for companion in companions {
        server.add_boxed_service(companion.service);
    }
    server.add_boxed_service(proxy);
    server.add_boxed_service(admin);
    server.add_service(readiness);
    server.add_service(health_checks);
    server.add_service(hangups);
    let mut jwks_service = background_service("jwks", jwks_service);
    jwks_service.threads = Some(1);
    server.add_service(jwks_service);
    server.add_service(event_service);
    if let Some(sampler) = traffic_sampler {
        let mut sampler = background_service("traffic-sampler", sampler);
        sampler.threads = Some(1);
        server.add_service(sampler);
    }
    if let Some(feed) = hub_feed {
        let mut feed = background_service("hub-feed", feed);
        feed.threads = Some(1);
        server.add_service(feed);
    }

    if let Some(longest) = config.pools.iter().map(|p| p.timeouts.total).max()
        && longest > config.server.grace_period
    {
        tracing::warn!(
            grace_period_seconds = config.server.grace_period.as_secs(),
            longest_total_ms = u64::try_from(longest.as_millis()).unwrap_or(u64::MAX),
            "a request may outlast the SIGTERM grace period: it would be cut without an answer"
        );
    }
    let shown =
        |addr: Option<SocketAddr>| addr.map_or_else(|| "off".to_string(), |a| a.to_string());
    tracing::info!(
        listen = shown(config.server.listen),
        tls_listen = shown(config.server.tls.as_ref().map(|t| t.listen)),
        admin_listen = shown(config.server.admin_listen),
        admin_tls_listen = shown(config.server.admin_tls.as_ref().map(|t| t.listen)),
        config = %config.source.display(),
        "payedge starting"
    );
    let grace = config.server.grace_period;
    let upgrade_sock = std::path::PathBuf::from(&server.configuration.upgrade_sock);
    // Requests and reloads hold the snapshots they use; this one is not kept past start.
    drop(snapshot);
    server.run(RunArgs {
        shutdown_signal: Box::new(DrainOnSignal {
            lifecycle,
            grace,
            upgrade_sock,
        }),
    });
    crate::logging::flush();
    Ok(())
}

fn server_conf(config: &Config) -> ServerConf {
    let port = config.server.proxy_addr().map_or(0, |a| a.port());
    let tmp = std::env::temp_dir();
    ServerConf {
        threads: config.server.threads,
        // On by default; off, with one single-threaded runtime per thread, the proxy served 1.22x
        // the requests (benches/README.md, "The runtime").
        work_stealing: config.server.work_stealing,
        // The drain in `lifecycle` exits when requests are done or the grace period is over;
        // Pingora's own (fixed) grace period only backs it up, so it must end later.
        grace_period_seconds: Some(config.server.grace_period.as_secs() + BACKSTOP_EXTRA_SECONDS),
        graceful_shutdown_timeout_seconds: Some(RUNTIME_STOP_SECONDS),
        // Pingora's defaults are shared by every instance on the host.
        pid_file: tmp
            .join(format!("payedge-{port}.pid"))
            .display()
            .to_string(),
        // One per instance on the host unless configured: named after the proxy's port.
        upgrade_sock: config
            .server
            .upgrade_sock
            .clone()
            .unwrap_or_else(|| tmp.join(format!("payedge-{port}.sock")))
            .display()
            .to_string(),
        ..ServerConf::default()
    }
}

fn endpoint(
    listener: Option<&TlsListener>,
    key: &'static str,
) -> Result<Option<Arc<TlsEndpoint>>, StartError> {
    listener
        .map(|l| TlsEndpoint::new(l).map(Arc::new))
        .transpose()
        .map_err(|message| StartError::Tls { key, message })
}

/// A listening service for `app` on `listeners`, behind the per-client connection cap, then a
/// [`Front`] when it has TLS or PROXY protocol work to do, then the first-head deadline.
fn fronted_service<A>(
    name: &str,
    app: A,
    front: FrontSetup,
    cap: CapSetup,
    listeners: &[SocketAddr],
    buffers: Option<L4BufferSettings>,
    threads: usize,
) -> Box<dyn ServiceWithDependents>
where
    A: ServerApp + Send + Sync + 'static,
{
    fn listen<B: ServerApp + Send + Sync + 'static>(
        mut service: Service<B>,
        listeners: &[SocketAddr],
        buffers: Option<L4BufferSettings>,
        threads: usize,
    ) -> Box<dyn ServiceWithDependents> {
        for addr in listeners {
            let mut listener = ListenerConfig::tcp(addr.to_string());
            if let Some(buffers) = buffers {
                listener = listener.l4_buffer(buffers);
            }
            service.add_listener(listener);
        }
        service.threads = Some(threads);
        Box::new(service)
    }
    let app = cap.deadline(app);
    match front.into_front(app) {
        Ok(front) => listen(
            Service::new(name.to_string(), cap.around(front)),
            listeners,
            buffers,
            threads,
        ),
        Err(app) => listen(
            Service::new(name.to_string(), cap.around(app)),
            listeners,
            buffers,
            threads,
        ),
    }
}

/// What the per-client connection cap and the first-head deadline of one listening service need.
struct CapSetup {
    runtime: Arc<Runtime>,
    refused: Option<prometheus::IntCounter>,
    timed_out: Option<prometheus::IntCounter>,
}

impl CapSetup {
    fn new(runtime: &Arc<Runtime>, listener: &str, metrics: bool) -> Result<Self, StartError> {
        let refused = metrics
            .then(|| crate::connection_cap::refusals_counter(listener))
            .transpose()?;
        let timed_out = metrics
            .then(|| crate::head_deadline::timeouts_counter(listener))
            .transpose()?;
        Ok(Self {
            runtime: Arc::clone(runtime),
            refused,
            timed_out,
        })
    }

    /// The app behind the first-head deadline (inside TLS: the deadline counts from the
    /// handshake's end, which has its own timeout).
    fn deadline<A>(&self, app: A) -> HeadDeadline<A> {
        HeadDeadline::new(app, Arc::clone(&self.runtime), self.timed_out.clone())
    }

    fn around<A>(self, app: A) -> Capped<A> {
        Capped::new(app, self.runtime, self.refused)
    }
}

/// Where the hub reads the history resuming clients missed.
fn history_source(
    notifications: &crate::config::NotificationSettings,
    sink: &events::EventSink,
) -> HistorySource {
    if let Some(history) = sink.local_history() {
        return HistorySource::Memory(history);
    }
    match &notifications.bus {
        BusSettings::Redis {
            url,
            channel_prefix,
        } if notifications.enabled => {
            events::redis_history::RedisReader::new(url, channel_prefix, notifications.history)
                .map_or(HistorySource::Off, |r| HistorySource::Redis(Box::new(r)))
        }
        _ => HistorySource::Off,
    }
}
