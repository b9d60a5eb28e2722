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

fn mint_admin() -> String {
    let out = Command::new(binary())
        .args(["token", "--tenant", "blue", "--role", "admin"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The shell commands the banner prints (continuation lines joined).
fn printed_commands(stdout: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in stdout.lines() {
        let line = line.trim_end();
        if current.is_empty() && !line.starts_with("curl ") {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                commands.push(std::mem::take(&mut current));
            }
        }
    }
    commands
}

#[test]
fn demo_serves_quotes_and_payments_through_the_proxy() {
    let (proxy, admin, tls) = (free_addr(), free_addr(), free_addr());
    let demo_dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(binary());
    command
        .args([
            "demo",
            "--listen",
            &proxy.to_string(),
            "--admin-listen",
            &admin.to_string(),
            "--tls-listen",
            &tls.to_string(),
        ])
        .env("PAYEDGE_DEMO_DIR", demo_dir.path());
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
    // The console's address and an operator's token, as printed, open the console's data.
    let console = format!("open http://{admin}/ and sign in with this admin token:");
    let operator = stdout
        .lines()
        .skip_while(|l| !l.contains(&console))
        .nth(1)
        .unwrap_or_else(|| panic!("no console address with a token:\n{stdout}"));
    assert_eq!(get(admin, "/", &[]).status, 200);
    let config = get(
        admin,
        "/admin/config",
        &[("Authorization", &format!("Bearer {}", operator.trim()))],
    );
    assert_eq!(config.status, 200, "{}", config.text());

    // HTTPS: the printed curl commands work as printed (blue over HTTP/1.1, green over HTTP/2,
    // each on its own certificate from the demo's CA), and reach the FX connector over mutual
    // TLS.
    let ca = demo_dir.path().join("ca.pem");
    // The demo's private keys are its user's alone.
    let keys: Vec<_> = std::fs::read_dir(demo_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "key"))
        .collect();
    assert!(!keys.is_empty());
    for key in &keys {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
    let mut https_commands = 0;
    for command in printed_commands(&stdout)
        .iter()
        .filter(|c| c.contains("--cacert") && !c.contains("Host:"))
    {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{command} -w '\n%{{http_code}} %{{http_version}}'"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.ends_with("200 1.1") || text.ends_with("200 2"),
            "{command}\n{text}"
        );
        assert!(text.contains("\"rates\""), "{text}");
        https_commands += 1;
    }
    assert_eq!(https_commands, 2, "{stdout}");
    assert!(
        stdout.contains(&format!("--cacert {}", ca.display())),
        "{stdout}"
    );
    let misdirected = printed_commands(&stdout)
        .into_iter()
        .find(|c| c.contains("Host: green.smartpay.com"))
        .expect("the 421 example");
    let out = Command::new("sh")
        .arg("-c")
        .arg(&misdirected)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("misdirected_request"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let providers = get(
        admin,
        "/admin/providers",
        &[("Authorization", &format!("Bearer {}", mint_admin()))],
    );
    assert_eq!(providers.status, 200, "{}", providers.text());
    let providers = providers.json();
    let fx = &providers["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "fx")
        .unwrap()["providers"][0];
    assert_eq!(fx["tls"]["sni"], "fx.connectors.demo");
    assert_eq!(fx["tls"]["client_certificate"], true);
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
