//! Tenant resolution: which tenant a request belongs to, from its Host, a subdomain or a header.
//!
//! Strategies are tried in the configured order; the first one that yields a candidate decides, and
//! a candidate that is not a configured tenant is rejected rather than passed to the next strategy
//! (so a client cannot reach another tenant by adding a header to a host that already names one).

use std::collections::HashMap;
use std::sync::Arc;

use crate::host::{Host, parse_host};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// First label of a Host strictly under a base domain: `blue.api.smartpay.com` → `blue`.
    Host,
    /// The label directly under the matched base domain: base `smartpay.com`,
    /// `x.blue.smartpay.com` → `blue`.
    Subdomain,
    /// The tenant header (`X-Tenant` unless configured otherwise).
    Header,
}

#[derive(Debug, Clone)]
pub struct TenancySettings {
    pub enabled: bool,
    pub strategies: Vec<Strategy>,
    /// Lower case, without leading or trailing dots.
    pub base_domains: Vec<String>,
    pub tenants: Vec<String>,
    /// Every request's tenant when `enabled` is false.
    pub default_tenant: String,
}

/// Why a request could not be given a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantRejection {
    MalformedHost,
    MalformedTenant,
    Unresolved,
    Unknown,
}

impl TenantRejection {
    pub const ALL: [TenantRejection; 4] = [
        Self::MalformedHost,
        Self::MalformedTenant,
        Self::Unresolved,
        Self::Unknown,
    ];

    /// The stable client-facing error code.
    pub fn code(self) -> &'static str {
        match self {
            Self::MalformedHost => "host_invalid",
            Self::MalformedTenant => "tenant_invalid",
            Self::Unresolved => "tenant_unresolved",
            Self::Unknown => "tenant_unknown",
        }
    }

    /// The metric label (bounded: never the value the client sent).
    pub fn reason(self) -> &'static str {
        match self {
            Self::MalformedHost => "malformed_host",
            Self::MalformedTenant => "malformed_tenant",
            Self::Unresolved => "unresolved",
            Self::Unknown => "unknown",
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            Self::Unknown => 404,
            _ => 400,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::MalformedHost => "the Host header is malformed",
            Self::MalformedTenant => "the tenant header holds an invalid tenant id",
            Self::Unresolved => "no tenant could be determined for this request",
            Self::Unknown => "the tenant is not known to this gateway",
        }
    }
}

/// A resolved tenant: its position in the configured list (for per-tenant tables) and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub index: usize,
    pub name: Arc<str>,
}

/// What a request offers for resolution: the raw Host (or `:authority`) and tenant header values.
#[derive(Debug, Clone, Copy, Default)]
pub struct TenantInputs<'a> {
    pub host: Option<&'a [u8]>,
    pub header: Option<&'a [u8]>,
}

#[derive(Debug)]
pub struct TenantResolver {
    enabled: bool,
    strategies: Vec<Strategy>,
    /// Longest first, so `api.smartpay.com` wins over `smartpay.com`.
    base_domains: Vec<String>,
    names: Vec<Arc<str>>,
    by_name: HashMap<String, usize>,
    default_index: usize,
}

pub const MAX_TENANT_ID_LEN: usize = 63;

