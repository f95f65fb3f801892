//! Prometheus metrics. Kernel-side numbers (verdict counters, ring-buffer
//! losses) are read from the maps at scrape time (`collect`); everything
//! userspace records goes through the small API below, which the decision
//! API, the DNS proxy and approvals call:
//!
//! ```ignore
//! daemon.metrics.record_decision(&Decision { identity, tool, verdict, latency });
//! daemon.metrics.set_dns_learned(identity, addresses);
//! daemon.metrics.set_pending_approvals(n);
//! daemon.metrics.set_policy_kpis(PolicyKpis::of(&policy, &daemon.metrics.tools_asked()));
//! ```
//!
//! Labels that come from requests (tool names) are capped: past
//! `MAX_TOOLS` distinct tools, new ones are counted as `_other`, so an
//! agent cannot blow up the daemon's memory or the monitoring system.

pub mod collect;
mod config;
mod expo;
pub mod gateway;
pub mod server;

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

pub use config::MetricsConfig;
pub use expo::{Exposition, Kind};

/// Distinct `tool` label values kept before new ones become `_other`.
pub const MAX_TOOLS: usize = 512;
/// Longest label value kept (longer ones are cut).
const MAX_LABEL: usize = 128;

/// Upper bounds of the decision latency histogram, in seconds.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// One decision of the decision API, as metrics see it.
#[derive(Clone, Copy, Debug)]
pub struct Decision<'a> {
    pub identity: &'a str,
    pub tool: &'a str,
    /// `allow`, `deny`, `audit` (would deny, shadow mode), `approval_required`.
    pub verdict: &'a str,
    /// From request received to answer ready.
    pub latency: Duration,
}

/// Seed KPIs a security team reports, computed by the policy code.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyKpis {
    /// Identities in the active policy.
    pub identities: u64,
    /// Of those, identities with an active break-glass elevation now (set
    /// by the daemon from its elevations; the policy alone says 0).
    pub elevated_identities: u64,
    /// Tools the decision API has been asked about.
    pub tools: u64,
    /// Of those, tools some policy rule covers.
    pub covered_tools: u64,
}

impl PolicyKpis {
    /// The KPIs of `policy`, given the tools agents have asked about.
    pub fn of(policy: &crate::policy::Policy, tools_asked: &[String]) -> Self {
        let covered = tools_asked
            .iter()
            .filter(|tool| {
                policy
                    .identities
                    .iter()
                    .any(|i| i.tools.all().any(|r| r.tool.matches(tool)))
            })
            .count();
        Self {
            identities: policy.identities.len() as u64,
            elevated_identities: 0,
            tools: tools_asked.len() as u64,
            covered_tools: covered as u64,
        }
    }
}

