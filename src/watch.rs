//! `payedge watch`: a terminal hub client. It connects like any other client (WebSocket, SignalR
//! JSON protocol) and prints each event as one line.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::hub::protocol::{self, RECORD_SEPARATOR};

const PING_EVERY: Duration = Duration::from_secs(15);

/// Connects to `url` (http:// or ws://) with `token` and prints events until the hub closes.
pub async fn watch(url: &str, token: &str) -> Result<(), String> {
    let ws_url = url
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    let mut request = ws_url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("bad hub url {url}: {e}"))?;
    let bearer = format!("Bearer {token}")
        .parse()
        .map_err(|_| "the token cannot be sent in a header".to_string())?;
    request.headers_mut().insert("Authorization", bearer);
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let handshake = format!(
        r#"{{"protocol":"json","version":1}}{}"#,
        RECORD_SEPARATOR as char
    );
    ws.send(Message::text(handshake))
        .await
        .map_err(|e| e.to_string())?;
    let mut framer = protocol::Framer::new(1024 * 1024);
    let mut handshaken = false;
    let mut ping = tokio::time::interval(PING_EVERY);
    loop {
        tokio::select! {
            frame = ws.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None => return Ok(()),
                    Some(Err(e)) => return Err(format!("connection lost: {e}")),
                    Some(Ok(_)) => continue,
                };
                for message in framer.push(text.as_bytes()).map_err(|e| e.to_string())? {
                    let value: Value = serde_json::from_slice(&message).map_err(|e| e.to_string())?;
                    if !handshaken {
                        if let Some(error) = value.get("error") {
                            return Err(format!("the hub refused the handshake: {error}"));
                        }
                        handshaken = true;
                        eprintln!("connected to {url}; waiting for events (Ctrl-C to stop)");
                        continue;
                    }
                    if let Some(line) = describe(&value)? {
                        println!("{line}");
                    }
                }
            }
            _ = ping.tick() => {
                ws.send(Message::text(protocol::ping())).await.map_err(|e| e.to_string())?;
            }
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
