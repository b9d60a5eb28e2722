//! SignalR stateful reconnect (JSON protocol version 2), as `withStatefulReconnect()` in the
//! official clients speaks it.
//!
//! Each side numbers the messages it sends that must not be lost (invocations, stream items,
//! completions, stream invocations, cancellations: "trackable") from 1, keeps them until the
//! peer acknowledges them (`{"type":8,"sequenceId":N}`: everything up to N arrived), and when
//! the WebSocket breaks and the client opens a new one with the same connection token, each side
//! first says where its resend starts (`{"type":9,"sequenceId":N}`) and then sends again what
//! was not acknowledged. The receiver drops what it already had by counting.
//!
//! Pure bookkeeping here; `connection.rs` moves the sockets and `Reattach` hands a new socket to
//! the connection waiting for it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::protocol;
use super::session::Caller;

/// `notifications.stateful_reconnect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatefulSettings {
    /// How long a connection whose WebSocket broke waits for the client to come back.
    pub window: Duration,
    /// Unacknowledged bytes kept for a resend; beyond them the connection writes nothing more
    /// until the client acknowledges (its queue then fills as for any slow reader).
    pub buffer_bytes: usize,
}

/// What this side sent and the client has not acknowledged yet.
#[derive(Debug)]
pub struct Outbox {
    /// Sequence id of `unacked[0]`, or of the next message when it is empty.
    first: u64,
    unacked: VecDeque<Utf8Bytes>,
    bytes: usize,
    limit: usize,
}

impl Outbox {
    pub fn new(limit: usize) -> Self {
        Self {
            first: 1,
            unacked: VecDeque::new(),
            bytes: 0,
            limit,
        }
    }

    /// Keeps a trackable message until it is acknowledged.
    pub fn keep(&mut self, message: Utf8Bytes) {
        self.bytes += message.len();
        self.unacked.push_back(message);
    }

    /// No more may be sent before the client acknowledges some.
    pub fn full(&self) -> bool {
        self.bytes >= self.limit
    }

    /// The client has everything up to `sequence_id`; `false` for an id never sent.
    pub fn ack(&mut self, sequence_id: u64) -> bool {
        let next = self.first + self.unacked.len() as u64;
        if sequence_id >= next {
            return false;
        }
        while self.first <= sequence_id {
            if let Some(m) = self.unacked.pop_front() {
                self.bytes -= m.len();
            }
            self.first += 1;
        }
        true
    }

    /// The Sequence message to send on a new socket, and what follows it.
    pub fn resend(&self) -> (String, impl Iterator<Item = &Utf8Bytes>) {
        (protocol::sequence(self.first), self.unacked.iter())
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.unacked.len()
    }
}

/// What this side received: the ids by which a resent message is told from a new one.
#[derive(Debug, Default)]
pub struct Inbox {
    /// The id the next trackable message will have.
    next: u64,
    /// The highest id received (and so to acknowledge).
    latest: u64,
    /// An Ack is due.
    unacknowledged: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    New,
    /// Already received before the socket broke: handled then, ignored now.
    Duplicate,
}

impl Inbox {
    pub fn new() -> Self {
        Self {
            next: 1,
            latest: 0,
            unacknowledged: false,
        }
    }

    /// Counts one trackable message.
    pub fn receive(&mut self) -> Received {
        let current = self.next;
        self.next += 1;
        if current <= self.latest {
            return Received::Duplicate;
        }
        self.latest = current;
        self.unacknowledged = true;
        Received::New
    }

    /// The client's Sequence message: its resend starts at `sequence_id`. An id past what was
    /// received is a protocol error.
    pub fn restart_at(&mut self, sequence_id: u64) -> Result<(), String> {
        if sequence_id > self.next || sequence_id == 0 {
            return Err(format!(
                "sequence id {sequence_id} is not one of the messages received ({} so far)",
                self.next - 1
            ));
        }
        self.next = sequence_id;
        // The last Ack may have been lost with the old socket: say it again on the new one.
        self.unacknowledged = self.latest > 0;
        Ok(())
    }

    /// The Ack to send, once per batch of received messages.
    pub fn take_ack(&mut self) -> Option<String> {
        std::mem::take(&mut self.unacknowledged).then(|| protocol::ack(self.latest))
    }
}

/// Connections waiting for (or able to take) a new WebSocket, by connection token.
pub struct Reattach<W> {
    table: Mutex<HashMap<String, Waiting<W>>>,
}

impl<W> Default for Reattach<W> {
    fn default() -> Self {
        Self {
            table: Mutex::default(),
        }
    }
}

struct Waiting<W> {
    caller: Caller,
    socket: mpsc::Sender<W>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Unknown,
    NotYours,
}

