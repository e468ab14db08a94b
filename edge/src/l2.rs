//! Tier 2: read-only profile lookups in Redis through Spin's Redis binding (`spin:redis/redis@3.0.0`).
//!
//! The edge's Redis user may only read (`HGETALL`, `HMGET`, ...), so both reads go through
//! `Connection::execute`. One connection per instance is opened on first use and kept: Spin reuses
//! instances, so this saves a connect and an `AUTH` per request. A failure of any kind (cannot connect,
//! command error, slower than `redis_timeout_ms` or than what is left of the request's budget) drops the
//! connection and counts towards the breaker ([`crate::backoff`]): after `redis_failure_threshold`
//! consecutive failures the next requests go straight to the origin until a probe succeeds.
//! A hash that is missing or does not parse is a plain miss: it says nothing about Redis's health.

use std::cell::RefCell;
use std::rc::Rc;

use std::time::Duration;

use aside_shared::cache::{
    CacheEntry, Freshness, Projection, hmget_fields, profile_key, projection_from_hmget,
};
use aside_shared::{CachedProfile, FieldSelection, UserId};
use spin_sdk::redis::{Connection, Error, RedisParameter, RedisResult};

use crate::backoff::{Attempt, Breaker, Transition, Visible};
use crate::clock;
use crate::config::Config;
use crate::flight::SingleFlight;

/// The outcome of one tier-2 read.
#[derive(Debug)]
pub enum Read<T> {
    Hit(T),
    /// Not cached, or cached in a shape the edge cannot use.
    Miss,
    /// Redis says the id has no profile: a "missing" marker or a tombstone (answered 404).
    Absent,
    /// Redis was not asked (breaker open, or no budget left).
    Skipped,
    /// Redis failed or was too slow; the back-off has started.
    Failed,
}

impl<T> Read<T> {
    /// Whether Redis was visited (for `server-timing`).
    pub fn visited(&self) -> bool {
        !matches!(self, Read::Skipped)
    }

    /// The same outcome with the hit's value mapped by `f`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Read<U> {
        match self {
            Read::Hit(value) => Read::Hit(f(value)),
            Read::Miss => Read::Miss,
            Read::Absent => Read::Absent,
            Read::Skipped => Read::Skipped,
            Read::Failed => Read::Failed,
        }
    }
}

/// The instance's Redis client state.
pub struct Redis {
    config: Rc<Config>,
    connection: RefCell<Option<Rc<Connection>>>,
    /// Concurrent requests that find no connection open one together.
    opening: Rc<SingleFlight<(), Option<Rc<Connection>>>>,
    breaker: RefCell<Breaker>,
}

/// Why a command did not produce a usable reply.
enum Failure {
    Connect,
    Command(String),
    TimedOut,
}

impl Redis {
    pub fn new(config: Rc<Config>) -> Self {
        let settings = config.redis_breaker;
        Self {
            config,
            connection: RefCell::new(None),
            opening: Rc::default(),
            breaker: RefCell::new(Breaker::new(settings.threshold, settings.backoff)),
        }
    }

    /// The breaker's state, for `x-edge-breaker`.
    pub fn breaker(&self) -> Visible {
        self.breaker.borrow().visible()
    }

    /// `HGETALL user:profile:{id}`, parsed into the full profile; at most `limit`.
    pub async fn read_profile(&self, id: UserId, limit: Duration) -> Read<CachedProfile> {
        let key = profile_key(id).into_bytes();
        match self
            .execute("HGETALL", vec![RedisParameter::Binary(key)], limit)
            .await
        {
            Read::Hit(reply) => match hash_entries(reply).map(|e| CacheEntry::from_hash(id, e)) {
                Some(Ok(CacheEntry::Present(cached))) => Read::Hit(cached),
                Some(Ok(CacheEntry::Missing(_) | CacheEntry::Deleted(_))) => Read::Absent,
                Some(Err(_)) | None => Read::Miss,
            },
            Read::Miss => Read::Miss,
            Read::Absent => Read::Absent,
            Read::Skipped => Read::Skipped,
            Read::Failed => Read::Failed,
        }
    }

    /// A non-blocking `XREAD COUNT <count> STREAMS aside:feed <after>` of the invalidation feed
    /// ([`crate::feed`]): the reply as Spin flattens it, nils as `None` (`Ok(vec![])`-like when there is
    /// nothing new); at most `limit`. `Err(true)` when Redis answered with a data error (the key is not a
    /// stream), `Err(false)` when Redis failed or was skipped.
    pub async fn read_feed(
        &self,
        after: &str,
        count: usize,
        limit: Duration,
    ) -> Result<Vec<Option<Vec<u8>>>, bool> {
        let arguments = [
            b"COUNT".to_vec(),
            count.to_string().into_bytes(),
            b"STREAMS".to_vec(),
            aside_shared::feed::FEED_KEY.as_bytes().to_vec(),
            after.as_bytes().to_vec(),
        ]
        .into_iter()
        .map(RedisParameter::Binary)
        .collect();
        match self.execute("XREAD", arguments, limit).await {
            Read::Hit(reply) => Ok(reply.into_iter().map(bytes_of).collect()),
            Read::Miss => Err(true),
            Read::Absent | Read::Skipped | Read::Failed => Err(false),
        }
    }

