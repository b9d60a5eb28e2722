//! Generated inputs for the decisions that see outside bytes (a first part of issue 17): none
//! panics, and each answer keeps its promise — a tenant is a configured one or a rejection, a
//! path is accepted only in normal form (and so routes as an upstream normalizing it would), a
//! token that is not a valid signature is refused, an
//! idempotency key is accepted only in its syntax and a record survives its encoding.
//!
//! The case budget is proptest's default (256 per property) in `cargo test`; a longer campaign:
//! `PROPTEST_CASES=100000 cargo test -p payedge-filters --test properties`.

use std::sync::Arc;

use jsonwebtoken::Algorithm;
use payedge_filters::auth::{JwtSettings, JwtVerifier};
use payedge_filters::host::parse_host;
use payedge_filters::idempotency::{self, Record};
use payedge_filters::path::check_path;
use payedge_filters::routing::PrefixTable;
use payedge_filters::tenant::{Strategy as Found, TenancySettings, TenantInputs, TenantResolver};
use payedge_filters::triggers::{FieldValue, PathMatch, TriggerRule, TriggerSpec};
use proptest::prelude::*;

const TENANTS: [&str; 3] = ["blue", "green", "acme-pay"];

fn resolver() -> TenantResolver {
    TenantResolver::new(&TenancySettings {
        enabled: true,
        strategies: vec![Found::Host, Found::Header],
        base_domains: vec!["smartpay.com".into()],
        tenants: TENANTS.iter().map(|t| t.to_string()).collect(),
        default_tenant: "default".into(),
    })
}

/// Hosts and tenant headers an attacker would try: configured names in odd case, with ports,
/// trailing dots, other domains, IDNA, percent signs, control bytes, IPv6 literals — and any
/// bytes at all.
fn hostile_text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80),
        "(blue|BLUE|Green|acme-pay|xn--bl-eka|blue\\.|\\.blue|b%6Cue|blue\u{0}|blue )"
            .prop_map(String::into_bytes),
        "(blue|green|acme-pay|evil)\\.(smartpay\\.com|SMARTPAY\\.COM|smartpay\\.com\\.|evil\\.com|smartpay\\.com\\.evil\\.com)(:[0-9]{1,6})?"
            .prop_map(String::into_bytes),
        "\\[[0-9a-f:]{0,40}\\](:[0-9]{0,6})?".prop_map(String::into_bytes),
    ]
}

