//! The one structured line per request.

use std::time::{Duration, SystemTime};

use crate::json::Object;

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
    pub client: Option<&'a str>,
    pub client_cert_subject: Option<&'a str>,
    pub upstream_tls_failure: Option<&'a str>,
    /// The SHA-256 of the scoped idempotency key (never the key) and what became of it.
    pub idempotency_key: Option<&'a str>,
    pub idempotency: Option<&'static str>,
    /// What the route's response cache did (hit, miss, uncacheable).
    pub cache: Option<&'static str>,
}

pub fn write(entry: &AccessEntry<'_>) {
    if !tracing::enabled!(target: "payedge::access", tracing::Level::INFO) {
        return;
    }
    let mut stamp = [0u8; 40];
    let written = crate::rfc3339::write(SystemTime::now(), &mut stamp);
    let timestamp = std::str::from_utf8(&stamp[..written]).unwrap_or_default();
    crate::logging::write_lines(line(entry, timestamp));
}

/// The line as written: the shape tracing's JSON formatter gives other lines (timestamp, level,
/// message, fields, target), written directly: through tracing's field visitors it cost as much
/// as the rest of the request's own work, and through serde's derive every key is escaped anew.
/// Absent values are left out; `duration_ms` is milliseconds to the microsecond.
fn line(entry: &AccessEntry<'_>, timestamp: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(384);
    let mut o = Object::open(&mut out);
    o.str("timestamp", timestamp);
    o.str("level", "INFO");
    o.str("message", "request");
    o.opt_str("tenant", entry.tenant);
    o.str("method", entry.method);
    o.opt_str("route", entry.route);
    o.str("path", entry.path);
    o.opt_uint("status", entry.status.map(u64::from));
    o.float("duration_ms", entry.duration.as_micros() as f64 / 1000.0);
    o.opt_str("pool", entry.pool);
    o.opt_str("provider", entry.provider);
    o.uint("attempts", u64::from(entry.attempts));
    o.str("request_id", entry.request_id);
    o.uint("bytes_in", entry.bytes_in as u64);
    o.uint("bytes_out", entry.bytes_out as u64);
    o.opt_str("error_code", entry.error_code);
    o.opt_str("client", entry.client);
    o.opt_str("client_cert_subject", entry.client_cert_subject);
    o.opt_str("upstream_tls_failure", entry.upstream_tls_failure);
    o.opt_str("idempotency_key", entry.idempotency_key);
    o.opt_str("idempotency", entry.idempotency);
    o.opt_str("cache", entry.cache);
    o.str("target", "payedge::access");
    o.close();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

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
        client: Option<&'a str>,
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

    fn reference(e: &AccessEntry<'_>, timestamp: &str) -> String {
        let line = Line {
            timestamp,
            level: "INFO",
            message: "request",
            tenant: e.tenant,
            method: e.method,
            route: e.route,
            path: e.path,
            status: e.status,
            duration_ms: e.duration.as_micros() as f64 / 1000.0,
            pool: e.pool,
            provider: e.provider,
            attempts: e.attempts,
            request_id: e.request_id,
            bytes_in: e.bytes_in,
            bytes_out: e.bytes_out,
            error_code: e.error_code,
            client: e.client,
            client_cert_subject: e.client_cert_subject,
            upstream_tls_failure: e.upstream_tls_failure,
            idempotency_key: e.idempotency_key,
            idempotency: e.idempotency,
            cache: e.cache,
            target: "payedge::access",
        };
        serde_json::to_string(&line).unwrap() + "\n"
    }

    #[test]
    fn the_written_line_is_the_one_serde_writes_byte_for_byte() {
        let odd = "CN=a \"b\", O=\\c\u{1}é";
        let full = AccessEntry {
            tenant: Some("blue"),
            method: "POST",
            route: Some("/api/payments"),
            path: "/api/payments/\"x\"",
            status: Some(201),
            duration: Duration::from_micros(12_345),
            pool: Some("payments"),
            provider: Some("stripe-eu"),
            attempts: 2,
            request_id: "01a2185d-a95e-7570-8309-8cd45c327cfe",
            bytes_in: 512,
            bytes_out: usize::MAX,
            error_code: Some("upstream_timeout"),
            client: Some("2001:db8::1"),
            client_cert_subject: Some(odd),
            upstream_tls_failure: Some("unknown_issuer"),
            idempotency_key: Some("ab12"),
            idempotency: Some("first"),
            cache: Some("hit"),
        };
        let bare = AccessEntry {
            tenant: None,
            method: "GET",
            route: None,
            path: "/",
            status: None,
            duration: Duration::ZERO,
            pool: None,
            provider: None,
            attempts: 0,
            request_id: "",
            bytes_in: 0,
            bytes_out: 0,
            error_code: None,
            client: Some("192.0.2.7"),
            client_cert_subject: None,
            upstream_tls_failure: None,
            idempotency_key: None,
            idempotency: None,
            cache: None,
        };
        for (entry, duration) in [
            (&full, None),
            (&bare, None),
            (&bare, Some(Duration::from_secs(3))),
            // Milliseconds past 1e16 are written with an exponent.
            (&full, Some(Duration::MAX)),
        ] {
            let mut entry = AccessEntry { ..*entry };
            if let Some(d) = duration {
                entry.duration = d;
                entry.client = None;
            }
            let written =
                String::from_utf8(line(&entry, "2026-12-04T20:00:00.123456789Z")).unwrap();
            assert_eq!(written, reference(&entry, "2026-12-04T20:00:00.123456789Z"));
        }
    }
}
