//! The command line: run, check, demo, token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use jsonwebtoken::AlgorithmFamily;
use payedge_filters::auth::{MintClaims, mint_hmac};
use payedge_filters::tenant::TenantResolver;

use crate::config::{self, BusSettings, Config, ConfigErrors};
use crate::demo;
use crate::runtime::Env;
use crate::server::{self, Companion, Loaded, OnReady};
use crate::terminal;

/// Exit code for configuration problems (and `check` finding any).
const EXIT_CONFIG: u8 = 2;
const EXIT_RUNTIME: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "payedge",
    version,
    about = "Multi-tenant payments edge proxy on Pingora"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway with a configuration file.
    Run {
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        #[command(flatten)]
        listen: ListenOverrides,
        /// Take the listening sockets over from the running payedge (then send it SIGQUIT).
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a configuration file: exit 0, or 2 listing every problem.
    Check {
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
    },
    /// Run the gateway with the demo configuration and simulated connectors.
    Demo {
        /// Use this configuration instead of the built-in conf/demo.yaml.
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        #[command(flatten)]
        listen: ListenOverrides,
    },
    /// Print the events of a tenant as the notification hub delivers them.
    Watch {
        #[arg(long)]
        tenant: String,
        /// The hub's URL.
        #[arg(long, default_value = "http://127.0.0.1:8081/hubs/notifications")]
        url: String,
        /// A token to connect with (default: one minted like `payedge token`).
        #[arg(long)]
        token: Option<String>,
        /// Configuration whose auth.jwt settings and secret mint the token (default: the demo's).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Mint a token signed with the configuration's HMAC secret (the demo's by default).
    Token {
        #[arg(long)]
        tenant: String,
        /// A role to grant; repeat for several.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        #[arg(long, default_value = "dev-user")]
        subject: String,
        /// Configuration whose auth.jwt settings and secret to use (default: the demo's).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, Args)]
struct ListenOverrides {
    /// Proxy listen address, overriding server.listen.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Admin listen address, overriding server.admin_listen.
    #[arg(long = "admin-listen")]
    admin_listen: Option<SocketAddr>,
    /// TLS listen address, overriding server.tls.listen (which must be configured).
    #[arg(long = "tls-listen")]
    tls_listen: Option<SocketAddr>,
}

impl ListenOverrides {
    fn apply(&self, config: &mut Config) -> Result<(), ConfigErrors> {
        if let Some(addr) = self.listen {
            config.server.listen = Some(addr);
        }
        if let Some(addr) = self.admin_listen {
            config.server.admin_listen = Some(addr);
        }
        if let Some(addr) = self.tls_listen {
            match config.server.tls.as_mut() {
                Some(tls) => tls.listen = addr,
                None => {
                    return Err(ConfigErrors::single(
                        &config.source,
                        None,
                        "server.tls",
                        "--tls-listen needs a server.tls section",
                    ));
                }
            }
        }
        Ok(())
    }
}

pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check { config } => check(&config),
        Command::Run {
            config,
            listen,
            upgrade,
        } => {
            let env: Env = process_env;
            match config::load_with(&config, &env)
                .and_then(|(mut cfg, sha)| listen.apply(&mut cfg).map(|()| (cfg, sha)))
            {
                Ok((cfg, sha256)) => {
                    let mut loaded = loaded(cfg, sha256, env, listen);
                    loaded.upgrade = upgrade;
                    start(loaded, Vec::new(), None)
                }
                Err(errors) => config_failure(&errors),
            }
        }
        Command::Demo { config, listen } => {
            let env: Env = demo::demo_env;
            let loaded_config = match &config {
                Some(path) => config::load_with(path, &env).map(|(cfg, sha)| (cfg, sha, None)),
                None => demo::demo_config_with_tls(&demo_dir())
                    .map(|(cfg, sha, tls)| (cfg, sha, Some(tls))),
            };
            match loaded_config
                .and_then(|(mut cfg, sha, tls)| listen.apply(&mut cfg).map(|()| (cfg, sha, tls)))
            {
                Ok((cfg, sha256, tls)) => {
                    let connectors = demo::connectors(&cfg, tls.as_ref());
                    let banner = demo_banner(&cfg, tls.as_ref());
                    start(loaded(cfg, sha256, env, listen), connectors, Some(banner))
                }
                Err(errors) => config_failure(&errors),
            }
        }
        Command::Watch {
            tenant,
            url,
            token,
            config,
        } => {
            let token = match token {
                Some(token) => Ok(token),
                None => {
                    let loaded = match &config {
                        Some(path) => config::load(path),
                        None => demo::demo_config(),
                    };
                    match loaded {
                        Ok(cfg) => mint(&cfg, &tenant, &[], 24 * 3600, "watch"),
                        Err(errors) => return config_failure(&errors),
                    }
                }
            };
            let watched = token.and_then(|token| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?
                    .block_on(crate::watch::watch(&url, &token, &tenant))
            });
            match watched {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    terminal::err(&format!("payedge watch: {message}"));
                    ExitCode::from(EXIT_RUNTIME)
                }
            }
        }
        Command::Token {
            tenant,
            roles,
            ttl,
            subject,
            config,
        } => {
            let loaded = match &config {
                Some(path) => config::load(path),
                None => demo::demo_config(),
            };
            match loaded.map(|cfg| mint(&cfg, &tenant, &roles, ttl, &subject)) {
                Ok(Ok(token)) => {
                    terminal::out(&token);
                    ExitCode::SUCCESS
                }
                Ok(Err(message)) => {
                    terminal::err(&format!("payedge token: {message}"));
                    ExitCode::from(EXIT_CONFIG)
                }
                Err(errors) => config_failure(&errors),
            }
        }
    }
}

