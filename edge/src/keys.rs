//! The identity provider's signing keys: a static JWKS, or fetched by URL and kept process-wide.
//!
//! **Where from** ([`KeySource`]): `auth_jwks` (a JWKS document given as a variable, for offline
//! setups: never fetched), else `auth_jwks_url` (the JWKS itself), else OpenID Connect discovery from
//! `auth_issuer` alone: `GET {issuer}/.well-known/openid-configuration`, whose `issuer` must be the
//! configured one, then its `jwks_uri`. Both through Spin's outbound HTTP: the manifest allows the
//! provider's origin (`auth_provider_origin`).
//!
//! **How long** ([`KeyPolicy`]): a fetched set is fresh for the JWKS answer's `cache-control: max-age`
//! (300 s when it says none), clamped to `auth_keys_min_refresh_s`..`auth_keys_max_refresh_s`. A token
//! whose `kid` is not in the set triggers a refetch before its 401, but fetches (of any cause) start at
//! most once per `auth_keys_min_refresh_s` per process: a client cannot make the edge hammer the
//! provider with made-up `kid`s.
//!
//! **Where kept**: in the instance's memory, and, when the process-wide tier's key-value store is
//! configured (`shared_tier_store`), in it too ([`Snapshot`] under `aside:jwks`, the time of the last
//! fetch attempt under `aside:jwks:attempt`), so that every instance of the process uses the keys one of
//! them fetched (an instance looks for a newer set at most once per [`SYNC_INTERVAL`]) and the attempt
//! interval holds for the process; without the store, both hold per instance.
//!
//! **When the provider fails** (unreachable, an error status, a document that is not a usable JWKS):
//! the last good keys stay in use until `auth_keys_max_stale_s` after they were fetched, and a log line
//! says so. After that (or with no keys ever fetched) every request under `/users` answers **503** with
//! `Retry-After` ([`KeysUnavailable`]), and a log line says why: the client's token may well be valid, so
//! 401 (which tells a client to throw its token away and get another, from the provider that is down)
//! would be wrong, and the outage must show as one of the service, not as a wave of client errors.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use crate::auth::{Expectations, Verifier};
use crate::clock::{self, Deadline};
use crate::flight::SingleFlight;
pub use crate::key_policy::{DEFAULT_MAX_AGE, KeyPolicy, KeySource, max_age};
use crate::process_tier::ProcessTier;

/// The key-value key of the process's current key set.
pub const JWKS_KEY: &str = "aside:jwks";
/// The key-value key of the process's last fetch attempt, and the claim on it: wall-clock milliseconds
/// and the claiming instance's random id, each 8 bytes little-endian ([`Claim`]).
pub const ATTEMPT_KEY: &str = "aside:jwks:attempt";
/// How long an instance waits after writing its claim before reading it back: another instance that
/// decided to fetch from the same old attempt writes its own claim within this time (the two reads
/// and writes are a few key-value calls apart), and the last writer is the one both read back.
pub const CLAIM_SETTLE: Duration = Duration::from_millis(25);
/// How often an instance looks for a newer set in the store while its own is fresh.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// The largest discovery document or JWKS read.
pub const MAX_DOCUMENT_BYTES: usize = 512 * 1024;
/// The longest one fetch (discovery and JWKS) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(2);

/// A fetched key set as kept in the instance and in the key-value store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Wall-clock milliseconds of the fetch.
    pub fetched_ms: i64,
    /// Wall-clock milliseconds: fresh before this.
    pub fresh_until_ms: i64,
    /// The JWKS document as the provider sent it.
    pub jwks: String,
}

const SNAPSHOT_MAGIC: &[u8; 4] = b"asJ1";

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + self.jwks.len());
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&self.fetched_ms.to_le_bytes());
        out.extend_from_slice(&self.fresh_until_ms.to_le_bytes());
        out.extend_from_slice(self.jwks.as_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(SNAPSHOT_MAGIC)?;
        let (fetched, rest) = rest.split_first_chunk::<8>()?;
        let (fresh, rest) = rest.split_first_chunk::<8>()?;
        Some(Self {
            fetched_ms: i64::from_le_bytes(*fetched),
            fresh_until_ms: i64::from_le_bytes(*fresh),
            jwks: String::from_utf8(rest.to_vec()).ok()?,
        })
    }
}

/// A claim on the process's next fetch, as kept under [`ATTEMPT_KEY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// Wall-clock milliseconds of the attempt.
    pub at_ms: i64,
    /// The claiming instance (random, drawn once per instance).
    pub owner: u64,
}

