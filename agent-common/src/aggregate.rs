//! Repeated denials, counted in the kernel instead of recorded one by one.
//!
//! Time is cut into periods by the daemon. Within a period, the first
//! denial of each kind (identity, hook, verdict, reason, destination) goes
//! out as an event record; the rest only raise that kind's count in
//! `AGG`, which the daemon turns into one aggregate record per kind when
//! the period ends. Entries live in two slots (the period number's low
//! bit): the daemon switches the slot the programs write, waits until no
//! program can still be writing the old one, reads it whole, then clears
//! it. Every denial is therefore in exactly one place: an event record, an
//! entry's count, or the per-identity overflow counters (when the identity
//! used up its event budget for the period, or the table is full).

/// Reasons the overflow counters tell apart (`Reason as u8 & 15`).
pub const AGG_REASONS: usize = 16;

/// `AGG_CFG[0]`, written by the daemon.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AggConfig {
    /// 1 once a daemon aggregates; until then every denial is an event.
    pub enabled: u32,
    /// The period; its low bit is the slot the programs write.
    pub period: u32,
    /// First-of-their-kind event records one identity may send per period;
    /// beyond it, new kinds are only counted (overflow).
    pub budget: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<AggConfig>() == 16);

/// One kind of denial in one slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AggKey {
    pub identity: u32,
    pub slot: u8,
    pub hook: u8,
    pub verdict: u8,
    pub reason: u8,
    /// As in `Event`: normalised destination, zero for socket events.
    pub addr: [u8; 16],
    pub port: u16,
    pub family: u16,
    pub protocol: u16,
    pub sock_type: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<AggKey>() == 32);

/// What the kernel knows about one kind in one slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AggValue {
    /// Denials of this kind in the period (the first one included).
    pub count: u64,
    /// `bpf_ktime_get_boot_ns()` of the first and (about) the last one.
    pub first_ns: u64,
    pub last_ns: u64,
    /// Who was denied first.
    pub cgroup_id: u64,
    pub tgid: u32,
    pub pid: u32,
    pub uid: u32,
    pub generation: u32,
    pub rule: u32,
    /// 1 when the first denial went out as an event record (else the ring
    /// buffer was full and the count alone tells of it).
    pub emitted: u32,
    pub comm: [u8; 16],
}
const _: () = assert!(size_of::<AggValue>() == 72);

/// Per identity: event records sent in the current period.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AggBudget {
    pub period: u32,
    pub used: u32,
}
const _: () = assert!(size_of::<AggBudget>() == 8);

/// Per slot and identity: denials counted without a kind of their own, by
/// reason, for deny and audit (would-deny) verdicts.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AggOverflow {
    pub deny: [u64; AGG_REASONS],
    pub audit: [u64; AGG_REASONS],
}
const _: () = assert!(size_of::<AggOverflow>() == 256);

impl AggOverflow {
    pub const ZERO: Self = Self {
        deny: [0; AGG_REASONS],
        audit: [0; AGG_REASONS],
    };
}

impl Default for AggOverflow {
    fn default() -> Self {
        Self::ZERO
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, no padding bytes (checked by the size
    // assertions above): any bit pattern is valid.
    unsafe impl aya::Pod for super::AggConfig {}
    unsafe impl aya::Pod for super::AggKey {}
    unsafe impl aya::Pod for super::AggValue {}
    unsafe impl aya::Pod for super::AggBudget {}
    unsafe impl aya::Pod for super::AggOverflow {}
}
