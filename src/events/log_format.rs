//! A trigger's business log line format, prepared once at start: the message template split into
//! literal text and property names, and each field's property name (first letter upper-cased).

use std::borrow::Cow;

use crate::json::{json_str, json_str_contents};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Literal text, and the same escaped as inside a JSON string.
    Text(String, Vec<u8>),
    /// A property's name, and `{Name}` escaped as inside a JSON string (the text written when
    /// the property has no value).
    Property(String, Vec<u8>),
}

/// A field's property, with what a line writes for it: `"Name":` as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldProperty {
    field: String,
    property: String,
    key_json: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFormat {
    template: String,
    /// `template` as a JSON string.
    template_json: Vec<u8>,
    segments: Vec<Segment>,
    properties: Vec<FieldProperty>,
}

pub const DEFAULT_TEMPLATE: &str = "{EventType} for tenant {TenantId}";

/// `s` escaped as inside a JSON string.
fn escaped(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    json_str_contents(&mut out, s);
    out
}

impl LogFormat {
    pub fn new(template: Option<&str>, fields: impl IntoIterator<Item = String>) -> Self {
        let template = template.unwrap_or(DEFAULT_TEMPLATE).to_string();
        let mut segments = Vec::new();
        let mut rest = template.as_str();
        while let Some(start) = rest.find('{') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('}') else { break };
            if start > 0 {
                let text = &rest[..start];
                segments.push(Segment::Text(text.to_string(), escaped(text)));
            }
            let name = &after[..end];
            segments.push(Segment::Property(
                name.to_string(),
                escaped(&format!("{{{name}}}")),
            ));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest.to_string(), escaped(rest)));
        }
        let properties = fields
            .into_iter()
            .map(|field| {
                let property = pascal(&field).into_owned();
                let mut key_json = Vec::with_capacity(property.len() + 3);
                json_str(&mut key_json, &property);
                key_json.push(b':');
                FieldProperty {
                    field,
                    property,
                    key_json,
                }
            })
            .collect();
        let mut template_json = Vec::with_capacity(template.len() + 2);
        json_str(&mut template_json, &template);
        Self {
            template,
            template_json,
            segments,
            properties,
        }
    }

    pub fn template(&self) -> &str {
        &self.template
    }

    /// The template as a JSON string.
    pub fn template_json(&self) -> &[u8] {
        &self.template_json
    }

    /// The property name of `field`.
    pub fn property_of<'a>(&'a self, field: &'a str) -> &'a str {
        self.properties
            .iter()
            .find(|p| p.field == field)
            .map_or(field, |p| p.property.as_str())
    }

    /// Writes `"Property":` for `field` (its property name as a JSON string, and the colon).
    pub fn write_property_key(&self, out: &mut Vec<u8>, field: &str) {
        match self.properties.iter().find(|p| p.field == field) {
            Some(p) => out.extend_from_slice(&p.key_json),
            None => {
                json_str(out, field);
                out.push(b':');
            }
        }
    }

    /// The field whose property name is `property`, if any.
    pub fn field_of(&self, property: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|p| p.property == property)
            .map(|p| p.field.as_str())
    }

    /// The message with each `{Property}` replaced by `lookup(Property)`; unknown ones stay.
    /// The reference [`write_message_json`](Self::write_message_json) is held to.
    #[cfg(test)]
    pub fn render<'v>(&self, lookup: impl Fn(&str) -> Option<Cow<'v, str>>) -> String {
        let mut out = String::with_capacity(self.template.len() + 32);
        for segment in &self.segments {
            match segment {
                Segment::Text(text, _) => out.push_str(text),
                Segment::Property(name, _) => match lookup(name) {
                    Some(value) => out.push_str(&value),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                },
            }
        }
        out
    }

    /// The message as [`render`](Self::render) makes it, written as a JSON string into `out`:
    /// `write_value(out, Property)` writes a property's value escaped as inside a JSON string and
    /// returns `false` if the property has none (then `{Property}` stays).
    pub fn write_message_json(
        &self,
        out: &mut Vec<u8>,
        mut write_value: impl FnMut(&mut Vec<u8>, &str) -> bool,
    ) {
        out.push(b'"');
        for segment in &self.segments {
            match segment {
                Segment::Text(_, json) => out.extend_from_slice(json),
                Segment::Property(name, unknown) => {
                    if !write_value(out, name) {
                        out.extend_from_slice(unknown);
                    }
                }
            }
        }
        out.push(b'"');
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_known_properties_and_keeps_unknown_ones() {
        let f = LogFormat::new(
            Some("Quote {QuoteId} for {TenantId} {Nope} {unclosed"),
            ["quoteId".to_string()],
        );
        assert_eq!(f.property_of("quoteId"), "QuoteId");
        assert_eq!(f.field_of("QuoteId"), Some("quoteId"));
        let lookup = |name: &str| match name {
            "QuoteId" => Some(Cow::Borrowed("fxq_1")),
            "TenantId" => Some(Cow::Borrowed("blue")),
            _ => None,
        };
        assert_eq!(f.render(lookup), "Quote fxq_1 for blue {Nope} {unclosed");
        assert_eq!(LogFormat::new(None, []).template(), DEFAULT_TEMPLATE);
    }

    #[test]
    fn the_message_written_as_json_is_the_rendered_message_escaped() {
        let odd = "a \"quoted\" \\ value\n\u{1}é";
        for template in [
            "Quote {QuoteId} for {TenantId} {Nope} {unclosed",
            "{QuoteId}{TenantId}",
            "\"{Nope}\" \\ {X\"y} \t {",
            "",
            "no properties at all",
        ] {
            let f = LogFormat::new(Some(template), ["quoteId".to_string()]);
            for value in ["fxq_1", odd, ""] {
                let lookup = |name: &str| match name {
                    "QuoteId" => Some(value),
                    "TenantId" => Some("blue"),
                    _ => None,
                };
                let mut written = b"{".to_vec();
                f.write_message_json(&mut written, |out, name| match lookup(name) {
                    Some(v) => {
                        json_str_contents(out, v);
                        true
                    }
                    None => false,
                });
                let rendered = f.render(|name| lookup(name).map(Cow::Borrowed));
                let expected = format!("{{{}", serde_json::to_string(&rendered).unwrap());
                assert_eq!(String::from_utf8(written).unwrap(), expected, "{template}");
            }
            let mut key = Vec::new();
            f.write_property_key(&mut key, "quoteId");
            assert_eq!(key, b"\"QuoteId\":");
            assert_eq!(
                f.template_json(),
                serde_json::to_string(template).unwrap().as_bytes()
            );
        }
    }
}
