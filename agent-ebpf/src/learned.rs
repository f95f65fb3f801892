//! Addresses the DNS proxy learned from answers, per identity, each range
//! with its own expiry. Expiry is enforced here, against the boot clock:
//! an expired range admits no new connection even if the daemon is gone.

use agent_common::{LEARNED_RANGES, LearnedKey, NormAddr, Reason};
use aya_ebpf::helpers::bpf_ktime_get_boot_ns;

use crate::maps::LEARNED;

/// What the identity's learned addresses say about a destination: a deny
/// range wins over allow ranges; `None` when nothing learned admits it.
#[inline(always)]
pub fn judge(identity: u32, addr: &NormAddr, port: u16, proto: u8) -> Option<(Reason, u32)> {
    let key = LearnedKey {
        identity,
        is_v6: u32::from(addr.is_v6),
        addr: addr.bytes,
    };
    // SAFETY: the value is read once; the daemon replaces whole elements.
    let value = unsafe { LEARNED.get(&key) }?;
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let len = value.len as usize;
    let mut allow = None;
    let mut i = 0;
    while i < LEARNED_RANGES {
        if i >= len {
            break;
        }
        let range = &value.ranges[i];
        if range.admits(port, proto, now) {
            if range.deny != 0 {
                return Some((Reason::DenyRule, range.rule));
            }
            if allow.is_none() {
                allow = Some(range.rule);
            }
        }
        i += 1;
    }
    allow.map(|rule| (Reason::AllowRule, rule))
}
