//! A trigger's business log line format, prepared once at start: the message template split into
//! literal text and property names, and each field's property name (first letter upper-cased).

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Property(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFormat {
    template: String,
    segments: Vec<Segment>,
    /// (field name, property name)
    properties: Vec<(String, String)>,
}

pub const DEFAULT_TEMPLATE: &str = "{EventType} for tenant {TenantId}";

impl LogFormat {
    pub fn new(template: Option<&str>, fields: impl IntoIterator<Item = String>) -> Self {
        let template = template.unwrap_or(DEFAULT_TEMPLATE).to_string();
        let mut segments = Vec::new();
        let mut rest = template.as_str();
        while let Some(start) = rest.find('{') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('}') else { break };
            if start > 0 {
                segments.push(Segment::Text(rest[..start].to_string()));
            }
            segments.push(Segment::Property(after[..end].to_string()));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest.to_string()));
        }
        let properties = fields
            .into_iter()
            .map(|f| {
                let property = pascal(&f).into_owned();
                (f, property)
            })
            .collect();
        Self {
            template,
            segments,
            properties,
        }
    }

    pub fn template(&self) -> &str {
        &self.template
    }

    /// The property name of `field`.
    pub fn property_of<'a>(&'a self, field: &'a str) -> &'a str {
        self.properties
            .iter()
            .find(|(f, _)| f == field)
            .map_or(field, |(_, p)| p.as_str())
    }

    /// The field whose property name is `property`, if any.
    pub fn field_of(&self, property: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(_, p)| p == property)
            .map(|(f, _)| f.as_str())
    }

    /// The message with each `{Property}` replaced by `lookup(Property)`; unknown ones stay.
    pub fn render<'v>(&self, lookup: impl Fn(&str) -> Option<Cow<'v, str>>) -> String {
        let mut out = String::with_capacity(self.template.len() + 32);
        for segment in &self.segments {
            match segment {
                Segment::Text(text) => out.push_str(text),
                Segment::Property(name) => match lookup(name) {
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
}
