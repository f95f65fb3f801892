//! Recording decisions: per-identity counters always, and for every deny and
//! would-deny an event record, or, for repeats within a period, a count
//! (`aggregate`). A full ring buffer never changes a verdict; the loss is
//! counted in `EVENTS_LOST` for the daemon to report.

use agent_common::{Event, Hook, NO_RULE, Reason, Verdict};
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_ktime_get_boot_ns,
    },
    maps::ring_buf::RingBufEntry,
};

use crate::{
    maps::{EVENTS, EVENTS_LOST, VERDICTS},
    policy::Generation,
};

/// What was decided about what.
pub struct Decision {
    pub hook: Hook,
    pub identity: u32,
    pub generation: Generation,
    pub verdict: Verdict,
    pub reason: Reason,
    pub rule: u32,
    pub addr: [u8; 16],
    pub port: u16,
    pub family: u16,
    pub protocol: u16,
    pub sock_type: u8,
}

impl Decision {
    pub const fn socket(
        hook: Hook,
        identity: u32,
        generation: Generation,
        family: u16,
        protocol: u16,
        sock_type: u8,
    ) -> Self {
        Self {
            hook,
            identity,
            generation,
            verdict: Verdict::Deny,
            reason: Reason::SocketType,
            rule: NO_RULE,
            addr: [0; 16],
            port: 0,
            family,
            protocol,
            sock_type,
        }
    }
}

#[inline(always)]
pub fn record(d: &Decision) {
    count(d.identity, d.verdict);
    if d.verdict == Verdict::Allow && d.reason != Reason::Elevation {
        return; // allows are counted, not recorded: the path connects take
    }
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    if d.verdict == Verdict::Allow {
        // What only a break-glass elevation allowed is recorded, every time
        // (the extra auditing elevation promises).
        match EVENTS.reserve::<Event>(0) {
            Some(entry) => submit(entry, d, now),
            None => count_lost(),
        }
        return;
    }
    // Repeated denials are counted, not recorded one by one, once a daemon
    // has switched aggregation on (`aggregate`).
    if let Some(cfg) = crate::aggregate::config() {
        crate::aggregate::record(d, &cfg, now);
        return;
    }
    match EVENTS.reserve::<Event>(0) {
        Some(entry) => submit(entry, d, now),
        None => count_lost(),
    }
}

/// An event record the ring buffer had no room for.
#[inline(always)]
pub fn count_lost() {
    if let Some(lost) = EVENTS_LOST.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *lost += 1 };
    }
}

/// Fill a reserved event record with the decision and send it.
#[inline(always)]
pub fn submit(mut entry: RingBufEntry<Event>, d: &Decision, now: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    entry.write(Event {
        ts_ns: now,
        // SAFETY: plain helper call.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        pid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        uid: uid_gid as u32,
        identity: d.identity,
        generation: d.generation.number,
        rule: d.rule,
        addr: d.addr,
        port: d.port,
        family: d.family,
        protocol: d.protocol,
        sock_type: d.sock_type,
        hook: d.hook as u8,
        verdict: d.verdict as u8,
        reason: d.reason as u8,
        _pad: [0; 6],
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    });
    entry.submit(0);
}

/// Count a verdict without an event (repeats already recorded once).
#[inline(always)]
pub fn count(identity: u32, verdict: Verdict) {
    let Some(c) = VERDICTS.get_ptr_mut(identity) else {
        return;
    };
    // SAFETY: per-CPU slot, no concurrent writer on this CPU.
    unsafe {
        match verdict {
            Verdict::Allow => (*c).allowed += 1,
            Verdict::Deny => (*c).denied += 1,
            Verdict::Audit => (*c).audited += 1,
        }
    }
}
