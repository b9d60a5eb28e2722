//! JWT authentication end to end, through the real binary: what the provider receives for a valid
//! token, every refusal with its challenge and counter, the tenant check, operator tokens,
//! identity-header spoofing, optional-token paths, RS256 and JWKS keys, and tokens kept out of
//! the logs.

mod common;

use common::*;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const RSA_PRIVATE: &[u8] = include_bytes!("../filters/tests/keys/rsa_private.pem");
const EC_PRIVATE: &[u8] = include_bytes!("../filters/tests/keys/ec_private.pem");
const RSA_PUBLIC_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/filters/tests/keys/rsa_public.pem"
);

/// Another HMAC secret, as long as the real one: signatures made with it must be refused.
const OTHER_SECRET: &str = "a-different-secret-of-at-least-32-bytes!";

const REASONS: [&str; 9] = [
    "missing",
    "malformed",
    "algorithm_not_allowed",
    "unknown_key",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "wrong_issuer",
    "wrong_audience",
];

// ---- configuration edits -------------------------------------------------------------------

/// `yaml` with `from` replaced by `to`; `from` must be there.
fn edit(yaml: &str, from: &str, to: &str) -> String {
    assert!(
        yaml.contains(from),
        "the harness configuration changed: no {from:?} in\n{yaml}"
    );
    yaml.replacen(from, to, 1)
}

const HARNESS_ROUTES: &str = "routes:\n  - path_prefix: /api\n    pool: main\n";
const HARNESS_KEYS: &str = "    algorithms: [HS256]\n    secret_env: TEST_JWT_SECRET\n";

/// The harness configuration plus a route /public (outside `required_path_prefixes`).
fn config_with_public_route(upstream: &MockUpstream) -> String {
    edit(
        &config(&[upstream]),
        HARNESS_ROUTES,
        &format!("{HARNESS_ROUTES}  - path_prefix: /public\n    pool: main\n"),
    )
}

// ---- tokens --------------------------------------------------------------------------------

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

fn sign_with(header: &Header, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(header, claims, key).unwrap()
}

fn hmac(alg: Algorithm, secret: &str, claims: &Value) -> String {
    sign_with(
        &Header::new(alg),
        &EncodingKey::from_secret(secret.as_bytes()),
        claims,
    )
}

fn rs256(header: Header, claims: &Value) -> String {
    sign_with(
        &header,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
        claims,
    )
}

/// Unpadded base64url (RFC 4648 §5), for tokens crafted by hand.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// A token assembled by hand: `header.claims.signature`, each part base64url of the given bytes.
fn hand_made(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        b64url(signature)
    )
}

// ---- requests and replies ------------------------------------------------------------------

/// GET `path` as tenant blue (X-Tenant) with `authorization`, when given, and `extra` headers.
fn call(gw: &Payedge, path: &str, authorization: Option<&str>, extra: &[(&str, &str)]) -> Response {
    let mut headers = vec![("X-Tenant", "blue")];
    if let Some(value) = authorization {
        headers.push(("Authorization", value));
    }
    headers.extend_from_slice(extra);
    get(gw.proxy, path, &headers)
}

