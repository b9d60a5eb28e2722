//! The event bus and the hub on a real three-node Redis Cluster (`redis+cluster://`): each
//! tenant's history stream lives on the shard of its hash tag, live events cross instances over
//! sharded pub/sub, and a client resumes on another instance from the stream on that shard.

mod common;

use std::collections::HashSet;

use common::hub::{NodeClient, correlation_ids, quote};
use common::redis_cluster::RedisCluster;
use common::*;

const TENANTS: [&str; 6] = ["blue", "green", "red", "amber", "teal", "plum"];

fn config(fx: &MockUpstream, cluster: &RedisCluster) -> String {
    config_for(&[("fx".into(), fx.addr)], "").replace(
        "tenants: [blue, green]",
        &format!("tenants: [{}]", TENANTS.join(", ")),
    ) + &format!(
        r#"notifications:
  provider: redis
  redis:
    url: {}
triggers:
  - name: fx-quote-created
    event: fx.quote.created
    match: {{ method: POST, path: /api/fx/quote, status: [201] }}
    fields: {{ quoteId: /id, amount: /amount }}
"#,
        cluster.url()
    )
}

#[test]
fn tenants_spread_over_the_shards_and_live_and_resumed_events_work_across_instances() {
    let cluster = RedisCluster::start();
    let fx = fx_quote_provider();
    let a = Payedge::start(&config(&fx, &cluster), &env());
    let b = Payedge::start(&config(&fx, &cluster), &env());
    let on_a: Vec<NodeClient> = TENANTS
        .iter()
        .map(|t| NodeClient::connected(a.admin, &token(t), &[]))
        .collect();
    let mut blue_on_b = NodeClient::connected(b.admin, &token("blue"), &[]);
    // Subscriptions are made as groups fill: give both instances a moment.
    std::thread::sleep(std::time::Duration::from_millis(500));

    // Published through either instance, each tenant's events reach its clients on both.
    for tenant in TENANTS {
        quote(&b, tenant, &format!("{tenant}-1"));
        quote(&a, tenant, &format!("{tenant}-2"));
    }
    // Each stream is on the shard of its tenant, the tenants use more than one shard, and
    // every client got its tenant's events once, in the stream's order.
    let mut shards = HashSet::new();
    for (tenant, client) in TENANTS.iter().zip(&on_a) {
        let key = format!("payedge:events:stream:{{{tenant}}}");
        let owner = cluster.owner_of(&key);
        let entries: Vec<(String, Vec<(String, String)>)> = ::redis::cmd("XRANGE")
            .arg(&key)
            .arg("-")
            .arg("+")
            .query(&mut cluster.node(owner))
            .unwrap();
        let stored: Vec<String> = entries
            .iter()
            .map(|(_, fields)| {
                let envelope: serde_json::Value = serde_json::from_str(&fields[0].1).unwrap();
                envelope["correlationid"].as_str().unwrap().to_string()
            })
            .collect();
        let mut sorted = stored.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [format!("{tenant}-1"), format!("{tenant}-2")],
            "{key} on {owner}"
        );
        client.wait_messages(2);
        assert_eq!(correlation_ids(&client.messages()), stored, "{tenant}");
        shards.insert(owner);
    }
    assert!(shards.len() >= 2, "all tenants on one shard: {shards:?}");
    blue_on_b.wait_messages(2);

    // Blue's client on A goes away; five events later it resumes on B from its last position.
    let last = on_a[0].messages().last().unwrap()["streamid"]
        .as_str()
        .unwrap()
        .to_string();
    drop(on_a);
    for i in 0..5 {
        quote(&a, "blue", &format!("missed-{i}"));
    }
    blue_on_b.wait_messages(7);
    let mut resumed = NodeClient::connected(b.admin, &token("blue"), &[]);
    let joined = resumed.join_from("blue", Some(&last));
    assert_eq!(joined["result"]["recovered"], true, "{joined}");
    assert_eq!(joined["result"]["replayed"], 5, "{joined}");
    quote(&a, "blue", "live");
    resumed.wait_messages(6);
    let expected: Vec<String> = (0..5)
        .map(|i| format!("missed-{i}"))
        .chain(["live".to_string()])
        .collect();
    assert_eq!(correlation_ids(&resumed.messages()), expected);
    let _ = blue_on_b.join_from("blue", None);
}
