//! `tracepoint/cgroup/cgroup_mkdir`: tell the daemon about new cgroups, so
//! identities that select cgroups by path pick them up at once. (Removed
//! cgroups are swept by the daemon's periodic resync: ids are per hierarchy,
//! so acting on another hierarchy's rmdir could unenrol the wrong cgroup.)

use agent_common::event::{CGROUP_CREATED, CgroupEvent};
use aya_ebpf::{
    EbpfContext as _, helpers::bpf_probe_read_kernel_str_bytes, macros::tracepoint,
    programs::TracePointContext,
};

use crate::maps::CGROUP_EVENTS;

// Field offsets from /sys/kernel/tracing/events/cgroup/cgroup_mkdir/format.
const ROOT: usize = 8;
const LEVEL: usize = 12;
const ID: usize = 16;
const PATH_LOC: usize = 24;

#[tracepoint(category = "cgroup", name = "cgroup_mkdir")]
pub fn cgroup_mkdir(ctx: TracePointContext) -> u32 {
    forward(&ctx, CGROUP_CREATED);
    0
}

#[inline(always)]
fn forward(ctx: &TracePointContext, kind: u32) {
    let Some(mut entry) = CGROUP_EVENTS.reserve::<CgroupEvent>(0) else {
        return; // the daemon rescans the tree periodically
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: offsets match the tracepoint format; the path is a
    // __data_loc string (offset in the low 16 bits) inside the record.
    unsafe {
        (*ev).kind = kind;
        (*ev)._pad = 0;
        (*ev).root = ctx.read_at::<i32>(ROOT).unwrap_or(-1);
        (*ev).level = ctx.read_at::<i32>(LEVEL).unwrap_or(-1);
        (*ev).id = ctx.read_at::<u64>(ID).unwrap_or(0);
        let loc = ctx.read_at::<u32>(PATH_LOC).unwrap_or(0);
        let src = (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize);
        if bpf_probe_read_kernel_str_bytes(src, &mut (*ev).path).is_err() {
            (*ev).path[0] = 0;
        }
    }
    entry.submit(0);
}
