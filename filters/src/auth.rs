//! JWT bearer authentication and the tenant check that follows it.
//!
//! Algorithm confusion is impossible by construction: every key is bound to one algorithm family
//! (an HMAC secret, an RSA key, an EC key), and a token is only ever verified with keys of the family
//! its header names, under a validation that allows exactly that algorithm. `alg: none` is not an
//! algorithm jsonwebtoken knows, so such a token never reaches verification.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use crate::token_cache::{Cached, TokenCache};

/// Tokens longer than this are rejected before any decoding work.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The algorithms payedge accepts in configuration.
pub const SUPPORTED_ALGORITHMS: [Algorithm; 7] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub algorithms: Vec<Algorithm>,
    pub hmac_secret: Option<Vec<u8>>,
    pub public_key_pem: Option<Vec<u8>>,
    pub jwks_json: Option<String>,
    /// Keys also come from a key set fetched at run time ([`RemoteKeys`], attached later).
    pub remote_keys: bool,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub tenant_claim: String,
    pub roles_claim: String,
    pub leeway_seconds: u64,
}

/// A problem with the key material or algorithm list, found once at start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtConfigError {
    #[error(
        "algorithm {0:?} is not supported (use HS256, HS384, HS512, RS256, PS256, ES256 or EdDSA)"
    )]
    UnsupportedAlgorithm(Algorithm),
    #[error("no algorithm is allowed")]
    NoAlgorithm,
    #[error("{0:?} needs {1}")]
    MissingKey(Algorithm, &'static str),
    #[error("the public key is neither an RSA key (RS256) nor a P-256 EC key (ES256) allowed here")]
    UnusablePublicKey,
    #[error("the JWKS is not valid JSON Web Key Set JSON: {0}")]
    BadJwks(String),
    #[error("an HMAC secret is set but no HS* algorithm is allowed")]
    UnusedSecret,
    #[error("the HMAC secret is shorter than 32 bytes")]
    WeakSecret,
}

/// Why a request's credentials were refused (the metric label is [`AuthFailure::reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Malformed,
    AlgorithmNotAllowed,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
}

impl AuthFailure {
    pub const ALL: [AuthFailure; 9] = [
        Self::Missing,
        Self::Malformed,
        Self::AlgorithmNotAllowed,
        Self::UnknownKey,
        Self::BadSignature,
        Self::Expired,
        Self::NotYetValid,
        Self::WrongIssuer,
        Self::WrongAudience,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
        }
    }

    /// A client-facing explanation that gives an attacker nothing beyond the failure class.
    pub fn message(self) -> &'static str {
        match self {
            Self::Missing => "a Bearer token is required",
            Self::Malformed => "the Bearer token is malformed",
            Self::AlgorithmNotAllowed => "the token's signing algorithm is not accepted",
            Self::UnknownKey | Self::BadSignature => "the token's signature is not valid",
            Self::Expired => "the token has expired",
            Self::NotYetValid => "the token is not valid yet",
            Self::WrongIssuer => "the token's issuer is not accepted",
            Self::WrongAudience => "the token's audience is not accepted",
        }
    }
}

/// The verified caller.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Principal {
    pub subject: Option<String>,
    pub tenant: Option<String>,
    pub roles: Vec<String>,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
}

impl Principal {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

struct VerificationKey {
    family: AlgorithmFamily,
    kid: Option<String>,
    key: DecodingKey,
}

/// A key set fetched from the identity provider (`jwks_url`), replaced whole on every refresh
/// and shared by the verifiers of every configuration that names the same URL, so a reload keeps
/// the keys. No I/O here: the fetcher lives in the binary; a token naming a `kid` the set lacks
/// asks it for a refresh.
pub struct RemoteKeys {
    keys: arc_swap::ArcSwap<Vec<VerificationKey>>,
    /// Bumped on every replacement: verifiers drop the tokens they cached under older keys.
    generation: AtomicU64,
    refresh_wanted: AtomicBool,
    waker: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys")
            .field("keys", &self.keys.load().len())
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish()
    }
}

