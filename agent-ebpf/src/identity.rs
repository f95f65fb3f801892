//! Who is calling: the identity the current task inherited (lineage), or
//! else that of its cgroup.

use agent_common::MAX_CGROUP_DEPTH;
use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid,
    generated::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id},
};

use crate::maps::{CGROUP_IDENT, LINEAGE};

/// BPF_NOEXIST: a lineage entry, once made, is never overwritten.
const NOEXIST: u64 = 1;

/// The identity of the current task, or `None` when it is not enrolled.
///
/// Lineage first: a task descended from an enrolled one keeps that identity
/// wherever it moves (out of its cgroup, into a cgroup another identity
/// selects). Then the cgroup: a task found enrolled that way is added to the
/// lineage, so it cannot shed the identity by moving either.
#[inline(always)]
pub fn enrolled() -> Option<u32> {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the value is a plain u32 read once.
    if let Some(ident) = unsafe { LINEAGE.get(&tid) } {
        return Some(*ident);
    }
    let ident = by_cgroup()?;
    let _ = LINEAGE.insert(&tid, &ident, NOEXIST);
    Some(ident)
}

/// The identity of the nearest enrolled cgroup among the current task's
/// cgroup and its ancestors.
///
/// Walking the ancestry (rather than looking up only the task's own cgroup)
/// keeps sub-cgroups an agent creates confined, even while the daemon is down.
#[inline(always)]
pub fn by_cgroup() -> Option<u32> {
    // Fast path: `palisade exec` puts agents directly in the enrolled cgroup,
    // and the task's own cgroup is the nearest one there is.
    // SAFETY: plain helper call.
    let current = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: the value is a plain u32 read once.
    if let Some(ident) = unsafe { CGROUP_IDENT.get(&current) } {
        return Some(*ident);
    }
    // Identity 0 is never assigned: it stands for "none" here, because an
    // Option's payload would be an uninitialised register on the path where
    // nothing is found, and the verifier refuses to spill one.
    let mut found: u32 = 0;
    let mut level: u32 = 1;
    while level <= MAX_CGROUP_DEPTH {
        // SAFETY: plain helper call, no pointers involved.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if id == 0 || id == current {
            break; // past the task's own level (already checked)
        }
        // SAFETY: the value is a plain u32 read once.
        if let Some(ident) = unsafe { CGROUP_IDENT.get(&id) } {
            found = *ident;
        }
        level += 1;
    }
    (found != 0).then_some(found)
}
