//! Verified tokens, remembered: a token whose signature and claims were checked once is not checked
//! again in this process until it expires, or until `auth_token_cache_s` after it was checked, whichever
//! comes first (the revocation trade-off in docs/security.md).
//!
//! The key is the SHA-256 of the **whole** token as the client sent it (header, claims and signature):
//! a token changed in any byte is another key, so it is verified from scratch; nothing a client can
//! vary selects an entry but the exact token. What is kept is what the verification concluded (the
//! caller: subject, own profile, scopes), the token's `exp`, and the `kid` of the key that verified it:
//! an entry is used only while that key is still in the current key set, so a key the provider
//! removed stops its remembered tokens as soon as the edge has fetched the new set. Tokens without a
//! `kid` are not remembered (a set without `kid`s cannot say which key is gone).
//!
//! Two levels, both bounded:
//! * the instance's memory ([`TokenCache`]): at most `auth_token_cache_entries` entries, the oldest
//!   dropped first;
//! * with the process-wide tier's key-value store configured (`shared_tier_store`), a direct-mapped
//!   table of the same number of slots, `aside:tok:{slot}`, shared by every instance of the process
//!   ([`SlotToken`]): a fill overwrites the slot, a value that does not decode or holds another hash is
//!   a miss. Its own namespace (`aside:tok:`), apart from the profile slots.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use aside_shared::{ApiError, ErrorCode, UserId};
use sha2::{Digest, Sha256};

use crate::auth::{Caller, Invalid, MAX_TOKEN_BYTES, Rejected, Scopes};
use crate::clock::{self, Deadline};
use crate::config::AuthSettings;
use crate::keys::{Keys, KeysUnavailable};
use crate::process_tier::ProcessTier;

/// The longest a look-up of a remembered token in the key-value store may take.
const STORE_LIMIT: Duration = Duration::from_millis(100);

/// Why a request's token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 401: the token (or its absence).
    Token(Rejected),
    /// 503: no keys to check it with (see [`crate::keys`]).
    NoKeys(KeysUnavailable),
}

impl From<Rejected> for Refusal {
    fn from(r: Rejected) -> Self {
        Refusal::Token(r)
    }
}

impl KeysUnavailable {
    /// The 503 body (with `Retry-After`).
    pub fn error(self) -> ApiError {
        let mut error = ApiError::new(
            ErrorCode::Unavailable,
            "client tokens cannot be checked now: the identity provider's signing keys cannot be \
             fetched; retry later",
        );
        error.retry_after_secs = Some(self.retry_after_secs);
        error
    }
}

/// The instance's client check: the keys, and the verified tokens it remembers.
pub struct Authenticator {
    settings: Rc<AuthSettings>,
    keys: Keys,
    memory: RefCell<TokenCache>,
    shared: Option<Rc<ProcessTier>>,
    /// How long each signature check since the last answer took (ms): the next answers report one
    /// each (`server-timing: auth_verify`), so a run shows how often tokens are verified, not remembered.
    verified: RefCell<Vec<f64>>,
}

impl Authenticator {
    pub fn new(settings: Rc<AuthSettings>, shared: Rc<ProcessTier>) -> Self {
        let shared = Some(shared).filter(|s| s.is_on());
        Self {
            keys: Keys::new(
                settings.source.clone(),
                settings.policy,
                settings.expectations.clone(),
                shared.clone(),
            ),
            memory: RefCell::new(TokenCache::new(settings.token_cache_entries as usize)),
            shared,
            settings,
            verified: RefCell::default(),
        }
    }

    /// One signature check since the last call and how long it took (ms), for `server-timing`.
    pub fn take_verified(&self) -> Option<f64> {
        self.verified.borrow_mut().pop()
    }

