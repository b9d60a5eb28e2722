//! The operations console on the admin port, in real browsers (headless Chromium and Firefox ESR
//! driven by puppeteer-core) and over plain HTTP: its files come with a strict Content-Security-Policy and
//! hold nothing; a tenant's token and a bad token are refused with a clear message; an operator
//! sees both pools' providers healthy, a killed connector shown ejected within 3 s, a
//! quote and an operator's alert arrive in the live feed, and the traffic charts fill in. A
//! screenshot of each is left in target/tmp (console.png, console-firefox.png).

mod common;

use std::time::{Duration, Instant};

use common::browser::{Browser, Engine};
use common::hub::quote;
use common::provider::ProviderProcess;
use common::*;

/// Two pools like the demo's: fx (a quote service) and cards with two connector processes, one
/// refused connection enough to eject one for 30 s.
fn console_config(fx: &MockUpstream, acme: &ProviderProcess, globex: &ProviderProcess) -> String {
    format!(
        r#"
server:
  grace_period_seconds: 5
tenancy:
  strategy: [header]
  tenants: [blue, green]
auth:
  jwt:
    algorithms: [HS256]
    secret_env: TEST_JWT_SECRET
    issuer: {ISSUER}
    audience: {AUDIENCE}
  required_path_prefixes: [/api]
  admin_role: admin
notifications:
  enabled: true
  provider: in_memory
triggers:
  - name: fx-quote-created
    event: fx.quote.created
    match: {{ method: POST, path: /api/fx/quote, status: [200, 201] }}
    fields: {{ quoteId: /id, amount: /amount }}
    required: [quoteId, amount]
routes:
  - path_prefix: /api/fx
    pool: fx
  - path_prefix: /api/payments
    pool: cards
pools:
  fx:
    providers:
      - name: fx-rates
        address: {fx}
  cards:
    outlier:
      consecutive_failures: 1
      base_ejection_ms: 30000
    providers:
      - name: cards-acme
        address: {acme}
        weight: 3
      - name: cards-globex
        address: {globex}
        weight: 1
"#,
        fx = fx.addr,
        acme = acme.addr,
        globex = globex.addr,
    )
}

fn sign_in(browser: &mut Browser, token: &str) {
    browser.eval(&format!(
        "(() => {{ document.querySelector('#token').value = {}; \
         document.querySelector('#sign-in-form').requestSubmit(); return true; }})()",
        serde_json::to_string(token).unwrap()
    ));
}