impl<W> Reattach<W> {
    /// `token`'s connection takes reconnecting sockets until `forget`.
    pub fn register(&self, token: &str, caller: &Caller) -> mpsc::Receiver<W> {
        let (tx, rx) = mpsc::channel(1);
        if let Ok(mut table) = self.table.lock() {
            table.insert(
                token.to_string(),
                Waiting {
                    caller: caller.clone(),
                    socket: tx,
                },
            );
        }
        rx
    }

    pub fn forget(&self, token: &str) {
        if let Ok(mut table) = self.table.lock() {
            table.remove(token);
        }
    }

    /// Where a reconnecting socket for `token` goes, if `caller` may have it.
    pub fn find(&self, token: &str, caller: &Caller) -> Result<mpsc::Sender<W>, Lookup> {
        let table = self.table.lock().map_err(|_| Lookup::Unknown)?;
        let waiting = table.get(token).ok_or(Lookup::Unknown)?;
        if !waiting.caller.same_identity(caller) {
            return Err(Lookup::NotYours);
        }
        Ok(waiting.socket.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A framed protocol message as JSON.
    fn json(framed: &str) -> serde_json::Value {
        serde_json::from_str(framed.trim_end_matches('\u{1e}')).unwrap()
    }

    fn message(n: u64) -> Utf8Bytes {
        Utf8Bytes::from(format!("{{\"n\":{n}}}\u{1e}"))
    }

    #[test]
    fn the_outbox_keeps_what_was_not_acknowledged_and_resends_it_after_its_sequence() {
        let mut out = Outbox::new(1_000_000);
        for n in 1..=5 {
            out.keep(message(n));
        }
        assert!(out.ack(2));
        assert_eq!(out.len(), 3);
        let (sequence, rest) = out.resend();
        assert!(sequence.ends_with('\u{1e}'));
        assert_eq!(
            json(&sequence),
            serde_json::json!({"type": 9, "sequenceId": 3})
        );
        let rest: Vec<_> = rest.map(|m| m.to_string()).collect();
        assert_eq!(
            rest,
            ["{\"n\":3}\u{1e}", "{\"n\":4}\u{1e}", "{\"n\":5}\u{1e}"]
        );
        // An ack of something never sent is refused; an old one changes nothing.
        assert!(!out.ack(6));
        assert!(out.ack(1));
        assert_eq!(out.len(), 3);
        assert!(out.ack(5));
        assert_eq!(out.len(), 0);
        assert_eq!(
            json(&out.resend().0),
            serde_json::json!({"type": 9, "sequenceId": 6})
        );
    }

    #[test]
    fn the_outbox_is_full_at_its_byte_limit_until_acknowledged() {
        let mut out = Outbox::new(20);
        out.keep(message(1));
        assert!(!out.full());
        out.keep(message(2));
        out.keep(message(3));
        assert!(out.full());
        out.ack(2);
        assert!(!out.full());
    }

    #[test]
    fn the_inbox_drops_what_a_client_resends_and_acknowledges_once_per_batch() {
        let mut inbox = Inbox::new();
        assert_eq!(inbox.receive(), Received::New);
        assert_eq!(inbox.receive(), Received::New);
        assert_eq!(
            inbox.take_ack().map(|a| json(&a)),
            Some(serde_json::json!({"type": 8, "sequenceId": 2}))
        );
        assert_eq!(inbox.take_ack(), None);
        // The client reconnects and resends from 2: 2 is known, 3 is new.
        inbox.restart_at(2).unwrap();
        assert!(
            inbox.take_ack().is_some(),
            "acknowledged again after a reattach"
        );
        assert_eq!(inbox.receive(), Received::Duplicate);
        assert_eq!(inbox.receive(), Received::New);
        assert!(inbox.restart_at(9).is_err());
        assert!(inbox.restart_at(0).is_err());
    }

    #[test]
    fn a_socket_is_handed_only_to_the_caller_that_owns_the_token() {
        let table: Reattach<u32> = Reattach::default();
        let mut rx = table.register("token", &Caller::for_tests("blue"));
        assert_eq!(
            table.find("token", &Caller::for_tests("green")).err(),
            Some(Lookup::NotYours)
        );
        assert_eq!(
            table.find("other", &Caller::for_tests("blue")).err(),
            Some(Lookup::Unknown)
        );
        // The same tenant and subject with another role: an admin demoted since, or promoted.
        let promoted = Caller {
            admin: true,
            ..Caller::for_tests("blue")
        };
        assert_eq!(table.find("token", &promoted).err(), Some(Lookup::NotYours));
        let admins: Reattach<u32> = Reattach::default();
        let _rx = admins.register("token", &promoted);
        assert_eq!(
            admins.find("token", &Caller::for_tests("blue")).err(),
            Some(Lookup::NotYours),
            "an admin's connection does not go on for a token without the role"
        );
        table
            .find("token", &Caller::for_tests("blue"))
            .unwrap()
            .try_send(7)
            .unwrap();
        assert_eq!(rx.try_recv().unwrap(), 7);
        table.forget("token");
        assert!(table.find("token", &Caller::for_tests("blue")).is_err());
    }
}
