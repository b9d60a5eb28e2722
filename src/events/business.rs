//! What events mean for the business: counters, and one structured log line per event in the
//! shape the platform's log pipeline reads (a message template and its properties).

use super::log_format::LogFormat;
use super::{Event, EventMetrics};
use crate::config::TriggerSettings;
use payedge_filters::triggers::FieldValue;
use std::io::Write;

use crate::json::{json_str, json_str_contents, json_str_plain};

const FX_QUOTE_CREATED: &str = "fx.quote.created";
const PAYMENT_PROCESSED: &str = "payment.processed";

pub fn observe(
    event: &Event,
    fields: &[(&str, FieldValue)],
    provider: Option<&str>,
    metrics: Option<&EventMetrics>,
    log: Option<(&TriggerSettings, &mut Vec<u8>)>,
) {
    let tenant = event.tenant.as_deref().unwrap_or("none");
    let field = |name: &str| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| v);
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
        write_line(lines, event, fields, &trigger.log);
    }
}

/// The properties of a business log line: TenantId, the fields (by their property names),
/// CorrelationId, EventType and EventId.
struct Properties<'a> {
    event: &'a Event,
    fields: &'a [(&'a str, FieldValue<'a>)],
    format: &'a LogFormat,
}

impl Properties<'_> {
    /// Writes the value of property `name` escaped as inside a JSON string; `false` if it has
    /// none.
    fn write_value(&self, out: &mut Vec<u8>, name: &str) -> bool {
        let text = match name {
            "TenantId" => self.event.tenant.as_deref(),
            "CorrelationId" => self.event.correlation_id.as_deref(),
            "EventType" => Some(self.event.kind.as_str()),
            "EventId" => Some(self.event.id()),
            _ => {
                let value = self.format.field_of(name).and_then(|field| {
                    self.fields
                        .iter()
                        .find(|(f, _)| *f == field)
                        .map(|(_, value)| value)
                });
                match value {
                    None => return false,
                    Some(FieldValue::String(s)) => Some(&**s),
                    Some(FieldValue::Number(s) | FieldValue::Json(s)) => Some(s.as_str()),
                    // Digits, a sign and a point: nothing to escape.
                    Some(FieldValue::Decimal(d)) => {
                        let _ = write!(out, "{d}");
                        return true;
                    }
                    Some(FieldValue::Bool(b)) => Some(if *b { "true" } else { "false" }),
                }
            }
        };
        match text {
            Some(text) => {
                json_str_contents(out, text);
                true
            }
            None => false,
        }
    }
}

