//! The one structured line per request.

use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

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
    /// The client, as trusted proxies and PROXY headers establish it.
    pub client: Option<std::net::IpAddr>,
    pub client_cert_subject: Option<&'a str>,
    pub upstream_tls_failure: Option<&'a str>,
    /// The SHA-256 of the scoped idempotency key (never the key) and what became of it.
    pub idempotency_key: Option<&'a str>,
    pub idempotency: Option<&'static str>,
    /// What the route's response cache did (hit, miss, uncacheable).
    pub cache: Option<&'static str>,
}

/// The line as written: the shape tracing's JSON formatter gives other lines (timestamp, level,
/// message, fields, target), serialized directly, since going through tracing's field visitors
/// cost as much as the rest of the request's own work.
#[derive(Serialize)]
struct Line<'a> {
    timestamp: &'a str,
    level: &'static str,
    message: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a str>,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    /// Milliseconds, to the microsecond.
    duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pool: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<&'a str>,
    attempts: u32,
    request_id: &'a str,
    bytes_in: usize,
    bytes_out: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<std::net::IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_cert_subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_tls_failure: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache: Option<&'static str>,
    target: &'static str,
}

/// Writes the current time as RFC 3339 in UTC (at most 30 bytes: nanoseconds and `Z`) into
/// `buffer`, on the stack rather than in a new String; the number of bytes written.
fn timestamp(buffer: &mut [u8; 40]) -> usize {
    let mut cursor = std::io::Cursor::new(&mut buffer[..]);
    // The count format_into returns falls short for RFC 3339 (time 0.3): the cursor's is right.
    match OffsetDateTime::now_utc().format_into(&mut cursor, &Rfc3339) {
        Ok(_) => usize::try_from(cursor.position()).unwrap_or(0),
        Err(_) => 0,
    }
}

pub fn write(entry: &AccessEntry<'_>) {
    if !tracing::enabled!(target: "payedge::access", tracing::Level::INFO) {
        return;
    }
    let mut stamp = [0u8; 40];
    let written = timestamp(&mut stamp);
    let line = Line {
        timestamp: std::str::from_utf8(&stamp[..written]).unwrap_or_default(),
        level: "INFO",
        message: "request",
        tenant: entry.tenant,
        method: entry.method,
        route: entry.route,
        path: entry.path,
        status: entry.status,
        duration_ms: entry.duration.as_micros() as f64 / 1000.0,
        pool: entry.pool,
        provider: entry.provider,
        attempts: entry.attempts,
        request_id: entry.request_id,
        bytes_in: entry.bytes_in,
        bytes_out: entry.bytes_out,
        error_code: entry.error_code,
        client: entry.client,
        client_cert_subject: entry.client_cert_subject,
        upstream_tls_failure: entry.upstream_tls_failure,
        idempotency_key: entry.idempotency_key,
        idempotency: entry.idempotency,
        cache: entry.cache,
        target: "payedge::access",
    };
    let mut out = Vec::with_capacity(384);
    if serde_json::to_writer(&mut out, &line).is_ok() {
        out.push(b'\n');
        crate::logging::write_lines(out);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_timestamp_is_rfc3339_in_utc() {
        let mut stamp = [0u8; 40];
        let written = super::timestamp(&mut stamp);
        let text = std::str::from_utf8(&stamp[..written]).unwrap();
        assert!(text.ends_with('Z'), "{text}");
        let parsed =
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339);
        assert!(parsed.is_ok(), "{text}");
    }
}
