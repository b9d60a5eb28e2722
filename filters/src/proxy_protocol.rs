//! The PROXY protocol header (v1 text or v2 binary, HAProxy's spec) a load balancer sends before
//! anything else on a connection, naming the client it accepted. Parsing is the `ppp` crate's;
//! this decides what the bytes read so far mean for the connection.

use std::net::SocketAddr;

use ppp::{HeaderResult, v1, v2};

/// The longest header accepted: v1 is at most 107 bytes; v2 carries TLVs, which are skipped,
/// but a balancer has no reason to send kilobytes of them.
pub const MAX_HEADER_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// More bytes are needed to decide.
    Incomplete,
    /// Not a PROXY header, or a malformed one: the connection is closed.
    Invalid,
    /// A whole header of `length` bytes. `client` is the source it names; `None` for v1
    /// `UNKNOWN` and v2 `LOCAL` (the balancer's own health checks), where the connection's own
    /// peer stands.
    Complete {
        length: usize,
        client: Option<SocketAddr>,
    },
}

const V1_PREFIX: &[u8] = b"PROXY ";
/// v1 lines are at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
const V2_FIXED: usize = 16;

/// What the first bytes of a connection, `input`, hold. Framing (where the header ends) is
/// decided here so that a partial header is never mistaken for a bad one; the header itself is
/// parsed by `ppp`.
pub fn parse(input: &[u8]) -> ProxyHeader {
    let length = match frame(input) {
        Framing::Need => return ProxyHeader::Incomplete,
        Framing::Invalid => return ProxyHeader::Invalid,
        Framing::Header(length) => length,
    };
    let header = &input[..length];
    let client = match HeaderResult::parse(header) {
        HeaderResult::V1(Ok(h)) if h.header.len() == length => v1_client(&h.addresses),
        HeaderResult::V2(Ok(h)) if h.len() == length => match h.command {
            v2::Command::Local => None,
            v2::Command::Proxy => v2_client(&h.addresses),
        },
        _ => return ProxyHeader::Invalid,
    };
    ProxyHeader::Complete { length, client }
}

enum Framing {
    Need,
    Invalid,
    Header(usize),
}

fn frame(input: &[u8]) -> Framing {
    let starts = |prefix: &[u8]| {
        let n = input.len().min(prefix.len());
        input[..n] == prefix[..n]
    };
    if input.is_empty() {
        Framing::Need
    } else if starts(V2_SIGNATURE) {
        if input.len() < V2_FIXED {
            return Framing::Need;
        }
        let length = V2_FIXED + usize::from(u16::from_be_bytes([input[14], input[15]]));
        if length > MAX_HEADER_BYTES {
            Framing::Invalid
        } else if input.len() < length {
            Framing::Need
        } else {
            Framing::Header(length)
        }
    } else if starts(V1_PREFIX) {
        match input.windows(2).position(|w| w == b"\r\n") {
            Some(end) if end + 2 <= V1_MAX => Framing::Header(end + 2),
            Some(_) => Framing::Invalid,
            None if input.len() >= V1_MAX => Framing::Invalid,
            None => Framing::Need,
        }
    } else {
        Framing::Invalid
    }
}

fn v1_client(addresses: &v1::Addresses) -> Option<SocketAddr> {
    match addresses {
        v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Unknown => None,
    }
}

fn v2_client(addresses: &v2::Addresses) -> Option<SocketAddr> {
    match addresses {
        v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_header(command: u8, body: &[u8]) -> Vec<u8> {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.push(command);
        h.push(if body.is_empty() { 0x00 } else { 0x11 }); // TCP over IPv4
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn v1_tcp4_and_tcp6() {
        let line = b"PROXY TCP4 198.51.100.4 10.0.0.1 51000 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(line),
            ProxyHeader::Complete {
                length: 44,
                client: Some("198.51.100.4:51000".parse().unwrap())
            }
        );
        let line = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\n";
        assert_eq!(
            parse(line),
            ProxyHeader::Complete {
                length: line.len(),
                client: Some("[2001:db8::1]:4000".parse().unwrap())
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            ProxyHeader::Complete {
                length: 15,
                client: None
            }
        );
    }

    #[test]
    fn partial_headers_need_more() {
        let line = b"PROXY TCP4 198.51.100.4 10.0.0.1 51000 443\r\n";
        for cut in 1..line.len() {
            assert_eq!(parse(&line[..cut]), ProxyHeader::Incomplete, "cut {cut}");
        }
        let v2 = v2_header(0x21, &[198, 51, 100, 4, 10, 0, 0, 1, 0xc7, 0x38, 1, 187]);
        for cut in 1..v2.len() {
            assert_eq!(parse(&v2[..cut]), ProxyHeader::Incomplete, "cut {cut}");
        }
    }

    #[test]
    fn v2_proxy_and_local() {
        let mut bytes = v2_header(0x21, &[198, 51, 100, 4, 10, 0, 0, 1, 0xc7, 0x38, 1, 187]);
        let length = bytes.len();
        bytes.extend_from_slice(b"\x16\x03\x01"); // a TLS record follows
        assert_eq!(
            parse(&bytes),
            ProxyHeader::Complete {
                length,
                client: Some("198.51.100.4:51000".parse().unwrap())
            }
        );
        assert_eq!(
            parse(&v2_header(0x20, &[])),
            ProxyHeader::Complete {
                length: 16,
                client: None
            }
        );
    }

    #[test]
    fn anything_else_is_invalid() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), ProxyHeader::Invalid);
        assert_eq!(parse(b"\x16\x03\x01\x02\x00"), ProxyHeader::Invalid);
        assert_eq!(parse(b"PROXY TCP4 nonsense\r\n"), ProxyHeader::Invalid);
        assert_eq!(parse(&[b'P'; 2000]), ProxyHeader::Invalid);
    }
}
