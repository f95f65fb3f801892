//! Waiting until no BPF program still runs with what it read before now.
//!
//! Aggregation switches the slot the programs count into, then reads the
//! old slot whole. It must not read while a program that saw the old slot
//! number is still adding to it. The kernel waits for exactly that
//! (`synchronize_rcu`, every BPF program runs inside an RCU read section)
//! whenever a map-of-maps is updated, so that userspace knows the old inner
//! map is no longer used. A one-entry array of maps, updated on demand, is
//! therefore a barrier: when the update returns, every program that was
//! running has finished.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use super::sys::{Attr, bpf};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

pub struct RcuBarrier {
    outer: OwnedFd,
    inner: OwnedFd,
}

fn map_create(map_type: u32, inner: Option<&OwnedFd>) -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    // struct { u32 map_type, key_size, value_size, max_entries, map_flags,
    //          inner_map_fd; … }
    attr.put_u32(0, map_type);
    attr.put_u32(4, 4);
    attr.put_u32(8, 4);
    attr.put_u32(12, 1);
    if let Some(fd) = inner {
        attr.put_u32(20, fd.as_raw_fd() as u32);
    }
    let fd = bpf(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: the kernel returned a fresh file descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

impl RcuBarrier {
    pub fn new() -> io::Result<Self> {
        let inner = map_create(BPF_MAP_TYPE_ARRAY, None)?;
        let outer = map_create(BPF_MAP_TYPE_ARRAY_OF_MAPS, Some(&inner))?;
        Ok(Self { outer, inner })
    }

    /// Return once every BPF program running when this was called has
    /// finished (blocks for a grace period, typically milliseconds).
    pub fn wait(&self) -> io::Result<()> {
        let key: u32 = 0;
        let value: u32 = self.inner.as_raw_fd() as u32;
        let mut attr = Attr::new();
        // struct { u32 map_fd; u64 key; u64 value; u64 flags; }
        attr.put_u32(0, self.outer.as_raw_fd() as u32);
        attr.put_u64(8, (&raw const key) as u64);
        attr.put_u64(16, (&raw const value) as u64);
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
    }
}
