//! Tier 2 on a Redis Cluster (`redis_mode = cluster`): which node serves a key.
//!
//! A cluster splits its keys over 16384 slots ([`aside_shared::slot::key_slot`]: CRC16 of the key's hash
//! tag) and each slot is served by one primary. The edge learns which primary serves which slot from
//! `CLUSTER SLOTS` ([`SlotMap::from_cluster_slots`]) and sends each read to that node ([`crate::l2`]).
//! When a slot has moved since, the node asked answers with a redirection ([`Redirect::parse`]):
//! `MOVED` (the slot now lives elsewhere: the map is corrected and the read goes there) or `ASK` (the
//! slot is being migrated and this key is already on the importing node: the read goes there once,
//! after `ASKING`, and the map stays).
//!
//! Spin's Redis binding flattens a nested reply depth-first into one list, so `CLUSTER SLOTS`
//! (`[[start, end, [ip, port, id, [k, v, ...]], [replica ...]], ...]`) arrives as
//! `start, end, ip, port, id, k, v, ..., ip, port, id, ..., start, end, ...`. The types tell the parts
//! apart: a range starts with two integers, a node with a string and an integer (its address and port),
//! then its id (a string) and its metadata (pairs of strings: Redis 7's `hostname`). Nodes without an
//! id (Redis before 4.0) are not understood (the parse fails and the map stays as it was).

use spin_sdk::redis::RedisResult;

use aside_shared::slot::SLOTS;

/// The slots' owners: for each slot, the index in [`SlotMap::primaries`] of the primary serving it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    /// `host:port` of each primary (IPv6 hosts in brackets), as the cluster announces it.
    primaries: Vec<String>,
    /// The replicas of each primary, in the same order.
    replicas: Vec<Vec<String>>,
    /// Per slot: an index in `primaries`, or [`UNSERVED`].
    owners: Box<[u16]>,
}

const UNSERVED: u16 = u16::MAX;

impl SlotMap {
    /// The map in a `CLUSTER SLOTS` reply as Spin flattens it; `None` if it does not read as one.
    pub fn from_cluster_slots(reply: &[RedisResult]) -> Option<Self> {
        let mut map = SlotMap {
            primaries: Vec::new(),
            replicas: Vec::new(),
            owners: vec![UNSERVED; usize::from(SLOTS)].into_boxed_slice(),
        };
        let mut i = 0;
        while i < reply.len() {
            let (start, end) = (int(reply.get(i)?)?, int(reply.get(i + 1)?)?);
            i += 2;
            if !(0..i64::from(SLOTS)).contains(&start) || !(start..i64::from(SLOTS)).contains(&end)
            {
                return None;
            }
            let mut nodes = Vec::new();
            while let Some(first) = reply.get(i).filter(|r| !matches!(r, RedisResult::Int64(_))) {
                let host = text(first)?;
                let port = u16::try_from(int(reply.get(i + 1)?)?).ok()?;
                text(reply.get(i + 2)?)?; // the node id
                i += 3;
                // Metadata pairs (string, string); a string followed by an integer is the next node.
                while let (Some(k), Some(v)) = (reply.get(i), reply.get(i + 1)) {
                    if text(k).is_none() || text(v).is_none() {
                        break;
                    }
                    i += 2;
                }
                nodes.push(address(&host, port));
            }
            let mut nodes = nodes.into_iter();
            // A range whose primary has no usable address stays unserved (reads go to the seed).
            let Some(Some(primary)) = nodes.next() else {
                continue;
            };
            let index = map.index_of(&primary);
            for replica in nodes.flatten() {
                if !map.replicas[usize::from(index)].contains(&replica) {
                    map.replicas[usize::from(index)].push(replica);
                }
            }
            map.owners[start as usize..=end as usize].fill(index);
        }
        (!map.primaries.is_empty()).then_some(map)
    }

    /// The primary serving `slot`, if the map names one.
    pub fn owner(&self, slot: u16) -> Option<&str> {
        let index = *self.owners.get(usize::from(slot))?;
        self.primaries.get(usize::from(index)).map(String::as_str)
    }

    /// A replica of the primary serving `slot`, the `pick`-th (modulo their number), if it has one.
    pub fn replica(&self, slot: u16, pick: usize) -> Option<&str> {
        let index = *self.owners.get(usize::from(slot))?;
        let replicas = self.replicas.get(usize::from(index))?;
        (!replicas.is_empty()).then(|| replicas[pick % replicas.len()].as_str())
    }

    /// Whether `address` is a replica in the map.
    pub fn is_replica(&self, address: &str) -> bool {
        self.replicas.iter().flatten().any(|r| r == address)
    }

