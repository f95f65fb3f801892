//! From the kernel's counts of repeated denials to aggregate records.
//!
//! Every `kernel.aggregate_ms` the daemon starts a new period (the programs
//! switch slot), reads what the old slot counted, writes one record per
//! kind of denial with its count (or, for an identity that was denied many
//! different things, its largest kinds and one summary), waits until the
//! records are in the trail, and only then clears the slot. A daemon that
//! dies in between leaves the slot for the next one to report, and a slot
//! whose records could not be written keeps counting: counts are never
//! lost, at worst a crash in that instant reports one period twice.

use std::{
    collections::BTreeMap,
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime},
};

use agent_common::{
    AF_INET6, Hook, NO_RULE, NormAddr, Reason, Verdict,
    aggregate::{AGG_REASONS, AggConfig, AggKey, AggOverflow, AggValue},
};
use tracing::{info, warn};

use super::{
    Daemon, DaemonError,
    kernel_events::{RecordContext, to_audit},
};
use crate::{
    audit::{AggregateDetail, AuditEvent, EventKind},
    bpf::{
        aggregate::{AggMaps, SlotCounts},
        events::{KernelEvent, boot_ns_to_wall},
    },
    policy::net::ip_of,
};

/// Kinds one identity gets a record of its own for, per period; the rest
/// share one summary record.
const KINDS_PER_IDENTITY: usize = 16;

fn plural(n: u64) -> &'static str {
    if n == 1 { "denial" } else { "denials" }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// Take the maps, report what a previous daemon left, switch aggregation
/// on and start the periods.
pub(super) async fn spawn(daemon: &Arc<Daemon>, maps: AggMaps) -> Result<(), DaemonError> {
    let maps = Arc::new(maps);
    let mut cfg = maps.config()?;
    if cfg.enabled != 0 {
        // A slot not cleared by the previous daemon (it died between
        // reading and clearing): its counts are still to be reported.
        let idle = ((cfg.period & 1) ^ 1) as u8;
        report(daemon, &maps, idle, None).await?;
    }
    cfg = AggConfig {
        enabled: 1,
        budget: daemon.config.kernel.events_per_identity,
        ..cfg
    };
    maps.set_config(&cfg)?;
    let period = Duration::from_millis(daemon.config.kernel.aggregate_ms);
    info!(
        period_ms = period.as_millis() as u64,
        events_per_identity = cfg.budget,
        "kernel denials aggregated"
    );
    let weak = Arc::downgrade(daemon);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut since = SystemTime::now();
        loop {
            tick.tick().await;
            let Some(d) = weak.upgrade() else { return };
            let until = SystemTime::now();
            let m = maps.clone();
            let ended = tokio::task::spawn_blocking(move || m.next_period()).await;
            let slot = match ended {
                Ok(Ok(slot)) => slot,
                Ok(Err(e)) => {
                    warn!(error = %e, "starting an aggregation period");
                    continue;
                }
                Err(_) => continue,
            };
            if let Err(e) = report(&d, &maps, slot, Some((since, until))).await {
                warn!(error = %e, "reporting aggregated denials");
            }
            since = until;
        }
    });
    Ok(())
}

/// Write the records of what `slot` counted, then clear it.
async fn report(
    daemon: &Daemon,
    maps: &Arc<AggMaps>,
    slot: u8,
    span: Option<(SystemTime, SystemTime)>,
) -> Result<(), DaemonError> {
    let m = maps.clone();
    let counts = tokio::task::spawn_blocking(move || m.read(slot))
        .await
        .map_err(|e| DaemonError::Config(format!("reading aggregated denials: {e}")))??;
    if counts.kinds.is_empty() && counts.overflow.is_empty() {
        return Ok(());
    }
    let records = aggregate_records(daemon, &counts, span);
    let n = records.len();
    let stats = daemon.audit.stats();
    let failed_before =
        stats.trail_lost.load(Ordering::Relaxed) + stats.dropped.load(Ordering::Relaxed);
    for r in records {
        daemon.audit.emit(r);
    }
    // Cleared only once the records are in the trail. When they could not
    // be written (a full disk), the slot keeps its counts: the programs
    // add to them again when the slot comes round, and they are reported
    // then, merged.
    daemon.audit.flush().await;
    let failed_after =
        stats.trail_lost.load(Ordering::Relaxed) + stats.dropped.load(Ordering::Relaxed);
    if failed_after > failed_before {
        warn!(
            slot,
            "aggregate records not written; their counts stay in the kernel for the next report"
        );
        return Ok(());
    }
    let m = maps.clone();
    tokio::task::spawn_blocking(move || m.clear(slot, &counts))
        .await
        .map_err(|e| DaemonError::Config(format!("clearing aggregated denials: {e}")))??;
    tracing::debug!(slot, records = n, "aggregated denials reported");
    Ok(())
}

