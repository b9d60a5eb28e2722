//! The demo's TLS: a throwaway CA and the certificates it signs, kept in the system's temporary
//! folder (reused while they are valid, so a CA a user trusted once stays the same), and the
//! configuration that serves them: HTTPS on 8443 with one certificate per tenant host, and mutual
//! TLS from payedge to the FX connector.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pingora::listeners::tls::TlsSettings;
use rustls::server::WebPkiClientVerifier;
use serde_yaml::{Mapping, Value};

use crate::tls::{Authority, IssuedPem, Validity, provider, read_key_pair, read_roots};

pub const TENANT_HOSTS: [&str; 2] = ["blue.smartpay.com", "green.smartpay.com"];
/// The name the FX connector's certificate carries and payedge verifies.
pub const CONNECTOR_NAME: &str = "fx.connectors.demo";
pub const TLS_LISTEN: &str = "127.0.0.1:8443";
/// The pool whose provider is reached over mutual TLS.
const MTLS_POOL: &str = "fx";
/// Material closer to expiry than this is made again.
const RENEW_BEFORE: Duration = Duration::from_secs(14 * 24 * 3600);

/// Where the demo's certificates are.
#[derive(Debug, Clone)]
pub struct DemoTls {
    pub dir: PathBuf,
}

impl DemoTls {
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn pair(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        )
    }

    /// The certificates in `dir`, made (again) when missing, unreadable or near expiry.
    pub fn prepare(dir: &Path) -> Result<Self, String> {
        let tls = Self {
            dir: dir.to_path_buf(),
        };
        if tls.usable() {
            // Kept from an earlier run, perhaps from before keys were written private.
            for name in Self::names() {
                private(&tls.pair(name).1)?;
            }
        } else {
            tls.generate()?;
        }
        Ok(tls)
    }

    fn names() -> Vec<&'static str> {
        let mut names = TENANT_HOSTS.to_vec();
        names.extend([CONNECTOR_NAME, "payedge-client"]);
        names
    }

    fn usable(&self) -> bool {
        let soon = SystemTime::now() + RENEW_BEFORE;
        let soon = soon
            .duration_since(UNIX_EPOCH)
            .map_or(i64::MAX, |d| d.as_secs() as i64);
        read_roots(&self.ca_file()).is_ok()
            && Self::names().iter().all(|name| {
                let (cert, key) = self.pair(name);
                read_key_pair(&cert, &key).is_ok_and(|p| p.leaf.not_after > soon)
            })
    }

    fn generate(&self) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let ca = Authority::new("payedge demo CA").map_err(|e| e.to_string())?;
        let validity = Validity::days(90);
        let mut issued: Vec<(&str, IssuedPem)> = Vec::new();
        for host in TENANT_HOSTS {
            issued.push((
                host,
                ca.server(&[host], validity).map_err(|e| e.to_string())?,
            ));
        }
        issued.push((
            CONNECTOR_NAME,
            ca.server(&[CONNECTOR_NAME], validity)
                .map_err(|e| e.to_string())?,
        ));
        issued.push((
            "payedge-client",
            ca.client("payedge-demo-gateway", "payedge demo", validity)
                .map_err(|e| e.to_string())?,
        ));
        write(&self.ca_file(), ca.cert_pem())?;
        for (name, pem) in issued {
            let (cert, key) = self.pair(name);
            write(&cert, &pem.cert_pem)?;
            write_private(&key, &pem.key_pem)?;
        }
        Ok(())
    }

    /// The demo configuration with TLS added: `server.tls` serving each tenant's certificate,
    /// and the FX pool's provider reached over mutual TLS.
    pub fn configure(&self, yaml: &str) -> Result<String, String> {
        let mut root: Value = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        let certificates: Vec<Value> = TENANT_HOSTS
            .iter()
            .map(|host| {
                let (cert, key) = self.pair(host);
                mapping(&[("cert_file", path(&cert)), ("key_file", path(&key))])
            })
            .collect();
        let tls = mapping(&[
            ("listen", Value::from(TLS_LISTEN)),
            ("certificates", Value::Sequence(certificates)),
            ("http2", Value::Bool(true)),
        ]);
        section(&mut root, "server")?.insert("tls".into(), tls);
        let (client_cert, client_key) = self.pair("payedge-client");
        let provider_tls = mapping(&[
            ("sni", Value::from(CONNECTOR_NAME)),
            ("ca_file", path(&self.ca_file())),
            ("client_cert_file", path(&client_cert)),
            ("client_key_file", path(&client_key)),
        ]);
        let providers = section(&mut root, "pools")?
            .get_mut(MTLS_POOL)
            .and_then(|p| p.get_mut("providers"))
            .and_then(Value::as_sequence_mut)
            .ok_or("the demo configuration has no fx providers")?;
        for provider in providers {
            if let Value::Mapping(m) = provider {
                m.insert("tls".into(), provider_tls.clone());
            }
        }
        let body = serde_yaml::to_string(&root).map_err(|e| e.to_string())?;
        Ok(format!(
            "# conf/demo.yaml with the TLS that `payedge demo` adds (written by payedge demo)\n{body}"
        ))
    }

    /// Pingora TLS settings for the demo connector: its certificate, and client certificates
    /// from the demo CA required.
    pub fn connector_settings(&self) -> Result<TlsSettings, String> {
        let (cert, key) = self.pair(CONNECTOR_NAME);
        let mut settings = TlsSettings::intermediate(&path_str(&cert), &path_str(&key))
            .map_err(|e| e.to_string())?;
        let (roots, _) = read_roots(&self.ca_file())?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| e.to_string())?;
        settings.set_client_cert_verifier(verifier);
        Ok(settings)
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Readable by its owner only, as a private key should be.
fn private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict {}: {e}", path.display()))
}

/// A private key, created readable by its owner only (never open to others, even for a moment).
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // An older file keeps its mode when truncated: restricted first.
    if path.exists() {
        private(path)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

fn path(p: &Path) -> Value {
    Value::from(path_str(p))
}

fn mapping(entries: &[(&str, Value)]) -> Value {
    let mut m = Mapping::new();
    for (k, v) in entries {
        m.insert(Value::from(*k), v.clone());
    }
    Value::Mapping(m)
}

fn section<'a>(root: &'a mut Value, name: &str) -> Result<&'a mut Mapping, String> {
    root.get_mut(name)
        .and_then(Value::as_mapping_mut)
        .ok_or_else(|| format!("the demo configuration has no {name} section"))
}
