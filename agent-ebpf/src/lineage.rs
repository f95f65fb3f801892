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
//! Raw tracepoints, because their links can be pinned (the daemon pins
//! them, so tracking goes on while it is down); fields of the kernel's
//! structures are read at offsets the daemon takes from the kernel's BTF.
//!
//! Entries are never overwritten: a task cannot trade its identity for
//! another by moving into another identity's cgroup. The daemon seeds tasks
//! that were already in a cgroup when it enrolled it, and removes entries
//! only when the policy stops selecting a cgroup its tasks are still in.

use agent_common::guard::GuardConfig;
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};

use crate::{
    identity,
    maps::{CGROUP_IDENT, GUARD_CFG, LINEAGE},
};

/// BPF_NOEXIST.
const NOEXIST: u64 = 1;

#[inline(always)]
fn config() -> Option<&'static GuardConfig> {
    GUARD_CFG.get(0).filter(|c| c.task_pid != 0)
}

/// `*(T *)(base + off)` in kernel memory.
#[inline(always)]
fn read<T>(base: u64, off: u16) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one fails.
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const T) }.ok()
}

/// TP_PROTO(struct task_struct *parent, struct task_struct *child); the
/// parent is the current task.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn lineage_fork(ctx: RawTracePointContext) -> i32 {
    let Some(cfg) = config() else { return 0 };
    let Some(ident) = identity::enrolled() else {
        return 0;
    };
    let child: u64 = ctx.arg(1);
    if let Some(pid) = read::<i32>(child, cfg.task_pid) {
        let _ = LINEAGE.insert(&(pid as u32), &ident, NOEXIST);
    }
    0
}

/// TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *);
/// `p` is the current task, with its new task id.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn lineage_exec(ctx: RawTracePointContext) -> i32 {
    let pid = bpf_get_current_pid_tgid() as u32;
    let old: u64 = ctx.arg(1);
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

/// The exiting task is the current one.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn lineage_exit(_ctx: RawTracePointContext) -> i32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = LINEAGE.remove(&tid);
    0
}

/// TP_PROTO(struct cgroup *dst_cgrp, const char *path,
///          struct task_struct *task, bool threadgroup)
#[raw_tracepoint(tracepoint = "cgroup_attach_task")]
pub fn lineage_attach(ctx: RawTracePointContext) -> i32 {
    let Some(cfg) = config() else { return 0 };
    let cgrp: u64 = ctx.arg(0);
    let task: u64 = ctx.arg(2);
    // Only the cgroup v2 hierarchy (id 0): a v1 hierarchy's ids are its own.
    let Some(root) = read::<u64>(cgrp, cfg.cgroup_root) else {
        return 0;
    };
    if read::<i32>(root, cfg.root_hierarchy) != Some(0) {
        return 0;
    }
    let Some(kn) = read::<u64>(cgrp, cfg.cgroup_kn) else {
        return 0;
    };
    let (Some(id), Some(pid)) = (
        read::<u64>(kn, cfg.kernfs_id),
        read::<i32>(task, cfg.task_pid),
    ) else {
        return 0;
    };
    // SAFETY: plain u32 value.
    if let Some(ident) = unsafe { CGROUP_IDENT.get(&id) }.copied() {
        let _ = LINEAGE.insert(&(pid as u32), &ident, NOEXIST);
    }
    0
}