/// One kind, as the event reader would have seen its first denial.
fn kernel_event(k: &AggKey, v: &AggValue) -> KernelEvent {
    let hook = Hook::from_u8(k.hook);
    let dst = match hook {
        Some(Hook::SockCreate | Hook::SocketLsm | Hook::SocketSyscall | Hook::Setsockopt)
        | None => None,
        Some(_) => Some((
            ip_of(&NormAddr {
                bytes: k.addr,
                is_v6: k.family == AF_INET6,
            }),
            k.port,
        )),
    };
    let len = v.comm.iter().position(|b| *b == 0).unwrap_or(v.comm.len());
    KernelEvent {
        time: boot_ns_to_wall(v.first_ns),
        cgroup_id: v.cgroup_id,
        pid: v.tgid,
        tid: v.pid,
        uid: v.uid,
        identity: k.identity,
        generation: v.generation,
        rule: (v.rule != NO_RULE).then_some(v.rule),
        hook,
        verdict: Verdict::from_u8(k.verdict),
        reason: Reason::from_u8(k.reason),
        dst,
        family: k.family,
        protocol: k.protocol,
        sock_type: k.sock_type,
        sockopt: (hook == Some(Hook::Setsockopt)).then_some((k.addr[0], k.port)),
        comm: String::from_utf8_lossy(&v.comm[..len]).into_owned(),
    }
}

/// The records of one slot: per identity, its largest kinds one by one
/// (count = denials not already recorded as an event), the rest in one
/// summary, and what overflowed by reason.
pub fn aggregate_records(
    cx: &dyn RecordContext,
    counts: &SlotCounts,
    span: Option<(SystemTime, SystemTime)>,
) -> Vec<AuditEvent> {
    let mut by_identity: BTreeMap<u32, Vec<(&AggKey, &AggValue, u64)>> = BTreeMap::new();
    for (k, v) in &counts.kinds {
        let unrecorded = v.count.saturating_sub(u64::from(v.emitted != 0));
        if unrecorded > 0 {
            by_identity
                .entry(k.identity)
                .or_default()
                .push((k, v, unrecorded));
        }
    }
    let mut out = Vec::new();
    for (identity, mut kinds) in by_identity {
        kinds.sort_by_key(|k| std::cmp::Reverse(k.2));
        let rest = kinds.split_off(kinds.len().min(KINDS_PER_IDENTITY));
        for (k, v, n) in kinds {
            let mut ev = to_audit(cx, &kernel_event(k, v));
            ev.count = Some(n);
            ev.detail = Some(format!(
                "{n} more {} like this, counted in the kernel, not recorded one by one",
                plural(n)
            ));
            ev.aggregate = Some(AggregateDetail {
                first: rfc3339(boot_ns_to_wall(v.first_ns)),
                last: rfc3339(boot_ns_to_wall(v.last_ns)),
                destinations: None,
            });
            out.push(ev);
        }
        if !rest.is_empty() {
            out.push(summary(cx, identity, &rest));
        }
    }
    for (identity, o) in &counts.overflow {
        out.extend(overflow_records(cx, *identity, o, span));
    }
    out
}

