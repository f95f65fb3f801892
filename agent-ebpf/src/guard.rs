//! The daemon's own endpoints that agents may not reach.

use agent_common::{IPPROTO_TCP, NormAddr};

use crate::maps::GUARD_CFG;

/// Is (addr, port) the daemon's loopback TCP API? Connecting to the
/// unspecified address (`0.0.0.0`, `::`) reaches a loopback listener too.
#[inline(always)]
pub fn is_api(addr: &NormAddr, port: u16, protocol: u32) -> bool {
    let Some(cfg) = GUARD_CFG.get(0) else {
        return false;
    };
    if cfg.api_port == 0 || port != cfg.api_port || protocol != u32::from(IPPROTO_TCP) {
        return false;
    }
    if addr.is_v6 != (cfg.api_v6 != 0) {
        return false;
    }
    let mut same = true;
    let mut zero = true;
    let mut i = 0;
    while i < 16 {
        if addr.bytes[i] != cfg.api_addr[i] {
            same = false;
        }
        if addr.bytes[i] != 0 {
            zero = false;
        }
        i += 1;
    }
    same || zero
}
