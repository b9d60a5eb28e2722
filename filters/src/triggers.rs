//! Trigger rules: which HTTP responses become business events (`fx.quote.created` from
//! `POST /api/fx/quote` answered 201 with JSON), and which fields of the response body the event
//! carries, picked by RFC 6901 JSON pointers.
//!
//! Money must stay exact: the body's `1000.10` must reach the event as `"1000.10"`, not `1000.1`.
//! So no number ever goes through `f64`: the body is navigated as [`RawValue`] slices of its own
//! text, and a number leaf is read straight from that text into a [`Decimal`].
//!
//! The decision is split by the moment the proxy knows things: [`TriggerRule::matches_request`]
//! when the request arrives, [`TriggerRule::matches_response`] when the response header arrives
//! (so the body is only buffered when it will be used), and [`TriggerRule::extract`] on the
//! complete body.

use std::borrow::Cow;

use rust_decimal::Decimal;
use serde_json::value::RawValue;

use crate::routing::prefix_matches;

/// Which request paths a trigger watches. Matching is case-sensitive, on the path without query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// The path is exactly this.
    Exact(String),
    /// The path starts with this prefix on a whole-segment boundary: `/api/fx` matches
    /// `/api/fx/quote`, never `/api/fxyz` (see [`prefix_matches`]).
    Prefix(String),
}

/// A trigger as the configuration states it, before validation by [`TriggerRule::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerSpec {
    pub name: String,
    /// The event type, lowercase dotted segments such as `fx.quote.created`.
    pub event: String,
    /// `None`: any method. Compared case-insensitively.
    pub method: Option<String>,
    pub path: PathMatch,
    /// Response statuses that fire the trigger; empty means any 2xx.
    pub statuses: Vec<u16>,
    /// Fire only when the response says it is JSON (`application/json` or `application/*+json`).
    pub require_json: bool,
    /// `(event field name, RFC 6901 JSON pointer)`, in the order the event lists them.
    pub fields: Vec<(String, String)>,
    /// Event field names that must be present and not null for the event to be emitted.
    pub required: Vec<String>,
    /// The largest (decompressed) body the caller should buffer for [`TriggerRule::extract`].
    pub max_body_bytes: usize,
}

/// Why a [`TriggerSpec`] is refused. Each message names what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerConfigError {
    #[error("the trigger name is empty")]
    EmptyName,
    #[error("the event type is empty")]
    EmptyEvent,
    #[error(
        "event type {0:?} is not lowercase dotted segments like \"fx.quote.created\" \
         (a-z, 0-9, '_', '-', separated by single dots)"
    )]
    InvalidEvent(String),
    #[error("method {0:?} is not an HTTP method token")]
    InvalidMethod(String),
    #[error("path {0:?} does not start with '/'")]
    InvalidPath(String),
    #[error("status {0} is outside 100..=599")]
    InvalidStatus(u16),
    #[error("max_body_bytes is 0: no body could ever be read")]
    ZeroMaxBodyBytes,
    #[error("a field with JSON pointer {pointer:?} has an empty name")]
    EmptyFieldName { pointer: String },
    #[error("field {0:?} is listed more than once")]
    DuplicateField(String),
    #[error("field {field:?}: JSON pointer {pointer:?} is neither \"\" nor starts with '/'")]
    PointerNotAbsolute { field: String, pointer: String },
    #[error(
        "field {field:?}: JSON pointer {pointer:?} has a '~' not followed by '0' or '1' \
         (write \"~0\" for '~' and \"~1\" for '/')"
    )]
    PointerBadEscape { field: String, pointer: String },
    #[error("required field {0:?} is not among the fields")]
    RequiredNotAField(String),
}

/// Why a response body yields no event. Both are ordinary outcomes (a provider's error page, a
/// quote without an id), counted by [`ExtractError::reason`], not failures of the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("the response body is not JSON")]
    NotJson,
    #[error("a required field is absent or null")]
    MissingField,
}

impl ExtractError {
    /// A stable label for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            ExtractError::NotJson => "not_json",
            ExtractError::MissingField => "missing_field",
        }
    }
}

