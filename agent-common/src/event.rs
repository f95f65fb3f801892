//! The record a hook writes to the ring buffer for every deny and would-deny.

/// Which hook produced an event.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Connect4 = 1,
    Connect6 = 2,
    Sendmsg4 = 3,
    Sendmsg6 = 4,
    SockCreate = 5,
    SocketLsm = 6,
    /// `cgroup_skb/egress`: where packets leave (source routes, kill switch).
    Egress = 7,
    /// `cgroup/setsockopt`: options that set a source route.
    Setsockopt = 8,
    /// `syscalls/sys_enter_socket*`: the refusal of hosts without BPF LSM.
    SocketSyscall = 9,
    /// `cgroup/bind4` and `cgroup/bind6`: binds to the daemon's addresses.
    Bind4 = 10,
    Bind6 = 11,
}

impl Hook {
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Connect4,
            2 => Self::Connect6,
            3 => Self::Sendmsg4,
            4 => Self::Sendmsg6,
            5 => Self::SockCreate,
            6 => Self::SocketLsm,
            7 => Self::Egress,
            8 => Self::Setsockopt,
            9 => Self::SocketSyscall,
            10 => Self::Bind4,
            11 => Self::Bind6,
            _ => return None,
        })
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Connect4 => "connect4",
            Self::Connect6 => "connect6",
            Self::Sendmsg4 => "sendmsg4",
            Self::Sendmsg6 => "sendmsg6",
            Self::SockCreate => "sock_create",
            Self::SocketLsm => "socket_create",
            Self::Egress => "egress",
            Self::Setsockopt => "setsockopt",
            Self::SocketSyscall => "sys_enter_socket",
            Self::Bind4 => "bind4",
            Self::Bind6 => "bind6",
        }
    }
}

/// What the kernel did.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow = 0,
    Deny = 1,
    /// Audit (shadow) mode: the policy would deny, the kernel allowed.
    Audit = 2,
}

impl Verdict {
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Allow,
            1 => Self::Deny,
            2 => Self::Audit,
            _ => return None,
        })
    }
}

/// Why the kernel decided as it did.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    AllowRule = 0,
    /// No allow rule matched.
    DefaultDeny = 1,
    /// A deny rule matched (deny wins over allow).
    DenyRule = 2,
    /// The identity's kill switch is on.
    KillSwitch = 3,
    /// The process is enrolled but the active policy does not define its
    /// identity.
    UnknownIdentity = 4,
    /// A socket type enrolled processes may not create (raw, packet, ICMP…).
    SocketType = 5,
    /// A connection straight to a DNS proxy address other than through the
    /// kernel's DNS steering (which could impersonate another identity).
    DnsProxyDirect = 6,
    /// A packet carrying IPv4 options or an IPv6 routing header, or a socket
    /// option that would set one: the packet would go somewhere other than
    /// the destination the hooks judged.
    SourceRoute = 7,
    /// The daemon's own TCP API port, which agents may not reach unless
    /// their policy says `confinement.api_tcp: true`.
    ApiPort = 8,
    /// Allowed only by a break-glass elevation's grant (recorded as an
    /// allow event; the rule field carries the elevation number).
    Elevation = 9,
    /// A packet of a connection whose permission has ended since it was
    /// opened (its grant or elevation expired, or a reload or revocation
    /// took the rule away): dropped where it leaves.
    PermissionEnded = 10,
    /// A bind to an address or port where the daemon serves agents (the
    /// gateway, the DNS proxies, the TCP API): a process holding it could
    /// answer other agents' calls, or keep the daemon from serving them.
    DaemonAddress = 11,
    /// A socket of an enrolled process that the kernel could not give its
    /// identity stamp (no memory, or the socket's option memory spent):
    /// packets of an unstamped socket would escape the kill switch and the
    /// re-judging where they leave, so it may not be used, in any mode.
    SocketUntracked = 12,
}

impl Reason {
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::AllowRule,
            1 => Self::DefaultDeny,
            2 => Self::DenyRule,
            3 => Self::KillSwitch,
            4 => Self::UnknownIdentity,
            5 => Self::SocketType,
            6 => Self::DnsProxyDirect,
            7 => Self::SourceRoute,
            8 => Self::ApiPort,
            9 => Self::Elevation,
            10 => Self::PermissionEnded,
            11 => Self::DaemonAddress,
            12 => Self::SocketUntracked,
            _ => return None,
        })
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::AllowRule => "allow-rule",
            Self::DefaultDeny => "default-deny",
            Self::DenyRule => "deny-rule",
            Self::KillSwitch => "kill-switch",
            Self::UnknownIdentity => "identity-not-in-policy",
            Self::SocketType => "socket-type-refused",
            Self::DnsProxyDirect => "dns-proxy-direct",
            Self::SourceRoute => "source-route",
            Self::ApiPort => "api-port",
            Self::Elevation => "elevation",
            Self::PermissionEnded => "permission-ended",
            Self::DaemonAddress => "daemon-address",
            Self::SocketUntracked => "socket-untracked",
        }
    }
}

/// One kernel decision worth recording.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// `bpf_ktime_get_boot_ns()` at the decision.
    pub ts_ns: u64,
    pub cgroup_id: u64,
    pub pid: u32,
    pub tgid: u32,
    pub uid: u32,
    pub identity: u32,
    /// Policy generation that decided (full counter, not just the slot).
    pub generation: u32,
    /// Rule index in that generation, or `NO_RULE`.
    pub rule: u32,
    /// Destination, normalised (see `NormAddr`); zero for socket events.
    pub addr: [u8; 16],
    /// Destination port in host order.
    pub port: u16,
    /// `AF_INET` or `AF_INET6` after normalisation; the socket family for
    /// socket-creation events.
    pub family: u16,
    pub protocol: u16,
    /// Socket type (`SOCK_STREAM`, `SOCK_DGRAM`, `SOCK_RAW`…).
    pub sock_type: u8,
    pub hook: u8,
    pub verdict: u8,
    pub reason: u8,
    pub _pad: [u8; 6],
    pub comm: [u8; 16],
}
const _: () = assert!(size_of::<Event>() == 88);

/// Cgroup lifecycle notifications (from the `cgroup_mkdir`/`cgroup_rmdir`
/// tracepoints) so the daemon can enrol cgroups that appear after it started.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CgroupEvent {
    pub id: u64,
    /// Hierarchy id (only the cgroup v2 hierarchy matters).
    pub root: i32,
    pub level: i32,
    /// 1 = created, 2 = removed.
    pub kind: u32,
    pub _pad: u32,
    /// Path relative to the hierarchy root, NUL-terminated.
    pub path: [u8; CGROUP_PATH_MAX],
}
pub const CGROUP_PATH_MAX: usize = 480;
pub const CGROUP_CREATED: u32 = 1;
pub const CGROUP_REMOVED: u32 = 2;
const _: () = assert!(size_of::<CgroupEvent>() == 24 + CGROUP_PATH_MAX);
