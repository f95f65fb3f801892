//! Repeated denials counted in the kernel (see `agent_common::aggregate`):
//! the first of each kind per period becomes an event record, the rest
//! raise a count the daemon reports at the end of the period. A flood costs
//! the trail a few records, and every denial is still counted.

use agent_common::{
    MAX_IDENTITIES, Verdict,
    aggregate::{AGG_REASONS, AggBudget, AggConfig, AggKey, AggOverflow, AggValue},
};
use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid,
    },
    macros::map,
    maps::{Array, HashMap},
};

use crate::{
    emit::{self, Decision},
    maps::EVENTS,
};

/// `[0]`: whether and how to aggregate (written by the daemon).
#[map]
pub static AGG_CFG: Array<AggConfig> = Array::with_max_entries(1, 0);

/// Each kind of denial in each slot, with its count.
#[map]
pub static AGG: HashMap<AggKey, AggValue> = HashMap::with_max_entries(1 << 16, BPF_F_NO_PREALLOC);

/// `[identity]`: event records sent this period.
#[map]
pub static AGG_BUDGET: Array<AggBudget> = Array::with_max_entries(MAX_IDENTITIES, 0);

/// `[slot * MAX_IDENTITIES + identity]`: denials counted without a kind.
#[map]
pub static AGG_OVERFLOW: Array<AggOverflow> = Array::with_max_entries(2 * MAX_IDENTITIES, 0);

const EEXIST: i32 = 17;

#[inline(always)]
pub fn config() -> Option<AggConfig> {
    match AGG_CFG.get(0) {
        Some(c) if c.enabled != 0 => Some(*c),
        _ => None,
    }
}

/// `*p += 1`, atomically: other CPUs add to the same value. (The BPF
/// target has no `AtomicU64`; this is the instruction it would use.)
#[inline(always)]
fn add64(p: *mut u64) {
    // SAFETY: `p` points into a map value that stays valid for the whole
    // program run (RCU).
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            p, 1,
        );
    }
}

#[inline(always)]
fn add32(p: *mut u32) {
    // SAFETY: as for `add64`.
    unsafe {
        core::intrinsics::atomic_xadd::<u32, u32, { core::intrinsics::AtomicOrdering::Relaxed }>(
            p, 1,
        );
    }
}

/// Record a denial (or would-deny) under aggregation.
#[inline(always)]
pub fn record(d: &Decision, cfg: &AggConfig, now: u64) {
    let slot = (cfg.period & 1) as u8;
    let key = AggKey {
        identity: d.identity,
        slot,
        hook: d.hook as u8,
        verdict: d.verdict as u8,
        reason: d.reason as u8,
        addr: d.addr,
        port: d.port,
        family: d.family,
        protocol: d.protocol,
        sock_type: d.sock_type,
        _pad: 0,
    };
    if let Some(v) = AGG.get_ptr_mut(&key) {
        // SAFETY: a valid map value; `last_ns` is advisory (racy stores
        // are fine), `count` is added atomically.
        unsafe {
            add64(&raw mut (*v).count);
            (*v).last_ns = now;
        }
        return;
    }
    if !take_budget(d.identity, cfg.period, cfg.budget) {
        overflow(slot, d);
        return;
    }
    // First of its kind this period: an event record, and an entry to
    // count the rest. The event is reserved first so the entry can say
    // whether it went out.
    let entry = EVENTS.reserve::<agent_common::Event>(0);
    let pid_tgid = bpf_get_current_pid_tgid();
    let value = AggValue {
        count: 1,
        first_ns: now,
        last_ns: now,
        // SAFETY: plain helper calls.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        tgid: (pid_tgid >> 32) as u32,
        pid: pid_tgid as u32,
        uid: bpf_get_current_uid_gid() as u32,
        generation: d.generation.number,
        rule: d.rule,
        emitted: u32::from(entry.is_some()),
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    match AGG.insert(&key, &value, u64::from(BPF_NOEXIST)) {
        Ok(()) => match entry {
            Some(e) => emit::submit(e, d, now),
            // Counted in the entry (emitted = 0); the record is lost.
            None => emit::count_lost(),
        },
        Err(e) if e == -EEXIST => {
            // Another CPU inserted it meanwhile: count there.
            if let Some(e) = entry {
                e.discard(0);
            }
            match AGG.get_ptr_mut(&key) {
                Some(v) => add64(
                    // SAFETY: a valid map value.
                    unsafe { &raw mut (*v).count },
                ),
                None => overflow(slot, d),
            }
        }
        // The table is full: the event stands for itself, or, when it
        // cannot be sent either, the overflow counts it.
        Err(_) => match entry {
            Some(e) => emit::submit(e, d, now),
            None => {
                emit::count_lost();
                overflow(slot, d);
            }
        },
    }
}

/// One event record from the identity's budget for this period.
#[inline(always)]
fn take_budget(identity: u32, period: u32, budget: u32) -> bool {
    let Some(b) = AGG_BUDGET.get_ptr_mut(identity) else {
        return false;
    };
    // SAFETY: a valid map value; the reset may race with another CPU's
    // (the budget is approximate), the counts never depend on it.
    unsafe {
        if (*b).period != period {
            (*b).period = period;
            (*b).used = 0;
        }
        if (*b).used >= budget {
            return false;
        }
        add32(&raw mut (*b).used);
    }
    true
}

#[inline(always)]
fn overflow(slot: u8, d: &Decision) {
    let index = u32::from(slot) * MAX_IDENTITIES + d.identity;
    let Some(o) = AGG_OVERFLOW.get_ptr_mut(index) else {
        return;
    };
    let reason = (d.reason as usize) & (AGG_REASONS - 1);
    // SAFETY: a valid map value; the index is masked into the array.
    unsafe {
        match d.verdict {
            Verdict::Audit => add64(&raw mut (*o).audit[reason]),
            _ => add64(&raw mut (*o).deny[reason]),
        }
    }
}
