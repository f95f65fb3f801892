//! Just-in-time egress grants: temporary allow rules per identity, outside
//! the policy generations (a reload does not end them; the daemon removes
//! grants a new policy no longer allows). Each range carries its own expiry,
//! checked by the hook against `bpf_ktime_get_boot_ns()`, so a grant ends on
//! time even while the daemon is down.

/// Set in `GrantRange::rule` of ranges written for a break-glass
/// elevation: the low bits are the elevation's number, not a rule index, and
/// connections they admit are recorded as allow events.
pub const ELEVATION_RULE: u32 = 1 << 31;

/// Ranges one grant entry can hold (its own grants plus those of every
/// enclosing granted prefix).
pub const GRANT_RANGES: usize = 8;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrantRange {
    pub lo: u16,
    pub hi: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
    /// Rule index (in the generation that granted it), for the audit trail.
    pub rule: u32,
    /// Boot-clock nanoseconds after which the range admits nothing new.
    pub expires_ns: u64,
}
const _: () = assert!(size_of::<GrantRange>() == 24);

impl GrantRange {
    #[inline(always)]
    pub const fn admits(&self, port: u16, proto: u8, now_ns: u64) -> bool {
        now_ns < self.expires_ns
            && port >= self.lo
            && port <= self.hi
            && (self.proto == crate::PROTO_ANY || self.proto == proto)
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantValue {
    pub len: u32,
    pub _pad: u32,
    pub ranges: [GrantRange; GRANT_RANGES],
}
const _: () = assert!(size_of::<GrantValue>() == 8 + 24 * GRANT_RANGES);

impl Default for GrantValue {
    fn default() -> Self {
        Self {
            len: 0,
            _pad: 0,
            ranges: [GrantRange {
                lo: 0,
                hi: 0,
                proto: 0,
                _pad: [0; 3],
                rule: 0,
                expires_ns: 0,
            }; GRANT_RANGES],
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, no padding (size assertions above).
    unsafe impl aya::Pod for super::GrantRange {}
    unsafe impl aya::Pod for super::GrantValue {}
}
