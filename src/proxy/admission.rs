//! The request_filter decisions, in order: path form, tenant, token, tenant match, route.

use http::HeaderName;
use payedge_filters::auth::{JwtVerifier, Principal, may_act_for};
use payedge_filters::path::check_path;
use payedge_filters::request_head::{self, HeadRefusal};
use payedge_filters::routing::PrefixTable;
use payedge_filters::tenant::{Tenant, TenantInputs, TenantResolver};
use pingora::http::RequestHeader;
use std::sync::Arc;

use crate::config::{AuthSettings, Config};
use crate::failure::Failure;

pub struct AuthGate {
    verifier: Arc<JwtVerifier>,
    required: PrefixTable<()>,
    cross_tenant_role: Option<String>,
}

impl AuthGate {
    pub fn new(settings: &AuthSettings) -> Self {
        Self {
            verifier: Arc::clone(&settings.verifier),
            required: PrefixTable::new_ignoring_case(
                settings
                    .required_path_prefixes
                    .iter()
                    .map(|p| (p.clone(), ())),
            ),
            cross_tenant_role: settings.cross_tenant_role().map(str::to_owned),
        }
    }
}

pub struct Admission {
    pub tenants: TenantResolver,
    tenant_header: HeaderName,
    auth: Option<AuthGate>,
    /// Route index by path prefix.
    routes: PrefixTable<usize>,
}

/// A request the gateway accepts to forward.
pub struct Admitted {
    pub tenant: Tenant,
    pub principal: Option<Principal>,
    pub route: usize,
}

/// A refused request, with what is known about it for logs and metrics.
pub struct Refused {
    pub failure: Failure,
    pub tenant: Option<Tenant>,
    pub route: Option<usize>,
}

impl Admission {
    pub fn new(config: &Config) -> Self {
        Self {
            tenants: TenantResolver::new(&config.tenancy),
            tenant_header: config.tenant_header.clone(),
            auth: config.auth.as_ref().map(AuthGate::new),
            routes: PrefixTable::new(
                config
                    .routes
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (r.path_prefix.clone(), i)),
            ),
        }
    }

    /// `server_name`: the SNI of the TLS connection the request came on, if any.
    pub fn admit(
        &self,
        req: &RequestHeader,
        server_name: Option<&str>,
    ) -> Result<Admitted, Refused> {
        let path = req.uri.path();
        if check_path(path).is_err() {
            return Err(Refused {
                failure: Failure::PathInvalid,
                tenant: None,
                route: None,
            });
        }
        // Looked up first so refusals are counted under their route, but only refused for
        // after authentication: an anonymous caller learns nothing about which paths exist.
        let route = self.routes.lookup(path).map(|(_, route)| *route);
        let refuse = |failure, tenant: Option<&Tenant>| Refused {
            failure,
            tenant: tenant.cloned(),
            route,
        };

        let host = req
            .headers
            .get(http::header::HOST)
            .map(|h| h.as_bytes())
            .or_else(|| req.uri.authority().map(|a| a.as_str().as_bytes()));
        let tenant = self
            .tenants
            .resolve(TenantInputs {
                host,
                header: single(&req.headers, &self.tenant_header),
            })
            .map_err(|r| refuse(Failure::Tenant(r), None))?;
        // A TLS connection opened for one tenant's host carries that tenant's requests only
        // (HTTP/2 connection reuse, domain fronting).
        if let Some(connection_tenant) =
            server_name.and_then(|n| self.tenants.server_name_tenant(n))
            && connection_tenant.index != tenant.index
        {
            return Err(refuse(Failure::MisdirectedRequest, Some(&tenant)));
        }

        let principal = match &self.auth {
            None => None,
            Some(gate) => {
                let authorization = single(&req.headers, &http::header::AUTHORIZATION);
                let required = gate.required.lookup(path).is_some();
                if authorization.is_none() && !required {
                    None
                } else {
                    let principal = gate
                        .verifier
                        .verify_authorization(authorization)
                        .map_err(|f| refuse(Failure::Unauthorized(f), Some(&tenant)))?;
                    if !may_act_for(&principal, &tenant.name, gate.cross_tenant_role.as_deref()) {
                        return Err(refuse(Failure::TenantMismatch, Some(&tenant)));
                    }
                    Some(principal)
                }
            }
        };

        let route = route.ok_or_else(|| refuse(Failure::RouteNotFound, Some(&tenant)))?;
        Ok(Admitted {
            tenant,
            principal,
            route,
        })
    }
}

/// The value of a header that must appear at most once. Sent twice (a list, RFC 9110 §5.3) it
/// is no tenant id and no credential, whichever line another hop would read: a value that is
/// neither, so the reader refuses it as malformed.
fn single<'a>(headers: &'a http::HeaderMap, name: &http::header::HeaderName) -> Option<&'a [u8]> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    Some(if values.next().is_some() {
        b","
    } else {
        first.as_bytes()
    })
}

/// The head's size, header count and body framing against `server.limits` (see
/// `payedge_filters::request_head`). For HTTP/1 the head is read as the client sent it: Pingora
/// drops `Content-Length` from the parsed head when `Transfer-Encoding` is present, and the
/// refusal must see both.
/// `raw` split at each line feed, as `raw.split(|b| *b == b'\n')` splits it, the line feeds
/// found a word at a time rather than byte by byte (a bearer token alone is hundreds of bytes).
fn lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', raw)
        .chain(std::iter::once(raw.len()))
        .map(move |end| {
            let line = raw.get(start..end).unwrap_or_default();
            start = end + 1;
            line
        })
}

pub fn check_head(
    session: &pingora::proxy::Session,
    snap: &crate::runtime::Snapshot,
) -> Result<(), HeadRefusal> {
    let limits = &snap.config.server.limits;
    if let pingora::protocols::http::ServerSession::H1(h1) = session.as_downstream() {
        let raw = h1.get_headers_raw_bytes();
        let mut lines = lines(&raw).map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let line = lines.next().map_or(0, <[u8]>::len);
        let headers = lines.filter(|l| !l.is_empty()).map(|l| {
            let colon = l.iter().position(|b| *b == b':').unwrap_or(l.len());
            let name = std::str::from_utf8(&l[..colon]).unwrap_or("");
            (name, l.get(colon + 1..).unwrap_or_default().trim_ascii())
        });
        let host_required = session.req_header().version == http::Version::HTTP_11;
        return request_head::check(limits, line, headers, host_required);
    }
    let req = session.req_header();
    // "METHOD target HTTP/2"
    let line = req.method.as_str().len() + req.raw_path().len() + 8;
    let headers = req.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
    request_head::check(limits, line, headers, false)
}

#[cfg(test)]
mod tests {
    #[test]
    fn heads_are_split_into_lines_as_split_would() {
        for raw in [
            &b""[..],
            b"\n",
            b"\n\n",
            b"GET / HTTP/1.1",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\n\nrest",
            b"a\r\n\r\nb\nc",
        ] {
            let expected: Vec<&[u8]> = raw.split(|b| *b == b'\n').collect();
            assert_eq!(super::lines(raw).collect::<Vec<_>>(), expected, "{raw:?}");
        }
    }
}
