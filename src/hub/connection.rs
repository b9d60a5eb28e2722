//! One hub connection, from the SignalR handshake to its close, in one task: it reads the
//! client's messages and writes what the hub queued for it, pings when it has been silent, and
//! closes on a protocol error, a silent client, an expired token, a full queue or shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use super::Hub;
use super::groups::{ConnectionId, EventFrame, Member};
use super::protocol::{self, ClientMessage, Framer};
use super::recovery::{self, Written};
use super::session::Caller;
use super::stateful::{Inbox, Outbox, Received, StatefulSettings};
use crate::events::{Recovery, StreamId};

pub type Ws = WebSocketStream<Stream>;

/// A new WebSocket for a stateful connection whose socket broke, and who opened it.
pub type Reattached = (Ws, Caller);

/// Queued messages written before one flush.
const WRITE_BATCH: usize = 64;
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A new connection's events wait for its first invocation, so that a client resuming with
/// `JoinTenantGroup(tenant, lastStreamId)` gets what it missed before anything newer: at most
/// this long after the handshake...
const FIRST_MESSAGE_HOLD: Duration = Duration::from_secs(1);
/// ...and at most this long after the client's first message of any kind (the official client
/// pings right after its handshake, and invokes right after that when it resumes).
const AFTER_FIRST_MESSAGE: Duration = Duration::from_millis(100);

const JOIN: &str = "JoinTenantGroup";
const LEAVE: &str = "LeaveTenantGroup";

enum End {
    /// Say this in a Close message first: the error, and whether the client may reconnect
    /// (yes, unless it broke the protocol: a new token or a reader that catches up can succeed).
    Close(Option<String>, bool),
    /// The client closed the connection: nothing to say but the WebSocket Close.
    Quiet,
    /// The socket broke: a stateful connection waits for its client to come back.
    Lost,
}

struct Connection {
    hub: Arc<Hub>,
    caller: Caller,
    id: ConnectionId,
    member: Member,
    joined: Vec<Arc<str>>,
    ws: Ws,
    last_sent: Instant,
    /// What was written of each stream, so that no event is written twice.
    written: Written,
    /// Events that arrived while the connection waits for its first invocation.
    held: Option<Vec<Arc<EventFrame>>>,
    /// The client has invoked a hub method.
    invoked: bool,
    /// With stateful reconnect: what to resend and what to acknowledge.
    stateful: Option<Stateful>,
    /// A socket the client opened while the old one still seemed alive.
    /// (Boxed: rare, and a socket and caller inline would take room in every connection.)
    replacement: Option<Box<Reattached>>,
}

struct Stateful {
    token: String,
    window: std::time::Duration,
    outbox: Outbox,
    inbox: Inbox,
}

/// Serves one connection; `token` is its connection token when it negotiated stateful
/// reconnect.
///
/// The socket comes boxed: an async fn keeps its arguments for its whole life, so a socket passed
/// by value would take its room twice in every connection's task (here, and in `Connection`).
pub async fn serve(
    hub: Arc<Hub>,
    ws: Box<Ws>,
    caller: Caller,
    token: Option<String>,
    mut shutdown: ShutdownWatch,
) {
    let mut ws = *ws;
    let mut framer = Framer::new(hub.settings.max_message_bytes);
    let (leftover, version) = match Box::pin(handshake(&hub, &mut ws, &mut framer)).await {
        Some(answer) => answer,
        None => return,
    };
    // Stateful when the client asked for it twice: at negotiate and with version 2.
    let stateful = match (token, hub.stateful_settings()) {
        (
            Some(token),
            Some(StatefulSettings {
                window,
                buffer_bytes,
            }),
        ) if version >= 2 => Some(Stateful {
            token,
            window,
            outbox: Outbox::new(buffer_bytes),
            inbox: Inbox::new(),
        }),
        _ => None,
    };
    let mut sockets = stateful
        .as_ref()
        .map(|s| hub.reattach.register(&s.token, &caller));
    let (tx, mut rx) = mpsc::channel(hub.settings.connection_queue);
    let member = Member {
        tx,
        eviction: Arc::default(),
    };
    let id = hub.groups.connect(member.clone());
    hub.groups.join(&caller.tenant, id, member.clone());
    if let Some(m) = hub.metrics.as_deref() {
        m.connected(&caller.tenant, 1);
    }
    let mut connection = Connection {
        joined: vec![Arc::clone(&caller.tenant)],
        hub: Arc::clone(&hub),
        caller,
        id,
        member,
        ws,
        last_sent: Instant::now(),
        written: Written::default(),
        held: Some(Vec::new()),
        invoked: false,
        stateful,
        replacement: None,
    };
    let mut end = connection
        .run(framer, leftover, &mut rx, &mut sockets, &mut shutdown)
        .await;
    while let End::Lost = end {
        let Some(socket) = connection
            .wait_for_socket(&mut sockets, &mut shutdown)
            .await
        else {
            break;
        };
        let timeout = hub.settings.client_timeout;
        let attached = tokio::time::timeout(timeout, Box::pin(connection.attach(socket))).await;
        end = match attached.unwrap_or(Err(())) {
            Ok(()) => {
                let framer = Framer::new(hub.settings.max_message_bytes);
                connection
                    .run(framer, Vec::new(), &mut rx, &mut sockets, &mut shutdown)
                    .await
            }
            Err(()) => End::Lost,
        };
    }
    Box::pin(connection.finish(end)).await;
}

