//! `payedge watch`: a terminal hub client. It connects like any other client (WebSocket, SignalR
//! JSON protocol) and prints each event as one line. When the connection is lost it connects
//! again by itself and resumes its tenant's events from the last `streamid` it printed, saying
//! on stderr how many it recovered (or that some may be missing).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::hub::protocol::{self, RECORD_SEPARATOR};
use crate::terminal;

const PING_EVERY: Duration = Duration::from_secs(15);
/// Waits between reconnection attempts; the last repeats.
const BACKOFF: [Duration; 5] = [
    Duration::from_millis(200),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
];
const RESUME_ID: &str = "resume";

/// How one connection ended.
enum Ended {
    /// For good: the hub refused or closed without allowing a reconnect, or was never reached.
    Stop(Result<(), String>),
    /// The connection broke (or the hub closed it allowing a reconnect): try again.
    Lost(String),
}

/// Connects to `url` (http:// or ws://) with `token` and prints events until the hub closes for
/// good, resuming `tenant`'s events after every lost connection.
pub async fn watch(url: &str, token: &str, tenant: &str) -> Result<(), String> {
    let mut watcher = Watcher {
        url,
        token,
        tenant,
        last: None,
        resuming_from: None,
        connected_once: false,
    };
    let mut attempt = 0;
    loop {
        let was_connected = watcher.connected_once;
        let why = match watcher.session(&mut attempt).await {
            Ended::Stop(result) => return result,
            Ended::Lost(why) if !was_connected && !watcher.connected_once => return Err(why),
            Ended::Lost(why) => why,
        };
        let wait = BACKOFF[attempt.min(BACKOFF.len() - 1)];
        attempt += 1;
        terminal::err(&format!("{why}; connecting again in {wait:?}"));
        tokio::time::sleep(wait).await;
    }
}

struct Watcher<'a> {
    url: &'a str,
    token: &'a str,
    tenant: &'a str,
    /// The `streamid` of the last event of `tenant` printed.
    last: Option<String>,
    /// Where the resume under way started.
    resuming_from: Option<String>,
    connected_once: bool,
}

