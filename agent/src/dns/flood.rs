//! Keeping a lookup flood out of the trail: a process can ask thousands of
//! distinct names a second, and one record each would fill the disk (and
//! every export) with its noise. Per identity and period, the first
//! `RECORDS_PER_PERIOD` lookups are recorded one by one; the rest are
//! counted by verdict and reason, with a few of their names, and written
//! as one aggregate record per verdict and reason when the period ends.
//! Every lookup is still counted: the individual records plus the `count`s
//! of the aggregate records add up to the lookups made.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, SystemTime},
};

use crate::audit::{AggregateDetail, AuditEvent, EventKind};

/// Length of a period.
pub const PERIOD: Duration = Duration::from_secs(10);
/// Lookup records one identity writes one by one per period.
pub const RECORDS_PER_PERIOD: u32 = 200;
/// Names an aggregate record quotes.
const SAMPLES: usize = 5;

#[derive(Default)]
pub struct LookupBudget {
    by_identity: Mutex<HashMap<String, Period>>,
}

struct Period {
    started: SystemTime,
    recorded: u32,
    /// (verdict, reason) → what went over the budget.
    over: BTreeMap<(String, String), Over>,
}

struct Over {
    count: u64,
    first: SystemTime,
    last: SystemTime,
    samples: Vec<String>,
    policy_version: Option<String>,
}

impl LookupBudget {
    /// The record to write now, or `None` when it was counted instead.
    pub fn admit(&self, ev: AuditEvent, now: SystemTime) -> Option<AuditEvent> {
        let who = ev.identity.clone().unwrap_or_default();
        let mut all = self
            .by_identity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let period = all.entry(who).or_insert_with(|| Period {
            started: now,
            recorded: 0,
            over: BTreeMap::new(),
        });
        if period.recorded < RECORDS_PER_PERIOD {
            period.recorded += 1;
            return Some(ev);
        }
        let over = period
            .over
            .entry((ev.verdict.clone(), ev.reason.clone()))
            .or_insert_with(|| Over {
                count: 0,
                first: now,
                last: now,
                samples: Vec::new(),
                policy_version: ev.policy_version.clone(),
            });
        over.count = over.count.saturating_add(1);
        over.last = now;
        if over.samples.len() < SAMPLES
            && let Some(name) = ev.dns.as_ref().map(|d| d.query.clone())
            && !name.is_empty()
            && !over.samples.contains(&name)
        {
            over.samples.push(name);
        }
        None
    }

    /// The aggregate records of the periods that have ended by `now`
    /// (of every period when `all`, at shutdown).
    pub fn drain(&self, now: SystemTime, all: bool) -> Vec<AuditEvent> {
        let mut periods = self
            .by_identity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Vec::new();
        periods.retain(|identity, p| {
            let ended = all || now.duration_since(p.started).is_ok_and(|d| d >= PERIOD);
            if !ended {
                return true;
            }
            for ((verdict, reason), o) in std::mem::take(&mut p.over) {
                out.push(aggregate_record(identity, &verdict, &reason, o));
            }
            false
        });
        out
    }
}

fn aggregate_record(identity: &str, verdict: &str, reason: &str, o: Over) -> AuditEvent {
    let rfc3339 = |t| humantime::format_rfc3339_nanos(t).to_string();
    let mut ev = AuditEvent::new(EventKind::Dns, verdict, reason);
    ev.identity = (!identity.is_empty()).then(|| identity.to_string());
    ev.policy_version = o.policy_version;
    ev.count = Some(o.count);
    ev.detail = Some(format!(
        "{} more lookups ({verdict}, {reason}) counted, not recorded one by one: the identity made more than {RECORDS_PER_PERIOD} lookups in {} s; among them: {}",
        o.count,
        PERIOD.as_secs(),
        o.samples.join(", ")
    ));
    ev.aggregate = Some(AggregateDetail {
        first: rfc3339(o.first),
        last: rfc3339(o.last),
        destinations: None,
    });
    ev
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::DnsDetail;

    fn lookup(identity: &str, name: &str) -> AuditEvent {
        let mut ev = AuditEvent::new(EventKind::Dns, "deny", "no-host-rule");
        ev.identity = Some(identity.into());
        ev.dns = Some(DnsDetail {
            query: name.into(),
            ..DnsDetail::default()
        });
        ev
    }

    #[test]
    fn a_flood_costs_a_budget_of_records_and_every_lookup_is_counted() {
        let b = LookupBudget::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let written = (0..5000)
            .filter(|i| {
                b.admit(lookup("flooder", &format!("n{i}.evil.test")), t0)
                    .is_some()
            })
            .count();
        assert_eq!(written, RECORDS_PER_PERIOD as usize);
        // Another identity has a budget of its own.
        assert!(b.admit(lookup("steady", "api.test"), t0).is_some());
        assert!(
            b.drain(t0 + Duration::from_secs(1), false).is_empty(),
            "the period runs on"
        );
        let agg = b.drain(t0 + PERIOD, false);
        assert_eq!(agg.len(), 1, "{agg:?}");
        assert_eq!(agg[0].count, Some(5000 - u64::from(RECORDS_PER_PERIOD)));
        assert_eq!(
            (agg[0].verdict.as_str(), agg[0].reason.as_str()),
            ("deny", "no-host-rule")
        );
        assert!(
            agg[0]
                .detail
                .as_deref()
                .unwrap_or_default()
                .contains("n200.evil.test")
        );
        // A new period records again.
        assert!(
            b.admit(lookup("flooder", "again.evil.test"), t0 + PERIOD)
                .is_some()
        );
    }
}