/// Reads the handshake, answers it; returns the messages that came after it in the same frames,
/// and the protocol version.
async fn handshake(hub: &Hub, ws: &mut Ws, framer: &mut Framer) -> Option<(Vec<Vec<u8>>, u32)> {
    let read = async {
        loop {
            let text = match ws.next().await? {
                Ok(Message::Text(text)) => text,
                Ok(Message::Binary(_)) | Err(_) | Ok(Message::Close(_)) => return None,
                Ok(_) => continue,
            };
            let mut messages = framer.push(text.as_bytes()).ok()?;
            if !messages.is_empty() {
                let first = messages.remove(0);
                return Some((first, messages));
            }
        }
    };
    let (first, rest) = tokio::time::timeout(hub.settings.handshake_timeout, read)
        .await
        .ok()
        .flatten()?;
    match protocol::check_handshake(&first) {
        Ok(version) => {
            ws.send(text(protocol::handshake_response(None)))
                .await
                .ok()?;
            Some((rest, version))
        }
        Err(error) => {
            let _ = ws
                .send(text(protocol::handshake_response(Some(&error))))
                .await;
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
            None
        }
    }
}

/// This connection's ping interval: `keepalive` less up to a quarter, drawn once per connection,
/// so that connections opened together (a deploy, a reconnect storm) do not ping together forever
/// after. Never longer than `keepalive`: clients time out on it.
fn jittered_keepalive(keepalive: Duration) -> Duration {
    let quarter = u64::try_from(keepalive.as_micros() / 4).unwrap_or(u64::MAX);
    keepalive.saturating_sub(Duration::from_micros(fastrand::u64(0..=quarter)))
}

fn text(s: String) -> Message {
    Message::Text(Utf8Bytes::from(s))
}

