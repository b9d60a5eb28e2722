//! Certificates for the TLS tests, from a throwaway CA (payedge's own rcgen-based authority),
//! written as PEM files into a temporary folder, and the real TLS clients (curl, openssl) the
//! tests drive payedge with.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use payedge::tls::{Authority, Validity};

pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Authority,
    name: String,
}

/// A certificate and key on disk.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let pki = Self {
            dir: tempfile::tempdir().unwrap(),
            ca: Authority::new(name).unwrap(),
            name: name.to_string(),
        };
        std::fs::write(pki.ca_file(), pki.ca.cert_pem()).unwrap();
        pki
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate, PEM.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join(format!("{}-ca.pem", self.name))
    }

    /// A server certificate for `names`, written as `{file}.pem` / `{file}.key`.
    pub fn server(&self, file: &str, names: &[&str], validity: Validity) -> Pair {
        let issued = self.ca.server(names, validity).unwrap();
        self.write(file, &issued.cert_pem, &issued.key_pem)
    }

    pub fn client(&self, file: &str, common_name: &str, organization: &str) -> Pair {
        let issued = self
            .ca
            .client(common_name, organization, Validity::days(30))
            .unwrap();
        self.write(file, &issued.cert_pem, &issued.key_pem)
    }

    fn write(&self, file: &str, cert: &str, key: &str) -> Pair {
        let pair = Pair {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        std::fs::write(&pair.cert, cert).unwrap();
        std::fs::write(&pair.key, key).unwrap();
        private(&pair.key);
        pair
    }
}

/// What curl saw.
#[derive(Debug)]
pub struct Curl {
    /// curl's exit code: 0, or why the transfer failed (35: TLS handshake, 60: peer
    /// certificate, 52: empty reply, 56: receive failure …).
    pub exit: i32,
    pub status: u16,
    pub http_version: String,
    pub body: String,
    pub stderr: String,
}

impl Curl {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} {}", self.body, self.stderr))
    }
}

/// Runs curl with `args` and a marker line reporting the status and HTTP version.
pub fn curl(args: &[&str]) -> Curl {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .args(args)
        .output()
        .expect("curl is needed for the TLS tests");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, marker) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let mut marker = marker.split(' ');
    Curl {
        exit: out.status.code().unwrap_or(-1),
        status: marker.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        http_version: marker.next().unwrap_or("").to_string(),
        body: body.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// `openssl s_client` against `addr` with `servername` (none: no SNI): what it printed.
pub fn s_client(addr: std::net::SocketAddr, servername: Option<&str>, extra: &[&str]) -> Output {
    let mut command = Command::new("openssl");
    command.args(["s_client", "-connect", &addr.to_string()]);
    match servername {
        Some(name) => command.args(["-servername", name]),
        None => command.arg("-noservername"),
    };
    command
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is needed for the TLS tests")
}

/// The subject of the certificate `openssl s_client` was served.
pub fn served_subject(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("subject="))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Readable by its owner only, as a private key should be (payedge warns otherwise).
pub fn private(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