impl Claim {
    pub fn encode(self) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&self.at_ms.to_le_bytes());
        out[8..].copy_from_slice(&self.owner.to_le_bytes());
        out
    }

    /// A claim, or (8 bytes) an attempt time without an owner, as older edges wrote it.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (at, rest) = bytes.split_first_chunk::<8>()?;
        let owner = match rest {
            [] => 0,
            rest => u64::from_le_bytes(<[u8; 8]>::try_from(rest).ok()?),
        };
        Some(Self {
            at_ms: i64::from_le_bytes(*at),
            owner,
        })
    }
}

/// What the edge does about its keys for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The keys it has are fine.
    Use,
    /// Fetch (fresh keys are due, or a `kid` is unknown) and the interval allows it.
    Fetch,
    /// A fetch is due but the last attempt was too recent: use what it has, if not too old.
    Wait,
}

/// Decides, at `now_ms`, with the keys fetched at `fetched_ms` (fresh until `fresh_until_ms`), the last
/// attempt at `last_attempt_ms` and whether a token's `kid` was not found.
pub fn plan(
    now_ms: i64,
    current: Option<(i64, i64)>,
    last_attempt_ms: Option<i64>,
    unknown_kid: bool,
    policy: &KeyPolicy,
) -> Plan {
    let fresh = current.is_some_and(|(_, fresh_until)| now_ms < fresh_until);
    if fresh && !unknown_kid {
        return Plan::Use;
    }
    let interval = millis(policy.min_refresh);
    match last_attempt_ms {
        Some(at) if now_ms.saturating_sub(at) < interval && now_ms >= at => Plan::Wait,
        _ => Plan::Fetch,
    }
}

/// Whether keys fetched at `fetched_ms` may still be used at `now_ms`.
pub fn usable(now_ms: i64, fetched_ms: i64, policy: &KeyPolicy) -> bool {
    now_ms < fetched_ms.saturating_add(millis(policy.max_stale))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// No keys to check tokens with: the provider cannot be reached (or answers garbage) and the last good
/// keys, if any, are older than `auth_keys_max_stale_s`. Answered with 503 and this `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeysUnavailable {
    pub retry_after_secs: u32,
}

/// The keys in use by this instance.
struct Current {
    verifier: Rc<Verifier>,
    fetched_ms: i64,
    fresh_until_ms: i64,
}

/// The instance's handle on the keys.
pub struct Keys {
    source: KeySource,
    policy: KeyPolicy,
    expectations: Expectations,
    shared: Option<Rc<ProcessTier>>,
    current: RefCell<Option<Current>>,
    last_attempt_ms: Cell<Option<i64>>,
    /// When the instance last looked at the store's set (wall-clock milliseconds).
    synced_ms: Cell<i64>,
    /// The instance's fetch in progress; its result: `Some(at)` when another instance of the process
    /// claimed the fetch (at `at`) and this one left it to that one.
    fetching: Rc<SingleFlight<(), Option<i64>>>,
    /// This instance's id in its claims.
    owner: u64,
}

impl Keys {
    pub fn new(
        source: KeySource,
        policy: KeyPolicy,
        expectations: Expectations,
        shared: Option<Rc<ProcessTier>>,
    ) -> Self {
        Self {
            source,
            policy,
            expectations,
            shared: shared.filter(|s| s.is_on()),
            current: RefCell::new(None),
            last_attempt_ms: Cell::new(None),
            synced_ms: Cell::new(i64::MIN),
            fetching: Rc::default(),
            owner: spin_sdk::wasip3::random::random::get_random_u64().max(1),
        }
    }

    /// Whether the keys are fetched (not a static `auth_jwks`).
    pub fn is_fetched(&self) -> bool {
        !matches!(self.source, KeySource::Static(_))
    }