fn text_of(browser: &mut Browser, selector: &str) -> String {
    browser
        .eval(&format!(
            "document.querySelector({})?.textContent ?? ''",
            serde_json::to_string(selector).unwrap()
        ))
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn in_chromium_an_operator_watches_providers_traffic_and_events_and_a_tenant_is_refused() {
    operator_session(Engine::Chromium);
}

#[test]
fn in_firefox_an_operator_watches_providers_traffic_and_events_and_a_tenant_is_refused() {
    operator_session(Engine::Firefox);
}

fn operator_session(engine: Engine) {
    let fx = fx_quote_provider();
    let acme = ProviderProcess::start("cards-acme");
    let mut globex = ProviderProcess::start("cards-globex");
    let gw = Payedge::start(&console_config(&fx, &acme, &globex), &env());
    let mut browser = Browser::open_in(engine, &format!("http://{}/", gw.admin));

    // A tenant's own token is valid but not an operator's.
    sign_in(&mut browser, &token("blue"));
    browser.wait_until(
        "the refusal of a tenant token",
        "document.querySelector('#sign-in-error').textContent.includes('does not hold the admin role')",
        Duration::from_secs(10),
    );
    assert_eq!(
        browser.eval("document.querySelector('#console').hidden"),
        true
    );
    assert_eq!(browser.eval("sessionStorage.length"), 0);
    // Nor is a token this payedge did not sign.
    sign_in(&mut browser, "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl");
    browser.wait_until(
        "the refusal of a bad token",
        "document.querySelector('#sign-in-error').textContent.includes('not accepted')",
        Duration::from_secs(10),
    );

    let admin = admin_bearer();
    let admin = admin.strip_prefix("Bearer ").unwrap();
    sign_in(&mut browser, admin);
    browser.wait_until(
        "both pools' providers, healthy",
        "[...document.querySelectorAll('#pools tr[data-provider]')].map(r => r.dataset.provider + '=' + r.dataset.state).join(',') \
         === 'cards/cards-acme=admitted,cards/cards-globex=admitted,fx/fx-rates=admitted'",
        Duration::from_secs(10),
    );
    assert_eq!(
        browser.eval("sessionStorage.getItem('payedge.adminToken') !== null"),
        true
    );
    assert!(text_of(&mut browser, "#config dd[data-key='SHA-256']").len() == 64);
    assert_eq!(
        text_of(&mut browser, "#config dd[data-key='Last reload']"),
        "none since start"
    );

    // A quote for blue (the feed's first tenant) and an operator's alert, live in the feed.
    browser.wait_until(
        "the feed joined to blue",
        "document.querySelector('#feed-state').textContent === 'live: blue'",
        Duration::from_secs(10),
    );
    quote(&gw, "blue", "console-quote-1");
    browser.wait_until(
        "the quote in the feed",
        "document.querySelector('#feed li[data-type=\"fx.quote.created\"][data-correlation=\"console-quote-1\"]') !== null",
        Duration::from_secs(10),
    );
    let alert = request(
        gw.admin,
        "POST",
        "/admin/alerts",
        &[
            ("Authorization", &admin_bearer()),
            ("Content-Type", "application/json"),
        ],
        br#"{"code":"maintenance","message":"cards-globex maintenance at 02:00"}"#,
    )
    .unwrap();
    assert_eq!(alert.status, 202, "{}", alert.text());
    browser.wait_until(
        "the alert, highlighted",
        "document.querySelector('#feed li.alert[data-type=\"system.alert\"]')?.textContent.includes('maintenance at 02:00') === true",
        Duration::from_secs(10),
    );

    // The traffic charts: blue's requests and the fx route appear once two samples exist.
    browser.wait_until(
        "blue's requests in the chart legend",
        "Number(document.querySelector('#legend-tenant-requests li[data-series=\"blue\"]')?.dataset.last ?? -1) >= 0 \
         && document.querySelector('#legend-route-requests li[data-series=\"/api/fx\"]') !== null",
        Duration::from_secs(15),
    );

    // A connector dies; payments go on (the one sent to it fails over to acme) and it is
    // ejected: the console shows it within 3 s, with the time its ejection has left.
    globex.kill();
    let killed = Instant::now();
    let green = bearer("green");
    let paid = Instant::now();
    while globex_ejected(&gw).is_none() {
        let payment = request(
            gw.proxy,
            "POST",
            "/api/payments",
            &[("X-Tenant", "green"), ("Authorization", &green)],
            br#"{"amount":"25.00","currency":"EUR"}"#,
        )
        .unwrap();
        assert_eq!(payment.status, 200, "{}", payment.text());
        assert!(
            paid.elapsed() < Duration::from_secs(10),
            "cards-globex never tried"
        );
    }
    browser.wait_until(
        "cards-globex shown ejected",
        "document.querySelector('#pools tr[data-provider=\"cards/cards-globex\"]')?.dataset.state === 'ejected' \
         && document.querySelector('#pools tr[data-provider=\"cards/cards-globex\"] td:nth-child(3)').textContent.endsWith(' s')",
        Duration::from_secs(3).saturating_sub(killed.elapsed()),
    );
    eprintln!(
        "cards-globex shown ejected {:?} after its kill",
        killed.elapsed()
    );
    assert_eq!(
        browser.eval(
            "document.querySelector('#pools tr[data-provider=\"cards/cards-acme\"]').dataset.state"
        ),
        "admitted"
    );

    // Readable on a laptop: nothing wider than the 1366-pixel window.
    assert_eq!(
        browser.eval("document.documentElement.scrollWidth <= window.innerWidth"),
        true,
        "the console scrolls sideways"
    );
    let name = match engine {
        Engine::Chromium => "console.png",
        Engine::Firefox => "console-firefox.png",
    };
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    browser.screenshot(&shot);
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    eprintln!("screenshot: {}", shot.display());

    // The policy held (no violation reported) and the page raised no error.
    let lines = browser.lines();
    let broken: Vec<_> = lines
        .iter()
        .filter(|l| {
            l["event"] == "pageerror"
                || (l["event"] == "console_error"
                    && ["Content Security Policy", "Content-Security-Policy"]
                        .iter()
                        .any(|csp| l["text"].as_str().unwrap_or("").contains(csp)))
        })
        .collect();
    assert!(broken.is_empty(), "{broken:?}");
    // The token travelled in headers and the hub's query, never into payedge's logs.
    let logs = format!("{}{}", gw.raw_stdout(), gw.raw_stderr());
    assert!(!logs.contains(admin), "the admin token reached the logs");

    // Signing out forgets the token.
    browser.eval("document.querySelector('#sign-out').click()");
    assert_eq!(browser.eval("sessionStorage.length"), 0);
    assert_eq!(
        browser.eval("document.querySelector('#console').hidden"),
        true
    );
}

/// Whether the pool has ejected cards-globex (from the admin endpoint the console reads).
fn globex_ejected(gw: &Payedge) -> Option<()> {
    let body = get(
        gw.admin,
        "/admin/providers",
        &[("Authorization", &admin_bearer())],
    );
    let providers: serde_json::Value = serde_json::from_slice(&body.body).ok()?;
    providers["pools"]
        .as_array()?
        .iter()
        .flat_map(|p| p["providers"].as_array().into_iter().flatten())
        .find(|p| p["name"] == "cards-globex" && p["state"] == "ejected")
        .map(|_| ())
}

#[test]
fn the_console_files_are_public_and_strict_and_its_data_is_for_operators_only() {
    let fx = fx_quote_provider();
    let gw = Payedge::start(&config_for(&[("fx".into(), fx.addr)], ""), &env());
    for path in [
        "/",
        "/console/console.js",
        "/console/console.css",
        "/console/signalr.min.js",
    ] {
        let resp = get(gw.admin, path, &[]);
        assert_eq!(resp.status, 200, "{path}");
        let csp = resp.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{path}: {csp}"
        );
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(resp.header("x-frame-options"), Some("DENY"));
        assert_eq!(resp.header("x-content-type-options"), Some("nosniff"));
    }
    assert_eq!(get(gw.admin, "/console/nothing.js", &[]).status, 404);
    // The console's data: nobody without a token, no tenant, only an operator.
    for path in ["/admin/traffic", "/admin/config", "/admin/providers"] {
        assert_eq!(get(gw.admin, path, &[]).status, 401, "{path}");
        let tenant = get(gw.admin, path, &[("Authorization", &bearer("blue"))]);
        assert_eq!(tenant.status, 403, "{path}");
        assert_eq!(error_of(&tenant)["code"], "forbidden");
        assert_eq!(
            get(gw.admin, path, &[("Authorization", &admin_bearer())]).status,
            200,
            "{path}"
        );
    }
    let config: serde_json::Value = serde_json::from_slice(
        &get(
            gw.admin,
            "/admin/config",
            &[("Authorization", &admin_bearer())],
        )
        .body,
    )
    .unwrap();
    assert_eq!(config["tenants"], serde_json::json!(["blue", "green"]));
    assert_eq!(config["hub_path"], "/hubs/notifications");
    // The console's event types are the hub's: operators' alerts at least.
    assert!(
        config["event_types"]
            .as_array()
            .unwrap()
            .contains(&"system.alert".into())
    );
    let traffic: serde_json::Value = serde_json::from_slice(
        &get(
            gw.admin,
            "/admin/traffic",
            &[("Authorization", &admin_bearer())],
        )
        .body,
    )
    .unwrap();
    assert_eq!(traffic["window_seconds"], 900);
}
