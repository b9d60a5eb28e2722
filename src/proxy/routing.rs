//! What the proxy's phases read from one configuration: built once per snapshot, immutable.

use bytes::Bytes;
use http::HeaderName;
use payedge_filters::forwarded::TrustedProxies;

use super::admission::Admission;
use crate::config::Config;

pub struct Routing {
    pub admission: Admission,
    pub tenant_header: HeaderName,
    /// `tenant_header`'s spelling as inserted upstream, shared: Pingora would look a
    /// `HeaderName` up among the standard names and copy it on every request.
    pub tenant_header_wire: Bytes,
    pub terminates_auth: bool,
    pub route_prefixes: Vec<String>,
    /// Pool index of each route.
    pub route_pools: Vec<usize>,
    pub request_logs: bool,
    pub trusted_proxies: TrustedProxies,
}

impl Routing {
    pub fn new(config: &Config) -> Self {
        Self {
            admission: Admission::new(config),
            tenant_header: config.tenant_header.clone(),
            tenant_header_wire: Bytes::copy_from_slice(config.tenant_header.as_str().as_bytes()),
            terminates_auth: config.auth.is_some(),
            route_prefixes: config
                .routes
                .iter()
                .map(|r| r.path_prefix.clone())
                .collect(),
            route_pools: config.routes.iter().map(|r| r.pool).collect(),
            request_logs: config.analytics.request_logs_enabled(),
            trusted_proxies: config.server.trusted_proxies.clone(),
        }
    }
}
