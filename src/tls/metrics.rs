//! TLS and connection-admission metrics. Every label is bounded: reasons are fixed sets,
//! certificates and providers come from the configuration.

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts};

use super::handshake::{HANDSHAKE_FAILURE_REASONS, UpstreamTlsFailure};
use crate::config::ServerCertificate;
use crate::metrics::SeriesSet;

/// Why a connection was closed before the TLS handshake (PROXY protocol).
pub const PROXY_REFUSAL_REASONS: [&str; 3] = ["untrusted_peer", "bad_header", "timeout"];

pub struct TlsMetrics {
    handshake_failures: Vec<IntCounter>,
    proxy_refusals: Vec<IntCounter>,
    certificate_expiry: IntGaugeVec,
    upstream_failures: IntCounterVec,
}

impl TlsMetrics {
    pub fn register() -> prometheus::Result<Self> {
        let registry = prometheus::default_registry();
        let handshakes = IntCounterVec::new(
            Opts::new(
                "payedge_tls_handshake_failures_total",
                "Client TLS handshakes that failed, by reason",
            ),
            &["reason"],
        )?;
        let proxy = IntCounterVec::new(
            Opts::new(
                "payedge_proxy_protocol_refusals_total",
                "Connections closed because of their PROXY protocol header or their peer",
            ),
            &["reason"],
        )?;
        let expiry = IntGaugeVec::new(
            Opts::new(
                "payedge_tls_certificate_expiry_timestamp_seconds",
                "When each served certificate expires (Unix time), by its first host",
            ),
            &["certificate"],
        )?;
        let upstream = IntCounterVec::new(
            Opts::new(
                "payedge_upstream_tls_failures_total",
                "TLS handshakes with providers that failed, by reason",
            ),
            &["pool", "provider", "reason"],
        )?;
        registry.register(Box::new(handshakes.clone()))?;
        registry.register(Box::new(proxy.clone()))?;
        registry.register(Box::new(expiry.clone()))?;
        registry.register(Box::new(upstream.clone()))?;
        Ok(Self {
            handshake_failures: HANDSHAKE_FAILURE_REASONS
                .iter()
                .map(|r| handshakes.with_label_values(&[r]))
                .collect(),
            proxy_refusals: PROXY_REFUSAL_REASONS
                .iter()
                .map(|r| proxy.with_label_values(&[r]))
                .collect(),
            certificate_expiry: expiry,
            upstream_failures: upstream,
        })
    }

    pub fn handshake_failed(&self, reason: &str) {
        let i = HANDSHAKE_FAILURE_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(HANDSHAKE_FAILURE_REASONS.len() - 1);
        if let Some(c) = self.handshake_failures.get(i) {
            c.inc();
        }
    }

    pub fn proxy_refused(&self, reason: &str) {
        if let Some(i) = PROXY_REFUSAL_REASONS.iter().position(|r| *r == reason) {
            self.proxy_refusals[i].inc();
        }
    }

    /// Publishes the expiry of every served certificate, of all listeners (again after a
    /// rotation).
    pub fn certificates<'a>(&self, certificates: impl IntoIterator<Item = &'a ServerCertificate>) {
        let expiries = certificates
            .into_iter()
            .map(|c| (c.label.as_str(), c.pair.leaf.not_after));
        for (label, not_after) in earliest_by_label(expiries) {
            self.certificate_expiry
                .with_label_values(&[label])
                .set(not_after);
        }
    }

    pub fn upstream_failed(&self, pool: &str, provider: &str, failure: UpstreamTlsFailure) {
        self.upstream_failures
            .with_label_values(&[pool, provider, failure.label()])
            .inc();
    }

    /// Drops the series of certificates and TLS providers `old` had and `new` has not.
    pub fn forget_removed(&self, old: &SeriesSet, new: &SeriesSet) {
        for label in &old.certificates {
            if !new.certificates.contains(label) {
                let _ = self.certificate_expiry.remove_label_values(&[label]);
            }
        }
        for (pool, provider) in &old.tls_providers {
            if new
                .tls_providers
                .contains(&(pool.clone(), provider.clone()))
            {
                continue;
            }
            for failure in UpstreamTlsFailure::ALL {
                let _ =
                    self.upstream_failures
                        .remove_label_values(&[pool, provider, failure.label()]);
            }
        }
    }

    /// Creates every upstream series at zero, so a rate() is defined before the first failure.
    pub fn upstream_providers<'a>(&self, providers: impl IntoIterator<Item = (&'a str, &'a str)>) {
        for (pool, provider) in providers {
            for failure in UpstreamTlsFailure::ALL {
                let _ =
                    self.upstream_failures
                        .with_label_values(&[pool, provider, failure.label()]);
            }
        }
    }
}

/// The earliest expiry of each label. Labels are a certificate's first host, unique within a
/// listener; the proxy's and the admin's listeners may each serve a certificate with the same
/// one (say, one renewed and the other not): the series shows the one that expires first, so
/// its alert is never hidden by the other.
fn earliest_by_label<'a>(expiries: impl Iterator<Item = (&'a str, i64)>) -> Vec<(&'a str, i64)> {
    let mut earliest: Vec<(&str, i64)> = Vec::new();
    for (label, not_after) in expiries {
        match earliest.iter_mut().find(|(l, _)| *l == label) {
            Some((_, at)) => *at = (*at).min(not_after),
            None => earliest.push((label, not_after)),
        }
    }
    earliest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_served_on_two_listeners_shows_its_earliest_expiry() {
        let served = [
            ("api.example.com", 300),
            ("ops.example.com", 500),
            ("api.example.com", 100),
        ];
        assert_eq!(
            earliest_by_label(served.into_iter()),
            [("api.example.com", 100), ("ops.example.com", 500)]
        );
        let reversed = [("api.example.com", 100), ("api.example.com", 300)];
        assert_eq!(
            earliest_by_label(reversed.into_iter()),
            [("api.example.com", 100)]
        );
    }
}
