//! The L7 gateway's endpoints (see `agent_common::gateway`).

use agent_common::{NormAddr, gateway::endpoint_key};

use crate::maps::GATEWAY_EPS;

/// Is this (normalised) destination an endpoint the gateway serves?
#[inline(always)]
pub fn is_endpoint(addr: &NormAddr, port: u16) -> bool {
    if addr.is_v6 {
        return false;
    }
    let ip = u32::from_be_bytes([addr.bytes[0], addr.bytes[1], addr.bytes[2], addr.bytes[3]]);
    // SAFETY: the value is a plain u32 read once.
    unsafe { GATEWAY_EPS.get(&endpoint_key(ip, port)) }.is_some()
}
