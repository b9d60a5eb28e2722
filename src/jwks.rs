//! The identity provider's key set (`auth.jwt.jwks_url`), fetched over verified HTTPS with
//! Pingora's own HTTP client, at start and then again:
//!
//! - when the document's `Cache-Control: max-age` runs out (bounded to 1 min … 24 h; 10 min
//!   without one);
//! - when a token names a `kid` the set lacks (a key the provider just rotated in), at most once
//!   every `jwks_min_refresh_seconds` (default 30 s), so a flood of made-up kids cannot hammer
//!   the provider;
//! - after a failure, every 30 s; the last good set stays in use meanwhile.
//!
//! One fetcher per URL, shared by every configuration snapshot that names it (a reload keeps the
//! keys). It runs as long as some configuration holds its keys: once none does (a reload named
//! another URL, or a refused reload's configuration was dropped), it stops.
//! `payedge_jwks_refreshes_total{result}` counts the fetches.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use payedge_filters::auth::RemoteKeys;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::{IntCounter, IntCounterVec, Opts};
use tokio::sync::{Notify, mpsc};

use crate::config::{AuthSettings, JwksSource};

/// After a failed fetch, the next one waits this long (and so does the first retry at start).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);
const MIN_MAX_AGE: Duration = Duration::from_secs(60);
const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Key sets larger than this are refused (a JWKS is a few KiB).
const MAX_DOCUMENT: usize = 1024 * 1024;

/// How long a fetched document may be used, from its `Cache-Control`.
pub fn max_age(cache_control: Option<&str>) -> Duration {
    cache_control
        .into_iter()
        .flat_map(|v| v.split(','))
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .find_map(|s| s.trim().parse::<u64>().ok())
        .map_or(DEFAULT_MAX_AGE, |s| {
            Duration::from_secs(s).clamp(MIN_MAX_AGE, MAX_MAX_AGE)
        })
}

/// A fetcher to start: where from, the keys it keeps fresh, and what wakes it.
type Start = (JwksSource, Weak<RemoteKeys>, Arc<Notify>);

/// The keys are held by the verifiers of the configurations that name the URL, not here.
struct Fetcher {
    keys: Weak<RemoteKeys>,
    wake: Arc<Notify>,
}

/// The fetchers by URL (and CA), for every snapshot's verifier to attach to.
pub struct Jwks {
    fetchers: Mutex<HashMap<String, Fetcher>>,
    start: mpsc::UnboundedSender<Start>,
    results: Option<[IntCounter; 2]>,
}

/// The background service running the fetchers.
pub struct JwksService {
    starts: Mutex<Option<mpsc::UnboundedReceiver<Start>>>,
    results: Option<[IntCounter; 2]>,
}

impl Jwks {
    pub fn new(metrics: bool) -> Result<(Arc<Self>, JwksService), prometheus::Error> {
        let results = if metrics {
            let vec = IntCounterVec::new(
                Opts::new(
                    "payedge_jwks_refreshes_total",
                    "Fetches of the identity provider's key set (auth.jwt.jwks_url), by result.",
                ),
                &["result"],
            )?;
            prometheus::default_registry().register(Box::new(vec.clone()))?;
            Some([
                vec.with_label_values(&["success"]),
                vec.with_label_values(&["failure"]),
            ])
        } else {
            None
        };
        let (start, starts) = mpsc::unbounded_channel();
        Ok((
            Arc::new(Self {
                fetchers: Mutex::new(HashMap::new()),
                start,
                results: results.clone(),
            }),
            JwksService {
                starts: Mutex::new(Some(starts)),
                results,
            },
        ))
    }