/// Asserts `resp` is the gateway's own JSON error with `status` and `code`, in the one shape
/// `{"error":{"code","message","request_id"}}`.
#[track_caller]
fn assert_refused(resp: &Response, status: u16, code: &str, what: &str) {
    assert_eq!(resp.status, status, "{what}: {}", resp.text());
    assert_eq!(
        resp.header("content-type"),
        Some("application/json"),
        "{what}"
    );
    let body = resp.json();
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{what}: {body}");
    let error = &body["error"];
    assert_eq!(
        error.as_object().map(|o| o.len()),
        Some(3),
        "{what}: {body}"
    );
    assert_eq!(error["code"], code, "{what}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
    let id = error["request_id"].as_str().expect("request_id");
    assert_eq!(resp.header("x-request-id"), Some(id), "{what}");
}

/// Asserts a 401 for an invalid (not missing) token.
#[track_caller]
fn assert_invalid_token(resp: &Response, what: &str) {
    assert_refused(resp, 401, "unauthorized", what);
    let challenge = resp.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with(r#"Bearer realm="payedge""#)
            && challenge.contains(r#"error="invalid_token""#),
        "{what}: WWW-Authenticate {challenge:?}"
    );
}

fn auth_failures(text: &str, reason: &str) -> f64 {
    let series = format!("payedge_auth_failures_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Every auth failure counter, in [`REASONS`] order.
fn auth_counters(gw: &Payedge) -> Vec<f64> {
    let text = gw.metrics();
    REASONS.iter().map(|r| auth_failures(&text, r)).collect()
}

/// Asserts that between `before` and now exactly the counter of `reason` moved, by one.
#[track_caller]
fn assert_counted(gw: &Payedge, before: &[f64], reason: &str, what: &str) {
    let after = auth_counters(gw);
    for (i, r) in REASONS.iter().enumerate() {
        let expected = if *r == reason { 1.0 } else { 0.0 };
        assert_eq!(
            after[i] - before[i],
            expected,
            "{what}: payedge_auth_failures_total{{reason={r:?}}} (expected {reason:?} to move)"
        );
    }
}

fn seen<'a>(recorded: &'a Recorded, name: &str) -> Vec<&'a str> {
    recorded.headers_named(name)
}

// ---- tests ---------------------------------------------------------------------------------

#[test]
fn a_valid_token_reaches_the_provider_as_identity_headers() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());

    let token = sign(&with(claims("blue"), "roles", json!(["payer", "refunder"])));
    let resp = call(&gw, "/api/pay", Some(&format!("Bearer {token}")), &[]);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["provider"], "p0");

    let req = upstream.last();
    assert_eq!(seen(&req, "x-auth-subject"), ["user-1"]);
    assert_eq!(seen(&req, "x-auth-roles"), ["payer refunder"]);
    assert_eq!(seen(&req, "x-tenant"), ["blue"]);
    assert_eq!(
        seen(&req, "authorization"),
        Vec::<&str>::new(),
        "the client's Authorization header reached the provider"
    );

    // The scheme is case-insensitive; roles may be a space-separated string.
    let token = sign(&with(claims("blue"), "roles", json!("payer viewer")));
    let resp = call(&gw, "/api/pay", Some(&format!("bearer {token}")), &[]);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let req = upstream.last();
    assert_eq!(seen(&req, "x-auth-roles"), ["payer viewer"]);
    assert_eq!(seen(&req, "authorization"), Vec::<&str>::new());
    assert_eq!(upstream.count(), 2);
}

#[test]
fn a_missing_token_on_a_required_path_is_401_with_a_bearer_challenge() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());
    let before = auth_counters(&gw);

    let resp = call(&gw, "/api/pay", None, &[]);
    assert_refused(&resp, 401, "unauthorized", "no token");
    assert_eq!(
        resp.header("www-authenticate"),
        Some(r#"Bearer realm="payedge""#)
    );
    assert_counted(&gw, &before, "missing", "no token");

    // Whole segments: /api itself is covered as well.
    let before = auth_counters(&gw);
    let resp = call(&gw, "/api", None, &[]);
    assert_refused(&resp, 401, "unauthorized", "no token on /api");
    assert_counted(&gw, &before, "missing", "no token on /api");
    assert_eq!(upstream.count(), 0);
}