/// One record for many kinds of one identity.
fn summary(
    cx: &dyn RecordContext,
    identity: u32,
    kinds: &[(&AggKey, &AggValue, u64)],
) -> AuditEvent {
    let (k0, v0, _) = kinds[0];
    // Saturating: the counts come from maps an earlier daemon (or a layout
    // it did not expect) may have left, and a wrapped sum would under-report.
    let total = kinds
        .iter()
        .fold(0u64, |sum, (_, _, n)| sum.saturating_add(*n));
    let mut ev = to_audit(cx, &kernel_event(k0, v0));
    let first = kinds.iter().map(|(_, v, _)| v.first_ns).min().unwrap_or(0);
    let last = kinds.iter().map(|(_, v, _)| v.last_ns).max().unwrap_or(0);
    ev.dst_ip = None;
    ev.dst_port = None;
    ev.protocol = None;
    ev.rule = None;
    ev.count = Some(total);
    let top: Vec<String> = kinds
        .iter()
        .take(5)
        .map(|(k, v, n)| {
            let e = kernel_event(k, v);
            let what = match e.dst {
                Some((ip, port)) => format!("{ip}:{port}"),
                None => e.hook.map_or("socket", Hook::name).to_string(),
            };
            format!("{what} ×{n}")
        })
        .collect();
    ev.detail = Some(format!(
        "{total} more {} of identity #{identity} to {} other destinations, counted in the kernel; the largest: {}",
        plural(total),
        kinds.len(),
        top.join(", ")
    ));
    ev.aggregate = Some(AggregateDetail {
        first: rfc3339(boot_ns_to_wall(first)),
        last: rfc3339(boot_ns_to_wall(last)),
        destinations: Some(kinds.len() as u64),
    });
    ev
}

/// Denials counted without a kind (the identity's event budget for the
/// period was used up, or the table was full): one record per verdict
/// and reason.
fn overflow_records(
    cx: &dyn RecordContext,
    identity: u32,
    o: &AggOverflow,
    span: Option<(SystemTime, SystemTime)>,
) -> Vec<AuditEvent> {
    let name = cx
        .identity_name(identity)
        .unwrap_or_else(|| format!("#{identity}"));
    let (first, last) = match span {
        Some((a, b)) => (rfc3339(a), rfc3339(b)),
        // Left by an earlier daemon: when exactly is not known.
        None => {
            let now = rfc3339(SystemTime::now());
            (now.clone(), now)
        }
    };
    let mut out = Vec::new();
    for (verdict, counts) in [("deny", &o.deny), ("audit", &o.audit)] {
        for (reason, n) in counts.iter().enumerate().take(AGG_REASONS) {
            if *n == 0 {
                continue;
            }
            let reason = Reason::from_u8(reason as u8).map_or("unknown", Reason::name);
            let mut ev = AuditEvent::new(EventKind::Network, verdict, reason);
            ev.identity = Some(name.clone());
            ev.policy_version = Some(cx.active_policy().policy.version.to_string());
            ev.count = Some(*n);
            ev.detail = Some(format!(
                "{n} {} counted in the kernel without their destinations: the identity caused more than kernel.events_per_identity kinds in one period",
                plural(*n)
            ));
            ev.aggregate = Some(AggregateDetail {
                first: first.clone(),
                last: last.clone(),
                destinations: None,
            });
            out.push(ev);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::daemon::ActivePolicy;

    struct Fixed(Arc<ActivePolicy>);

    impl RecordContext for Fixed {
        fn identity_name(&self, _: u32) -> Option<String> {
            Some("finance-agent".into())
        }
        fn policy_at(&self, _: u32) -> Option<crate::daemon::Generation> {
            Some(crate::daemon::Generation::Active(self.0.clone()))
        }
        fn active_policy(&self) -> Arc<ActivePolicy> {
            self.0.clone()
        }
    }

    /// The summary of many kinds added their counts with `+`, which panics
    /// (debug) or wraps (release) on counts a damaged or foreign map can
    /// hold (seen while writing the kernel_aggregate fuzz target).
    #[test]
    fn summary_of_huge_counts_saturates() {
        let text = include_str!("../../../examples/policies/finance.yaml");
        let policy = crate::policy::load_str("finance.yaml", text)
            .expect("the example loads")
            .policy;
        let cx = Fixed(Arc::new(ActivePolicy {
            policy,
            generation: 1,
        }));
        let mut counts = SlotCounts::default();
        for port in 0..(KINDS_PER_IDENTITY as u16 + 2) {
            let key = AggKey {
                identity: 1,
                hook: 1,
                verdict: 1,
                reason: 1,
                port,
                family: agent_common::AF_INET,
                ..AggKey::default()
            };
            let value = AggValue {
                count: u64::MAX / 2 + 1,
                ..AggValue::default()
            };
            counts.kinds.push((key, value));
        }
        let records = aggregate_records(&cx, &counts, None);
        assert_eq!(records.len(), KINDS_PER_IDENTITY + 1);
        let summary = records.last().expect("a summary record");
        assert!(
            summary
                .aggregate
                .as_ref()
                .is_some_and(|a| a.destinations == Some(2))
        );
        assert_eq!(summary.count, Some(u64::MAX));
    }
}