    /// Every primary the map names.
    pub fn primaries(&self) -> &[String] {
        &self.primaries
    }

    /// How many slots the map has an owner for.
    pub fn served(&self) -> usize {
        self.owners.iter().filter(|o| **o != UNSERVED).count()
    }

    /// Records that `slot` is served by `address` now (a `MOVED` answer).
    pub fn assign(&mut self, slot: u16, address: &str) {
        if usize::from(slot) < self.owners.len() {
            let index = self.index_of(address);
            self.owners[usize::from(slot)] = index;
        }
    }

    fn index_of(&mut self, address: &str) -> u16 {
        match self.primaries.iter().position(|p| p == address) {
            Some(i) => i as u16,
            None => {
                self.primaries.push(address.to_string());
                self.replicas.push(Vec::new());
                (self.primaries.len() - 1) as u16
            }
        }
    }
}

/// A cluster node's answer that the key's slot is served elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// `MOVED <slot> <host:port>`: the slot lives there now.
    Moved { slot: u16, address: String },
    /// `ASK <slot> <host:port>`: the slot is being migrated there and the key may already be there: ask
    /// that node once, after `ASKING`.
    Ask { slot: u16, address: String },
}

impl Redirect {
    /// The redirection in an error text from Spin's binding: `MOVED 3999 127.0.0.1:6381` as Redis sends
    /// it, or as the host's client words it (`... - Moved: 3999 127.0.0.1:6381`). An address without a
    /// host (`:6381`, a node that does not know its own address) is on the host of `asked` (the
    /// `host:port` the command went to), as the cluster specification says.
    pub fn parse(message: &str, asked: &str) -> Option<Self> {
        let words: Vec<&str> = message.split_whitespace().collect();
        words.windows(3).find_map(|w| {
            let kind = w[0].trim_matches(|c: char| c == ':' || c == '-');
            let slot: u16 = w[1].parse().ok().filter(|s| *s < SLOTS)?;
            let (host, port) = w[2].rsplit_once(':')?;
            port.parse::<u16>().ok().filter(|p| *p != 0)?;
            let address = if host.is_empty() {
                let (asked_host, _) = asked.rsplit_once(':')?;
                format!("{asked_host}:{port}")
            } else {
                w[2].to_string()
            };
            if kind.eq_ignore_ascii_case("moved") {
                Some(Redirect::Moved { slot, address })
            } else if kind.eq_ignore_ascii_case("ask") {
                Some(Redirect::Ask { slot, address })
            } else {
                None
            }
        })
    }

    pub fn address(&self) -> &str {
        match self {
            Redirect::Moved { address, .. } | Redirect::Ask { address, .. } => address,
        }
    }
}

fn int(r: &RedisResult) -> Option<i64> {
    match r {
        RedisResult::Int64(n) => Some(*n),
        _ => None,
    }
}

fn text(r: &RedisResult) -> Option<String> {
    match r {
        RedisResult::Binary(b) => String::from_utf8(b.clone()).ok(),
        RedisResult::Status(s) => Some(s.clone()),
        _ => None,
    }
}