/// One extracted event field; a string without escapes borrows the body's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue<'a> {
    String(Cow<'a, str>),
    /// Every JSON number becomes an exact decimal (scale kept: 1000.10 stays 1000.10; 1e3 allowed via from_scientific).
    Decimal(Decimal),
    /// A number too large or too precise for a Decimal, kept as its JSON text.
    Number(String),
    Bool(bool),
    /// An object or array, as its raw JSON text (insignificant whitespace removed, nothing else
    /// changed).
    Json(String),
}

impl FieldValue<'_> {
    /// The value in an event's JSON `data`: strings stay strings, decimals become strings with
    /// their exact text (`"1000.10"`), `Number(text)` becomes a string too, `Bool` stays a bool,
    /// `Json` is embedded as parsed JSON.
    ///
    /// Numbers inside a `Json` value follow the same rule and become strings of their exact text:
    /// a `serde_json::Value` number is an `f64` (this crate does not enable `arbitrary_precision`),
    /// which would turn an embedded `1000.10` into `1000.1`. A `Json` whose text is not JSON (only
    /// possible when built by hand) or that nests deeper than 128 levels is embedded as a string
    /// of its text.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            FieldValue::String(s) => Value::String(s.to_string()),
            FieldValue::Number(s) => Value::String(s.clone()),
            FieldValue::Decimal(d) => Value::String(d.to_string()),
            FieldValue::Bool(b) => Value::Bool(*b),
            FieldValue::Json(text) => serde_json::from_str::<&RawValue>(text)
                .ok()
                .and_then(|raw| exact_value(raw, 0))
                .unwrap_or_else(|| Value::String(text.clone())),
        }
    }

    /// Writes the value as [`to_json`](Self::to_json) would, without building a `Value` for the
    /// common cases.
    pub fn serialize_json<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            FieldValue::String(s) => serializer.serialize_str(s),
            FieldValue::Number(s) => serializer.serialize_str(s),
            FieldValue::Decimal(d) => serializer.collect_str(d),
            FieldValue::Bool(b) => serializer.serialize_bool(*b),
            FieldValue::Json(_) => serde::Serialize::serialize(&self.to_json(), serializer),
        }
    }

    /// The same value, owning its text.
    pub fn into_owned(self) -> FieldValue<'static> {
        match self {
            FieldValue::String(s) => FieldValue::String(Cow::Owned(s.into_owned())),
            FieldValue::Decimal(d) => FieldValue::Decimal(d),
            FieldValue::Number(s) => FieldValue::Number(s),
            FieldValue::Bool(b) => FieldValue::Bool(b),
            FieldValue::Json(s) => FieldValue::Json(s),
        }
    }

    /// Text for log properties and metric labels (decimals exact).
    pub fn as_text(&self) -> String {
        match self {
            FieldValue::String(s) => s.to_string(),
            FieldValue::Number(s) | FieldValue::Json(s) => s.clone(),
            FieldValue::Decimal(d) => d.to_string(),
            FieldValue::Bool(b) => b.to_string(),
        }
    }
}

impl serde::Serialize for FieldValue<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.serialize_json(serializer)
    }
}

/// A validated trigger, its pointers parsed once into a tree so that [`TriggerRule::extract`]
/// parses each JSON container on the way at most once, however many fields share it.
#[derive(Debug, Clone)]
pub struct TriggerRule {
    name: String,
    event: String,
    /// Upper case for display; compared ignoring ASCII case.
    method: Option<String>,
    path: PathMatch,
    statuses: Vec<u16>,
    require_json: bool,
    /// Field names and whether each is required, in configuration order.
    fields: Vec<(String, bool)>,
    /// The pointers of `fields`, merged by common prefix.
    tree: PointerNode,
    max_body_bytes: usize,
}

/// One position in the merged pointer tree: the fields whose pointer ends here, and the
/// reference tokens leading further down.
#[derive(Debug, Clone, Default)]
struct PointerNode {
    fields: Vec<usize>,
    children: Vec<(String, PointerNode)>,
}

