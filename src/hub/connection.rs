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
use super::session::Caller;

type Ws = WebSocketStream<Stream>;

/// Queued messages written before one flush.
const WRITE_BATCH: usize = 64;
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

const JOIN: &str = "JoinTenantGroup";
const SLOW: &str = "the connection fell too far behind its messages";
const LEAVE: &str = "LeaveTenantGroup";

enum End {
    /// Say this in a Close message first: the error, and whether the client may reconnect
    /// (yes, unless it broke the protocol: a new token or a reader that catches up can succeed).
    Close(Option<String>, bool),
    /// The client is gone or closed itself: nothing to say.
    Quiet,
}

struct Connection {
    hub: Arc<Hub>,
    caller: Caller,
    id: ConnectionId,
    member: Member,
    joined: Vec<Arc<str>>,
    ws: Ws,
    last_sent: Instant,
}

pub async fn serve(hub: Arc<Hub>, mut ws: Ws, caller: Caller, shutdown: ShutdownWatch) {
    let mut framer = Framer::new(hub.settings.max_message_bytes);
    let leftover = match handshake(&hub, &mut ws, &mut framer).await {
        Some(leftover) => leftover,
        None => return,
    };
    let (tx, rx) = mpsc::channel(hub.settings.connection_queue);
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
    };
    let end = connection.run(framer, leftover, rx, shutdown).await;
    connection.finish(end).await;
}

