//! The lineage of enrolled tasks: identity follows a task and everything it
//! starts, wherever it moves in the cgroup tree.
//!
//! * `sched_process_fork` (threads too): the child inherits the parent's
//!   lineage, or the identity of the parent's cgroup.
//! * `sched_process_exec`: a thread that execs from a non-leader thread
//!   takes the leader's task id; its entry moves with it.
//! * `sched_process_exit`: the task's entry goes (per task, so a thread
//!   group whose leader exits stays covered by its other threads' entries).
//! * `cgroup_attach_task`: a task moved into an enrolled cgroup by anyone
//!   (the daemon enrolling `palisade exec`, a service manager) gains its
//!   identity at once, before it could move out again.
//!
//! Entries are never overwritten: a task cannot trade its identity for
//! another by moving into another identity's cgroup. The daemon seeds tasks
//! that were already in a cgroup when it enrolled it, and removes entries
//! only when the policy stops selecting a cgroup its tasks are still in.

use agent_common::guard::GuardConfig;
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint,
    programs::TracePointContext,
};

use crate::{
    identity,
    maps::{CGROUP_IDENT, GUARD_CFG, LINEAGE},
};

/// BPF_NOEXIST.
const NOEXIST: u64 = 1;

#[inline(always)]
fn config() -> Option<&'static GuardConfig> {
    GUARD_CFG.get(0).filter(|c| c.fork_child_pid != 0)
}

#[tracepoint(category = "sched", name = "sched_process_fork")]
pub fn lineage_fork(ctx: TracePointContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    // The parent is the current task.
    let Some(ident) = identity::enrolled() else {
        return 0;
    };
    // SAFETY: the offset comes from this kernel's format file.
    if let Ok(child) = unsafe { ctx.read_at::<i32>(cfg.fork_child_pid as usize) } {
        let _ = LINEAGE.insert(&(child as u32), &ident, NOEXIST);
    }
    0
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn lineage_exec(ctx: TracePointContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    let pid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the offset comes from this kernel's format file.
    let Ok(old) = (unsafe { ctx.read_at::<i32>(cfg.exec_old_pid as usize) }) else {
        return 0;
    };
    let old = old as u32;
    if old == pid {
        return 0;
    }
    // SAFETY: plain u32 value, copied before the map changes.
    if let Some(ident) = unsafe { LINEAGE.get(&old) }.copied() {
        let _ = LINEAGE.insert(&pid, &ident, 0);
        let _ = LINEAGE.remove(&old);
    }
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn lineage_exit(_ctx: TracePointContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = LINEAGE.remove(&tid);
    0
}

#[tracepoint(category = "cgroup", name = "cgroup_attach_task")]
pub fn lineage_attach(ctx: TracePointContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    // SAFETY: offsets come from this kernel's format file.
    let (root, id, pid) = unsafe {
        (
            ctx.read_at::<i32>(cfg.attach_root as usize),
            ctx.read_at::<u64>(cfg.attach_id as usize),
            ctx.read_at::<i32>(cfg.attach_pid as usize),
        )
    };
    let (Ok(root), Ok(id), Ok(pid)) = (root, id, pid) else {
        return 0;
    };
    if root != cfg.v2_hierarchy {
        return 0; // a cgroup v1 hierarchy: its ids are not ours
    }
    // SAFETY: plain u32 value.
    if let Some(ident) = unsafe { CGROUP_IDENT.get(&id) }.copied() {
        let _ = LINEAGE.insert(&(pid as u32), &ident, NOEXIST);
    }
    0
}