impl PointerNode {
    fn insert(&mut self, segments: &[String], field: usize) {
        match segments.split_first() {
            None => self.fields.push(field),
            Some((first, rest)) => {
                let child = match self.children.iter().position(|(s, _)| s == first) {
                    Some(i) => &mut self.children[i].1,
                    None => {
                        self.children.push((first.clone(), PointerNode::default()));
                        let last = self.children.len() - 1;
                        &mut self.children[last].1
                    }
                };
                child.insert(rest, field);
            }
        }
    }
}

impl TriggerRule {
    pub fn new(spec: TriggerSpec) -> Result<Self, TriggerConfigError> {
        if spec.name.is_empty() {
            return Err(TriggerConfigError::EmptyName);
        }
        if spec.event.is_empty() {
            return Err(TriggerConfigError::EmptyEvent);
        }
        if !is_event_type(&spec.event) {
            return Err(TriggerConfigError::InvalidEvent(spec.event));
        }
        if spec.max_body_bytes == 0 {
            return Err(TriggerConfigError::ZeroMaxBodyBytes);
        }
        let method = match spec.method {
            Some(m) if !is_token(&m) => return Err(TriggerConfigError::InvalidMethod(m)),
            Some(m) => Some(m.to_ascii_uppercase()),
            None => None,
        };
        let (PathMatch::Exact(p) | PathMatch::Prefix(p)) = &spec.path;
        if !p.starts_with('/') {
            return Err(TriggerConfigError::InvalidPath(p.clone()));
        }
        if let Some(&bad) = spec.statuses.iter().find(|s| !(100..=599).contains(*s)) {
            return Err(TriggerConfigError::InvalidStatus(bad));
        }

        let mut fields: Vec<(String, bool)> = Vec::with_capacity(spec.fields.len());
        let mut tree = PointerNode::default();
        for (name, pointer) in spec.fields {
            if name.is_empty() {
                return Err(TriggerConfigError::EmptyFieldName { pointer });
            }
            if fields.iter().any(|(n, _)| *n == name) {
                return Err(TriggerConfigError::DuplicateField(name));
            }
            let segments = match parse_pointer(&pointer) {
                Ok(segments) => segments,
                Err(PointerError::NotAbsolute) => {
                    return Err(TriggerConfigError::PointerNotAbsolute {
                        field: name,
                        pointer,
                    });
                }
                Err(PointerError::BadEscape) => {
                    return Err(TriggerConfigError::PointerBadEscape {
                        field: name,
                        pointer,
                    });
                }
            };
            tree.insert(&segments, fields.len());
            fields.push((name, false));
        }
        for required in spec.required {
            match fields.iter_mut().find(|(n, _)| *n == required) {
                Some((_, is_required)) => *is_required = true,
                None => return Err(TriggerConfigError::RequiredNotAField(required)),
            }
        }

        Ok(Self {
            name: spec.name,
            event: spec.event,
            method,
            path: spec.path,
            statuses: spec.statuses,
            require_json: spec.require_json,
            fields,
            tree,
            max_body_bytes: spec.max_body_bytes,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn event(&self) -> &str {
        &self.event
    }

    /// The caller buffers at most this many (decompressed) body bytes; a larger body yields no
    /// event. [`TriggerRule::extract`] itself does not check it.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// Decided when the request arrives. `path` is the request path without the query.
    pub fn matches_request(&self, method: &str, path: &str) -> bool {
        let method_ok = self
            .method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method));
        method_ok
            && match &self.path {
                PathMatch::Exact(exact) => path == exact,
                PathMatch::Prefix(prefix) => prefix_matches(prefix, path),
            }
    }

    /// Decided when the response header arrives; `content_type` is the raw header value.
    pub fn matches_response(&self, status: u16, content_type: Option<&[u8]>) -> bool {
        let status_ok = if self.statuses.is_empty() {
            (200..=299).contains(&status)
        } else {
            self.statuses.contains(&status)
        };
        status_ok && (!self.require_json || content_type.is_some_and(is_json_media_type))
    }

    /// From the complete (already decompressed) body: each configured field whose pointer leads
    /// to a non-null value, in configuration order. A missing path or a null is no field, and an
    /// error if that field is required.
    pub fn extract<'a>(
        &'a self,
        body: &'a [u8],
    ) -> Result<Vec<(&'a str, FieldValue<'a>)>, ExtractError> {
        // `from_str` rather than `from_slice`: the borrowed `RawValue`s must be `str` slices.
        let text = std::str::from_utf8(body).map_err(|_| ExtractError::NotJson)?;
        let mut found: Vec<Option<&RawValue>> = vec![None; self.fields.len()];
        let mut reader = serde_json::Deserializer::from_str(text);
        serde::de::DeserializeSeed::deserialize(Walk::new(&self.tree, &mut found), &mut reader)
            .and_then(|()| reader.end())
            .map_err(|_| ExtractError::NotJson)?;

        let mut out = Vec::with_capacity(self.fields.len());
        for ((name, required), raw) in self.fields.iter().zip(found) {
            match raw.map(leaf_value).transpose()?.flatten() {
                Some(value) => out.push((name.as_str(), value)),
                None if *required => return Err(ExtractError::MissingField),
                None => {}
            }
        }
        Ok(out)
    }
}