    /// `HMGET user:profile:{id} <fields> _version _state _fresh_until _delta_ms`, as the `?fields` JSON
    /// answer, the version it was taken from and its freshness; at most `limit`.
    pub async fn read_fields(
        &self,
        id: UserId,
        selection: &FieldSelection,
        limit: Duration,
    ) -> Read<(serde_json::Value, i64, Option<Freshness>)> {
        let mut arguments = vec![RedisParameter::Binary(profile_key(id).into_bytes())];
        arguments.extend(
            hmget_fields(selection)
                .into_iter()
                .map(|f| RedisParameter::Binary(f.as_bytes().to_vec())),
        );
        match self.execute("HMGET", arguments, limit).await {
            Read::Hit(reply) => match projection_from_hmget(id, selection, &hmget_values(reply)) {
                Ok(Projection::Present {
                    body,
                    version,
                    freshness,
                }) => Read::Hit((body, version, freshness)),
                Ok(Projection::Absent) => Read::Absent,
                Err(_) => Read::Miss,
            },
            Read::Miss => Read::Miss,
            Read::Absent => Read::Absent,
            Read::Skipped => Read::Skipped,
            Read::Failed => Read::Failed,
        }
    }

    /// Runs one command under the breaker and the timeout (`limit`, the smaller of `redis_timeout_ms`
    /// and what is left of the request's budget). `Miss` here means "Redis answered with a data error"
    /// (a key of the wrong type): reachable, but nothing to use.
    async fn execute(
        &self,
        command: &str,
        arguments: Vec<RedisParameter>,
        limit: Duration,
    ) -> Read<Vec<RedisResult>> {
        if limit.is_zero() {
            return Read::Skipped;
        }
        let Some(permit) = Attempt::start(&self.breaker, clock::now()) else {
            return Read::Skipped;
        };
        let attempt = clock::within(limit, async {
            let connection = self.connection().await.ok_or(Failure::Connect)?;
            match connection.execute(command, arguments).await {
                Ok(reply) => Ok(Some(reply)),
                Err(e) if is_data_error(&e) => Ok(None),
                Err(e) => Err(Failure::Command(describe(&e))),
            }
        })
        .await
        .unwrap_or(Err(Failure::TimedOut));

        let ok = attempt.is_ok();
        let transition = permit.finish(ok, clock::now());
        match transition {
            Some(Transition::Opened) => eprintln!(
                "aside-edge: redis breaker open after {} consecutive failure(s): skipping Redis for {} \
                 ms, then one request probes it",
                self.breaker.borrow().threshold(),
                self.config.redis_breaker.backoff.as_millis()
            ),
            Some(Transition::Closed) => {
                eprintln!("aside-edge: redis breaker closed: the probe succeeded")
            }
            None => {}
        }
        match attempt {
            Ok(Some(reply)) => Read::Hit(reply),
            Ok(None) => Read::Miss,
            Err(failure) => {
                // Whatever state the connection is in, it is not trusted again.
                self.connection.borrow_mut().take();
                let why = match failure {
                    Failure::Connect => "cannot connect".to_string(),
                    Failure::Command(e) => format!("{command} failed: {}", self.config.scrub(&e)),
                    Failure::TimedOut => {
                        format!("{command} took longer than {} ms", limit.as_millis())
                    }
                };
                eprintln!(
                    "aside-edge: redis {why}; going to the origin (redis breaker: {})",
                    self.breaker.borrow().visible().as_str()
                );
                Read::Failed
            }
        }
    }

    /// The open connection, opening one if there is none.
    async fn connection(&self) -> Option<Rc<Connection>> {
        if let Some(open) = self.connection.borrow().as_ref() {
            return Some(Rc::clone(open));
        }
        let (connection, _) = self
            .opening
            .run((), || async {
                match Connection::open(&self.config.redis_url).await {
                    Ok(c) => {
                        let c = Rc::new(c);
                        *self.connection.borrow_mut() = Some(Rc::clone(&c));
                        Some(c)
                    }
                    Err(e) => {
                        eprintln!(
                            "aside-edge: redis connection failed: {}",
                            self.config.scrub(&describe(&e))
                        );
                        None
                    }
                }
            })
            .await;
        connection
    }
}

/// `HGETALL`'s reply as field/value pairs. Spin flattens the reply into one list (field, value, field,
/// value, ...); anything else (odd length, a non-string element) is `None`, a miss.
fn hash_entries(reply: Vec<RedisResult>) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if !reply.len().is_multiple_of(2) {
        return None;
    }
    let mut items = reply.into_iter().map(bytes_of);
    let mut entries = Vec::with_capacity(items.len() / 2);
    while let (Some(field), Some(value)) = (items.next(), items.next()) {
        entries.push((field?, value?));
    }
    Some(entries)
}