    /// Gives `auth`'s verifier the key set of its `jwks_url`. A URL seen before keeps its keys
    /// and fetcher; a new one is fetched now (blocking, at most 5 s) before its fetcher starts.
    /// Errs only when a new URL's first fetch fails: a configuration whose keys cannot be had
    /// would refuse every token.
    pub fn attach(&self, auth: &AuthSettings, first: First) -> Result<(), String> {
        let Some(source) = &auth.jwks else {
            return Ok(());
        };
        let id = format!(
            "{} {}",
            source.url,
            source.ca_digest.as_deref().unwrap_or("system roots")
        );
        let Ok(mut fetchers) = self.fetchers.lock() else {
            return Err("the key set registry is unusable".into());
        };
        if let Some(keys) = fetchers.get(&id).and_then(|f| f.keys.upgrade()) {
            auth.verifier.attach_remote(keys);
            return Ok(());
        }
        let keys = RemoteKeys::new();
        match fetch_blocking(source) {
            Ok((document, _)) => {
                let n = keys
                    .replace(&document)
                    .map_err(|e| format!("auth.jwt.jwks_url: {}: {e}", source.url))?;
                self.count(true);
                tracing::info!(url = source.url, keys = n, kids = ?keys.kids(), "JWKS fetched");
            }
            Err(e) => {
                self.count(false);
                if first == First::MustSucceed {
                    return Err(format!(
                        "auth.jwt.jwks_url: cannot fetch {}: {e}",
                        source.url
                    ));
                }
                tracing::error!(
                    url = source.url,
                    error = e,
                    "cannot fetch the JWKS: tokens signed by its keys are refused until a fetch succeeds"
                );
            }
        }
        let wake = Arc::new(Notify::new());
        let waker = Arc::clone(&wake);
        keys.set_waker(Box::new(move || waker.notify_one()));
        auth.verifier.attach_remote(Arc::clone(&keys));
        let weak = Arc::downgrade(&keys);
        let _ = self
            .start
            .send((source.clone(), weak.clone(), Arc::clone(&wake)));
        // A fetcher whose keys died since the last prune, still asleep: woken, it stops.
        if let Some(dead) = fetchers.insert(id, Fetcher { keys: weak, wake }) {
            dead.wake.notify_one();
        }
        Ok(())
    }

    /// Forgets the fetchers whose keys no configuration holds any more and wakes them to stop.
    /// Called after every reload, applied or refused; a fetcher whose last configuration was
    /// still serving a request then stops at its next wake-up instead.
    pub fn prune(&self) {
        if let Ok(mut fetchers) = self.fetchers.lock() {
            fetchers.retain(|_, fetcher| {
                let used = fetcher.keys.strong_count() > 0;
                if !used {
                    fetcher.wake.notify_one();
                }
                used
            });
        }
    }

    fn count(&self, ok: bool) {
        if let Some([success, failure]) = &self.results {
            if ok { success } else { failure }.inc();
        }
    }
}

/// Whether a first fetch that fails stops what asked for it: a reload that brings a new URL is
/// refused; at start payedge runs on and keeps trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum First {
    MustSucceed,
    MayFail,
}

#[async_trait]
impl BackgroundService for JwksService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut starts) = self.starts.lock().ok().and_then(|mut s| s.take()) else {
            return;
        };
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                started = starts.recv() => {
                    let Some((source, keys, wake)) = started else { break };
                    tasks.spawn(keep_fresh(source, keys, wake, self.results.clone()));
                }
                // Fetchers that stopped are reaped, so none is kept for the process's life.
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = shutdown.changed() => break,
            }
        }
        tasks.abort_all();
    }
}

/// Keeps `keys` fresh for as long as a configuration holds them (only a weak reference here,
/// upgraded for each fetch).
async fn keep_fresh(
    source: JwksSource,
    held: Weak<RemoteKeys>,
    wake: Arc<Notify>,
    results: Option<[IntCounter; 2]>,
) {
    let mut last_fetch = Instant::now();
    let mut next = match held.upgrade() {
        Some(keys) if keys.is_empty() => RETRY_AFTER_FAILURE.min(source.min_refresh),
        _ => DEFAULT_MAX_AGE,
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = wake.notified() => {
                if held.strong_count() == 0 {
                    break;
                }
                // An unknown kid: fetch now, unless the last fetch was too recent.
                let since = last_fetch.elapsed();
                if since < source.min_refresh {
                    tokio::time::sleep(source.min_refresh - since).await;
                }
            }
        }
        let Some(keys) = held.upgrade() else {
            break;
        };
        keys.take_refresh_request();
        last_fetch = Instant::now();
        let outcome = tokio::time::timeout(FETCH_TIMEOUT, fetch(&source))
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
            .and_then(|(document, age)| {
                keys.replace(&document)
                    .map(|n| (n, age))
                    .map_err(|e| e.to_string())
            });
        match outcome {
            Ok((n, age)) => {
                if let Some([success, _]) = &results {
                    success.inc();
                }
                tracing::info!(url = source.url, keys = n, kids = ?keys.kids(), "JWKS refreshed");
                next = age;
            }
            Err(error) => {
                if let Some([_, failure]) = &results {
                    failure.inc();
                }
                tracing::warn!(
                    url = source.url,
                    error,
                    "cannot refresh the JWKS: the last good key set stays in use"
                );
                next = RETRY_AFTER_FAILURE.min(source.min_refresh.max(Duration::from_secs(1)));
            }
        }
    }
    tracing::info!(
        url = source.url,
        "JWKS fetcher stopped: no configuration uses this key set any more"
    );
}

