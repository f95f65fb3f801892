//! The guard watchdog: every second, check that each pinned link is still
//! attached, runs the daemon's program and is pinned (`bpf::watchdog`),
//! repair what is not, and say so: an audit record (`reason:
//! guard-detached`, the link in `hook`), a metric, `palisade status`.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::{
    audit::{AuditEvent, EventKind},
    bpf::watchdog::Repair,
};

use super::Daemon;

/// How often the links are checked.
const PERIOD: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub(super) struct GuardState {
    last: Mutex<Option<String>>,
    stopped: AtomicBool,
}

impl GuardState {
    /// Stop checking (the daemon is removing its own pins).
    pub(super) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }
}

impl Daemon {
    /// The last guard finding (`link: finding at time`), if any.
    pub fn guard_last_repair(&self) -> Option<String> {
        self.guard
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Severed links a start found and replaced.
    pub(super) fn report_start_repairs(&self) {
        let repairs = self
            ._kernel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take_start_repairs();
        self.report_repairs(repairs, true);
    }

    pub(super) fn spawn_guard_watch(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PERIOD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(d) = weak.upgrade() else { break };
                if d.guard.stopped.load(Ordering::SeqCst) {
                    break;
                }
                // A few bpf(2) calls per link, no blocking I/O: cheap
                // enough for the runtime thread.
                let repairs = d
                    ._kernel
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .check_guard();
                d.report_repairs(repairs, false);
            }
        });
    }

    fn report_repairs(&self, repairs: Vec<Repair>, at_start: bool) {
        for r in repairs {
            self.metrics.record_guard_repair(r.finding.as_str());
            let verdict = if r.outcome.is_ok() {
                "reattached"
            } else {
                "failed"
            };
            let when = if at_start {
                "found at start"
            } else {
                "found while running"
            };
            let mut ev = AuditEvent::new(EventKind::Daemon, verdict, "guard-detached");
            ev.hook = Some(r.link.to_string());
            ev.policy_version = Some(self.active().policy.version.to_string());
            ev.detail = Some(match &r.outcome {
                Ok(()) => format!(
                    "link_{} {} ({when}); attached again with the daemon's program",
                    r.link, r.finding
                ),
                Err(e) => format!(
                    "link_{} {} ({when}); re-attaching FAILED, enforcement by this program is off: {e}",
                    r.link, r.finding
                ),
            });
            *self
                .guard
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(format!(
                "{} {} at {}",
                r.link,
                r.finding,
                humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            ));
            self.audit.emit(ev);
        }
    }
}
