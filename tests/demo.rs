//! `payedge demo` as a newcomer runs it: the built-in configuration, simulated connectors, the
//! printed instructions, and a quote through the proxy with a token from `payedge token`.

mod common;

use std::process::Command;

use common::process::binary;
use common::*;

fn mint(tenant: &str) -> String {
    let out = Command::new(binary())
        .args(["token", "--tenant", tenant])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn demo_serves_quotes_and_payments_through_the_proxy() {
    let (proxy, admin) = (free_addr(), free_addr());
    let mut command = Command::new(binary());
    command.args([
        "demo",
        "--listen",
        &proxy.to_string(),
        "--admin-listen",
        &admin.to_string(),
    ]);
    for var in [
        "PAYEDGE_DEMO_JWT_SECRET",
        "DEMO_CARDS_ACME_API_KEY",
        "DEMO_CARDS_GLOBEX_API_KEY",
    ] {
        command.env_remove(var);
    }
    let gw = Payedge::spawn(command, &[], proxy, admin, tempfile::tempdir().unwrap());

    let auth = format!("Bearer {}", mint("blue"));
    let quote = request(
        proxy,
        "POST",
        "/api/fx/quote",
        &[
            ("X-Tenant", "blue"),
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        br#"{"from":"USD","to":"GBP","amount":"1000.10"}"#,
    )
    .unwrap();
    assert_eq!(quote.status, 201, "{}", quote.text());
    let q = quote.json();
    assert_eq!(q["tenant"], "blue");
    assert_eq!(q["amount"], "1000.10", "amounts stay exact decimal strings");
    assert_eq!(q["rate"], "0.7892");
    assert_eq!(q["converted_amount"], "789.28");
    assert!(q["id"].as_str().unwrap().starts_with("fxq_"));
    assert!(q["expires_at"].as_str().is_some());

    // Host-named tenant, and the weighted split between the two card connectors (3:1).
    let green = format!("Bearer {}", mint("green"));
    let mut providers = Vec::new();
    for _ in 0..8 {
        let paid = request(
            proxy,
            "POST",
            "/api/payments",
            &[("Host", "green.smartpay.com"), ("Authorization", &green)],
            br#"{"amount":"25.00","currency":"EUR"}"#,
        )
        .unwrap();
        assert_eq!(paid.status, 201, "{}", paid.text());
        assert_eq!(paid.json()["tenant"], "green");
        providers.push(paid.json()["provider"].as_str().unwrap().to_string());
    }
    // Weights 3:1 and acme's lower fee: acme takes most, globex still some.
    let acme = providers.iter().filter(|p| *p == "cards-acme").count();
    assert!((5..=7).contains(&acme), "{providers:?}");

    let refused = get(
        proxy,
        "/api/fx/rates",
        &[("X-Tenant", "green"), ("Authorization", &auth)],
    );
    assert_eq!(refused.status, 403);

    let stdout = gw.raw_stdout();
    assert!(stdout.contains("payedge demo is ready"), "{stdout}");
    assert!(
        stdout.contains(&format!("curl -s -X POST http://{proxy}/api/fx/quote")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "watch --tenant blue --url http://{admin}/hubs/notifications"
        )),
        "{stdout}"
    );
}
