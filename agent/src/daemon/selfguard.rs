//! The daemon keeps its own standing: every second it checks that nothing
//! has re-scheduled it (scheduling class, nice value, CPU affinity of each
//! of its threads, the nice value of its session's autogroup) or made it
//! the OOM killer's first choice (`oom_score_adj`) or changed what a crash
//! of it would dump (`coredump_filter`), and puts back what it started
//! with. An agent running as root shares the daemon's user: agents started
//! with `palisade exec` can neither re-schedule other processes (seccomp)
//! nor see the daemon's /proc files (their /proc hides it); agents
//! selected by cgroup have neither. Each correction is an audit record (`reason:
//! daemon-tampered`), so the operator learns that an agent tried.

use std::{sync::Arc, time::Duration};

use tracing::warn;

use super::Daemon;
use crate::audit::{AuditEvent, EventKind};

const PERIOD: Duration = Duration::from_secs(1);

/// What the daemon started with.
#[derive(Clone)]
struct Standing {
    oom_score_adj: Option<String>,
    coredump_filter: Option<String>,
    /// The nice value of the daemon's autogroup (the CPU share of its
    /// whole session, where the kernel groups by session).
    autogroup: Option<i32>,
    nice: i32,
    affinity: libc::cpu_set_t,
}

fn read_own(file: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/self/{file}"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// `/autogroup-6 nice 19` → 19; none where the kernel has no autogroups.
fn autogroup_nice() -> Option<i32> {
    read_own("autogroup")?.rsplit(' ').next()?.parse().ok()
}

fn affinity(tid: i32) -> Option<libc::cpu_set_t> {
    // SAFETY: a zeroed cpu_set_t is valid; the kernel fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pointer and size of a live cpu_set_t.
    let r = unsafe { libc::sched_getaffinity(tid, size_of::<libc::cpu_set_t>(), &raw mut set) };
    (r == 0).then_some(set)
}

fn same_set(a: &libc::cpu_set_t, b: &libc::cpu_set_t) -> bool {
    (0..libc::CPU_SETSIZE as usize).all(|c| {
        // SAFETY: CPU_ISSET reads within the set for c < CPU_SETSIZE.
        unsafe { libc::CPU_ISSET(c, a) == libc::CPU_ISSET(c, b) }
    })
}

fn nice(tid: i32) -> i32 {
    // SAFETY: plain getpriority; -1 is also a valid nice value, which is
    // fine here (compared, not trusted).
    unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) }
}

fn threads() -> Vec<i32> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// The autogroup's nice at start, put back to 0 where it was raised: it is
/// the session's, so a daemon restarted from a session an agent reniced
/// would inherit the starved share (and the standing it guards).
fn full_share_autogroup() -> Option<i32> {
    let nice = autogroup_nice()?;
    if nice > 0 {
        if std::fs::write("/proc/self/autogroup", "0").is_ok() {
            warn!(
                nice,
                "the daemon's session had a reduced CPU share (autogroup nice); set to 0"
            );
            return Some(0);
        }
        warn!(
            nice,
            "the daemon's session has a reduced CPU share (autogroup nice) that cannot be reset"
        );
    }
    Some(nice)
}

impl Standing {
    fn now() -> Option<Self> {
        // SAFETY: gettid has no arguments.
        let me = unsafe { libc::gettid() };
        Some(Self {
            oom_score_adj: read_own("oom_score_adj"),
            coredump_filter: read_own("coredump_filter"),
            autogroup: full_share_autogroup(),
            nice: nice(me),
            affinity: affinity(me)?,
        })
    }

    /// Put back what differs; what was put back, for the record.
    fn restore(&self) -> Vec<String> {
        let mut fixed = Vec::new();
        let autogroup = self.autogroup.map(|n| n.to_string());
        for (file, want) in [
            ("oom_score_adj", &self.oom_score_adj),
            ("coredump_filter", &self.coredump_filter),
            ("autogroup", &autogroup),
        ] {
            let now = if file == "autogroup" {
                autogroup_nice().map(|n| n.to_string())
            } else {
                read_own(file)
            };
            if let (Some(want), Some(now)) = (want, now)
                && &now != want
            {
                // coredump_filter reads as hex digits, and a leading 0
                // would make them octal when written back.
                let text = if file == "coredump_filter" {
                    format!("0x{want}")
                } else {
                    want.clone()
                };
                if std::fs::write(format!("/proc/self/{file}"), text).is_ok() {
                    fixed.push(format!("{file} {now} → {want}"));
                } else {
                    fixed.push(format!("{file} {now} (could not restore {want})"));
                }
            }
        }
        for tid in threads() {
            // SAFETY: plain scheduler queries and settings of our own threads.
            unsafe {
                let policy = libc::sched_getscheduler(tid);
                if policy >= 0 && policy != libc::SCHED_OTHER {
                    let p = libc::sched_param { sched_priority: 0 };
                    libc::sched_setscheduler(tid, libc::SCHED_OTHER, &raw const p);
                    fixed.push(format!("thread {tid}: scheduling class {policy} → normal"));
                }
            }
            let n = nice(tid);
            if n != self.nice {
                // SAFETY: plain setpriority of our own thread.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, self.nice) };
                fixed.push(format!("thread {tid}: nice {n} → {}", self.nice));
            }
            if let Some(set) = affinity(tid)
                && !same_set(&set, &self.affinity)
            {
                // SAFETY: pointer and size of a live cpu_set_t.
                unsafe {
                    libc::sched_setaffinity(
                        tid,
                        size_of::<libc::cpu_set_t>(),
                        &raw const self.affinity,
                    )
                };
                fixed.push(format!("thread {tid}: CPU affinity restored"));
            }
        }
        fixed
    }
}

impl Daemon {
    pub(super) fn spawn_self_guard(self: &Arc<Self>) {
        let Some(standing) = Standing::now() else {
            warn!("cannot read the daemon's own scheduling; not guarding it");
            return;
        };
        let weak = Arc::downgrade(self);
        // A thread of its own: a starved runtime must not starve its cure.
        let spawned = std::thread::Builder::new()
            .name("palisade-standing".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(PERIOD);
                    let Some(d) = weak.upgrade() else { return };
                    let fixed = standing.restore();
                    if fixed.is_empty() {
                        continue;
                    }
                    warn!(changes = ?fixed, "something changed the daemon's scheduling or OOM standing; restored");
                    let mut ev = AuditEvent::new(EventKind::Daemon, "restored", "daemon-tampered");
                    ev.policy_version = Some(d.active().policy.version.to_string());
                    ev.detail = Some(fixed.join("; "));
                    d.audit.emit(ev);
                }
            });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start the daemon's self-guard");
        }
    }
}
