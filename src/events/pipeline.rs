//! A captured response to events: decompress the copy, extract the trigger's fields, wrap them
//! in an envelope, count and log them, publish.

use std::borrow::Cow;
use std::io::Read;
use std::sync::Arc;

use flate2::read::{MultiGzDecoder, ZlibDecoder};

use super::{Event, EventMetrics, EventSink, FieldMap, TriggerHit, business, mask_indices};
use crate::config::TriggerSettings;

/// Turns one captured response into the events of its triggers.
pub fn handle(
    hit: &TriggerHit<'_>,
    triggers: &[TriggerSettings],
    sink: &EventSink,
    metrics: Option<&EventMetrics>,
    business_log: bool,
) {
    let mut log = Vec::new();
    let limit = mask_indices(hit.triggers)
        .filter_map(|i| triggers.get(i))
        .map(|t| t.rule.max_body_bytes())
        .max()
        .unwrap_or(0);
    let body = if hit.too_large {
        Err("too_large")
    } else {
        decode(&hit.body, hit.encoding.as_deref(), limit)
    };
    for trigger in mask_indices(hit.triggers).filter_map(|i| triggers.get(i)) {
        let name = trigger.rule.name();
        let extracted = body.as_deref().map_err(|reason| *reason).and_then(|body| {
            if body.len() > trigger.rule.max_body_bytes() {
                return Err("too_large");
            }
            trigger.rule.extract(body).map_err(|e| e.reason())
        });
        let fields = match extracted {
            Ok(fields) => fields,
            Err(reason) => {
                if let Some(m) = metrics {
                    m.trigger_error(name, reason);
                }
                tracing::warn!(
                    trigger = name,
                    reason,
                    tenant = &*hit.tenant,
                    request_id = hit.request_id,
                    "response matched a trigger but gave no event"
                );
                continue;
            }
        };
        let event = Event::of_request(
            sink.source(),
            trigger.rule.event(),
            Some(Arc::clone(&hit.tenant)),
            Some(hit.request_id.to_owned()),
            hit.idempotency_key,
            &FieldMap(&fields),
        );
        business::observe(
            &event,
            &fields,
            hit.provider,
            metrics,
            business_log.then_some((trigger, &mut log)),
        );
        sink.publish(event);
    }
    if !log.is_empty() {
        crate::logging::write_lines(log);
    }
}

/// The body as the upstream meant it, at most `limit` bytes once decoded.
fn decode<'a>(
    body: &'a [u8],
    encoding: Option<&str>,
    limit: usize,
) -> Result<Cow<'a, [u8]>, &'static str> {
    let encoding = encoding.map(|e| e.trim().to_ascii_lowercase());
    let mut out = Vec::new();
    let read = match encoding.as_deref() {
        None | Some("") | Some("identity") => return Ok(Cow::Borrowed(body)),
        Some("gzip") | Some("x-gzip") => MultiGzDecoder::new(body)
            .take(limit as u64 + 1)
            .read_to_end(&mut out),
        Some("deflate") => ZlibDecoder::new(body)
            .take(limit as u64 + 1)
            .read_to_end(&mut out),
        Some(_) => return Err("unsupported_encoding"),
    };
    match read {
        Ok(_) if out.len() > limit => Err("too_large"),
        Ok(_) => Ok(Cow::Owned(out)),
        Err(_) => Err("bad_encoding"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn decodes_gzip_within_the_limit_and_refuses_bombs() {
        let body = br#"{"amount":"1000.10"}"#;
        assert_eq!(&*decode(&gzip(body), Some("gzip"), 100).unwrap(), body);
        assert_eq!(&*decode(body, None, 100).unwrap(), body);
        let bomb = gzip(&vec![b'a'; 1_000_000]);
        assert!(bomb.len() < 5_000);
        assert_eq!(decode(&bomb, Some("gzip"), 64 * 1024), Err("too_large"));
        assert_eq!(decode(b"not gzip", Some("gzip"), 100), Err("bad_encoding"));
        assert_eq!(decode(body, Some("br"), 100), Err("unsupported_encoding"));
    }

    mod properties {
        //! Wrongly compressed trigger bodies (issue 17): whatever a provider sends under whatever
        //! Content-Encoding, decoding never panics and never yields more than the limit.
        use super::*;
        use proptest::prelude::*;

        fn encoding() -> impl Strategy<Value = Option<String>> {
            prop::sample::select(vec![
                None,
                Some("gzip".to_string()),
                Some("x-gzip".into()),
                Some(" GZIP ".into()),
                Some("deflate".into()),
                Some("identity".into()),
                Some("br".into()),
                Some("gzip, deflate".into()),
                Some(String::new()),
            ])
        }

        proptest! {
            #[test]
            fn any_bytes_under_any_encoding_decode_within_the_limit_or_fail(
                body in proptest::collection::vec(any::<u8>(), 0..2048),
                encoding in encoding(),
                limit in 0usize..4096,
            ) {
                if let Ok(out) = decode(&body, encoding.as_deref(), limit) {
                    let identity = matches!(
                        encoding.as_deref().map(str::trim),
                        None | Some("") | Some("identity")
                    );
                    // Identity bodies are bounded by the capture itself, before decoding.
                    prop_assert!(identity || out.len() <= limit);
                }
            }

            #[test]
            fn a_damaged_gzip_body_fails_or_decodes_within_the_limit(
                data in proptest::collection::vec(any::<u8>(), 0..4096),
                damage in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
                cut in any::<usize>(),
                limit in 1usize..8192,
            ) {
                let mut body = gzip(&data);
                for (at, byte) in damage {
                    let i = at % body.len();
                    body[i] ^= byte | 1;
                }
                body.truncate(1 + cut % body.len());
                match decode(&body, Some("gzip"), limit) {
                    Ok(out) => prop_assert!(out.len() <= limit),
                    Err(reason) => prop_assert!(
                        reason == "bad_encoding" || reason == "too_large",
                        "{}", reason
                    ),
                }
            }
        }
    }
}
