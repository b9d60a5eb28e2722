//! Who may call the `/admin/` endpoints: a valid token that holds `auth.admin_role`.

use std::sync::Arc;

use payedge_filters::auth::JwtVerifier;
use pingora::http::RequestHeader;

use crate::config::AuthSettings;
use crate::failure::Failure;

pub struct OperatorAuth {
    verifier: Arc<JwtVerifier>,
    admin_role: String,
}

impl OperatorAuth {
    /// `None` unless the configuration has `auth` with an `admin_role`.
    pub fn from_config(auth: Option<&AuthSettings>) -> Option<Self> {
        let auth = auth?;
        Some(Self {
            verifier: Arc::clone(&auth.verifier),
            admin_role: auth.admin_role.clone()?,
        })
    }

    pub fn check(&self, req: &RequestHeader) -> Result<(), Failure> {
        let header = req
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let principal = self
            .verifier
            .verify_authorization(header)
            .map_err(Failure::Unauthorized)?;
        if principal.has_role(&self.admin_role) {
            Ok(())
        } else {
            Err(Failure::Forbidden)
        }
    }
}
