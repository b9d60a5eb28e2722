//! The running configuration: one validated, immutable [`Snapshot`] behind an atomic pointer.
//! Every request takes the snapshot current when it arrives and keeps it to its end; a reload
//! (SIGHUP, `POST /admin/reload`) builds and validates a whole new snapshot and swaps it in, or
//! keeps the old one and says why. What must outlive a reload (provider health and ejections,
//! resolved addresses, metric series, hub connections) is carried into the new snapshot or lives
//! beside it.
//!
//! ```text
//! reload: read file ─► validate (as `check`) ─► CLI overrides ─► keys needing a restart?
//!         ─► build: routing, pools carrying provider state, metrics over the same families
//!         ─► swap ─► certificates and client CAs to the TLS listeners ─► hub auth
//!         ─► health checks and resolvers restarted on the new pools
//! ```

mod immutable;
mod signals;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use payedge_filters::forwarded::TrustedProxies;
use payedge_filters::tenant::TenantResolver;
use prometheus::{IntCounter, IntCounterVec, Opts};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use immutable::needs_restart;
pub use signals::ReloadOnHangup;

use crate::admin::OperatorAuth;
use crate::config::{Config, ConfigErrors, TriggerSettings, validate_text};
use crate::events::EventSink;
use crate::hub::{Hub, HubAuth};
use crate::jwks::{First, Jwks};
use crate::metrics::{MetricFamilies, Metrics, SeriesSet};
use crate::providers::{Pools, ProviderEvents, rebuild_pools};
use crate::proxy::Routing;
use crate::tls::{TlsEndpoint, TlsMetrics};

/// How long removed series wait for requests still on the old snapshot.
const FORGET_AFTER_AT_MOST: std::time::Duration = std::time::Duration::from_secs(60);

/// Looks an environment variable up (the process environment, or the demo's fallbacks).
pub type Env = fn(&str) -> Option<String>;
/// Applies the command line's overrides (`--listen`, …) to a loaded configuration.
pub type Overrides = Box<dyn Fn(&mut Config) -> Result<(), ConfigErrors> + Send + Sync>;

/// Everything that one configuration determines, built once, never changed.
pub struct Snapshot {
    pub generation: u64,
    /// sha256 of the configuration file's bytes.
    pub sha256: String,
    pub loaded_at: SystemTime,
    pub config: Config,
    pub triggers: Arc<Vec<TriggerSettings>>,
    pub routing: Routing,
    pub pools: Pools,
    pub provider_events: Arc<ProviderEvents>,
    pub metrics: Option<Arc<Metrics>>,
    pub tenants: TenantResolver,
    pub operators: Option<OperatorAuth>,
}

impl Snapshot {
    fn build(
        mut config: Config,
        sha256: String,
        generation: u64,
        previous: Option<&Snapshot>,
        parts: &Parts,
    ) -> Result<Self, String> {
        let triggers = Arc::new(std::mem::take(&mut config.triggers));
        let pools = rebuild_pools(&config.pools, previous.map(|p| &p.pools))
            .map_err(|e| format!("invalid pool: {e}"))?;
        let tenants = TenantResolver::new(&config.tenancy);
        let metrics = parts
            .families
            .as_ref()
            .map(|f| Arc::new(Metrics::new(f, &config, tenants.tenants())));
        let provider_events = Arc::new(ProviderEvents::new(metrics.clone(), parts.sink.clone()));
        Ok(Self {
            generation,
            sha256,
            loaded_at: SystemTime::now(),
            routing: Routing::new(&config),
            operators: OperatorAuth::from_config(config.auth.as_ref()),
            triggers,
            pools,
            provider_events,
            metrics,
            tenants,
            config,
        })
    }
}

/// What snapshots are built with, besides a configuration.
pub struct Parts {
    pub families: Option<MetricFamilies>,
    /// The identity providers' key sets, shared across snapshots.
    pub jwks: Arc<Jwks>,
    pub sink: EventSink,
    pub tls_metrics: Option<Arc<TlsMetrics>>,
}

