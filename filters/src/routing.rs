//! Longest-prefix tables over request paths, matching whole segments only: the prefix `/api/fx`
//! matches `/api/fx` and `/api/fx/quote`, never `/api/fxyz`.

#[derive(Debug, Clone)]
pub struct PrefixTable<T> {
    /// Longest prefix first, so the first match is the longest.
    entries: Vec<(String, T)>,
}

impl<T> PrefixTable<T> {
    pub fn new(entries: impl IntoIterator<Item = (String, T)>) -> Self {
        let mut entries: Vec<_> = entries.into_iter().collect();
        entries.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Self { entries }
    }

    /// The entry with the longest prefix matching `path`, and that prefix.
    pub fn lookup(&self, path: &str) -> Option<(&str, &T)> {
        self.entries
            .iter()
            .find(|(prefix, _)| prefix_matches(prefix, path))
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
    fn no_match_without_a_root_route() {
        let table = PrefixTable::new([("/api".to_string(), ())]);
        assert!(table.lookup("/apix").is_none());
        assert!(table.lookup("/").is_none());
        assert!(table.lookup("/api").is_some());
    }
}
