//! Whose word about the client's address is believed.
//!
//! payedge is either the edge itself or sits behind load balancers listed in
//! `server.trusted_proxies`. A peer on that list hands over a request on someone else's behalf:
//! its `X-Forwarded-For` is kept and the peer appended, as nginx's `$proxy_add_x_forwarded_for`
//! does, and the client is the rightmost address in that chain that is not itself a trusted proxy
//! (nginx `real_ip_recursive on`, Envoy's trusted hops). Any other peer's claims are discarded:
//! the header becomes the peer's address alone.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// The networks whose forwarding headers (and PROXY protocol headers) are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an address or a CIDR network like 10.0.0.0/8")]
pub struct BadNetwork(pub String);

impl TrustedProxies {
    /// `10.0.0.0/8`, `2001:db8::/32` or a single address (`192.0.2.7`).
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, BadNetwork> {
        let nets = entries
            .into_iter()
            .map(|entry| {
                let entry = entry.trim();
                IpNet::from_str(entry)
                    .or_else(|_| IpAddr::from_str(entry).map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| BadNetwork(entry.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { nets })
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` is a trusted proxy. The unspecified address (a client nobody could name) is
    /// never one, whatever the list says.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        !ip.is_unspecified() && self.nets.iter().any(|net| net.contains(&ip))
    }
}

/// What goes upstream about the client, and who the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    /// The `X-Forwarded-For` value to send to the provider.
    pub x_forwarded_for: String,
    /// The client as payedge believes it: for logs and for the provider.
    pub client: IpAddr,
    /// Whether the peer's own forwarding headers (`Forwarded` included) may be passed on.
    pub peer_trusted: bool,
}

impl Forwarding {
    /// `client` as text. From an untrusted peer the client is the peer, and `x_forwarded_for`
    /// is already exactly that text: it is lent instead of formatting the address again (the
    /// request log writes it for every request).
    pub fn client_text(&self) -> std::borrow::Cow<'_, str> {
        if self.peer_trusted {
            std::borrow::Cow::Owned(address_text(self.client))
        } else {
            std::borrow::Cow::Borrowed(&self.x_forwarded_for)
        }
    }
}

/// Decides the forwarding for a request from `peer` that carried the `X-Forwarded-For` header
/// lines `incoming` (in order).
pub fn forwarding(peer: IpAddr, trusted: &TrustedProxies, incoming: &[&[u8]]) -> Forwarding {
    let peer = canonical(peer);
    if !trusted.contains(peer) {
        return Forwarding {
            x_forwarded_for: address_text(peer),
            client: peer,
            peer_trusted: false,
        };
    }
    let mut chain = String::new();
    for line in incoming {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        for entry in line.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if !chain.is_empty() {
                chain.push_str(", ");
            }
            chain.push_str(entry);
        }
    }
    // Walk back from the peer: each trusted hop vouches for the one before it. The first hop
    // that is not trusted is the client; an entry that is not an address ends the walk at the
    // last hop that could be read.
    let mut client = peer;
    for entry in chain.rsplit(", ") {
        match parse_entry(entry) {
            Some(ip) if trusted.contains(client) => {
                client = ip;
            }
            _ => break,
        }
    }
    if !chain.is_empty() {
        chain.push_str(", ");
    }
    chain.push_str(&address_text(peer));
    Forwarding {
        x_forwarded_for: chain,
        client,
        peer_trusted: true,
    }
}

/// An `X-Forwarded-For` entry: an address, maybe with a port (`192.0.2.1:4711`, `[2001:db8::1]:80`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = IpAddr::from_str(entry) {
        return Some(canonical(ip));
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (ip, _) = rest.split_once(']')?;
        return IpAddr::from_str(ip).ok().map(canonical);
    }
    let (ip, port) = entry.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    std::net::Ipv4Addr::from_str(ip).ok().map(IpAddr::V4)
}

/// `ip` as `Display` writes it. An IPv4 address (nearly every peer) is written digit by digit:
/// through `Display` its four octets went through the formatter's padding machinery, about a
/// thousand instructions on every request.
fn address_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

/// IPv4-mapped IPv6 (`::ffff:10.0.0.1`, what a dual-stack socket reports) as plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted() -> TrustedProxies {
        TrustedProxies::parse(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]).unwrap()
    }

    #[test]
    fn parses_networks_and_addresses() {
        let t = trusted();
        assert!(t.contains(ip("10.1.2.3")));
        assert!(t.contains(ip("::ffff:10.1.2.3")));
        assert!(t.contains(ip("192.0.2.7")));
        assert!(!t.contains(ip("192.0.2.8")));
        assert!(t.contains(ip("2001:db8::5")));
        assert!(!t.contains(ip("2001:db9::5")));
        assert_eq!(
            TrustedProxies::parse(["10.0.0.0/33"]),
            Err(BadNetwork("10.0.0.0/33".into()))
        );
        assert!(TrustedProxies::parse(["example.com"]).is_err());
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let f = forwarding(ip("203.0.113.9"), &trusted(), &[b"1.2.3.4"]);
        assert_eq!(f.x_forwarded_for, "203.0.113.9");
        assert_eq!(f.client, ip("203.0.113.9"));
        assert!(!f.peer_trusted);
    }

    #[test]
    fn a_trusted_peer_keeps_the_chain_and_names_the_client() {
        let f = forwarding(ip("10.0.0.2"), &trusted(), &[b"198.51.100.4, 10.9.9.9"]);
        assert_eq!(f.x_forwarded_for, "198.51.100.4, 10.9.9.9, 10.0.0.2");
        assert_eq!(f.client, ip("198.51.100.4"));
        assert!(f.peer_trusted);
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for octet in 0..=255u8 {
            for ip in [
                IpAddr::from([octet, 0, 9, 255]),
                IpAddr::from([10, octet, 100, 1]),
                IpAddr::from([255, 99, octet, 10]),
                IpAddr::from([1, 20, 199, octet]),
            ] {
                assert_eq!(address_text(ip), ip.to_string());
            }
        }
        for ip in ["::1", "2001:db8::9", "::ffff:203.0.113.9", "fe80::1:2:3:4"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(address_text(ip), ip.to_string());
        }
    }

    #[test]
    fn the_client_text_is_the_client_address_as_displayed() {
        for (peer, claimed, client) in [
            ("203.0.113.9", &b"1.2.3.4"[..], "203.0.113.9"),
            ("::ffff:203.0.113.9", b"", "203.0.113.9"),
            ("2001:db9::5", b"", "2001:db9::5"),
            ("10.0.0.2", b"198.51.100.4, 10.9.9.9", "198.51.100.4"),
            ("10.0.0.2", b"2001:db8::9", "2001:db8::9"),
        ] {
            let f = forwarding(ip(peer), &trusted(), &[claimed]);
            assert_eq!(f.client_text(), f.client.to_string());
            assert_eq!(f.client_text(), client);
        }
    }

    #[test]
    fn a_forged_left_entry_is_not_believed() {
        // The client (198.51.100.4) claimed 1.1.1.1 itself; the balancer appended the client.
        let f = forwarding(ip("10.0.0.2"), &trusted(), &[b"1.1.1.1, 198.51.100.4"]);
        assert_eq!(f.client, ip("198.51.100.4"));
    }

    #[test]
    fn several_header_lines_and_ports() {
        let f = forwarding(
            ip("10.0.0.2"),
            &trusted(),
            &[b"198.51.100.4:5000", b"[2001:db8::9]:443"],
        );
        assert_eq!(
            f.x_forwarded_for,
            "198.51.100.4:5000, [2001:db8::9]:443, 10.0.0.2"
        );
        assert_eq!(f.client, ip("198.51.100.4"));
    }

    #[test]
    fn garbage_stops_the_walk() {
        let f = forwarding(ip("10.0.0.2"), &trusted(), &[b"198.51.100.4, unknown"]);
        assert_eq!(f.client, ip("10.0.0.2"));
        let f = forwarding(ip("10.0.0.2"), &trusted(), &[]);
        assert_eq!(f.x_forwarded_for, "10.0.0.2");
        assert_eq!(f.client, ip("10.0.0.2"));
    }
}
