//! `payedge demo`: the gateway with conf/demo.yaml and simulated connectors in one process.

mod cards;
mod fx;
mod http;

use pingora::apps::http_app::HttpServer;
use pingora::services::listening::Service;

use crate::config::{Config, ConfigErrors, validate_text};
use crate::server::Companion;
use cards::Fee;
use http::{ConnectorKind, DemoConnector};

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

/// One simulated connector per provider of the configuration: pools named `fx` get the FX
/// service, every other pool a card connector charging the provider's configured cost.
pub fn connectors(config: &Config) -> Vec<Companion> {
    let mut out = Vec::new();
    for pool in &config.pools {
        for provider in &pool.providers {
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
            service.add_tcp(&provider.address.to_string());
            service.threads = Some(1);
            out.push(Companion {
                service: Box::new(service),
                listen: provider.address,
                what: format!("demo connector {}", provider.name),
            });
        }
    }
    out
}