/// A tenant id: 1–63 of `a-z 0-9 - _`, starting with a letter or digit (case-insensitive).
pub fn is_valid_tenant_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_TENANT_ID_LEN
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl TenantResolver {
    /// Tenant names are lower-cased. With tenancy disabled the default tenant is the only one;
    /// with it enabled the default tenant is not a tenant at all (unless listed).
    pub fn new(settings: &TenancySettings) -> Self {
        let mut names: Vec<Arc<str>> = Vec::new();
        let mut by_name = HashMap::new();
        let default = std::slice::from_ref(&settings.default_tenant);
        let all = if settings.enabled {
            settings.tenants.as_slice()
        } else {
            default
        };
        for name in all {
            let name = name.to_ascii_lowercase();
            if !by_name.contains_key(&name) {
                by_name.insert(name.clone(), names.len());
                names.push(Arc::from(name));
            }
        }
        let default_index = by_name
            .get(&settings.default_tenant.to_ascii_lowercase())
            .copied()
            .unwrap_or(0);
        let mut base_domains = settings.base_domains.clone();
        base_domains.sort_by_key(|d| std::cmp::Reverse(d.len()));
        Self {
            enabled: settings.enabled,
            strategies: settings.strategies.clone(),
            base_domains,
            names,
            by_name,
            default_index,
        }
    }

    /// Every tenant this resolver can return, indexed by [`Tenant::index`].
    pub fn tenants(&self) -> &[Arc<str>] {
        &self.names
    }

    pub fn resolve(&self, inputs: TenantInputs<'_>) -> Result<Tenant, TenantRejection> {
        if !self.enabled {
            return Ok(self.tenant(self.default_index));
        }
        let mut host: Option<Result<Host, _>> = None;
        for strategy in &self.strategies {
            let candidate = match strategy {
                Strategy::Header => header_candidate(inputs.header)?,
                Strategy::Host | Strategy::Subdomain => {
                    let Some(raw) = inputs.host else { continue };
                    let parsed = host.get_or_insert_with(|| parse_host(raw));
                    let Host::Name(name) = parsed
                        .as_ref()
                        .map_err(|_| TenantRejection::MalformedHost)?
                    else {
                        continue;
                    };
                    self.host_candidate(name, *strategy)
                }
            };
            if let Some(candidate) = candidate {
                return self.known(&candidate);
            }
        }
        Err(TenantRejection::Unresolved)
    }

    /// The tenant a TLS server name (SNI) names under the configured host strategies, if any: a
    /// connection opened for `blue.smartpay.com` belongs to tenant blue. `None` for names under
    /// no base domain, base domains themselves, unknown tenants, and header-only tenancy.
    pub fn server_name_tenant(&self, server_name: &str) -> Option<Tenant> {
        if !self.enabled {
            return None;
        }
        let mut parsed = None;
        for strategy in &self.strategies {
            if matches!(strategy, Strategy::Header) {
                continue;
            }
            let host = parsed.get_or_insert_with(|| parse_host(server_name.as_bytes()));
            let Ok(Host::Name(name)) = host else {
                return None;
            };
            if let Some(candidate) = self.host_candidate(name, *strategy) {
                return self.known(&candidate).ok();
            }
        }
        None
    }

    /// Looks a tenant up by name, as a token's tenant claim or a hub group names it.
    pub fn lookup(&self, name: &str) -> Option<Tenant> {
        self.known(name).ok()
    }

    fn known(&self, candidate: &str) -> Result<Tenant, TenantRejection> {
        let lowered;
        let key = if candidate.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = candidate.to_ascii_lowercase();
            lowered.as_str()
        } else {
            candidate
        };
        self.by_name
            .get(key)
            .map(|&index| self.tenant(index))
            .ok_or(TenantRejection::Unknown)
    }

    fn tenant(&self, index: usize) -> Tenant {
        Tenant {
            index,
            name: Arc::clone(&self.names[index]),
        }
    }

    fn host_candidate(&self, host: &str, strategy: Strategy) -> Option<String> {
        // The longest base the host is, or is under; a host that is a base domain names no tenant.
        let under = self.base_domains.iter().find_map(|base| {
            if host == base {
                return Some(None);
            }
            let under = host.strip_suffix(base.as_str())?.strip_suffix('.')?;
            Some(Some(under))
        })??;
        let label = match strategy {
            Strategy::Host => under.split('.').next(),
            _ => under.rsplit('.').next(),
        }?;
        Some(label.to_string())
    }
}

