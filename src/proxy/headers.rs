//! Header hygiene: what goes to the provider and what comes back to the client.
//!
//! Towards the provider, the gateway's own headers are authoritative: any client-sent copy of the
//! tenant header, the identity headers (the client certificate's subject included) or, unless the
//! peer is a trusted proxy, the forwarding headers is removed before the canonical values are
//! set, so a client can never choose its tenant, identity or apparent address. Provider credentials are added per provider and
//! removed from whatever the provider sends back.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::Result;
use pingora::http::{RequestHeader, ResponseHeader};

use payedge_filters::auth::Principal;
use payedge_filters::forwarded::Forwarding;

use crate::failure::REQUEST_ID_HEADER;

// The names payedge sets are inserted by their `&'static str` spelling: Pingora takes it as the
// name's wire case as it is, where a `HeaderName` is first looked up among the standard names
// and then copied (per insert, on every request).
const X_AUTH_SUBJECT_NAME: &str = "x-auth-subject";
const X_AUTH_ROLES_NAME: &str = "x-auth-roles";
const X_CLIENT_CERT_SUBJECT_NAME: &str = "x-client-cert-subject";
const X_FORWARDED_FOR_NAME: &str = "x-forwarded-for";
const X_FORWARDED_PROTO_NAME: &str = "x-forwarded-proto";
pub const X_TENANT: HeaderName = HeaderName::from_static("x-tenant");
pub const X_AUTH_SUBJECT: HeaderName = HeaderName::from_static(X_AUTH_SUBJECT_NAME);
pub const X_AUTH_ROLES: HeaderName = HeaderName::from_static(X_AUTH_ROLES_NAME);
pub const X_CLIENT_CERT_SUBJECT: HeaderName = HeaderName::from_static(X_CLIENT_CERT_SUBJECT_NAME);
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static(X_FORWARDED_FOR_NAME);
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static(X_FORWARDED_PROTO_NAME);
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

pub struct UpstreamIdentity<'a> {
    pub tenant_header: &'a HeaderName,
    /// The same name's spelling on the wire (see `Routing::tenant_header_wire`).
    pub tenant_header_wire: &'a Bytes,
    pub tenant: &'a str,
    pub request_id: &'a str,
    pub principal: Option<&'a Principal>,
    /// Whether the gateway authenticates callers (then it consumes their Authorization header).
    pub terminates_auth: bool,
    /// `None` when the peer address is unknown: no forwarding headers are sent.
    pub forwarding: Option<&'a Forwarding>,
    /// The verified client certificate's subject.
    pub client_subject: Option<&'a str>,
    /// Whether the client reached payedge over TLS (`X-Forwarded-Proto`).
    pub https: bool,
    pub credentials: &'a [(HeaderName, http::HeaderValue)],
}

/// `http://…` or `https://…` (any case): not origin form (`/…`), asterisk form (`*`, OPTIONS)
/// or authority form (CONNECT).
fn is_absolute_form(target: &[u8]) -> bool {
    let scheme = |s: &[u8]| target.len() > s.len() && target[..s.len()].eq_ignore_ascii_case(s);
    scheme(b"http://") || scheme(b"https://")
}

pub fn prepare_upstream_request(req: &mut RequestHeader, id: &UpstreamIdentity<'_>) -> Result<()> {
    // A client may name its target in absolute form (`POST http://host/path`; Pingora has
    // checked it against Host). A gateway speaks to origin servers in origin form (RFC 9112
    // §3.2.1): the provider gets the path and query only, never the client-facing authority.
    // (Pingora keeps the target's bytes as the client sent them and writes those upstream.)
    if is_absolute_form(req.raw_path()) {
        let origin = req.uri.path_and_query().map_or("/", |p| p.as_str());
        if let Ok(origin) = http::Uri::try_from(origin) {
            req.set_uri(origin);
        }
    }
    // What a peer claims about earlier hops is passed on only from a trusted proxy, with the
    // peer appended; anyone else's claims are replaced by its own address.
    let keep_forwarded = id.forwarding.is_some_and(|f| f.peer_trusted);
    // A client that named its tenant in the tenant header (the header strategy) already sent
    // the canonical value: one header, byte for byte the tenant. It stays as it is; replacing it
    // with the same bytes cost a removal and an insertion in each of two maps. Anything else
    // (another spelling, a second value, a list) is replaced.
    let tenant_kept = {
        let mut sent = req.headers.get_all(id.tenant_header).iter();
        sent.next()
            .is_some_and(|v| v.as_bytes() == id.tenant.as_bytes())
            && sent.next().is_none()
    };
    // One pass over the (few) headers the client sent finds the ones to take out; removing a
    // name costs a hash lookup in two maps (Pingora keeps the client's spelling too), so only
    // names actually present are removed.
    let removable: [(&HeaderName, bool); 12] = [
        (id.tenant_header, !tenant_kept),
        (&X_TENANT, !tenant_kept || *id.tenant_header != X_TENANT),
        (&X_AUTH_SUBJECT, true),
        (&X_AUTH_ROLES, true),
        (&X_CLIENT_CERT_SUBJECT, true),
        (&X_FORWARDED_FOR, true),
        (&X_REAL_IP, true),
        (&http::header::AUTHORIZATION, id.terminates_auth),
        (&FORWARDED, !keep_forwarded),
        (&X_FORWARDED_PROTO, !keep_forwarded),
        (&X_FORWARDED_HOST, !keep_forwarded),
        (&X_FORWARDED_PORT, !keep_forwarded),
    ];
    let mut present = 0u16;
    for name in req.headers.keys() {
        for (i, (candidate, applies)) in removable.iter().enumerate() {
            if *applies && name == *candidate {
                present |= 1 << i;
            }
        }
    }
    for (i, (name, _)) in removable.iter().enumerate() {
        if present & (1 << i) != 0 {
            req.remove_header(*name);
        }
    }
    if !tenant_kept {
        req.insert_header(id.tenant_header_wire.clone(), id.tenant)?;
    }
    req.insert_header(REQUEST_ID_HEADER, id.request_id)?;
    if let Some(principal) = id.principal {
        if let Some(subject) = principal
            .subject
            .as_deref()
            .filter(|s| valid_header_text(s))
        {
            req.insert_header(X_AUTH_SUBJECT_NAME, subject)?;
        }
        let roles = principal.roles.join(" ");
        if !roles.is_empty() && valid_header_text(&roles) {
            req.insert_header(X_AUTH_ROLES_NAME, roles)?;
        }
    }
    if let Some(subject) = id.client_subject.filter(|s| valid_header_text(s)) {
        req.insert_header(X_CLIENT_CERT_SUBJECT_NAME, subject)?;
    }
    if req.headers.get(&X_FORWARDED_PROTO).is_none() {
        let proto = HeaderValue::from_static(if id.https { "https" } else { "http" });
        req.insert_header(X_FORWARDED_PROTO_NAME, proto)?;
    }
    if let Some(forwarding) = id.forwarding {
        req.insert_header(X_FORWARDED_FOR_NAME, forwarding.x_forwarded_for.as_str())?;
    }
    for (name, value) in id.credentials {
        req.insert_header(name.clone(), value.clone())?;
    }
    Ok(())
}

