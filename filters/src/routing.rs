//! Longest-prefix tables over request paths, matching whole segments only: the prefix `/api/fx`
//! matches `/api/fx` and `/api/fx/quote`, never `/api/fxyz`.

#[derive(Debug, Clone)]
pub struct PrefixTable<T> {
    /// Longest prefix first, so the first match is the longest.
    entries: Vec<(String, T)>,
    ignore_case: bool,
}

impl<T> PrefixTable<T> {
    pub fn new(entries: impl IntoIterator<Item = (String, T)>) -> Self {
        let mut entries: Vec<_> = entries.into_iter().collect();
        entries.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Self {
            entries,
            ignore_case: false,
        }
    }

    /// A table whose prefixes match regardless of ASCII case. For checks that must hold however
    /// a case-insensitive upstream (ASP.NET routing, for one) would read the path.
    pub fn new_ignoring_case(entries: impl IntoIterator<Item = (String, T)>) -> Self {
        Self {
            ignore_case: true,
            ..Self::new(entries)
        }
    }

    /// The entry with the longest prefix matching `path`, and that prefix.
    pub fn lookup(&self, path: &str) -> Option<(&str, &T)> {
        self.entries
            .iter()
            .find(|(prefix, _)| {
                if self.ignore_case {
                    prefix_matches_ignoring_case(prefix, path)
                } else {
                    prefix_matches(prefix, path)
                }
            })
            .map(|(prefix, value)| (prefix.as_str(), value))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    let Some(rest) = path.strip_prefix(prefix) else {
        return false;
    };
    rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/')
}

pub fn prefix_matches_ignoring_case(prefix: &str, path: &str) -> bool {
    let (p, q) = (prefix.as_bytes(), path.as_bytes());
    if q.len() < p.len() || !q[..p.len()].eq_ignore_ascii_case(p) {
        return false;
    }
    let rest = &q[p.len()..];
    rest.is_empty() || prefix.ends_with('/') || rest[0] == b'/'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_whole_segment_prefix_wins() {
        let table = PrefixTable::new([
            ("/".to_string(), "root"),
            ("/api".to_string(), "api"),
            ("/api/fx".to_string(), "fx"),
            ("/api/payments/".to_string(), "payments"),
        ]);
        let pick = |p| table.lookup(p).map(|(_, v)| *v);
        assert_eq!(pick("/api/fx/quote"), Some("fx"));
        assert_eq!(pick("/api/fx"), Some("fx"));
        assert_eq!(pick("/api/fxyz"), Some("api"));
        assert_eq!(pick("/api/payments/1"), Some("payments"));
        assert_eq!(pick("/api/payments"), Some("api"));
        assert_eq!(pick("/other"), Some("root"));
        assert_eq!(
            table.lookup("/api/fx/quote").map(|(p, _)| p),
            Some("/api/fx")
        );
    }

    #[test]
    fn case_insensitive_tables_match_any_case() {
        let table = PrefixTable::new_ignoring_case([("/api/payments".to_string(), ())]);
        assert!(table.lookup("/API/Payments/1").is_some());
        assert!(table.lookup("/api/payments").is_some());
        assert!(table.lookup("/api/paymentsx").is_none());
        assert!(table.lookup("/api").is_none());
        let exact = PrefixTable::new([("/api/payments".to_string(), ())]);
        assert!(exact.lookup("/API/payments").is_none());
    }

    #[test]
    fn no_match_without_a_root_route() {
        let table = PrefixTable::new([("/api".to_string(), ())]);
        assert!(table.lookup("/apix").is_none());
        assert!(table.lookup("/").is_none());
        assert!(table.lookup("/api").is_some());
    }
}