proptest! {
    #[test]
    fn a_tenant_from_any_input_is_a_configured_one_or_a_rejection(
        host in proptest::option::of(hostile_text()),
        header in proptest::option::of(hostile_text()),
    ) {
        let resolver = resolver();
        let inputs = TenantInputs { host: host.as_deref(), header: header.as_deref() };
        if let Ok(tenant) = resolver.resolve(inputs) {
            prop_assert!(TENANTS.contains(&&*tenant.name), "{}", tenant.name);
        }
    }

    #[test]
    fn parsing_any_host_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_host(&raw);
    }

    #[test]
    fn an_accepted_path_routes_as_its_normalized_form(
        segments in proptest::collection::vec(
            prop::sample::select(vec![
                "api", "fx", "quote", "payments", "admin", "internal", ".", "..", "", "%2e",
                "%2E%2e", "%61pi", "API", "fx%2fquote", "x;y",
            ]),
            0..8,
        ),
        trailing in any::<bool>(),
    ) {
        let mut path = format!("/{}", segments.join("/"));
        if trailing {
            path.push('/');
        }
        // Routes as a provider or a case-insensitive upstream would resolve the path.
        let routes = PrefixTable::new_ignoring_case(
            ["/api/fx", "/api/payments", "/admin", "/internal"]
                .into_iter()
                .map(|p| (p.to_string(), p)),
        );
        if check_path(&path).is_ok() {
            let normal = normalize(&path);
            prop_assert_eq!(
                routes.lookup(&path).map(|(_, r)| *r),
                routes.lookup(&normal).map(|(_, r)| *r),
                "{:?} normalizes to {:?}", path, normal
            );
        }
    }

    #[test]
    fn an_accepted_path_is_already_in_normal_form(
        path in prop_oneof![
            "(/[a-zA-Z0-9._~%;\\\\-]{0,12}){0,6}/?",
            any::<String>(),
        ]
    ) {
        if check_path(&path).is_ok() {
            prop_assert!(path.starts_with('/'), "{path:?}");
            for segment in path.split('/').skip(1) {
                prop_assert!(segment != "." && segment != "..", "{path:?}");
            }
            prop_assert!(!path.contains("//"), "{path:?}");
            prop_assert!(!path.contains('\\'), "{path:?}");
            let lower = path.to_ascii_lowercase();
            for encoded in ["%2f", "%5c", "%00", "%2e"] {
                prop_assert!(!lower.contains(encoded), "{path:?}");
            }
        }
    }

    #[test]
    fn no_forged_or_malformed_token_is_accepted(
        header in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..400),
            "Bearer [A-Za-z0-9_=.-]{0,300}".prop_map(String::into_bytes),
            // A well-formed header and claims of any JSON shape, with a made-up signature.
            (any::<String>(), any::<String>()).prop_map(|(h, c)| {
                use base64::Engine;
                let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                format!("Bearer {}.{}.c2ln", b64.encode(h), b64.encode(c)).into_bytes()
            }),
            (0u64..u64::MAX, "[a-z]{0,8}").prop_map(|(exp, tenant)| {
                use base64::Engine;
                let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                let header = b64.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
                let claims = b64.encode(format!(
                    r#"{{"exp":{exp},"tenant":"{tenant}","tenant":"blue","roles":[1,{{}}]}}"#
                ));
                format!("Bearer {header}.{claims}.AAAA").into_bytes()
            }),
        ]
    ) {
        let verifier = verifier();
        prop_assert!(verifier.verify_authorization(Some(&header)).is_err());
    }

    #[test]
    fn an_accepted_idempotency_key_has_the_syntax(
        values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..3)
    ) {
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        if let Ok(key) = idempotency::parse_key(&refs) {
            prop_assert_eq!(refs.len(), 1);
            prop_assert!((1..=idempotency::MAX_KEY_LEN).contains(&key.len()));
            prop_assert!(key.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\'));
        }
    }

    #[test]
    fn a_stored_response_survives_its_encoding(
        status in 100u16..600,
        headers in proptest::collection::vec(("[a-z-]{1,20}", "[ -~]{0,40}"), 0..8),
        body in proptest::collection::vec(any::<u8>(), 0..2000),
        fingerprint in "[0-9a-f]{64}",
    ) {
        let record = Record::completed(fingerprint.clone(), status, headers.clone(), &body);
        let decoded = Record::decode(&record.encode());
        prop_assert_eq!(decoded.as_ref(), Some(&record));
        match idempotency::decide(&record, &fingerprint, 0) {
            idempotency::Decision::Replay(replay) => {
                prop_assert_eq!(replay.status, status);
                prop_assert_eq!(replay.headers, headers);
                prop_assert_eq!(replay.body, body);
            }
            other => prop_assert!(false, "{other:?}"),
        }
    }

    #[test]
    fn extracting_fields_from_any_body_never_panics(
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..400),
            // JSON of any shape: nested arrays and objects, numbers, escapes, truncated.
            (r#"[\[\{"a-z0-9:,.\\ \]\}eE+-]{0,300}"#, 0usize..300).prop_map(|(text, cut)| {
                let text = format!(r#"{{"id":{text}"#);
                text.as_bytes()[..cut.min(text.len())].to_vec()
            }),
            (1usize..3000).prop_map(|depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()),
        ]
    ) {
        let _ = trigger().extract(&body);
    }

    #[test]
    fn extracted_fields_are_what_a_parsed_document_holds_at_each_pointer(
        document in json_value(),
        pointers in proptest::collection::vec(json_pointer(), 1..6),
        pretty in any::<bool>(),
    ) {
        let fields: Vec<(String, String)> = pointers
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("f{i}"), p.clone()))
            .collect();
        let rule = TriggerRule::new(TriggerSpec {
            fields,
            required: vec![],
            ..trigger_spec()
        })
        .unwrap();
        let text = if pretty {
            serde_json::to_string_pretty(&document).unwrap()
        } else {
            serde_json::to_string(&document).unwrap()
        };
        let got = rule.extract(text.as_bytes()).unwrap();
        let expected: Vec<(String, serde_json::Value)> = pointers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((format!("f{i}"), document.pointer(p).filter(|v| !v.is_null())?.clone())))
            .collect();
        prop_assert_eq!(got.len(), expected.len(), "{:?} in {}", pointers, text);
        for ((name, value), (want_name, want)) in got.iter().zip(&expected) {
            prop_assert_eq!(name, want_name);
            let as_json = match value {
                FieldValue::String(s) => serde_json::Value::String(s.to_string()),
                FieldValue::Bool(b) => serde_json::Value::Bool(*b),
                FieldValue::Decimal(d) => serde_json::from_str(&d.to_string()).unwrap(),
                FieldValue::Number(n) | FieldValue::Json(n) => serde_json::from_str(n).unwrap(),
            };
            prop_assert_eq!(&as_json, want, "{} in {}", name, text);
        }
    }

    #[test]
    fn a_record_is_encoded_as_serde_writes_it(record in any_record()) {
        // Instances of two versions share a store: what one writes the other must read, and the
        // hand-written encoding is held to serde's bytes.
        prop_assert_eq!(record.encode(), serde_json::to_string(&record).unwrap());
        prop_assert_eq!(Record::decode(&record.encode()), Some(record));
    }

    #[test]
    fn decoding_any_text_as_a_record_never_panics(text in any::<String>()) {
        let _ = Record::decode(&text);
    }
}

