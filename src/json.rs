//! JSON written by hand, for the lines and envelopes made on every request or event: the same
//! bytes serde_json writes (tests hold each writer to serde's output), without serde's per-key
//! machinery, which escapes every member name every time.

use std::fmt::Display;
use std::io::Write;

pub use payedge_filters::json::{json_str, json_str_contents, json_str_plain};

/// A JSON object's members written in order. Keys are the caller's literals; values are
/// escaped. Absent optional members are left out, as serde's `skip_serializing_if` does.
pub struct Object<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> Object<'a> {
    pub fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, empty: true }
    }

    /// Keys are the callers' literals, plain names with nothing to escape: written as they are.
    fn key(&mut self, key: &'static str) {
        debug_assert!(
            key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{key}"
        );
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.reserve(key.len() + 3);
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    pub fn str(&mut self, key: &'static str, value: &str) {
        self.key(key);
        json_str(self.out, value);
    }

    pub fn opt_str(&mut self, key: &'static str, value: Option<&str>) {
        if let Some(value) = value {
            self.str(key, value);
        }
    }

    pub fn uint(&mut self, key: &'static str, value: u64) {
        self.key(key);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    pub fn opt_uint(&mut self, key: &'static str, value: Option<u64>) {
        if let Some(value) = value {
            self.uint(key, value);
        }
    }

    /// Through serde_json itself, so the text is its formatter's (which changed from ryu to
    /// zmij within serde_json 1.x: `1e22` against `1e+22`); `null` when not finite.
    pub fn float(&mut self, key: &'static str, value: f64) {
        self.key(key);
        let _ = serde_json::to_writer(&mut *self.out, &value);
    }

    /// A value's `Display` text as a JSON string (serde's `collect_str`).
    pub fn opt_display(&mut self, key: &'static str, value: Option<impl Display>) {
        if let Some(value) = value {
            self.key(key);
            let mut text = Vec::with_capacity(48);
            let _ = write!(text, "{value}");
            match std::str::from_utf8(&text) {
                Ok(text) => json_str(self.out, text),
                Err(_) => self.out.extend_from_slice(b"null"),
            }
        }
    }

    pub fn close(self) {
        self.out.push(b'}');
    }
}
