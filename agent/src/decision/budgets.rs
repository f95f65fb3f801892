//! Budgets and rate limits as token buckets, per identity and budget: a
//! bucket holds up to `limit` and refills at `limit` per window, so a
//! budget of 20,000 per day admits at most 20,000 in any 24 hours once
//! drained, and refills gradually rather than all at midnight.
//!
//! Every charge is journaled (`state`) before it is reported, so a restart
//! resumes each bucket where it was, refilled for the time in between.

use std::{collections::HashMap, sync::Mutex, time::Instant};

use crate::{
    policy::{Window, decide::BudgetCharge},
    state::{BudgetLevel, Log, Record, StateError, record::now_ms},
};

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    limit: f64,
    per: Window,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let rate = self.limit / self.per.seconds() as f64;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(self.limit);
        self.at = now;
    }
}

/// What remains in a budget after a call.
#[derive(Debug, Clone, PartialEq)]
pub struct Remaining {
    pub budget: String,
    pub remaining: f64,
    pub limit: f64,
    pub per: Window,
    pub unit: Option<String>,
}

#[derive(Default)]
pub struct Budgets {
    buckets: Mutex<BucketMap>,
    log: Log,
    /// Unix ms from which every budget counts as spent (set when the state
    /// of that time could not be restored); `None` when nothing was lost.
    floor_ms: Option<u64>,
}

/// Why a charge was not taken.
#[derive(Debug, PartialEq)]
pub enum ChargeError {
    /// This budget cannot cover its charge.
    Exceeded(String),
    /// The charge could not be recorded (nothing is allowed on it).
    State(String),
}

impl From<StateError> for ChargeError {
    fn from(e: StateError) -> Self {
        Self::State(e.to_string())
    }
}

/// Fill of a bucket at `rate` per second over `secs`, from empty.
fn refilled(limit: f64, per: Window, secs: f64) -> f64 {
    (secs.max(0.0) * limit / per.seconds() as f64).min(limit)
}

impl Remaining {
    fn of(c: &BudgetCharge, tokens: f64) -> Self {
        Self {
            budget: c.budget.clone(),
            remaining: reported(tokens),
            limit: c.limit,
            per: c.per,
            unit: c.unit.clone(),
        }
    }
}

type BucketMap = HashMap<(String, String), Bucket>;

impl Budgets {
    /// Budgets as journaled: each level refilled for the time since it was
    /// recorded, and none above what a refill since `floor_ms` allows.
    pub fn restore(
        log: Log,
        levels: HashMap<(String, String), BudgetLevel>,
        floor_ms: Option<u64>,
    ) -> Self {
        let (now, wall) = (Instant::now(), now_ms());
        let secs_since = |ms: u64| wall.saturating_sub(ms) as f64 / 1000.0;
        let buckets = levels
            .into_iter()
            .map(|(key, l)| {
                let mut tokens =
                    (l.tokens + refilled(l.limit, l.per, secs_since(l.at_ms))).min(l.limit);
                if let Some(f) = floor_ms.filter(|f| *f > l.at_ms) {
                    tokens = tokens.min(refilled(l.limit, l.per, secs_since(f)));
                }
                let b = Bucket {
                    tokens,
                    at: now,
                    limit: l.limit,
                    per: l.per,
                };
                (key, b)
            })
            .collect();
        Self {
            buckets: Mutex::new(buckets),
            log,
            floor_ms,
        }
    }

    /// The live state as journal records: buckets that are not full, and
    /// the floor while any window could still feel it.
    pub fn snapshot(&self) -> Vec<Record> {
        let (mut map, now) = self.locked();
        let wall = now_ms();
        let mut out: Vec<Record> = map
            .iter_mut()
            .filter_map(|((identity, budget), b)| {
                b.refill(now);
                (b.tokens < b.limit).then(|| Record::Budget {
                    identity: identity.clone(),
                    budget: budget.clone(),
                    tokens: b.tokens,
                    limit: b.limit,
                    per: b.per,
                    at_ms: wall,
                })
            })
            .collect();
        if let Some(f) = self.floor_ms
            && wall.saturating_sub(f) < Window::Day.seconds() * 1000
        {
            out.push(Record::BudgetFloor { at_ms: f });
        }
        out
    }

    /// The buckets, and the instant they are refilled to.
    fn locked(&self) -> (std::sync::MutexGuard<'_, BucketMap>, Instant) {
        let map = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (map, Instant::now())
    }

