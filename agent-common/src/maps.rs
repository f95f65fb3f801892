//! Keys and values of the maps the hooks read and the daemon writes.
//!
//! Policy lives in two generation slots. The daemon writes a whole new policy
//! into the inactive slot, then flips `ACTIVE_GEN` with one store; every hook
//! invocation reads the generation once, so a single decision never mixes two
//! policies.

use crate::PORTSET_RANGES;

/// The 32-bit scope that prefixes every LPM key: generation slot, address
/// family and identity index, big-endian so it is matched bit for bit before
/// the address.
#[inline(always)]
pub const fn lpm_scope(slot: u32, is_v6: bool, identity: u32) -> [u8; 4] {
    let v6 = if is_v6 { 1u32 << 30 } else { 0 };
    (((slot & 1) << 31) | v6 | (identity & 0x3fff_ffff)).to_be_bytes()
}

/// Bits of the scope in front of the address in an LPM key.
pub const LPM_SCOPE_BITS: u32 = 32;

/// LPM trie key data (the kernel's `prefixlen` comes in front of it).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LpmData {
    pub scope: [u8; 4],
    /// IPv4 in the first four bytes, IPv6 in all sixteen (see `NormAddr`).
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<LpmData>() == 20);

/// The value of an LPM entry: which port set applies, and the rule that
/// owns the entry's own prefix (reported when a range says `OWN_RULE`).
/// Keeping the owning rule out of the ranges lets thousands of rules with the
/// same ports share one port set.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LpmValue {
    /// Kernel index of the port set (`slot * MAX_PORTSETS + i`).
    pub portset: u32,
    pub rule: u32,
}
const _: () = assert!(size_of::<LpmValue>() == 8);

/// A range whose rule is the LPM entry's own (`LpmValue::rule`).
pub const OWN_RULE: u32 = u32::MAX - 1;

/// One port range of a rule: `lo..=hi` for `proto` (`PROTO_ANY`, TCP, UDP).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
    /// Index of the rule in the policy generation, reported in events, or
    /// `OWN_RULE` for the rule named in the entry's `LpmValue`.
    pub rule: u32,
}
const _: () = assert!(size_of::<PortRange>() == 12);

impl PortRange {
    pub const EMPTY: Self = Self {
        lo: 0,
        hi: 0,
        proto: 0,
        _pad: [0; 3],
        rule: 0,
    };

    #[inline(always)]
    pub const fn matches(&self, port: u16, proto: u8) -> bool {
        port >= self.lo
            && port <= self.hi
            && (self.proto == crate::PROTO_ANY || self.proto == proto)
    }
}

/// The value an LPM entry points to: every port range of every rule whose
/// prefix contains the entry's prefix (the compiler merges ancestors in, so
/// the longest match alone decides).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortSet {
    pub len: u32,
    pub _pad: u32,
    pub ranges: [PortRange; PORTSET_RANGES],
}
const _: () = assert!(size_of::<PortSet>() == 8 + 12 * PORTSET_RANGES);

impl PortSet {
    pub const EMPTY: Self = Self {
        len: 0,
        _pad: 0,
        ranges: [PortRange::EMPTY; PORTSET_RANGES],
    };
}

/// Per identity and generation slot: what the policy says about it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdentityConfig {
    /// 1 when the policy of this generation defines the identity. An enrolled
    /// process whose identity is not defined is denied everything.
    pub defined: u8,
    /// 1 for audit (shadow) mode: would-deny is recorded, then allowed.
    pub audit: u8,
    /// `IDENT_HAS_DENY`…: lets the hooks skip lookups that cannot match.
    pub flags: u16,
    pub _pad: u32,
}
const _: () = assert!(size_of::<IdentityConfig>() == 8);

/// `IdentityConfig::flags`: the identity has deny rules (else the deny trie
/// is not consulted).
pub const IDENT_HAS_DENY: u16 = 1;

/// `IdentityConfig::flags`: the policy lets the identity reach the daemon's
/// loopback TCP API (`confinement.api_tcp: true`).
pub const IDENT_API_TCP: u16 = 1 << 8;

/// Per identity, outside policy generations: operator switches that must act
/// at once and survive reloads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdentityState {
    /// 1 when the kill switch is on: every connection is denied.
    pub killed: u8,
    pub _pad: [u8; 7],
}
const _: () = assert!(size_of::<IdentityState>() == 8);

/// Per-CPU verdict counters per identity.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerdictCounters {
    pub allowed: u64,
    pub denied: u64,
    pub audited: u64,
}
const _: () = assert!(size_of::<VerdictCounters>() == 24);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), Copy, and have no padding bytes
    // (checked by the size assertions above), so any bit pattern is valid.
    unsafe impl aya::Pod for super::LpmData {}
    unsafe impl aya::Pod for super::LpmValue {}
    unsafe impl aya::Pod for super::PortRange {}
    unsafe impl aya::Pod for super::PortSet {}
    unsafe impl aya::Pod for super::IdentityConfig {}
    unsafe impl aya::Pod for super::IdentityState {}
    unsafe impl aya::Pod for super::VerdictCounters {}
    unsafe impl aya::Pod for crate::event::Event {}
    unsafe impl aya::Pod for crate::event::CgroupEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_orders_slot_family_identity() {
        assert_eq!(lpm_scope(0, false, 5), [0, 0, 0, 5]);
        assert_eq!(lpm_scope(1, false, 5), [0x80, 0, 0, 5]);
        assert_eq!(lpm_scope(1, true, 5), [0xc0, 0, 0, 5]);
        assert_eq!(lpm_scope(3, false, 1), lpm_scope(1, false, 1));
    }

    #[test]
    fn port_range_matches_protocol() {
        let r = PortRange {
            lo: 443,
            hi: 443,
            proto: crate::IPPROTO_TCP,
            ..PortRange::EMPTY
        };
        assert!(r.matches(443, crate::IPPROTO_TCP));
        assert!(!r.matches(443, crate::IPPROTO_UDP));
        assert!(!r.matches(444, crate::IPPROTO_TCP));
        let any = PortRange {
            lo: 0,
            hi: u16::MAX,
            ..PortRange::EMPTY
        };
        assert!(any.matches(53, crate::IPPROTO_UDP));
    }
}