fn header_candidate(value: Option<&[u8]>) -> Result<Option<String>, TenantRejection> {
    let Some(value) = value else { return Ok(None) };
    let value = std::str::from_utf8(value)
        .map_err(|_| TenantRejection::MalformedTenant)?
        .trim();
    if value.is_empty() {
        return Ok(None);
    }
    if !is_valid_tenant_id(value) {
        return Err(TenantRejection::MalformedTenant);
    }
    Ok(Some(value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_name_tenants_under_host_strategies_only() {
        let r = resolver(&[Strategy::Host, Strategy::Header]);
        assert_eq!(
            r.server_name_tenant("Blue.SmartPay.com").map(|t| t.name),
            Some("blue".into())
        );
        assert_eq!(r.server_name_tenant("smartpay.com").map(|t| t.name), None);
        assert_eq!(
            r.server_name_tenant("red.smartpay.com").map(|t| t.name),
            None
        );
        assert_eq!(
            r.server_name_tenant("blue.example.com").map(|t| t.name),
            None
        );
        assert!(r.server_name_tenant("not a name").is_none());
        let header_only = resolver(&[Strategy::Header]);
        assert!(
            header_only
                .server_name_tenant("blue.smartpay.com")
                .is_none()
        );
    }

    fn resolver(strategies: &[Strategy]) -> TenantResolver {
        TenantResolver::new(&TenancySettings {
            enabled: true,
            strategies: strategies.to_vec(),
            base_domains: vec!["smartpay.com".into(), "api.smartpay.com".into()],
            tenants: vec!["blue".into(), "green".into(), "api".into()],
            default_tenant: "default".into(),
        })
    }

    fn resolve(
        r: &TenantResolver,
        host: Option<&str>,
        header: Option<&str>,
    ) -> Result<String, TenantRejection> {
        r.resolve(TenantInputs {
            host: host.map(str::as_bytes),
            header: header.map(str::as_bytes),
        })
        .map(|t| t.name.to_string())
    }

    /// Strategies, Host, header, expected outcome.
    type Case = (
        &'static [Strategy],
        Option<&'static str>,
        Option<&'static str>,
        Result<String, TenantRejection>,
    );

    #[test]
    fn resolution_table() {
        use Strategy::*;
        use TenantRejection::*;
        let ok = |s: &str| Ok(s.to_string());
        let cases: &[Case] = &[
            (&[Host], Some("blue.smartpay.com"), None, ok("blue")),
            (&[Host], Some("Blue.SmartPay.com.:8443"), None, ok("blue")),
            (&[Host], Some("blue.api.smartpay.com"), None, ok("blue")),
            (&[Host], Some("green.eu.smartpay.com"), None, ok("green")),
            (&[Host], Some("smartpay.com"), None, Err(Unresolved)),
            (&[Host], Some("api.smartpay.com"), None, Err(Unresolved)),
            (&[Host], Some("blue.example.org"), None, Err(Unresolved)),
            (&[Host], Some("notsmartpay.com"), None, Err(Unresolved)),
            (&[Host], Some("[::1]:8080"), None, Err(Unresolved)),
            (&[Host], Some("127.0.0.1:8080"), None, Err(Unresolved)),
            (&[Host], None, None, Err(Unresolved)),
            (&[Host], Some("red.smartpay.com"), None, Err(Unknown)),
            (
                &[Host],
                Some("bl ue.smartpay.com"),
                None,
                Err(MalformedHost),
            ),
            (
                &[Host],
                Some("blue.smartpay.com"),
                Some("green"),
                ok("blue"),
            ),
            (&[Subdomain], Some("x.blue.smartpay.com"), None, ok("blue")),
            (
                &[Subdomain],
                Some("blue.api.smartpay.com"),
                None,
                ok("blue"),
            ),
            (&[Subdomain], Some("smartpay.com"), None, Err(Unresolved)),
            (&[Header], None, Some("blue"), ok("blue")),
            (&[Header], None, Some("  GREEN "), ok("green")),
            (&[Header], Some("blue.smartpay.com"), None, Err(Unresolved)),
            (&[Header], None, Some(""), Err(Unresolved)),
            (&[Header], None, Some("red"), Err(Unknown)),
            (&[Header], None, Some("default"), Err(Unknown)),
            (&[Header], None, Some("blue;drop"), Err(MalformedTenant)),
            (&[Header], None, Some("-blue"), Err(MalformedTenant)),
            (
                &[Host, Header],
                Some("localhost:8080"),
                Some("green"),
                ok("green"),
            ),
            (
                &[Host, Header],
                Some("blue.smartpay.com"),
                Some("green"),
                ok("blue"),
            ),
            (
                &[Host, Header],
                Some("red.smartpay.com"),
                Some("green"),
                Err(Unknown),
            ),
            (
                &[Header, Host],
                Some("blue.smartpay.com"),
                Some("green"),
                ok("green"),
            ),
            (&[Header, Host], Some("blue.smartpay.com"), None, ok("blue")),
            (
                &[Header, Host],
                Some("bad host"),
                Some("green"),
                ok("green"),
            ),
            (&[Header, Host], Some("bad host"), None, Err(MalformedHost)),
        ];
        for (strategies, host, header, expected) in cases {
            let r = resolver(strategies);
            assert_eq!(
                &resolve(&r, *host, *header),
                expected,
                "strategies {strategies:?}, host {host:?}, header {header:?}"
            );
        }
    }

    #[test]
    fn disabled_tenancy_gives_every_request_the_default_tenant() {
        let r = TenantResolver::new(&TenancySettings {
            enabled: false,
            strategies: vec![Strategy::Header],
            base_domains: vec![],
            tenants: vec![],
            default_tenant: "default".into(),
        });
        assert_eq!(resolve(&r, None, Some("blue")), Ok("default".into()));
        assert_eq!(resolve(&r, Some("bad host"), None), Ok("default".into()));
    }

    #[test]
    fn indices_are_stable_and_lookup_is_case_insensitive() {
        let r = resolver(&[Strategy::Header]);
        let names: Vec<&str> = r.tenants().iter().map(|t| &**t).collect();
        assert_eq!(names, ["blue", "green", "api"]);
        assert_eq!(r.lookup("GREEN").map(|t| t.index), Some(1));
        assert_eq!(r.lookup("red"), None);
        assert_eq!(
            r.lookup("default"),
            None,
            "the default tenant is not a tenant when enabled"
        );
    }

    #[test]
    fn tenant_id_syntax() {
        assert!(is_valid_tenant_id("blue"));
        assert!(is_valid_tenant_id("acme_eu-2"));
        assert!(!is_valid_tenant_id(""));
        assert!(!is_valid_tenant_id("_blue"));
        assert!(!is_valid_tenant_id("blue.green"));
        assert!(!is_valid_tenant_id(&"a".repeat(64)));
    }
}
