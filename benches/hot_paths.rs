//! Micro-benchmarks of the per-request decisions: the request head's checks, provider selection,
//! tenant resolution, JWT verification, trigger extraction, and the hub's SignalR framing.
//!
//!     cargo bench --bench hot_paths
//!
//! `cargo test --all-targets` runs each once (criterion's test mode), so none can rot.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use payedge_filters::auth::{JwtSettings, JwtVerifier, MintClaims, mint_hmac};
use payedge_filters::tenant::{Strategy, TenancySettings, TenantInputs, TenantResolver};
use payedge_upstreams::{Cost, Outcome, Pool, PoolPolicy, ProviderSpec, Selection, TriedSet};
use rust_decimal::Decimal;

fn ten_providers() -> Pool {
    let specs = (0..10)
        .map(|i| ProviderSpec {
            name: format!("p{i}"),
            address: format!("127.0.0.1:{}", 9000 + i),
            weight: 1 + i as u32,
            cost: Cost {
                percent: Decimal::new(15 + i, 1),
                fixed: Decimal::new(10, 2),
            },
            currencies: if i % 2 == 0 {
                vec!["EUR".into(), "USD".into()]
            } else {
                vec!["EUR".into()]
            },
            tenants: Vec::new(),
        })
        .collect();
    let pool = Pool::new("cards", specs, PoolPolicy::default()).expect("valid pool");
    let now = Instant::now();
    for p in 0..10 {
        pool.record(
            p,
            Outcome::Answered(200),
            Duration::from_millis(5 + p as u64),
            now,
        );
    }
    pool.refresh();
    pool
}

fn selection(c: &mut Criterion) {
    let pool = ten_providers();
    c.bench_function("select among 10 providers", |b| {
        b.iter(|| {
            pool.select(black_box(&Selection {
                tenant: "blue",
                currency: None,
                tried: TriedSet::default(),
            }))
        })
    });
    c.bench_function("select among 10 providers by currency", |b| {
        b.iter(|| {
            pool.select(black_box(&Selection {
                tenant: "blue",
                currency: Some("USD"),
                tried: TriedSet::default(),
            }))
        })
    });
    c.bench_function("record an outcome", |b| {
        let now = Instant::now();
        b.iter(|| {
            pool.record(
                black_box(3),
                Outcome::Answered(200),
                Duration::from_millis(7),
                now,
            )
        })
    });
}

fn tenancy(c: &mut Criterion) {
    let resolver = TenantResolver::new(&TenancySettings {
        enabled: true,
        strategies: vec![Strategy::Host, Strategy::Header],
        base_domains: vec!["smartpay.com".into()],
        tenants: (0..50)
            .map(|i| format!("tenant{i}"))
            .chain(["blue".into()])
            .collect(),
        default_tenant: "default".into(),
    });
    c.bench_function("resolve tenant from Host", |b| {
        b.iter(|| {
            resolver.resolve(black_box(TenantInputs {
                host: Some(b"blue.smartpay.com:8080"),
                header: None,
            }))
        })
    });
    c.bench_function("resolve tenant from header", |b| {
        b.iter(|| {
            resolver.resolve(black_box(TenantInputs {
                host: Some(b"127.0.0.1:8080"),
                header: Some(b"blue"),
            }))
        })
    });
}