#[test]
fn invalid_tokens_are_401_invalid_token_and_counted_by_reason() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());
    let now = now();
    let good = claims("blue");

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            format!(
                "Bearer {}",
                sign(&with(
                    with(good.clone(), "exp", json!(now - 3600)),
                    "iat",
                    json!(now - 7200)
                ))
            ),
            "expired",
        ),
        (
            "not yet valid",
            format!(
                "Bearer {}",
                sign(&with(good.clone(), "nbf", json!(now + 3600)))
            ),
            "not_yet_valid",
        ),
        (
            "wrong issuer",
            format!(
                "Bearer {}",
                sign(&with(good.clone(), "iss", json!("https://evil.test")))
            ),
            "wrong_issuer",
        ),
        (
            "no issuer",
            format!("Bearer {}", sign(&without(good.clone(), "iss"))),
            "wrong_issuer",
        ),
        (
            "wrong audience",
            format!(
                "Bearer {}",
                sign(&with(good.clone(), "aud", json!("billing")))
            ),
            "wrong_audience",
        ),
        (
            "no audience",
            format!("Bearer {}", sign(&without(good.clone(), "aud"))),
            "wrong_audience",
        ),
        (
            "signed with another secret",
            format!("Bearer {}", hmac(Algorithm::HS256, OTHER_SECRET, &good)),
            "bad_signature",
        ),
        (
            "tampered claims",
            {
                // A valid token whose payload was swapped for one naming another subject.
                let token = token("blue");
                let parts: Vec<&str> = token.split('.').collect();
                let forged = b64url(
                    with(good.clone(), "sub", json!("root"))
                        .to_string()
                        .as_bytes(),
                );
                format!("Bearer {}.{forged}.{}", parts[0], parts[2])
            },
            "bad_signature",
        ),
        (
            "hand-made HS256 header without a signature",
            format!(
                "Bearer {}",
                hand_made(&json!({"alg": "HS256", "typ": "JWT"}), &good, b"")
            ),
            "bad_signature",
        ),
        (
            "alg none",
            format!(
                "Bearer {}",
                hand_made(&json!({"alg": "none", "typ": "JWT"}), &good, b"")
            ),
            "algorithm_not_allowed",
        ),
        (
            "alg None",
            format!(
                "Bearer {}",
                hand_made(&json!({"alg": "None", "typ": "JWT"}), &good, b"")
            ),
            "algorithm_not_allowed",
        ),
        (
            "HS384 when only HS256 is allowed",
            format!("Bearer {}", hmac(Algorithm::HS384, SECRET, &good)),
            "algorithm_not_allowed",
        ),
        (
            "RS256 when only HS256 is allowed",
            format!("Bearer {}", rs256(Header::new(Algorithm::RS256), &good)),
            "algorithm_not_allowed",
        ),
        (
            "Basic credentials",
            "Basic dXNlcjpwYXNz".into(),
            "malformed",
        ),
        ("scheme without token", "Bearer".into(), "malformed"),
        ("not a JWT", "Bearer not-a-jwt".into(), "malformed"),
        ("two segments", "Bearer abc.def".into(), "malformed"),
        (
            "no exp claim",
            format!("Bearer {}", sign(&without(good.clone(), "exp"))),
            "malformed",
        ),
    ];
    for (what, authorization, reason) in &cases {
        let before = auth_counters(&gw);
        let resp = call(&gw, "/api/pay", Some(authorization), &[]);
        assert_invalid_token(&resp, what);
        assert_counted(&gw, &before, reason, what);
    }
    assert_eq!(upstream.count(), 0, "a refused request reached the mock");

    // The control: the same claims, correctly signed, pass.
    let resp = call(
        &gw,
        "/api/pay",
        Some(&format!("Bearer {}", sign(&good))),
        &[],
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(upstream.count(), 1);
}

#[test]
fn clock_skew_within_the_leeway_is_tolerated() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());
    let now = now();
    // leeway_seconds defaults to 30.
    for (what, claims) in [
        ("just expired", with(claims("blue"), "exp", json!(now - 5))),
        ("almost valid", with(claims("blue"), "nbf", json!(now + 5))),
    ] {
        let resp = call(
            &gw,
            "/api/pay",
            Some(&format!("Bearer {}", sign(&claims))),
            &[],
        );
        assert_eq!(resp.status, 200, "{what}: {}", resp.text());
    }
    assert_eq!(upstream.count(), 2);
}