/// One business log line, written by hand (the line is on every trigger's path, and serde's
/// derive escapes every key of it each time); the same bytes serde would write for
/// `{timestamp, level, messageTemplate, message, properties, target}` (a test holds it to that).
/// What is the same on every line of a trigger (the template, the property names, the message's
/// text) is escaped once, when the configuration is loaded.
fn write_line(out: &mut Vec<u8>, event: &Event, fields: &[(&str, FieldValue)], format: &LogFormat) {
    let properties = Properties {
        event,
        fields,
        format,
    };
    out.reserve(384 + 2 * format.template().len());
    out.extend_from_slice(br#"{"timestamp":"#);
    // The event's id and time are a UUID and RFC 3339: nothing to escape.
    json_str_plain(out, event.time());
    out.extend_from_slice(br#","level":"INFO","messageTemplate":"#);
    out.extend_from_slice(format.template_json());
    out.extend_from_slice(br#","message":"#);
    format.write_message_json(out, |out, name| properties.write_value(out, name));
    out.extend_from_slice(br#","properties":{"TenantId":"#);
    json_opt_str(out, event.tenant.as_deref());
    for (name, value) in fields {
        out.push(b',');
        format.write_property_key(out, name);
        json_text(out, value);
    }
    out.extend_from_slice(br#","CorrelationId":"#);
    json_opt_str(out, event.correlation_id.as_deref());
    out.extend_from_slice(br#","EventType":"#);
    json_str(out, &event.kind);
    out.extend_from_slice(br#","EventId":"#);
    json_str_plain(out, event.id());
    out.extend_from_slice(b"},\"target\":\"payedge::business\"}\n");
}

fn json_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A field value as log text, a JSON string (decimals exact).
fn json_text(out: &mut Vec<u8>, value: &FieldValue) {
    match value {
        FieldValue::String(s) => json_str(out, s),
        FieldValue::Number(s) | FieldValue::Json(s) => json_str(out, s),
        FieldValue::Decimal(d) => {
            // A decimal's text is digits, a sign and a point: nothing to escape.
            let _ = write!(out, "\"{d}\"");
        }
        FieldValue::Bool(b) => {
            let _ = write!(out, "\"{b}\"");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::FieldMap;
    use rust_decimal::Decimal;
    use std::borrow::Cow;
    use std::str::FromStr;

    use serde::Serialize;
    use serde::ser::SerializeMap;

    impl Properties<'_> {
        /// A property's value as text (the reference's message is rendered from these).
        fn get(&self, name: &str) -> Option<Cow<'_, str>> {
            match name {
                "TenantId" => self.event.tenant.as_deref().map(Cow::Borrowed),
                "CorrelationId" => self.event.correlation_id.as_deref().map(Cow::Borrowed),
                "EventType" => Some(Cow::Borrowed(&self.event.kind)),
                "EventId" => Some(Cow::Borrowed(self.event.id())),
                _ => {
                    let field = self.format.field_of(name)?;
                    self.fields
                        .iter()
                        .find(|(f, _)| *f == field)
                        .map(|(_, value)| Cow::Owned(value.as_text()))
                }
            }
        }
    }

    // The line as serde writes it: the reference the hand-written one must equal.
    impl Serialize for Properties<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut map = serializer.serialize_map(Some(self.fields.len() + 4))?;
            map.serialize_entry("TenantId", &self.event.tenant.as_deref())?;
            for (name, value) in self.fields {
                map.serialize_entry(self.format.property_of(name), &Text(value))?;
            }
            map.serialize_entry("CorrelationId", &self.event.correlation_id)?;
            map.serialize_entry("EventType", &self.event.kind)?;
            map.serialize_entry("EventId", self.event.id())?;
            map.end()
        }
    }

    /// A field value as log text (decimals exact), written without an intermediate string.
    struct Text<'a>(&'a FieldValue<'a>);

    impl Serialize for Text<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            match self.0 {
                FieldValue::String(s) => serializer.serialize_str(s),
                FieldValue::Number(s) | FieldValue::Json(s) => serializer.serialize_str(s),
                FieldValue::Decimal(d) => serializer.collect_str(d),
                FieldValue::Bool(b) => serializer.collect_str(b),
            }
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

    fn reference_line(
        out: &mut Vec<u8>,
        event: &Event,
        fields: &[(&str, FieldValue)],
        format: &LogFormat,
    ) {
        let properties = Properties {
            event,
            fields,
            format,
        };
        let message = format.render(|name| properties.get(name));
        let line = Line {
            timestamp: event.time(),
            level: "INFO",
            message_template: format.template(),
            message: &message,
            properties: &properties,
            target: "payedge::business",
        };
        if serde_json::to_writer(&mut *out, &line).is_ok() {
            out.push(b'\n');
        }
    }

    #[test]
    fn the_written_line_is_the_one_serde_writes_byte_for_byte() {
        let odd = "a \"quoted\" \\ value\n\u{1}é😀";
        let fields = [
            ("quoteId", FieldValue::String(odd.into())),
            (
                "amount",
                FieldValue::Decimal(Decimal::from_str("-1000.10").unwrap()),
            ),
            ("ok", FieldValue::Bool(false)),
            ("big", FieldValue::Number("1e400".into())),
            ("raw", FieldValue::Json(r#"{"a":[1,"x"]}"#.into())),
            ("x\"y", FieldValue::String("".into())),
        ];
        let template = "Quote {QuoteId} of {Amount} for {TenantId} \"{Nope}\" {X\"y} {Ok} {Big} \
                        {Raw} {CorrelationId} {EventType} {EventId} {Missing}{";
        // `missing` is configured but was not in the answer.
        let names = fields.iter().map(|(f, _)| f.to_string());
        let format = LogFormat::new(Some(template), names.chain(["missing".to_string()]));
        for (tenant, correlation, fields) in [
            (Some("blue"), Some("req-9"), &fields[..]),
            (None, None, &fields[..]),
            (Some(odd), Some(odd), &fields[..]),
            (Some("blue"), None, &fields[1..3]),
        ] {
            let event = Event::new(
                "payedge/x",
                "fx.quote.created",
                tenant.map(Into::into),
                correlation.map(Into::into),
                &FieldMap(fields),
            );
            let (mut written, mut reference) = (Vec::new(), Vec::new());
            write_line(&mut written, &event, fields, &format);
            reference_line(&mut reference, &event, fields, &format);
            assert_eq!(
                String::from_utf8(written).unwrap(),
                String::from_utf8(reference).unwrap()
            );
        }
    }

    #[test]
    fn the_log_line_has_the_template_and_exact_properties() {
        let fields = vec![
            ("quoteId", FieldValue::String("fxq_1".into())),
            ("fromCurrency", FieldValue::String("USD".into())),
            (
                "amount",
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
        let format = LogFormat::new(Some(template), fields.iter().map(|(f, _)| f.to_string()));
        write_line(&mut out, &event, &fields, &format);
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
        assert_eq!(p["EventId"], event.id());
        assert_eq!(line["target"], "payedge::business");
        assert_eq!(line["level"], "INFO");
        let envelope: serde_json::Value = serde_json::from_str(&event.json).unwrap();
        assert_eq!(envelope["data"]["amount"], "1000.10");
    }
}
