//! Checks on a request head before anything else reads it: its size and header count within the
//! configured limits, and a body length that every hop reads the same way.
//!
//! Request smuggling needs two parsers that disagree on where a body ends. payedge's parser and
//! its providers' can only agree when a request states its length once: `Content-Length` and
//! `Transfer-Encoding` together, or `Content-Length` twice (even with equal values, which some
//! servers join into `n, n` and others refuse), are refused and the connection closed, as
//! RFC 9112 §6.3 allows and HAProxy and Envoy do.

/// Limits on one request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Request line plus every header line, counted as sent (`name: value\r\n`).
    pub max_header_bytes: usize,
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 32 * 1024,
            max_headers: 100,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadRefusal {
    /// Larger than `max_header_bytes`.
    TooLarge,
    /// More header lines than `max_headers`.
    TooManyHeaders,
    /// `Content-Length` with `Transfer-Encoding`, or `Content-Length` more than once.
    AmbiguousLength,
}

impl HeadRefusal {
    pub fn http_status(self) -> u16 {
        match self {
            Self::TooLarge | Self::TooManyHeaders => 431,
            Self::AmbiguousLength => 400,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::TooLarge => "request_header_too_large",
            Self::TooManyHeaders => "too_many_headers",
            Self::AmbiguousLength => "ambiguous_body_length",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::TooLarge => "the request's headers are larger than this gateway accepts",
            Self::TooManyHeaders => "the request has more headers than this gateway accepts",
            Self::AmbiguousLength => {
                "the request states its body length more than once (Content-Length with \
                 Transfer-Encoding, or Content-Length twice); send exactly one"
            }
        }
    }
}

/// Checks a head: `request_line_bytes` is the length of `METHOD target VERSION`, `headers` every
/// header as received (names in any case).
pub fn check<'a>(
    limits: &HeadLimits,
    request_line_bytes: usize,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<(), HeadRefusal> {
    let (mut bytes, mut count) = (request_line_bytes + 2, 0usize);
    let (mut lengths, mut encodings) = (0usize, 0usize);
    for (name, value) in headers {
        count += 1;
        bytes += name.len() + value.len() + 4;
        if name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            encodings += 1;
        }
    }
    if bytes > limits.max_header_bytes {
        return Err(HeadRefusal::TooLarge);
    }
    if count > limits.max_headers {
        return Err(HeadRefusal::TooManyHeaders);
    }
    if lengths > 1 || (lengths == 1 && encodings > 0) {
        return Err(HeadRefusal::AmbiguousLength);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(pairs: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static [u8])> {
        pairs.iter().map(|(n, v)| (*n, v.as_bytes())).collect()
    }

    #[test]
    fn a_plain_request_passes() {
        let h = head(&[("Host", "a"), ("Content-Length", "3")]);
        assert_eq!(check(&HeadLimits::default(), 20, h), Ok(()));
        let chunked = head(&[("Host", "a"), ("Transfer-Encoding", "chunked")]);
        assert_eq!(check(&HeadLimits::default(), 20, chunked), Ok(()));
    }

    #[test]
    fn a_body_length_stated_twice_is_refused_whatever_the_case_or_values() {
        for pairs in [
            &[("Content-Length", "3"), ("transfer-encoding", "chunked")][..],
            &[("content-length", "3"), ("Content-Length", "3")][..],
            &[("Content-Length", "3"), ("CONTENT-LENGTH", "4")][..],
            &[("Transfer-Encoding", "chunked"), ("Content-Length", "0")][..],
        ] {
            assert_eq!(
                check(&HeadLimits::default(), 20, head(pairs)),
                Err(HeadRefusal::AmbiguousLength),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn size_counts_the_request_line_and_every_header_line() {
        let limits = HeadLimits {
            max_header_bytes: 40,
            max_headers: 10,
        };
        // "GET / HTTP/1.1" (14) + CRLF + "Host: abc\r\n" (11) = 27; "X-A: " + 9 + CRLF = 16 → 43;
        // with a 6-byte value, 40.
        assert_eq!(check(&limits, 14, head(&[("Host", "abc")])), Ok(()));
        assert_eq!(
            check(&limits, 14, head(&[("Host", "abc"), ("X-A", "123456789")])),
            Err(HeadRefusal::TooLarge)
        );
        assert_eq!(
            check(&limits, 14, head(&[("Host", "abc"), ("X-A", "123456")])),
            Ok(()),
            "exactly at the limit"
        );
    }

    #[test]
    fn the_header_count_is_bounded() {
        let limits = HeadLimits {
            max_header_bytes: 1 << 20,
            max_headers: 3,
        };
        let three = head(&[("A", "1"), ("B", "2"), ("C", "3")]);
        assert_eq!(check(&limits, 10, three), Ok(()));
        let four = head(&[("A", "1"), ("B", "2"), ("C", "3"), ("D", "4")]);
        assert_eq!(check(&limits, 10, four), Err(HeadRefusal::TooManyHeaders));
    }
}
