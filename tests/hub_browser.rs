//! The hub from a browser: a real headless Chromium loads a page from another origin that uses
//! the official browser build of @microsoft/signalr. A listed origin negotiates (through the CORS
//! preflight), connects, receives a live event and, after reconnecting, a recovered one; a page
//! from an unlisted origin is refused at negotiate and at the WebSocket.

mod common;

use std::time::Duration;

use common::browser::{Browser, Site};
use common::hub::quote;
use common::*;
use serde_json::Value;

fn hub_config(fx: &MockUpstream, origins: &[String]) -> String {
    let origins: Vec<String> = origins.iter().map(|o| format!("\"{o}\"")).collect();
    config_for(&[("fx".into(), fx.addr)], "")
        + &format!(
            r#"notifications:
  cors:
    allowed_origins: [{}]
triggers:
  - name: fx-quote-created
    event: fx.quote.created
    match: {{ method: POST, path: /api/fx/quote, status: [200, 201] }}
    fields: {{ quoteId: /id, amount: /amount }}
    required: [quoteId, amount]
"#,
            origins.join(", ")
        )
}

fn page_url(site: &Site, gw: &Payedge) -> String {
    format!(
        "http://{}/?hub=http://{}/hubs/notifications&token={}",
        site.addr,
        gw.admin,
        token("blue")
    )
}

fn correlation_ids(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m["type"] == "fx.quote.created")
        .map(|m| m["correlationid"].as_str().unwrap_or("").to_string())
        .collect()
}

fn wait_quotes(browser: &Browser, count: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got = correlation_ids(&browser.messages());
        if got.len() >= count {
            return got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {count} quotes: {:?}",
            got.len(),
            browser.lines()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_page_from_a_listed_origin_gets_live_and_recovered_events() {
    let site = Site::start();
    let fx = fx_quote_provider();
    let gw = Payedge::start(&hub_config(&fx, &[site.origin()]), &env());
    let mut browser = Browser::open(&page_url(&site, &gw));

    let connected = browser.eval(r#"connectHub("blue")"#);
    assert_eq!(connected["ok"], true, "{connected}");
    quote(&gw, "blue", "live-1");
    assert_eq!(wait_quotes(&browser, 1), ["live-1"]);

    // The page loses its connection; events are published meanwhile; it comes back.
    let last = browser.eval("disconnectHub()");
    assert!(last.as_str().is_some_and(|l| l.contains('-')), "{last}");
    for i in 1..=3 {
        quote(&gw, "blue", &format!("missed-{i}"));
    }
    let resumed = browser.eval(&format!(r#"connectHub("blue", {last})"#));
    assert_eq!(resumed["ok"], true, "{resumed}");
    assert_eq!(resumed["result"]["recovered"], true, "{resumed}");
    assert_eq!(resumed["result"]["replayed"], 3, "{resumed}");
    quote(&gw, "blue", "live-2");
    assert_eq!(
        wait_quotes(&browser, 5),
        ["live-1", "missed-1", "missed-2", "missed-3", "live-2"]
    );
}

#[test]
fn a_page_from_another_origin_is_refused() {
    let listed = Site::start();
    let other = Site::start();
    let fx = fx_quote_provider();
    let gw = Payedge::start(&hub_config(&fx, &[listed.origin()]), &env());
    let mut browser = Browser::open(&page_url(&other, &gw));
    let refused = browser.eval(r#"connectHub("blue")"#);
    assert_eq!(refused["ok"], false, "{refused}");
    quote(&gw, "blue", "never");
    std::thread::sleep(Duration::from_millis(300));
    assert!(browser.messages().is_empty());
    let metrics = gw.metrics();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("payedge_hub_refusals_total{reason=\"origin\"}")
                && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
}

#[test]
fn preflights_and_upgrades_answer_listed_origins_only() {
    let fx = fx_quote_provider();
    let listed = "https://dashboard.smartpay.com";
    let gw = Payedge::start(&hub_config(&fx, &[listed.to_string()]), &env());
    let preflight = |origin: &str| {
        request(
            gw.admin,
            "OPTIONS",
            "/hubs/notifications/negotiate?negotiateVersion=1",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                (
                    "Access-Control-Request-Headers",
                    "authorization,x-requested-with,x-signalr-user-agent",
                ),
            ],
            b"",
        )
        .unwrap()
    };
    let ok = preflight(listed);
    assert_eq!(ok.status, 204);
    assert_eq!(ok.header("access-control-allow-origin"), Some(listed));
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    let allowed_headers = ok.header("access-control-allow-headers").unwrap_or("");
    for h in ["authorization", "x-requested-with", "x-signalr-user-agent"] {
        assert!(allowed_headers.contains(h), "{allowed_headers}");
    }
    let no = preflight("https://evil.example");
    assert_eq!(no.status, 403);
    assert_eq!(error_of(&no)["code"], "origin_not_allowed");
    assert_eq!(no.header("access-control-allow-origin"), None);

    // Negotiate from a listed origin carries the CORS headers, errors included.
    let negotiate = |origin: &str, auth: Option<String>| {
        let mut headers = vec![("Origin", origin.to_string())];
        if let Some(auth) = auth {
            headers.push(("Authorization", auth));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        request(
            gw.admin,
            "POST",
            "/hubs/notifications/negotiate?negotiateVersion=1",
            &headers,
            b"",
        )
        .unwrap()
    };
    let answered = negotiate(listed, Some(bearer("blue")));
    assert_eq!(answered.status, 200);
    assert_eq!(answered.header("access-control-allow-origin"), Some(listed));
    let unauthenticated = negotiate(listed, None);
    assert_eq!(unauthenticated.status, 401);
    assert_eq!(
        unauthenticated.header("access-control-allow-origin"),
        Some(listed)
    );
    let foreign = negotiate("https://evil.example", Some(bearer("blue")));
    assert_eq!(foreign.status, 403);
    assert_eq!(error_of(&foreign)["code"], "origin_not_allowed");

    // The WebSocket upgrade checks the origin too (no preflight protects it).
    let upgrade = |origin: &str| {
        request(
            gw.admin,
            "GET",
            "/hubs/notifications",
            &[
                ("Origin", origin),
                ("Authorization", &bearer("blue")),
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
            b"",
        )
        .unwrap()
    };
    let refused = upgrade("https://evil.example");
    assert_eq!(refused.status, 403);
    assert_eq!(error_of(&refused)["code"], "origin_not_allowed");
    // A listed origin's upgrade is accepted.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let accepted = runtime.block_on(async {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{}/hubs/notifications", gw.admin)
            .into_client_request()
            .unwrap();
        req.headers_mut().insert("Origin", listed.parse().unwrap());
        req.headers_mut()
            .insert("Authorization", bearer("blue").parse().unwrap());
        tokio_tungstenite::connect_async(req)
            .await
            .map(|(_, resp)| resp.status())
    });
    assert_eq!(accepted.unwrap(), 101);
}
