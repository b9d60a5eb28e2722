//! Header hygiene: what goes to the provider and what comes back to the client.
//!
//! Towards the provider, the gateway's own headers are authoritative: any client-sent copy of the
//! tenant header, the identity headers or the forwarding headers is removed before the canonical
//! values are set, so a client can never choose its tenant, identity or apparent address. Provider credentials are added per provider and
//! removed from whatever the provider sends back.

use http::HeaderName;
use pingora::Result;
use pingora::http::{RequestHeader, ResponseHeader};

use payedge_filters::auth::Principal;

use crate::failure::REQUEST_ID_HEADER;

pub const X_TENANT: HeaderName = HeaderName::from_static("x-tenant");
pub const X_AUTH_SUBJECT: HeaderName = HeaderName::from_static("x-auth-subject");
pub const X_AUTH_ROLES: HeaderName = HeaderName::from_static("x-auth-roles");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

pub struct UpstreamIdentity<'a> {
    pub tenant_header: &'a HeaderName,
    pub tenant: &'a str,
    pub request_id: &'a str,
    pub principal: Option<&'a Principal>,
    /// Whether the gateway authenticates callers (then it consumes their Authorization header).
    pub terminates_auth: bool,
    pub client_ip: Option<String>,
    pub credentials: &'a [(HeaderName, http::HeaderValue)],
}

pub fn prepare_upstream_request(req: &mut RequestHeader, id: &UpstreamIdentity<'_>) -> Result<()> {
    for internal in [id.tenant_header, &X_TENANT, &X_AUTH_SUBJECT, &X_AUTH_ROLES] {
        req.remove_header(internal);
    }
    if id.terminates_auth {
        req.remove_header(&http::header::AUTHORIZATION);
    }
    req.insert_header(id.tenant_header.clone(), id.tenant)?;
    req.insert_header(REQUEST_ID_HEADER, id.request_id)?;
    if let Some(principal) = id.principal {
        if let Some(subject) = principal
            .subject
            .as_deref()
            .filter(|s| valid_header_text(s))
        {
            req.insert_header(X_AUTH_SUBJECT, subject)?;
        }
        let roles = principal.roles.join(" ");
        if !roles.is_empty() && valid_header_text(&roles) {
            req.insert_header(X_AUTH_ROLES, roles)?;
        }
    }
    // payedge is the edge: whatever a client claims about earlier hops is not passed on.
    for claimed in [&X_FORWARDED_FOR, &FORWARDED, &X_REAL_IP] {
        req.remove_header(claimed);
    }
    if let Some(ip) = &id.client_ip {
        req.insert_header(X_FORWARDED_FOR, ip.as_str())?;
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