#[test]
fn a_token_for_another_tenant_is_403_tenant_mismatch() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());
    let blue = bearer("blue");
    let before = auth_counters(&gw);

    let resp = get(
        gw.proxy,
        "/api/pay",
        &[("X-Tenant", "green"), ("Authorization", &blue)],
    );
    assert_refused(&resp, 403, "tenant_mismatch", "blue token, green header");
    let resp = get(
        gw.proxy,
        "/api/pay",
        &[("Host", "green.smartpay.com"), ("Authorization", &blue)],
    );
    assert_refused(&resp, 403, "tenant_mismatch", "blue token, green host");

    // A token naming no tenant acts for none.
    let no_tenant = format!("Bearer {}", sign(&without(claims("blue"), "tenant")));
    let resp = call(&gw, "/api/pay", Some(&no_tenant), &[]);
    assert_refused(&resp, 403, "tenant_mismatch", "token without tenant claim");

    assert_eq!(upstream.count(), 0);
    assert_eq!(
        auth_counters(&gw),
        before,
        "a valid token is not an authentication failure"
    );
    // Counted as cross-tenant attempts, which the alert rules watch.
    gw.wait_for_metrics(|m| {
        m.contains(r#"payedge_tenant_rejections_total{reason="cross_tenant"} 3"#)
    });
}

#[test]
fn an_admin_token_does_not_cross_tenants_by_default() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config(&[&upstream]), &env());
    let admin = format!(
        "Bearer {}",
        sign(&with(claims("blue"), "roles", json!(["admin"])))
    );

    let resp = get(
        gw.proxy,
        "/api/pay",
        &[("X-Tenant", "green"), ("Authorization", &admin)],
    );
    assert_refused(
        &resp,
        403,
        "tenant_mismatch",
        "admin token on another tenant",
    );
    assert_eq!(upstream.count(), 0);

    // Its own tenant is fine.
    let resp = call(&gw, "/api/pay", Some(&admin), &[]);
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[test]
fn admin_cross_tenant_lets_admin_tokens_act_for_any_tenant() {
    let upstream = MockUpstream::start("p0");
    let yaml = edit(
        &config(&[&upstream]),
        "  admin_role: admin\n",
        "  admin_role: admin\n  admin_cross_tenant: true\n",
    );
    let gw = Payedge::start(&yaml, &env());

    let admin = format!(
        "Bearer {}",
        sign(&with(claims("blue"), "roles", json!(["admin"])))
    );
    let resp = get(
        gw.proxy,
        "/api/pay",
        &[("X-Tenant", "green"), ("Authorization", &admin)],
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let req = upstream.last();
    assert_eq!(seen(&req, "x-tenant"), ["green"]);
    assert_eq!(seen(&req, "x-auth-subject"), ["user-1"]);
    assert_eq!(seen(&req, "x-auth-roles"), ["admin"]);

    // Roles as a string count too.
    let admin = format!(
        "Bearer {}",
        sign(&with(claims("blue"), "roles", json!("payer admin")))
    );
    let resp = get(
        gw.proxy,
        "/api/pay",
        &[("Host", "green.smartpay.com"), ("Authorization", &admin)],
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(seen(&upstream.last(), "x-tenant"), ["green"]);
    assert_eq!(upstream.count(), 2);

    // Without the admin role nothing changed.
    let resp = get(
        gw.proxy,
        "/api/pay",
        &[("X-Tenant", "green"), ("Authorization", &bearer("blue"))],
    );
    assert_refused(
        &resp,
        403,
        "tenant_mismatch",
        "payer token on another tenant",
    );
    assert_eq!(upstream.count(), 2);
}

#[test]
fn client_sent_identity_headers_never_reach_the_provider() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config_with_public_route(&upstream), &env());
    let spoofed = [
        ("X-Auth-Subject", "root"),
        ("X-Auth-Roles", "admin"),
        ("x-auth-subject", "root2"),
        ("X-AUTH-ROLES", "admin superuser"),
    ];

    // A valid token: the gateway's values replace the client's.
    let resp = call(&gw, "/api/pay", Some(&bearer("blue")), &spoofed);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let req = upstream.last();
    assert_eq!(seen(&req, "x-auth-subject"), ["user-1"]);
    assert_eq!(seen(&req, "x-auth-roles"), ["payer"]);

    // A valid token without sub or roles: no identity header at all.
    let bare = format!(
        "Bearer {}",
        sign(&without(without(claims("blue"), "sub"), "roles"))
    );
    let resp = call(&gw, "/api/pay", Some(&bare), &spoofed);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let req = upstream.last();
    assert_eq!(seen(&req, "x-auth-subject"), Vec::<&str>::new());
    assert_eq!(seen(&req, "x-auth-roles"), Vec::<&str>::new());

    // No token on a path that needs none: the client's claims are dropped.
    let resp = call(&gw, "/public/rates", None, &spoofed);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let req = upstream.last();
    assert_eq!(req.path, "/public/rates");
    assert_eq!(seen(&req, "x-auth-subject"), Vec::<&str>::new());
    assert_eq!(seen(&req, "x-auth-roles"), Vec::<&str>::new());
    assert_eq!(upstream.count(), 3);
}