impl RemoteKeys {
    pub fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            keys: arc_swap::ArcSwap::from_pointee(Vec::new()),
            generation: AtomicU64::new(0),
            refresh_wanted: AtomicBool::new(false),
            waker: OnceLock::new(),
        })
    }

    /// Replaces the set with the keys of a JWKS document. Keys for encryption (`use: enc`) and
    /// of kinds payedge does not verify with are skipped, as identity providers publish them
    /// beside the signing keys; a document with no usable key is refused and the set is kept.
    /// Returns the number of keys now in use.
    pub fn replace(&self, jwks_json: &str) -> Result<usize, JwtConfigError> {
        let set: JwkSet =
            serde_json::from_str(jwks_json).map_err(|e| JwtConfigError::BadJwks(e.to_string()))?;
        let keys: Vec<VerificationKey> = set
            .keys
            .iter()
            .filter(|jwk| jwk.common.public_key_use != Some(PublicKeyUse::Encryption))
            .filter_map(|jwk| verification_key(jwk).ok())
            .collect();
        if keys.is_empty() {
            return Err(JwtConfigError::BadJwks(
                "no signing key payedge can use (RSA, EC P-256 or Ed25519)".into(),
            ));
        }
        let n = keys.len();
        self.keys.store(std::sync::Arc::new(keys));
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(n)
    }

    /// The key ids in use (for logs).
    pub fn kids(&self) -> Vec<String> {
        self.keys
            .load()
            .iter()
            .filter_map(|k| k.kid.clone())
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.load().is_empty()
    }

    /// Called with nothing held whenever a refresh is wanted (a token named an unknown kid).
    pub fn set_waker(&self, waker: Box<dyn Fn() + Send + Sync>) {
        let _ = self.waker.set(waker);
    }

    /// Whether a refresh was asked for since the last call.
    pub fn take_refresh_request(&self) -> bool {
        self.refresh_wanted.swap(false, Ordering::AcqRel)
    }

    fn request_refresh(&self) {
        if !self.refresh_wanted.swap(true, Ordering::AcqRel)
            && let Some(wake) = self.waker.get()
        {
            wake();
        }
    }
}

pub struct JwtVerifier {
    keys: Vec<VerificationKey>,
    remote: OnceLock<std::sync::Arc<RemoteKeys>>,
    /// The remote generation the token cache was filled under.
    cached_generation: AtomicU64,
    /// One validation per allowed algorithm, each allowing only that algorithm.
    validations: Vec<(Algorithm, Validation)>,
    tenant_claim: String,
    roles_claim: String,
    verified: TokenCache,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.keys.len())
            .field(
                "algorithms",
                &self.validations.iter().map(|(a, _)| a).collect::<Vec<_>>(),
            )
            .finish()
    }
}

pub const MIN_HMAC_SECRET_LEN: usize = 32;

impl JwtVerifier {
    pub fn new(settings: &JwtSettings) -> Result<Self, JwtConfigError> {
        if settings.algorithms.is_empty() {
            return Err(JwtConfigError::NoAlgorithm);
        }
        if let Some(alg) = settings
            .algorithms
            .iter()
            .find(|a| !SUPPORTED_ALGORITHMS.contains(a))
        {
            return Err(JwtConfigError::UnsupportedAlgorithm(*alg));
        }
        let allows = |family| settings.algorithms.iter().any(|a| a.family() == family);
        let mut keys = Vec::new();
        if let Some(secret) = &settings.hmac_secret {
            if !allows(AlgorithmFamily::Hmac) {
                return Err(JwtConfigError::UnusedSecret);
            }
            if secret.len() < MIN_HMAC_SECRET_LEN {
                return Err(JwtConfigError::WeakSecret);
            }
            keys.push(VerificationKey {
                family: AlgorithmFamily::Hmac,
                kid: None,
                key: DecodingKey::from_secret(secret),
            });
        }
        if let Some(pem) = &settings.public_key_pem {
            keys.push(public_key_from_pem(pem, &allows)?);
        }
        if let Some(jwks) = &settings.jwks_json {
            keys.extend(keys_from_jwks(jwks)?);
        }
        for alg in &settings.algorithms {
            let remote = settings.remote_keys && alg.family() != AlgorithmFamily::Hmac;
            if !remote && !keys.iter().any(|k| k.family == alg.family()) {
                let needs = match alg.family() {
                    AlgorithmFamily::Hmac => "an HMAC secret (secret_env)",
                    AlgorithmFamily::Rsa => "an RSA key (public_key_file, jwks_file or jwks_url)",
                    AlgorithmFamily::Ed => "an Ed25519 key (jwks_file or jwks_url)",
                    _ => "a P-256 EC key (public_key_file, jwks_file or jwks_url)",
                };
                return Err(JwtConfigError::MissingKey(*alg, needs));
            }
        }
        let validations = settings
            .algorithms
            .iter()
            .map(|alg| (*alg, validation_for(*alg, settings)))
            .collect();
        Ok(Self {
            keys,
            remote: OnceLock::new(),
            cached_generation: AtomicU64::new(0),
            validations,
            tenant_claim: settings.tenant_claim.clone(),
            roles_claim: settings.roles_claim.clone(),
            verified: TokenCache::new(settings.leeway_seconds),
        })
    }