fn verifier() -> Arc<JwtVerifier> {
    static VERIFIER: std::sync::OnceLock<Arc<JwtVerifier>> = std::sync::OnceLock::new();
    Arc::clone(VERIFIER.get_or_init(|| {
        Arc::new(
            JwtVerifier::new(&JwtSettings {
                algorithms: vec![Algorithm::HS256],
                hmac_secret: Some(b"property-test-secret-that-is-long-enough".to_vec()),
                public_key_pem: None,
                jwks_json: None,
                remote_keys: false,
                issuer: None,
                audience: None,
                tenant_claim: "tenant".into(),
                roles_claim: "roles".into(),
                leeway_seconds: 0,
            })
            .unwrap(),
        )
    }))
}

/// Any JSON document of a few levels, its member names from a small set (so pointers meet them),
/// with escapes in strings and names.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        r#"[a-z"\\é/~]{0,6}"#.prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec(
                (
                    prop::sample::select(vec!["a", "b", "0", "1", "a/b", "m~n", "\"q"]),
                    inner
                ),
                0..5
            )
            .prop_map(|members| Value::Object(
                members
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect()
            )),
        ]
    })
}

/// A pointer over `json_value`'s names and indexes (RFC 6901 escapes included).
fn json_pointer() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop::sample::select(vec!["a", "b", "0", "1", "01", "a~1b", "m~0n", "\"q", "-"]),
        0..4,
    )
    .prop_map(|tokens| tokens.iter().map(|t| format!("/{t}")).collect())
}

fn trigger_spec() -> TriggerSpec {
    TriggerSpec {
        name: "paid".into(),
        event: "payment.processed".into(),
        method: Some("POST".into()),
        path: PathMatch::Exact("/api/payments".into()),
        statuses: vec![200],
        require_json: true,
        fields: vec![],
        required: vec![],
        max_body_bytes: 65536,
    }
}

fn trigger() -> TriggerRule {
    TriggerRule::new(TriggerSpec {
        fields: vec![
            ("id".into(), "/id".into()),
            ("amount".into(), "/amount".into()),
            ("deep".into(), "/id/0/a/1".into()),
        ],
        required: vec!["id".into()],
        ..trigger_spec()
    })
    .unwrap()
}

/// RFC 3986 normalization as an upstream would apply it: unreserved percent-escapes decoded,
/// empty segments collapsed, dot segments removed (§5.2.4).
fn normalize(path: &str) -> String {
    let mut decoded = String::new();
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&path[i + 1..i + 3], 16)
            && (b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        {
            decoded.push(b as char);
            i += 3;
            continue;
        }
        decoded.push(bytes[i] as char);
        i += 1;
    }
    let mut out: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// Any record, its strings of any text (escapes, control characters and non-ASCII included).
fn any_record() -> impl Strategy<Value = Record> {
    let text = || {
        prop_oneof![
            "[ -~]{0,40}",
            "\\PC{0,20}",
            "[a-z\"\\\\\\x00-\\x1f\\u{7f}-\\u{a0}]{0,20}"
        ]
    };
    prop_oneof![
        (text(), any::<u64>(), text()).prop_map(|(fingerprint, deadline_ms, request_id)| {
            Record::InFlight {
                fingerprint,
                deadline_ms,
                request_id,
            }
        }),
        (
            text(),
            any::<u16>(),
            proptest::collection::vec((text(), text()), 0..5),
            text()
        )
            .prop_map(|(fingerprint, status, headers, body)| Record::Completed {
                fingerprint,
                status,
                headers,
                body
            }),
        (text(), proptest::option::of(text())).prop_map(|(fingerprint, provider)| {
            Record::Unknown {
                fingerprint,
                provider,
            }
        }),
        (text(), any::<u16>()).prop_map(|(fingerprint, status)| Record::NotStored {
            fingerprint,
            status
        }),
    ]
}