    /// Who `token` speaks for: remembered (this instance, then the process's store), else verified
    /// (and then remembered). An unknown `kid` looks for newer keys once before the 401.
    pub async fn check(&self, token: &str, deadline: Deadline) -> Result<Rc<Caller>, Refusal> {
        let verifier = self
            .keys
            .verifier(deadline, None)
            .await
            .map_err(Refusal::NoKeys)?;
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(Rejected::Invalid(Invalid::Malformed).into());
        }
        let remembering =
            self.settings.token_cache_entries > 0 && !self.settings.token_cache_max_age.is_zero();
        let hash = hash(token);
        let now_ms = clock::wall_ms();
        if remembering {
            let found = self.memory.borrow_mut().get(&hash, now_ms);
            if let Some(r) = found.filter(|r| verifier.has_kid(&r.kid)) {
                return Ok(r.caller);
            }
            if let Some(r) = self
                .remembered_by_process(&hash, deadline)
                .await
                .filter(|r| r.is_live(now_ms) && verifier.has_kid(&r.kid))
            {
                self.memory.borrow_mut().put(hash, r.clone());
                return Ok(r.caller);
            }
        }
        let verifying = clock::now();
        let verified = match verifier.verify_full(token) {
            Err(Rejected::Invalid(Invalid::UnknownKey)) if self.keys.is_fetched() => {
                let kid = jsonwebtoken::decode_header(token)
                    .ok()
                    .and_then(|h| h.kid)
                    .unwrap_or_default();
                let newer = self
                    .keys
                    .verifier(deadline, Some(&kid))
                    .await
                    .map_err(Refusal::NoKeys)?;
                newer.verify_full(token)
            }
            other => other,
        };
        {
            let mut checks = self.verified.borrow_mut();
            if checks.len() < 64 {
                checks.push(clock::millis_since(verifying));
            }
        }
        let verified = verified?;
        let caller = Rc::new(verified.caller);
        if let (true, Some(kid)) = (remembering, verified.kid) {
            let max_age =
                i64::try_from(self.settings.token_cache_max_age.as_millis()).unwrap_or(i64::MAX);
            let remembered = Remembered {
                caller: Rc::clone(&caller),
                until_ms: Remembered::until(now_ms, verified.expires_at, max_age),
                kid,
            };
            if remembered.is_live(now_ms) {
                self.memory.borrow_mut().put(hash, remembered.clone());
                if let Some(shared) = &self.shared {
                    let slot = SlotToken { hash, remembered };
                    shared
                        .set_raw(
                            &slot_key(&hash, self.settings.token_cache_entries),
                            &slot.encode(),
                            deadline.cap(STORE_LIMIT),
                        )
                        .await;
                }
            }
        }
        Ok(caller)
    }

    /// The process's remembered verification of `hash`, if its slot holds exactly this hash.
    async fn remembered_by_process(
        &self,
        hash: &TokenHash,
        deadline: Deadline,
    ) -> Option<Remembered> {
        let shared = self.shared.as_ref()?;
        let key = slot_key(hash, self.settings.token_cache_entries);
        let bytes = shared.get_raw(&key, deadline.cap(STORE_LIMIT)).await??;
        SlotToken::decode(&bytes)
            .filter(|slot| slot.hash == *hash)
            .map(|slot| slot.remembered)
    }
}

/// SHA-256 of the whole token.
pub type TokenHash = [u8; 32];

pub fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// What a verification concluded, and until when it may be reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    pub caller: Rc<Caller>,
    /// Wall-clock milliseconds: reused before this (the token's `exp`, or the cache's maximum age).
    pub until_ms: i64,
    /// The key that verified it.
    pub kid: String,
}

impl Remembered {
    /// Until when a token verified at `now_ms` that expires at `expires_at` (seconds) may be reused:
    /// `min(exp, now + max_age)`.
    pub fn until(now_ms: i64, expires_at: i64, max_age_ms: i64) -> i64 {
        expires_at
            .saturating_mul(1000)
            .min(now_ms.saturating_add(max_age_ms))
    }

    pub fn is_live(&self, now_ms: i64) -> bool {
        now_ms < self.until_ms
    }
}

/// The instance's verified tokens: at most `max_entries`, oldest first out.
#[derive(Debug)]
pub struct TokenCache {
    entries: HashMap<TokenHash, Remembered>,
    order: VecDeque<TokenHash>,
    max_entries: usize,
}

impl TokenCache {
    pub fn new(max_entries: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            max_entries,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The live entry for `hash`; an expired one is dropped.
    pub fn get(&mut self, hash: &TokenHash, now_ms: i64) -> Option<Remembered> {
        let entry = self.entries.get(hash)?;
        if entry.is_live(now_ms) {
            return Some(entry.clone());
        }
        self.entries.remove(hash);
        None
    }

    /// Remembers `entry` (replacing any entry for `hash`), dropping the oldest entries beyond the bound.
    pub fn put(&mut self, hash: TokenHash, entry: Remembered) {
        if self.max_entries == 0 {
            return;
        }
        if self.entries.insert(hash, entry).is_none() {
            self.order.push_back(hash);
        }
        while self.entries.len() > self.max_entries {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        // Hashes dropped on expiry stay in `order` until they reach the front; keep it bounded too.
        if self.order.len() > self.max_entries.saturating_mul(2) {
            let entries = &self.entries;
            self.order.retain(|h| entries.contains_key(h));
        }
    }
}

/// The first bytes of a remembered token in the key-value store.
const MAGIC: &[u8; 4] = b"asK1";

/// The key of the slot a token hash lives in.
pub fn slot_key(hash: &TokenHash, slots: u32) -> String {
    let n = u32::from_le_bytes([hash[0], hash[1], hash[2], hash[3]]);
    format!("aside:tok:{}", n % slots.max(1))
}

/// A remembered token as stored in its slot: magic, the whole hash, until, kid, caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotToken {
    pub hash: TokenHash,
    pub remembered: Remembered,
}

impl SlotToken {
    pub fn encode(&self) -> Vec<u8> {
        let r = &self.remembered;
        let caller = &r.caller;
        let mut out = Vec::with_capacity(64 + r.kid.len() + caller.subject.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.hash);
        out.extend_from_slice(&r.until_ms.to_le_bytes());
        let user = caller.user_id.map_or(-1, |id| i64::from(id.get()));
        out.extend_from_slice(&user.to_le_bytes());
        let scopes = caller.scopes;
        out.push(
            u8::from(scopes.read) | (u8::from(scopes.write) << 1) | (u8::from(scopes.admin) << 2),
        );
        for text in [r.kid.as_bytes(), caller.subject.as_bytes()] {
            out.extend_from_slice(&(text.len().min(u16::MAX as usize) as u16).to_le_bytes());
            out.extend_from_slice(&text[..text.len().min(u16::MAX as usize)]);
        }
        out
    }

