//! One scrape: kernel counters read from the maps now, the daemon's own
//! counters, and the userspace families of `Metrics`.

use std::sync::atomic::Ordering;

use super::{Exposition, Kind};
use crate::{bpf::PacketGuard, daemon::Daemon};

/// The whole exposition for `/metrics`.
pub fn scrape(daemon: &Daemon) -> String {
    let mut out = Exposition::new();
    out.family(
        "palisade_build_info",
        "The daemon's version (always 1).",
        Kind::Gauge,
    );
    out.sample(
        "palisade_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    out.family(
        "palisade_scrape_errors",
        "1 when kernel maps could not be read for this scrape (kernel families are then missing).",
        Kind::Gauge,
    );
    let status = daemon.status();
    out.sample("palisade_scrape_errors", &[], u64::from(status.is_err()));

    let active = daemon.active();
    out.family(
        "palisade_policy_info",
        "The active policy version (always 1).",
        Kind::Gauge,
    );
    out.sample(
        "palisade_policy_info",
        &[("version", &active.policy.version.to_string())],
        1,
    );
    out.family(
        "palisade_policy_generation",
        "Kernel generation of the active policy.",
        Kind::Gauge,
    );
    out.sample("palisade_policy_generation", &[], active.generation.into());

    out.family(
        "palisade_packet_guard",
        "How packet sockets are kept from agents: lsm (every enrolled process) or seccomp (agents started by palisade exec).",
        Kind::Gauge,
    );
    let guard = match daemon.packet_guard {
        PacketGuard::Lsm => "lsm",
        PacketGuard::SeccompOnly => "seccomp",
    };
    out.sample("palisade_packet_guard", &[("mechanism", guard)], 1);

    out.family(
        "palisade_verdicts_total",
        "Kernel verdicts on connect/sendmsg by identity: allow, deny, audit (would deny, shadow mode).",
        Kind::Counter,
    );
    let drift_decisions = daemon.metrics.decision_drift();
    if let Ok(s) = &status {
        for i in &s.identities {
            for (verdict, n) in [
                ("allow", i.allowed),
                ("deny", i.denied),
                ("audit", i.audited),
            ] {
                out.sample(
                    "palisade_verdicts_total",
                    &[("identity", &i.id), ("verdict", verdict)],
                    n,
                );
            }
        }
    }
    out.family(
        "palisade_shadow_drift_total",
        "Would-deny events of identities in audit (shadow) mode: what enforcing would have blocked.",
        Kind::Counter,
    );
    if let Ok(s) = &status {
        for i in &s.identities {
            out.sample(
                "palisade_shadow_drift_total",
                &[("identity", &i.id), ("source", "kernel")],
                i.audited,
            );
        }
    }
    for (identity, n) in &drift_decisions {
        out.sample(
            "palisade_shadow_drift_total",
            &[("identity", identity), ("source", "decision")],
            *n,
        );
    }
    out.family(
        "palisade_identity_kill_switch",
        "1 when the identity's kill switch is on.",
        Kind::Gauge,
    );
    if let Ok(s) = &status {
        for i in &s.identities {
            out.sample(
                "palisade_identity_kill_switch",
                &[("identity", &i.id)],
                u64::from(i.killed),
            );
        }
    }
    out.family(
        "palisade_enrolled_cgroups",
        "Cgroups enrolled in each identity.",
        Kind::Gauge,
    );
    if let Ok(s) = &status {
        for i in &s.identities {
            out.sample(
                "palisade_enrolled_cgroups",
                &[("identity", &i.id)],
                i.cgroups,
            );
        }
    }

    let audit = daemon.audit.stats();
    out.family(
        "palisade_events_lost_total",
        "Audit events lost, by where: kernel ring buffer full, audit queue full, trail write failed, sink (never delivered).",
        Kind::Counter,
    );
    if let Ok(s) = &status {
        out.sample(
            "palisade_events_lost_total",
            &[("stage", "kernel_ring_buffer")],
            s.events_lost,
        );
    }
    out.sample(
        "palisade_events_lost_total",
        &[("stage", "pipeline_queue")],
        audit.dropped.load(Ordering::Relaxed),
    );
    out.sample(
        "palisade_events_lost_total",
        &[("stage", "trail_write")],
        audit.trail_lost.load(Ordering::Relaxed),
    );
    let otlp = daemon.audit.otlp_stats();
    if let Some(o) = otlp {
        out.sample(
            "palisade_events_lost_total",
            &[("stage", "sink_otlp")],
            o.lost.load(Ordering::Relaxed),
        );
    }
    out.family(
        "palisade_audit_records_total",
        "Audit records written since the daemon started.",
        Kind::Counter,
    );
    out.sample(
        "palisade_audit_records_total",
        &[],
        audit.written.load(Ordering::Relaxed),
    );
    out.family(
        "palisade_audit_write_errors_total",
        "Failed writes to the audit trail file.",
        Kind::Counter,
    );
    out.sample(
        "palisade_audit_write_errors_total",
        &[],
        audit.write_errors.load(Ordering::Relaxed),
    );
    out.family(
        "palisade_audit_chain_seq",
        "Sequence number of the last record in the audit trail's hash chain.",
        Kind::Gauge,
    );
    let head = audit.head().map_or(0, |h| h.seq);
    out.sample("palisade_audit_chain_seq", &[], head);

    out.family(
        "palisade_sink_up",
        "1 when the last delivery to the sink succeeded.",
        Kind::Gauge,
    );
    out.family(
        "palisade_sink_delivered_total",
        "Audit records delivered to the sink.",
        Kind::Counter,
    );
    out.family(
        "palisade_sink_errors_total",
        "Failed delivery attempts (each retried from the trail).",
        Kind::Counter,
    );
    out.family(
        "palisade_sink_backlog",
        "Audit records written to the trail and not yet delivered to the sink.",
        Kind::Gauge,
    );
    if let Some(o) = otlp {
        let sink = [("sink", "otlp")];
        out.sample(
            "palisade_sink_up",
            &sink,
            u64::from(o.up.load(Ordering::Relaxed)),
        );
        out.sample(
            "palisade_sink_delivered_total",
            &sink,
            o.delivered.load(Ordering::Relaxed),
        );
        out.sample(
            "palisade_sink_errors_total",
            &sink,
            o.errors.load(Ordering::Relaxed),
        );
        out.sample(
            "palisade_sink_backlog",
            &sink,
            head.saturating_sub(o.cursor.load(Ordering::Relaxed)),
        );
    }

    // KPIs join the active policy with what agents asked, as of now.
    let mut kpis = super::PolicyKpis::of(&active.policy, &daemon.metrics.tools_asked());
    kpis.elevated_identities = daemon.elevated_identities();
    daemon.metrics.set_policy_kpis(kpis);
    daemon.metrics.render(&mut out);
    daemon.notifier.render(&mut out);
    out.finish()
}
