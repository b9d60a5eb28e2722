//! Which certificate serves a TLS server name (SNI), and whether a certificate's names cover a
//! host: exact names first, then a wildcard, then the default (the first certificate listed, also
//! for handshakes that send no server name).
//!
//! A wildcard `*.smartpay.com` covers exactly one label (`blue.smartpay.com`, not
//! `smartpay.com` nor `a.blue.smartpay.com`), as certificate verification (RFC 6125) reads it: a
//! certificate is never chosen for a name a client would refuse it for.

use std::collections::HashMap;

/// A host pattern: `blue.smartpay.com` or `*.smartpay.com`, lower case, no trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    Exact(String),
    /// The domain under the `*.`: `smartpay.com` for `*.smartpay.com`.
    Wildcard(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPatternError {
    #[error("{0:?} is not a host name or a wildcard like *.example.com")]
    Malformed(String),
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<Self, HostPatternError> {
        let malformed = || HostPatternError::Malformed(text.to_string());
        let lowered = text.trim().trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, name) = match lowered.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lowered.as_str()),
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(is_label) {
            return Err(malformed());
        }
        // `*.com` would cover every name under a top-level domain: no certificate authority
        // issues that, and no operator means it.
        if wildcard && !name.contains('.') {
            return Err(malformed());
        }
        Ok(if wildcard {
            Self::Wildcard(name.to_string())
        } else {
            Self::Exact(name.to_string())
        })
    }

    /// Whether this pattern (a certificate's name) covers `host` (a name or another pattern):
    /// an exact name covers itself; a wildcard covers itself and every name one label under it.
    pub fn covers(&self, host: &HostPattern) -> bool {
        match (self, host) {
            (Self::Exact(a), Self::Exact(b)) | (Self::Wildcard(a), Self::Wildcard(b)) => a == b,
            (Self::Wildcard(domain), Self::Exact(name)) => parent(name) == Some(domain.as_str()),
            (Self::Exact(_), Self::Wildcard(_)) => false,
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Wildcard(domain) => write!(f, "*.{domain}"),
        }
    }
}

/// Server names to entries (certificates), by index into the list the table was built from.
#[derive(Debug, Clone, Default)]
pub struct ServerNameTable {
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
}

impl ServerNameTable {
    /// Builds the table from each entry's patterns. Returns the first pattern claimed twice, with
    /// the indices of both entries, if any.
    pub fn new<'a>(
        entries: impl IntoIterator<Item = &'a [HostPattern]>,
    ) -> Result<Self, (HostPattern, usize, usize)> {
        let mut table = Self::default();
        for (index, patterns) in entries.into_iter().enumerate() {
            for pattern in patterns {
                let (map, key) = match pattern {
                    HostPattern::Exact(name) => (&mut table.exact, name),
                    HostPattern::Wildcard(domain) => (&mut table.wildcard, domain),
                };
                if let Some(&first) = map.get(key)
                    && first != index
                {
                    return Err((pattern.clone(), first, index));
                }
                map.insert(key.clone(), index);
            }
        }
        Ok(table)
    }

    /// The entry for `server_name`, or `None` for the default. Names are compared without case
    /// and without a trailing dot.
    pub fn lookup(&self, server_name: &str) -> Option<usize> {
        let name = server_name.strip_suffix('.').unwrap_or(server_name);
        let lowered;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = name.to_ascii_lowercase();
            lowered.as_str()
        } else {
            name
        };
        if let Some(&index) = self.exact.get(name) {
            return Some(index);
        }
        parent(name).and_then(|domain| self.wildcard.get(domain).copied())
    }
}

/// `smartpay.com` for `blue.smartpay.com`; `None` for a single label.
fn parent(name: &str) -> Option<&str> {
    name.split_once('.').map(|(_, rest)| rest)
}

fn is_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> HostPattern {
        HostPattern::parse(text).unwrap()
    }

    #[test]
    fn parses_names_and_wildcards() {
        assert_eq!(
            p("Blue.SmartPay.com."),
            HostPattern::Exact("blue.smartpay.com".into())
        );
        assert_eq!(
            p("*.smartpay.com"),
            HostPattern::Wildcard("smartpay.com".into())
        );
        for bad in [
            "",
            "*",
            "*.com",
            "a.*.com",
            "blue..com",
            "-a.com",
            "a b.com",
            "*.*.com",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(p("*.smartpay.com").to_string(), "*.smartpay.com");
    }

    #[test]
    fn a_wildcard_covers_one_label() {
        let wild = p("*.smartpay.com");
        assert!(wild.covers(&p("blue.smartpay.com")));
        assert!(wild.covers(&p("*.smartpay.com")));
        assert!(!wild.covers(&p("smartpay.com")));
        assert!(!wild.covers(&p("a.blue.smartpay.com")));
        assert!(!wild.covers(&p("*.blue.smartpay.com")));
        assert!(!p("blue.smartpay.com").covers(&p("*.smartpay.com")));
        assert!(p("blue.smartpay.com").covers(&p("blue.smartpay.com")));
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let certs = [
            vec![p("api.smartpay.com")],
            vec![p("*.smartpay.com")],
            vec![p("blue.smartpay.com"), p("*.blue.smartpay.com")],
        ];
        let table = ServerNameTable::new(certs.iter().map(Vec::as_slice)).unwrap();
        assert_eq!(table.lookup("blue.smartpay.com"), Some(2));
        assert_eq!(table.lookup("BLUE.smartpay.com."), Some(2));
        assert_eq!(table.lookup("green.smartpay.com"), Some(1));
        assert_eq!(table.lookup("x.blue.smartpay.com"), Some(2));
        assert_eq!(table.lookup("api.smartpay.com"), Some(0));
        assert_eq!(table.lookup("a.b.smartpay.com"), None);
        assert_eq!(table.lookup("smartpay.com"), None);
        assert_eq!(table.lookup("other.example"), None);
    }

    #[test]
    fn a_name_claimed_twice_is_refused() {
        let certs = [vec![p("blue.smartpay.com")], vec![p("BLUE.smartpay.com")]];
        let err = ServerNameTable::new(certs.iter().map(Vec::as_slice)).unwrap_err();
        assert_eq!(err, (p("blue.smartpay.com"), 0, 1));
        let wild = [vec![p("*.a.com")], vec![p("x.a.com")], vec![p("*.a.com")]];
        assert_eq!(
            ServerNameTable::new(wild.iter().map(Vec::as_slice)).unwrap_err(),
            (p("*.a.com"), 0, 2)
        );
    }
}