    /// Takes keys from `remote` too (once; later calls are ignored).
    pub fn attach_remote(&self, remote: std::sync::Arc<RemoteKeys>) {
        let _ = self.remote.set(remote);
    }

    /// Verifies the value of an `Authorization` header (`None` when the request had none).
    pub fn verify_authorization(&self, header: Option<&[u8]>) -> Result<Principal, AuthFailure> {
        let header = header.ok_or(AuthFailure::Missing)?;
        self.verify(bearer_token(header)?)
    }

    /// Verifies a bare token (as the hub receives it in `access_token`).
    pub fn verify(&self, token: &str) -> Result<Principal, AuthFailure> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(AuthFailure::Malformed);
        }
        let now = jsonwebtoken::get_current_timestamp();
        let remote_generation = self
            .remote
            .get()
            .map(|r| r.generation.load(Ordering::Acquire));
        if let Some(generation) = remote_generation {
            // New keys (a rotation, a revocation): what was verified under the old ones is
            // verified again.
            if self.cached_generation.swap(generation, Ordering::AcqRel) != generation {
                self.verified.clear();
            }
        }
        match self.verified.get(token, now) {
            Cached::Valid(principal) => return Ok(principal),
            Cached::Expired => return Err(AuthFailure::Expired),
            Cached::Unknown => {}
        }
        let principal = self.verify_uncached(token)?;
        self.verified.insert(token, &principal, now);
        // Keys replaced while this token was being verified (it may have used one just
        // withdrawn): whichever of this check and the next request's comes later empties the
        // cache, so the entry cannot outlive the replacement.
        let now_generation = self
            .remote
            .get()
            .map(|r| r.generation.load(Ordering::Acquire));
        if now_generation != remote_generation {
            self.verified.clear();
        }
        Ok(principal)
    }

    fn verify_uncached(&self, token: &str) -> Result<Principal, AuthFailure> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| header_failure(token))?;
        let (_, validation) = self
            .validations
            .iter()
            .find(|(alg, _)| *alg == header.alg)
            .ok_or(AuthFailure::AlgorithmNotAllowed)?;
        let family = header.alg.family();
        let remote = self.remote.get().map(|r| r.keys.load_full());
        let remote_keys = remote.as_deref().map(Vec::as_slice).unwrap_or_default();
        let mut candidates = self.keys.iter().chain(remote_keys).filter(|k| {
            k.family == family
                && match (&header.kid, &k.kid) {
                    (Some(wanted), Some(have)) => wanted == have,
                    _ => true,
                }
        });
        let mut failure = AuthFailure::UnknownKey;
        let mut tried = false;
        for key in &mut candidates {
            tried = true;
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation) {
                Ok(data) => return Ok(self.principal(data.claims)),
                Err(e) => {
                    failure = classify(e.kind());
                    if failure != AuthFailure::BadSignature {
                        return Err(failure);
                    }
                }
            }
        }
        // A key id nobody knows may be the identity provider's new key.
        if !tried
            && header.kid.is_some()
            && let Some(remote) = self.remote.get()
        {
            remote.request_refresh();
        }
        Err(failure)
    }

    fn principal(&self, claims: Map<String, Value>) -> Principal {
        let string = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let roles = match claims.get(&self.roles_claim) {
            Some(Value::String(role)) => role.split_whitespace().map(str::to_owned).collect(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        Principal {
            subject: string("sub"),
            tenant: string(&self.tenant_claim),
            roles,
            expires_at: claims.get("exp").and_then(Value::as_u64).unwrap_or(0),
        }
    }
}

fn validation_for(alg: Algorithm, settings: &JwtSettings) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = settings.leeway_seconds;
    v.validate_exp = true;
    v.validate_nbf = true;
    let mut required = vec!["exp"];
    if let Some(iss) = &settings.issuer {
        v.set_issuer(&[iss]);
        required.push("iss");
    }
    match &settings.audience {
        Some(aud) => {
            v.set_audience(&[aud]);
            required.push("aud");
        }
        None => v.validate_aud = false,
    }
    v.set_required_spec_claims(&required);
    v
}

fn public_key_from_pem(
    pem: &[u8],
    allows: &dyn Fn(AlgorithmFamily) -> bool,
) -> Result<VerificationKey, JwtConfigError> {
    let attempts = [
        (AlgorithmFamily::Rsa, DecodingKey::from_rsa_pem(pem)),
        (AlgorithmFamily::Ec, DecodingKey::from_ec_pem(pem)),
    ];
    attempts
        .into_iter()
        .find_map(|(family, key)| match key {
            Ok(key) if allows(family) => Some(VerificationKey {
                family,
                kid: None,
                key,
            }),
            _ => None,
        })
        .ok_or(JwtConfigError::UnusablePublicKey)
}