/// Reads the handshake, answers it; returns the messages that came after it in the same frames.
async fn handshake(hub: &Hub, ws: &mut Ws, framer: &mut Framer) -> Option<Vec<Vec<u8>>> {
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
        Ok(()) => {
            ws.send(text(protocol::handshake_response(None)))
                .await
                .ok()?;
            Some(rest)
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

fn text(s: String) -> Message {
    Message::Text(Utf8Bytes::from(s))
}

impl Connection {
    async fn run(
        &mut self,
        mut framer: Framer,
        leftover: Vec<Vec<u8>>,
        mut rx: mpsc::Receiver<Arc<EventFrame>>,
        mut shutdown: ShutdownWatch,
    ) -> End {
        for message in leftover {
            if let Some(end) = self.on_message(&message).await {
                return end;
            }
        }
        let settings = self.hub.settings.clone();
        let expires = token_deadline(self.caller.expires_at);
        let eviction = Arc::clone(&self.member.eviction);
        // Made once and polled again and again: a future made per loop turn costs a timer or
        // waiter registration per message.
        let evicted = eviction.notify.notified();
        let stopping = shutdown.changed();
        let mut last_received = Instant::now();
        // One timer for the three deadlines (ping, client timeout, token expiry), re-armed when it
        // fires rather than whenever a message moves a deadline.
        let deadline = |last_sent: Instant, last_received: Instant| {
            (last_sent + settings.keepalive)
                .min(last_received + settings.client_timeout)
                .min(expires)
        };
        let timer = tokio::time::sleep_until(deadline(self.last_sent, last_received).into());
        tokio::pin!(evicted, stopping, timer);
        loop {
            tokio::select! {
                frame = self.ws.next() => {
                    last_received = Instant::now();
                    let text = match frame {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Binary(_))) => {
                            return End::Close(Some("binary frames are not part of the json protocol".into()), false);
                        }
                        Some(Err(WsError::Capacity(_))) => {
                            let max = settings.max_message_bytes;
                            return End::Close(Some(format!("a message larger than {max} bytes")), false);
                        }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return End::Quiet,
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
                            end = tokio::time::timeout(settings.client_timeout, self.on_message(&message)) => {
                                end.unwrap_or(Some(End::Quiet))
                            }
                            _ = &mut evicted => Some(End::Close(Some(SLOW.into()), true)),
                            _ = &mut stopping => Some(End::Close(None, true)),
                        };
                        if let Some(end) = handled {
                            return end;
                        }
                    }
                }
                outgoing = rx.recv() => {
                    let Some(first) = outgoing else { return End::Quiet };
                    // A client that does not read blocks the write: eviction interrupts it.
                    tokio::select! {
                        written = self.write(first, &mut rx) => {
                            if written.is_err() {
                                return End::Quiet;
                            }
                        }
                        _ = &mut evicted => return End::Close(Some(SLOW.into()), true),
                        _ = &mut stopping => return End::Close(None, true),
                    }
                }
                _ = &mut timer => {
                    let now = Instant::now();
                    if now >= expires {
                        return End::Close(Some("the access token has expired".into()), true);
                    }
                    if now >= last_received + settings.client_timeout {
                        return End::Close(Some("Server timeout elapsed without receiving a message from the client.".into()), true);
                    }
                    if now >= self.last_sent + settings.keepalive {
                        let pinged = tokio::select! {
                            sent = tokio::time::timeout(settings.client_timeout, self.send(protocol::ping())) => {
                                matches!(sent, Ok(Ok(())))
                            }
                            _ = &mut evicted => return End::Close(Some(SLOW.into()), true),
                            _ = &mut stopping => return End::Close(None, true),
                        };
                        if !pinged {
                            return End::Quiet;
                        }
                    }
                    timer.as_mut().reset(deadline(self.last_sent, last_received).into());
                }
                _ = &mut evicted => {
                    return End::Close(Some(SLOW.into()), true);
                }
                _ = &mut stopping => {
                    return End::Close(None, true);
                }
            }
        }
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
            if let Some(m) = self.hub.metrics.as_deref() {
                m.delivered(
                    SystemTime::now()
                        .duration_since(frame.time)
                        .unwrap_or_default(),
                );
            }
            self.ws
                .feed(Message::Text(frame.text.clone()))
                .await
                .map_err(|_| ())?;
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
        match protocol::parse(message) {
            Err(e) => Some(End::Close(Some(format!("invalid message: {e}")), false)),
            Ok(ClientMessage::Close) => Some(End::Quiet),
            Ok(ClientMessage::Ping) | Ok(ClientMessage::Ignored(_)) => None,
            Ok(ClientMessage::StreamInvocation { invocation_id }) => {
                self.reply(
                    invocation_id.as_deref(),
                    Some("streaming invocations are not supported"),
                )
                .await
            }
            Ok(ClientMessage::Invocation {
                invocation_id,
                target,
                arguments,
            }) => {
                let outcome = self.invoke(&target, &arguments);
                self.reply(invocation_id.as_deref(), outcome.err().as_deref())
                    .await
            }
        }
    }

    async fn reply(&mut self, invocation_id: Option<&str>, error: Option<&str>) -> Option<End> {
        let id = invocation_id?;
        self.send(protocol::completion(id, error))
            .await
            .err()
            .map(|()| End::Quiet)
    }

    /// The hub's methods: join or leave a tenant's group (one's own; any with the admin role).
    fn invoke(&mut self, target: &str, arguments: &[Value]) -> Result<(), String> {
        let join = match target {
            JOIN => true,
            LEAVE => false,
            other => return Err(format!("Unknown hub method '{other}'")),
        };
        let [Value::String(name)] = arguments else {
            return Err(format!("{target} takes one argument: a tenant id"));
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
        if join {
            if !self.joined.contains(&tenant) {
                self.hub.groups.join(&tenant, self.id, self.member.clone());
                self.joined.push(tenant);
            }
        } else if let Some(i) = self.joined.iter().position(|t| *t == tenant) {
            self.hub.groups.leave(&tenant, self.id);
            self.joined.remove(i);
        }
        Ok(())
    }

    async fn finish(mut self, end: End) {
        for tenant in &self.joined {
            self.hub.groups.leave(tenant, self.id);
        }
        self.hub.groups.disconnect(self.id);
        if let Some(m) = self.hub.metrics.as_deref() {
            m.connected(&self.caller.tenant, -1);
        }
        if let End::Close(error, allow_reconnect) = end {
            let close = protocol::close(error.as_deref(), allow_reconnect);
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                let _ = self.ws.send(text(close)).await;
                let _ = self.ws.close(None).await;
            })
            .await;
        }
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
