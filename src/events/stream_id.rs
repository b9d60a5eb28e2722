//! An event's position in its tenant's history: `<milliseconds>-<sequence>`, the shape of a Redis
//! Stream entry id, used by the in-memory history too so that clients see one format.
//!
//! Positions are compared as numbers, never as text (`1-10` comes after `1-9`).

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    /// Before the first entry of any stream: resuming from here asks for all of it.
    pub const START: Self = Self::new(0, 0);

    pub const fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }

    /// The id a stream whose last id is `self` gives the next entry added at `now_ms`, as Redis
    /// does: the clock's millisecond, or the same millisecond with the next sequence when the
    /// clock has not moved on (or went back).
    pub fn next_at(self, now_ms: u64) -> Self {
        if now_ms > self.ms {
            Self::new(now_ms, 0)
        } else {
            Self::new(self.ms, self.seq.saturating_add(1))
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAStreamId;

impl fmt::Display for NotAStreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a stream id like 1764700000000-0")
    }
}

impl FromStr for StreamId {
    type Err = NotAStreamId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = s.split_once('-').ok_or(NotAStreamId)?;
        let number = |part: &str| {
            (!part.is_empty() && part.len() <= 20 && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<u64>().ok())
                .flatten()
                .ok_or(NotAStreamId)
        };
        Ok(Self::new(number(ms)?, number(seq)?))
    }
}

/// The envelope `json` (a JSON object) with its position as the first attribute:
/// `{"streamid":"<id>",…`. The Redis publish script writes the same bytes for live events, so a
/// replayed event and a live one are identical.
pub fn stamp(json: &str, id: StreamId) -> String {
    let rest = json.strip_prefix('{').unwrap_or(json);
    let (mut ms, mut seq) = (itoa::Buffer::new(), itoa::Buffer::new());
    let (ms, seq) = (ms.format(id.ms), seq.format(id.seq));
    let mut out = String::with_capacity(16 + ms.len() + seq.len() + rest.len());
    out.push_str("{\"streamid\":\"");
    out.push_str(ms);
    out.push('-');
    out.push_str(seq);
    out.push_str("\",");
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_print_and_order_as_numbers() {
        let a: StreamId = "1764700000000-9".parse().unwrap();
        let b: StreamId = "1764700000000-10".parse().unwrap();
        assert!(a < b, "compared as numbers, not text");
        assert_eq!(b.to_string(), "1764700000000-10");
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "1",
            "1-2-3",
            "a-1",
            "1-+2",
            " 1-2",
            "99999999999999999999999-0",
        ] {
            assert_eq!(bad.parse::<StreamId>(), Err(NotAStreamId), "{bad:?}");
        }
    }

    #[test]
    fn the_next_id_follows_the_clock_and_never_goes_back() {
        let last = StreamId::new(100, 3);
        assert_eq!(last.next_at(101), StreamId::new(101, 0));
        assert_eq!(last.next_at(100), StreamId::new(100, 4));
        assert_eq!(last.next_at(50), StreamId::new(100, 4), "a clock step back");
    }

    #[test]
    fn a_stamp_is_the_first_attribute_and_keeps_the_json_valid() {
        let json = r#"{"specversion":"1.0","id":"x"}"#;
        let stamped = stamp(json, StreamId::new(5, 1));
        assert_eq!(
            stamped,
            r#"{"streamid":"5-1","specversion":"1.0","id":"x"}"#
        );
        let v: serde_json::Value = serde_json::from_str(&stamped).unwrap();
        assert_eq!(v["streamid"], "5-1");
    }
}
