//! The seccomp filter `palisade exec` installs before running an agent. It
//! is inherited by every child and cannot be removed.
//!
//! * Sockets: an allowlist by family (`agent_common::guard::
//!   socket_family_allowed`): Unix; inet except packet sockets
//!   (`AF_INET`+`SOCK_PACKET`), whose type and protocol `cgroup/sock_create`
//!   judges (TCP and UDP only, refusals recorded); routing netlink.
//!   socketpair(2) for Unix sockets only. Everything else — `AF_PACKET`,
//!   `AF_XDP`, `AF_VSOCK`, TIPC, RDS… — fails with `EPERM`.
//! * io_uring: refused (setup, enter and register), because its socket and
//!   connect operations do not pass through seccomp, and a ring made by
//!   another process could be handed over.
//! * Other ABIs: the x32 ABI (system call numbers with bit 30 set on
//!   x86-64) is refused outright; the 32-bit compat ABI has its socket,
//!   socketcall, socketpair and io_uring calls refused; an unknown
//!   architecture gets `EPERM` for everything.
//! * Reaching into other processes: ptrace, process_vm_readv/writev and
//!   pidfd_getfd are refused unless the identity keeps `sys_ptrace`: an
//!   agent running as the same user as another identity's agent could
//!   otherwise act through it, or take its sockets.
//! * Re-scheduling other processes: `sched_setscheduler`, `sched_setparam`,
//!   `sched_setattr`, `sched_setaffinity`, `setpriority`, `ioprio_set`,
//!   `prlimit64`, `migrate_pages` and `move_pages` only on the caller
//!   itself (pid 0). A root agent could otherwise make the daemon (same
//!   user) `SCHED_IDLE`, nice 19 and pinned to one busy CPU, or lower its
//!   limits, and starve every identity's gateway, DNS and decisions. (The
//!   32-bit ABI gets them refused outright.)
//! * User namespaces: `unshare` and `clone` with `CLONE_NEWUSER` are
//!   refused, `setns` outright, and `clone3` (whose flags a filter cannot
//!   read) answers `ENOSYS`, so C libraries fall back to `clone`. In a user
//!   namespace of its own, with every id mapped (a root agent keeps
//!   `CAP_SETUID`), an agent holds every capability exec dropped over
//!   every file of the host: `CAP_DAC_OVERRIDE` read other users' secrets.
//! * Kernel keyrings: `add_key`, `request_key` and `keyctl` are refused.
//!   Keyrings are not namespaced: a root agent shares root's user keyring
//!   with the host's root processes, read what they keep there and planted
//!   keys they look up.
//! * Typing into the terminal: `ioctl(TIOCSTI)` (push input into a tty's
//!   queue) and `TIOCLINUX` (its console relative, which can paste) are
//!   refused on every ABI. An agent run from an interactive shell shares
//!   its controlling terminal; a command typed there runs in the shell,
//!   outside the agent's identity, when the agent exits — to a denied
//!   host, or `palisade approve` as the operator.

use std::io;

use agent_common::guard::{AF_NETLINK, AF_UNIX, NETLINK_ROUTE, SOCK_PACKET, SOCK_TYPE_MASK};

// Classic BPF opcodes (linux/filter.h).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_ALU_AND_K: u16 = 0x54;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;

const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const DENY: u32 = SECCOMP_RET_ERRNO | libc::EPERM as u32;
const NOSYS: u32 = SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
const BPF_JSET_K: u16 = 0x45;
const CLONE_NEWUSER: u32 = 0x1000_0000;

// struct seccomp_data offsets (arguments: their low 32 bits, which is all
// the kernel reads of an `int` argument).
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0: u32 = 16;
const ARG1: u32 = 24;
const ARG2: u32 = 32;

const AF_INET: u32 = 2;
/// ioctl requests that put input into a terminal.
const TIOCSTI: u32 = 0x5412;
const TIOCLINUX: u32 = 0x541C;
const PRIO_PROCESS: u32 = 0;
const IOPRIO_WHO_PROCESS: u32 = 1;
const AF_INET6: u32 = 10;

