//! `syscalls/sys_enter_socket`, `sys_enter_socketpair`,
//! `sys_enter_io_uring_setup`, and `raw_syscalls/sys_enter` for the 32-bit
//! entry points those do not see: the stand-in for `lsm/socket_create` on
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
    helpers::{
        bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{bpf_get_current_task, bpf_send_signal},
    },
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
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

// The 32-bit entry points, which `syscalls/sys_enter_*` tracepoints skip
// (x86 reports no compat or x32 system call to them): i386 numbers, the
// x32 bit, and `struct pt_regs` offsets of the registers that carry the
// arguments (ebx, ecx, edx for i386; rdi, rsi, rdx for x32).
const IA32_SOCKETCALL: i64 = 102;
const IA32_SOCKET: i64 = 359;
const IA32_SOCKETPAIR: i64 = 360;
const IO_URING_SETUP: i64 = 425; // the same number in every x86 table
const X32_BIT: i64 = 0x4000_0000;
const X32_SOCKET: i64 = X32_BIT | 41;
const X32_SOCKETPAIR: i64 = X32_BIT | 53;
const SYS_SOCKET: u32 = 1;
const SYS_SOCKETPAIR: u32 = 8;
const TS_COMPAT: u32 = 0x0002;
const REG_BX: u64 = 40;
const REG_CX: u64 = 88;
const REG_DX: u64 = 96;
const REG_SI: u64 = 104;
const REG_DI: u64 = 112;

#[inline(always)]
fn reg(regs: u64, off: u64) -> u32 {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one fails.
    unsafe { bpf_probe_read_kernel((regs + off) as *const u64) }.unwrap_or(0) as u32
}

/// Is the current system call a 32-bit one (`TS_COMPAT`)?
#[inline(always)]
fn in_compat_call() -> bool {
    let Some(off) = GUARD_CFG.get(0).map(|c| c.task_status).filter(|o| *o != 0) else {
        return false;
    };
    // SAFETY: plain helper call; the read checks the address.
    let task = unsafe { bpf_get_current_task() };
    let status: u32 =
        unsafe { bpf_probe_read_kernel((task + u64::from(off)) as *const u32) }.unwrap_or(0);
    status & TS_COMPAT != 0
}

/// `raw_syscalls/sys_enter`: socket, socketpair, socketcall and io_uring
/// through the i386 and x32 entry points. Every system call of the host
/// passes here; all but these few numbers leave after a compare or two.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn guard_compat(ctx: RawTracePointContext) -> i32 {
    let id: i64 = ctx.arg(1);
    if !matches!(
        id,
        IA32_SOCKETCALL
            | IA32_SOCKET
            | IA32_SOCKETPAIR
            | IO_URING_SETUP
            | X32_SOCKET
            | X32_SOCKETPAIR
    ) || !active()
    {
        return 0;
    }
    let regs: u64 = ctx.arg(0);
    // What is asked for, in one place, so the refusal is inlined once.
    const NONE: u8 = 0;
    const SOCKET: u8 = 1;
    const PAIR: u8 = 2;
    const URING: u8 = 3;
    let (kind, a) = match id {
        X32_SOCKET | X32_SOCKETPAIR => (
            if id == X32_SOCKET { SOCKET } else { PAIR },
            [reg(regs, REG_DI), reg(regs, REG_SI), reg(regs, REG_DX)],
        ),
        // 359 and 360 mean nothing to the 64-bit table (ENOSYS there).
        IA32_SOCKET | IA32_SOCKETPAIR => (
            if id == IA32_SOCKET { SOCKET } else { PAIR },
            [reg(regs, REG_BX), reg(regs, REG_CX), reg(regs, REG_DX)],
        ),
        // The 64-bit io_uring_setup has its own tracepoint.
        IO_URING_SETUP if in_compat_call() => (URING, [0; 3]),
        // 102 is getuid to 64-bit callers.
        IA32_SOCKETCALL if in_compat_call() => {
            let call = reg(regs, REG_BX);
            let ptr = u64::from(reg(regs, REG_CX));
            // SAFETY: bpf_probe_read_user checks the address; an unreadable
            // array fails the call in the kernel too.
            let args = unsafe { bpf_probe_read_user(ptr as *const [u32; 3]) }.unwrap_or([0; 3]);
            match call {
                SYS_SOCKET => (SOCKET, args),
                SYS_SOCKETPAIR => (PAIR, args),
                _ => (NONE, args),
            }
        }
        _ => (NONE, [0; 3]),
    };
    let refused = match kind {
        SOCKET => !socket_family_allowed(a[0], a[1], a[2]),
        PAIR => !socketpair_allowed(a[0]),
        URING => true,
        _ => false,
    };
    if refused {
        let family = if kind == URING { IO_URING } else { a[0] as u16 };
        refuse(family, a[1], a[2]);
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