/// One pass over the body, parsing it once and allocating nothing for what no pointer names:
/// down `node` from the value being read, recording in `found` the raw value at which each
/// field's pointer ends; members and elements no pointer goes through are skipped (still
/// checked as JSON). For a duplicated member name the last one wins, as in a parsed object.
struct Walk<'n, 'f, 'a> {
    node: &'n PointerNode,
    found: &'f mut [Option<&'a RawValue>],
    /// `false` once the value's own fields are recorded and only its children are left.
    record_here: bool,
}

impl<'n, 'f, 'a> Walk<'n, 'f, 'a> {
    fn new(node: &'n PointerNode, found: &'f mut [Option<&'a RawValue>]) -> Self {
        Self {
            node,
            found,
            record_here: true,
        }
    }

    fn record(&mut self, value: &'a RawValue) {
        for &field in &self.node.fields {
            if let Some(slot) = self.found.get_mut(field) {
                *slot = Some(value);
            }
        }
    }

    fn child(&mut self, token: &str) -> Option<Walk<'n, '_, 'a>> {
        let node = &self.node.children.iter().find(|(t, _)| t == token)?.1;
        Some(Walk::new(node, &mut *self.found))
    }
}

impl<'de: 'a, 'a> serde::de::DeserializeSeed<'de> for Walk<'_, '_, 'a> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(mut self, d: D) -> Result<(), D::Error> {
        if self.node.children.is_empty() {
            let raw: &'de RawValue = serde::Deserialize::deserialize(d)?;
            self.record(raw);
            return Ok(());
        }
        if self.record_here && !self.node.fields.is_empty() {
            // A pointer ends here and others go further (rare): keep the value, then walk it.
            let raw: &'de RawValue = serde::Deserialize::deserialize(d)?;
            self.record(raw);
            let mut inner = serde_json::Deserializer::from_str(raw.get());
            self.record_here = false;
            return serde::de::DeserializeSeed::deserialize(self, &mut inner)
                .map_err(serde::de::Error::custom);
        }
        d.deserialize_any(self)
    }
}

impl<'de: 'a, 'a> serde::de::Visitor<'de> for Walk<'_, '_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(mut self, mut map: M) -> Result<(), M::Error> {
        while let Some(Token(name)) = map.next_key::<Token<'de>>()? {
            match self.child(&name) {
                Some(child) => map.next_value_seed(child)?,
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<S: serde::de::SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        let node = self.node;
        for index in 0usize.. {
            let next = match node
                .children
                .iter()
                .find(|(token, _)| array_index(token) == Some(index))
            {
                Some((_, child)) => seq.next_element_seed(Walk::new(child, &mut *self.found))?,
                None => seq.next_element::<serde::de::IgnoredAny>()?.map(|_| ()),
            };
            if next.is_none() {
                break;
            }
        }
        Ok(())
    }

