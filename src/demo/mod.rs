//! `payedge demo`: the gateway with conf/demo.yaml and simulated connectors in one process.

mod cards;
mod fx;
mod http;
mod tls;

use pingora::apps::http_app::HttpServer;
use pingora::services::listening::Service;

use crate::config::{Config, ConfigErrors, validate_text};
use crate::server::Companion;
use cards::Fee;
use http::{ConnectorKind, DemoConnector};
pub use tls::{CONNECTOR_NAME, DemoTls, TENANT_HOSTS, TLS_LISTEN};

/// The demo configuration, built into the binary so `payedge demo` works from any directory.
pub const DEMO_CONFIG: &str = include_str!("../../conf/demo.yaml");
pub const DEMO_CONFIG_NAME: &str = "conf/demo.yaml";

/// Secrets the demo uses when the environment does not set them. They are public: demo only.
const DEMO_SECRETS: [(&str, &str); 3] = [
    (
        "PAYEDGE_DEMO_JWT_SECRET",
        "payedge-demo-secret-public-never-use-in-production",
    ),
    ("DEMO_CARDS_ACME_API_KEY", "demo-acme-key"),
    ("DEMO_CARDS_GLOBEX_API_KEY", "demo-globex-key"),
];

/// The environment, falling back to the demo's public secrets.
pub fn demo_env(name: &str) -> Option<String> {
    std::env::var(name).ok().or_else(|| {
        DEMO_SECRETS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    })
}

/// The built-in demo configuration.
pub fn demo_config() -> Result<Config, ConfigErrors> {
    validate_text(
        std::path::Path::new(DEMO_CONFIG_NAME),
        DEMO_CONFIG,
        &demo_env,
    )
}

/// The demo configuration with its TLS: certificates made (or reused) in `dir`, and the
/// effective configuration written there as `demo.yaml`.
pub fn demo_config_with_tls(
    dir: &std::path::Path,
) -> Result<(Config, String, DemoTls), ConfigErrors> {
    let fail = |message: String| ConfigErrors::single(dir, None, "", message);
    let tls = DemoTls::prepare(dir).map_err(fail)?;
    let text = tls.configure(DEMO_CONFIG).map_err(fail)?;
    let file = dir.join("demo.yaml");
    std::fs::write(&file, &text)
        .map_err(|e| fail(format!("cannot write {}: {e}", file.display())))?;
    let config = validate_text(&file, &text, &demo_env)?;
    Ok((config, crate::runtime::sha256_hex(text.as_bytes()), tls))
}

/// One simulated connector per provider of the configuration: pools named `fx` get the FX
/// service, every other pool a card connector charging the provider's configured cost. A
/// provider reached over TLS is served over TLS with the demo's certificates (client
/// certificate required), when the demo made them.
pub fn connectors(config: &Config, tls: Option<&DemoTls>) -> Vec<Companion> {
    let mut out = Vec::new();
    for pool in &config.pools {
        for provider in &pool.providers {
            let Some(listen) = provider.address.socket_addr() else {
                tracing::warn!(
                    provider = provider.name,
                    address = %provider.address,
                    "the demo simulates connectors on IP addresses only"
                );
                continue;
            };
            let kind = if pool.name == "fx" {
                ConnectorKind::Fx
            } else {
                ConnectorKind::Cards(Fee {
                    percent: provider.cost.percent,
                    fixed: provider.cost.fixed,
                })
            };
            let app = DemoConnector {
                name: provider.name.clone(),
                kind,
                tenant_header: config.tenant_header.clone(),
                expected_credentials: provider.headers.clone(),
            };
            let mut service =
                Service::new(format!("demo-{}", provider.name), HttpServer::new_app(app));
            let settings = match (&provider.tls, tls) {
                (Some(_), Some(tls)) => match tls.connector_settings() {
                    Ok(settings) => Some(settings),
                    Err(e) => {
                        tracing::warn!(provider = provider.name, error = e, "demo connector TLS");
                        None
                    }
                },
                _ => None,
            };
            match settings {
                Some(settings) => {
                    service.add_tls_with_settings(&listen.to_string(), None, settings)
                }
                None => service.add_tcp(&listen.to_string()),
            }
            service.threads = Some(1);
            out.push(Companion {
                service: Box::new(service),
                listen,
                what: format!("demo connector {}", provider.name),
            });
        }
    }
    out
}
