//! Where the event bus's Redis is: one server (`redis://…`), or a Redis Cluster named by its
//! seed nodes (`redis+cluster://host:port,host:port`, credentials as in `redis://`).
//!
//! On a cluster every tenant's stream and channel carry the tenant as a hash tag, so a tenant's
//! history and live events live in one slot (one shard), published with `SPUBLISH` and followed
//! with `SSUBSCRIBE` (sharded pub/sub: a message travels only within its shard). A connection
//! here is either kind behind one type, so the publisher and the history reader do not care.

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

const CLUSTER_SCHEME: &str = "redis+cluster://";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Single(String),
    /// The seed nodes, as `redis://` URLs.
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// Reads a `redis://` or `redis+cluster://` URL; the error never repeats the URL (it may
    /// hold a password).
    pub fn parse(url: &str) -> Result<Self, String> {
        let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) else {
            redis::Client::open(url).map_err(|e| e.to_string().replace(url, "…"))?;
            return Ok(Self::Single(url.to_string()));
        };
        let (credentials, hosts) = match rest.rsplit_once('@') {
            Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
            None => (String::new(), rest),
        };
        let hosts = hosts.split(['/', '?']).next().unwrap_or("");
        let seeds: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.trim().is_empty())
            .map(|h| format!("redis://{credentials}{}", h.trim()))
            .collect();
        if seeds.is_empty() {
            return Err("a redis+cluster:// URL names at least one host:port".into());
        }
        for seed in &seeds {
            redis::Client::open(seed.as_str()).map_err(|e| {
                format!(
                    "a seed node is not a Redis address: {}",
                    e.to_string().replace(seed.as_str(), "…")
                )
            })?;
        }
        Ok(Self::Cluster(seeds))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// The channel of `stream` (a tenant, or `_all`).
    pub fn channel(&self, prefix: &str, stream: &str) -> String {
        match self {
            Self::Single(_) => format!("{prefix}{stream}"),
            Self::Cluster(_) => format!("{prefix}{{{stream}}}"),
        }
    }

    /// The stream a channel carries, as [`channel`](Self::channel) names it.
    pub fn stream_of<'a>(&self, prefix: &str, channel: &'a str) -> Option<&'a str> {
        let rest = channel.strip_prefix(prefix)?;
        match self {
            Self::Single(_) => Some(rest),
            Self::Cluster(_) => rest.strip_prefix('{')?.strip_suffix('}'),
        }
    }

    /// A connection for commands, with these timeouts.
    pub async fn connect(&self, timeout: std::time::Duration) -> RedisResult<Connection> {
        match self {
            Self::Single(url) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout));
                let con = redis::Client::open(url.as_str())?
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok(Connection::Single(con))
            }
            Self::Cluster(seeds) => {
                let con = redis::cluster::ClusterClientBuilder::new(seeds.clone())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .build()?
                    .get_async_connection()
                    .await?;
                Ok(Connection::Cluster(con))
            }
        }
    }

    /// A cluster connection that delivers sharded messages (and disconnections) to the returned
    /// receiver; `None` for a single server.
    pub async fn sharded_subscriber(
        &self,
        timeout: std::time::Duration,
    ) -> Option<
        RedisResult<(
            ClusterConnection,
            tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
        )>,
    > {
        let Self::Cluster(seeds) = self else {
            return None;
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let connected = async {
            let con = redis::cluster::ClusterClientBuilder::new(seeds.clone())
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(tx)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .build()?
                .get_async_connection()
                .await?;
            Ok((con, rx))
        };
        Some(connected.await)
    }
}

/// A command connection to one server or to a cluster.
#[derive(Clone)]
pub enum Connection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_their_seed_nodes_with_the_credentials() {
        assert_eq!(
            RedisTarget::parse("redis+cluster://u:secret@10.0.0.1:7000,10.0.0.2:7001").unwrap(),
            RedisTarget::Cluster(vec![
                "redis://u:secret@10.0.0.1:7000".into(),
                "redis://u:secret@10.0.0.2:7001".into()
            ])
        );
        assert_eq!(
            RedisTarget::parse("redis://127.0.0.1:6379/0").unwrap(),
            RedisTarget::Single("redis://127.0.0.1:6379/0".into())
        );
        assert!(RedisTarget::parse("redis+cluster://").is_err());
        let bad = RedisTarget::parse("nope://secret@x").unwrap_err();
        assert!(!bad.contains("secret"), "{bad}");
    }

    #[test]
    fn on_a_cluster_channels_carry_the_stream_as_a_hash_tag() {
        let single = RedisTarget::Single("redis://x".into());
        let cluster = RedisTarget::Cluster(vec!["redis://x".into()]);
        assert_eq!(single.channel("p:", "blue"), "p:blue");
        assert_eq!(cluster.channel("p:", "blue"), "p:{blue}");
        assert_eq!(cluster.stream_of("p:", "p:{blue}"), Some("blue"));
        assert_eq!(single.stream_of("p:", "p:blue"), Some("blue"));
        assert_eq!(cluster.stream_of("p:", "p:blue"), None);
    }
}