    // A scalar has no members: every pointer going further is missing.
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A member name, borrowed from the body unless it has escapes.
struct Token<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Token<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl<'de> serde::de::Visitor<'de> for Name {
            type Value = Token<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Token<'de>, E> {
                Ok(Token(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Token<'de>, E> {
                Ok(Token(std::borrow::Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(Name)
    }
}

/// An RFC 6901 array index: `0` or a decimal integer without leading zeros. `-` (the element
/// after the last) and anything else point at nothing.
fn array_index(token: &str) -> Option<usize> {
    let digits_only = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

/// The field value of a JSON leaf, `None` for null.
fn leaf_value(raw: &RawValue) -> Result<Option<FieldValue<'_>>, ExtractError> {
    // JSON's whitespace is ASCII.
    let text = raw.get().trim_ascii();
    let value = match text.as_bytes().first() {
        Some(b'n') => return Ok(None),
        Some(b't') => FieldValue::Bool(true),
        Some(b'f') => FieldValue::Bool(false),
        // The parser has checked the string: without a backslash it is its text as it stands.
        Some(b'"') if text.len() >= 2 && !text.contains('\\') => {
            FieldValue::String(Cow::Borrowed(&text[1..text.len() - 1]))
        }
        Some(b'"') => FieldValue::String(Cow::Owned(
            serde_json::from_str::<String>(text).map_err(|_| ExtractError::NotJson)?,
        )),
        Some(b'{' | b'[') => FieldValue::Json(compact(text)),
        Some(_) => number_value(text),
        None => return Err(ExtractError::NotJson),
    };
    Ok(Some(value))
}

/// A JSON number's text as an exact [`Decimal`], or kept as text when a `Decimal` cannot hold it
/// exactly (more than 28 fractional digits, beyond 96 bits of mantissa, a huge exponent).
fn number_value(text: &str) -> FieldValue<'static> {
    exact_decimal(text).map_or_else(|| FieldValue::Number(text.to_string()), FieldValue::Decimal)
}

fn exact_decimal(text: &str) -> Option<Decimal> {
    match text.split_once(['e', 'E']) {
        None => Decimal::from_str_exact(text).ok(),
        Some((mantissa, _)) => {
            // `from_scientific` reads the mantissa with the rounding `from_str`; make sure that
            // rounds nothing. Its exponent arithmetic is exact or fails.
            Decimal::from_str_exact(mantissa).ok()?;
            Decimal::from_scientific(text).ok()
        }
    }
}

/// `text` (valid JSON) without the whitespace between tokens, for one-line logs and labels.
fn compact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if matches!(c, ' ' | '\t' | '\n' | '\r') {
            continue;
        }
        out.push(c);
    }
    out
}

/// Deepest nesting [`exact_value`] follows; serde_json's own parser stops at 128 anyway.
const MAX_JSON_DEPTH: usize = 128;

/// `raw` as a `serde_json::Value` whose numbers are strings of their exact text (see
/// [`FieldValue::to_json`]). `None` if it is not JSON.
fn exact_value(raw: &RawValue, depth: usize) -> Option<serde_json::Value> {
    use serde_json::Value;
    if depth > MAX_JSON_DEPTH {
        return None;
    }
    let text = raw.get().trim();
    Some(match text.as_bytes().first()? {
        b'{' => {
            // Deserialized member by member in document order, so a repeated key keeps its last
            // value, as serde_json does.
            let members: Vec<(String, &RawValue)> =
                serde_json::from_str::<RawObject<'_>>(text).ok()?.0;
            let mut map = serde_json::Map::new();
            for (key, member) in members {
                map.insert(key, exact_value(member, depth + 1)?);
            }
            Value::Object(map)
        }
        b'[' => {
            let elements: Vec<&RawValue> = serde_json::from_str(text).ok()?;
            Value::Array(
                elements
                    .into_iter()
                    .map(|e| exact_value(e, depth + 1))
                    .collect::<Option<_>>()?,
            )
        }
        b'"' => Value::String(serde_json::from_str(text).ok()?),
        b'n' | b't' | b'f' => serde_json::from_str(text).ok()?,
        _ => Value::String(text.to_string()),
    })
}

/// A JSON object's members in document order, values left raw.
struct RawObject<'a>(Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(RawObject(members))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PointerError {
    NotAbsolute,
    BadEscape,
}