impl Connection {
    async fn run(
        &mut self,
        mut framer: Framer,
        leftover: Vec<Vec<u8>>,
        rx: &mut mpsc::Receiver<Arc<EventFrame>>,
        sockets: &mut Option<mpsc::Receiver<Reattached>>,
        shutdown: &mut ShutdownWatch,
    ) -> End {
        // Writes to a client that does not read are bounded by the client timeout, here too.
        // The settings this loop reads, copied (the whole settings cloned would sit in every
        // connection's task).
        let client_timeout = self.hub.settings.client_timeout;
        let max_message_bytes = self.hub.settings.max_message_bytes;
        let connection_queue = self.hub.settings.connection_queue;
        let keepalive = jittered_keepalive(self.hub.settings.keepalive);
        let begun = tokio::time::timeout(client_timeout, Box::pin(self.begin(&leftover))).await;
        if let Some(end) = begun.unwrap_or(Some(End::Lost)) {
            return end;
        }
        let expires = token_deadline(self.caller.expires_at);
        let eviction = Arc::clone(&self.member.eviction);
        let evicted_end = || End::Close(Some(eviction.reason().into()), true);
        // Made once and polled again and again: a future made per loop turn costs a timer or
        // waiter registration per message.
        let evicted = eviction.notify.notified();
        let stopping = shutdown.changed();
        let mut last_received = Instant::now();
        // One timer for the three deadlines (ping, client timeout, token expiry), re-armed when it
        // fires rather than whenever a message moves a deadline.
        let deadline = |last_sent: Instant, last_received: Instant| {
            (last_sent + keepalive)
                .min(last_received + client_timeout)
                .min(expires)
        };
        let timer = tokio::time::sleep_until(deadline(self.last_sent, last_received).into());
        let hold = tokio::time::sleep(FIRST_MESSAGE_HOLD);
        tokio::pin!(evicted, stopping, timer, hold);
        loop {
            tokio::select! {
                frame = self.ws.next() => {
                    last_received = Instant::now();
                    let soon = tokio::time::Instant::from_std(last_received + AFTER_FIRST_MESSAGE);
                    if self.held.is_some() && hold.deadline() > soon {
                        hold.as_mut().reset(soon);
                    }
                    let text = match frame {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Binary(_))) => {
                            return End::Close(Some("binary frames are not part of the json protocol".into()), false);
                        }
                        Some(Err(WsError::Capacity(_))) => {
                            let max = max_message_bytes;
                            return End::Close(Some(format!("a message larger than {max} bytes")), false);
                        }
                        // A close frame: the client went away on purpose. Anything else: the
                        // socket broke (a network change, a proxy cutting it).
                        Some(Ok(Message::Close(_))) => return End::Quiet,
                        None | Some(Err(_)) => return End::Lost,
                        Some(Ok(_)) => continue,
                    };
                    let messages = match framer.push(text.as_bytes()) {
                        Ok(messages) => messages,
                        Err(e) => return End::Close(Some(e.to_string()), false),
                    };
                    for message in messages {
                        // A reply can block on a client that does not read: bounded, and
                        // interrupted by eviction and shutdown like any write.
                        let handled = tokio::select! {
                            // (Closed without a replacement socket: a join cut short may have
                            // written only part of its catch-up.)
                            end = tokio::time::timeout(client_timeout, Box::pin(self.on_message(&message))) => {
                                end.unwrap_or_else(|_| Some(self.stalled()))
                            }
                            _ = &mut evicted => Some(evicted_end()),
                            _ = &mut stopping => Some(End::Close(None, true)),
                        };
                        if let Some(end) = handled {
                            return end;
                        }
                    }
                    let acknowledged = tokio::select! {
                        sent = tokio::time::timeout(client_timeout, self.acknowledge()) => match sent {
                            Ok(sent) => sent.is_ok(),
                            Err(_) => return self.stalled_or_replaced(sockets),
                        },
                        _ = &mut evicted => return evicted_end(),
                        _ = &mut stopping => return End::Close(None, true),
                    };
                    if !acknowledged {
                        return End::Lost;
                    }
                    if self.held.is_some() && self.invoked {
                        let released = tokio::select! {
                            released = self.release_within(client_timeout) => released,
                            _ = &mut evicted => return evicted_end(),
                            _ = &mut stopping => return End::Close(None, true),
                        };
                        if let Err(end) = released {
                            return end;
                        }
                    }
                }
                // Stateful: nothing more while the client has not acknowledged the buffer's worth.
                outgoing = rx.recv(), if !self.outbox_full() => {
                    let Some(first) = outgoing else { return End::Quiet };
                    if let Some(held) = &mut self.held {
                        held.push(first);
                        // The wait is a courtesy to resuming clients: a busy stream ends it.
                        if held.len() < connection_queue {
                            continue;
                        }
                        let released = tokio::select! {
                            released = self.release_within(client_timeout) => released,
                            _ = &mut evicted => return evicted_end(),
                            _ = &mut stopping => return End::Close(None, true),
                        };
                        if let Err(end) = released {
                            return end;
                        }
                        continue;
                    }
                    // A client that does not read blocks the write: eviction interrupts it
                    // when its queue fills, the client timeout when its tenant is quiet.
                    tokio::select! {
                        written = tokio::time::timeout(client_timeout, self.write(first, rx)) => {
                            match written {
                                Ok(Ok(())) => {}
                                Ok(Err(())) => return End::Lost,
                                Err(_) => return self.stalled_or_replaced(sockets),
                            }
                        }
                        _ = &mut evicted => return evicted_end(),
                        _ = &mut stopping => return End::Close(None, true),
                    }
                }
                _ = &mut timer => {
                    let now = Instant::now();
                    if now >= expires {
                        return End::Close(Some("the access token has expired".into()), true);
                    }
                    if now >= last_received + client_timeout {
                        return End::Close(Some("Server timeout elapsed without receiving a message from the client.".into()), true);
                    }
                    if now >= self.last_sent + keepalive {
                        let pinged = tokio::select! {
                            sent = tokio::time::timeout(client_timeout, self.send(protocol::ping())) => match sent {
                                Ok(sent) => sent.is_ok(),
                                Err(_) => return self.stalled_or_replaced(sockets),
                            },
                            _ = &mut evicted => return evicted_end(),
                            _ = &mut stopping => return End::Close(None, true),
                        };
                        if !pinged {
                            return End::Lost;
                        }
                    }
                    timer.as_mut().reset(deadline(self.last_sent, last_received).into());
                }
                _ = &mut hold, if self.held.is_some() => {
                    let released = tokio::select! {
                        released = self.release_within(client_timeout) => released,
                        _ = &mut evicted => return evicted_end(),
                        _ = &mut stopping => return End::Close(None, true),
                    };
                    if let Err(end) = released {
                        return end;
                    }
                }
                // The client came back on a new socket while this one still looked open.
                Some(socket) = next_socket(sockets) => {
                    self.replacement = Some(Box::new(socket));
                    return End::Lost;
                }
                _ = &mut evicted => {
                    return evicted_end();
                }
                _ = &mut stopping => {
                    return End::Close(None, true);
                }
            }
        }
    }

    /// What came with the handshake (or the new socket): its messages, their Ack, and the
    /// held events when the client has invoked; `Some` ends the connection.
    async fn begin(&mut self, leftover: &[Vec<u8>]) -> Option<End> {
        for message in leftover {
            if let Some(end) = self.on_message(message).await {
                return Some(end);
            }
        }
        if self.acknowledge().await.is_err() {
            return Some(End::Lost);
        }
        if self.invoked && self.release_held().await.is_err() {
            return Some(End::Lost);
        }
        None
    }

    fn outbox_full(&self) -> bool {
        self.stateful.as_ref().is_some_and(|s| s.outbox.full())
    }

    /// Acknowledges what the client sent since the last Ack (stateful connections).
    async fn acknowledge(&mut self) -> Result<(), ()> {
        match self.stateful.as_mut().and_then(|s| s.inbox.take_ack()) {
            Some(ack) => self.send(ack).await,
            None => Ok(()),
        }
    }

    /// A stateful connection whose socket broke: the client's next socket, if it comes back
    /// within the window (and the connection is neither evicted nor shut down meanwhile).
    async fn wait_for_socket(
        &mut self,
        sockets: &mut Option<mpsc::Receiver<Reattached>>,
        shutdown: &mut ShutdownWatch,
    ) -> Option<Reattached> {
        let (Some(receiver), Some(stateful)) = (sockets.as_mut(), self.stateful.as_ref()) else {
            return None;
        };
        if let Some(socket) = self.replacement.take() {
            return Some(*socket);
        }
        let eviction = Arc::clone(&self.member.eviction);
        let socket = tokio::select! {
            socket = receiver.recv() => socket,
            _ = tokio::time::sleep(stateful.window) => None,
            _ = eviction.notify.notified() => None,
            _ = shutdown.changed() => None,
        };
        if let Some(m) = self.hub.metrics.as_deref() {
            m.reconnected(socket.is_some());
        }
        socket
    }

    /// Continues on the client's new socket: says where the resend starts, then sends again
    /// everything not acknowledged.
    async fn attach(&mut self, (ws, caller): Reattached) -> Result<(), ()> {
        self.ws = ws;
        // A reconnect brings a fresh token: its expiry counts from now on.
        self.caller.expires_at = caller.expires_at;
        let Some(stateful) = &self.stateful else {
            return Err(());
        };
        let (sequence, unacked) = stateful.outbox.resend();
        self.ws.feed(text(sequence)).await.map_err(|_| ())?;
        for message in unacked {
            self.ws
                .feed(Message::Text(message.clone()))
                .await
                .map_err(|_| ())?;
        }
        self.ws.flush().await.map_err(|_| ())?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// A write that did not finish within the client timeout: the client stopped reading
    /// (its queue may never fill if its tenant is quiet). Closed like a slow consumer; the
    /// Close message goes out only if the client reads again within `CLOSE_TIMEOUT`.
    fn stalled(&self) -> End {
        if let Some(m) = self.hub.metrics.as_deref() {
            m.slow_consumer();
        }
        End::Close(Some(super::groups::SLOW.into()), true)
    }

    /// [`stalled`](Self::stalled), unless a stateful client has come back on a new socket
    /// meanwhile (its old one half-open): then that one takes over, as when it arrives while
    /// nothing is being written. (Only after writes that track each message before their
    /// first wait, so that what the old socket did not take is resent.)
    fn stalled_or_replaced(&mut self, sockets: &mut Option<mpsc::Receiver<Reattached>>) -> End {
        if let Some(socket) = sockets.as_mut().and_then(|s| s.try_recv().ok()) {
            self.replacement = Some(Box::new(socket));
            return End::Lost;
        }
        self.stalled()
    }

    /// [`release_held`](Self::release_held) within `limit`; the connection's end otherwise.
    async fn release_within(&mut self, limit: Duration) -> Result<(), End> {
        match tokio::time::timeout(limit, Box::pin(self.release_held())).await {
            Ok(released) => released.map_err(|()| End::Lost),
            Err(_) => Err(self.stalled()),
        }
    }

    /// Ends the wait for the first message: writes what arrived meanwhile.
    async fn release_held(&mut self) -> Result<(), ()> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        for frame in held {
            self.feed(frame).await?;
        }
        self.ws.flush().await.map_err(|_| ())?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// Queues one event's message on the socket, unless the connection already has it.
    async fn feed(&mut self, frame: Arc<EventFrame>) -> Result<(), ()> {
        if let Some(position) = frame.position
            && !self.written.admit(frame.stream.as_ref(), position)
        {
            return Ok(());
        }
        if let Some(m) = self.hub.metrics.as_deref() {
            m.delivered(
                SystemTime::now()
                    .duration_since(frame.time)
                    .unwrap_or_default(),
            );
        }
        self.track(&frame.text);
        self.ws
            .feed(Message::Text(frame.text.clone()))
            .await
            .map_err(|_| ())
    }

    /// Keeps a trackable message for a resend (stateful connections).
    fn track(&mut self, message: &Utf8Bytes) {
        if let Some(s) = &mut self.stateful {
            s.outbox.keep(message.clone());
        }
    }

    /// Sends a trackable message (a completion).
    async fn send_tracked(&mut self, message: String) -> Result<(), ()> {
        let message = Utf8Bytes::from(message);
        self.track(&message);
        self.ws.send(Message::Text(message)).await.map_err(|_| ())?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// Writes `first` and whatever else is queued, then flushes once.
    async fn write(
        &mut self,
        first: Arc<EventFrame>,
        rx: &mut mpsc::Receiver<Arc<EventFrame>>,
    ) -> Result<(), ()> {
        let mut next = Some(first);
        let mut written = 0;
        while let Some(frame) = next.take() {
            self.feed(frame).await?;
            written += 1;
            if written < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        self.ws.flush().await.map_err(|_| ())?;
        self.last_sent = Instant::now();
        Ok(())
    }

    async fn send(&mut self, message: String) -> Result<(), ()> {
        self.ws.send(text(message)).await.map_err(|_| ())?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// Handles one client message; `Some` ends the connection.
    async fn on_message(&mut self, message: &[u8]) -> Option<End> {
        let message = match protocol::parse(message) {
            Ok(message) => message,
            Err(e) => return Some(End::Close(Some(format!("invalid message: {e}")), false)),
        };
        if let Some(s) = &mut self.stateful {
            match &message {
                ClientMessage::Ack(id) if !s.outbox.ack(*id) => {
                    return Some(End::Close(
                        Some(format!("ack of message {id}, which was never sent")),
                        false,
                    ));
                }
                ClientMessage::Sequence(id) => {
                    return s
                        .inbox
                        .restart_at(*id)
                        .err()
                        .map(|e| End::Close(Some(e), false));
                }
                m if m.trackable() && s.inbox.receive() == Received::Duplicate => return None,
                _ => {}
            }
        }
        match message {
            ClientMessage::Close => Some(End::Quiet),
            ClientMessage::Ping
            | ClientMessage::Ignored(_)
            | ClientMessage::Ack(_)
            | ClientMessage::Sequence(_) => None,
            ClientMessage::StreamInvocation { invocation_id } => {
                self.invoked = true;
                self.reply(
                    invocation_id.as_deref(),
                    Some("streaming invocations are not supported"),
                )
                .await
            }
            ClientMessage::Invocation {
                invocation_id,
                target,
                arguments,
            } => {
                self.invoked = true;
                match self.invoke(&target, &arguments).await {
                    Ok(Some(result)) => match invocation_id {
                        Some(id) => self
                            .send_tracked(protocol::completion_result(&id, result))
                            .await
                            .err()
                            .map(|()| End::Lost),
                        None => None,
                    },
                    Ok(None) => self.reply(invocation_id.as_deref(), None).await,
                    Err(error) => self.reply(invocation_id.as_deref(), Some(&error)).await,
                }
            }
        }
    }

    async fn reply(&mut self, invocation_id: Option<&str>, error: Option<&str>) -> Option<End> {
        let id = invocation_id?;
        self.send_tracked(protocol::completion(id, error))
            .await
            .err()
            .map(|()| End::Lost)
    }

    /// The hub's methods: join or leave a tenant's group (one's own; any with the admin role).
    /// A join naming the last position seen first gets what was missed; its result says so.
    async fn invoke(&mut self, target: &str, arguments: &[Value]) -> Result<Option<Value>, String> {
        let join = match target {
            JOIN => true,
            LEAVE => false,
            other => return Err(format!("Unknown hub method '{other}'")),
        };
        let (name, after) = match arguments {
            [Value::String(name)] => (name, None),
            [Value::String(name), Value::Null] if join => (name, None),
            [Value::String(name), Value::String(last)] if join => {
                let after = last
                    .parse::<StreamId>()
                    .map_err(|e| format!("lastStreamId {last:?} is {e}"))?;
                (name, Some(after))
            }
            _ if join => {
                return Err(format!(
                    "{target} takes a tenant id and, optionally, the last streamid received"
                ));
            }
            _ => return Err(format!("{target} takes one argument: a tenant id")),
        };
        let allowed = self.caller.admin || name.eq_ignore_ascii_case(&self.caller.tenant);
        let tenant = self.hub.auth.load().tenant(name).filter(|_| allowed);
        let Some(tenant) = tenant else {
            if let Some(m) = self.hub.metrics.as_deref() {
                m.unauthorized();
            }
            return Err(format!(
                "not allowed to {} the group of tenant '{name}'",
                if join { "join" } else { "leave" }
            ));
        };
        if !join {
            if let Some(i) = self.joined.iter().position(|t| *t == tenant) {
                self.hub.groups.leave(&tenant, self.id);
                self.joined.remove(i);
            }
            return Ok(None);
        }
        if !self.joined.contains(&tenant) {
            self.hub.groups.join(&tenant, self.id, self.member.clone());
            self.joined.push(Arc::clone(&tenant));
        }
        let Some(after) = after else {
            return Ok(None);
        };
        // Live events of the tenant queue for this connection from here on; the history is read
        // once they reach this instance, so the two overlap rather than leave a gap.
        let recovery = if self.hub.live.ready(&tenant).await {
            self.hub.history.resume(&tenant, after).await
        } else {
            Recovery::Unrecoverable {
                reason: crate::events::Unrecoverable::Unavailable,
                position: None,
            }
        };
        let replayed = self
            .replay(&tenant, &recovery)
            .await
            .map_err(|()| "the connection broke during the replay".to_string())?;
        if let Some(m) = self.hub.metrics.as_deref() {
            m.resumed(&recovery, replayed);
        }
        Ok(Some(recovery::outcome(&recovery, replayed)))
    }

    /// Writes the events a resume recovered (those not already written live); how many.
    async fn replay(&mut self, tenant: &Arc<str>, recovery: &Recovery) -> Result<usize, ()> {
        let Recovery::Recovered { entries, position } = recovery else {
            // Not recoverable: the client reloads its state and continues from the head it is
            // told; events at or before it, held or queued meanwhile, are not written after.
            if let Recovery::Unrecoverable {
                position: Some(head),
                ..
            } = recovery
            {
                self.written.caught_up(tenant, *head);
            }
            return Ok(0);
        };
        let mut replayed = 0;
        for entry in entries {
            if self.written.has(tenant, entry.id) {
                continue;
            }
            let kind = recovery::event_type(&entry.json);
            let message = Utf8Bytes::from(protocol::event_invocation(&kind, &entry.json));
            self.track(&message);
            self.ws.feed(Message::Text(message)).await.map_err(|_| ())?;
            replayed += 1;
        }
        self.ws.flush().await.map_err(|_| ())?;
        self.last_sent = Instant::now();
        self.written.caught_up(tenant, *position);
        Ok(replayed)
    }

    async fn finish(mut self, end: End) {
        // Forgotten before the Close goes out: a client told to close cannot come back to it.
        if let Some(s) = &self.stateful {
            self.hub.reattach.forget(&s.token);
        }
        for tenant in &self.joined {
            self.hub.groups.leave(tenant, self.id);
        }
        self.hub.groups.disconnect(self.id);
        if let Some(m) = self.hub.metrics.as_deref() {
            m.connected(&self.caller.tenant, -1);
        }
        match end {
            End::Close(error, allow_reconnect) => {
                let close = protocol::close(error.as_deref(), allow_reconnect);
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                    let _ = self.ws.send(text(close)).await;
                    let _ = self.ws.close(None).await;
                })
                .await;
            }
            // The client ended it (a SignalR Close, or its WebSocket Close frame, whose answer
            // tungstenite has queued): end the WebSocket properly, not by dropping the socket,
            // which the client sees as an abnormal closure (1006).
            // (`SinkExt::close`, not the stream's own `close`: that one sends a new Close
            // frame, refused once the client's has arrived, and would not send the answer.
            // Once the client's Close has arrived, tungstenite writes the answer into the
            // socket's write buffer and reports the connection closed without flushing it:
            // flushed here, or it could be dropped with the buffer.)
            End::Quiet => {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                    let _ = SinkExt::close(&mut self.ws).await;
                    let _ = tokio::io::AsyncWriteExt::flush(self.ws.get_mut()).await;
                })
                .await;
            }
            End::Lost => {}
        }
    }
}

/// The next socket handed over for this connection; never, for a connection without stateful
/// reconnect.
async fn next_socket(sockets: &mut Option<mpsc::Receiver<Reattached>>) -> Option<Reattached> {
    match sockets {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// When a token that expires at `exp` (seconds since the epoch) is over, as an `Instant`.
fn token_deadline(exp: u64) -> Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let left = exp.saturating_sub(now);
    // A far-future deadline (tokens without `exp` are refused earlier anyway).
    Instant::now() + Duration::from_secs(left.min(10 * 365 * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_ping_within_their_keepalive_and_apart() {
        let keepalive = Duration::from_secs(15);
        let intervals: Vec<Duration> = (0..1000).map(|_| jittered_keepalive(keepalive)).collect();
        assert!(
            intervals
                .iter()
                .all(|i| *i <= keepalive && *i >= keepalive * 3 / 4)
        );
        let distinct: std::collections::HashSet<_> = intervals.iter().collect();
        assert!(distinct.len() > 900, "{} distinct of 1000", distinct.len());
    }
}