#[test]
fn a_token_outside_the_required_paths_is_still_verified() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config_with_public_route(&upstream), &env());

    // No token: fine, and nothing about identity is forwarded.
    let resp = call(&gw, "/public/rates", None, &[]);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let req = upstream.last();
    assert_eq!(seen(&req, "x-auth-subject"), Vec::<&str>::new());
    assert_eq!(seen(&req, "x-tenant"), ["blue"]);
    assert_eq!(upstream.count(), 1);

    // A bad token is refused, not ignored.
    let expired = format!(
        "Bearer {}",
        sign(&with(claims("blue"), "exp", json!(now() - 3600)))
    );
    for (what, authorization, reason) in [
        ("expired", expired.as_str(), "expired"),
        (
            "other secret",
            &format!(
                "Bearer {}",
                hmac(Algorithm::HS256, OTHER_SECRET, &claims("blue"))
            ),
            "bad_signature",
        ),
        ("malformed", "Bearer garbage", "malformed"),
    ] {
        let before = auth_counters(&gw);
        let resp = call(&gw, "/public/rates", Some(authorization), &[]);
        assert_invalid_token(&resp, what);
        assert_counted(&gw, &before, reason, what);
    }
    assert_eq!(upstream.count(), 1, "a refused request reached the mock");

    // A valid token is used: identity forwarded, Authorization consumed.
    let resp = call(&gw, "/public/rates", Some(&bearer("blue")), &[]);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let req = upstream.last();
    assert_eq!(seen(&req, "x-auth-subject"), ["user-1"]);
    assert_eq!(seen(&req, "authorization"), Vec::<&str>::new());

    // And the tenant check applies to it too.
    let resp = get(
        gw.proxy,
        "/public/rates",
        &[("X-Tenant", "green"), ("Authorization", &bearer("blue"))],
    );
    assert_refused(&resp, 403, "tenant_mismatch", "blue token on green /public");
    assert_eq!(upstream.count(), 2);
}

#[test]
fn a_percent_encoded_spelling_of_a_required_path_still_needs_a_token() {
    let upstream = MockUpstream::start("p0");
    let yaml = edit(
        &config(&[&upstream]),
        "  required_path_prefixes: [/api]\n",
        "  required_path_prefixes: [/api/payments]\n",
    );
    let gw = Payedge::start(&yaml, &env());

    // The controls: the plain spelling needs a token, a sibling path under the route does not.
    let resp = call(&gw, "/api/payments/charge", None, &[]);
    assert_refused(&resp, 401, "unauthorized", "/api/payments/charge");
    let resp = call(&gw, "/api/rates", None, &[]);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(upstream.count(), 1);

    // %61 is `a`, %70 is `p`, %73 is `s`: RFC 3986 §6.2.2.2 makes these the same URI as the
    // plain spelling, and providers decode them before routing. Refusing them as
    // unauthenticated (401) or as not in normal form (400 path_invalid) are both correct;
    // forwarding them is not.
    // Likewise another case (ASP.NET routes ignore case) and path parameters (`;`, which some
    // servers strip before routing).
    for path in [
        "/api/p%61yments/charge",
        "/api/%70ayments/charge",
        "/api/payment%73",
        "/API/Payments/charge",
        "/api/payments;v=1/charge",
        "/api/payments%3Bx/charge",
    ] {
        let resp = call(&gw, path, None, &[]);
        let code = error_of(&resp)["code"].as_str().unwrap_or("").to_owned();
        assert!(
            matches!(
                (resp.status, code.as_str()),
                (401, "unauthorized") | (400, "path_invalid")
            ),
            "{path} without a token: {} {}",
            resp.status,
            resp.text()
        );
    }
    assert_eq!(
        upstream.count(),
        1,
        "an unauthenticated request for a protected path reached the provider: {:?}",
        upstream.received().last().map(|r| r.path.clone())
    );
}

