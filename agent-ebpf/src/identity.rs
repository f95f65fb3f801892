//! Who is calling: the identity of the current task's cgroup.

use agent_common::MAX_CGROUP_DEPTH;
use aya_ebpf::helpers::generated::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id};

use crate::maps::CGROUP_IDENT;

/// The identity index of the nearest enrolled cgroup among the current
/// task's cgroup and its ancestors, or `None` when the task is not enrolled.
///
/// Walking the ancestry (rather than looking up only the task's own cgroup)
/// keeps sub-cgroups an agent creates confined, even while the daemon is down.
#[inline(always)]
pub fn enrolled() -> Option<u32> {
    // Fast path: `palisade exec` puts agents directly in the enrolled cgroup,
    // and the task's own cgroup is the nearest one there is.
    // SAFETY: plain helper call.
    let current = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: the value is a plain u32 read once.
    if let Some(ident) = unsafe { CGROUP_IDENT.get(&current) } {
        return Some(*ident);
    }
    let mut found = None;
    let mut level: u32 = 1;
    while level <= MAX_CGROUP_DEPTH {
        // SAFETY: plain helper call, no pointers involved.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if id == 0 || id == current {
            break; // past the task's own level (already checked)
        }
        // SAFETY: the value is a plain u32 read once.
        if let Some(ident) = unsafe { CGROUP_IDENT.get(&id) } {
            found = Some(*ident);
        }
        level += 1;
    }
    found
}
