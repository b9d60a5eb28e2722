//! What events mean for the business: counters, and one structured log line per event in the
//! shape the platform's log pipeline reads (a message template and its properties).

use std::borrow::Cow;

use payedge_filters::triggers::FieldValue;
use serde::Serialize;
use serde::ser::SerializeMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Event, EventMetrics};
use crate::config::TriggerSettings;

const FX_QUOTE_CREATED: &str = "fx.quote.created";
const PAYMENT_PROCESSED: &str = "payment.processed";
const DEFAULT_TEMPLATE: &str = "{EventType} for tenant {TenantId}";

pub fn observe(
    event: &Event,
    fields: &[(String, FieldValue)],
    provider: Option<&str>,
    metrics: Option<&EventMetrics>,
    log: Option<(&TriggerSettings, &mut Vec<u8>)>,
) {
    let tenant = event.tenant.as_deref().unwrap_or("none");
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    if let Some(m) = metrics {
        match event.kind.as_str() {
            FX_QUOTE_CREATED => m.fx_quote(tenant),
            PAYMENT_PROCESSED => {
                let amount = match field("amount") {
                    Some(FieldValue::Decimal(d)) => Some(*d),
                    Some(FieldValue::String(s)) => s.parse().ok(),
                    _ => None,
                };
                let text = |name: &str| field(name).map(FieldValue::as_text);
                m.payment(
                    tenant,
                    provider.unwrap_or("none"),
                    text("status").as_deref(),
                    text("currency").as_deref(),
                    amount,
                );
            }
            _ => {}
        }
    }
    if let Some((trigger, lines)) = log {
        let template = trigger.log_message.as_deref().unwrap_or(DEFAULT_TEMPLATE);
        write_line(lines, event, fields, template);
    }
}

/// The properties of a business log line: TenantId, the fields (first letter upper-cased),
/// CorrelationId, EventType and EventId.
struct Properties<'a> {
    event: &'a Event,
    fields: &'a [(String, FieldValue)],
}

impl Properties<'_> {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        match name {
            "TenantId" => self.event.tenant.as_deref().map(Cow::Borrowed),
            "CorrelationId" => self.event.correlation_id.as_deref().map(Cow::Borrowed),
            "EventType" => Some(Cow::Borrowed(&self.event.kind)),
            "EventId" => Some(Cow::Borrowed(&self.event.id)),
            _ => self
                .fields
                .iter()
                .find(|(field, _)| pascal(field) == name)
                .map(|(_, value)| Cow::Owned(value.as_text())),
        }
    }
}

impl Serialize for Properties<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.fields.len() + 4))?;
        map.serialize_entry("TenantId", &self.event.tenant.as_deref())?;
        for (name, value) in self.fields {
            map.serialize_entry(&pascal(name), &value.as_text())?;
        }
        map.serialize_entry("CorrelationId", &self.event.correlation_id)?;
        map.serialize_entry("EventType", &self.event.kind)?;
        map.serialize_entry("EventId", &self.event.id)?;
        map.end()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    timestamp: &'a str,
    level: &'static str,
    message_template: &'a str,
    message: &'a str,
    properties: &'a Properties<'a>,
    target: &'static str,
}

fn write_line(out: &mut Vec<u8>, event: &Event, fields: &[(String, FieldValue)], template: &str) {
    let properties = Properties { event, fields };
    let timestamp = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    let line = Line {
        timestamp: &timestamp,
        level: "INFO",
        message_template: template,
        message: &render(template, &properties),
        properties: &properties,
        target: "payedge::business",
    };
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
}

fn pascal(name: &str) -> Cow<'_, str> {
    match name.chars().next() {
        Some(first) if !first.is_uppercase() => {
            Cow::Owned(first.to_uppercase().chain(name.chars().skip(1)).collect())
        }
        _ => Cow::Borrowed(name),
    }
}

/// Fills `{Property}` placeholders; unknown ones stay as written.
fn render(template: &str, properties: &Properties<'_>) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                match properties.get(name) {
                    Some(value) => out.push_str(&value),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::FieldMap;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    #[test]
    fn the_log_line_has_the_template_and_exact_properties() {
        let fields = vec![
            ("quoteId".to_string(), FieldValue::String("fxq_1".into())),
            ("fromCurrency".to_string(), FieldValue::String("USD".into())),
            (
                "amount".to_string(),
                FieldValue::Decimal(Decimal::from_str("1000.10").unwrap()),
            ),
        ];
        let event = Event::new(
            "payedge/x",
            "fx.quote.created",
            Some("blue".into()),
            Some("req-9".into()),
            &FieldMap(&fields),
        );
        let mut out = Vec::new();
        let template = "FX quote created for tenant {TenantId}: {Amount} {FromCurrency} {Nope}";
        write_line(&mut out, &event, &fields, template);
        assert_eq!(out.last(), Some(&b'\n'));
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["messageTemplate"], template);
        assert_eq!(
            line["message"],
            "FX quote created for tenant blue: 1000.10 USD {Nope}"
        );
        let p = &line["properties"];
        assert_eq!(p["TenantId"], "blue");
        assert_eq!(p["QuoteId"], "fxq_1");
        assert_eq!(p["FromCurrency"], "USD");
        assert_eq!(p["Amount"], "1000.10");
        assert_eq!(p["CorrelationId"], "req-9");
        assert_eq!(p["EventId"], event.id.as_str());
        assert_eq!(line["target"], "payedge::business");
        assert_eq!(line["level"], "INFO");
        let envelope: serde_json::Value = serde_json::from_str(&event.json).unwrap();
        assert_eq!(envelope["data"]["amount"], "1000.10");
    }
}
