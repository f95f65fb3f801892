//! A seccomp filter `palisade exec` installs before running an agent:
//! packet sockets (`AF_PACKET`, `AF_XDP`) put frames on the wire below the
//! cgroup socket hooks, and not every kernel lets a BPF LSM program refuse
//! them. io_uring is refused too, because its socket opcode does not pass
//! through seccomp. The filter is inherited by every child and cannot be
//! removed.

use std::io;

// Classic BPF opcodes (linux/filter.h).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;

const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const DENY: u32 = SECCOMP_RET_ERRNO | libc::EPERM as u32;

// struct seccomp_data offsets.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0: u32 = 16;

const AF_PACKET: u32 = 17;
const AF_XDP: u32 = 44;

#[cfg(target_arch = "x86_64")]
mod arch {
    pub const AUDIT_ARCH: u32 = 0xC000_003E;
    pub const NR_SOCKET: u32 = 41;
    pub const NR_IO_URING_SETUP: u32 = 425;
    /// The 32-bit ABI (int 0x80) has its own numbers: refuse its socket
    /// entry points outright rather than parse socketcall arguments.
    pub const COMPAT_DENY: &[u32] = &[102 /* socketcall */, 359 /* socket */, 425];
}

#[cfg(target_arch = "aarch64")]
mod arch {
    pub const AUDIT_ARCH: u32 = 0xC000_00B7;
    pub const NR_SOCKET: u32 = 198;
    pub const NR_IO_URING_SETUP: u32 = 425;
    pub const COMPAT_DENY: &[u32] = &[281 /* socket */, 425];
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

const fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(k: u32, jt: u8, jf: u8) -> Insn {
    Insn {
        code: BPF_JEQ_K,
        jt,
        jf,
        k,
    }
}

/// The filter program (see the module comment for what it refuses).
fn program() -> Vec<Insn> {
    let mut p = vec![stmt(BPF_LD_W_ABS, ARCH), jump(arch::AUDIT_ARCH, 0, 0)];
    // Foreign ABI: refuse its socket calls, allow the rest.
    let mut compat = vec![stmt(BPF_LD_W_ABS, NR)];
    for nr in arch::COMPAT_DENY {
        compat.push(jump(*nr, 0, 1));
        compat.push(stmt(BPF_RET_K, DENY));
    }
    compat.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    // Native ABI.
    let native = vec![
        stmt(BPF_LD_W_ABS, NR),
        jump(arch::NR_IO_URING_SETUP, 0, 1),
        stmt(BPF_RET_K, DENY),
        jump(arch::NR_SOCKET, 0, 3),
        stmt(BPF_LD_W_ABS, ARG0),
        jump(AF_PACKET, 2, 0),
        jump(AF_XDP, 1, 0),
        stmt(BPF_RET_K, SECCOMP_RET_ALLOW),
        stmt(BPF_RET_K, DENY),
    ];
    // Jump over the compat block when the arch is native.
    p[1].jt = compat.len() as u8;
    p.extend(compat);
    p.extend(native);
    p
}

/// Install the filter on the calling thread (before exec). Unprivileged
/// callers must set no_new_privs first, which the kernel requires.
pub fn refuse_packet_sockets() -> io::Result<()> {
    let prog = program();
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: plain prctl calls; `fprog` points at a live, well-formed
    // program for the duration of the call.
    unsafe {
        if libc::geteuid() != 0 && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
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
    use super::*;

    /// Walk the filter like the kernel would for (arch, nr, arg0).
    fn run(arch: u32, nr: u32, arg0: u32) -> u32 {
        let p = program();
        let mut pc = 0;
        let mut acc = 0u32;
        loop {
            let i = p[pc];
            match i.code {
                BPF_LD_W_ABS => {
                    acc = match i.k {
                        ARCH => arch,
                        NR => nr,
                        ARG0 => arg0,
                        _ => panic!("unexpected load {}", i.k),
                    };
                    pc += 1;
                }
                BPF_JEQ_K => pc += 1 + usize::from(if acc == i.k { i.jt } else { i.jf }),
                BPF_RET_K => return i.k,
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn refuses_packet_sockets_and_io_uring_only() {
        let a = arch::AUDIT_ARCH;
        assert_eq!(run(a, arch::NR_SOCKET, AF_PACKET), DENY);
        assert_eq!(run(a, arch::NR_SOCKET, AF_XDP), DENY);
        assert_eq!(run(a, arch::NR_SOCKET, 2), SECCOMP_RET_ALLOW);
        assert_eq!(run(a, arch::NR_SOCKET, 10), SECCOMP_RET_ALLOW);
        assert_eq!(run(a, arch::NR_IO_URING_SETUP, 0), DENY);
        assert_eq!(
            run(a, 0, AF_PACKET),
            SECCOMP_RET_ALLOW,
            "read(17, …) is fine"
        );
        assert_eq!(run(0x4000_0003, arch::COMPAT_DENY[0], 0), DENY);
        assert_eq!(run(0x4000_0003, 3, 0), SECCOMP_RET_ALLOW);
    }
}
