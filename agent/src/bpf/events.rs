//! Reading the kernel's ring buffers without blocking the runtime.

use std::{
    net::IpAddr,
    time::{Duration, SystemTime},
};

use agent_common::{CgroupEvent, Event, Hook, NO_RULE, NormAddr, Reason, Verdict};
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use crate::policy::net::ip_of;

/// A kernel decision record, decoded.
#[derive(Clone, Debug)]
pub struct KernelEvent {
    pub time: SystemTime,
    pub cgroup_id: u64,
    /// Process id (the kernel's tgid).
    pub pid: u32,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    pub uid: u32,
    pub identity: u32,
    pub generation: u32,
    pub rule: Option<u32>,
    pub hook: Option<Hook>,
    pub verdict: Option<Verdict>,
    pub reason: Option<Reason>,
    /// Destination (connect/sendmsg hooks).
    pub dst: Option<(IpAddr, u16)>,
    pub family: u16,
    pub protocol: u16,
    pub sock_type: u8,
    pub comm: String,
    /// The socket option refused by `setsockopt`: (level, option).
    pub sockopt: Option<(u8, u16)>,
}

/// Convert `bpf_ktime_get_boot_ns()` to wall-clock time.
pub fn boot_ns_to_wall(ts_ns: u64) -> SystemTime {
    let now_wall = SystemTime::now();
    let Ok(boot) = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) else {
        return now_wall;
    };
    let now_boot = boot.tv_sec() as u64 * 1_000_000_000 + boot.tv_nsec() as u64;
    now_wall
        .checked_sub(Duration::from_nanos(now_boot.saturating_sub(ts_ns)))
        .unwrap_or(now_wall)
}

fn c_string(bytes: &[u8]) -> String {
    let len = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..len]).into_owned()
}

impl KernelEvent {
    pub fn decode(raw: &[u8]) -> Option<Self> {
        if raw.len() < size_of::<Event>() {
            return None;
        }
        // SAFETY: length checked; Event is plain old data, read unaligned.
        let e: Event = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
        let hook = Hook::from_u8(e.hook);
        let dst = match hook {
            Some(Hook::SockCreate | Hook::SocketLsm | Hook::SocketSyscall | Hook::Setsockopt)
            | None => None,
            Some(_) => {
                let addr = NormAddr {
                    bytes: e.addr,
                    is_v6: e.family == agent_common::AF_INET6,
                };
                Some((ip_of(&addr), e.port))
            }
        };
        Some(Self {
            time: boot_ns_to_wall(e.ts_ns),
            cgroup_id: e.cgroup_id,
            pid: e.tgid,
            tid: e.pid,
            uid: e.uid,
            identity: e.identity,
            generation: e.generation,
            rule: (e.rule != NO_RULE).then_some(e.rule),
            hook,
            verdict: Verdict::from_u8(e.verdict),
            reason: Reason::from_u8(e.reason),
            dst,
            family: e.family,
            protocol: e.protocol,
            sock_type: e.sock_type,
            comm: c_string(&e.comm),
            sockopt: (hook == Some(Hook::Setsockopt)).then_some((e.addr[0], e.port)),
        })
    }
}

/// A cgroup created or removed.
#[derive(Clone, Debug)]
pub struct CgroupChange {
    pub id: u64,
    pub created: bool,
    /// Path below the hierarchy root, starting with `/`.
    pub path: String,
}

impl CgroupChange {
    pub fn decode(raw: &[u8]) -> Option<Self> {
        if raw.len() < size_of::<CgroupEvent>() {
            return None;
        }
        // SAFETY: length checked; CgroupEvent is plain old data.
        let e: CgroupEvent = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
        Some(Self {
            id: e.id,
            created: e.kind == agent_common::event::CGROUP_CREATED,
            path: c_string(&e.path),
        })
    }
}

/// Wait for and drain a ring buffer, handing each record to `f`.
pub async fn drain<F>(ring: RingBuf<MapData>, mut f: F) -> std::io::Result<()>
where
    F: FnMut(&[u8]),
{
    // SAFETY: the ring buffer owns its map fd, which stays open and the
    // same for as long as the AsyncFd owns the ring buffer.
    let mut fd = unsafe { AsyncFd::register(ring) }.map_err(std::io::Error::from)?;
    loop {
        let mut guard = fd.readable_mut().await?;
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            f(&item);
        }
        guard.clear_ready();
    }
}
