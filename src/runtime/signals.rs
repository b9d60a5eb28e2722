//! SIGHUP reloads the configuration. Pingora installs no SIGHUP handler (its default action
//! would kill the process), so this background service owns it.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{SignalKind, signal};

use super::Runtime;

pub struct ReloadOnHangup {
    pub runtime: Arc<Runtime>,
}

#[async_trait]
impl BackgroundService for ReloadOnHangup {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP: reload with POST /admin/reload");
                return;
            }
        };
        loop {
            tokio::select! {
                got = hangups.recv() => {
                    if got.is_none() {
                        return;
                    }
                    tracing::info!("SIGHUP: reloading the configuration");
                    let runtime = Arc::clone(&self.runtime);
                    // File and certificate reads block: not on this runtime's thread.
                    let _ = tokio::task::spawn_blocking(move || runtime.reload()).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
