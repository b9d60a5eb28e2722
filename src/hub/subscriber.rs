//! The hub's Redis subscription, on one server (`SUBSCRIBE` on a connection of its own) or on a
//! Redis Cluster (`SSUBSCRIBE` over RESP3: each tenant's channel on its shard), behind one type.
//! It ends at the first disconnection of any node: the backplane then starts over and repairs
//! what it missed from the history, rather than trusting an automatic resubscription that could
//! leave a gap.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, RedisResult, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::events::redis_target::RedisTarget;

/// Channels named in one `SUBSCRIBE` or `UNSUBSCRIBE` on one server.
const CHANNELS_PER_COMMAND: usize = 1000;

/// `command`'s answer, or a timeout error after `within`.
async fn answered(
    within: Duration,
    command: impl std::future::Future<Output = RedisResult<()>>,
) -> RedisResult<()> {
    tokio::time::timeout(within, command)
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from(std::io::Error::from(
                std::io::ErrorKind::TimedOut,
            )))
        })
}

pub enum Subscriber {
    Single {
        control: PubSubSink,
        messages: PubSubStream,
    },
    Cluster {
        con: ClusterConnection,
        pushes: UnboundedReceiver<PushInfo>,
        /// Channels this side unsubscribed from: their confirmations are expected.
        leaving: HashSet<String>,
    },
}

impl Subscriber {
    pub async fn connect(target: &RedisTarget, timeout: Duration) -> RedisResult<Self> {
        let connecting = async {
            match target {
                RedisTarget::Single(url) => {
                    let pubsub = redis::Client::open(url.as_str())?
                        .get_async_pubsub()
                        .await?;
                    let (control, messages) = pubsub.split();
                    Ok(Self::Single { control, messages })
                }
                RedisTarget::Cluster(_) => {
                    let Some(connected) = target.sharded_subscriber(timeout).await else {
                        return Err(redis::RedisError::from(std::io::Error::other(
                            "not a cluster",
                        )));
                    };
                    let (con, pushes) = connected?;
                    Ok(Self::Cluster {
                        con,
                        pushes,
                        leaving: HashSet::new(),
                    })
                }
            }
        };
        tokio::time::timeout(timeout, connecting)
            .await
            .unwrap_or_else(|_| {
                Err(redis::RedisError::from(std::io::Error::from(
                    std::io::ErrorKind::TimedOut,
                )))
            })
    }

    /// Subscribes to `channels`, each command answered within `within` (else a timeout
    /// error): on one server many channels per `SUBSCRIBE`, so that a reconnection with
    /// thousands of tenants takes a few round trips, not one per tenant under one deadline
    /// (which a slow link never met: the backplane started over and over); on a cluster one
    /// `SSUBSCRIBE` per channel (a command's channels must share a slot), each with its own
    /// deadline.
    pub async fn subscribe(&mut self, channels: Vec<String>, within: Duration) -> RedisResult<()> {
        match self {
            Self::Single { control, .. } => {
                for batch in channels.chunks(CHANNELS_PER_COMMAND) {
                    answered(within, control.subscribe(batch)).await?;
                }
            }
            Self::Cluster { con, .. } => {
                for channel in channels {
                    answered(within, con.ssubscribe(channel)).await?;
                }
            }
        }
        Ok(())
    }

    /// As [`Self::subscribe`], leaving `channels`.
    pub async fn unsubscribe(
        &mut self,
        channels: Vec<String>,
        within: Duration,
    ) -> RedisResult<()> {
        match self {
            Self::Single { control, .. } => {
                for batch in channels.chunks(CHANNELS_PER_COMMAND) {
                    answered(within, control.unsubscribe(batch)).await?;
                }
            }
            Self::Cluster { con, leaving, .. } => {
                for channel in channels {
                    leaving.insert(channel.clone());
                    answered(within, con.sunsubscribe(channel)).await?;
                }
            }
        }
        Ok(())
    }

    pub async fn ping(&mut self) -> RedisResult<()> {
        match self {
            Self::Single { control, .. } => control.ping::<Value>().await.map(drop),
            Self::Cluster { con, .. } => {
                redis::cmd("PING").query_async::<Value>(con).await.map(drop)
            }
        }
    }

    /// The next message as (channel, payload); `None` when the subscription ended.
    pub async fn next(&mut self) -> Option<(String, String)> {
        match self {
            Self::Single { messages, .. } => loop {
                let message = messages.next().await?;
                if let Ok(payload) = message.get_payload::<String>() {
                    return Some((message.get_channel_name().to_string(), payload));
                }
            },
            Self::Cluster {
                pushes, leaving, ..
            } => loop {
                let push = pushes.recv().await?;
                match push.kind {
                    PushKind::Disconnection => return None,
                    // A shard dropped a subscription this side still wants (its slot moved, a
                    // failover): start over, and repair from the streams.
                    PushKind::SUnsubscribe => {
                        let channel = push.data.first().and_then(text).unwrap_or_default();
                        if !leaving.remove(&channel) {
                            return None;
                        }
                    }
                    PushKind::SMessage | PushKind::Message => {
                        if let [channel, payload, ..] = push.data.as_slice()
                            && let (Some(channel), Some(payload)) = (text(channel), text(payload))
                        {
                            return Some((channel, payload));
                        }
                    }
                    _ => {}
                }
            },
        }
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}