    /// The key set to verify with. `unknown_kid`: a token named this `kid`, which the set in hand does
    /// not hold, so a newer set is looked for (in the store, then at the provider, if the interval
    /// allows).
    pub async fn verifier(
        &self,
        deadline: Deadline,
        unknown_kid: Option<&str>,
    ) -> Result<Rc<Verifier>, KeysUnavailable> {
        if let KeySource::Static(verifier) = &self.source {
            return Ok(Rc::clone(verifier));
        }
        let unknown = unknown_kid.is_some();
        let now_ms = clock::wall_ms();
        // With the store, another instance's newer set (a rotation it fetched) is taken up within
        // SYNC_INTERVAL, even while this instance's own set is still fresh.
        if self.shared.is_some()
            && now_ms.saturating_sub(self.synced_ms.get()) >= millis(SYNC_INTERVAL)
        {
            self.synced_ms.set(now_ms);
            self.adopt_shared(deadline).await;
        }
        if self.plan(now_ms, unknown) == Plan::Use {
            return self.usable(now_ms);
        }
        // Another instance of the process may have fetched a newer set.
        self.adopt_shared(deadline).await;
        let now_ms = clock::wall_ms();
        let fresh_now = self.plan(now_ms, false) == Plan::Use;
        let has_kid = unknown_kid.is_none_or(|kid| {
            self.current
                .borrow()
                .as_ref()
                .is_some_and(|c| c.verifier.has_kid(kid))
        });
        if fresh_now && has_kid {
            return self.usable(now_ms);
        }
        let last = match self.plan(now_ms, unknown) {
            Plan::Fetch => self.last_attempt(deadline).await,
            _ => self.last_attempt_ms.get(),
        };
        let may_fetch = self.plan(now_ms, unknown) == Plan::Fetch
            && last
                .is_none_or(|at| plan(now_ms, None, Some(at), true, &self.policy) == Plan::Fetch);
        if may_fetch {
            let fetching = Rc::clone(&self.fetching);
            let (lost_to, _) = fetching.run((), || self.refresh(deadline)).await;
            // Another instance claimed this fetch: the set it brings is in the store moments later.
            // Waited for when this request needs it: a `kid` not in hand, or no usable keys at all (a
            // new process, whose instances all start at once).
            if let Some(at) = lost_to
                && (unknown_kid.is_some() || self.usable(clock::wall_ms()).is_err())
            {
                self.await_fetch(unknown_kid, at, deadline).await;
            }
        } else if let (Some(kid), Some(at)) = (unknown_kid, last)
            && now_ms.saturating_sub(at) < millis(FETCH_TIMEOUT)
        {
            // A fetch started moments ago (here or by another instance) may bring the kid: a token
            // signed with a key just added must not be refused while the set that has it is on its way.
            self.await_fetch(Some(kid), at, deadline).await;
        }
        self.usable(clock::wall_ms())
    }

    /// Waits (polling) for the fetch that started at `at` to bring a set (with `kid`, when given), until
    /// a set fetched since `at` is in hand, the fetch's time is up, or the request's budget is.
    async fn await_fetch(&self, kid: Option<&str>, at: i64, deadline: Deadline) {
        const POLL: Duration = Duration::from_millis(10);
        let until = at.saturating_add(millis(FETCH_TIMEOUT));
        while clock::wall_ms() < until && deadline.cap(POLL) == POLL {
            spin_sdk::time::sleep(POLL).await;
            self.adopt_shared(deadline).await;
            let done =
                self.current.borrow().as_ref().is_some_and(|c| {
                    kid.is_some_and(|k| c.verifier.has_kid(k)) || c.fetched_ms >= at
                });
            if done {
                return;
            }
        }
    }

    fn plan(&self, now_ms: i64, unknown_kid: bool) -> Plan {
        let current = self
            .current
            .borrow()
            .as_ref()
            .map(|c| (c.fetched_ms, c.fresh_until_ms));
        plan(
            now_ms,
            current,
            self.last_attempt_ms.get(),
            unknown_kid,
            &self.policy,
        )
    }

    /// The keys in hand if not older than the maximum age.
    fn usable(&self, now_ms: i64) -> Result<Rc<Verifier>, KeysUnavailable> {
        match &*self.current.borrow() {
            Some(c) if usable(now_ms, c.fetched_ms, &self.policy) => Ok(Rc::clone(&c.verifier)),
            _ => Err(KeysUnavailable {
                retry_after_secs: u32::try_from(self.policy.min_refresh.as_secs())
                    .unwrap_or(u32::MAX)
                    .max(1),
            }),
        }
    }