    fn bucket<'a>(
        map: &'a mut BucketMap,
        floor_ms: Option<u64>,
        identity: &str,
        c: &BudgetCharge,
        now: Instant,
    ) -> &'a mut Bucket {
        let b = map
            .entry((identity.to_string(), c.budget.clone()))
            .or_insert_with(|| Bucket {
                tokens: floor_ms.map_or(c.limit, |f| {
                    refilled(c.limit, c.per, now_ms().saturating_sub(f) as f64 / 1000.0)
                }),
                at: now,
                limit: c.limit,
                per: c.per,
            });
        if b.limit != c.limit || b.per != c.per {
            // The policy changed the budget: keep what was used, within the new limit.
            let used = (b.limit - b.tokens).max(0.0);
            *b = Bucket {
                tokens: (c.limit - used).max(0.0),
                at: now,
                limit: c.limit,
                per: c.per,
            };
        }
        b.refill(now);
        b
    }

    /// How much of each budget is already used now (for the policy's
    /// `check_budgets`).
    pub fn used(&self, identity: &str, charges: &[BudgetCharge]) -> HashMap<String, f64> {
        let (mut map, now) = self.locked();
        charges
            .iter()
            .map(|c| {
                let b = Self::bucket(&mut map, self.floor_ms, identity, c, now);
                (c.budget.clone(), (b.limit - b.tokens).max(0.0))
            })
            .collect()
    }

    /// Take every charge, or none: `Exceeded(budget)` names the first
    /// budget that cannot cover its charge. With `force`, charges are taken
    /// even past the limit (an approved call counts, whatever it costs).
    /// The new levels are journaled before this returns.
    pub fn charge(
        &self,
        identity: &str,
        charges: &[BudgetCharge],
        force: bool,
    ) -> Result<Vec<Remaining>, ChargeError> {
        let (mut map, now) = self.locked();
        if !force {
            for c in charges {
                if Self::bucket(&mut map, self.floor_ms, identity, c, now).tokens + 1e-9 < c.amount
                {
                    return Err(ChargeError::Exceeded(c.budget.clone()));
                }
            }
        }
        let wall = now_ms();
        let mut out = Vec::with_capacity(charges.len());
        let mut levels = Vec::with_capacity(charges.len());
        for c in charges {
            let b = Self::bucket(&mut map, self.floor_ms, identity, c, now);
            b.tokens = (b.tokens - c.amount).max(0.0);
            levels.push((b.tokens, b.limit, b.per));
            out.push(Remaining::of(c, b.tokens));
        }
        // Written under the lock, so the journal's order per bucket is the
        // order of the charges; one write for all of them.
        let seq = self.log.append_all(|| {
            charges
                .iter()
                .zip(&levels)
                .map(|(c, (tokens, limit, per))| Record::Budget {
                    identity: identity.to_string(),
                    budget: c.budget.clone(),
                    tokens: *tokens,
                    limit: *limit,
                    per: *per,
                    at_ms: wall,
                })
                .collect()
        })?;
        drop(map);
        self.log.durable(seq)?;
        Ok(out)
    }

    /// What remains, without charging (for approval-required answers).
    pub fn peek(&self, identity: &str, charges: &[BudgetCharge]) -> Vec<Remaining> {
        let (mut map, now) = self.locked();
        charges
            .iter()
            .map(|c| {
                Remaining::of(
                    c,
                    Self::bucket(&mut map, self.floor_ms, identity, c, now).tokens,
                )
            })
            .collect()
    }
}

/// What remains, as reported to agents: rounded down to hundredths, so the
/// continuous refill never shows as noise and never overstates.
fn reported(tokens: f64) -> f64 {
    (tokens * 100.0 + 1e-6).floor() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(amount: f64) -> BudgetCharge {
        BudgetCharge {
            budget: "daily".into(),
            amount,
            limit: 20_000.0,
            per: Window::Day,
            unit: Some("USD".into()),
        }
    }

    #[test]
    fn charges_until_the_limit_then_refuses() {
        let b = Budgets::default();
        let r = b.charge("a", &[charge(15_000.0)], false).unwrap();
        assert!((r[0].remaining - 5_000.0).abs() < 1.0);
        assert_eq!(
            b.charge("a", &[charge(6_000.0)], false),
            Err(ChargeError::Exceeded("daily".into()))
        );
        assert!(b.charge("a", &[charge(4_000.0)], false).is_ok());
        // Another identity has its own bucket.
        assert!(b.charge("b", &[charge(20_000.0)], false).is_ok());
        // Forced (approved) charges count even past the limit.
        let r = b.charge("a", &[charge(9_999.0)], true).unwrap();
        assert!(r[0].remaining < 1.0);
    }

    #[test]
    fn all_or_nothing() {
        let b = Budgets::default();
        let rate = BudgetCharge {
            budget: "rate".into(),
            amount: 1.0,
            limit: 1.0,
            per: Window::Minute,
            unit: None,
        };
        b.charge("a", std::slice::from_ref(&rate), false).unwrap();
        assert_eq!(
            b.charge("a", &[charge(10.0), rate], false),
            Err(ChargeError::Exceeded("rate".into()))
        );
        let used = b.used("a", &[charge(0.0)]);
        assert!(
            used["daily"] < 1.0,
            "the daily budget was not touched by the refused call"
        );
    }

    #[test]
    fn restored_levels_refill_for_the_time_between_and_a_floor_spends_all() {
        let b = Budgets::default();
        b.charge("a", &[charge(15_000.0)], false).unwrap();
        let mut levels = HashMap::new();
        for r in b.snapshot() {
            if let Record::Budget {
                identity,
                budget,
                tokens,
                limit,
                per,
                at_ms,
            } = r
            {
                levels.insert(
                    (identity, budget),
                    BudgetLevel {
                        tokens,
                        limit,
                        per,
                        at_ms,
                    },
                );
            }
        }
        let left = |b: &Budgets, who: &str| b.peek(who, &[charge(0.0)])[0].remaining;
        let back = Budgets::restore(Log::default(), levels.clone(), None);
        assert!((left(&back, "a") - 5_000.0).abs() < 1.0);
        assert!((left(&back, "b") - 20_000.0).abs() < 1.0);
        // Recorded an hour ago: an hour's refill (20,000 / 24) on top.
        for l in levels.values_mut() {
            l.at_ms -= 3_600_000;
        }
        let later = Budgets::restore(Log::default(), levels.clone(), None);
        assert!(
            (left(&later, "a") - 5_833.33).abs() < 2.0,
            "{}",
            left(&later, "a")
        );
        // Lost state: everything counts as spent now, even budgets never
        // recorded, and the floor outlives the next restart.
        let floored = Budgets::restore(Log::default(), levels, Some(now_ms()));
        assert!(left(&floored, "a") < 1.0);
        assert!(left(&floored, "b") < 1.0);
        assert!(
            floored
                .snapshot()
                .iter()
                .any(|r| matches!(r, Record::BudgetFloor { .. }))
        );
    }
}
