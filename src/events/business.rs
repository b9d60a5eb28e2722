//! What events mean for the business: counters, and one structured log line per event in the
//! shape the platform's log pipeline reads (a message template and its properties).

use payedge_filters::triggers::FieldValue;
use serde_json::{Map, Value, json};
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
    log: Option<(&TriggerSettings, &mut String)>,
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
        lines.push_str(&log_line(event, fields, template).to_string());
        lines.push('\n');
    }
}

fn log_line(event: &Event, fields: &[(String, FieldValue)], template: &str) -> Value {
    let mut properties = Map::new();
    properties.insert("TenantId".into(), json!(event.tenant.as_deref()));
    for (name, value) in fields {
        properties.insert(pascal(name), Value::String(value.as_text()));
    }
    properties.insert("CorrelationId".into(), json!(event.correlation_id));
    properties.insert("EventType".into(), json!(event.kind));
    properties.insert("EventId".into(), json!(event.id));
    json!({
        "timestamp": OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default(),
        "level": "INFO",
        "messageTemplate": template,
        "message": render(template, &properties),
        "properties": properties,
        "target": "payedge::business",
    })
}

fn pascal(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Fills `{Property}` placeholders; unknown ones stay as written.
fn render(template: &str, properties: &Map<String, Value>) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                match properties.get(name) {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(Value::Null) | None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                    Some(other) => out.push_str(&other.to_string()),
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
        let data = fields
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        let event = Event::new(
            "payedge/x",
            "fx.quote.created",
            Some("blue".into()),
            Some("req-9".into()),
            &data,
        );
        let line = log_line(
            &event,
            &fields,
            "FX quote created for tenant {TenantId}: {Amount} {FromCurrency} {Nope}",
        );
        assert_eq!(
            line["messageTemplate"],
            "FX quote created for tenant {TenantId}: {Amount} {FromCurrency} {Nope}"
        );
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
        assert_eq!(line["target"], "payedge::business");
    }
}
