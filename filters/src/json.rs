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
