//! Types of the guards that keep an enrolled process from going around the
//! connect hooks: its lineage (who it descends from, wherever it moves), the
//! identity stamped on each of its sockets, the socket families it may
//! create, and the settings the daemon hands the guard programs.

/// Per socket (`SOCK_GUARD`, socket-local storage cloned to accepted
/// sockets): who uses the socket and, once it is connected under an allow
/// verdict, what that verdict rests on. Unenrolled sockets have no entry at
/// all. One storage for both, so that a connect allocates once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockGuard {
    /// The identity of the enrolled process that created, connected or
    /// last sent through the socket. First, at offset 0: `sock_diag` reads
    /// it there.
    pub identity: u32,
    /// `SOCK_KILL_REPORTED`…
    pub flags: u32,
    pub judged: SockJudged,
}
const _: () = assert!(size_of::<SockGuard>() == 48);

/// `SockGuard::flags`: the kill-switch drop of this socket was recorded
/// once already (its later packets are only counted).
pub const SOCK_KILL_REPORTED: u32 = 1;

/// The destination a connect was last allowed to, and what that verdict
/// rested on, so the egress program can judge the socket again once the
/// permission may have ended — a new policy generation, a grant or
/// elevation ended early (`rejudge_epoch`), the expiry of the grant that
/// admitted it — or when the socket is connected somewhere else than the
/// judged destination (a connect the hook allowed may still fail in the
/// kernel and leave the socket connected to its earlier peer). Sockets
/// never connected under a policy verdict (unconnected UDP, judged per
/// datagram) carry no `JUDGED_VALID`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockJudged {
    /// `JUDGED_VALID`…
    pub flags: u32,
    /// Policy generation number of the last judgement.
    pub generation: u32,
    /// `GuardConfig::rejudge_epoch` at the last judgement.
    pub epoch: u32,
    /// The judged destination's port (host order), and 1 for IPv6.
    pub port: u16,
    pub is_v6: u8,
    pub _pad: u8,
    /// Boot-clock nanoseconds after which the judgement lapses (the expiry
    /// of the grant that admitted it), `u64::MAX` for none.
    pub recheck_ns: u64,
    /// The judged destination (`NormAddr::bytes`).
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<SockJudged>() == 40);

/// `SockJudged::flags`: the socket was connected under an allow verdict.
pub const JUDGED_VALID: u32 = 1;
/// Admitted by an address learned from DNS: the name's TTL running out
/// does not end an open connection, so when nothing else admits it, it is
/// kept as long as the identity still has host rules and no deny names it.
pub const JUDGED_VIA_LEARNED: u32 = 2;
/// The permission ended: every further packet is dropped (a bare RST
/// excepted) until the socket is connected again.
pub const JUDGED_CUT: u32 = 4;

/// `GuardConfig::flags`: the daemon found no BPF LSM, so the syscall
/// tracepoints stand in for it (and kill what they refuse).
pub const GUARD_SYSCALL_FALLBACK: u32 = 1;

/// [0] of `GUARD_CFG`: what the daemon tells the guard programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardConfig {
    /// `GUARD_SYSCALL_FALLBACK`…
    pub flags: u32,
    /// The daemon's loopback TCP API port (host order); 0 when it has none.
    pub api_port: u16,
    /// 1 when the API address is IPv6.
    pub api_v6: u8,
    pub _pad: u8,
    /// The API's address, normalised (`NormAddr::bytes`).
    pub api_addr: [u8; 16],
    /// Offsets into kernel structures, from this kernel's BTF, for the raw
    /// tracepoints of the lineage (`task_struct.pid`, `cgroup.kn`,
    /// `kernfs_node.id`, `cgroup.root`, `cgroup_root.hierarchy_id`). Zero
    /// until the daemon has set them; the programs do nothing until then.
    pub task_pid: u16,
    pub cgroup_kn: u16,
    pub kernfs_id: u16,
    pub cgroup_root: u16,
    pub root_hierarchy: u16,
    /// `task_struct.thread_info.status` (x86), whose `TS_COMPAT` bit marks
    /// a 32-bit system call; 0 where there is none.
    pub task_status: u16,
    /// Bumped by the daemon whenever a grant or elevation ends or shrinks
    /// before its expiry: every connected socket judged under an older
    /// value is judged again at its next packet (`SockJudged`).
    pub rejudge_epoch: u32,
}
const _: () = assert!(size_of::<GuardConfig>() == 40);

/// `SOCK_TYPE_MASK`: the type argument of socket(2) carries flags above it.
pub const SOCK_TYPE_MASK: u32 = 0xf;
pub const SOCK_STREAM: u32 = 1;
pub const SOCK_DGRAM: u32 = 2;
pub const SOCK_RAW: u32 = 3;
pub const AF_UNIX: u32 = 1;
pub const AF_NETLINK: u32 = 16;
pub const NETLINK_ROUTE: u32 = 0;