fn jwt(c: &mut Criterion) {
    let secret = b"benchmark-secret-that-is-long-enough-for-hs256".to_vec();
    let settings = JwtSettings {
        algorithms: vec![jsonwebtoken::Algorithm::HS256],
        hmac_secret: Some(secret.clone()),
        public_key_pem: None,
        jwks_json: None,
        remote_keys: false,
        issuer: Some("bench".into()),
        audience: Some("payedge".into()),
        tenant_claim: "tenant".into(),
        roles_claim: "roles".into(),
        leeway_seconds: 30,
    };
    let verifier = JwtVerifier::new(&settings).expect("valid settings");
    let now = jsonwebtoken::get_current_timestamp();
    let claims = MintClaims {
        sub: "user".into(),
        tenant_claim: "tenant".into(),
        tenant: Some("blue".into()),
        roles_claim: "roles".into(),
        roles: vec!["payer".into()],
        iss: Some("bench".into()),
        aud: Some("payedge".into()),
        iat: now,
        exp: now + 3600,
    };
    let token = mint_hmac(jsonwebtoken::Algorithm::HS256, &secret, &claims).expect("token");
    let header = format!("Bearer {token}");
    let verified = verifier.verify_authorization(Some(header.as_bytes()));
    assert!(
        verified.is_ok(),
        "the benchmark token must verify: {verified:?}"
    );
    c.bench_function("verify an HS256 bearer token seen before", |b| {
        b.iter(|| verifier.verify_authorization(black_box(Some(header.as_bytes()))))
    });
    let mut n = 0u64;
    c.bench_function("verify an HS256 bearer token seen first", |b| {
        b.iter_batched(
            || {
                n += 1;
                let claims = MintClaims {
                    sub: format!("user-{n}"),
                    ..claims.clone()
                };
                let token = mint_hmac(jsonwebtoken::Algorithm::HS256, &secret, &claims);
                format!("Bearer {}", token.expect("token"))
            },
            |header| verifier.verify_authorization(Some(header.as_bytes())),
            criterion::BatchSize::SmallInput,
        )
    });
}

