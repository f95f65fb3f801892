//! `syscalls/sys_enter_socket`, `sys_enter_socketpair`,
//! `sys_enter_io_uring_setup`: the stand-in for `lsm/socket_create` on
//! kernels that refuse BPF LSM programs, for enrolled processes that were
//! not started by `palisade exec` (whose seccomp filter refuses these calls
//! before they reach the tracepoint). Inet sockets other than packet
//! sockets are left to `cgroup/sock_create`, which refuses them cleanly.
//!
//! A tracepoint cannot fail a system call. What it can do is kill the
//! caller: `bpf_send_signal(SIGKILL)` queues the signal before the socket
//! exists, for every thread of the process, and it is acted on when the
//! call returns. That is a deterrent, not a guarantee: the socket is still
//! created, and a process that shares its file table without being in the
//! same thread group (clone(CLONE_FILES)), or a thread the kill reaches a
//! moment late, can use it. docs/security.md says what remains.

use agent_common::{
    Hook, Reason, Verdict,
    guard::{GUARD_SYSCALL_FALLBACK, socket_family_allowed, socketpair_allowed},
};
use aya_ebpf::{
    helpers::generated::bpf_send_signal, macros::tracepoint, programs::TracePointContext,
};

use crate::{
    emit::{Decision, record},
    identity,
    maps::GUARD_CFG,
    policy,
};

/// System call arguments in `sys_enter_*` records: eight bytes each from
/// offset 16 (the layout of every syscall tracepoint).
const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG2: usize = 32;
const SIGKILL: u32 = 9;
/// Reported as the "family" of a refused io_uring_setup.
const IO_URING: u16 = 0xffff;

#[inline(always)]
fn active() -> bool {
    matches!(GUARD_CFG.get(0), Some(c) if c.flags & GUARD_SYSCALL_FALLBACK != 0)
}

#[inline(always)]
fn args(ctx: &TracePointContext) -> (u32, u32, u32) {
    // SAFETY: fixed layout of syscall tracepoint records.
    unsafe {
        (
            ctx.read_at::<u64>(ARG0).unwrap_or(0) as u32,
            ctx.read_at::<u64>(ARG1).unwrap_or(0) as u32,
            ctx.read_at::<u64>(ARG2).unwrap_or(0) as u32,
        )
    }
}

#[tracepoint(category = "syscalls", name = "sys_enter_socket")]
pub fn guard_socket(ctx: TracePointContext) -> u32 {
    if !active() {
        return 0;
    }
    let (family, ty, protocol) = args(&ctx);
    if !socket_family_allowed(family, ty, protocol) {
        refuse(family as u16, ty, protocol);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_socketpair")]
pub fn guard_socketpair(ctx: TracePointContext) -> u32 {
    if !active() {
        return 0;
    }
    let (family, ty, protocol) = args(&ctx);
    if !socketpair_allowed(family) {
        refuse(family as u16, ty, protocol);
    }
    0
}

/// io_uring's socket and connect operations do not pass through these
/// tracepoints.
#[tracepoint(category = "syscalls", name = "sys_enter_io_uring_setup")]
pub fn guard_io_uring(_ctx: TracePointContext) -> u32 {
    if active() {
        refuse(IO_URING, 0, 0);
    }
    0
}

#[inline(always)]
fn refuse(family: u16, ty: u32, protocol: u32) {
    let Some(identity) = identity::enrolled() else {
        return;
    };
    let generation = policy::active_generation();
    let audit = matches!(policy::identity_config(generation, identity), Some(c) if c.audit != 0);
    let mut decision = Decision::socket(
        Hook::SocketSyscall,
        identity,
        generation,
        family,
        protocol as u16,
        ty as u8,
    );
    decision.reason = Reason::SocketType;
    if audit {
        decision.verdict = Verdict::Audit;
    }
    record(&decision);
    if !audit {
        // SAFETY: plain helper call; signals the current process.
        unsafe { bpf_send_signal(SIGKILL) };
    }
}