/// The sockets an enrolled process may create, the same everywhere it is
/// checked (the LSM program, the syscall tracepoints, the seccomp filter of
/// `palisade exec`): Unix sockets; TCP and UDP over IPv4 and IPv6 (their
/// traffic passes the connect, sendmsg and egress hooks); and routing
/// netlink, which the C library needs to list addresses. Everything else —
/// packet sockets under any name (`AF_PACKET`, `AF_INET`+`SOCK_PACKET`),
/// raw and ICMP sockets, SCTP, MPTCP, vsock, XDP, TIPC, RDS… — is refused.
#[inline(always)]
pub const fn socket_allowed(family: u32, sock_type: u32, protocol: u32) -> bool {
    let ty = sock_type & SOCK_TYPE_MASK;
    match family {
        AF_UNIX => true,
        2 | 10 => match ty {
            SOCK_STREAM => protocol == 0 || protocol == crate::IPPROTO_TCP as u32,
            SOCK_DGRAM => protocol == 0 || protocol == crate::IPPROTO_UDP as u32,
            _ => false,
        },
        AF_NETLINK => protocol == NETLINK_ROUTE && (ty == SOCK_RAW || ty == SOCK_DGRAM),
        _ => false,
    }
}

/// `SOCK_PACKET`: under `AF_INET` the kernel turns it into a packet socket.
pub const SOCK_PACKET: u32 = 10;

/// The same allowlist where only the family can be judged (the seccomp
/// filter of `palisade exec`, the syscall tracepoints): inet sockets other
/// than packet sockets are left to `cgroup/sock_create`, which sees every
/// inet socket an enrolled process creates, refuses all but TCP and UDP
/// with `EPERM` and records the refusal. A packet socket made through
/// `AF_INET`+`SOCK_PACKET` never reaches that hook, so it is refused here.
#[inline(always)]
pub const fn socket_family_allowed(family: u32, sock_type: u32, protocol: u32) -> bool {
    match family {
        AF_UNIX => true,
        2 | 10 => sock_type & SOCK_TYPE_MASK != SOCK_PACKET,
        AF_NETLINK => protocol == NETLINK_ROUTE,
        _ => false,
    }
}

/// socketpair(2) creates only Unix sockets for enrolled processes.
#[inline(always)]
pub const fn socketpair_allowed(family: u32) -> bool {
    family == AF_UNIX
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, no padding (size assertions above).
    unsafe impl aya::Pod for super::SockGuard {}
    unsafe impl aya::Pod for super::GuardConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist() {
        assert!(socket_allowed(AF_UNIX, SOCK_STREAM, 0));
        assert!(
            socket_allowed(2, SOCK_STREAM | 0o2000000, 0),
            "SOCK_CLOEXEC masked"
        );
        assert!(socket_allowed(10, SOCK_DGRAM, 17));
        assert!(!socket_allowed(2, 10, 0), "SOCK_PACKET under AF_INET");
        assert!(!socket_allowed(2, SOCK_RAW, 1));
        assert!(!socket_allowed(2, SOCK_DGRAM, 1), "ICMP datagram");
        assert!(!socket_allowed(2, SOCK_STREAM, 262), "MPTCP");
        assert!(!socket_allowed(2, 5, 132), "SCTP");
        assert!(!socket_allowed(17, SOCK_RAW, 0), "AF_PACKET");
        assert!(!socket_allowed(40, SOCK_STREAM, 0), "AF_VSOCK");
        assert!(!socket_allowed(44, SOCK_RAW, 0), "AF_XDP");
        assert!(socket_allowed(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE));
        assert!(!socket_allowed(AF_NETLINK, SOCK_RAW, 4), "sock_diag");
        assert!(
            socket_family_allowed(2, SOCK_RAW, 1),
            "left to cgroup/sock_create"
        );
        assert!(!socket_family_allowed(2, SOCK_PACKET | 0o4000, 0));
        assert!(!socket_family_allowed(17, SOCK_RAW, 0));
        assert!(!socket_family_allowed(40, SOCK_STREAM, 0));
        assert!(!socket_family_allowed(AF_NETLINK, SOCK_RAW, 4));
        // Whatever the narrow check lets through, the full one judges the
        // same way or leaves it to the cgroup hook (inet only).
        for family in 0..64 {
            for ty in 0..16 {
                for protocol in [0, 1, 4, 6, 17, 132, 262] {
                    if socket_allowed(family, ty, protocol) {
                        assert!(socket_family_allowed(family, ty, protocol));
                    } else if socket_family_allowed(family, ty, protocol) {
                        // Inet is left to cgroup/sock_create; netlink of a
                        // type other than raw or datagram the kernel refuses
                        // itself (ESOCKTNOSUPPORT).
                        let kernel_refuses =
                            family == AF_NETLINK && ty != SOCK_RAW && ty != SOCK_DGRAM;
                        assert!(
                            family == 2 || family == 10 || kernel_refuses,
                            "{family}/{ty}/{protocol}"
                        );
                    }
                }
            }
        }
        assert!(socketpair_allowed(AF_UNIX));
        assert!(!socketpair_allowed(30), "TIPC");
    }
}
