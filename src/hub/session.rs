//! Who is calling the hub: a verified token, from `Authorization: Bearer` (Node clients) or the
//! `access_token` query parameter (browsers cannot set headers on WebSockets).

use std::sync::Arc;

use payedge_filters::auth::{AuthFailure, JwtVerifier};
use payedge_filters::tenant::TenantResolver;
use pingora::http::RequestHeader;

use crate::failure::Failure;

#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: Arc<str>,
    pub subject: Option<String>,
    /// Holds the admin role: may join any tenant's group.
    pub admin: bool,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
}

impl Caller {
    /// The same caller with the same powers: a socket coming back for a connection (or a
    /// negotiated token being used) with a token that no longer holds the admin role must not
    /// inherit the old connection's other tenants' groups.
    pub fn same_identity(&self, other: &Caller) -> bool {
        self.tenant == other.tenant && self.subject == other.subject && self.admin == other.admin
    }

    #[cfg(test)]
    pub fn for_tests(tenant: &str) -> Self {
        Self::for_tests_as(tenant, "user")
    }

    #[cfg(test)]
    pub fn for_tests_as(tenant: &str, subject: &str) -> Self {
        Self {
            tenant: tenant.into(),
            subject: Some(subject.into()),
            admin: false,
            expires_at: u64::MAX,
        }
    }
}

pub struct HubAuth {
    verifier: Arc<JwtVerifier>,
    tenants: TenantResolver,
    admin_role: Option<String>,
}

impl HubAuth {
    pub fn new(
        verifier: Arc<JwtVerifier>,
        tenants: TenantResolver,
        admin_role: Option<String>,
    ) -> Self {
        Self {
            verifier,
            tenants,
            admin_role,
        }
    }

    /// The caller of a negotiate or upgrade request, or the refusal to answer.
    pub fn authenticate(&self, req: &RequestHeader) -> Result<Caller, Failure> {
        let header = req
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let principal = match header {
            Some(header) => self.verifier.verify_authorization(Some(header)),
            None => match query_param(req, "access_token") {
                Some(token) => self.verifier.verify(&token),
                None => Err(AuthFailure::Missing),
            },
        }
        .map_err(Failure::Unauthorized)?;
        let tenant = principal
            .tenant
            .as_deref()
            .and_then(|t| self.tenants.lookup(t))
            .ok_or(Failure::TenantMismatch)?;
        Ok(Caller {
            tenant: tenant.name,
            admin: self
                .admin_role
                .as_deref()
                .is_some_and(|role| principal.has_role(role)),
            subject: principal.subject,
            expires_at: principal.expires_at,
        })
    }

    pub fn tenant(&self, name: &str) -> Option<Arc<str>> {
        self.tenants.lookup(name).map(|t| t.name)
    }
}

/// A query parameter's decoded value.
pub fn query_param(req: &RequestHeader, name: &str) -> Option<String> {
    let query = req.uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
