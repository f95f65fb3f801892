//! Every map the programs use. The daemon pins them all under its bpffs
//! directory (by these names) so enforcement outlives the daemon.

use agent_common::{
    DnsConfig, IdentityConfig, IdentityState, LearnedKey, LearnedValue, LpmData, LpmValue,
    MAX_IDENTITIES, MAX_PORTSETS, OrigDst, PortSet, VerdictCounters,
    guard::{GuardConfig, SockGuard},
};
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    btf_maps::SkStorage,
    macros::{btf_map, map},
    maps::{Array, HashMap, LpmTrie, PerCpuArray, RingBuf},
};

/// cgroup id → identity index, for cgroups enrolled by the daemon.
#[map]
pub static CGROUP_IDENT: HashMap<u64, u32> = HashMap::with_max_entries(65536, 0);

/// The active policy generation (slot = generation & 1). One store flips it.
#[map]
pub static ACTIVE_GEN: Array<u32> = Array::with_max_entries(1, 0);

/// [slot * MAX_IDENTITIES + identity] → what that generation says about it.
#[map]
pub static IDENT_CFG: Array<IdentityConfig> = Array::with_max_entries(2 * MAX_IDENTITIES, 0);

/// [identity] → kill switch, outside generations.
#[map]
pub static IDENT_STATE: Array<IdentityState> = Array::with_max_entries(MAX_IDENTITIES, 0);

/// (slot, family, identity, destination prefix) → port set and owning rule,
/// for allow rules.
#[map]
pub static ALLOW_LPM: LpmTrie<LpmData, LpmValue> = LpmTrie::with_max_entries(1 << 20, 0);

/// Same shape as `ALLOW_LPM`, deny rules (they win).
#[map]
pub static DENY_LPM: LpmTrie<LpmData, LpmValue> = LpmTrie::with_max_entries(1 << 20, 0);

/// Port sets referenced by the tries, [slot * MAX_PORTSETS + i].
#[map]
pub static PORTSETS: Array<PortSet> = Array::with_max_entries(2 * MAX_PORTSETS, 0);

/// Deny and would-deny events for the audit pipeline.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Events dropped because `EVENTS` was full.
#[map]
pub static EVENTS_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// [identity] → verdict counters.
#[map]
pub static VERDICTS: PerCpuArray<VerdictCounters> =
    PerCpuArray::with_max_entries(MAX_IDENTITIES, 0);

/// Cgroups created and removed, so new cgroups can be enrolled by selector.
#[map]
pub static CGROUP_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 18, 0);

/// [identity] → identity name (NUL-padded). Programs never read it: it keeps
/// the daemon's index ↔ name assignment in the kernel, next to the maps that
/// use the indices, so a restarted daemon reads it back.
#[map]
pub static IDENT_NAMES: Array<[u8; 64]> = Array::with_max_entries(MAX_IDENTITIES, 0);

/// [0] → DNS steering settings (proxy address range and port).
#[map]
pub static DNS_CFG: Array<DnsConfig> = Array::with_max_entries(1, 0);

/// (identity, address) → port ranges and expiry learned from DNS answers.
/// Outside policy generations: learned state outlives reloads (the daemon
/// re-judges it against each new policy).
#[map]
pub static LEARNED: HashMap<LearnedKey, LearnedValue> =
    HashMap::with_max_entries(1 << 16, BPF_F_NO_PREALLOC);

/// Per socket: the resolver address a steered socket meant.
#[btf_map]
pub static DNS_ORIG: SkStorage<OrigDst> = SkStorage::new();

/// (identity, family, granted prefix) → just-in-time grant ranges with
/// their expiry. Outside the generation slots (scope slot bit 0).
#[map]
pub static GRANTS: LpmTrie<LpmData, agent_common::grants::GrantValue> =
    LpmTrie::with_max_entries(65536, 0);

/// Task id (the kernel's pid of each thread) → identity index: every task
/// descended from an enrolled one, kept by the fork, exec and exit
/// tracepoints (`lineage`). The hooks look here first, so a process that
/// moves out of its cgroup stays who it was.
#[map]
pub static LINEAGE: HashMap<u32, u32> = HashMap::with_max_entries(1 << 18, BPF_F_NO_PREALLOC);

/// Per socket: the identity that made or used it, and what its
/// connection's allow verdict rests on (`sockets`). Cloned to sockets
/// accepted from a listener that has it.
#[btf_map]
pub static SOCK_GUARD: crate::sockets::ClonedSkStorage<SockGuard> =
    crate::sockets::ClonedSkStorage::new();

/// [0] → the guard programs' settings (API port, tracepoint offsets…).
#[map]
pub static GUARD_CFG: Array<GuardConfig> = Array::with_max_entries(1, 0);
/// `endpoint_key(address, port)` → 1 for each endpoint the L7 gateway
/// listens on. Not pinned: a daemon that stops takes its endpoints with it.
#[map]
pub static GATEWAY_EPS: HashMap<u64, u32> = HashMap::with_max_entries(1024, 0);

/// Addresses and ports enrolled processes may not bind: `reserved_address`
/// (every port of the gateway's address), `reserved_endpoint` (one of the
/// daemon's listeners) and `reserved_wildcard_port` (a port the daemon
/// serves on, bound on `0.0.0.0`/`::`) → 1. Pinned: they
/// stay reserved while a daemon restarts.
#[map]
pub static BIND_RESERVED: HashMap<u64, u32> = HashMap::with_max_entries(1024, 0);
