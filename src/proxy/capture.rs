//! The capped copy of a response body that a trigger inspects. The client's bytes are never
//! touched: this only copies them, up to the triggers' limit, and hands the copy over at the end.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::events::TriggerHit;

/// The three response headers a capture reads, found in one pass over the (few) headers the
/// provider sent instead of three hashed lookups: each is the first value of its name, as
/// `HeaderMap::get` gives it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CaptureHeaders<'a> {
    pub content_type: Option<&'a [u8]>,
    pub content_encoding: Option<&'a [u8]>,
    pub content_length: Option<&'a [u8]>,
}

impl<'a> CaptureHeaders<'a> {
    pub fn of(headers: &'a http::HeaderMap) -> Self {
        use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
        let mut found = Self::default();
        for (name, value) in headers {
            let slot = if name == CONTENT_TYPE {
                &mut found.content_type
            } else if name == CONTENT_ENCODING {
                &mut found.content_encoding
            } else if name == CONTENT_LENGTH {
                &mut found.content_length
            } else {
                continue;
            };
            slot.get_or_insert(value.as_bytes());
        }
        found
    }
}

pub struct Capture {
    /// Bit i: trigger i matched.
    triggers: u64,
    limit: usize,
    buf: BytesMut,
    too_large: bool,
    encoding: Option<String>,
}

impl Capture {
    /// `content_length` (when the provider sent one) lets an oversized body skip copying at once.
    pub fn start(
        triggers: u64,
        limit: usize,
        encoding: Option<String>,
        content_length: Option<usize>,
    ) -> Self {
        let too_large = content_length.is_some_and(|n| n > limit);
        let capacity = if too_large {
            0
        } else {
            content_length.unwrap_or(0).min(limit)
        };
        Self {
            triggers,
            limit,
            buf: BytesMut::with_capacity(capacity),
            too_large,
            encoding,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        if self.too_large {
            return;
        }
        if self.buf.len() + chunk.len() > self.limit {
            self.too_large = true;
            self.buf = BytesMut::new();
            return;
        }
        self.buf.extend_from_slice(chunk);
    }

    pub fn finish<'a>(
        self,
        tenant: Arc<str>,
        request_id: &'a str,
        provider: Option<&'a str>,
        idempotency_key: Option<&'a str>,
    ) -> TriggerHit<'a> {
        TriggerHit {
            triggers: self.triggers,
            body: if self.too_large {
                Bytes::new()
            } else {
                self.buf.freeze()
            },
            too_large: self.too_large,
            encoding: self.encoding,
            tenant,
            request_id,
            provider,
            idempotency_key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_up_to_the_limit_then_gives_up() {
        let mut c = Capture::start(1, 10, None, None);
        c.push(b"hello");
        c.push(b"world");
        let hit = c.finish("blue".into(), "r", None, None);
        assert_eq!(&hit.body[..], b"helloworld");
        assert!(!hit.too_large);

        let mut c = Capture::start(1, 10, None, None);
        c.push(b"hello");
        c.push(b"world!");
        let hit = c.finish("blue".into(), "r", None, None);
        assert!(hit.too_large && hit.body.is_empty());

        let c = Capture::start(1, 10, Some("gzip".into()), Some(11));
        let hit = c.finish("blue".into(), "r", None, None);
        assert!(hit.too_large);
        assert_eq!(hit.encoding.as_deref(), Some("gzip"));
    }

    #[test]
    fn the_capture_reads_the_same_headers_as_lookups_by_name() {
        use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
        fn lookups(h: &http::HeaderMap) -> CaptureHeaders<'_> {
            CaptureHeaders {
                content_type: h.get(CONTENT_TYPE).map(HeaderValue::as_bytes),
                content_encoding: h.get(CONTENT_ENCODING).map(HeaderValue::as_bytes),
                content_length: h.get(CONTENT_LENGTH).map(HeaderValue::as_bytes),
            }
        }
        let v = HeaderValue::from_static;
        let mut heads = http::HeaderMap::new();
        assert_eq!(CaptureHeaders::of(&heads), CaptureHeaders::default());
        heads.insert("x-one", v("1"));
        heads.insert(CONTENT_LENGTH, v("84"));
        assert_eq!(CaptureHeaders::of(&heads), lookups(&heads));
        // Repeated names (the first value counts), others between them, in any order.
        heads.append(CONTENT_ENCODING, v("gzip"));
        heads.insert("x-two", v("2"));
        heads.append(CONTENT_ENCODING, v("identity"));
        heads.append(CONTENT_TYPE, v("application/json"));
        heads.append(CONTENT_TYPE, v("text/plain"));
        heads.append(CONTENT_LENGTH, v("85"));
        let found = CaptureHeaders::of(&heads);
        assert_eq!(found, lookups(&heads));
        assert_eq!(found.content_encoding, Some(&b"gzip"[..]));
        assert_eq!(found.content_type, Some(&b"application/json"[..]));
        assert_eq!(found.content_length, Some(&b"84"[..]));
    }
}