#[derive(Debug, Default)]
struct Histogram {
    /// Per bucket (not cumulative); the last slot is +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Userspace metrics of one daemon.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Decision API verdicts: tool → verdict → count.
    decisions: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    latency: Histogram,
    /// Would-deny decisions (verdict `audit`) per identity.
    decision_drift: Mutex<BTreeMap<String, u64>>,
    dns_learned: Mutex<BTreeMap<String, u64>>,
    pending_approvals: AtomicU64,
    kpis: Mutex<PolicyKpis>,
    reloads_applied: AtomicU64,
    reloads_rejected: AtomicU64,
    last_reload: Mutex<Option<(SystemTime, bool)>>,
    /// Guard links found detached, replaced or unpinned, by finding.
    guard_repairs: Mutex<BTreeMap<String, u64>>,
    /// Requests through the L7 gateway.
    pub gateway: gateway::GatewayMetrics,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn label(s: &str) -> String {
    truncated(s).to_string()
}

/// `s` cut to `MAX_LABEL` characters.
fn truncated(s: &str) -> &str {
    s.char_indices()
        .nth(MAX_LABEL)
        .map_or(s, |(at, _)| &s[..at])
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Count a decision by tool and verdict and observe its latency.
    pub fn record_decision(&self, d: &Decision<'_>) {
        {
            // Counted without allocating once a tool and verdict are known:
            // this runs on every `Decide`.
            let mut map = lock(&self.decisions);
            let mut tool = truncated(d.tool);
            if !map.contains_key(tool) && map.len() >= MAX_TOOLS {
                tool = "_other";
            }
            let verdicts = match map.get_mut(tool) {
                Some(v) => v,
                None => map.entry(tool.to_string()).or_default(),
            };
            match verdicts.get_mut(truncated(d.verdict)) {
                Some(n) => *n += 1,
                None => {
                    verdicts.insert(label(d.verdict), 1);
                }
            }
        }
        self.latency.observe(d.latency);
        if d.verdict == "audit" {
            *lock(&self.decision_drift)
                .entry(label(d.identity))
                .or_default() += 1;
        }
    }

    /// Addresses the DNS proxy has learned for an identity (0 forgets it).
    pub fn set_dns_learned(&self, identity: &str, addresses: u64) {
        let mut map = lock(&self.dns_learned);
        if addresses == 0 {
            map.remove(identity);
        } else {
            map.insert(label(identity), addresses);
        }
    }

    /// Approval requests waiting for a human.
    pub fn set_pending_approvals(&self, n: u64) {
        self.pending_approvals.store(n, Ordering::Relaxed);
    }

    pub fn set_policy_kpis(&self, kpis: PolicyKpis) {
        *lock(&self.kpis) = kpis;
    }

    /// Set only the identity count (on every policy apply), keeping what
    /// the decision code set.
    pub fn set_policy_identities(&self, identities: u64) {
        lock(&self.kpis).identities = identities;
    }

    /// The distinct tools decisions were asked about (past the label cap,
    /// the rest are not named).
    pub fn tools_asked(&self) -> Vec<String> {
        lock(&self.decisions)
            .keys()
            .filter(|t| *t != "_other")
            .cloned()
            .collect()
    }

    /// The outcome of a policy reload.
    pub fn record_reload(&self, ok: bool) {
        if ok {
            self.reloads_applied.fetch_add(1, Ordering::Relaxed);
        } else {
            self.reloads_rejected.fetch_add(1, Ordering::Relaxed);
        }
        *lock(&self.last_reload) = Some((SystemTime::now(), ok));
    }

    /// A guard link found detached, replaced or unpinned (and repaired).
    pub fn record_guard_repair(&self, finding: &str) {
        *lock(&self.guard_repairs).entry(label(finding)).or_default() += 1;
    }

    /// Guard links repaired since start, all findings.
    pub fn guard_repairs(&self) -> u64 {
        lock(&self.guard_repairs).values().sum()
    }

    /// Write this module's families.
    pub fn render(&self, out: &mut Exposition) {
        out.family(
            "palisade_guard_repairs_total",
            "Guard links found detached, with another program or unpinned, and repaired, by finding.",
            Kind::Counter,
        );
        for finding in ["detached", "program-replaced", "pin-removed"] {
            let n = lock(&self.guard_repairs).get(finding).copied().unwrap_or(0);
            out.sample("palisade_guard_repairs_total", &[("finding", finding)], n);
        }
        out.family(
            "palisade_decisions_total",
            "Decision API verdicts by tool and verdict.",
            Kind::Counter,
        );
        for (tool, verdicts) in lock(&self.decisions).iter() {
            for (verdict, n) in verdicts {
                out.sample(
                    "palisade_decisions_total",
                    &[("tool", tool), ("verdict", verdict)],
                    *n,
                );
            }
        }
        out.family(
            "palisade_decision_duration_seconds",
            "Time from a decision request to its answer.",
            Kind::Histogram,
        );
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.latency.buckets[i].load(Ordering::Relaxed);
            out.sample_f(
                "palisade_decision_duration_seconds_bucket",
                &[("le", &expo::float(*bound))],
                cumulative as f64,
            );
        }
        cumulative += self.latency.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        out.sample(
            "palisade_decision_duration_seconds_bucket",
            &[("le", "+Inf")],
            cumulative,
        );
        out.sample_f(
            "palisade_decision_duration_seconds_sum",
            &[],
            self.latency.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        );
        out.sample(
            "palisade_decision_duration_seconds_count",
            &[],
            self.latency.count.load(Ordering::Relaxed),
        );

        out.family(
            "palisade_dns_learned_addresses",
            "Addresses the DNS proxy has learned and allows, per identity.",
            Kind::Gauge,
        );
        for (identity, n) in lock(&self.dns_learned).iter() {
            out.sample(
                "palisade_dns_learned_addresses",
                &[("identity", identity)],
                *n,
            );
        }
        out.family(
            "palisade_approvals_pending",
            "Approval requests waiting for a human.",
            Kind::Gauge,
        );
        out.sample(
            "palisade_approvals_pending",
            &[],
            self.pending_approvals.load(Ordering::Relaxed),
        );

        let kpis = *lock(&self.kpis);
        for (name, help, value) in [
            (
                "palisade_kpi_identities",
                "Identities in the active policy.",
                kpis.identities,
            ),
            (
                "palisade_kpi_identities_elevated",
                "Identities with an active break-glass elevation now.",
                kpis.elevated_identities,
            ),
            (
                "palisade_kpi_tools",
                "Tools the decision API has been asked about.",
                kpis.tools,
            ),
            (
                "palisade_kpi_tools_covered",
                "Tools that a policy rule covers.",
                kpis.covered_tools,
            ),
        ] {
            out.family(name, help, Kind::Gauge);
            out.sample(name, &[], value);
        }

        out.family(
            "palisade_policy_reloads_total",
            "Policy reloads by result.",
            Kind::Counter,
        );
        out.sample(
            "palisade_policy_reloads_total",
            &[("result", "applied")],
            self.reloads_applied.load(Ordering::Relaxed),
        );
        out.sample(
            "palisade_policy_reloads_total",
            &[("result", "rejected")],
            self.reloads_rejected.load(Ordering::Relaxed),
        );
        let last = *lock(&self.last_reload);
        out.family(
            "palisade_policy_last_reload_success",
            "1 if the last reload applied, 0 if it was rejected (1 before any reload).",
            Kind::Gauge,
        );
        out.sample(
            "palisade_policy_last_reload_success",
            &[],
            u64::from(last.is_none_or(|(_, ok)| ok)),
        );
        out.family(
            "palisade_policy_last_reload_timestamp_seconds",
            "When the last reload was attempted (0 before any).",
            Kind::Gauge,
        );
        let at = last
            .and_then(|(t, _)| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        out.sample_f("palisade_policy_last_reload_timestamp_seconds", &[], at);
        self.gateway.render(out);
    }

    /// When the last reload was attempted and whether it applied.
    pub fn last_reload(&self) -> Option<(SystemTime, bool)> {
        *lock(&self.last_reload)
    }

    /// Would-deny decisions per identity, for the drift family.
    pub fn decision_drift(&self) -> BTreeMap<String, u64> {
        lock(&self.decision_drift).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_latency_and_caps() {
        let m = Metrics::new();
        for (tool, verdict, micros) in [
            ("stripe.create_payment", "allow", 80),
            ("stripe.create_payment", "deny", 300),
            ("stripe.create_payment", "allow", 2_000_000),
            ("db.query", "audit", 5),
        ] {
            m.record_decision(&Decision {
                identity: "finance",
                tool,
                verdict,
                latency: Duration::from_micros(micros),
            });
        }
        for i in 0..MAX_TOOLS + 10 {
            m.record_decision(&Decision {
                identity: "x",
                tool: &format!("t{i}"),
                verdict: "allow",
                latency: Duration::ZERO,
            });
        }
        m.set_dns_learned("finance", 3);
        m.set_pending_approvals(2);
        m.record_reload(false);
        let mut out = Exposition::new();
        m.render(&mut out);
        let text = out.finish();
        for line in [
            "palisade_decisions_total{tool=\"stripe.create_payment\",verdict=\"allow\"} 2",
            "palisade_decisions_total{tool=\"db.query\",verdict=\"audit\"} 1",
            "palisade_decisions_total{tool=\"_other\",verdict=\"allow\"} 12",
            "palisade_decision_duration_seconds_bucket{le=\"0.0001\"} 524",
            "palisade_decision_duration_seconds_bucket{le=\"0.0005\"} 525",
            "palisade_decision_duration_seconds_bucket{le=\"1\"} 525",
            "palisade_decision_duration_seconds_bucket{le=\"+Inf\"} 526",
            "palisade_decision_duration_seconds_count 526",
            "palisade_dns_learned_addresses{identity=\"finance\"} 3",
            "palisade_approvals_pending 2",
            "palisade_policy_reloads_total{result=\"rejected\"} 1",
            "palisade_policy_last_reload_success 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in\n{text}"
            );
        }
        assert_eq!(m.decision_drift().get("finance"), Some(&1));
    }
}