    /// The value in `bytes` if [`SlotToken::encode`] wrote it; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let (hash, rest) = rest.split_first_chunk::<32>()?;
        let (until, rest) = rest.split_first_chunk::<8>()?;
        let (user, rest) = rest.split_first_chunk::<8>()?;
        let (scopes, mut rest) = rest.split_first()?;
        let mut text = || -> Option<String> {
            let (len, tail) = rest.split_first_chunk::<2>()?;
            let len = u16::from_le_bytes(*len) as usize;
            let (value, tail) = tail.split_at_checked(len)?;
            rest = tail;
            String::from_utf8(value.to_vec()).ok()
        };
        let kid = text()?;
        let subject = text()?;
        if !rest.is_empty() || *scopes > 0b111 || subject.is_empty() {
            return None;
        }
        let user = i64::from_le_bytes(*user);
        let user_id = match user {
            -1 => None,
            n => Some(UserId::try_from(n).ok()?),
        };
        Some(Self {
            hash: *hash,
            remembered: Remembered {
                caller: Rc::new(Caller {
                    subject,
                    user_id,
                    scopes: Scopes {
                        read: scopes & 1 != 0,
                        write: scopes & 2 != 0,
                        admin: scopes & 4 != 0,
                    },
                }),
                until_ms: i64::from_le_bytes(*until),
                kid,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remembered(until_ms: i64) -> Remembered {
        Remembered {
            caller: Rc::new(Caller {
                subject: "ana".into(),
                user_id: Some(UserId::try_from(7).unwrap()),
                scopes: Scopes {
                    read: true,
                    write: false,
                    admin: true,
                },
            }),
            until_ms,
            kid: "k1".into(),
        }
    }

    #[test]
    fn the_key_is_the_whole_token() {
        let token = "aaa.bbb.ccc";
        assert_eq!(hash(token), hash("aaa.bbb.ccc"));
        assert_ne!(
            hash(token),
            hash("aaa.bbb.ccd"),
            "one byte of the signature"
        );
        assert_ne!(hash(token), hash("aaa.bbb.ccc "));
    }

    #[test]
    fn entries_live_until_exp_or_the_maximum_age() {
        assert_eq!(Remembered::until(1_000_000, 2_000, 300_000), 1_300_000);
        assert_eq!(Remembered::until(1_000_000, 1_100, 300_000), 1_100_000);
        let mut cache = TokenCache::new(10);
        cache.put(hash("t"), remembered(5_000));
        assert!(cache.get(&hash("t"), 4_999).is_some());
        assert!(cache.get(&hash("t"), 5_000).is_none(), "expired");
        assert!(cache.is_empty(), "an expired entry is dropped");
        assert!(cache.get(&hash("u"), 0).is_none());
    }

    #[test]
    fn the_cache_is_bounded_oldest_out() {
        let mut cache = TokenCache::new(3);
        for t in ["a", "b", "c", "d"] {
            cache.put(hash(t), remembered(i64::MAX));
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&hash("a"), 0).is_none());
        assert!(cache.get(&hash("d"), 0).is_some());
        for i in 0..1000 {
            cache.put(hash(&i.to_string()), remembered(i64::MAX));
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.order.len() <= 6);
        assert!(TokenCache::new(0).is_empty());
        let mut off = TokenCache::new(0);
        off.put(hash("a"), remembered(i64::MAX));
        assert!(off.get(&hash("a"), 0).is_none());
    }

    #[test]
    fn slots_round_trip_and_refuse_anything_else() {
        let slot = SlotToken {
            hash: hash("t"),
            remembered: remembered(123),
        };
        let bytes = slot.encode();
        assert_eq!(SlotToken::decode(&bytes), Some(slot.clone()));
        let mut no_user = slot.clone();
        Rc::make_mut(&mut no_user.remembered.caller).user_id = None;
        assert_eq!(SlotToken::decode(&no_user.encode()), Some(no_user));
        for cut in 0..bytes.len() {
            assert_eq!(SlotToken::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(SlotToken::decode(&longer), None);
        assert_eq!(SlotToken::decode(b"asT1 a profile slot"), None);
        assert!(slot_key(&hash("t"), 16).starts_with("aside:tok:"));
        let n: u32 = slot_key(&hash("t"), 16)[10..].parse().unwrap();
        assert!(n < 16);
    }
}
