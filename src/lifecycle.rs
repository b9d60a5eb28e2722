//! Readiness, in-flight requests and the SIGTERM drain.
//!
//! Pingora's graceful stop always sleeps its whole grace period. payedge instead stops accepting
//! (Pingora's shutdown broadcast), waits only while requests are in flight, up to the configured
//! grace period, then flushes its logs and exits.
//!
//! SIGQUIT (binary upgrade) hands the listening sockets to the process waiting on the upgrade
//! socket, but only when that socket is there and was made by this user: Pingora would send
//! them to whatever listens on the path (another user's socket in a shared `/tmp` would get the
//! proxy's listeners) and then stop this process even when nothing took them over. Otherwise
//! the signal is refused, logged, and payedge goes on serving.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{SignalKind, signal};

/// How often the drain checks for in-flight requests.
const DRAIN_POLL: Duration = Duration::from_millis(25);
/// The least time the drain waits, so a request accepted just before the listeners closed is
/// counted before the count is read.
const DRAIN_SETTLE: Duration = Duration::from_millis(100);
/// How long a SIGQUIT waits for the new process's upgrade socket to appear (Pingora itself
/// tries to connect for about as long).
const UPGRADE_SOCKET_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct Lifecycle {
    in_flight: AtomicUsize,
    draining: AtomicBool,
    proxy_listening: AtomicBool,
    /// Events queued for the bus and not yet published: a stop waits for them too.
    event_backlog: OnceLock<Arc<AtomicUsize>>,
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

    /// The event bus's queue, for a stop to wait on (set once).
    pub fn watch_event_backlog(&self, backlog: Arc<AtomicUsize>) {
        let _ = self.event_backlog.set(backlog);
    }

    fn event_backlog(&self) -> usize {
        self.event_backlog
            .get()
            .map_or(0, |b| b.load(Ordering::Acquire))
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

/// How long Pingora keeps both processes accepting after handing the sockets over (its
/// `CLOSE_TIMEOUT`), plus a margin: the old process accepts until then, so it cannot count its
/// requests done before.
const UPGRADE_HANDOVER: Duration = Duration::from_secs(6);

/// SIGTERM drains and exits; SIGQUIT hands the listening sockets to a `payedge run --upgrade`
/// started beside it (Pingora's graceful upgrade), then drains and exits; SIGINT stops at once.
/// While draining, every response closes its connection, so clients reconnect (to the new
/// process, after an upgrade) instead of finding a kept-alive connection closed under them.
pub struct DrainOnSignal {
    pub lifecycle: &'static Lifecycle,
    pub grace: Duration,
    /// Where the new process of a binary upgrade waits for the listening sockets.
    pub upgrade_sock: PathBuf,
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
        let upgrade = loop {
            tokio::select! {
                _ = int.recv() => {
                    tracing::info!("SIGINT: stopping now");
                    return ShutdownSignal::FastShutdown;
                }
                _ = term.recv() => break false,
                _ = quit.recv() => {
                    // Waited for beside the other signals: SIGINT or SIGTERM still act at once.
                    let ready = upgrade_socket_ready(&self.upgrade_sock);
                    let ready = tokio::select! {
                        _ = int.recv() => {
                            tracing::info!("SIGINT: stopping now");
                            return ShutdownSignal::FastShutdown;
                        }
                        _ = term.recv() => break false,
                        ready = ready => ready,
                    };
                    match ready {
                        Ok(()) => break true,
                        Err(why) => tracing::error!(
                            upgrade_sock = %self.upgrade_sock.display(),
                            "SIGQUIT refused, still serving: {why}"
                        ),
                    }
                }
            }
        };
        if upgrade {
            tracing::info!(
                in_flight = self.lifecycle.in_flight(),
                grace_seconds = self.grace.as_secs(),
                "SIGQUIT: handing the listening sockets to the new process, then draining"
            );
        } else {
            tracing::info!(
                in_flight = self.lifecycle.in_flight(),
                grace_seconds = self.grace.as_secs(),
                "draining: no new connections, waiting for in-flight requests"
            );
        }
        self.lifecycle.start_draining();
        let lifecycle = self.lifecycle;
        let grace = self.grace;
        let accepting_for = if upgrade {
            UPGRADE_HANDOVER
        } else {
            Duration::ZERO
        };
        let spawned = std::thread::Builder::new()
            .name("payedge-drain".into())
            .spawn(move || exit_when_drained(lifecycle, accepting_for, grace));
        if spawned.is_err() {
            tracing::warn!("cannot start the drain watcher; Pingora's grace period applies");
        }
        if upgrade {
            ShutdownSignal::GracefulUpgrade
        } else {
            ShutdownSignal::GracefulTerminate
        }
    }
}

/// Whether the listening sockets may go to whatever listens on `path`: a socket there owned by
/// this process's effective user, and listening (both waited for up to [`UPGRADE_SOCKET_WAIT`]).
/// A file left by a new process that went away passes the first test but not the second: Pingora
/// would fail to send and stop this process all the same.
async fn upgrade_socket_ready(path: &Path) -> Result<(), String> {
    let waited = Instant::now();
    loop {
        let found = match std::fs::symlink_metadata(path) {
            Ok(found) => Some(found),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("cannot inspect the upgrade socket: {e}")),
        };
        if let Some(found) = &found {
            owned_socket(found, nix::unistd::geteuid().as_raw())?;
            if listening_at(path) {
                return Ok(());
            }
        }
        if waited.elapsed() >= UPGRADE_SOCKET_WAIT {
            let secs = UPGRADE_SOCKET_WAIT.as_secs();
            return Err(match found {
                None => format!(
                    "no new process is waiting for the listening sockets (nothing at the \
                     upgrade socket after {secs} s)"
                ),
                Some(_) => format!(
                    "no process listens on the upgrade socket after {secs} s (a file left by a \
                     new process that went away?)"
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a Unix socket bound to `path` is listening, read from `/proc/net/unix` (the flag
/// `__SO_ACCEPTCON`) rather than by connecting: the new process accepts one connection only.
fn listening_at(path: &Path) -> bool {
    let (Some(path), Ok(table)) = (path.to_str(), std::fs::read_to_string("/proc/net/unix")) else {
        return false;
    };
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        fields.nth(3) == Some("00010000")
            && line
                .strip_suffix(path)
                .is_some_and(|rest| rest.ends_with(char::is_whitespace))
    })
}

/// A socket made by `uid`.
fn owned_socket(found: &std::fs::Metadata, uid: u32) -> Result<(), String> {
    if !found.file_type().is_socket() {
        return Err("the upgrade socket's path is not a socket".into());
    }
    if found.uid() != uid {
        return Err(format!(
            "the upgrade socket belongs to uid {}, not to this process's uid {uid}: the \
             listening sockets are handed to no one",
            found.uid()
        ));
    }
    Ok(())
}

/// Exits once nothing is in flight (or the grace period is over), counted from when the
/// listeners stop accepting (`accepting_for` after the signal).
fn exit_when_drained(lifecycle: &'static Lifecycle, accepting_for: Duration, grace: Duration) {
    std::thread::sleep(accepting_for);
    let started = Instant::now();
    std::thread::sleep(DRAIN_SETTLE.min(grace));
    // Requests first; then the events they produced, which the publisher either sends or, at
    // the end of the grace period, logs as lost.
    while (lifecycle.in_flight() > 0 || lifecycle.event_backlog() > 0) && started.elapsed() < grace
    {
        std::thread::sleep(DRAIN_POLL);
    }
    let (left, events) = (lifecycle.in_flight(), lifecycle.event_backlog());
    if left > 0 || events > 0 {
        tracing::warn!(
            in_flight = left,
            events_queued = events,
            "grace period over; stopping with work left"
        );
    } else {
        tracing::info!("drained; stopping");
    }
    crate::logging::flush();
    std::process::exit(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn only_a_listening_socket_of_this_user_takes_the_listeners() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upgrade.sock");
        let me = nix::unistd::geteuid().as_raw();
        let listener = UnixListener::bind(&path).unwrap();
        let found = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(owned_socket(&found, me), Ok(()));
        let other = owned_socket(&found, me.wrapping_add(1)).unwrap_err();
        assert!(other.contains(&format!("belongs to uid {me}")), "{other}");
        assert!(listening_at(&path));
        // What a new process that went away leaves: the file, and no one listening.
        drop(listener);
        assert!(path.exists());
        assert!(!listening_at(&path));
        let plain = dir.path().join("file");
        std::fs::write(&plain, "").unwrap();
        let found = std::fs::symlink_metadata(&plain).unwrap();
        assert!(owned_socket(&found, me).is_err());
        assert!(!listening_at(&plain));
    }
}