pub fn prepare_downstream_response(
    resp: &mut ResponseHeader,
    request_id: &str,
    credential_names: &[HeaderName],
) -> Result<()> {
    for name in credential_names {
        resp.remove_header(name);
    }
    resp.insert_header(REQUEST_ID_HEADER, request_id)?;
    Ok(())
}

fn valid_header_text(s: &str) -> bool {
    s.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head sent upstream for a request that came with `sent`: over HTTP/1, whose head keeps
    /// the client's spelling of names, or (`h2`) over HTTP/2, whose head has none (all lower
    /// case on the wire then).
    fn prepared(sent: &[(&str, &str)], tenant_header: &str, h2: bool) -> String {
        let mut req = if h2 {
            RequestHeader::build_no_case("GET", b"/api/fx/rates", None).unwrap()
        } else {
            RequestHeader::build("GET", b"/api/fx/rates", None).unwrap()
        };
        for (name, value) in sent {
            req.append_header(name.to_string(), *value).unwrap();
        }
        let tenant_header = HeaderName::from_bytes(tenant_header.as_bytes()).unwrap();
        let forwarding = payedge_filters::forwarded::forwarding(
            "203.0.113.9".parse().unwrap(),
            &Default::default(),
            &[],
        );
        prepare_upstream_request(
            &mut req,
            &UpstreamIdentity {
                tenant_header: &tenant_header,
                tenant_header_wire: &Bytes::copy_from_slice(tenant_header.as_str().as_bytes()),
                tenant: "blue",
                request_id: "r-1",
                principal: None,
                terminates_auth: true,
                forwarding: Some(&forwarding),
                client_subject: None,
                https: false,
                credentials: &[],
            },
        )
        .unwrap();
        let mut wire = Vec::new();
        req.header_to_h1_wire(&mut wire);
        String::from_utf8(wire).unwrap()
    }

    fn lines(wire: &str) -> Vec<String> {
        let mut lines: Vec<String> = wire
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        lines.sort_unstable();
        lines
    }

    #[test]
    fn the_tenant_header_is_canonical_whatever_the_client_sent() {
        let set = [
            "x-forwarded-for: 203.0.113.9",
            "x-forwarded-proto: http",
            "x-request-id: r-1",
        ];
        let expect = |tenant_lines: &[&str]| {
            let mut all: Vec<String> = set
                .iter()
                .chain(tenant_lines)
                .map(|l| l.to_string())
                .collect();
            all.sort_unstable();
            all
        };
        for h2 in [false, true] {
            let spelled = |line: &'static str| {
                if h2 {
                    line.to_ascii_lowercase()
                } else {
                    line.into()
                }
            };
            let prepared = |sent: &[(&str, &str)], tenant_header| prepared(sent, tenant_header, h2);
            // The canonical value, once: kept as sent (over HTTP/1, the client's spelling too).
            let wire = prepared(&[("X-Tenant", "blue")], "x-tenant");
            assert_eq!(lines(&wire), expect(&[&spelled("X-Tenant: blue")]));
            // Anything else is replaced by the canonical value.
            for sent in [
                &[("X-Tenant", "Blue")][..],
                &[("X-Tenant", "blue, green")],
                &[("X-Tenant", "blue"), ("X-Tenant", "blue")],
                &[("X-Tenant", "green"), ("X-Tenant", "blue")],
                &[("x-tenant", "blue "), ("Authorization", "Bearer t")],
                &[],
            ] {
                let wire = prepared(sent, "x-tenant");
                assert_eq!(lines(&wire), expect(&["x-tenant: blue"]), "sent {sent:?}");
            }
            // Another tenant header: X-Tenant is one of payedge's own names and always removed.
            let wire = prepared(&[("X-Org", "blue"), ("X-Tenant", "blue")], "x-org");
            assert_eq!(lines(&wire), expect(&[&spelled("X-Org: blue")]));
            let wire = prepared(&[("X-Tenant", "blue")], "x-org");
            assert_eq!(lines(&wire), expect(&["x-org: blue"]));
        }
    }
}
