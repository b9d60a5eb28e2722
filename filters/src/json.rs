//! A JSON string as serde_json writes it, without its per-byte escaping loop for the strings
//! (nearly all) that need none: for text written on every request (records, lines, envelopes).

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

/// `s`, which has nothing to escape by how it was made (a UUID, an RFC 3339 time), as a JSON
/// string: quoted as it stands, without looking for escapes (debug builds check).
pub fn json_str_plain(out: &mut Vec<u8>, s: &str) {
    debug_assert!(!needs_escape(s.as_bytes()), "{s:?}");
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// `s` escaped as inside a JSON string ([`json_str`] without the quotes), for a string written
/// in pieces.
pub fn json_str_contents(out: &mut Vec<u8>, s: &str) {
    if !needs_escape(s.as_bytes()) {
        out.extend_from_slice(s.as_bytes());
    } else {
        let start = out.len();
        // Writing a str into a Vec cannot fail; it writes the quotes too, taken off again.
        let _ = serde_json::to_writer(&mut *out, s);
        out.pop();
        out.remove(start);
    }
}

/// Whether any byte of `s` is one JSON escapes: below 0x20, `"` or `\\`. A word at a time with
/// the classic "has a byte less than n" and "has a zero byte" tests (exact for the word as a
/// whole, n ≤ 128), the zero test applied to the word xor each character, the three or-ed
/// without branching. The last word overlaps the one before it instead of a byte-by-byte tail
/// (which cost as much as the words): rechecking a byte cannot change the answer.
fn needs_escape(s: &[u8]) -> bool {
    let n = s.len();
    if n >= 8 {
        let word = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&s[at..at + 8]);
            u64::from_le_bytes(bytes)
        };
        let last = n - 8;
        let mut at = 0;
        while at < last {
            if flagged64(word(at)) {
                return true;
            }
            at += 8;
        }
        flagged64(word(last))
    } else if n >= 4 {
        let word = |at: usize| {
            let mut bytes = [0u8; 4];
            bytes.copy_from_slice(&s[at..at + 4]);
            u32::from_le_bytes(bytes)
        };
        flagged32(word(0)) || flagged32(word(n - 4))
    } else {
        s.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
    }
}

macro_rules! flagged {
    ($name:ident, $t:ty) => {
        /// Whether a byte of `x` is below 0x20, `"` or `\\`.
        #[inline(always)]
        fn $name(x: $t) -> bool {
            const ONES: $t = <$t>::MAX / 0xff;
            const HIGH: $t = ONES * 0x80;
            let zero = |y: $t| y.wrapping_sub(ONES) & !y;
            let control = x.wrapping_sub(ONES * 0x20) & !x;
            let quote = zero(x ^ (ONES * b'"' as $t));
            let backslash = zero(x ^ (ONES * b'\\' as $t));
            (control | quote | backslash) & HIGH != 0
        }
    };
}
flagged!(flagged64, u64);
flagged!(flagged32, u32);

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

        #[test]
        fn contents_are_the_string_without_its_quotes(prefix in "[a-z\"]{0,3}", s in "\\PC*|[a-z\"\\\\\\x00-\\x1f\\x7f-\\u{a0}]{0,40}") {
            let mut out = prefix.clone().into_bytes();
            json_str_contents(&mut out, &s);
            let quoted = serde_json::to_string(&s).unwrap();
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), format!("{prefix}{}", &quoted[1..quoted.len() - 1]));
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
