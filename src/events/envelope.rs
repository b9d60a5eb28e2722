//! The event envelope: CloudEvents 1.0 in structured JSON mode, serialized once when the event
//! is made and shared from then on (Redis, the hub, every subscriber get the same bytes).

use std::sync::Arc;
use std::time::SystemTime;

use payedge_filters::triggers::FieldValue;
use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub const SYSTEM_ALERT: &str = "system.alert";

#[derive(Debug)]
pub struct Event {
    pub id: String,
    pub kind: String,
    /// RFC 3339.
    pub time: String,
    /// The same instant, for measuring how long delivery took.
    pub created: SystemTime,
    /// `None` for system-wide events (delivered to everyone).
    pub tenant: Option<Arc<str>>,
    pub correlation_id: Option<String>,
    /// The whole envelope as JSON text.
    pub json: Arc<str>,
}

#[derive(Serialize)]
struct Envelope<'a, D: Serialize> {
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
    /// Extension attribute: the SHA-256 of the request's scoped `Idempotency-Key` (never the key).
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotencykey: Option<&'a str>,
    data: &'a D,
}

/// Extracted fields as a JSON object, written straight from the values.
pub struct FieldMap<'a>(pub &'a [(String, FieldValue)]);

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

impl Event {
    pub fn new(
        source: &str,
        kind: &str,
        tenant: Option<Arc<str>>,
        correlation_id: Option<String>,
        data: &impl Serialize,
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
        data: &impl Serialize,
    ) -> Self {
        let id = uuid::Uuid::now_v7().to_string();
        let created = SystemTime::now();
        let time = OffsetDateTime::from(created)
            .format(&Rfc3339)
            .unwrap_or_default();
        let envelope = Envelope {
            specversion: "1.0",
            id: &id,
            source,
            kind,
            time: &time,
            datacontenttype: "application/json",
            tenant: tenant.as_deref(),
            correlationid: correlation_id.as_deref(),
            idempotencykey: idempotency_key,
            data,
        };
        let json = serde_json::to_string(&envelope).unwrap_or_default();
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