/// `fetch` from a thread of its own (the callers run in, or beside, a tokio runtime).
fn fetch_blocking(source: &JwksSource) -> Result<(String, Duration), String> {
    let source = source.clone();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(async {
                tokio::time::timeout(FETCH_TIMEOUT, fetch(&source))
                    .await
                    .unwrap_or_else(|_| Err("timed out".into()))
            })
    })
    .join()
    .unwrap_or_else(|_| Err("the fetch panicked".into()))
}

/// GETs the key set over HTTPS, verified against the source's CA (or the system's roots) and
/// its host name.
async fn fetch(source: &JwksSource) -> Result<(String, Duration), String> {
    let addr: SocketAddr = tokio::net::lookup_host((source.host.as_str(), source.port))
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", source.host))?
        .next()
        .ok_or_else(|| format!("{} resolves to no address", source.host))?;
    let mut peer = HttpPeer::new(addr, true, source.host.clone());
    peer.options.ca = source.ca.clone();
    peer.options.connection_timeout = Some(FETCH_TIMEOUT);
    peer.options.read_timeout = Some(FETCH_TIMEOUT);
    peer.options.write_timeout = Some(FETCH_TIMEOUT);
    let connector = pingora::connectors::http::Connector::new(None);
    let (mut session, _) = connector
        .get_http_session(&peer)
        .await
        .map_err(|e| e.to_string())?;
    let mut req =
        RequestHeader::build("GET", source.path.as_bytes(), None).map_err(|e| e.to_string())?;
    let host = if source.port == 443 {
        source.host.clone()
    } else {
        format!("{}:{}", source.host, source.port)
    };
    req.insert_header(http::header::HOST, host)
        .map_err(|e| e.to_string())?;
    req.insert_header(http::header::ACCEPT, "application/json")
        .map_err(|e| e.to_string())?;
    session
        .write_request_header(Box::new(req))
        .await
        .map_err(|e| e.to_string())?;
    session
        .finish_request_body()
        .await
        .map_err(|e| e.to_string())?;
    session
        .read_response_header()
        .await
        .map_err(|e| e.to_string())?;
    let (status, cache_control) = {
        let resp = session.response_header().ok_or("no response header")?;
        let cc = resp
            .headers
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (resp.status.as_u16(), cc)
    };
    if status != 200 {
        return Err(format!("HTTP {status}"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = session
        .read_response_body()
        .await
        .map_err(|e| e.to_string())?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT {
            return Err("the document is larger than 1 MiB".into());
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).map_err(|_| "the document is not UTF-8".to_string())?;
    Ok((text, max_age(cache_control.as_deref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_and_bounded() {
        assert_eq!(max_age(None), DEFAULT_MAX_AGE);
        assert_eq!(
            max_age(Some("public, max-age=3600")),
            Duration::from_secs(3600)
        );
        assert_eq!(max_age(Some("max-age=5")), MIN_MAX_AGE);
        assert_eq!(max_age(Some("max-age=999999")), MAX_MAX_AGE);
        assert_eq!(max_age(Some("no-cache")), DEFAULT_MAX_AGE);
        assert_eq!(max_age(Some("max-age=abc")), DEFAULT_MAX_AGE);
    }
}
