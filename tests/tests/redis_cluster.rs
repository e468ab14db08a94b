//! A real Redis Cluster run from the project's files (`deploy/redis.conf`, `replica.conf`,
//! `cluster.conf` and the ACL users), formed by `redis-cli --cluster create`: three primaries, three
//! replicas. One cluster for the whole binary (it is heavy), so everything is checked in one test.
//!
//! What is checked is what the key names promise (docs/operations.md, "Key names and Redis Cluster
//! slots"): a record's keys share a slot (the one `aside_shared::slot` computes), the feed's keys share a slot, profiles spread over every
//! primary, and scripts that name keys of one slot run while one that mixes the feed and a profile is
//! refused, as a cluster refuses it.

use std::collections::BTreeSet;

use aside_shared::UserId;
use aside_shared::cache::{lease_key, profile_key};
use aside_shared::feed::{FEED_KEY, FEED_SEQ_KEY};
use aside_shared::slot::key_slot;
use aside_tests::harness::{RedisCluster, RedisUser};

async fn keyslot(cluster: &RedisCluster, key: &str) -> u16 {
    let mut c = cluster.nodes[0].admin(0).await.unwrap();
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap()
}

fn id(n: i32) -> UserId {
    UserId::parse(&n.to_string()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_project_s_cluster_serves_every_slot_and_keeps_each_script_s_keys_in_one_slot() {
    let cluster = RedisCluster::start(3, 1).await.unwrap();

    // Three primaries sharing the 16384 slots, each followed by one replica.
    let view = cluster.cluster_nodes().await.unwrap();
    assert_eq!(view.len(), 6, "{view:?}");
    let primaries: Vec<_> = view.iter().filter(|n| n.primary).collect();
    assert_eq!(primaries.len(), 3, "{view:?}");
    assert!(primaries.iter().all(|p| p.slot_count() > 0 && !p.failed));
    assert_eq!(primaries.iter().map(|p| p.slot_count()).sum::<u32>(), 16384);
    let followed: BTreeSet<&str> = view
        .iter()
        .filter(|n| !n.primary)
        .filter_map(|n| n.primary_id.as_deref())
        .collect();
    let primary_ids: BTreeSet<&str> = primaries.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(followed, primary_ids, "one replica per primary");

    // A record's keys share its slot; 200 ids spread over all three primaries.
    let mut owners = BTreeSet::new();
    for n in 1..=200 {
        let slot = keyslot(&cluster, &profile_key(id(n))).await;
        assert_eq!(slot, keyslot(&cluster, &lease_key(id(n))).await, "id {n}");
        assert_eq!(
            slot,
            key_slot(profile_key(id(n)).as_bytes()),
            "aside_shared's slot of {n}"
        );
        owners.insert(cluster.owner_of(slot).await.unwrap());
    }
    assert_eq!(owners.len(), 3, "profiles on every primary: {owners:?}");
    // The feed's two keys share the `feed` tag's slot.
    let feed_slot = keyslot(&cluster, FEED_KEY).await;
    assert_eq!(feed_slot, keyslot(&cluster, FEED_SEQ_KEY).await);
    assert_eq!(feed_slot, key_slot(FEED_KEY.as_bytes()));

    // The node that owns a profile's slot takes the origin's writes and the edge's reads, with the
    // project's ACL users; another primary answers MOVED (a cluster client follows it).
    let profile = profile_key(id(7));
    let owner = cluster
        .owner_of(keyslot(&cluster, &profile).await)
        .await
        .unwrap();
    let origin = redis::Client::open(cluster.nodes[owner].url(RedisUser::Origin, 0)).unwrap();
    let mut origin = origin.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&profile)
        .arg("_version")
        .arg(3)
        .query_async(&mut origin)
        .await
        .unwrap();
    let edge = redis::Client::open(cluster.nodes[owner].url(RedisUser::Edge, 0)).unwrap();
    let mut edge = edge.get_multiplexed_async_connection().await.unwrap();
    let version: String = redis::cmd("HGET")
        .arg(&profile)
        .arg("_version")
        .query_async(&mut edge)
        .await
        .unwrap();
    assert_eq!(version, "3");
    let other = primaries
        .iter()
        .find_map(|p| {
            cluster
                .nodes
                .iter()
                .position(|n| n.port == p.port && n.port != cluster.nodes[owner].port)
        })
        .unwrap();
    let mut elsewhere = cluster.nodes[other].admin(0).await.unwrap();
    let moved = redis::cmd("HGET")
        .arg(&profile)
        .arg("_version")
        .query_async::<Option<String>>(&mut elsewhere)
        .await
        .unwrap_err();
    assert_eq!(
        moved.redirect_node().map(|(_, slot)| slot),
        Some(keyslot(&cluster, &profile).await),
        "MOVED to the slot's owner: {moved:?}"
    );
    let (address, _) = moved.redirect_node().unwrap();
    assert_eq!(address, format!("127.0.0.1:{}", cluster.nodes[owner].port));

    // A script over one record's keys runs (the lease and the profile, as the origin's lease does) ...
    let mut admin = cluster.nodes[owner].admin(0).await.unwrap();
    let lease_and_look = "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', 1000) then \
                          return redis.call('HGET', KEYS[2], '_version') end return false";
    let looked: String = redis::cmd("EVAL")
        .arg(lease_and_look)
        .arg(2)
        .arg(lease_key(id(7)))
        .arg(&profile)
        .arg("token")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(looked, "3");
    // ... and so does the feed's heartbeat on the feed's node ...
    let feed_owner = cluster.owner_of(feed_slot).await.unwrap();
    let mut feed_admin = cluster.nodes[feed_owner].admin(0).await.unwrap();
    let heartbeat = "local n = redis.call('INCR', KEYS[2]) \
                     redis.call('XADD', KEYS[1], 'MAXLEN', '~', 100, '*', 's', n, 'k', 'h') return n";
    let n: i64 = redis::cmd("EVAL")
        .arg(heartbeat)
        .arg(2)
        .arg(FEED_KEY)
        .arg(FEED_SEQ_KEY)
        .query_async(&mut feed_admin)
        .await
        .unwrap();
    assert_eq!(n, 1);
    // ... while one naming the feed and a profile is refused by the cluster whatever node is asked:
    // why the compare-and-set that announces a write needs two calls on a cluster.
    let mut refused = 0;
    for node in &cluster.nodes[..3] {
        let mut c = node.admin(0).await.unwrap();
        let answer = redis::cmd("EVAL")
            .arg("return redis.call('EXISTS', KEYS[2])")
            .arg(3)
            .arg(FEED_KEY)
            .arg(FEED_SEQ_KEY)
            .arg(&profile)
            .query_async::<i64>(&mut c)
            .await;
        if let Err(e) = answer {
            let text = e.to_string().to_uppercase();
            assert!(
                text.contains("CROSSSLOT") || text.contains("MOVED"),
                "{text}"
            );
            refused += 1;
        }
    }
    assert_eq!(refused, 3, "a cross-slot script runs nowhere");
}
