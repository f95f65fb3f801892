//! The `jti` replay cache: a token id is accepted once, and remembered until
//! the token expires. Each identity has its own quota: an identity that
//! fills it has its own new tokens refused (fail closed: forgetting ids
//! would let tokens be used twice) and never touches another identity's.
//! Every id is journaled (`state`) before the token is accepted, so a
//! restarted daemon still refuses tokens used before it.

use std::{collections::HashMap, sync::Mutex};

use crate::state::{Log, Record, StateError};

/// Ids remembered per identity unless configured (`tokens.replay_per_identity`).
pub const DEFAULT_QUOTA: usize = 100_000;

/// An identity at its quota is pruned of expired ids at most this often,
/// so a full identity does not make every call walk its table.
const PRUNE_EVERY_SECS: u64 = 1;

#[derive(Default)]
struct Ids {
    exp: HashMap<u128, u64>,
    pruned_at: u64,
}

pub struct ReplayCache {
    seen: Mutex<HashMap<String, Ids>>,
    quota: usize,
    log: Log,
}

pub enum Seen {
    /// Accepted (and journaled).
    First,
    Again,
    Full,
}

impl Default for ReplayCache {
    fn default() -> Self {
        Self::new(Log::default(), DEFAULT_QUOTA)
    }
}

fn key_of(jti: &str) -> u128 {
    u128::from_str_radix(jti, 16).unwrap_or_else(|_| fold(jti))
}

impl ReplayCache {
    pub fn new(log: Log, quota: usize) -> Self {
        Self {
            seen: Mutex::new(HashMap::new()),
            quota: quota.max(1),
            log,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Ids>> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ids restored from the journal: identity → jti (hex) → exp. Expired
    /// ones are dropped.
    pub fn restore(&self, used: HashMap<String, HashMap<String, u64>>, now: u64) {
        let mut seen = self.lock();
        for (identity, ids) in used {
            let entry = seen.entry(identity).or_default();
            for (jti, exp) in ids {
                if exp >= now {
                    entry.exp.insert(key_of(&jti), exp);
                }
            }
        }
        seen.retain(|_, ids| !ids.exp.is_empty());
    }

    /// Record `jti` of a token of `identity` (valid until `exp`, unix
    /// seconds) at `now`.
    pub fn check(&self, identity: &str, jti: &str, exp: u64, now: u64) -> Result<Seen, StateError> {
        let key = key_of(jti);
        let mut seen = self.lock();
        let ids = match seen.get_mut(identity) {
            Some(ids) => ids,
            None => seen.entry(identity.to_string()).or_default(),
        };
        if let Some(prev) = ids.exp.get(&key)
            && *prev >= now
        {
            return Ok(Seen::Again);
        }
        if ids.exp.len() >= self.quota {
            if now >= ids.pruned_at + PRUNE_EVERY_SECS {
                ids.exp.retain(|_, e| *e >= now);
                ids.pruned_at = now;
            }
            if ids.exp.len() >= self.quota {
                return Ok(Seen::Full);
            }
        }
        ids.exp.insert(key, exp);
        let seq = self.log.append(|| Record::Used {
            identity: identity.to_string(),
            jti: format!("{key:032x}"),
            exp,
        })?;
        drop(seen);
        self.log.durable(seq)?;
        Ok(Seen::First)
    }

    /// Whether `jti` was recorded for `identity` and is still remembered.
    pub fn contains(&self, identity: &str, jti: &str, now: u64) -> bool {
        self.lock()
            .get(identity)
            .and_then(|ids| ids.exp.get(&key_of(jti)))
            .is_some_and(|e| *e >= now)
    }

    /// Forget ids whose tokens expired before `now`.
    pub fn prune(&self, now: u64) {
        let mut seen = self.lock();
        for ids in seen.values_mut() {
            ids.exp.retain(|_, e| *e >= now);
            ids.pruned_at = now;
        }
        seen.retain(|_, ids| !ids.exp.is_empty());
    }

    /// Every remembered id, as journal records.
    pub fn snapshot(&self) -> Vec<Record> {
        let seen = self.lock();
        seen.iter()
            .flat_map(|(identity, ids)| {
                ids.exp.iter().map(move |(key, exp)| Record::Used {
                    identity: identity.clone(),
                    jti: format!("{key:032x}"),
                    exp: *exp,
                })
            })
            .collect()
    }

    /// Ids remembered for `identity`.
    pub fn len_of(&self, identity: &str) -> usize {
        self.lock().get(identity).map_or(0, |ids| ids.exp.len())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_at_its_quota_is_refused_alone() {
        let c = ReplayCache::new(Log::default(), 3);
        for i in 0..3 {
            assert!(matches!(
                c.check("flood", &format!("{i:x}"), 100, 10),
                Ok(Seen::First)
            ));
        }
        assert!(matches!(c.check("flood", "ff", 100, 10), Ok(Seen::Full)));
        assert!(matches!(c.check("flood", "1", 100, 10), Ok(Seen::Again)));
        // Another identity is untouched by the full one.
        assert!(matches!(c.check("calm", "ff", 100, 10), Ok(Seen::First)));
        assert!(c.contains("calm", "ff", 10));
        assert!(!c.contains("flood", "ff", 10));
        // Once the flood's own ids expire, it may go on.
        assert!(matches!(c.check("flood", "fe", 200, 101), Ok(Seen::First)));
        assert_eq!(c.len_of("flood"), 1);
    }

    #[test]
    fn snapshot_and_restore_keep_live_ids() {
        let c = ReplayCache::default();
        assert!(matches!(c.check("a", "abc", 100, 10), Ok(Seen::First)));
        assert!(matches!(c.check("a", "not-hex", 5, 1), Ok(Seen::First)));
        let mut used: HashMap<String, HashMap<String, u64>> = HashMap::new();
        for r in c.snapshot() {
            if let Record::Used { identity, jti, exp } = r {
                used.entry(identity).or_default().insert(jti, exp);
            }
        }
        let d = ReplayCache::default();
        d.restore(used, 10);
        assert!(matches!(d.check("a", "abc", 100, 10), Ok(Seen::Again)));
        // Expired before the restore: forgotten.
        assert!(!d.contains("a", "not-hex", 10));
    }
}
