//! The one structured line per request.

use std::time::Duration;

/// Everything a request log line holds. The query string is left out on purpose: it can carry
/// tokens (`access_token`) and personal data.
pub struct AccessEntry<'a> {
    pub tenant: Option<&'a str>,
    pub method: &'a str,
    pub route: Option<&'a str>,
    pub path: &'a str,
    pub status: Option<u16>,
    pub duration: Duration,
    pub pool: Option<&'a str>,
    pub provider: Option<&'a str>,
    /// Providers tried (0: answered by the gateway itself).
    pub attempts: u32,
    pub request_id: &'a str,
    pub bytes_in: usize,
    pub bytes_out: usize,
    pub error_code: Option<&'a str>,
}

pub fn write(entry: &AccessEntry<'_>) {
    tracing::info!(
        target: "payedge::access",
        tenant = entry.tenant,
        method = entry.method,
        route = entry.route,
        path = entry.path,
        status = entry.status,
        duration_ms = entry.duration.as_secs_f64() * 1000.0,
        pool = entry.pool,
        provider = entry.provider,
        attempts = entry.attempts,
        request_id = entry.request_id,
        bytes_in = entry.bytes_in,
        bytes_out = entry.bytes_out,
        error_code = entry.error_code,
        "request"
    );
}
