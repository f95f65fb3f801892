//! Keeping a flood of calls out of the trail. An agent can send the
//! gateway (or `Decide`) tens of thousands of requests a second, and one
//! record each would fill the trail's disk in minutes, after which nothing
//! more is recorded. Per identity and period (`audit.calls`):
//!
//! - the first `per_identity` call records are written one by one;
//! - past that, the first call of each kind (kind, verdict, reason,
//!   service, route, tool, action, rule, status) is still written, up to
//!   `KINDS` kinds; the others are counted per kind (beyond `KINDS` kinds,
//!   per verdict and reason) and written as one aggregate record each,
//!   with `count` and `aggregate.first`/`last`, when the period ends;
//! - a call released by an approval (its record names the approver) is
//!   always written: each approval is spent once and a person gave it, so
//!   they are few, and each is worth its own record.
//!
//! Every call is still counted: the individual records plus the `count`s
//! of the aggregate records add up to the calls made. Each identity has a
//! budget of its own, so a flood by one never folds another's records.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, SystemTime},
};

use serde::Deserialize;

use super::{AggregateDetail, AuditEvent, EventKind};

/// Kinds one identity gets records of, per period, once over its budget.
pub const KINDS: usize = 64;

/// `audit.calls` in the daemon's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallRecordsConfig {
    /// Gateway requests and `Decide` calls recorded one by one, per
    /// identity and period.
    pub per_identity: u32,
    /// The period (`10s`).
    pub period: String,
}

impl Default for CallRecordsConfig {
    fn default() -> Self {
        Self {
            per_identity: 1000,
            period: "10s".into(),
        }
    }
}

/// What calls of one kind share; the aggregate record says it once.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Kind {
    kind: &'static str,
    verdict: String,
    reason: String,
    service: Option<String>,
    route: Option<String>,
    tool: Option<String>,
    action: Option<String>,
    rule: Option<String>,
    status: Option<u16>,
}

impl Kind {
    fn of(ev: &AuditEvent) -> Self {
        let http = ev.http.as_ref();
        Self {
            kind: kind_name(ev.kind),
            verdict: ev.verdict.clone(),
            reason: ev.reason.clone(),
            service: http.map(|h| h.service.clone()),
            route: http.and_then(|h| h.route_id.clone().or_else(|| h.mcp_method.clone())),
            tool: ev.call.as_ref().map(|c| c.tool.clone()),
            action: ev.call.as_ref().map(|c| c.action.clone()),
            rule: ev.rule.clone(),
            status: http.map(|h| h.status),
        }
    }

    /// Beyond `KINDS` kinds: only the verdict and reason.
    fn coarse(&self) -> Self {
        Self {
            kind: self.kind,
            verdict: self.verdict.clone(),
            reason: self.reason.clone(),
            service: None,
            route: None,
            tool: None,
            action: None,
            rule: None,
            status: None,
        }
    }
}

fn kind_name(k: EventKind) -> &'static str {
    match k {
        EventKind::Gateway => "gateway",
        EventKind::Decision => "decision",
        _ => "other",
    }
}

struct Over {
    count: u64,
    first: SystemTime,
    last: SystemTime,
    /// The first call folded, with what is its own stripped off.
    template: AuditEvent,
}

struct Period {
    started: SystemTime,
    recorded: u32,
    kinds: BTreeMap<Kind, Option<Over>>,
    /// Calls beyond `KINDS` kinds, by verdict and reason.
    rest: BTreeMap<Kind, Over>,
}

pub struct CallRecords {
    per_identity: u32,
    period: Duration,
    by_identity: Mutex<HashMap<String, Period>>,
}