/// System call numbers by ABI.
struct Abi {
    socket: Option<u32>,
    socketpair: Option<u32>,
    /// Refused outright (io_uring, and socketcall where there is one).
    always: &'static [u32],
    /// Refused unless the identity keeps `sys_ptrace`.
    ptrace: &'static [u32],
    /// Their first argument is a pid: allowed only for 0 (the caller).
    own_pid: &'static [u32],
    /// `setpriority` and `ioprio_set`: allowed only for (the "process"
    /// kind, 0): the caller.
    setpriority: Option<u32>,
    ioprio_set: Option<u32>,
    /// Judged by its request (`TIOCSTI`, `TIOCLINUX` refused).
    ioctl: u32,
    /// `unshare` and `clone`: their first argument holds the namespace
    /// flags; refused with `CLONE_NEWUSER`.
    ns_flags: &'static [u32],
    /// `clone3`: answers `ENOSYS` (its flags are behind a pointer).
    clone3: u32,
}

#[cfg(target_arch = "x86_64")]
mod arch {
    use super::Abi;
    pub const AUDIT_ARCH: u32 = 0xC000_003E;
    pub const COMPAT_ARCH: u32 = 0x4000_0003; // i386
    /// x32 system calls run with this bit set under the x86-64 arch value.
    pub const X32_BIT: Option<u32> = Some(0x4000_0000);
    pub const NATIVE: Abi = Abi {
        socket: Some(41),
        socketpair: Some(53),
        // io_uring_*; add_key, request_key, keyctl; setns.
        always: &[425, 426, 427, 248, 249, 250, 308],
        ptrace: &[101, 310, 311, 438],
        // sched_setparam, sched_setscheduler, sched_setaffinity,
        // migrate_pages, move_pages, prlimit64, sched_setattr.
        own_pid: &[142, 144, 203, 256, 279, 302, 314],
        setpriority: Some(141),
        ioprio_set: Some(251),
        ioctl: 16,
        // unshare, clone.
        ns_flags: &[272, 56],
        clone3: 435,
    };
    pub const COMPAT: Abi = Abi {
        socket: None,
        socketpair: None,
        // socketcall, socket, socketpair, io_uring_*; setpriority,
        // sched_setparam, sched_setscheduler, sched_setaffinity,
        // ioprio_set, migrate_pages, move_pages, prlimit64, sched_setattr;
        // add_key, request_key, keyctl; setns.
        always: &[
            102, 359, 360, 425, 426, 427, 97, 154, 156, 241, 289, 294, 317, 340, 351, 286, 287,
            288, 346,
        ],
        ptrace: &[26, 347, 348, 438],
        own_pid: &[],
        setpriority: None,
        ioprio_set: None,
        ioctl: 54,
        // unshare, clone.
        ns_flags: &[310, 120],
        clone3: 435,
    };
}

#[cfg(target_arch = "aarch64")]
mod arch {
    use super::Abi;
    pub const AUDIT_ARCH: u32 = 0xC000_00B7;
    pub const COMPAT_ARCH: u32 = 0x4000_0028; // arm
    pub const X32_BIT: Option<u32> = None;
    pub const NATIVE: Abi = Abi {
        socket: Some(198),
        socketpair: Some(199),
        // io_uring_*; add_key, request_key, keyctl; setns.
        always: &[425, 426, 427, 217, 218, 219, 268],
        ptrace: &[117, 270, 271, 438],
        own_pid: &[118, 119, 122, 238, 239, 261, 274],
        setpriority: Some(140),
        ioprio_set: Some(30),
        ioctl: 29,
        // unshare, clone.
        ns_flags: &[97, 220],
        clone3: 435,
    };
    pub const COMPAT: Abi = Abi {
        socket: None,
        socketpair: None,
        always: &[
            281, 288, 425, 426, 427, 97, 154, 156, 241, 314, 344, 369, 380, 400, 309, 310, 311, 375,
        ],
        ptrace: &[26, 376, 377, 438],
        own_pid: &[],
        setpriority: None,
        ioprio_set: None,
        ioctl: 54,
        // unshare, clone.
        ns_flags: &[337, 120],
        clone3: 435,
    };
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

/// Where a jump goes: the next instruction or a label.
#[derive(Clone, Copy, PartialEq, Eq)]
enum To {
    Next,
    L(&'static str),
}

enum Op {
    Stmt(u16, u32),
    Jump(u16, u32, To, To),
    Label(&'static str),
}

/// A tiny assembler: forward jumps to labels, resolved at the end.
#[derive(Default)]
struct Asm(Vec<Op>);

impl Asm {
    fn load(&mut self, at: u32) -> &mut Self {
        self.0.push(Op::Stmt(BPF_LD_W_ABS, at));
        self
    }
    fn and(&mut self, k: u32) -> &mut Self {
        self.0.push(Op::Stmt(BPF_ALU_AND_K, k));
        self
    }
    fn ret(&mut self, k: u32) -> &mut Self {
        self.0.push(Op::Stmt(BPF_RET_K, k));
        self
    }
    fn jeq(&mut self, k: u32, to: &'static str) -> &mut Self {
        self.0.push(Op::Jump(BPF_JEQ_K, k, To::L(to), To::Next));
        self
    }
    /// Jump when any bit of `k` is set.
    fn jset(&mut self, k: u32, to: &'static str) -> &mut Self {
        self.0.push(Op::Jump(BPF_JSET_K, k, To::L(to), To::Next));
        self
    }
    fn jge(&mut self, k: u32, to: &'static str) -> &mut Self {
        self.0.push(Op::Jump(BPF_JGE_K, k, To::L(to), To::Next));
        self
    }
    fn label(&mut self, name: &'static str) -> &mut Self {
        self.0.push(Op::Label(name));
        self
    }

