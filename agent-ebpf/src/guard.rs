//! The daemon's own endpoints that agents may not reach.

use agent_common::{IPPROTO_TCP, NormAddr};

use crate::maps::GUARD_CFG;

/// Is `port` (TCP) the port of the daemon's loopback TCP API, whatever the
/// address? (Binds: no agent listens on that port anywhere.)
#[inline(always)]
pub fn is_api_port(port: u16, protocol: u32) -> bool {
    let Some(cfg) = GUARD_CFG.get(0) else {
        return false;
    };
    cfg.api_port != 0 && port == cfg.api_port && protocol == u32::from(IPPROTO_TCP)
}

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
    // Branch-free compare: a loop of byte compares would give the verifier
    // a state per combination of outcomes.
    let word = |b: &[u8; 16], i: usize| {
        u64::from_ne_bytes([
            b[i],
            b[i + 1],
            b[i + 2],
            b[i + 3],
            b[i + 4],
            b[i + 5],
            b[i + 6],
            b[i + 7],
        ])
    };
    let (a0, a1) = (word(&addr.bytes, 0), word(&addr.bytes, 8));
    let (b0, b1) = (word(&cfg.api_addr, 0), word(&cfg.api_addr, 8));
    ((a0 ^ b0) | (a1 ^ b1)) == 0 || (a0 | a1) == 0
}
