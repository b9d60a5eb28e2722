//! The SignalR JSON hub protocol (version 1), as the official clients speak it: messages are JSON
//! texts each ended by the record separator 0x1E; a WebSocket frame may hold several, and one may
//! span frames. Pure functions: framing, parsing and the few server messages.

use serde::Deserialize;
use serde_json::Value;

pub const RECORD_SEPARATOR: u8 = 0x1e;

pub const INVOCATION: u8 = 1;
pub const STREAM_ITEM: u8 = 2;
pub const COMPLETION: u8 = 3;
pub const STREAM_INVOCATION: u8 = 4;
pub const CANCEL_INVOCATION: u8 = 5;
pub const PING: u8 = 6;
pub const CLOSE: u8 = 7;
pub const ACK: u8 = 8;
pub const SEQUENCE: u8 = 9;

/// Collects text until whole messages are available.
#[derive(Debug)]
pub struct Framer {
    buffer: Vec<u8>,
    /// How much of `buffer` is known to hold no separator: a message arriving in many small
    /// pieces is scanned once, not once per piece.
    scanned: usize,
    max_message: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a message is larger than the hub accepts")]
    Oversized,
}

impl Framer {
    pub fn new(max_message: usize) -> Self {
        Self {
            buffer: Vec::new(),
            scanned: 0,
            max_message,
        }
    }

    /// Adds received text and returns the complete messages it finished (without separators).
    pub fn push(&mut self, text: &[u8]) -> Result<Vec<Vec<u8>>, FrameError> {
        self.buffer.extend_from_slice(text);
        let mut messages = Vec::new();
        let mut start = 0;
        let mut from = self.scanned;
        while let Some(found) = self.buffer[from..]
            .iter()
            .position(|b| *b == RECORD_SEPARATOR)
        {
            let end = from + found;
            if end - start > self.max_message {
                return Err(FrameError::Oversized);
            }
            messages.push(self.buffer[start..end].to_vec());
            start = end + 1;
            from = start;
        }
        self.buffer.drain(..start);
        self.scanned = self.buffer.len();
        if self.buffer.len() > self.max_message {
            return Err(FrameError::Oversized);
        }
        if self.buffer.is_empty() && self.buffer.capacity() > 2 * self.max_message.min(64 * 1024) {
            // One large message should not pin its buffer for the connection's lifetime.
            self.buffer = Vec::new();
        }
        Ok(messages)
    }
}

/// What a client can send once the handshake is done.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Invocation {
        invocation_id: Option<String>,
        target: String,
        arguments: Vec<Value>,
    },
    /// A streaming invocation: not supported, answered with an error.
    StreamInvocation {
        invocation_id: Option<String>,
    },
    Ping,
    Close,
    /// Stateful reconnect: the client has every message up to this sequence id...
    Ack(u64),
    /// ...and, first on a new socket, its resend starts at this one.
    Sequence(u64),
    /// Known to the protocol but meaningless here (stream items, cancellations, acks) or of a
    /// type this server does not know: ignored, as the official clients ignore unknown types.
    Ignored(u8),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("the message is not valid JSON")]
    NotJson,
    #[error("the message has no valid type")]
    NoType,
    #[error("an invocation needs a target and arguments")]
    BadInvocation,
    #[error("an ack or sequence message needs a sequenceId")]
    NoSequenceId,
}

#[derive(Deserialize)]
struct RawMessage {
    #[serde(rename = "type")]
    kind: Option<u8>,
    #[serde(rename = "invocationId")]
    invocation_id: Option<String>,
    target: Option<String>,
    arguments: Option<Vec<Value>>,
    #[serde(rename = "sequenceId")]
    sequence_id: Option<u64>,
}

impl ClientMessage {
    /// Counted for stateful reconnect (invocations, stream items, completions, cancellations).
    pub fn trackable(&self) -> bool {
        match self {
            Self::Invocation { .. } | Self::StreamInvocation { .. } => true,
            Self::Ignored(kind) => (INVOCATION..=CANCEL_INVOCATION).contains(kind),
            _ => false,
        }
    }
}