impl Watcher<'_> {
    async fn session(&mut self, attempt: &mut usize) -> Ended {
        let url = self.url;
        let ws_url = url
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1);
        let mut request = match ws_url.as_str().into_client_request() {
            Ok(request) => request,
            Err(e) => return Ended::Stop(Err(format!("bad hub url {url}: {e}"))),
        };
        let Ok(bearer) = format!("Bearer {}", self.token).parse() else {
            return Ended::Stop(Err("the token cannot be sent in a header".into()));
        };
        request.headers_mut().insert("Authorization", bearer);
        let mut ws = match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => ws,
            // The hub refused us (a token no longer valid, a forbidden origin): trying again
            // with the same token cannot succeed.
            Err(tokio_tungstenite::tungstenite::Error::Http(response))
                if response.status().is_client_error()
                    && !matches!(response.status().as_u16(), 408 | 429) =>
            {
                return Ended::Stop(Err(format!(
                    "the hub at {url} refused the connection: {}",
                    response.status()
                )));
            }
            Err(e) => return Ended::Lost(format!("cannot connect to {url}: {e}")),
        };
        let handshake = format!(
            r#"{{"protocol":"json","version":1}}{}"#,
            RECORD_SEPARATOR as char
        );
        if let Err(e) = ws.send(Message::text(handshake)).await {
            return Ended::Lost(format!("connection lost: {e}"));
        }
        let mut framer = protocol::Framer::new(1024 * 1024);
        let mut handshaken = false;
        let mut ping = tokio::time::interval(PING_EVERY);
        loop {
            tokio::select! {
                frame = ws.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(_))) | None => {
                            return Ended::Lost("the connection was closed".into());
                        }
                        Some(Err(e)) => return Ended::Lost(format!("connection lost: {e}")),
                        Some(Ok(_)) => continue,
                    };
                    let messages = match framer.push(text.as_bytes()) {
                        Ok(messages) => messages,
                        Err(e) => return Ended::Stop(Err(e.to_string())),
                    };
                    for message in messages {
                        let value: Value = match serde_json::from_slice(&message) {
                            Ok(value) => value,
                            Err(e) => return Ended::Stop(Err(e.to_string())),
                        };
                        if !handshaken {
                            if let Some(error) = value.get("error") {
                                return Ended::Stop(Err(format!("the hub refused the handshake: {error}")));
                            }
                            handshaken = true;
                            *attempt = 0;
                            if let Err(e) = self.connected(&mut ws).await {
                                return Ended::Lost(format!("connection lost: {e}"));
                            }
                            continue;
                        }
                        if let Some(ended) = self.on_message(&value) {
                            return ended;
                        }
                    }
                }
                _ = ping.tick() => {
                    if let Err(e) = ws.send(Message::text(protocol::ping())).await {
                        return Ended::Lost(format!("connection lost: {e}"));
                    }
                }
            }
        }
    }

    /// After a handshake: says so and, when events were seen before, resumes after the last.
    async fn connected<S>(&mut self, ws: &mut S) -> Result<(), S::Error>
    where
        S: futures_util::Sink<Message> + Unpin,
    {
        let url = self.url;
        match &self.last {
            None if !self.connected_once => {
                terminal::err(&format!(
                    "connected to {url}; waiting for events (Ctrl-C to stop)"
                ));
            }
            None => {
                terminal::err(&format!(
                    "connected to {url} again; no event of {} had been received to resume from",
                    self.tenant
                ));
            }
            Some(last) => {
                let join = json!({
                    "type": 1,
                    "invocationId": RESUME_ID,
                    "target": "JoinTenantGroup",
                    "arguments": [self.tenant, last],
                });
                let mut text = join.to_string();
                text.push(RECORD_SEPARATOR as char);
                ws.send(Message::text(text)).await?;
                self.resuming_from = Some(last.clone());
            }
        }
        self.connected_once = true;
        Ok(())
    }

    fn on_message(&mut self, value: &Value) -> Option<Ended> {
        if value["type"] == 3 && value["invocationId"] == RESUME_ID {
            terminal::err(&self.resumed(value));
            return None;
        }
        if value["type"] == 1 {
            let event = &value["arguments"][0];
            let tenant = event["tenant"].as_str().unwrap_or("");
            if tenant.eq_ignore_ascii_case(self.tenant)
                && let Some(id) = event["streamid"].as_str()
            {
                self.last = Some(id.to_string());
            }
        }
        let described = describe(value);
        let expired = value["error"]
            .as_str()
            .is_some_and(|e| e.contains("access token has expired"));
        if value["type"] == 7 && value["allowReconnect"] == true && !expired {
            let why = described.map_or_else(|e| e, |line| line.unwrap_or_default());
            return Some(Ended::Lost(why));
        }
        match described {
            Ok(Some(line)) if value["type"] == 7 => {
                terminal::err(&line);
                Some(Ended::Stop(Ok(())))
            }
            // Whoever read the events has gone (`payedge watch | head`): stop.
            Ok(Some(line)) if !terminal::out(&line) => Some(Ended::Stop(Ok(()))),
            Ok(Some(_)) => None,
            Ok(None) => None,
            Err(closed) => Some(Ended::Stop(Err(closed))),
        }
    }

    /// What a resume's completion says, for stderr.
    fn resumed(&self, completion: &Value) -> String {
        let url = self.url;
        let from = self.resuming_from.as_deref().unwrap_or("-");
        if let Some(error) = completion["error"].as_str() {
            return format!("connected to {url} again; resuming failed: {error}");
        }
        let result = &completion["result"];
        if result["recovered"] == true {
            format!(
                "connected to {url} again; recovered {} missed events after {from}",
                result["replayed"].as_u64().unwrap_or(0),
            )
        } else {
            format!(
                "connected to {url} again; events after {from} could not be recovered ({}): some may be missing",
                result["reason"].as_str().unwrap_or("unknown")
            )
        }
    }
}

/// One line for an event; `Err` when the hub closed with an error.
fn describe(message: &Value) -> Result<Option<String>, String> {
    match message["type"].as_u64() {
        Some(1) => {
            let event = &message["arguments"][0];
            Ok(Some(format!(
                "{} {} tenant={} {}",
                event["time"].as_str().unwrap_or("-"),
                event["type"].as_str().unwrap_or("?"),
                event["tenant"].as_str().unwrap_or("*"),
                event["data"]
            )))
        }
        Some(7) => match message.get("error") {
            Some(error) => Err(format!("the hub closed the connection: {error}")),
            None => Ok(Some("the hub closed the connection".into())),
        },
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_become_one_line() {
        let push = json!({"type": 1, "target": "fx.quote.created", "arguments": [
            {"type": "fx.quote.created", "time": "2026-11-26T15:00:00Z", "tenant": "blue", "data": {"amount": "1000.10"}}
        ]});
        assert_eq!(
            describe(&push).unwrap().unwrap(),
            r#"2026-11-26T15:00:00Z fx.quote.created tenant=blue {"amount":"1000.10"}"#
        );
        assert_eq!(describe(&json!({"type": 6})).unwrap(), None);
        assert!(describe(&json!({"type": 7, "error": "expired"})).is_err());
    }
}