    /// Takes the store's set when it is newer than the instance's.
    async fn adopt_shared(&self, deadline: Deadline) {
        let Some(shared) = &self.shared else { return };
        let limit = deadline.cap(FETCH_TIMEOUT);
        let Some(Some(bytes)) = shared.get_raw(JWKS_KEY, limit).await else {
            return;
        };
        let Some(snapshot) = Snapshot::decode(&bytes) else {
            return;
        };
        let newer = self
            .current
            .borrow()
            .as_ref()
            .is_none_or(|c| snapshot.fetched_ms > c.fetched_ms);
        if !newer {
            return;
        }
        if let Ok(verifier) = Verifier::from_jwks(&snapshot.jwks, self.expectations.clone()) {
            *self.current.borrow_mut() = Some(Current {
                verifier: Rc::new(verifier),
                fetched_ms: snapshot.fetched_ms,
                fresh_until_ms: snapshot.fresh_until_ms,
            });
        }
    }

    /// The process's last attempt (the store's, else the instance's).
    async fn last_attempt(&self, deadline: Deadline) -> Option<i64> {
        let own = self.last_attempt_ms.get();
        let Some(shared) = &self.shared else {
            return own;
        };
        let stored = self.stored_claim(shared, deadline).await.map(|c| c.at_ms);
        own.max(stored)
    }

    async fn stored_claim(&self, shared: &ProcessTier, deadline: Deadline) -> Option<Claim> {
        shared
            .get_raw(ATTEMPT_KEY, deadline.cap(FETCH_TIMEOUT))
            .await
            .flatten()
            .and_then(|b| Claim::decode(&b))
    }

    /// Claims the process's next fetch: writes this instance's claim, waits [`CLAIM_SETTLE`] for any
    /// instance that decided to fetch at the same time to write its own, and reads the claim back.
    /// `None`: this instance fetches; `Some(at)`: another instance's claim (made at `at`) stands. The
    /// key-value store has no compare-and-set, so two instances can still both fetch when one's read
    /// of the old attempt and its write of the claim are more than `CLAIM_SETTLE` apart (a stalled
    /// instance); the count is then two, never more than the instances so stalled. A store that does
    /// not answer: this instance fetches (the interval then holds per instance).
    async fn claim(&self, shared: &ProcessTier, at_ms: i64, deadline: Deadline) -> Option<i64> {
        let mine = Claim {
            at_ms,
            owner: self.owner,
        };
        if !shared
            .set_raw(ATTEMPT_KEY, &mine.encode(), deadline.cap(FETCH_TIMEOUT))
            .await
        {
            return None;
        }
        if deadline.cap(CLAIM_SETTLE) == CLAIM_SETTLE {
            spin_sdk::time::sleep(CLAIM_SETTLE).await;
        }
        match self.stored_claim(shared, deadline).await {
            Some(stored) if stored.owner != self.owner && stored.owner != 0 => {
                self.last_attempt_ms.set(Some(stored.at_ms));
                Some(stored.at_ms)
            }
            _ => None,
        }
    }

    /// One fetch attempt: claims it (instance and store), fetches, and keeps the set on success.
    /// `Some(at)`: another instance's claim (made at `at`) stood, and this one did not fetch.
    async fn refresh(&self, deadline: Deadline) -> Option<i64> {
        let started_ms = clock::wall_ms();
        self.last_attempt_ms.set(Some(started_ms));
        if let Some(shared) = &self.shared
            && let Some(winner_at) = self.claim(shared, started_ms, deadline).await
        {
            return Some(winner_at);
        }
        let fetch = Self::fetch(self.source.clone(), self.expectations.clone());
        let result = clock::within(FETCH_TIMEOUT, fetch).await;
        let now_ms = clock::wall_ms();
        let fetched = match result {
            Some(Ok(fetched)) => fetched,
            Some(Err(why)) => {
                self.failed(now_ms, &why);
                return None;
            }
            None => {
                self.failed(
                    now_ms,
                    &format!("no answer within {} ms", FETCH_TIMEOUT.as_millis()),
                );
                return None;
            }
        };
        let fresh_for = self.policy.fresh_for(fetched.cache_control.as_deref());
        let snapshot = Snapshot {
            fetched_ms: now_ms,
            fresh_until_ms: now_ms.saturating_add(millis(fresh_for)),
            jwks: fetched.jwks,
        };
        eprintln!(
            "aside-edge: auth: fetched {} signing key(s) (kid {}) from {}; fresh for {} s",
            fetched.verifier.key_count(),
            fetched.verifier.kids().join(", "),
            fetched.url,
            fresh_for.as_secs()
        );
        if let Some(shared) = &self.shared {
            shared
                .set_raw(JWKS_KEY, &snapshot.encode(), deadline.cap(FETCH_TIMEOUT))
                .await;
        }
        *self.current.borrow_mut() = Some(Current {
            verifier: Rc::new(fetched.verifier),
            fetched_ms: snapshot.fetched_ms,
            fresh_until_ms: snapshot.fresh_until_ms,
        });
        None
    }

