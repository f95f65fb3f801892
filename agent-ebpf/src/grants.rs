//! Just-in-time egress grants: temporary allows with their own expiry,
//! enforced here against the boot clock, so they end on time without the
//! daemon.

use agent_common::{
    LpmData, NormAddr,
    grants::{GRANT_RANGES, GrantValue},
    lpm_scope,
    maps::LPM_SCOPE_BITS,
};
use aya_ebpf::{helpers::bpf_ktime_get_boot_ns, maps::lpm_trie::Key};

use crate::maps::GRANTS;

/// The rule of a live grant that admits the destination, if any, and when
/// that range expires.
#[inline(always)]
pub fn judge(identity: u32, addr: &NormAddr, port: u16, proto: u8) -> Option<(u32, u64)> {
    let key = Key::new(
        LPM_SCOPE_BITS + addr.max_prefix(),
        LpmData {
            scope: lpm_scope(0, addr.is_v6, identity),
            addr: addr.bytes,
        },
    );
    let value: &GrantValue = GRANTS.get(&key)?;
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let len = value.len as usize;
    let mut i = 0;
    while i < GRANT_RANGES {
        if i >= len {
            break;
        }
        let r = &value.ranges[i];
        if r.admits(port, proto, now) {
            return Some((r.rule, r.expires_ns));
        }
        i += 1;
    }
    None
}
