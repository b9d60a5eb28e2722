//! Checks on a request head before anything else reads it: its size and header count within the
//! configured limits, a stated body length within the limit on bodies, a body length that every hop reads the same way, and the Host every
//! HTTP/1.1 request must carry (RFC 9112 §3.2: a server MUST answer 400 without one; a gateway
//! would otherwise pass on a request without the Host its own HTTP/1.1 request must have).
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
    /// The largest request body, whether its `Content-Length` states it (checked here) or its
    /// chunks add up to it (counted by the proxy as they arrive).
    pub max_body_bytes: u64,
}

impl Default for HeadLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_body_bytes: 1024 * 1024,
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
    /// An HTTP/1.1 request without `Host`.
    HostMissing,
    /// A body larger than `max_body_bytes`.
    BodyTooLarge,
}

impl HeadRefusal {
    pub fn http_status(self) -> u16 {
        match self {
            Self::TooLarge | Self::TooManyHeaders => 431,
            Self::AmbiguousLength | Self::HostMissing => 400,
            Self::BodyTooLarge => 413,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::TooLarge => "request_header_too_large",
            Self::TooManyHeaders => "too_many_headers",
            Self::AmbiguousLength => "ambiguous_body_length",
            Self::HostMissing => "host_missing",
            Self::BodyTooLarge => "request_body_too_large",
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
            Self::HostMissing => "an HTTP/1.1 request must carry a Host header",
            Self::BodyTooLarge => "the request's body is larger than this gateway accepts",
        }
    }
}

/// Checks a head: `request_line_bytes` is the length of `METHOD target VERSION`, `headers` every
/// header as received (names in any case); `host_required` for HTTP/1.1.
pub fn check<'a>(
    limits: &HeadLimits,
    request_line_bytes: usize,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    host_required: bool,
) -> Result<(), HeadRefusal> {
    let (mut bytes, mut count) = (request_line_bytes + 2, 0usize);
    let (mut lengths, mut encodings, mut hosts) = (0usize, 0usize, 0usize);
    let mut length: &[u8] = b"";
    for (name, value) in headers {
        count += 1;
        bytes += name.len() + value.len() + 4;
        if name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            length = value;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            encodings += 1;
        } else if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        }
    }
    if bytes > limits.max_header_bytes {
        return Err(HeadRefusal::TooLarge);
    }
    if count > limits.max_headers {
        return Err(HeadRefusal::TooManyHeaders);
    }
    // A list in one line (`Content-Length: 5, 5`, which Pingora's parser merges) states the
    // length more than once too.
    if lengths > 1 || (lengths == 1 && (encodings > 0 || length.contains(&b','))) {
        return Err(HeadRefusal::AmbiguousLength);
    }
    if host_required && hosts == 0 {
        return Err(HeadRefusal::HostMissing);
    }
    if lengths == 1 && stated_length(length).is_none_or(|n| n > limits.max_body_bytes) {
        return Err(HeadRefusal::BodyTooLarge);
    }
    Ok(())
}

/// A `Content-Length` value's number (the HTTP parser has checked it is digits); `None` when it
/// has more digits than any length this gateway could accept.
fn stated_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    let digits = &digits[digits.iter().take_while(|d| **d == b'0').count()..];
    if digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
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
        assert_eq!(check(&HeadLimits::default(), 20, h, true), Ok(()));
        let chunked = head(&[("Host", "a"), ("Transfer-Encoding", "chunked")]);
        assert_eq!(check(&HeadLimits::default(), 20, chunked, true), Ok(()));
    }

    #[test]
    fn a_body_length_stated_twice_is_refused_whatever_the_case_or_values() {
        for pairs in [
            &[("Content-Length", "3"), ("transfer-encoding", "chunked")][..],
            &[("content-length", "3"), ("Content-Length", "3")][..],
            &[("Content-Length", "3"), ("CONTENT-LENGTH", "4")][..],
            &[("Transfer-Encoding", "chunked"), ("Content-Length", "0")][..],
            &[("Content-Length", "3, 3")][..],
        ] {
            assert_eq!(
                check(&HeadLimits::default(), 20, head(pairs), true),
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
            ..HeadLimits::default()
        };
        // "GET / HTTP/1.1" (14) + CRLF + "Host: abc\r\n" (11) = 27; "X-A: " + 9 + CRLF = 16 → 43;
        // with a 6-byte value, 40.
        assert_eq!(check(&limits, 14, head(&[("Host", "abc")]), true), Ok(()));
        assert_eq!(
            check(
                &limits,
                14,
                head(&[("Host", "abc"), ("X-A", "123456789")]),
                true
            ),
            Err(HeadRefusal::TooLarge)
        );
        assert_eq!(
            check(
                &limits,
                14,
                head(&[("Host", "abc"), ("X-A", "123456")]),
                true
            ),
            Ok(()),
            "exactly at the limit"
        );
    }

    #[test]
    fn the_header_count_is_bounded() {
        let limits = HeadLimits {
            max_header_bytes: 1 << 20,
            max_headers: 3,
            ..HeadLimits::default()
        };
        let three = head(&[("A", "1"), ("B", "2"), ("C", "3")]);
        assert_eq!(check(&limits, 10, three, false), Ok(()));
        let four = head(&[("A", "1"), ("B", "2"), ("C", "3"), ("D", "4")]);
        assert_eq!(
            check(&limits, 10, four, false),
            Err(HeadRefusal::TooManyHeaders)
        );
    }

    #[test]
    fn an_http_1_1_head_needs_a_host_in_any_case_and_others_do_not() {
        let limits = HeadLimits::default();
        for host in ["Host", "host", "HOST"] {
            assert_eq!(check(&limits, 14, head(&[(host, "a")]), true), Ok(()));
        }
        assert_eq!(
            check(&limits, 14, head(&[("X-Tenant", "blue")]), true),
            Err(HeadRefusal::HostMissing)
        );
        assert_eq!(
            check(&limits, 14, head(&[]), true),
            Err(HeadRefusal::HostMissing)
        );
        // HTTP/1.0 (and HTTP/2, whose authority is a pseudo-header) need none.
        assert_eq!(
            check(&limits, 14, head(&[("X-Tenant", "blue")]), false),
            Ok(())
        );
        assert_eq!(HeadRefusal::HostMissing.http_status(), 400);
        assert_eq!(HeadRefusal::HostMissing.code(), "host_missing");
    }

    #[test]
    fn a_stated_body_length_beyond_the_limit_is_refused() {
        let limits = HeadLimits {
            max_body_bytes: 100,
            ..HeadLimits::default()
        };
        for (length, expected) in [
            ("100", Ok(())),
            (" 100 ", Ok(())),
            ("101", Err(HeadRefusal::BodyTooLarge)),
            ("99999999999999999999999", Err(HeadRefusal::BodyTooLarge)),
            ("0", Ok(())),
            ("0000000000000000000000000100", Ok(())),
        ] {
            let h = head(&[("Host", "a"), ("Content-Length", length)]);
            assert_eq!(check(&limits, 14, h, true), expected, "{length}");
        }
        // Chunked bodies are counted as they arrive, not here.
        let chunked = head(&[("Host", "a"), ("Transfer-Encoding", "chunked")]);
        assert_eq!(check(&limits, 14, chunked, true), Ok(()));
        assert_eq!(HeadRefusal::BodyTooLarge.http_status(), 413);
        assert_eq!(HeadRefusal::BodyTooLarge.code(), "request_body_too_large");
    }
}
