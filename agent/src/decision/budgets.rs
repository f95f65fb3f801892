//! Budgets and rate limits as token buckets, per identity and budget: a
//! bucket holds up to `limit` and refills at `limit` per window, so a
//! budget of 20,000 per day admits at most 20,000 in any 24 hours once
//! drained, and refills gradually rather than all at midnight.

use std::{collections::HashMap, sync::Mutex, time::Instant};

use crate::policy::{Window, decide::BudgetCharge};

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
        identity: &str,
        c: &BudgetCharge,
        now: Instant,
    ) -> &'a mut Bucket {
        let b = map
            .entry((identity.to_string(), c.budget.clone()))
            .or_insert(Bucket {
                tokens: c.limit,
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
                let b = Self::bucket(&mut map, identity, c, now);
                (c.budget.clone(), (b.limit - b.tokens).max(0.0))
            })
            .collect()
    }

    /// Take every charge, or none: `Err(budget)` names the first budget that
    /// cannot cover its charge. With `force`, charges are taken even past
    /// the limit (an approved call counts, whatever it costs).
    pub fn charge(
        &self,
        identity: &str,
        charges: &[BudgetCharge],
        force: bool,
    ) -> Result<Vec<Remaining>, String> {
        let (mut map, now) = self.locked();
        if !force {
            for c in charges {
                if Self::bucket(&mut map, identity, c, now).tokens + 1e-9 < c.amount {
                    return Err(c.budget.clone());
                }
            }
        }
        Ok(charges
            .iter()
            .map(|c| {
                let b = Self::bucket(&mut map, identity, c, now);
                b.tokens = (b.tokens - c.amount).max(0.0);
                Remaining::of(c, b.tokens)
            })
            .collect())
    }

    /// What remains, without charging (for approval-required answers).
    pub fn peek(&self, identity: &str, charges: &[BudgetCharge]) -> Vec<Remaining> {
        let (mut map, now) = self.locked();
        charges
            .iter()
            .map(|c| Remaining::of(c, Self::bucket(&mut map, identity, c, now).tokens))
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
            Err("daily".into())
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
            Err("rate".into())
        );
        let used = b.used("a", &[charge(0.0)]);
        assert!(
            used["daily"] < 1.0,
            "the daily budget was not touched by the refused call"
        );
    }
}