pub fn parse(message: &[u8]) -> Result<ClientMessage, MessageError> {
    let raw: RawMessage = serde_json::from_slice(message).map_err(|e| {
        if e.is_data() {
            MessageError::NoType
        } else {
            MessageError::NotJson
        }
    })?;
    Ok(match raw.kind.ok_or(MessageError::NoType)? {
        INVOCATION => ClientMessage::Invocation {
            invocation_id: raw.invocation_id,
            target: raw.target.ok_or(MessageError::BadInvocation)?,
            arguments: raw.arguments.ok_or(MessageError::BadInvocation)?,
        },
        STREAM_INVOCATION => ClientMessage::StreamInvocation {
            invocation_id: raw.invocation_id,
        },
        PING => ClientMessage::Ping,
        CLOSE => ClientMessage::Close,
        ACK => ClientMessage::Ack(raw.sequence_id.ok_or(MessageError::NoSequenceId)?),
        SEQUENCE => ClientMessage::Sequence(raw.sequence_id.ok_or(MessageError::NoSequenceId)?),
        other => ClientMessage::Ignored(other),
    })
}

/// The handshake a client opens with: `{"protocol":"json","version":1}`.
#[derive(Debug, Deserialize)]
struct Handshake {
    protocol: String,
    version: u32,
}

/// The version of a JSON handshake (1, or 2 for stateful reconnect); otherwise the error to
/// answer with.
pub fn check_handshake(message: &[u8]) -> Result<u32, String> {
    let handshake: Handshake = serde_json::from_slice(message)
        .map_err(|_| "the handshake is not a valid handshake request".to_string())?;
    if handshake.protocol != "json" {
        return Err(format!(
            "the protocol '{}' is not supported (json only)",
            handshake.protocol
        ));
    }
    if !(1..=2).contains(&handshake.version) {
        return Err(format!(
            "version {} of the json protocol is not supported (1 and 2 only)",
            handshake.version
        ));
    }
    Ok(handshake.version)
}

fn framed(json: &Value) -> String {
    let mut text = json.to_string();
    text.push(RECORD_SEPARATOR as char);
    text
}

pub fn handshake_response(error: Option<&str>) -> String {
    match error {
        None => framed(&serde_json::json!({})),
        Some(e) => framed(&serde_json::json!({ "error": e })),
    }
}

pub fn ping() -> String {
    framed(&serde_json::json!({ "type": PING }))
}

pub fn ack(sequence_id: u64) -> String {
    framed(&serde_json::json!({ "type": ACK, "sequenceId": sequence_id }))
}

pub fn sequence(sequence_id: u64) -> String {
    framed(&serde_json::json!({ "type": SEQUENCE, "sequenceId": sequence_id }))
}

pub fn close(error: Option<&str>, allow_reconnect: bool) -> String {
    let mut message = serde_json::json!({ "type": CLOSE });
    if let Some(e) = error {
        message["error"] = e.into();
    }
    if allow_reconnect {
        message["allowReconnect"] = true.into();
    }
    framed(&message)
}

pub fn completion(invocation_id: &str, error: Option<&str>) -> String {
    let mut message = serde_json::json!({ "type": COMPLETION, "invocationId": invocation_id });
    if let Some(e) = error {
        message["error"] = e.into();
    }
    framed(&message)
}

/// A successful completion carrying `result`.
pub fn completion_result(invocation_id: &str, result: serde_json::Value) -> String {
    framed(&serde_json::json!({
        "type": COMPLETION,
        "invocationId": invocation_id,
        "result": result,
    }))
}