/// `HMGET`'s reply as one optional value per field asked for. A host that drops nils shortens the list,
/// which `projection_from_hmget` refuses (a miss), as it does a nil.
fn hmget_values(reply: Vec<RedisResult>) -> Vec<Option<Vec<u8>>> {
    reply.into_iter().map(bytes_of).collect()
}

fn bytes_of(result: RedisResult) -> Option<Vec<u8>> {
    match result {
        RedisResult::Binary(b) => Some(b),
        RedisResult::Status(s) => Some(s.into_bytes()),
        RedisResult::Int64(n) => Some(n.to_string().into_bytes()),
        RedisResult::Nil => None,
    }
}

/// A reply about the key's data rather than about Redis: `WRONGTYPE` (a key that is not a hash).
fn is_data_error(e: &Error) -> bool {
    match e {
        Error::TypeError => true,
        Error::Other(message) => message.contains("WRONGTYPE"),
        _ => false,
    }
}

fn describe(e: &Error) -> String {
    match e {
        Error::InvalidAddress => "invalid address".to_string(),
        Error::TooManyConnections => "too many connections".to_string(),
        Error::TypeError => "type error".to_string(),
        Error::Other(message) => message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use aside_shared::HashError;

    use super::*;

    fn bin(s: &str) -> RedisResult {
        RedisResult::Binary(s.as_bytes().to_vec())
    }

    fn hash_reply() -> Vec<RedisResult> {
        [
            ("full_name", "Ana Silva"),
            ("gender", "F"),
            ("birth_date", "1980-01-02"),
            ("department", "Sales"),
            ("email", "ana.silva@fake-devops-db.internal"),
            ("username", "ana.silva"),
            ("_version", "4"),
            ("_filled_at", "1700000000000"),
        ]
        .into_iter()
        .flat_map(|(k, v)| [bin(k), bin(v)])
        .collect()
    }

    #[test]
    fn a_flat_hgetall_reply_parses_into_a_profile() {
        let id = UserId::parse("3").unwrap();
        let entries = hash_entries(hash_reply()).unwrap();
        let cached = CachedProfile::from_hash(id, entries).unwrap();
        assert_eq!(cached.version, 4);
        assert_eq!(cached.profile.username.as_str(), "ana.silva");
    }

    #[test]
    fn a_marker_or_a_tombstone_parses_as_absent() {
        let id = UserId::parse("3").unwrap();
        for state in ["missing", "deleted"] {
            let reply = vec![
                bin("_state"),
                bin(state),
                bin("_version"),
                bin("2"),
                bin("_filled_at"),
                bin("1700000000000"),
            ];
            let entry = CacheEntry::from_hash(id, hash_entries(reply).unwrap()).unwrap();
            assert!(entry.is_absent(), "{state}");
        }
    }

    #[test]
    fn an_empty_or_odd_hgetall_reply_is_a_miss() {
        let id = UserId::parse("3").unwrap();
        let empty = hash_entries(vec![]).unwrap();
        assert_eq!(CachedProfile::from_hash(id, empty), Err(HashError::Empty));
        let mut odd = hash_reply();
        odd.pop();
        assert!(hash_entries(odd).is_none());
        let mut nil = hash_reply();
        nil[3] = RedisResult::Nil;
        assert!(hash_entries(nil).is_none());
    }

    #[test]
    fn hmget_nils_become_none_and_make_the_projection_a_miss() {
        let id = UserId::parse("3").unwrap();
        let selection = FieldSelection::parse("email").unwrap();
        let ok = hmget_values(vec![
            bin("ana.silva@fake-devops-db.internal"),
            bin("4"),
            RedisResult::Nil,
            RedisResult::Nil,
            RedisResult::Nil,
        ]);
        assert_eq!(
            projection_from_hmget(id, &selection, &ok).unwrap(),
            Projection::Present {
                body: serde_json::json!({"id": 3, "email": "ana.silva@fake-devops-db.internal"}),
                version: 4,
                freshness: None,
            }
        );
        let marker = hmget_values(vec![
            RedisResult::Nil,
            bin("0"),
            bin("missing"),
            RedisResult::Nil,
            RedisResult::Nil,
        ]);
        assert_eq!(
            projection_from_hmget(id, &selection, &marker).unwrap(),
            Projection::Absent
        );
        let missing = hmget_values((0..5).map(|_| RedisResult::Nil).collect());
        assert_eq!(missing, vec![None; 5]);
        assert!(projection_from_hmget(id, &selection, &missing).is_err());
        // A host that drops nils instead of passing them: wrong arity, also a miss.
        assert!(projection_from_hmget(id, &selection, &hmget_values(vec![bin("4")])).is_err());
    }

    #[test]
    fn only_wrong_type_replies_are_data_errors() {
        assert!(is_data_error(&Error::TypeError));
        assert!(is_data_error(&Error::Other(
            "WRONGTYPE: Operation against a key holding the wrong kind of value".into()
        )));
        assert!(!is_data_error(&Error::Other(
            "NOPERM this user has no permissions".into()
        )));
        assert!(!is_data_error(&Error::Other("connection refused".into())));
        assert!(!is_data_error(&Error::InvalidAddress));
    }
}