#[test]
fn without_auth_the_authorization_header_passes_but_identity_headers_do_not() {
    let upstream = MockUpstream::start("p0");
    let yaml = config(&[&upstream]);
    let start = yaml
        .find("auth:\n")
        .expect("the harness configuration has auth");
    let end = yaml
        .find("routes:\n")
        .expect("the harness configuration has routes");
    let yaml = format!("{}{}", &yaml[..start], &yaml[end..]);
    let gw = Payedge::start(&yaml, &env());

    let resp = call(
        &gw,
        "/api/pay",
        Some("Bearer opaque-client-token"),
        &[("X-Auth-Subject", "root"), ("X-Auth-Roles", "admin")],
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let req = upstream.last();
    assert_eq!(seen(&req, "authorization"), ["Bearer opaque-client-token"]);
    assert_eq!(seen(&req, "x-auth-subject"), Vec::<&str>::new());
    assert_eq!(seen(&req, "x-auth-roles"), Vec::<&str>::new());
}

#[test]
fn rs256_with_a_public_key_file_works_end_to_end() {
    let upstream = MockUpstream::start("p0");
    let yaml = edit(
        &config(&[&upstream]),
        HARNESS_KEYS,
        &format!("    algorithms: [RS256]\n    public_key_file: {RSA_PUBLIC_FILE}\n"),
    );
    let gw = Payedge::start(&yaml, &env());

    let valid = rs256(Header::new(Algorithm::RS256), &claims("blue"));
    let resp = call(&gw, "/api/pay", Some(&format!("Bearer {valid}")), &[]);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let req = upstream.last();
    assert_eq!(seen(&req, "x-auth-subject"), ["user-1"]);
    assert_eq!(seen(&req, "x-auth-roles"), ["payer"]);
    assert_eq!(seen(&req, "authorization"), Vec::<&str>::new());

    // Algorithm confusion: an HS256 token keyed with the public key's PEM is refused.
    let public_pem = std::fs::read_to_string(RSA_PUBLIC_FILE).unwrap();
    let mut cases = vec![
        (
            "HS256 keyed with the public key",
            hmac(Algorithm::HS256, &public_pem, &claims("blue")),
            "algorithm_not_allowed",
        ),
        (
            "HS256 with the harness secret",
            token("blue"),
            "algorithm_not_allowed",
        ),
        (
            "ES256",
            sign_with(
                &Header::new(Algorithm::ES256),
                &EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
                &claims("blue"),
            ),
            "algorithm_not_allowed",
        ),
        (
            "RS256, expired",
            rs256(
                Header::new(Algorithm::RS256),
                &with(claims("blue"), "exp", json!(now() - 3600)),
            ),
            "expired",
        ),
    ];
    // A signature made by the right key over other claims.
    let other = rs256(
        Header::new(Algorithm::RS256),
        &with(claims("blue"), "sub", json!("root")),
    );
    let forged = format!(
        "{}.{}",
        valid.rsplit_once('.').unwrap().0,
        other.rsplit_once('.').unwrap().1
    );
    cases.push(("RS256, signature of other claims", forged, "bad_signature"));
    for (what, token, reason) in &cases {
        let before = auth_counters(&gw);
        let resp = call(&gw, "/api/pay", Some(&format!("Bearer {token}")), &[]);
        assert_invalid_token(&resp, what);
        assert_counted(&gw, &before, reason, what);
    }
    assert_eq!(upstream.count(), 1);
}

#[test]
fn jwks_keys_are_picked_by_kid_and_an_unknown_kid_is_refused() {
    let upstream = MockUpstream::start("p0");
    let mut jwk = Jwk::from_encoding_key(
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
        Algorithm::RS256,
    )
    .unwrap();
    jwk.common.key_id = Some("key-2026".into());
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({ "keys": [jwk] }).to_string()).unwrap();
    let yaml = edit(
        &config(&[&upstream]),
        HARNESS_KEYS,
        &format!(
            "    algorithms: [HS256, RS256]\n    secret_env: TEST_JWT_SECRET\n    jwks_file: {}\n",
            jwks.display()
        ),
    );
    let gw = Payedge::start(&yaml, &env());

    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("key-2026".into());
    let resp = call(
        &gw,
        "/api/pay",
        Some(&format!("Bearer {}", rs256(header, &claims("blue")))),
        &[],
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(seen(&upstream.last(), "x-auth-subject"), ["user-1"]);
    // HMAC tokens still work next to the key set.
    let resp = call(&gw, "/api/pay", Some(&bearer("blue")), &[]);
    assert_eq!(resp.status, 200, "{}", resp.text());

    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rotated-away".into());
    let before = auth_counters(&gw);
    let resp = call(
        &gw,
        "/api/pay",
        Some(&format!("Bearer {}", rs256(header, &claims("blue")))),
        &[],
    );
    assert_invalid_token(&resp, "unknown kid");
    assert_counted(&gw, &before, "unknown_key", "unknown kid");
    assert_eq!(upstream.count(), 2);
}

#[test]
fn tokens_never_appear_in_the_logs() {
    let upstream = MockUpstream::start("p0");
    let gw = Payedge::start(&config_with_public_route(&upstream), &env());
    let good = token("blue");
    let bad = hmac(Algorithm::HS256, OTHER_SECRET, &claims("blue"));
    let expired = sign(&with(claims("blue"), "exp", json!(now() - 3600)));

    let query_path = format!("/public/x?access_token={good}&q=1");
    let requests: [(&str, &str, String, &str, u16); 5] = [
        ("log-ok", "/api/pay", format!("Bearer {good}"), "blue", 200),
        ("log-bad", "/api/pay", format!("Bearer {bad}"), "blue", 401),
        (
            "log-expired",
            "/public/x",
            format!("Bearer {expired}"),
            "blue",
            401,
        ),
        (
            "log-mismatch",
            "/api/pay",
            format!("Bearer {good}"),
            "green",
            403,
        ),
        // A token in the query string (as some clients send it) is not logged either.
        ("log-query", &query_path, String::new(), "blue", 200),
    ];
    for (id, path, authorization, tenant, status) in &requests {
        let mut headers = vec![("X-Tenant", *tenant), ("X-Request-Id", *id)];
        if !authorization.is_empty() {
            headers.push(("Authorization", authorization.as_str()));
        }
        let resp = get(gw.proxy, path, &headers);
        assert_eq!(resp.status, *status, "{id}: {}", resp.text());
    }
    for (id, _, _, _, status) in &requests {
        let line = gw.wait_for_log(|l| l["target"] == "payedge::access" && l["request_id"] == *id);
        assert_eq!(line["status"], *status, "{id}: {line}");
    }
    let query_line = gw.wait_for_log(|l| l["request_id"] == "log-query");
    assert_eq!(query_line["path"], "/public/x");

    let stdout = gw.raw_stdout();
    for token in [&good, &bad, &expired] {
        assert!(
            !stdout.contains(token.as_str()),
            "a token is in the logs:\n{stdout}"
        );
        // Not even its signature.
        let signature = token.rsplit_once('.').unwrap().1;
        assert!(
            !stdout.contains(signature),
            "a token signature is in the logs:\n{stdout}"
        );
    }
}
