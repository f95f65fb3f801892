//! `cgroup/bind4` and `cgroup/bind6`: an enrolled process may not bind an
//! address or port where the daemon serves agents — the gateway's address,
//! the DNS proxy range, the TCP API, or those ports on the unspecified
//! address. A process holding one could take the connections of other
//! agents meant for the daemon (while it restarts, or for a port a coming
//! policy adds) or keep the daemon from serving them.

use agent_common::{
    AF_INET, AF_INET6, Hook, NO_RULE, NormAddr, Reason, Verdict,
    gateway::{reserved_address, reserved_endpoint, reserved_wildcard_port},
};
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

use crate::{
    dns,
    emit::{Decision, record},
    guard, identity,
    maps::BIND_RESERVED,
    policy,
    sock_addr::{ALLOW, DENY, address},
};

#[cgroup_sock_addr(bind4)]
pub fn bind4(ctx: SockAddrContext) -> i32 {
    check(&ctx, Hook::Bind4)
}

#[cgroup_sock_addr(bind6)]
pub fn bind6(ctx: SockAddrContext) -> i32 {
    check(&ctx, Hook::Bind6)
}

fn check(ctx: &SockAddrContext, hook: Hook) -> i32 {
    let Some(identity) = identity::enrolled() else {
        return ALLOW; // not enrolled: never touched
    };
    let (addr, port, protocol, sock_type) = address(ctx, hook == Hook::Bind4);
    if !reserved(&addr, port, protocol) {
        return ALLOW;
    }
    record(&Decision {
        hook,
        identity,
        generation: policy::active_generation(),
        verdict: Verdict::Deny,
        reason: Reason::DaemonAddress,
        rule: NO_RULE,
        addr: addr.bytes,
        port,
        family: if addr.is_v6 { AF_INET6 } else { AF_INET },
        protocol: protocol as u16,
        sock_type: sock_type as u8,
    });
    DENY
}

/// Is (addr, port) the daemon's to bind? In every mode: audit mode watches
/// an agent's egress, it does not lend it the daemon's addresses.
#[inline(always)]
fn reserved(addr: &NormAddr, port: u16, protocol: u32) -> bool {
    // The TCP API's port on every address of either family: a listener on
    // another loopback address (`::1` beside `127.0.0.1`, which `localhost`
    // may name) would take an operator's call as surely as the API's own.
    if guard::is_api_port(port, protocol) {
        return true;
    }
    let b = &addr.bytes;
    // Branch-free: a byte loop would give the verifier a state per outcome.
    let unspecified = (u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
        | u64::from_ne_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]))
        == 0;
    if unspecified {
        // SAFETY: the value is a plain u32 read once.
        return port != 0 && unsafe { BIND_RESERVED.get(&reserved_wildcard_port(port)) }.is_some();
    }
    if addr.is_v6 {
        return false;
    }
    if let Some(cfg) = dns::config() {
        if dns::is_proxy(&cfg, addr) {
            return true;
        }
    }
    let ip = u32::from_be_bytes([addr.bytes[0], addr.bytes[1], addr.bytes[2], addr.bytes[3]]);
    // SAFETY: the values are plain u32s read once.
    unsafe {
        BIND_RESERVED.get(&reserved_address(ip)).is_some()
            || (port != 0 && BIND_RESERVED.get(&reserved_endpoint(ip, port)).is_some())
    }
}
