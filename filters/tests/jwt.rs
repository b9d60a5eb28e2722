//! JWT verification against real signatures: HMAC, RSA and EC keys, JWKS, and the attacks the
//! verifier must refuse.

use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use payedge_filters::auth::{
    AuthFailure, JwtConfigError, JwtSettings, JwtVerifier, Principal, RemoteKeys, may_act_for,
};
use serde_json::{Value, json};

const SECRET: &[u8] = b"test-secret-that-is-at-least-32-bytes-long";
const RSA_PRIVATE: &[u8] = include_bytes!("keys/rsa_private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("keys/rsa_public.pem");
const EC_PRIVATE: &[u8] = include_bytes!("keys/ec_private.pem");
const EC_PUBLIC: &[u8] = include_bytes!("keys/ec_public.pem");

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn settings() -> JwtSettings {
    JwtSettings {
        algorithms: vec![Algorithm::HS256],
        hmac_secret: Some(SECRET.to_vec()),
        public_key_pem: None,
        jwks_json: None,
        remote_keys: false,
        issuer: Some("https://auth.smartpay.test".into()),
        audience: Some("payedge".into()),
        tenant_claim: "tenant".into(),
        roles_claim: "roles".into(),
        leeway_seconds: 30,
    }
}

fn claims() -> Value {
    json!({
        "sub": "user-1",
        "tenant": "blue",
        "roles": ["payer"],
        "iss": "https://auth.smartpay.test",
        "aud": "payedge",
        "iat": now(),
        "exp": now() + 600,
    })
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

fn without(mut base: Value, key: &str) -> Value {
    base.as_object_mut().unwrap().remove(key);
    base
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

fn hs256(claims: &Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(SECRET), claims)
}

fn bearer(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}

fn verify(verifier: &JwtVerifier, token: &str) -> Result<Principal, AuthFailure> {
    verifier.verify_authorization(Some(&bearer(token)))
}

#[test]
fn a_valid_token_yields_its_principal() {
    let v = JwtVerifier::new(&settings()).unwrap();
    let p = verify(&v, &hs256(&claims())).unwrap();
    assert_eq!(p.subject.as_deref(), Some("user-1"));
    assert_eq!(p.tenant.as_deref(), Some("blue"));
    assert_eq!(p.roles, vec!["payer".to_string()]);
    assert!(p.expires_at > now());
}

#[test]
fn space_separated_roles_are_read_too() {
    let v = JwtVerifier::new(&settings()).unwrap();
    let p = verify(&v, &hs256(&with(claims(), "roles", json!("admin payer")))).unwrap();
    assert!(p.has_role("admin") && p.has_role("payer"));
}

#[test]
fn time_claims_are_enforced_with_leeway() {
    let v = JwtVerifier::new(&settings()).unwrap();
    let expired = with(claims(), "exp", json!(now() - 120));
    assert_eq!(verify(&v, &hs256(&expired)), Err(AuthFailure::Expired));
    let within_leeway = with(claims(), "exp", json!(now() - 5));
    assert!(verify(&v, &hs256(&within_leeway)).is_ok());
    let future = with(claims(), "nbf", json!(now() + 300));
    assert_eq!(verify(&v, &hs256(&future)), Err(AuthFailure::NotYetValid));
    let no_exp = without(claims(), "exp");
    assert_eq!(verify(&v, &hs256(&no_exp)), Err(AuthFailure::Malformed));
}

#[test]
fn a_token_accepted_before_is_refused_once_it_expires() {
    let v = JwtVerifier::new(&JwtSettings {
        leeway_seconds: 0,
        ..settings()
    })
    .unwrap();
    let token = hs256(&with(claims(), "exp", json!(now() + 1)));
    assert!(verify(&v, &token).is_ok());
    assert!(
        verify(&v, &token).is_ok(),
        "the second look comes from the cache"
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(verify(&v, &token), Err(AuthFailure::Expired));
}

#[test]
fn a_refused_token_stays_refused_when_presented_again() {
    let v = JwtVerifier::new(&settings()).unwrap();
    let forged = {
        let good = hs256(&claims());
        let (rest, _) = good.rsplit_once('.').unwrap();
        format!("{rest}.{}", "A".repeat(43))
    };
    for _ in 0..3 {
        assert_eq!(verify(&v, &forged), Err(AuthFailure::BadSignature));
    }
}

#[test]
fn issuer_and_audience_are_enforced() {
    let v = JwtVerifier::new(&settings()).unwrap();
    let wrong_iss = with(claims(), "iss", json!("https://evil.test"));
    assert_eq!(
        verify(&v, &hs256(&wrong_iss)),
        Err(AuthFailure::WrongIssuer)
    );
    assert_eq!(
        verify(&v, &hs256(&without(claims(), "iss"))),
        Err(AuthFailure::WrongIssuer)
    );
    let wrong_aud = with(claims(), "aud", json!("someone-else"));
    assert_eq!(
        verify(&v, &hs256(&wrong_aud)),
        Err(AuthFailure::WrongAudience)
    );
    assert_eq!(
        verify(&v, &hs256(&without(claims(), "aud"))),
        Err(AuthFailure::WrongAudience)
    );
}

#[test]
fn a_token_signed_with_another_secret_is_refused() {
    let v = JwtVerifier::new(&settings()).unwrap();
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-that-is-also-32-bytes!!"),
        &claims(),
    );
    assert_eq!(verify(&v, &forged), Err(AuthFailure::BadSignature));
}

#[test]
fn a_tampered_payload_is_refused() {
    use base64::Engine;
    let v = JwtVerifier::new(&settings()).unwrap();
    let token = hs256(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let evil = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&with(claims(), "tenant", json!("green"))).unwrap());
    let tampered = format!("{}.{}.{}", parts[0], evil, parts[2]);
    assert_eq!(verify(&v, &tampered), Err(AuthFailure::BadSignature));
}

#[test]
fn alg_none_is_refused() {
    use base64::Engine;
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let v = JwtVerifier::new(&settings()).unwrap();
    for alg in ["none", "None", "NONE"] {
        let token = format!(
            "{}.{}.",
            b64(&json!({"alg": alg, "typ": "JWT"})),
            b64(&claims())
        );
        assert_eq!(
            verify(&v, &token),
            Err(AuthFailure::AlgorithmNotAllowed),
            "{alg}"
        );
    }
}

#[test]
fn an_algorithm_not_in_the_list_is_refused() {
    let v = JwtVerifier::new(&settings()).unwrap();
    let hs384 = sign(
        Algorithm::HS384,
        &EncodingKey::from_secret(SECRET),
        &claims(),
    );
    assert_eq!(verify(&v, &hs384), Err(AuthFailure::AlgorithmNotAllowed));
}

#[test]
fn rs256_and_es256_verify_with_public_keys() {
    let rsa = JwtVerifier::new(&JwtSettings {
        algorithms: vec![Algorithm::RS256],
        hmac_secret: None,
        public_key_pem: Some(RSA_PUBLIC.to_vec()),
        ..settings()
    })
    .unwrap();
    let token = sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
        &claims(),
    );
    assert_eq!(
        verify(&rsa, &token).unwrap().tenant.as_deref(),
        Some("blue")
    );

    let ec = JwtVerifier::new(&JwtSettings {
        algorithms: vec![Algorithm::ES256],
        hmac_secret: None,
        public_key_pem: Some(EC_PUBLIC.to_vec()),
        ..settings()
    })
    .unwrap();
    let token = sign(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
        &claims(),
    );
    assert_eq!(
        verify(&ec, &token).unwrap().subject.as_deref(),
        Some("user-1")
    );
}

