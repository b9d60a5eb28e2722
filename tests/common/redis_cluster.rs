//! A real three-node Redis Cluster for a test: three `redis-server --cluster-enabled yes` on
//! free ports (their bus ports too), joined with `redis-cli --cluster create`, every slot served
//! before the test goes on; killed on drop.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisCluster {
    pub nodes: Vec<SocketAddr>,
    children: Vec<Child>,
    _dirs: Vec<tempfile::TempDir>,
}

impl RedisCluster {
    pub fn start() -> Self {
        let mut cluster = Self {
            nodes: Vec::new(),
            children: Vec::new(),
            _dirs: Vec::new(),
        };
        for _ in 0..3 {
            let addr = super::process::free_addr();
            let bus = super::process::free_addr();
            let dir = tempfile::tempdir().unwrap();
            let child = Command::new("redis-server")
                .args(["--port", &addr.port().to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-port", &bus.port().to_string()])
                .args(["--cluster-node-timeout", "2000"])
                .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is needed for the cluster tests");
            cluster.nodes.push(addr);
            cluster.children.push(child);
            cluster._dirs.push(dir);
        }
        for node in &cluster.nodes {
            wait(&format!("{node} to answer"), || {
                redis::Client::open(format!("redis://{node}"))
                    .and_then(|c| c.get_connection())
                    .and_then(|mut con| redis::cmd("PING").query::<String>(&mut con))
                    .is_ok()
            });
        }
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(cluster.nodes.iter().map(|n| n.to_string()))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli is needed for the cluster tests");
        assert!(created.success(), "redis-cli --cluster create failed");
        for node in &cluster.nodes {
            wait("cluster_state:ok on every node", || {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut cluster.node(*node))
                    .unwrap_or_default();
                info.contains("cluster_state:ok")
            });
        }
        cluster
    }

    /// The URL payedge takes: every node as a seed.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|n| n.to_string()).collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// A plain connection to one node, for the test's own commands.
    pub fn node(&self, addr: SocketAddr) -> redis::Connection {
        redis::Client::open(format!("redis://{addr}"))
            .and_then(|c| c.get_connection())
            .expect("a node of the test's cluster")
    }

    /// The node that serves `key`'s slot.
    pub fn owner_of(&self, key: &str) -> SocketAddr {
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.node(self.nodes[0]))
            .unwrap();
        *self
            .nodes
            .iter()
            .find(|n| served(&mut self.node(**n), slot))
            .expect("some node serves every slot")
    }
}

/// Whether the node behind `con` serves `slot` itself.
fn served(con: &mut redis::Connection, slot: i64) -> bool {
    let myself: String = redis::cmd("CLUSTER").arg("MYID").query(con).unwrap();
    let shards: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query(con).unwrap();
    shards.iter().any(|shard| {
        let redis::Value::Array(parts) = shard else {
            return false;
        };
        let int = |v: &redis::Value| match v {
            redis::Value::Int(i) => *i,
            _ => -1,
        };
        let master_id = match parts.get(2) {
            Some(redis::Value::Array(master)) => match master.get(2) {
                Some(redis::Value::BulkString(id)) => String::from_utf8_lossy(id).into_owned(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        parts.len() >= 3 && int(&parts[0]) <= slot && slot <= int(&parts[1]) && master_id == myself
    })
}

fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "no {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