fn keys_from_jwks(json: &str) -> Result<Vec<VerificationKey>, JwtConfigError> {
    let set: JwkSet =
        serde_json::from_str(json).map_err(|e| JwtConfigError::BadJwks(e.to_string()))?;
    set.keys.iter().map(verification_key).collect()
}

fn verification_key(jwk: &Jwk) -> Result<VerificationKey, JwtConfigError> {
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
        AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
        AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
        _ => {
            return Err(JwtConfigError::BadJwks(
                "only RSA, EC and Ed25519 public keys are accepted (HMAC secrets come from \
                 secret_env or secret_file)"
                    .into(),
            ));
        }
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| JwtConfigError::BadJwks(e.to_string()))?;
    Ok(VerificationKey {
        family,
        kid: jwk.common.key_id.clone(),
        key,
    })
}

/// Extracts the token from `Bearer <token>` (scheme case-insensitive, RFC 6750).
pub fn bearer_token(header: &[u8]) -> Result<&str, AuthFailure> {
    let header = std::str::from_utf8(header).map_err(|_| AuthFailure::Malformed)?;
    let (scheme, token) = header
        .trim()
        .split_once(' ')
        .ok_or(AuthFailure::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthFailure::Malformed);
    }
    let token = token.trim();
    if token.is_empty() || token.contains(' ') {
        return Err(AuthFailure::Malformed);
    }
    Ok(token)
}

/// A header jsonwebtoken cannot read: a known-shaped header naming an unknown `alg` (such as
/// `none`) is a refused algorithm, anything else is malformed.
fn header_failure(token: &str) -> AuthFailure {
    use base64::Engine;
    let Some(segment) = token.split('.').next() else {
        return AuthFailure::Malformed;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(segment) else {
        return AuthFailure::Malformed;
    };
    match serde_json::from_slice::<Map<String, Value>>(&bytes) {
        Ok(header) if header.get("alg").is_some_and(Value::is_string) => {
            AuthFailure::AlgorithmNotAllowed
        }
        _ => AuthFailure::Malformed,
    }
}

fn classify(kind: &jsonwebtoken::errors::ErrorKind) -> AuthFailure {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature => AuthFailure::BadSignature,
        K::ExpiredSignature => AuthFailure::Expired,
        K::ImmatureSignature => AuthFailure::NotYetValid,
        K::InvalidIssuer => AuthFailure::WrongIssuer,
        K::InvalidAudience => AuthFailure::WrongAudience,
        K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm => {
            AuthFailure::AlgorithmNotAllowed
        }
        K::MissingRequiredClaim(claim) => match claim.as_str() {
            "iss" => AuthFailure::WrongIssuer,
            "aud" => AuthFailure::WrongAudience,
            _ => AuthFailure::Malformed,
        },
        _ => AuthFailure::Malformed,
    }
}

/// Claims for tokens payedge mints itself (`payedge token`, the demo, tests).
#[derive(Debug, Clone, serde::Serialize)]
pub struct MintClaims {
    pub sub: String,
    pub tenant_claim: String,
    pub tenant: Option<String>,
    pub roles_claim: String,
    pub roles: Vec<String>,
    pub iss: Option<String>,
    pub aud: Option<String>,
    pub iat: u64,
    pub exp: u64,
}

/// Signs `claims` with an HMAC secret.
pub fn mint_hmac(
    alg: Algorithm,
    secret: &[u8],
    claims: &MintClaims,
) -> Result<String, jsonwebtoken::errors::Error> {
    let mut body = Map::new();
    body.insert("sub".into(), claims.sub.clone().into());
    if let Some(tenant) = &claims.tenant {
        body.insert(claims.tenant_claim.clone(), tenant.clone().into());
    }
    body.insert(claims.roles_claim.clone(), claims.roles.clone().into());
    if let Some(iss) = &claims.iss {
        body.insert("iss".into(), iss.clone().into());
    }
    if let Some(aud) = &claims.aud {
        body.insert("aud".into(), aud.clone().into());
    }
    body.insert("iat".into(), claims.iat.into());
    body.insert("exp".into(), claims.exp.into());
    jsonwebtoken::encode(&Header::new(alg), &body, &EncodingKey::from_secret(secret))
}

/// Whether `principal` may act for `tenant`: its tenant claim names it, or it holds a role that
/// the configuration allows across tenants.
pub fn may_act_for(principal: &Principal, tenant: &str, cross_tenant_role: Option<&str>) -> bool {
    if cross_tenant_role.is_some_and(|role| principal.has_role(role)) {
        return true;
    }
    principal
        .tenant
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case(tenant))
}
