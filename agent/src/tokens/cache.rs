//! Tokens already verified, remembered until they expire so a token shown
//! again skips the signature check.
//!
//! The key is the SHA-256 of the whole token text: header, claims and
//! signature. Any change to any byte is another key, and goes through the
//! full check. (A cache keyed on the signature alone would accept a valid
//! signature under edited claims or header.) Only what depends on nothing
//! but the token's bytes, the keys and the clock is remembered: the
//! signature, `alg`, `typ`, `kid`, `iss`, `aud` and the claims. What
//! changes over time is checked on every use, cached or not: `exp` and
//! `nbf` (against the clock now), the key still being trusted (the cache
//! empties when the keys are reloaded), and outside `verify` the caller's
//! identity, revocation, the daemon's start and single use (`jti`). A
//! token that was ever refused is never cached.

use std::{
    any::Any,
    collections::HashMap,
    sync::{Arc, Mutex},
};

use sha2::{Digest, Sha256};

/// Most tokens remembered. Full means new ones are simply not cached
/// (they are verified in full each time); nothing is forgotten early.
const CAPACITY: usize = 16_384;

/// When a token is valid, for checking a cached one against the clock.
pub trait Lifetime {
    fn nbf(&self) -> u64;
    fn exp(&self) -> u64;
}

struct Entry {
    typ: &'static str,
    kid: String,
    nbf: u64,
    exp: u64,
    claims: Arc<dyn Any + Send + Sync>,
}

pub type Key = [u8; 32];

#[derive(Default)]
pub struct VerifiedCache {
    entries: Mutex<HashMap<Key, Entry>>,
}

impl VerifiedCache {
    pub fn key(token: &str) -> Key {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The claims of a token verified earlier as `typ`, if it is still
    /// within its lifetime at `now` (with `leeway`) and `trusted(kid)`.
    pub fn get<C: Clone + Send + Sync + 'static>(
        &self,
        key: &Key,
        typ: &'static str,
        now: u64,
        leeway: u64,
        trusted: impl Fn(&str) -> bool,
    ) -> Option<C> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let e = entries.get(key)?;
        let fresh = e.nbf <= now + leeway && now <= e.exp + leeway;
        if e.typ != typ || !fresh || !trusted(&e.kid) {
            return None;
        }
        e.claims.downcast_ref::<C>().cloned()
    }

    /// Remember a token that just passed every check of `verify`.
    pub fn put<C: Lifetime + Clone + Send + Sync + 'static>(
        &self,
        key: Key,
        typ: &'static str,
        kid: &str,
        claims: &C,
    ) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= CAPACITY {
            return;
        }
        entries.insert(
            key,
            Entry {
                typ,
                kid: kid.to_string(),
                nbf: claims.nbf(),
                exp: claims.exp(),
                claims: Arc::new(claims.clone()),
            },
        );
    }

    /// Forget tokens expired at `now` (with `leeway`).
    pub fn prune(&self, now: u64, leeway: u64) {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, e| now <= e.exp + leeway);
    }

    /// Forget everything (the keys changed).
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct C(u64, u64);
    impl Lifetime for C {
        fn nbf(&self) -> u64 {
            self.0
        }
        fn exp(&self) -> u64 {
            self.1
        }
    }

    #[test]
    fn a_hit_needs_the_same_type_a_trusted_key_and_the_lifetime() {
        let cache = VerifiedCache::default();
        let key = VerifiedCache::key("a.b.c");
        cache.put(key, "at+jwt", "k1", &C(100, 200));
        let get = |typ, now, kid: &'static str| cache.get::<C>(&key, typ, now, 5, |k| k == kid);
        assert_eq!(get("at+jwt", 150, "k1"), Some(C(100, 200)));
        assert_eq!(get("operator+jwt", 150, "k1"), None, "another type");
        assert_eq!(get("at+jwt", 150, "k2"), None, "a key no longer trusted");
        assert_eq!(get("at+jwt", 205, "k1"), Some(C(100, 200)), "within leeway");
        assert_eq!(get("at+jwt", 206, "k1"), None, "expired");
        assert_eq!(get("at+jwt", 94, "k1"), None, "not yet valid");
        assert_eq!(
            cache.get::<C>(&VerifiedCache::key("a.b.d"), "at+jwt", 150, 5, |_| true),
            None,
            "one byte differs"
        );
        cache.prune(206, 5);
        assert_eq!(cache.len(), 0);
    }
}