/// A server push: `target` is the event type, the only argument the event envelope (already
/// JSON), written once and shared by every connection that receives it.
pub fn event_invocation(target: &str, envelope_json: &str) -> String {
    let mut text = String::with_capacity(envelope_json.len() + target.len() + 48);
    text.push_str(r#"{"type":1,"target":"#);
    text.push_str(&serde_json::Value::from(target).to_string());
    text.push_str(r#","arguments":["#);
    text.push_str(envelope_json);
    text.push_str("]}");
    text.push(RECORD_SEPARATOR as char);
    text
}

#[cfg(test)]
mod properties {
    //! Frames from a hostile client: split anywhere, missing separators, huge, invalid UTF-8,
    //! any JSON. `PROPTEST_CASES=100000 cargo test --lib hub::protocol::properties` runs longer.
    use super::*;
    use proptest::prelude::*;

    /// Streams of messages (any bytes but the separator, some JSON-looking), each terminated.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let message = prop_oneof![
            proptest::collection::vec(any::<u8>().prop_filter("no separator", |b| *b != RECORD_SEPARATOR), 0..200),
            r#"\{"type":[0-9],"invocationId":"[0-9]{0,3}","target":"(JoinTenantGroup|LeaveTenantGroup|x)","arguments":\[("blue"|null|1|\[\]|\{\}),?("[0-9-]{0,20}"|null)?\]\}"#
                .prop_map(String::into_bytes),
        ];
        proptest::collection::vec(message, 0..8).prop_map(|messages| {
            let mut out = Vec::new();
            for m in messages {
                out.extend_from_slice(&m);
                out.push(RECORD_SEPARATOR);
            }
            out
        })
    }

    proptest! {
        #[test]
        fn a_stream_frames_the_same_whole_or_split_anywhere(
            bytes in stream(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
            tail in proptest::collection::vec(any::<u8>().prop_filter("no separator", |b| *b != RECORD_SEPARATOR), 0..20),
        ) {
            let mut bytes = bytes;
            bytes.extend_from_slice(&tail); // an unfinished message: never a frame
            let max = 4096;
            let whole = Framer::new(max).push(&bytes);
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut split = Framer::new(max);
            let (mut frames, mut at, mut failed) = (Vec::new(), 0, None);
            for point in points.into_iter().chain([bytes.len()]) {
                match split.push(&bytes[at..point]) {
                    Ok(mut got) => frames.append(&mut got),
                    Err(e) => { failed = Some(e); break; }
                }
                at = point;
            }
            let mut one_by_one = Framer::new(max);
            let mut singles = Vec::new();
            for b in &bytes {
                singles.extend(one_by_one.push(std::slice::from_ref(b)).unwrap_or_default());
            }
            match (whole, failed) {
                (Ok(expected), None) => {
                    prop_assert_eq!(&frames, &expected);
                    prop_assert_eq!(&singles, &expected);
                    for frame in &expected {
                        // Parsing any frame never panics.
                        let _ = parse(frame);
                        let _ = check_handshake(frame);
                    }
                }
                (Err(_), Some(_)) => {}
                (whole, split) => prop_assert!(false, "whole {whole:?}, split {split:?}"),
            }
        }

        #[test]
        fn an_oversized_message_is_refused_however_it_arrives(
            size in 5000usize..20000,
            piece in 1usize..3000,
        ) {
            let bytes = vec![b'x'; size];
            let mut framer = Framer::new(4096);
            let refused = bytes.chunks(piece).any(|chunk| framer.push(chunk).is_err());
            prop_assert!(refused);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RS: &str = "\u{1e}";

    #[test]
    fn a_message_in_many_pieces_is_assembled_and_scanned_once() {
        let mut f = Framer::new(1024);
        let message = r#"{"type":1,"target":"JoinTenantGroup","arguments":["blue"]}"#;
        for byte in message.as_bytes() {
            assert!(f.push(std::slice::from_ref(byte)).unwrap().is_empty());
            assert_eq!(f.scanned, f.buffer.len());
        }
        let done = f
            .push(format!("{RS}{{\"type\":6}}{RS}{{\"ty").as_bytes())
            .unwrap();
        assert_eq!(
            done,
            vec![message.as_bytes().to_vec(), br#"{"type":6}"#.to_vec()]
        );
        assert_eq!(
            f.push(format!("pe\":6}}{RS}").as_bytes()).unwrap(),
            vec![br#"{"type":6}"#.to_vec()]
        );
    }

    #[test]
    fn several_messages_in_one_frame_and_one_across_frames() {
        let mut f = Framer::new(1024);
        let two = format!(r#"{{"type":6}}{RS}{{"type":6}}{RS}{{"type":1,"tar"#);
        let messages = f.push(two.as_bytes()).unwrap();
        assert_eq!(messages.len(), 2);
        assert!(f.push(br#"get":"Join","#).unwrap().is_empty());
        let rest = format!(r#""arguments":["blue"],"invocationId":"7"}}{RS}"#);
        let messages = f.push(rest.as_bytes()).unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(
            parse(&messages[0]).unwrap(),
            ClientMessage::Invocation {
                invocation_id: Some("7".into()),
                target: "Join".into(),
                arguments: vec![Value::from("blue")],
            }
        );
    }

    #[test]
    fn oversized_messages_are_refused_whether_complete_or_not() {
        let mut f = Framer::new(16);
        assert_eq!(f.push(&[b'a'; 17]), Err(FrameError::Oversized));
        let mut f = Framer::new(16);
        let long = format!("{}{RS}", "a".repeat(20));
        assert_eq!(f.push(long.as_bytes()), Err(FrameError::Oversized));
        let mut f = Framer::new(16);
        assert!(f.push(format!("{}{RS}", "a".repeat(16)).as_bytes()).is_ok());
    }

    #[test]
    fn message_kinds() {
        assert_eq!(parse(br#"{"type":6}"#), Ok(ClientMessage::Ping));
        assert_eq!(
            parse(br#"{"type":7,"error":"bye"}"#),
            Ok(ClientMessage::Close)
        );
        assert_eq!(
            parse(br#"{"type":99,"x":1}"#),
            Ok(ClientMessage::Ignored(99))
        );
        assert_eq!(
            parse(br#"{"type":5,"invocationId":"1"}"#),
            Ok(ClientMessage::Ignored(5))
        );
        assert!(
            parse(br#"{"type":5,"invocationId":"1"}"#)
                .unwrap()
                .trackable()
        );
        assert_eq!(
            parse(br#"{"type":8,"sequenceId":12}"#),
            Ok(ClientMessage::Ack(12))
        );
        assert_eq!(
            parse(br#"{"type":9,"sequenceId":3}"#),
            Ok(ClientMessage::Sequence(3))
        );
        assert_eq!(parse(br#"{"type":8}"#), Err(MessageError::NoSequenceId));
        assert!(!ClientMessage::Ack(1).trackable());
        assert!(!ClientMessage::Ping.trackable());
        assert_eq!(
            parse(br#"{"type":4,"invocationId":"2","target":"S","arguments":[]}"#),
            Ok(ClientMessage::StreamInvocation {
                invocation_id: Some("2".into())
            })
        );
        assert_eq!(parse(b"{not json"), Err(MessageError::NotJson));
        assert_eq!(parse(br#"{"target":"x"}"#), Err(MessageError::NoType));
        assert_eq!(parse(br#"{"type":"one"}"#), Err(MessageError::NoType));
        assert_eq!(
            parse(br#"{"type":1,"arguments":[]}"#),
            Err(MessageError::BadInvocation)
        );
        assert_eq!(
            parse(br#"{"type":1,"target":"x"}"#),
            Err(MessageError::BadInvocation)
        );
    }

    #[test]
    fn handshakes() {
        assert_eq!(
            check_handshake(br#"{"protocol":"json","version":1}"#),
            Ok(1)
        );
        assert_eq!(
            check_handshake(br#"{"protocol":"json","version":2}"#),
            Ok(2)
        );
        assert!(
            check_handshake(br#"{"protocol":"messagepack","version":1}"#)
                .unwrap_err()
                .contains("messagepack")
        );
        assert!(check_handshake(br#"{"protocol":"json","version":3}"#).is_err());
        assert!(check_handshake(b"hello").is_err());
        assert_eq!(handshake_response(None), format!("{{}}{RS}"));
        assert_eq!(
            handshake_response(Some("no")),
            format!(r#"{{"error":"no"}}{RS}"#)
        );
    }

    #[test]
    fn server_messages() {
        assert_eq!(ping(), format!(r#"{{"type":6}}{RS}"#));
        let v: Value =
            serde_json::from_str(close(Some("expired"), false).trim_end_matches('\u{1e}')).unwrap();
        assert_eq!(v, serde_json::json!({"type": 7, "error": "expired"}));
        let v: Value = serde_json::from_str(close(None, true).trim_end_matches('\u{1e}')).unwrap();
        assert_eq!(v, serde_json::json!({"type": 7, "allowReconnect": true}));
        let v: Value =
            serde_json::from_str(completion("3", Some("refused")).trim_end_matches('\u{1e}'))
                .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": 3, "invocationId": "3", "error": "refused"})
        );
        let v: Value =
            serde_json::from_str(completion("4", None).trim_end_matches('\u{1e}')).unwrap();
        assert_eq!(v, serde_json::json!({"type": 3, "invocationId": "4"}));
        let push = event_invocation(
            "fx.quote.created",
            r#"{"type":"fx.quote.created","data":{"amount":"1000.10"}}"#,
        );
        let v: Value = serde_json::from_str(push.trim_end_matches('\u{1e}')).unwrap();
        assert_eq!(v["type"], 1);
        assert_eq!(v["target"], "fx.quote.created");
        assert_eq!(v["arguments"][0]["data"]["amount"], "1000.10");
        assert!(v.get("invocationId").is_none());
    }
}