/// `host:port`, `None` when the node has no usable address (`""` or `?`: its endpoint is unknown).
fn address(host: &str, port: u16) -> Option<String> {
    if host.is_empty() || host == "?" || port == 0 {
        None
    } else if host.contains(':') {
        Some(format!("[{host}]:{port}"))
    } else {
        Some(format!("{host}:{port}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> RedisResult {
        RedisResult::Binary(v.as_bytes().to_vec())
    }

    fn n(v: i64) -> RedisResult {
        RedisResult::Int64(v)
    }

    /// Three primaries with a replica each, as redis-server 7.0 answers `CLUSTER SLOTS` (metadata
    /// empty), flattened; the second range's nodes carry a `hostname`.
    fn three_primaries() -> Vec<RedisResult> {
        vec![
            n(0),
            n(5460),
            s("127.0.0.1"),
            n(7000),
            s("id-a"),
            s("127.0.0.1"),
            n(7004),
            s("id-e"),
            n(5461),
            n(10922),
            s("127.0.0.1"),
            n(7001),
            s("id-b"),
            s("hostname"),
            s("redis-1"),
            s("127.0.0.1"),
            n(7005),
            s("id-f"),
            s("hostname"),
            s("redis-5"),
            n(10923),
            n(16383),
            s("::1"),
            n(7002),
            s("id-c"),
        ]
    }

    #[test]
    fn a_flattened_cluster_slots_reply_maps_every_slot_to_its_primary() {
        let map = SlotMap::from_cluster_slots(&three_primaries()).unwrap();
        assert_eq!(
            map.primaries(),
            ["127.0.0.1:7000", "127.0.0.1:7001", "[::1]:7002"]
        );
        assert_eq!(map.owner(0), Some("127.0.0.1:7000"));
        assert_eq!(map.owner(5460), Some("127.0.0.1:7000"));
        assert_eq!(map.owner(5461), Some("127.0.0.1:7001"));
        assert_eq!(map.owner(16383), Some("[::1]:7002"));
        assert_eq!(map.served(), 16384);
        assert_eq!(map.replicas[1], ["127.0.0.1:7005"]);
        assert!(map.replicas[2].is_empty());
        assert_eq!(map.replica(6000, 3), Some("127.0.0.1:7005"));
        assert_eq!(map.replica(16000, 0), None, "no replica: the primary");
        assert!(map.is_replica("127.0.0.1:7004"));
        assert!(!map.is_replica("127.0.0.1:7000"));
    }

    #[test]
    fn a_primary_with_several_ranges_is_one_node_and_gaps_are_unserved() {
        let reply = vec![
            n(0),
            n(99),
            s("10.0.0.1"),
            n(6379),
            s("a"),
            n(200),
            n(299),
            s("10.0.0.1"),
            n(6379),
            s("a"),
        ];
        let map = SlotMap::from_cluster_slots(&reply).unwrap();
        assert_eq!(map.primaries(), ["10.0.0.1:6379"]);
        assert_eq!(map.owner(150), None);
        assert_eq!(map.owner(250), Some("10.0.0.1:6379"));
        assert_eq!(map.served(), 200);
    }

    #[test]
    fn replies_that_are_not_a_slot_map_are_refused() {
        assert_eq!(SlotMap::from_cluster_slots(&[]), None);
        assert_eq!(SlotMap::from_cluster_slots(&[s("OK")]), None);
        // A range past the last slot, or backwards.
        let past = [n(0), n(16384), s("h"), n(1), s("id")];
        assert_eq!(SlotMap::from_cluster_slots(&past), None);
        let backwards = [n(10), n(5), s("h"), n(1), s("id")];
        assert_eq!(SlotMap::from_cluster_slots(&backwards), None);
        // Truncated in a node.
        let mut cut = three_primaries();
        cut.truncate(4);
        assert_eq!(SlotMap::from_cluster_slots(&cut), None);
        // A primary with an unknown endpoint leaves its range unserved.
        let unknown = [n(0), n(10), s("?"), n(7000), s("id")];
        assert_eq!(SlotMap::from_cluster_slots(&unknown), None);
    }

    #[test]
    fn moved_reassigns_one_slot() {
        let mut map = SlotMap::from_cluster_slots(&three_primaries()).unwrap();
        map.assign(42, "127.0.0.1:7001");
        assert_eq!(map.owner(42), Some("127.0.0.1:7001"));
        assert_eq!(map.owner(43), Some("127.0.0.1:7000"));
        map.assign(7, "127.0.0.1:7009");
        assert_eq!(map.owner(7), Some("127.0.0.1:7009"));
        assert_eq!(map.primaries().len(), 4);
    }

    #[test]
    fn redirections_read_from_the_server_s_and_the_client_s_wording() {
        let asked = "10.0.0.5:6379";
        let moved = Redirect::Moved {
            slot: 3999,
            address: "127.0.0.1:6381".into(),
        };
        assert_eq!(
            Redirect::parse("MOVED 3999 127.0.0.1:6381", asked),
            Some(moved.clone())
        );
        assert_eq!(
            Redirect::parse(
                "An error was signalled by the server - Moved: 3999 127.0.0.1:6381",
                asked
            ),
            Some(moved)
        );
        assert_eq!(
            Redirect::parse("ASK 12 [::1]:7002", asked),
            Some(Redirect::Ask {
                slot: 12,
                address: "[::1]:7002".into()
            })
        );
        assert_eq!(
            Redirect::parse("MOVED 5 :7003", asked),
            Some(Redirect::Moved {
                slot: 5,
                address: "10.0.0.5:7003".into()
            })
        );
        for other in [
            "NOPERM this user has no permissions to run the 'hgetall' command",
            "connection refused",
            "MOVED 16384 127.0.0.1:6381",
            "MOVED 1 127.0.0.1",
            "ASKED 1 127.0.0.1:1",
            "CLUSTERDOWN The cluster is down",
        ] {
            assert_eq!(Redirect::parse(other, asked), None, "{other}");
        }
    }
}