#[test]
fn algorithm_confusion_with_the_public_key_as_hmac_secret_fails() {
    let attack = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(RSA_PUBLIC),
        &claims(),
    );
    let rsa_only = JwtVerifier::new(&JwtSettings {
        algorithms: vec![Algorithm::RS256],
        hmac_secret: None,
        public_key_pem: Some(RSA_PUBLIC.to_vec()),
        ..settings()
    })
    .unwrap();
    assert_eq!(
        verify(&rsa_only, &attack),
        Err(AuthFailure::AlgorithmNotAllowed)
    );

    let both = JwtVerifier::new(&JwtSettings {
        algorithms: vec![Algorithm::HS256, Algorithm::RS256],
        public_key_pem: Some(RSA_PUBLIC.to_vec()),
        ..settings()
    })
    .unwrap();
    assert_eq!(verify(&both, &attack), Err(AuthFailure::BadSignature));
}

#[test]
fn jwks_keys_are_chosen_by_kid() {
    let private = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
    let mut jwk = Jwk::from_encoding_key(&private, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("key-2026".into());
    let jwks = json!({ "keys": [jwk] }).to_string();
    let v = JwtVerifier::new(&JwtSettings {
        algorithms: vec![Algorithm::RS256],
        hmac_secret: None,
        jwks_json: Some(jwks),
        ..settings()
    })
    .unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("key-2026".into());
    let token = jsonwebtoken::encode(&header, &claims(), &private).unwrap();
    assert!(verify(&v, &token).is_ok());
    header.kid = Some("rotated-away".into());
    let token = jsonwebtoken::encode(&header, &claims(), &private).unwrap();
    assert_eq!(verify(&v, &token), Err(AuthFailure::UnknownKey));
}

#[test]
fn malformed_credentials_are_classified() {
    let v = JwtVerifier::new(&settings()).unwrap();
    assert_eq!(v.verify_authorization(None), Err(AuthFailure::Missing));
    for header in [
        &b"Basic dXNlcjpwYXNz"[..],
        b"Bearer",
        b"Bearer ",
        b"Bearer a b",
        b"Bearer not.a.jwt",
        b"Bearer abc",
        b"\xff",
    ] {
        assert_eq!(
            v.verify_authorization(Some(header)),
            Err(AuthFailure::Malformed),
            "{header:?}"
        );
    }
    let token = hs256(&claims());
    assert!(
        v.verify_authorization(Some(format!("bearer  {token}").as_bytes()))
            .is_ok()
    );
    let huge = "a".repeat(9000);
    assert_eq!(v.verify(&huge), Err(AuthFailure::Malformed));
}

#[test]
fn configuration_mistakes_are_found_at_start() {
    let err = |s: JwtSettings| JwtVerifier::new(&s).unwrap_err();
    assert_eq!(
        err(JwtSettings {
            algorithms: vec![],
            ..settings()
        }),
        JwtConfigError::NoAlgorithm
    );
    assert!(matches!(
        err(JwtSettings {
            algorithms: vec![Algorithm::HS256, Algorithm::RS256],
            ..settings()
        }),
        JwtConfigError::MissingKey(Algorithm::RS256, _)
    ));
    assert_eq!(
        err(JwtSettings {
            algorithms: vec![Algorithm::RS256],
            public_key_pem: Some(RSA_PUBLIC.to_vec()),
            ..settings()
        }),
        JwtConfigError::UnusedSecret
    );
    assert_eq!(
        err(JwtSettings {
            hmac_secret: Some(b"short".to_vec()),
            ..settings()
        }),
        JwtConfigError::WeakSecret
    );
    assert_eq!(
        err(JwtSettings {
            algorithms: vec![Algorithm::ES256],
            hmac_secret: None,
            public_key_pem: Some(RSA_PUBLIC.to_vec()),
            ..settings()
        }),
        JwtConfigError::UnusablePublicKey
    );
    assert!(matches!(
        err(JwtSettings {
            algorithms: vec![Algorithm::RS256],
            hmac_secret: None,
            jwks_json: Some(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#.into()),
            ..settings()
        }),
        JwtConfigError::BadJwks(_)
    ));
    assert!(matches!(
        err(JwtSettings {
            algorithms: vec![Algorithm::RS384],
            ..settings()
        }),
        JwtConfigError::UnsupportedAlgorithm(Algorithm::RS384)
    ));
}

#[test]
fn tenant_authorisation() {
    let blue = Principal {
        tenant: Some("blue".into()),
        roles: vec!["payer".into()],
        ..Principal::default()
    };
    assert!(may_act_for(&blue, "blue", Some("admin")));
    assert!(may_act_for(&blue, "BLUE", None));
    assert!(!may_act_for(&blue, "green", Some("admin")));
    let admin = Principal {
        tenant: None,
        roles: vec!["admin".into()],
        ..Principal::default()
    };
    assert!(may_act_for(&admin, "green", Some("admin")));
    assert!(!may_act_for(&admin, "green", None));
    assert!(!may_act_for(&Principal::default(), "blue", None));
}

/// A test-only Ed25519 key (generated with `openssl genpkey -algorithm ed25519`).
const ED25519_PRIVATE: &[u8] = b"-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIFlwgBPziRQCltkyzfxOtdhQUcD/F7LxaL0IXwl6lqSU
-----END PRIVATE KEY-----
";

fn remote_settings(algorithms: Vec<Algorithm>) -> JwtSettings {
    JwtSettings {
        algorithms,
        hmac_secret: None,
        remote_keys: true,
        ..settings()
    }
}

fn signed(alg: Algorithm, kid: &str, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims(), key).unwrap()
}

#[test]
fn remote_keys_rotate_and_ask_for_a_refresh_on_an_unknown_kid() {
    let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
    let ed = EncodingKey::from_ed_pem(ED25519_PRIVATE).unwrap();
    let jwk = |key: &EncodingKey, alg, kid: &str| {
        let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
        jwk.common.key_id = Some(kid.into());
        jwk
    };
    let v = JwtVerifier::new(&remote_settings(vec![
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::EdDSA,
    ]))
    .expect("RS256, PS256 and EdDSA keys may all come from the remote set");
    let remote = RemoteKeys::new();
    let wakes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&wakes);
    remote.set_waker(Box::new(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }));
    v.attach_remote(std::sync::Arc::clone(&remote));

    // Nothing fetched yet: unknown, and a refresh is asked for once however many tokens come.
    let rs = signed(Algorithm::RS256, "k1", &rsa);
    for _ in 0..5 {
        assert_eq!(verify(&v, &rs), Err(AuthFailure::UnknownKey));
    }
    assert_eq!(wakes.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(remote.take_refresh_request());
    assert!(!remote.take_refresh_request());

    // An identity provider's document: signing keys, an encryption key that is skipped.
    let mut enc = jwk(&rsa, Algorithm::RS256, "enc-1");
    enc.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Encryption);
    let doc = json!({"keys": [jwk(&rsa, Algorithm::RS256, "k1"), jwk(&ed, Algorithm::EdDSA, "ed-1"), enc]});
    assert_eq!(remote.replace(&doc.to_string()), Ok(2));
    assert!(verify(&v, &rs).is_ok());
    assert!(verify(&v, &signed(Algorithm::PS256, "k1", &rsa)).is_ok());
    assert!(verify(&v, &signed(Algorithm::EdDSA, "ed-1", &ed)).is_ok());
    // Encryption keys never verify a signature.
    assert_eq!(
        verify(&v, &signed(Algorithm::RS256, "enc-1", &rsa)),
        Err(AuthFailure::UnknownKey)
    );

    // Rotation: k1 is withdrawn. A token verified (and cached) under it is refused now.
    let doc = json!({"keys": [jwk(&ed, Algorithm::EdDSA, "ed-1")]});
    assert_eq!(remote.replace(&doc.to_string()), Ok(1));
    assert_eq!(verify(&v, &rs), Err(AuthFailure::UnknownKey));

    // A document with nothing usable is refused and the set is kept.
    assert!(remote.replace(r#"{"keys":[]}"#).is_err());
    assert!(remote.replace("not json").is_err());
    assert!(verify(&v, &signed(Algorithm::EdDSA, "ed-1", &ed)).is_ok());
    assert_eq!(remote.kids(), vec!["ed-1".to_string()]);
}