    fn failed(&self, now_ms: i64, why: &str) {
        let what = match &*self.current.borrow() {
            Some(c) if usable(now_ms, c.fetched_ms, &self.policy) => format!(
                "the keys fetched {} s ago stay in use for at most {} s more (auth_keys_max_stale_s)",
                (now_ms - c.fetched_ms) / 1000,
                (c.fetched_ms + millis(self.policy.max_stale) - now_ms) / 1000
            ),
            Some(_) => format!(
                "the last keys are older than auth_keys_max_stale_s ({} s): requests under /users \
                 answer 503 until a fetch succeeds",
                self.policy.max_stale.as_secs()
            ),
            None => "no keys yet: requests under /users answer 503 until a fetch succeeds".into(),
        };
        eprintln!(
            "aside-edge: auth: cannot fetch the identity provider's keys: {why}; {what}; next \
             attempt in {} s at the earliest",
            self.policy.min_refresh.as_secs()
        );
    }

    /// Discovery (when configured) and the JWKS.
    /// Fetches the key set (owning what it needs: a late fetch is left to finish, never cancelled;
    /// see crate::clock).
    async fn fetch(source: KeySource, expectations: Expectations) -> Result<Fetched, String> {
        let url = match &source {
            KeySource::Static(_) => return Err("static keys are not fetched".into()),
            KeySource::JwksUrl(url) => url.clone(),
            KeySource::Discovery => {
                let issuer = &expectations.issuer;
                let url = discovery_url(issuer);
                let (status, body, _) = get(&url).await?;
                if status != 200 {
                    return Err(format!("{url} answered {status}"));
                }
                jwks_uri(&body, issuer).map_err(|e| format!("{url}: {e}"))?
            }
        };
        let (status, body, cache_control) = get(&url).await?;
        if status != 200 {
            return Err(format!("{url} answered {status}"));
        }
        let jwks = String::from_utf8(body).map_err(|_| format!("{url}: not UTF-8 text"))?;
        let verifier = Verifier::from_jwks(&jwks, expectations.clone())
            .map_err(|e| format!("{url}: not a usable JWKS: expected {}", e.expected()))?;
        Ok(Fetched {
            url,
            jwks,
            verifier,
            cache_control,
        })
    }
}

struct Fetched {
    url: String,
    jwks: String,
    verifier: Verifier,
    cache_control: Option<String>,
}

/// `{issuer}/.well-known/openid-configuration` (OpenID Connect Discovery 1.0, section 4).
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// The `jwks_uri` of a discovery document whose `issuer` is `issuer` (section 4.3: it must be
/// identical).
pub fn jwks_uri(document: &[u8], issuer: &str) -> Result<String, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(document).map_err(|_| "not a JSON discovery document")?;
    let said = doc.get("issuer").and_then(serde_json::Value::as_str);
    if said != Some(issuer) {
        return Err(format!(
            "the discovery document's issuer is {said:?}, not the configured auth_issuer"
        ));
    }
    let uri = doc
        .get("jwks_uri")
        .and_then(serde_json::Value::as_str)
        .ok_or("the discovery document has no jwks_uri")?;
    if !(uri.starts_with("https://") || uri.starts_with("http://")) {
        return Err("the discovery document's jwks_uri is not an http(s) URL".into());
    }
    Ok(uri.to_string())
}

