//! The `jti` replay cache: a token id is accepted once, and remembered until
//! the token expires. Bounded: when full, new tokens are refused (fail
//! closed) rather than forgotten.

use std::{collections::HashMap, sync::Mutex};

/// Most ids remembered at once (~32 bytes each).
const CAPACITY: usize = 4_000_000;

pub struct ReplayCache {
    seen: Mutex<HashMap<u128, u64>>,
}

pub enum Seen {
    First,
    Again,
    Full,
}

impl Default for ReplayCache {
    fn default() -> Self {
        Self {
            seen: Mutex::new(HashMap::new()),
        }
    }
}

impl ReplayCache {
    /// Record `jti` (valid until `exp`, unix seconds) at `now`.
    pub fn check(&self, jti: &str, exp: u64, now: u64) -> Seen {
        let key = u128::from_str_radix(jti, 16).unwrap_or_else(|_| fold(jti));
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= CAPACITY {
            seen.retain(|_, e| *e >= now);
            if seen.len() >= CAPACITY {
                return Seen::Full;
            }
        }
        match seen.insert(key, exp) {
            Some(prev) if prev >= now => Seen::Again,
            _ => Seen::First,
        }
    }

    /// Whether `jti` was recorded and is still remembered at `now`.
    pub fn contains(&self, jti: &str, now: u64) -> bool {
        let key = u128::from_str_radix(jti, 16).unwrap_or_else(|_| fold(jti));
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .is_some_and(|e| *e >= now)
    }

    /// Forget ids whose tokens expired before `now`.
    pub fn prune(&self, now: u64) {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, e| *e >= now);
    }
}

/// A stable 128-bit fold of a non-hex id (FNV-1a twice, with two seeds).
fn fold(s: &str) -> u128 {
    let h = |seed: u64| {
        s.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
    };
    (u128::from(h(0xcbf2_9ce4_8422_2325)) << 64) | u128::from(h(0x8422_2325_cbf2_9ce4))
}
