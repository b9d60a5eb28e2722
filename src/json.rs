//! JSON written by hand, for the lines and envelopes made on every request or event: the same
//! bytes serde_json writes (tests hold each writer to serde's output), without serde's per-key
//! machinery, which escapes every member name every time.

use std::fmt::Display;
use std::io::Write;

/// `s` as a JSON string, quoted and escaped as serde_json escapes it (control characters, `"`
/// and `\\`); most strings have none of those and are copied as they are.
pub fn json_str(out: &mut Vec<u8>, s: &str) {
    if !needs_escape(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a str into a Vec cannot fail.
        let _ = serde_json::to_writer(out, s);
    }
}

/// Whether any byte of `s` is one JSON escapes: below 0x20, `"` or `\\`. Eight bytes at a time:
/// per 64-bit word, the classic "has a byte less than n" and "has a zero byte" tests (exact for
/// the word as a whole, n ≤ 128), the zero test applied to the word xor each character.
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_less = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH != 0;
    let has_zero = |x: u64| has_less(x, 1);
    let mut words = s.chunks_exact(8);
    for word in &mut words {
        let Ok(bytes) = <[u8; 8]>::try_from(word) else {
            return true;
        };
        let x = u64::from_le_bytes(bytes);
        if has_less(x, 0x20)
            || has_zero(x ^ (ONES * u64::from(b'"')))
            || has_zero(x ^ (ONES * u64::from(b'\\')))
        {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// A JSON object's members written in order. Keys are the caller's literals; values are
/// escaped. Absent optional members are left out, as serde's `skip_serializing_if` does.
pub struct Object<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> Object<'a> {
    pub fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, empty: true }
    }

    fn key(&mut self, key: &str) {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        json_str(self.out, key);
        self.out.push(b':');
    }

    pub fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        json_str(self.out, value);
    }

    pub fn opt_str(&mut self, key: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.str(key, value);
        }
    }

    pub fn uint(&mut self, key: &str, value: u64) {
        self.key(key);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    pub fn opt_uint(&mut self, key: &str, value: Option<u64>) {
        if let Some(value) = value {
            self.uint(key, value);
        }
    }

    /// Through serde_json itself, so the text is its formatter's (which changed from ryu to
    /// zmij within serde_json 1.x: `1e22` against `1e+22`); `null` when not finite.
    pub fn float(&mut self, key: &str, value: f64) {
        self.key(key);
        let _ = serde_json::to_writer(&mut *self.out, &value);
    }

    /// A value's `Display` text as a JSON string (serde's `collect_str`).
    pub fn opt_display(&mut self, key: &str, value: Option<impl Display>) {
        if let Some(value) = value {
            self.key(key);
            let mut text = Vec::with_capacity(48);
            let _ = write!(text, "{value}");
            match std::str::from_utf8(&text) {
                Ok(text) => json_str(self.out, text),
                Err(_) => self.out.extend_from_slice(b"null"),
            }
        }
    }

    pub fn close(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn strings_are_written_as_serde_writes_them(s in "\\PC*|[\\x00-\\x7f]{0,40}|[a-z\"\\\\\\x00-\\x1f\\x7f-\\u{a0}]{0,40}") {
            let mut out = Vec::new();
            json_str(&mut out, &s);
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&s).unwrap());
        }
    }

    #[test]
    fn every_byte_that_needs_escaping_is_found_at_every_position() {
        for b in 0u8..=0x7f {
            let escaped = b < 0x20 || b == b'"' || b == b'\\';
            for len in 1..=24 {
                for at in 0..len {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    assert_eq!(needs_escape(&s), escaped, "byte {b:#x} at {at} of {len}");
                }
            }
        }
        // Bytes of multi-byte characters never need escaping.
        assert!(!needs_escape("é😀ÿ€ 0x80-0xff".as_bytes()));
    }
}
