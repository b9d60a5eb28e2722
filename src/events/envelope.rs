//! The event envelope: CloudEvents 1.0 in structured JSON mode, serialized once when the event
//! is made and shared from then on (Redis, the hub, every subscriber get the same bytes).

use std::io::Write;
use std::sync::Arc;

use crate::json::{json_str, json_str_plain};
use std::time::SystemTime;

use payedge_filters::triggers::FieldValue;
use serde::Serialize;
use serde_json::{Map, Value};

pub const SYSTEM_ALERT: &str = "system.alert";

#[derive(Debug)]
pub struct Event {
    /// A UUIDv7, as [`Event::of_request`] (every event's maker) writes it: written into JSON
    /// without an escape check, like `time`. Private, so that no other code can make an event
    /// whose id or time would need escaping: read them through [`Event::id`] and [`Event::time`].
    id: String,
    pub kind: String,
    /// RFC 3339.
    time: String,
    /// The same instant, for measuring how long delivery took.
    pub created: SystemTime,
    /// `None` for system-wide events (delivered to everyone).
    pub tenant: Option<Arc<str>>,
    pub correlation_id: Option<String>,
    /// The whole envelope as JSON text.
    pub json: Arc<str>,
}

/// Extracted fields as a JSON object, written straight from the values.
pub struct FieldMap<'a>(pub &'a [(&'a str, FieldValue<'a>)]);

/// The envelope's attributes other than `data`.
struct Attributes<'a> {
    id: &'a str,
    source: &'a str,
    kind: &'a str,
    time: &'a str,
    tenant: Option<&'a str>,
    correlation_id: Option<&'a str>,
    /// Extension attribute: the SHA-256 of the request's scoped `Idempotency-Key` (never the key).
    idempotency_key: Option<&'a str>,
}