/// The outcome of a reload, as `POST /admin/reload` answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// Applied, even when the file's bytes are the same: the secrets and certificates it
    /// names may have changed.
    Applied {
        generation: u64,
        sha256: String,
    },
    Refused {
        errors: Vec<String>,
    },
}

#[derive(Default)]
struct ReloadStatus {
    last_error: Option<Vec<String>>,
    last_attempt: Option<SystemTime>,
}

/// The current snapshot and how to make the next one.
pub struct Runtime {
    current: ArcSwap<Snapshot>,
    path: PathBuf,
    env: Env,
    overrides: Overrides,
    parts: Parts,
    status: Mutex<ReloadStatus>,
    /// Serialises reloads; the request path never takes it.
    reloading: Mutex<()>,
    tls: Mutex<Vec<(&'static str, Arc<TlsEndpoint>)>>,
    proxy_protocol: Mutex<Option<Arc<ArcSwap<TrustedProxies>>>>,
    hub: Mutex<Option<Arc<Hub>>>,
    changed: tokio::sync::watch::Sender<u64>,
    reloads: Option<[IntCounter; 2]>,
}

impl Runtime {
    /// The runtime of `config`, read from `path` (with `env` and `overrides` applied again on
    /// every reload).
    pub fn new(
        config: Config,
        sha256: String,
        env: Env,
        overrides: Overrides,
        parts: Parts,
    ) -> Result<Arc<Self>, String> {
        let path = config.source.clone();
        let reloads = match &parts.families {
            Some(_) => Some(register_reload_metric().map_err(|e| e.to_string())?),
            None => None,
        };
        let snapshot = Snapshot::build(config, sha256, 1, None, &parts)?;
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(snapshot),
            path,
            env,
            overrides,
            parts,
            status: Mutex::new(ReloadStatus::default()),
            reloading: Mutex::new(()),
            tls: Mutex::new(Vec::new()),
            proxy_protocol: Mutex::new(None),
            hub: Mutex::new(None),
            changed: tokio::sync::watch::channel(1).0,
            reloads,
        }))
    }

    /// The snapshot a request (or an admin call) works with, to its end.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Notified with the new generation after each applied reload.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The TLS listeners whose certificates and client CAs follow reloads.
    pub fn attach_tls(&self, key: &'static str, endpoint: Arc<TlsEndpoint>) {
        if let Ok(mut tls) = self.tls.lock() {
            tls.push((key, endpoint));
        }
    }

    /// The PROXY protocol step's trusted balancers, which follow reloads.
    pub fn attach_proxy_protocol(&self, trusted: Arc<ArcSwap<TrustedProxies>>) {
        if let Ok(mut slot) = self.proxy_protocol.lock() {
            *slot = Some(trusted);
        }
    }

    /// The hub, whose token checks follow reloads.
    pub fn attach_hub(&self, hub: Arc<Hub>) {
        if let Ok(mut slot) = self.hub.lock() {
            *slot = Some(hub);
        }
    }

    /// Reads the file again and applies it whole, or keeps the running snapshot and records
    /// why. Blocking (file and certificate reads): call it off the request path.
    pub fn reload(&self) -> Reloaded {
        let Ok(_one_at_a_time) = self.reloading.lock() else {
            return Reloaded::Refused {
                errors: vec!["a previous reload panicked".into()],
            };
        };
        let outcome = self.try_reload();
        // Key set fetchers only the replaced or refused configuration used stop now.
        self.parts.jwks.prune();
        let applied = matches!(outcome, Ok(Reloaded::Applied { .. }));
        let outcome = outcome.unwrap_or_else(|errors| Reloaded::Refused { errors });
        if let Some([ok, failed]) = &self.reloads {
            match &outcome {
                Reloaded::Refused { .. } => failed.inc(),
                _ => ok.inc(),
            }
        }
        if let Ok(mut status) = self.status.lock() {
            status.last_attempt = Some(SystemTime::now());
            status.last_error = match &outcome {
                Reloaded::Refused { errors } => Some(errors.clone()),
                _ => None,
            };
        }
        match &outcome {
            Reloaded::Applied { generation, sha256 } => tracing::info!(
                config = %self.path.display(),
                generation,
                sha256,
                "configuration reloaded"
            ),
            Reloaded::Refused { errors } => {
                for error in errors {
                    tracing::error!(
                        config = %self.path.display(),
                        problem = error,
                        "configuration reload refused: the running configuration stays"
                    );
                }
            }
        }
        if applied {
            let generation = self.current.load().generation;
            self.changed.send_replace(generation);
        }
        outcome
    }

    fn try_reload(&self) -> Result<Reloaded, Vec<String>> {
        let bytes = std::fs::read(&self.path).map_err(|e| {
            vec![format!(
                "{}: cannot read the file: {e}",
                self.path.display()
            )]
        })?;
        let sha256 = sha256_hex(&bytes);
        let old = self.current.load_full();
        let text = String::from_utf8(bytes)
            .map_err(|_| vec![format!("{}: not UTF-8 text", self.path.display())])?;
        let mut config = validate_text(&self.path, &text, &self.env).map_err(|errors| {
            errors
                .to_string()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })?;
        (self.overrides)(&mut config).map_err(|e| vec![e.to_string()])?;
        if let Some(key) = needs_restart(&old.config, &config) {
            return Err(vec![format!(
                "{}: {key}: needs a restart (or upgrade): the running value stays",
                self.path.display()
            )]);
        }
        for warning in &config.warnings {
            tracing::warn!(
                key = warning.key,
                line = warning.line,
                "{}",
                warning.message
            );
        }
        // The TLS listeners' new acceptors are built before anything is swapped: a certificate
        // rustls refuses leaves everything as it was.
        let tls = self.tls.lock().map(|t| t.clone()).unwrap_or_default();
        let mut staged = Vec::new();
        for (key, endpoint) in &tls {
            let listener = match *key {
                "server.admin_tls" => config.server.admin_tls.as_ref(),
                _ => config.server.tls.as_ref(),
            };
            if let Some(listener) = listener {
                staged.push((
                    endpoint,
                    endpoint
                        .prepare(listener)
                        .map_err(|e| vec![format!("{key}: {e}")])?,
                ));
            }
        }
        // Last of the checks that can refuse: a new URL's first fetch starts its fetcher, which
        // stops again (Jwks::prune) if this configuration is dropped after all.
        if let Some(auth) = &config.auth {
            self.parts
                .jwks
                .attach(auth, First::MustSucceed)
                .map_err(|e| vec![format!("{}: {e}", self.path.display())])?;
        }
        if let Some(m) = &self.parts.tls_metrics {
            m.upstream_providers(config.pools.iter().flat_map(|pool| {
                pool.providers
                    .iter()
                    .filter(|p| p.tls.is_some())
                    .map(|p| (pool.name.as_str(), p.name.as_str()))
            }));
            m.certificates(
                [&config.server.tls, &config.server.admin_tls]
                    .into_iter()
                    .flatten()
                    .flat_map(|listener| &listener.certificates),
            );
        }
        let hub_auth = config.auth.as_ref().map(|auth| {
            HubAuth::new(
                Arc::clone(&auth.verifier),
                TenantResolver::new(&config.tenancy),
                auth.admin_role.clone(),
            )
        });
        let snapshot = Snapshot::build(
            config,
            sha256.clone(),
            old.generation + 1,
            Some(&old),
            &self.parts,
        )
        .map_err(|e| vec![e])?;
        for pool in snapshot.pools.iter() {
            snapshot.provider_events.publish_health(pool);
        }
        let generation = snapshot.generation;
        let trusted = snapshot.config.server.trusted_proxies.clone();
        let snapshot_hub = snapshot.config.notifications.hub.clone();
        let snapshot = Arc::new(snapshot);
        self.current.store(Arc::clone(&snapshot));
        self.forget_removed_series(old, snapshot);
        if let Ok(slot) = self.proxy_protocol.lock()
            && let Some(slot) = slot.as_ref()
        {
            slot.store(Arc::new(trusted));
        }
        for (endpoint, acceptor) in staged {
            endpoint.install(acceptor);
        }
        if let Ok(hub) = self.hub.lock()
            && let Some(hub) = hub.as_ref()
        {
            if let Some(auth) = hub_auth {
                hub.set_auth(auth);
            }
            hub.set_policy(&snapshot_hub);
        }
        Ok(Reloaded::Applied { generation, sha256 })
    }

    /// Drops the metric series of what `old` had and `new` has not, once the requests still
    /// running on `old` are done (they would bring a removed series back), at most a minute on.
    fn forget_removed_series(&self, old: Arc<Snapshot>, new: Arc<Snapshot>) {
        let (families, tls) = (self.parts.families.clone(), self.parts.tls_metrics.clone());
        if families.is_none() && tls.is_none() {
            return;
        }
        let gone = SeriesSet::of(&old.config, old.tenants.tenants());
        let kept = SeriesSet::of(&new.config, new.tenants.tenants());
        // Only a weak reference: the requests still running on `old` are what is waited for.
        let old = Arc::downgrade(&old);
        drop(new);
        let spawned = std::thread::Builder::new()
            .name("payedge-forget".into())
            .spawn(move || {
                let deadline = std::time::Instant::now() + FORGET_AFTER_AT_MOST;
                while old.strong_count() > 0 && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                if let Some(families) = families {
                    families.forget_removed(&gone, &kept);
                }
                if let Some(tls) = tls {
                    tls.forget_removed(&gone, &kept);
                }
            });
        if spawned.is_err() {
            tracing::warn!("cannot start the metric clean-up; removed series stay");
        }
    }

    /// `GET /admin/config`: what runs, since when, and how the last reload went.
    pub fn describe(&self) -> Value {
        let snapshot = self.current.load();
        let status = self.status.lock();
        let (last_error, last_attempt) = match &status {
            Ok(s) => (s.last_error.clone(), s.last_attempt),
            Err(_) => (None, None),
        };
        json!({
            "file": self.path.display().to_string(),
            "sha256": snapshot.sha256,
            "generation": snapshot.generation,
            "loaded_at": rfc3339(snapshot.loaded_at),
            "last_reload": last_attempt.map(rfc3339),
            "last_reload_error": last_error,
            // Where the console finds the hub (on this admin port), when there is one.
            "hub_path": (snapshot.config.auth.is_some() && snapshot.config.notifications.enabled)
                .then(|| snapshot.config.notifications.hub.path.clone()),
            "tenants": snapshot.tenants.tenants().iter().map(|t| t.as_ref()).collect::<Vec<_>>(),
            // What the hub can deliver: each trigger's event, and operators' alerts.
            "event_types": snapshot
                .triggers
                .iter()
                .map(|t| t.rule.event())
                .chain([crate::events::SYSTEM_ALERT])
                .collect::<std::collections::BTreeSet<_>>(),
        })
    }
}

impl Reloaded {
    pub fn to_json(&self) -> Value {
        match self {
            Self::Applied { generation, sha256 } => {
                json!({"result": "applied", "generation": generation, "sha256": sha256})
            }
            Self::Refused { errors } => json!({"result": "refused", "errors": errors}),
        }
    }
}

fn register_reload_metric() -> prometheus::Result<[IntCounter; 2]> {
    let reloads = IntCounterVec::new(
        Opts::new(
            "payedge_config_reloads_total",
            "Configuration reloads, by result.",
        ),
        &["result"],
    )?;
    prometheus::default_registry().register(Box::new(reloads.clone()))?;
    Ok([
        reloads.with_label_values(&["success"]),
        reloads.with_label_values(&["failure"]),
    ])
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn rfc3339(at: SystemTime) -> String {
    OffsetDateTime::from(at)
        .format(&Rfc3339)
        .unwrap_or_default()
}
