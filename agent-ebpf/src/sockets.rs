//! The identity stamped on sockets of enrolled processes, so hooks that run
//! where no process context can be trusted (packets leaving, possibly from
//! a softirq) know whose socket it is, and beside it what a connection's
//! allow verdict rests on. An unenrolled socket has no storage: asking
//! costs one pointer test.

use core::ffi::c_void;

use agent_common::{NormAddr, guard::SockGuard};
use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_SK_STORAGE_GET_F_CREATE, bpf_map_type},
    helpers::generated::bpf_sk_storage_get,
};

use crate::maps::{GUARD_CFG, SOCK_GUARD};

/// BPF_F_CLONE: a socket accepted from a listener gets a copy of the
/// listener's storage, so an enrolled server's connections are its own.
const BPF_F_CLONE: u32 = 1 << 9;

/// A socket-local storage map definition with `BPF_F_CLONE` (aya-ebpf's
/// `SkStorage` fixes the flags and only takes sock_addr contexts). The
/// fields only describe the map in BTF; the loader creates it.
#[repr(C)]
pub struct ClonedSkStorage<T> {
    r#type: *const [i32; bpf_map_type::BPF_MAP_TYPE_SK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; (BPF_F_NO_PREALLOC | BPF_F_CLONE) as usize],
}

// SAFETY: placeholder pointers, never dereferenced; the loader patches the
// definition and programs only pass its address to helpers.
unsafe impl<T> Sync for ClonedSkStorage<T> {}

impl<T> ClonedSkStorage<T> {
    pub const fn new() -> Self {
        Self {
            r#type: core::ptr::null(),
            key: core::ptr::null(),
            value: core::ptr::null(),
            max_entries: core::ptr::null(),
            map_flags: core::ptr::null(),
        }
    }

    #[inline(always)]
    fn as_ptr(&self) -> *mut c_void {
        (self as *const Self).cast_mut().cast()
    }

    /// The storage of `sk` (a socket or a cgroup/sock context pointer the
    /// verifier accepts for this helper), created when `create` is set.
    #[inline(always)]
    pub fn get(&self, sk: *mut c_void, create: bool) -> *mut T {
        let flags = if create {
            u64::from(BPF_SK_STORAGE_GET_F_CREATE)
        } else {
            0
        };
        // SAFETY: helper call with this map and a socket pointer.
        unsafe { bpf_sk_storage_get(self.as_ptr(), sk, core::ptr::null_mut(), flags) }.cast()
    }
}

/// Stamp `identity` on the socket `sk` (creating its storage); returns the
/// storage, null when the kernel refused it (no memory, or the socket's
/// option memory, `net.core.optmem_max`, spent): callers refuse the socket.
#[inline(always)]
pub fn stamp(sk: *mut c_void, identity: u32) -> *mut SockGuard {
    let slot = SOCK_GUARD.get(sk, true);
    if slot.is_null() {
        return slot;
    }
    // SAFETY: `slot` is this socket's storage.
    unsafe {
        if (*slot).identity != identity {
            (*slot).identity = identity;
            (*slot).flags = 0;
        }
    }
    slot
}

/// The storage of `sk`, null when it has none (never stamped).
#[inline(always)]
pub fn guard_of(sk: *mut c_void) -> *mut SockGuard {
    SOCK_GUARD.get(sk, false)
}

/// Record in the socket's storage `slot` (from `stamp`, null tolerated)
/// where an allowed connect goes and what the verdict rests on. A socket
/// connected again is judged afresh, so an earlier cut ends here. (Should
/// the kernel refuse the connect after this hook, the socket keeps its
/// earlier peer, which no longer matches the record: the egress program
/// judges its packets again.)
///
/// `flags_port`: the `JUDGED_*` flags in the low 16 bits, the destination
/// port above them (kept to five arguments, the most a BPF function takes).
#[inline(always)]
pub fn remember_judgement(
    slot: *mut SockGuard,
    flags_port: u32,
    generation: u32,
    until_ns: u64,
    dst: &NormAddr,
) {
    if slot.is_null() {
        return; // no stamp: the caller refuses the connection
    }
    // SAFETY: `slot` is this socket's storage.
    unsafe {
        let judged = &mut (*slot).judged;
        judged.flags = flags_port & 0xffff;
        judged.generation = generation;
        judged.epoch = rejudge_epoch();
        judged.recheck_ns = until_ns;
        judged.addr = dst.bytes;
        judged.is_v6 = u8::from(dst.is_v6);
        judged.port = (flags_port >> 16) as u16;
    }
}

/// `GuardConfig::rejudge_epoch` now.
#[inline(always)]
pub fn rejudge_epoch() -> u32 {
    GUARD_CFG.get(0).map_or(0, |c| c.rejudge_epoch)
}
