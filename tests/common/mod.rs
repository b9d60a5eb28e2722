//! Test harness: the real payedge binary as a process on free ports, mock providers on real TCP
//! sockets that record what they receive, and a raw HTTP/1.1 client that sends exactly the bytes
//! a test asks for (garbage Host headers included).

#![allow(dead_code)]

pub mod browser;
pub mod client;
pub mod http_server;
pub mod hub;
pub mod mock;
pub mod pki;
pub mod process;
pub mod provider;
pub mod redis;
pub mod redis_cluster;
pub mod relay;

#[allow(unused_imports)]
pub use client::{
    Response, exchange_expecting_continue, get, request, then_on_the_same_connection,
};
#[allow(unused_imports)]
pub use mock::{MockResponse, MockUpstream, Recorded, fx_quote_provider};
#[allow(unused_imports)]
pub use process::{Payedge, free_addr};
#[allow(unused_imports)]
pub use provider::ProviderProcess;

use serde_json::{Value, json};

/// The HMAC secret tests sign with (passed to payedge as `TEST_JWT_SECRET`).
pub const SECRET: &str = "integration-test-secret-at-least-32-bytes";
pub const ISSUER: &str = "https://auth.test";
pub const AUDIENCE: &str = "payedge";

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims of a valid token for `tenant`; tests change what they need.
pub fn claims(tenant: &str) -> Value {
    json!({
        "sub": "user-1",
        "tenant": tenant,
        "roles": ["payer"],
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now(),
        "exp": now() + 600,
    })
}

pub fn sign(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

pub fn token(tenant: &str) -> String {
    sign(&claims(tenant))
}

pub fn bearer(tenant: &str) -> String {
    format!("Bearer {}", token(tenant))
}

/// A complete configuration: tenants blue and green by [host, header] under smartpay.com, JWT on
/// /api, one route /api → pool `main` whose providers are `upstreams`.
pub fn config(upstreams: &[&MockUpstream]) -> String {
    let providers: Vec<(String, std::net::SocketAddr)> = upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| (format!("p{i}"), u.addr))
        .collect();
    config_for(&providers, "    timeouts:\n      read_ms: 2000\n")
}

/// The same configuration with named providers and `pool_settings` (YAML indented by four
/// spaces: timeouts, selection, health_check, outlier, retry) for pool `main`.
pub fn config_for(providers: &[(String, std::net::SocketAddr)], pool_settings: &str) -> String {
    let providers: String = providers
        .iter()
        .map(|(name, addr)| format!("      - name: {name}\n        address: {addr}\n"))
        .collect();
    format!(
        r#"
server:
  grace_period_seconds: 5
tenancy:
  strategy: [host, header]
  base_domains: [smartpay.com]
  tenants: [blue, green]
auth:
  jwt:
    algorithms: [HS256]
    secret_env: TEST_JWT_SECRET
    issuer: {ISSUER}
    audience: {AUDIENCE}
  required_path_prefixes: [/api]
  admin_role: admin
routes:
  - path_prefix: /api
    pool: main
pools:
  main:
{pool_settings}    providers:
{providers}"#
    )
}

/// A token for an operator (role admin) of tenant blue.
pub fn admin_bearer() -> String {
    let mut c = claims("blue");
    c["roles"] = json!(["admin"]);
    format!("Bearer {}", sign(&c))
}

/// The environment every test payedge gets.
pub fn env() -> Vec<(&'static str, String)> {
    vec![("TEST_JWT_SECRET", SECRET.to_string())]
}

/// The `error` object of a JSON error reply.
pub fn error_of(resp: &Response) -> Value {
    let body: Value = serde_json::from_slice(&resp.body)
        .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&resp.body)));
    body["error"].clone()
}
