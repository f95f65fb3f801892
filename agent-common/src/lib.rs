//! Types shared by Palisade's eBPF programs and the daemon.
//!
//! Everything here is `#[repr(C)]`, `Copy`, free of implicit padding and
//! checked for size at compile time, because the kernel and userspace read
//! the same bytes. With the `user` feature the types implement `aya::Pod`.
#![no_std]

pub mod addr;
pub mod aggregate;
pub mod dns;
pub mod event;
pub mod gateway;
pub mod grants;
pub mod guard;
pub mod maps;

pub use addr::NormAddr;
pub use dns::{
    DnsConfig, IDENT_DNS, LEARNED_RANGES, LearnedKey, LearnedRange, LearnedValue, OrigDst,
};
pub use event::{CgroupEvent, Event, Hook, Reason, Verdict};
pub use maps::{
    IDENT_HAS_DENY, IdentityConfig, IdentityState, LpmData, LpmValue, OWN_RULE, PortRange, PortSet,
    VerdictCounters, lpm_scope,
};

/// Highest number of identities a host can hold (identity index 0 is unused).
pub const MAX_IDENTITIES: u32 = 4096;
/// Distinct port sets per policy generation slot.
pub const MAX_PORTSETS: u32 = 8192;
/// Port ranges one port set can hold: the merged ranges of every rule whose
/// CIDR contains a given prefix.
pub const PORTSET_RANGES: usize = 32;
/// Cgroup ancestry levels the hooks walk to find an enrolled cgroup. A cgroup
/// selected for an identity must sit at most this deep below the root.
pub const MAX_CGROUP_DEPTH: u32 = 24;
/// Rule id used when no rule decided (default deny, kill switch…).
pub const NO_RULE: u32 = u32::MAX;
/// Protocol numbers as the kernel reports them.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
/// "Any protocol" in a port range.
pub const PROTO_ANY: u8 = 0;
/// Address families.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const AF_PACKET: u16 = 17;