fn signalr(c: &mut Criterion) {
    use payedge::hub::protocol::{Framer, event_invocation, parse};
    let invocation =
        br#"{"type":1,"invocationId":"7","target":"JoinTenantGroup","arguments":["blue"]}"#;
    let mut batch = Vec::new();
    for _ in 0..4 {
        batch.extend_from_slice(br#"{"type":6}"#);
        batch.push(0x1e);
        batch.extend_from_slice(invocation);
        batch.push(0x1e);
    }
    c.bench_function("frame 8 SignalR messages from one text frame", |b| {
        let mut framer = Framer::new(32 * 1024);
        b.iter(|| framer.push(black_box(&batch)))
    });
    let (first, second) = batch.split_at(batch.len() / 2 + 3);
    c.bench_function("frame SignalR messages split across two frames", |b| {
        let mut framer = Framer::new(32 * 1024);
        b.iter(|| {
            let a = framer.push(black_box(first));
            (a, framer.push(black_box(second)))
        })
    });
    c.bench_function("parse a SignalR invocation", |b| {
        b.iter(|| parse(black_box(invocation)))
    });
    let envelope = r#"{"specversion":"1.0","id":"01a2185d-a95e-7570-8309-8cd45c327cfe","source":"payedge/bench","type":"fx.quote.created","time":"2026-11-26T15:00:00Z","tenant":"blue","data":{"quoteId":"fxq_1","fromCurrency":"USD","toCurrency":"GBP","amount":"1000.10","rate":"0.7892"}}"#;
    c.bench_function("encode an event as a SignalR invocation", |b| {
        b.iter(|| event_invocation(black_box("fx.quote.created"), black_box(envelope)))
    });
}

fn trigger(c: &mut Criterion) {
    use payedge::events::{Event, FieldMap};
    use payedge_filters::triggers::{PathMatch, TriggerRule, TriggerSpec};
    let rule = TriggerRule::new(TriggerSpec {
        name: "fx-quote-created".into(),
        event: "fx.quote.created".into(),
        method: Some("POST".into()),
        path: PathMatch::Exact("/api/fx/quote".into()),
        statuses: vec![200, 201],
        require_json: true,
        fields: [
            ("quoteId", "/id"),
            ("fromCurrency", "/from"),
            ("toCurrency", "/to"),
            ("amount", "/amount"),
            ("rate", "/rate"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        required: vec!["quoteId".into(), "amount".into()],
        max_body_bytes: 65_536,
    })
    .expect("valid rule");
    let body = br#"{"id":"fxq_01a2185da95e757083098cd5f63691f8","from":"USD","to":"GBP","amount":1000.10,"rate":"0.7892","converted_amount":"789.28","expires_at":"2026-11-26T15:00:00Z"}"#;
    c.bench_function("extract a quote's fields", |b| {
        b.iter(|| rule.extract(black_box(body)))
    });
    let fields = rule.extract(body).expect("fields");
    let tenant: std::sync::Arc<str> = "blue".into();
    c.bench_function("build a quote's CloudEvent", |b| {
        b.iter(|| {
            Event::new(
                "payedge/bench",
                "fx.quote.created",
                Some(tenant.clone()),
                Some("01a2185d-a95e-7570-8309-8cd45c327cfe".into()),
                &FieldMap(black_box(&fields)),
            )
        })
    });
}

/// A quote's captured answer to its published event, everything the proxy thread does for it
/// in the measured configuration: extraction, the CloudEvent, the business log line, the
/// counters and the in-memory history (nobody listening, as in `benches/run.sh`'s
/// `payedge-trig`).
fn trigger_pipeline(c: &mut Criterion) {
    use payedge::events::{EventMetrics, TriggerHit};
    let yaml = r#"
tenancy: { strategy: header, tenants: [blue] }
auth: { jwt: { algorithms: [HS256], secret_env: BENCH_JWT_SECRET } }
analytics: { enabled: true }
triggers:
  - name: fx-quote-created
    event: fx.quote.created
    match: { method: POST, path: /api/fx/quote, status: [201] }
    fields: { quoteId: /id, fromCurrency: /from, toCurrency: /to, amount: /amount, rate: /rate }
    required: [quoteId, amount]
routes: [{ path_prefix: /api/fx, pool: fx }]
pools: { fx: { providers: [{ name: fx-a, address: "127.0.0.1:9" }] } }
"#;
    let secret = |name: &str| {
        (name == "BENCH_JWT_SECRET")
            .then(|| "benchmark-secret-that-is-long-enough-0123456789".into())
    };
    let config = payedge::config::validate_text(std::path::Path::new("bench.yaml"), yaml, &secret)
        .expect("valid configuration");
    let metrics = EventMetrics::register(&["fx-quote-created"]).expect("metrics");
    let (sink, _service) = payedge::events::build(&config, Some(std::sync::Arc::new(metrics)));
    let body = bytes::Bytes::from_static(
        br#"{"id":"fxq_01a2185da95e757083098cd5f63691f8","from":"USD","to":"GBP","amount":1000.10,"rate":"0.7892","converted_amount":"789.28","expires_at":"2026-11-26T15:00:00Z"}"#,
    );
    let tenant: std::sync::Arc<str> = "blue".into();
    let hit = || TriggerHit {
        triggers: 1,
        body: body.clone(),
        too_large: false,
        encoding: None,
        tenant: tenant.clone(),
        request_id: "01a2185d-a95e-7570-8309-8cd45c327cfe",
        provider: Some("fx-a"),
        idempotency_key: None,
    };
    sink.process(&hit(), &config.triggers);
    let history = sink.local_history().expect("in-memory bus");
    match history.resume("blue", payedge::events::StreamId::START) {
        payedge::events::Recovery::Recovered { entries, .. } => {
            assert_eq!(entries.len(), 1, "the answer made one event");
            assert!(
                entries[0]
                    .json
                    .contains(r#""quoteId":"fxq_01a2185da95e757083098cd5f63691f8""#)
            );
        }
        other => panic!("no event in the history: {other:?}"),
    }
    c.bench_function("publish a quote's event (whole trigger path)", |b| {
        b.iter(|| sink.process(black_box(&hit()), &config.triggers))
    });
}

/// The checks on every request head before anything reads it (size, header count, one body
/// length, Host on HTTP/1.1), over the headers of a keyed payment as a client sends them.
fn request_head(c: &mut Criterion) {
    use payedge_filters::request_head::{HeadLimits, check};
    let headers: Vec<(&str, &[u8])> = vec![
        ("Host", b"edge.smartpay.com"),
        ("User-Agent", b"curl/7.88.1"),
        ("Accept", b"*/*"),
        ("X-Tenant", b"blue"),
        ("Authorization", &[b'x'; 180]),
        ("Idempotency-Key", b"7f1c2b9e-4a51-4c1e-9d4e-2f0b6f3c8a10"),
        ("Content-Type", b"application/json"),
        ("Content-Length", b"36"),
    ];
    let limits = HeadLimits::default();
    c.bench_function("check a request head", |b| {
        b.iter(|| check(&limits, 32, black_box(headers.iter().copied()), true))
    });
}

criterion_group!(
    benches,
    request_head,
    selection,
    tenancy,
    jwt,
    trigger,
    trigger_pipeline,
    signalr
);
criterion_main!(benches);
