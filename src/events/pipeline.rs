//! Captured responses to events: decompress the copy, extract the trigger's fields, wrap them in
//! an envelope, count and log them, publish.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use flate2::read::{MultiGzDecoder, ZlibDecoder};
use serde_json::Map;
use tokio::sync::mpsc;

use super::{Event, EventMetrics, EventSink, TriggerHit, business, mask_indices};
use crate::config::TriggerSettings;

/// Under load, hits are taken in batches on this tick instead of one wake-up each: a wake-up of
/// an idle thread costs more than the work, and a batch's log lines go out in one write.
const BATCH_TICK: Duration = Duration::from_millis(1);

pub async fn run(
    mut hits: mpsc::Receiver<TriggerHit>,
    triggers: Arc<Vec<TriggerSettings>>,
    sink: EventSink,
    metrics: Option<Arc<EventMetrics>>,
    business_log: bool,
) {
    let mut log = business_log.then(String::new);
    // Idle: wait for a hit and handle it at once. Busy: gather on the tick until one is empty.
    while let Some(first) = hits.recv().await {
        handle(&first, &triggers, &sink, metrics.as_deref(), log.as_mut());
        loop {
            flush_log(log.as_mut());
            tokio::time::sleep(BATCH_TICK).await;
            let mut handled = 0;
            while let Ok(hit) = hits.try_recv() {
                handle(&hit, &triggers, &sink, metrics.as_deref(), log.as_mut());
                handled += 1;
            }
            if handled == 0 {
                break;
            }
        }
    }
}

fn flush_log(log: Option<&mut String>) {
    if let Some(lines) = log.filter(|l| !l.is_empty()) {
        crate::logging::write_lines(lines);
        lines.clear();
    }
}

fn handle(
    hit: &TriggerHit,
    triggers: &[TriggerSettings],
    sink: &EventSink,
    metrics: Option<&EventMetrics>,
    mut log: Option<&mut String>,
) {
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
        let data: Map<String, serde_json::Value> = fields
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        let event = Event::new(
            sink.source(),
            trigger.rule.event(),
            Some(Arc::clone(&hit.tenant)),
            Some(hit.request_id.clone()),
            &data,
        );
        business::observe(
            &event,
            &fields,
            hit.provider.as_deref(),
            metrics,
            log.as_deref_mut().map(|lines| (trigger, lines)),
        );
        sink.publish(event);
    }
}

/// The body as the upstream meant it, at most `limit` bytes once decoded.
fn decode(body: &[u8], encoding: Option<&str>, limit: usize) -> Result<Vec<u8>, &'static str> {
    let encoding = encoding.map(|e| e.trim().to_ascii_lowercase());
    let mut out = Vec::new();
    let read = match encoding.as_deref() {
        None | Some("") | Some("identity") => return Ok(body.to_vec()),
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
        Ok(_) => Ok(out),
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
        assert_eq!(decode(&gzip(body), Some("gzip"), 100).unwrap(), body);
        assert_eq!(decode(body, None, 100).unwrap(), body);
        let bomb = gzip(&vec![b'a'; 1_000_000]);
        assert!(bomb.len() < 5_000);
        assert_eq!(decode(&bomb, Some("gzip"), 64 * 1024), Err("too_large"));
        assert_eq!(decode(b"not gzip", Some("gzip"), 100), Err("bad_encoding"));
        assert_eq!(decode(body, Some("br"), 100), Err("unsupported_encoding"));
    }
}