/// The envelope as compact JSON, attribute names written as the literals they are (serde's
/// derive escapes every name on every event; this is on each trigger's path). Absent optional
/// attributes are left out; `data` that cannot be serialized is `null`.
fn envelope(a: &Attributes<'_>, data: &impl EventData) -> String {
    let mut out = Vec::with_capacity(320);
    out.extend_from_slice(br#"{"specversion":"1.0","id":"#);
    // The id and time are this module's own text (a UUID, RFC 3339): nothing to escape.
    json_str_plain(&mut out, a.id);
    out.extend_from_slice(br#","source":"#);
    json_str(&mut out, a.source);
    out.extend_from_slice(br#","type":"#);
    json_str(&mut out, a.kind);
    out.extend_from_slice(br#","time":"#);
    json_str_plain(&mut out, a.time);
    out.extend_from_slice(br#","datacontenttype":"application/json""#);
    for (name, value) in [
        (&br#","tenant":"#[..], a.tenant),
        (br#","correlationid":"#, a.correlation_id),
        (br#","idempotencykey":"#, a.idempotency_key),
    ] {
        if let Some(value) = value {
            out.extend_from_slice(name);
            json_str(&mut out, value);
        }
    }
    out.extend_from_slice(br#","data":"#);
    data.write_json(&mut out);
    out.push(b'}');
    String::from_utf8(out).unwrap_or_default()
}

/// What an event carries as `data`, written as JSON into the envelope.
pub trait EventData {
    fn write_json(&self, out: &mut Vec<u8>);
}

impl EventData for FieldMap<'_> {
    /// The same bytes as serde writes for the map, without its per-key machinery.
    fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, (name, value)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_str(out, name);
            out.push(b':');
            match value {
                FieldValue::String(s) => json_str(out, s),
                FieldValue::Number(s) => json_str(out, s),
                // A decimal's text is digits, a sign and a point: nothing to escape.
                FieldValue::Decimal(d) => {
                    let _ = write!(out, "\"{d}\"");
                }
                FieldValue::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
                FieldValue::Json(_) => serde_data(out, value),
            }
        }
        out.push(b'}');
    }
}

impl EventData for Map<String, Value> {
    fn write_json(&self, out: &mut Vec<u8>) {
        serde_data(out, self);
    }
}

impl EventData for Value {
    fn write_json(&self, out: &mut Vec<u8>) {
        serde_data(out, self);
    }
}

/// `data` through serde; `null` if it cannot be serialized.
fn serde_data(out: &mut Vec<u8>, data: &impl Serialize) {
    let before = out.len();
    if serde_json::to_writer(&mut *out, data).is_err() {
        out.truncate(before);
        out.extend_from_slice(b"null");
    }
}

impl Event {
    /// The event's id (a UUIDv7).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// When the event was made (RFC 3339).
    pub fn time(&self) -> &str {
        &self.time
    }

    pub fn new(
        source: &str,
        kind: &str,
        tenant: Option<Arc<str>>,
        correlation_id: Option<String>,
        data: &impl EventData,
    ) -> Self {
        Self::of_request(source, kind, tenant, correlation_id, None, data)
    }

    /// An event of a request that carried an idempotency key (`idempotency_key`: its digest).
    pub fn of_request(
        source: &str,
        kind: &str,
        tenant: Option<Arc<str>>,
        correlation_id: Option<String>,
        idempotency_key: Option<&str>,
        data: &impl EventData,
    ) -> Self {
        // One clock reading for the id, the time and the delivery measurements.
        let created = SystemTime::now();
        let id = super::timestamp::uuid_v7(created);
        let time = crate::rfc3339::string(created);
        let json = envelope(
            &Attributes {
                id: &id,
                source,
                kind,
                time: &time,
                tenant: tenant.as_deref(),
                correlation_id: correlation_id.as_deref(),
                idempotency_key,
            },
            data,
        );
        Self {
            id,
            kind: kind.to_string(),
            time,
            created,
            tenant,
            correlation_id,
            json: Arc::from(json),
        }
    }

    /// A `system.alert` for operators: `code` is stable, `message` human.
    pub fn alert(source: &str, code: &str, message: &str, details: Map<String, Value>) -> Self {
        Self::alert_for(source, None, code, message, details)
    }

    /// A `system.alert` for one tenant's group and channel only (`None`: for everyone), for
    /// news that concerns only that tenant, such as the health of a provider serving only it.
    pub fn alert_for(
        source: &str,
        tenant: Option<Arc<str>>,
        code: &str,
        message: &str,
        details: Map<String, Value>,
    ) -> Self {
        let mut data = Map::new();
        data.insert("code".into(), code.into());
        data.insert("message".into(), message.into());
        data.extend(details);
        Self::new(source, SYSTEM_ALERT, tenant, None, &data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields as serde writes a map of them: the reference for `FieldMap::write_json`.
    impl Serialize for FieldMap<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut map = serializer.serialize_map(Some(self.0.len()))?;
            for (name, value) in self.0 {
                map.serialize_entry(name, value)?;
            }
            map.end()
        }
    }

    /// The envelope as serde's derive writes it: the reference the hand-written one must equal.
    #[derive(Serialize)]
    struct Reference<'a, D: Serialize> {
        specversion: &'static str,
        id: &'a str,
        source: &'a str,
        #[serde(rename = "type")]
        kind: &'a str,
        time: &'a str,
        datacontenttype: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        tenant: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        correlationid: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        idempotencykey: Option<&'a str>,
        data: &'a D,
    }

    #[test]
    fn the_written_envelope_is_the_one_serde_writes_byte_for_byte() {
        let fields = vec![
            ("quoteId", FieldValue::String("q\"1\\\u{7}é😀".into())),
            ("amount", FieldValue::Decimal("1000.10".parse().unwrap())),
            ("ok", FieldValue::Bool(true)),
            ("big", FieldValue::Number("1e400".into())),
            ("raw", FieldValue::Json(r#"{"a":[1,"x"]}"#.into())),
        ];
        let odd = "tenant \"quoted\"\n\u{0}\t";
        for (tenant, correlation, key) in [
            (Some("blue"), Some("req-1"), Some("ab12")),
            (None, None, None),
            (Some(odd), None, Some(odd)),
            (None, Some(odd), None),
        ] {
            let a = Attributes {
                id: "01a2185d-a95e-7570-8309-8cd45c327cfe",
                source: "payedge/\"x\"",
                kind: "fx.quote.created",
                time: "2026-11-26T15:00:00.123456Z",
                tenant,
                correlation_id: correlation,
                idempotency_key: key,
            };
            let reference = Reference {
                specversion: "1.0",
                id: a.id,
                source: a.source,
                kind: a.kind,
                time: a.time,
                datacontenttype: "application/json",
                tenant,
                correlationid: correlation,
                idempotencykey: key,
                data: &FieldMap(&fields),
            };
            assert_eq!(
                envelope(&a, &FieldMap(&fields)),
                serde_json::to_string(&reference).unwrap()
            );
        }
    }

    #[test]
    fn the_envelope_has_every_cloudevents_attribute() {
        let mut data = Map::new();
        data.insert("amount".into(), "1000.10".into());
        let e = Event::new(
            "payedge/a",
            "fx.quote.created",
            Some("blue".into()),
            Some("req-1".into()),
            &data,
        );
        let v: Value = serde_json::from_str(&e.json).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], e.id);
        assert_eq!(v["source"], "payedge/a");
        assert_eq!(v["type"], "fx.quote.created");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["tenant"], "blue");
        assert_eq!(v["correlationid"], "req-1");
        assert_eq!(v["data"]["amount"], "1000.10");
        let alert = Event::alert("payedge/a", "provider_ejected", "ejected", Map::new());
        let v: Value = serde_json::from_str(&alert.json).unwrap();
        assert!(v.get("tenant").is_none());
        assert!(v.get("correlationid").is_none());
        assert_eq!(v["data"]["code"], "provider_ejected");
    }
}
