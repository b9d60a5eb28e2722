//! Parsing of the `Host` header (or the HTTP/2 `:authority`) into a normalised host.

use std::net::{IpAddr, Ipv6Addr};

/// A host as the client named it, normalised: lower case, no port, no trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed host")]
pub struct MalformedHost;

const MAX_HOST_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// Parses `raw` (e.g. `Blue.SmartPay.com.:8443`, `[::1]:8080`, `10.0.0.1`) into a [`Host`].
pub fn parse_host(raw: &[u8]) -> Result<Host, MalformedHost> {
    let raw = std::str::from_utf8(raw).map_err(|_| MalformedHost)?.trim();
    if raw.is_empty() {
        return Err(MalformedHost);
    }
    if let Some(rest) = raw.strip_prefix('[') {
        let (literal, after) = rest.split_once(']').ok_or(MalformedHost)?;
        check_port(after.strip_prefix(':'), after.is_empty())?;
        let ip: Ipv6Addr = literal.parse().map_err(|_| MalformedHost)?;
        return Ok(Host::Ip(IpAddr::V6(ip)));
    }
    let (name, port) = match raw.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (raw, None),
    };
    check_port(port, port.is_none())?;
    let name = name.strip_suffix('.').unwrap_or(name);
    if let Ok(ip) = name.parse::<std::net::Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    if name.is_empty() || name.len() > MAX_HOST_LEN {
        return Err(MalformedHost);
    }
    for label in name.split('.') {
        if !is_dns_label(label) {
            return Err(MalformedHost);
        }
    }
    Ok(Host::Name(name.to_ascii_lowercase()))
}

fn check_port(port: Option<&str>, absent_ok: bool) -> Result<(), MalformedHost> {
    match port {
        None if absent_ok => Ok(()),
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u16>().map(|_| ()).map_err(|_| MalformedHost)
        }
        _ => Err(MalformedHost),
    }
}

/// RFC 1123 label: letters, digits and inner hyphens (underscore tolerated, as real DNS has it).
fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= MAX_LABEL_LEN
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Result<Host, MalformedHost> {
        Ok(Host::Name(s.to_string()))
    }

    #[test]
    fn parses_names_ports_case_and_trailing_dot() {
        assert_eq!(parse_host(b"blue.smartpay.com"), name("blue.smartpay.com"));
        assert_eq!(parse_host(b"Blue.SmartPay.COM"), name("blue.smartpay.com"));
        assert_eq!(
            parse_host(b"blue.smartpay.com:8080"),
            name("blue.smartpay.com")
        );
        assert_eq!(parse_host(b"blue.smartpay.com."), name("blue.smartpay.com"));
        assert_eq!(
            parse_host(b"blue.smartpay.com.:443"),
            name("blue.smartpay.com")
        );
        assert_eq!(parse_host(b"localhost"), name("localhost"));
    }

    #[test]
    fn parses_ip_literals() {
        assert_eq!(
            parse_host(b"[::1]:8080"),
            Ok(Host::Ip("::1".parse().unwrap()))
        );
        assert_eq!(
            parse_host(b"[2001:db8::7]"),
            Ok(Host::Ip("2001:db8::7".parse().unwrap()))
        );
        assert_eq!(
            parse_host(b"127.0.0.1:8080"),
            Ok(Host::Ip("127.0.0.1".parse().unwrap()))
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            &b""[..],
            b"   ",
            b"blue..smartpay.com",
            b".smartpay.com",
            b"blue smartpay.com",
            b"blue.smartpay.com:",
            b"blue.smartpay.com:99999",
            b"blue.smartpay.com:80:80",
            b"[::1",
            b"[::1]x",
            b"[not-an-ip]",
            b"::1",
            b"-blue.smartpay.com",
            b"blue/evil.com",
            b"user@blue.smartpay.com",
            b"\xff\xfe",
        ] {
            assert_eq!(parse_host(bad), Err(MalformedHost), "{bad:?}");
        }
        let long_label = format!("{}.com", "a".repeat(64));
        assert_eq!(parse_host(long_label.as_bytes()), Err(MalformedHost));
    }
}