/// Where `payedge demo` keeps its certificates and effective configuration.
fn demo_dir() -> PathBuf {
    std::env::var_os("PAYEDGE_DEMO_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("payedge-demo"))
}

fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(cfg) => {
            for warning in &cfg.warnings {
                let errors = ConfigErrors {
                    file: path.to_path_buf(),
                    issues: vec![warning.clone()],
                };
                terminal::err(&format!("warning: {errors}"));
            }
            let providers: usize = cfg.pools.iter().map(|p| p.providers.len()).sum();
            let auth = match &cfg.auth {
                Some(a) => format!("JWT on {} prefix(es)", a.required_path_prefixes.len()),
                None => "no auth".into(),
            };
            let events = match (&cfg.notifications.enabled, &cfg.notifications.bus) {
                (false, _) => "events not published",
                (true, BusSettings::InMemory) => "events in memory",
                (true, BusSettings::Redis { .. }) => "events via Redis",
            };
            let tls: String = [
                ("HTTPS", &cfg.server.tls),
                ("admin HTTPS", &cfg.server.admin_tls),
            ]
            .into_iter()
            .filter_map(|(what, listener)| {
                let l = listener.as_ref()?;
                Some(format!(
                    ", {what} on {} with {} certificate(s){}",
                    l.listen,
                    l.certificates.len(),
                    if l.client_auth.is_some() {
                        " and client certificates"
                    } else {
                        ""
                    }
                ))
            })
            .collect();
            terminal::out(&format!(
                "{}: ok: {} tenant(s), {} route(s), {} pool(s) with {} provider(s), {}, {} trigger(s), {}{tls}",
                path.display(),
                cfg.tenancy.tenants.len(),
                cfg.routes.len(),
                cfg.pools.len(),
                providers,
                auth,
                cfg.triggers.len(),
                events
            ));
            ExitCode::SUCCESS
        }
        Err(errors) => config_failure(&errors),
    }
}