impl CallRecords {
    pub fn new(per_identity: u32, period: Duration) -> Self {
        Self {
            per_identity: per_identity.max(1),
            period: period.max(Duration::from_millis(100)),
            by_identity: Mutex::new(HashMap::new()),
        }
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// The record to write now, or `None` when the call was counted instead.
    pub fn admit(&self, ev: AuditEvent, now: SystemTime) -> Option<AuditEvent> {
        if ev.call.as_ref().is_some_and(|c| c.approver.is_some()) {
            return Some(ev);
        }
        let who = ev.identity.clone().unwrap_or_default();
        let mut all = self
            .by_identity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let period = all.entry(who).or_insert_with(|| Period {
            started: now,
            recorded: 0,
            kinds: BTreeMap::new(),
            rest: BTreeMap::new(),
        });
        if period.recorded < self.per_identity {
            period.recorded += 1;
            return Some(ev);
        }
        let kind = Kind::of(&ev);
        let full = period.kinds.len() >= KINDS;
        let slot = match period.kinds.get_mut(&kind) {
            // The first of its kind over the budget: written.
            None if !full => {
                period.kinds.insert(kind, None);
                return Some(ev);
            }
            None => period
                .rest
                .entry(kind.coarse())
                .or_insert_with(|| fresh(&ev, now)),
            Some(slot) => slot.get_or_insert_with(|| fresh(&ev, now)),
        };
        slot.count = slot.count.saturating_add(1);
        slot.last = now;
        None
    }

    /// The aggregate records of the periods that have ended by `now` (of
    /// every period when `all`, at shutdown).
    pub fn drain(&self, now: SystemTime, all: bool) -> Vec<AuditEvent> {
        let mut periods = self
            .by_identity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Vec::new();
        let per = self.per_identity;
        let secs = self.period.as_secs_f64();
        periods.retain(|_, p| {
            let ended = all
                || now
                    .duration_since(p.started)
                    .is_ok_and(|d| d >= self.period);
            if !ended {
                return true;
            }
            let folded = std::mem::take(&mut p.kinds)
                .into_values()
                .flatten()
                .map(|o| (o, false));
            let rest = std::mem::take(&mut p.rest).into_values().map(|o| (o, true));
            for (o, coarse) in folded.chain(rest) {
                out.push(aggregate_record(o, coarse, per, secs));
            }
            false
        });
        out
    }
}

fn fresh(ev: &AuditEvent, now: SystemTime) -> Over {
    let mut template = ev.clone();
    // What belongs to one call only.
    template.pid = None;
    template.tid = None;
    template.comm = None;
    template.detail = None;
    template.elevation = None;
    if let Some(c) = template.call.as_mut() {
        c.resource.clear();
        c.decision_id = None;
        c.params_digest = None;
        c.params.clear();
        c.numbers.clear();
        c.jti = None;
    }
    if let Some(h) = template.http.as_mut() {
        h.upstream_status = None;
        h.bytes_in = 0;
        h.bytes_out = 0;
        h.duration_us = 0;
        h.end = "aggregate".into();
    }
    Over {
        count: 0,
        first: now,
        last: now,
        template,
    }
}

fn aggregate_record(o: Over, coarse: bool, per: u32, secs: f64) -> AuditEvent {
    let rfc3339 = |t| humantime::format_rfc3339_nanos(t).to_string();
    let mut ev = o.template;
    ev.time = rfc3339(SystemTime::now());
    if coarse {
        ev.rule = None;
        ev.call = None;
        ev.http = None;
    }
    let what = match ev.kind {
        EventKind::Gateway => "gateway requests",
        _ => "calls",
    };
    let like = if coarse {
        format!(
            "({}, {}) of kinds beyond the first {KINDS}",
            ev.verdict, ev.reason
        )
    } else {
        "like this".into()
    };
    ev.count = Some(o.count);
    ev.detail = Some(format!(
        "{} more {what} {like} counted, not recorded one by one: the identity made more than {per} in {secs} s",
        o.count
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
    use crate::audit::{CallDetail, HttpDetail};

    fn request(identity: &str, path: u32, verdict: &str, approval: bool) -> AuditEvent {
        let mut ev = AuditEvent::new(EventKind::Gateway, verdict, "denied-by-rule");
        ev.identity = Some(identity.into());
        ev.rule = Some("no-admin".into());
        ev.call = Some(CallDetail {
            tool: "pay".into(),
            action: "admin".into(),
            resource: format!("x{path}"),
            approval_id: approval.then(|| "a1".into()),
            approver: approval.then(|| "uid 0".into()),
            ..CallDetail::default()
        });
        ev.http = Some(HttpDetail {
            service: "pay".into(),
            route_id: Some("admin".into()),
            status: 403,
            ..HttpDetail::default()
        });
        ev
    }

    fn counted(written: &[AuditEvent], agg: &[AuditEvent]) -> u64 {
        written.len() as u64 + agg.iter().filter_map(|e| e.count).sum::<u64>()
    }

    #[test]
    fn a_flood_costs_a_budget_of_records_and_every_call_is_counted() {
        let r = CallRecords::new(100, Duration::from_secs(10));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let written: Vec<_> = (0..5000)
            .filter_map(|i| r.admit(request("flooder", i, "deny", false), t0))
            .collect();
        // The budget, and the first of the one kind over it.
        assert_eq!(written.len(), 101);
        // Another identity has a budget of its own.
        assert!(r.admit(request("steady", 1, "allow", false), t0).is_some());
        // A call released by an approval is always written.
        assert!(r.admit(request("flooder", 1, "allow", true), t0).is_some());
        assert!(r.drain(t0 + Duration::from_secs(1), false).is_empty());
        let agg = r.drain(t0 + Duration::from_secs(10), false);
        assert_eq!(agg.len(), 1, "{agg:?}");
        assert_eq!(counted(&written, &agg), 5000);
        assert_eq!(agg[0].rule.as_deref(), Some("no-admin"));
        assert!(agg[0].call.as_ref().is_some_and(|c| c.resource.is_empty()));
        // A new period records again.
        assert!(
            r.admit(
                request("flooder", 1, "deny", false),
                t0 + Duration::from_secs(10)
            )
            .is_some()
        );
    }

    #[test]
    fn kinds_past_the_cap_are_counted_by_verdict_and_reason() {
        let r = CallRecords::new(1, Duration::from_secs(10));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut written = Vec::new();
        for i in 0..1000u32 {
            let mut ev = request("flooder", i, "deny", false);
            if let Some(c) = ev.call.as_mut() {
                c.action = format!("a{}", i % 200);
            }
            written.extend(r.admit(ev, t0));
        }
        assert_eq!(written.len(), 1 + KINDS);
        let agg = r.drain(t0, true);
        assert_eq!(counted(&written, &agg), 1000);
        assert!(agg.len() <= KINDS + 1, "{}", agg.len());
        assert!(agg.iter().any(|e| e.call.is_none() && e.http.is_none()));
    }
}