    fn finish(&self) -> Vec<Insn> {
        let mut at = std::collections::HashMap::new();
        let mut pc = 0usize;
        for op in &self.0 {
            match op {
                Op::Label(l) => {
                    at.insert(*l, pc);
                }
                _ => pc += 1,
            }
        }
        let mut out = Vec::with_capacity(pc);
        for op in &self.0 {
            let here = out.len();
            let off = |to: To| -> u8 {
                match to {
                    To::Next => 0,
                    To::L(l) => {
                        let target = at[l];
                        u8::try_from(target - here - 1).expect("seccomp jump within 255")
                    }
                }
            };
            match *op {
                Op::Label(_) => {}
                Op::Stmt(code, k) => out.push(Insn {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                }),
                Op::Jump(code, k, t, f) => out.push(Insn {
                    code,
                    jt: off(t),
                    jf: off(f),
                    k,
                }),
            }
        }
        out
    }
}

/// What the filter lets through beyond the default.
#[derive(Clone, Copy, Debug, Default)]
pub struct FilterOptions {
    /// The identity keeps `sys_ptrace`: ptrace and friends are allowed.
    pub allow_ptrace: bool,
}

/// The filter program (see the module comment for what it refuses).
fn program(opts: FilterOptions) -> Vec<Insn> {
    let mut a = Asm::default();
    a.load(ARCH)
        .jeq(arch::AUDIT_ARCH, "native")
        .jeq(arch::COMPAT_ARCH, "compat")
        .ret(DENY);

    a.label("compat").load(NR);
    for nr in arch::COMPAT.always {
        a.jeq(*nr, "deny");
    }
    if !opts.allow_ptrace {
        for nr in arch::COMPAT.ptrace {
            a.jeq(*nr, "deny");
        }
    }
    let _ = (arch::COMPAT.socket, arch::COMPAT.socketpair);
    for nr in arch::COMPAT.ns_flags {
        a.jeq(*nr, "ns_flags");
    }
    a.jeq(arch::COMPAT.clone3, "nosys");
    a.jeq(arch::COMPAT.ioctl, "ioctl");
    a.ret(SECCOMP_RET_ALLOW);

    a.label("native").load(NR);
    if let Some(bit) = arch::X32_BIT {
        a.jge(bit, "deny");
    }
    if let Some(nr) = arch::NATIVE.socket {
        a.jeq(nr, "socket");
    }
    if let Some(nr) = arch::NATIVE.socketpair {
        a.jeq(nr, "socketpair");
    }
    for nr in arch::NATIVE.always {
        a.jeq(*nr, "deny");
    }
    if !opts.allow_ptrace {
        for nr in arch::NATIVE.ptrace {
            a.jeq(*nr, "deny");
        }
    }
    for nr in arch::NATIVE.own_pid {
        a.jeq(*nr, "own_pid");
    }
    if let Some(nr) = arch::NATIVE.setpriority {
        a.jeq(nr, "setpriority");
    }
    if let Some(nr) = arch::NATIVE.ioprio_set {
        a.jeq(nr, "ioprio_set");
    }
    for nr in arch::NATIVE.ns_flags {
        a.jeq(*nr, "ns_flags");
    }
    a.jeq(arch::NATIVE.clone3, "nosys");
    a.jeq(arch::NATIVE.ioctl, "ioctl");
    a.ret(SECCOMP_RET_ALLOW);

    // unshare(flags) and clone(flags, …): no user namespace.
    a.label("ns_flags")
        .load(ARG0)
        .jset(CLONE_NEWUSER, "deny")
        .ret(SECCOMP_RET_ALLOW);
    a.label("nosys").ret(NOSYS);

    // ioctl(fd, request, …): no typing into a terminal.
    a.label("ioctl")
        .load(ARG1)
        .jeq(TIOCSTI, "deny")
        .jeq(TIOCLINUX, "deny")
        .ret(SECCOMP_RET_ALLOW);

    a.label("own_pid").load(ARG0).jeq(0, "allow").ret(DENY);
    // (PRIO_PROCESS, 0) and (IOPRIO_WHO_PROCESS, 0): the caller.
    a.label("setpriority")
        .load(ARG0)
        .jeq(PRIO_PROCESS, "who_self")
        .ret(DENY);
    a.label("ioprio_set")
        .load(ARG0)
        .jeq(IOPRIO_WHO_PROCESS, "who_self")
        .ret(DENY);
    a.label("who_self").load(ARG1).jeq(0, "allow").ret(DENY);

    // socket(family, type, protocol): `socket_family_allowed`.
    a.label("socket")
        .load(ARG0)
        .jeq(AF_UNIX, "allow")
        .jeq(AF_INET, "inet")
        .jeq(AF_INET6, "inet")
        .jeq(AF_NETLINK, "netlink")
        .ret(DENY);
    a.label("inet")
        .load(ARG1)
        .and(SOCK_TYPE_MASK)
        .jeq(SOCK_PACKET, "deny")
        .ret(SECCOMP_RET_ALLOW);
    a.label("netlink")
        .load(ARG2)
        .jeq(NETLINK_ROUTE, "allow")
        .ret(DENY);
    a.label("socketpair")
        .load(ARG0)
        .jeq(AF_UNIX, "allow")
        .ret(DENY);
    a.label("allow").ret(SECCOMP_RET_ALLOW);
    a.label("deny").ret(DENY);
    a.finish()
}

/// Install the filter on the calling thread (before exec). Sets
/// no_new_privs first, which the kernel requires of unprivileged callers.
pub fn install(opts: FilterOptions) -> io::Result<()> {
    let prog = program(opts);
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: plain prctl calls; `fprog` points at a live, well-formed
    // program for the duration of the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &fprog as *const libc::sock_fprog,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use agent_common::guard::{socket_family_allowed, socketpair_allowed};

    use super::*;

    /// Run the filter like the kernel would for (arch, nr, args).
    fn run(opts: FilterOptions, arch: u32, nr: u32, args: [u32; 3]) -> u32 {
        let p = program(opts);
        let mut pc = 0;
        let mut acc = 0u32;
        loop {
            let i = p[pc];
            match i.code {
                BPF_LD_W_ABS => {
                    acc = match i.k {
                        ARCH => arch,
                        NR => nr,
                        ARG0 => args[0],
                        ARG1 => args[1],
                        ARG2 => args[2],
                        _ => panic!("unexpected load {}", i.k),
                    };
                    pc += 1;
                }
                BPF_ALU_AND_K => {
                    acc &= i.k;
                    pc += 1;
                }
                BPF_JEQ_K => pc += 1 + usize::from(if acc == i.k { i.jt } else { i.jf }),
                BPF_JGE_K => pc += 1 + usize::from(if acc >= i.k { i.jt } else { i.jf }),
                BPF_RET_K => return i.k,
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    const A: u32 = arch::AUDIT_ARCH;
    const OFF: FilterOptions = FilterOptions {
        allow_ptrace: false,
    };

    #[test]
    fn socket_filter_is_the_family_allowlist() {
        let Some(socket) = arch::NATIVE.socket else {
            return;
        };
        for family in 0..64u32 {
            for ty in [1u32, 2, 3, 5, 10, 10 | 0o2000000, 1 | 0o4000] {
                for proto in [0u32, 1, 6, 17, 132, 262] {
                    let want = if socket_family_allowed(family, ty, proto) {
                        SECCOMP_RET_ALLOW
                    } else {
                        DENY
                    };
                    assert_eq!(
                        run(OFF, A, socket, [family, ty, proto]),
                        want,
                        "socket({family}, {ty:#x}, {proto})"
                    );
                }
            }
        }
        let pair = arch::NATIVE.socketpair.unwrap_or(u32::MAX);
        for family in 0..64u32 {
            let want = if socketpair_allowed(family) {
                SECCOMP_RET_ALLOW
            } else {
                DENY
            };
            assert_eq!(
                run(OFF, A, pair, [family, 1, 0]),
                want,
                "socketpair({family})"
            );
        }
    }

    #[test]
    fn refuses_io_uring_other_abis_and_ptrace_unless_kept() {
        for nr in arch::NATIVE.always {
            assert_eq!(run(OFF, A, *nr, [0; 3]), DENY);
        }
        for nr in arch::NATIVE.ptrace {
            assert_eq!(run(OFF, A, *nr, [0; 3]), DENY);
            let keep = FilterOptions { allow_ptrace: true };
            assert_eq!(run(keep, A, *nr, [0; 3]), SECCOMP_RET_ALLOW);
        }
        assert_eq!(run(OFF, A, 0, [17, 0, 0]), SECCOMP_RET_ALLOW, "read(17, …)");
        if let Some(bit) = arch::X32_BIT {
            assert_eq!(run(OFF, A, bit | 41, [2, 1, 0]), DENY, "x32 socket");
            assert_eq!(run(OFF, A, bit, [0; 3]), DENY, "x32 read");
        }
        for nr in arch::COMPAT.always {
            assert_eq!(run(OFF, arch::COMPAT_ARCH, *nr, [1, 1, 0]), DENY);
        }
        assert_eq!(run(OFF, arch::COMPAT_ARCH, 3, [0; 3]), SECCOMP_RET_ALLOW);
        assert_eq!(run(OFF, 0x1234, 0, [0; 3]), DENY, "unknown ABI");
    }

    #[test]
    fn no_typing_into_the_terminal() {
        for (arch, nr) in [
            (A, arch::NATIVE.ioctl),
            (arch::COMPAT_ARCH, arch::COMPAT.ioctl),
        ] {
            assert_eq!(run(OFF, arch, nr, [0, TIOCSTI, 0]), DENY, "TIOCSTI");
            assert_eq!(run(OFF, arch, nr, [0, TIOCLINUX, 0]), DENY, "TIOCLINUX");
            // TCGETS, TIOCGWINSZ: what terminal programs need.
            assert_eq!(run(OFF, arch, nr, [0, 0x5401, 0]), SECCOMP_RET_ALLOW);
            assert_eq!(run(OFF, arch, nr, [1, 0x5413, 0]), SECCOMP_RET_ALLOW);
        }
    }

    #[test]
    fn scheduling_calls_reach_only_the_caller() {
        for nr in arch::NATIVE.own_pid {
            assert_eq!(run(OFF, A, *nr, [0, 1, 0]), SECCOMP_RET_ALLOW, "{nr}(0)");
            assert_eq!(run(OFF, A, *nr, [4242, 1, 0]), DENY, "{nr}(4242)");
        }
        let prio = arch::NATIVE.setpriority.unwrap_or(u32::MAX);
        assert_eq!(run(OFF, A, prio, [0, 0, 10]), SECCOMP_RET_ALLOW, "own nice");
        assert_eq!(run(OFF, A, prio, [0, 4242, 19]), DENY, "another pid");
        assert_eq!(
            run(OFF, A, prio, [2, 0, 19]),
            DENY,
            "PRIO_USER: all of root's"
        );
        assert_eq!(run(OFF, A, prio, [1, 0, 19]), DENY, "PRIO_PGRP");
        let io = arch::NATIVE.ioprio_set.unwrap_or(u32::MAX);
        assert_eq!(
            run(OFF, A, io, [1, 0, 0]),
            SECCOMP_RET_ALLOW,
            "own I/O priority"
        );
        assert_eq!(run(OFF, A, io, [1, 4242, 0]), DENY);
        assert_eq!(run(OFF, A, io, [3, 0, 0]), DENY, "IOPRIO_WHO_USER");
    }
}
