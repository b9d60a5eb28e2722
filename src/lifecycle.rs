//! Readiness, in-flight requests and the SIGTERM drain.
//!
//! Pingora's graceful stop always sleeps its whole grace period. payedge instead stops accepting
//! (Pingora's shutdown broadcast), waits only while requests are in flight, up to the configured
//! grace period, then flushes its logs and exits.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{SignalKind, signal};

/// How often the drain checks for in-flight requests.
const DRAIN_POLL: Duration = Duration::from_millis(25);
/// The least time the drain waits, so a request accepted just before the listeners closed is
/// counted before the count is read.
const DRAIN_SETTLE: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
pub struct Lifecycle {
    in_flight: AtomicUsize,
    draining: AtomicBool,
    proxy_listening: AtomicBool,
}

impl Lifecycle {
    /// Lives as long as the process; requests hold `&'static` references to it.
    pub fn leak() -> &'static Lifecycle {
        Box::leak(Box::default())
    }

    pub fn request_started(&'static self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn is_ready(&self) -> bool {
        self.proxy_listening.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn mark_listening(&self) {
        self.proxy_listening.store(true, Ordering::Release);
    }

    fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

/// Counts one request as in flight until dropped.
#[derive(Debug)]
pub struct InFlight(&'static Lifecycle);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// SIGTERM and SIGQUIT drain, SIGINT stops at once.
pub struct DrainOnSignal {
    pub lifecycle: &'static Lifecycle,
    pub grace: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for DrainOnSignal {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut quit), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::quit()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; stopping");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = int.recv() => {
                tracing::info!("SIGINT: stopping now");
                return ShutdownSignal::FastShutdown;
            }
            _ = term.recv() => {}
            _ = quit.recv() => {}
        }
        tracing::info!(
            in_flight = self.lifecycle.in_flight(),
            grace_seconds = self.grace.as_secs(),
            "draining: no new connections, waiting for in-flight requests"
        );
        self.lifecycle.start_draining();
        let lifecycle = self.lifecycle;
        let grace = self.grace;
        let spawned = std::thread::Builder::new()
            .name("payedge-drain".into())
            .spawn(move || exit_when_drained(lifecycle, grace));
        if spawned.is_err() {
            tracing::warn!("cannot start the drain watcher; Pingora's grace period applies");
        }
        ShutdownSignal::GracefulTerminate
    }
}

fn exit_when_drained(lifecycle: &'static Lifecycle, grace: Duration) {
    let started = Instant::now();
    std::thread::sleep(DRAIN_SETTLE.min(grace));
    while lifecycle.in_flight() > 0 && started.elapsed() < grace {
        std::thread::sleep(DRAIN_POLL);
    }
    let left = lifecycle.in_flight();
    if left > 0 {
        tracing::warn!(
            in_flight = left,
            "grace period over; stopping with requests in flight"
        );
    } else {
        tracing::info!("drained; stopping");
    }
    crate::logging::flush();
    std::process::exit(0);
}