fn config_failure(errors: &ConfigErrors) -> ExitCode {
    terminal::err(&errors.to_string());
    let n = errors.issues.len();
    terminal::err(&format!(
        "{n} problem{} found",
        if n == 1 { "" } else { "s" }
    ));
    ExitCode::from(EXIT_CONFIG)
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A configuration to serve, with what a reload needs to read it again the same way.
fn loaded(config: Config, sha256: String, env: Env, listen: ListenOverrides) -> Loaded {
    Loaded {
        upgrade: false,
        config,
        sha256,
        env,
        overrides: Box::new(move |cfg| listen.apply(cfg)),
    }
}

fn start(loaded: Loaded, companions: Vec<Companion>, on_ready: Option<OnReady>) -> ExitCode {
    let log_drops = crate::logging::init();
    match server::serve(loaded, log_drops, companions, on_ready) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "payedge cannot start");
            crate::logging::flush();
            terminal::err(&format!("payedge: {e}"));
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn mint(
    config: &Config,
    tenant: &str,
    roles: &[String],
    ttl: u64,
    subject: &str,
) -> Result<String, String> {
    let auth = config
        .auth
        .as_ref()
        .ok_or("the configuration has no auth section")?;
    let secret = auth
        .jwt
        .hmac_secret
        .as_deref()
        .ok_or("minting needs an HMAC secret (auth.jwt.secret_env)")?;
    let alg = auth
        .jwt
        .algorithms
        .iter()
        .copied()
        .find(|a| a.family() == AlgorithmFamily::Hmac)
        .ok_or("minting needs an HS256, HS384 or HS512 algorithm in auth.jwt.algorithms")?;
    if TenantResolver::new(&config.tenancy)
        .lookup(tenant)
        .is_none()
    {
        return Err(format!("tenant {tenant:?} is not configured"));
    }
    let now = jsonwebtoken::get_current_timestamp();
    let claims = MintClaims {
        sub: subject.to_string(),
        tenant_claim: auth.jwt.tenant_claim.clone(),
        tenant: Some(tenant.to_ascii_lowercase()),
        roles_claim: auth.jwt.roles_claim.clone(),
        roles: roles.to_vec(),
        iss: auth.jwt.issuer.clone(),
        aud: auth.jwt.audience.clone(),
        iat: now,
        exp: now + ttl,
    };
    mint_hmac(alg, secret, &claims).map_err(|e| e.to_string())
}

fn demo_banner(config: &Config, tls: Option<&demo::DemoTls>) -> OnReady {
    let proxy = config
        .server
        .listen
        .map_or_else(String::new, |a| a.to_string());
    let admin = config
        .server
        .admin_listen
        .map_or_else(String::new, |a| a.to_string());
    let token = |tenant: &str| mint(config, tenant, &[], 3600, "demo-user").unwrap_or_default();
    let (blue, green) = (token("blue"), token("green"));
    let admin_role = config.auth.as_ref().and_then(|a| a.admin_role.clone());
    let operator = mint(
        config,
        "blue",
        &[admin_role.unwrap_or_default()],
        3600,
        "demo-operator",
    )
    .unwrap_or_default();
    let https = match (tls, config.server.tls.as_ref()) {
        (Some(tls), Some(listener)) => {
            let port = listener.listen.port();
            let ip = listener.listen.ip();
            let ca = tls.ca_file().display().to_string();
            let [blue_host, green_host] = demo::TENANT_HOSTS;
            format!(
                r#"
# HTTPS on {port}, one certificate per tenant host from a throwaway CA ({ca}):
curl -s --cacert {ca} --resolve {blue_host}:{port}:{ip} \
  https://{blue_host}:{port}/api/fx/rates -H 'Authorization: Bearer {blue}'

# Over HTTP/2, green's host (the FX connector behind is reached over mutual TLS):
curl -s --http2 --cacert {ca} --resolve {green_host}:{port}:{ip} \
  https://{green_host}:{port}/api/fx/rates -H 'Authorization: Bearer {green}'

# Green's host on a connection opened for blue's is refused (421 misdirected_request):
curl -s --cacert {ca} --resolve {blue_host}:{port}:{ip} \
  https://{blue_host}:{port}/api/fx/rates -H 'Host: {green_host}' -H 'Authorization: Bearer {green}'
"#
            )
        }
        _ => String::new(),
    };
    let text = format!(
        r#"
payedge demo is ready.
  proxy  http://{proxy}   admin  http://{admin}   tokens below are valid for 1 hour

# The operations console: open http://{admin}/ and sign in with this admin token:
{operator}

# An FX quote for tenant blue (tenant from the X-Tenant header):
curl -s -X POST http://{proxy}/api/fx/quote -H 'X-Tenant: blue' \
  -H 'Authorization: Bearer {blue}' \
  -H 'Content-Type: application/json' -d '{{"from":"USD","to":"GBP","amount":"1000.10"}}'

# The same tenant named by the Host instead:
curl -s http://{proxy}/api/fx/rates -H 'Host: blue.smartpay.com' -H 'Authorization: Bearer {blue}'

# A card payment for tenant green (weights 3:1 and the cheaper fee: acme takes most):
curl -s -X POST http://{proxy}/api/payments -H 'X-Tenant: green' \
  -H 'Authorization: Bearer {green}' \
  -H 'Content-Type: application/json' -d '{{"amount":"25.00","currency":"EUR"}}'

# Blue's token on green's tenant is refused (403 tenant_mismatch):
curl -s http://{proxy}/api/fx/rates -H 'X-Tenant: green' -H 'Authorization: Bearer {blue}'
{https}
# Metrics, health:
curl -s http://{admin}/metrics | grep ^payedge_
curl -s http://{admin}/readyz

# Live events of a tenant, as the notification hub pushes them (another terminal):
cargo run --release -- watch --tenant blue --url http://{admin}/hubs/notifications

# More tokens: cargo run --release -- token --tenant blue [--role admin]
"#
    );
    Box::new(move || {
        terminal::out(&text);
    })
}
