//! The capped copy of a response body that a trigger inspects. The client's bytes are never
//! touched: this only copies them, up to the triggers' limit, and hands the copy over at the end.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::events::TriggerHit;

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
}