/// Splits an RFC 6901 pointer into its unescaped reference tokens: `""` is the whole document
/// (no tokens), `"/"` the member named `""`, `~1` stands for `/` and `~0` for `~`. `~01` is
/// therefore `~1`, not `/`: each escape is decoded once, left to right.
fn parse_pointer(pointer: &str) -> Result<Vec<String>, PointerError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer.strip_prefix('/').ok_or(PointerError::NotAbsolute)?;
    rest.split('/').map(unescape_token).collect()
}

fn unescape_token(token: &str) -> Result<String, PointerError> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c != '~' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('~'),
            Some('1') => out.push('/'),
            _ => return Err(PointerError::BadEscape),
        }
    }
    Ok(out)
}

/// Lowercase dotted segments: `fx.quote.created`. Each segment non-empty, of `a-z 0-9 _ -`, so
/// the type is safe as a metric label and a routing key.
fn is_event_type(event: &str) -> bool {
    event.split('.').all(|segment| {
        !segment.is_empty()
            && segment
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
    })
}

/// An RFC 9110 token, the syntax of a method.
fn is_token(s: &str) -> bool {
    is_token_bytes(s.as_bytes())
}

fn is_token_bytes(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// `application/json` or `application/<something>+json`, any case, parameters (`; charset=utf-8`)
/// ignored. A header that is not ASCII text is not JSON.
fn is_json_media_type(content_type: &[u8]) -> bool {
    // Read as bytes, without a lower-cased copy (this is on every triggered answer's path); text
    // that is not UTF-8 is not JSON.
    if !content_type.is_ascii() && std::str::from_utf8(content_type).is_err() {
        return false;
    }
    let end = content_type
        .iter()
        .position(|&b| b == b';')
        .unwrap_or(content_type.len());
    let mut media_type = &content_type[..end];
    while let [b' ' | b'\t', rest @ ..] = media_type {
        media_type = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = media_type {
        media_type = rest;
    }
    const APPLICATION: &[u8] = b"application/";
    if media_type.len() < APPLICATION.len()
        || !media_type[..APPLICATION.len()].eq_ignore_ascii_case(APPLICATION)
    {
        return false;
    }
    let subtype = &media_type[APPLICATION.len()..];
    if subtype.eq_ignore_ascii_case(b"json") {
        return true;
    }
    const SUFFIX: &[u8] = b"+json";
    match subtype.len().checked_sub(SUFFIX.len()) {
        Some(at) if subtype[at..].eq_ignore_ascii_case(SUFFIX) => {
            let prefix = &subtype[..at];
            is_token_bytes(prefix) && !prefix.contains(&b'+')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The media type check as it was written first (through a lower-cased copy): the
    /// reference for the byte-wise one.
    fn reference_is_json_media_type(content_type: &[u8]) -> bool {
        let Ok(value) = std::str::from_utf8(content_type) else {
            return false;
        };
        let media_type = value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim_matches([' ', '\t'])
            .to_ascii_lowercase();
        let Some(subtype) = media_type.strip_prefix("application/") else {
            return false;
        };
        if subtype == "json" {
            return true;
        }
        subtype
            .strip_suffix("+json")
            .is_some_and(|prefix| is_token(prefix) && !prefix.contains('+'))
    }

    #[test]
    fn json_media_types_are_read_as_before() {
        let cases: &[&[u8]] = &[
            b"application/json",
            b"Application/JSON; charset=utf-8",
            b" \tapplication/json \t;x",
            b"application/problem+json",
            b"application/vnd.api+JSON",
            b"application/+json",
            b"application/a+b+json",
            b"application/json+json",
            b"application/jsonx",
            b"application/",
            b"applicatio",
            b"text/json",
            b"application/json\xff",
            b"application/json; charset=\xc3\xa9",
            b"application/json;\xff",
            b"application/\xc3\xa9+json",
            b"application/a b+json",
            b"\napplication/json",
            b"",
            b";application/json",
        ];
        for case in cases {
            assert_eq!(
                is_json_media_type(case),
                reference_is_json_media_type(case),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn json_media_types_are_read_as_before_for_any_bytes(
            head in proptest::sample::select(vec!["", "application/", "APPLICATION/", " application/", "application/vnd"]),
            body in proptest::collection::vec(proptest::sample::select(b"aJsOn+/; \t.\xc3\xa9\xff-".to_vec()), 0..14),
            tail in proptest::sample::select(vec!["", "json", "+json", "+JSON", "; charset=utf-8"]),
        ) {
            let mut case = head.as_bytes().to_vec();
            case.extend(&body);
            case.extend(tail.as_bytes());
            proptest::prop_assert_eq!(is_json_media_type(&case), reference_is_json_media_type(&case));
        }
    }

    fn tokens(pointer: &str) -> Result<Vec<String>, PointerError> {
        parse_pointer(pointer)
    }

    fn strings(parts: &[&str]) -> Result<Vec<String>, PointerError> {
        Ok(parts.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn pointers_split_into_unescaped_tokens() {
        assert_eq!(tokens(""), strings(&[]));
        assert_eq!(tokens("/"), strings(&[""]));
        assert_eq!(tokens("//"), strings(&["", ""]));
        assert_eq!(tokens("/id"), strings(&["id"]));
        assert_eq!(tokens("/a/0/b"), strings(&["a", "0", "b"]));
        assert_eq!(tokens("/a~1b"), strings(&["a/b"]));
        assert_eq!(tokens("/c~0d"), strings(&["c~d"]));
        assert_eq!(tokens("/~01"), strings(&["~1"]));
        assert_eq!(tokens("/~10"), strings(&["/0"]));
        assert_eq!(tokens("/~0~1~0"), strings(&["~/~"]));
        assert_eq!(tokens("/caf\u{e9} x"), strings(&["caf\u{e9} x"]));
    }

    #[test]
    fn malformed_pointers_are_refused() {
        assert_eq!(tokens("id"), Err(PointerError::NotAbsolute));
        assert_eq!(tokens("#/id"), Err(PointerError::NotAbsolute));
        assert_eq!(tokens(" /id"), Err(PointerError::NotAbsolute));
        for bad in ["/~", "/a~", "/~2", "/a~b", "/ok/~~0", "/~/"] {
            assert_eq!(tokens(bad), Err(PointerError::BadEscape), "{bad}");
        }
    }

    #[test]
    fn array_indexes_are_canonical_decimals() {
        assert_eq!(array_index("0"), Some(0));
        assert_eq!(array_index("2"), Some(2));
        assert_eq!(array_index("10"), Some(10));
        for bad in ["", "-", "-1", "01", "00", "+1", "1.0", " 1", "1e2", "x"] {
            assert_eq!(array_index(bad), None, "{bad}");
        }
        assert_eq!(array_index("99999999999999999999999999"), None);
    }

    #[test]
    fn pointer_tree_shares_prefixes() {
        let mut tree = PointerNode::default();
        for (i, p) in ["/a/b", "/a/c", "/a", "", "/a/b"].iter().enumerate() {
            let segments = parse_pointer(p).unwrap();
            tree.insert(&segments, i);
        }
        assert_eq!(tree.fields, vec![3]);
        assert_eq!(tree.children.len(), 1);
        let a = &tree.children[0].1;
        assert_eq!(a.fields, vec![2]);
        assert_eq!(a.children.len(), 2);
        assert_eq!(a.children[0].1.fields, vec![0, 4]);
        assert_eq!(a.children[1].1.fields, vec![1]);
    }

    #[test]
    fn compact_keeps_whitespace_inside_strings() {
        assert_eq!(
            compact("{ \"a b\" : [ 1 ,\n\t2 ] , \"q\\\" \" : \" x \" }"),
            "{\"a b\":[1,2],\"q\\\" \":\" x \"}"
        );
    }

    #[test]
    fn event_types() {
        for ok in ["fx.quote.created", "payment", "a-b.c_d.v2", "0.1"] {
            assert!(is_event_type(ok), "{ok}");
        }
        for bad in [
            "",
            ".fx",
            "fx.",
            "fx..quote",
            "Fx.quote",
            "fx quote",
            "fx/quote",
            "fx.quoté",
        ] {
            assert!(!is_event_type(bad), "{bad}");
        }
    }
}