/// One GET: status, body (at most [`MAX_DOCUMENT_BYTES`]) and `cache-control`.
async fn get(url: &str) -> Result<(u16, Vec<u8>, Option<String>), String> {
    use spin_sdk::http::body::IncomingBodyExt;
    let request = http::Request::builder()
        .method(http::Method::GET)
        .uri(url)
        .header(http::header::ACCEPT, "application/json")
        .body(spin_sdk::http::FullBody::new(bytes::Bytes::new()))
        .map_err(|e| format!("{url}: {e}"))?;
    let answer = spin_sdk::http::send(request)
        .await
        .map_err(|e| format!("{url}: {e} (is its origin in auth_provider_origin?)"))?;
    let (parts, body) = answer.into_parts();
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_DOCUMENT_BYTES) {
        return Err(format!("{url}: larger than {MAX_DOCUMENT_BYTES} bytes"));
    }
    let body = body.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    if body.len() > MAX_DOCUMENT_BYTES {
        return Err(format!("{url}: larger than {MAX_DOCUMENT_BYTES} bytes"));
    }
    let cache_control = parts
        .headers
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok((parts.status.as_u16(), body.to_vec(), cache_control))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> KeyPolicy {
        KeyPolicy {
            min_refresh: Duration::from_secs(60),
            max_refresh: Duration::from_secs(3600),
            max_stale: Duration::from_secs(86_400),
        }
    }

    #[test]
    fn max_age_is_read_and_clamped() {
        let p = policy();
        assert_eq!(
            max_age(Some("public, max-age=600")),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age(Some("no-store")), Some(Duration::ZERO));
        assert_eq!(max_age(Some("public")), None);
        assert_eq!(max_age(None), None);
        assert_eq!(p.fresh_for(Some("max-age=600")), Duration::from_secs(600));
        assert_eq!(p.fresh_for(Some("max-age=5")), Duration::from_secs(60));
        assert_eq!(
            p.fresh_for(Some("max-age=999999")),
            Duration::from_secs(3600)
        );
        assert_eq!(p.fresh_for(Some("no-cache")), Duration::from_secs(60));
        assert_eq!(p.fresh_for(None), DEFAULT_MAX_AGE);
        assert_eq!(p.fresh_for(Some("max-age=junk")), DEFAULT_MAX_AGE);
    }

    #[test]
    fn fetches_start_at_most_once_per_interval() {
        let p = policy();
        let fresh = Some((0, 100_000));
        assert_eq!(plan(50_000, fresh, Some(0), false, &p), Plan::Use);
        // An unknown kid while fresh: a refetch, unless one started within the interval.
        assert_eq!(plan(50_000, fresh, Some(0), true, &p), Plan::Wait);
        assert_eq!(plan(61_000, fresh, Some(0), true, &p), Plan::Fetch);
        // Past freshness: a fetch, unless the last attempt (a failure) was too recent.
        assert_eq!(plan(100_000, fresh, Some(0), false, &p), Plan::Fetch);
        assert_eq!(plan(100_000, fresh, Some(90_000), false, &p), Plan::Wait);
        assert_eq!(plan(0, None, None, false, &p), Plan::Fetch);
        // A clock that went back is not a reason to wait forever.
        assert_eq!(plan(100_000, fresh, Some(500_000), false, &p), Plan::Fetch);
    }

    #[test]
    fn claims_round_trip_and_read_an_older_edge_s_attempt() {
        let claim = Claim {
            at_ms: 1_765_000_000_123,
            owner: 0xdead_beef_0042,
        };
        assert_eq!(Claim::decode(&claim.encode()), Some(claim));
        assert_eq!(
            Claim::decode(&77_i64.to_le_bytes()),
            Some(Claim {
                at_ms: 77,
                owner: 0
            })
        );
        for bad in [&b""[..], b"1234567", b"123456789", &[0; 17]] {
            assert_eq!(Claim::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn old_keys_serve_until_the_maximum_age() {
        let p = policy();
        assert!(usable(86_399_999, 0, &p));
        assert!(!usable(86_400_000, 0, &p));
    }

    #[test]
    fn snapshots_round_trip() {
        let s = Snapshot {
            fetched_ms: 1,
            fresh_until_ms: 2,
            jwks: r#"{"keys":[]}"#.into(),
        };
        assert_eq!(Snapshot::decode(&s.encode()), Some(s));
        assert_eq!(Snapshot::decode(b"asJ1short"), None);
        assert_eq!(Snapshot::decode(b"asT1........................"), None);
    }

    #[test]
    fn discovery_names_the_issuer_and_its_jwks() {
        assert_eq!(
            discovery_url("https://id.example/realms/a/"),
            "https://id.example/realms/a/.well-known/openid-configuration"
        );
        let doc = br#"{"issuer":"https://id.example","jwks_uri":"https://keys.example/jwks"}"#;
        assert_eq!(
            jwks_uri(doc, "https://id.example").unwrap(),
            "https://keys.example/jwks"
        );
        assert!(jwks_uri(doc, "https://other.example").is_err());
        assert!(jwks_uri(b"<html>", "https://id.example").is_err());
        assert!(jwks_uri(br#"{"issuer":"https://id.example"}"#, "https://id.example").is_err());
        assert!(
            jwks_uri(
                br#"{"issuer":"https://id.example","jwks_uri":"file:///etc/passwd"}"#,
                "https://id.example"
            )
            .is_err()
        );
    }
}
