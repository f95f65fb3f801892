//! DNS steering: an identity whose policy names hosts has its DNS (UDP and
//! TCP to port 53, whatever the resolver address) rewritten to its own proxy
//! address, and the address it meant is remembered per socket so that
//! answers and `getpeername()` show it again (resolvers check the source of
//! an answer against the server they asked).

use agent_common::{AF_INET, AF_INET6, DnsConfig, NormAddr};
use aya_ebpf::programs::SockAddrContext;

use crate::maps::{DNS_CFG, DNS_ORIG};

/// Return value of recvmsg/getpeername programs (anything else is invalid).
const PASS: i32 = 1;

/// `::ffff:0:0/96` as the third word of `user_ip6`.
const MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

#[inline(always)]
pub fn config() -> Option<DnsConfig> {
    let cfg = DNS_CFG.get(0)?;
    if cfg.enabled != 0 { Some(*cfg) } else { None }
}

/// Is this (normalised) destination one of the proxy's addresses?
#[inline(always)]
pub fn is_proxy(cfg: &DnsConfig, addr: &NormAddr) -> bool {
    !addr.is_v6
        && cfg
            .identity_of(u32::from_be_bytes([
                addr.bytes[0],
                addr.bytes[1],
                addr.bytes[2],
                addr.bytes[3],
            ]))
            .is_some()
}

/// Rewrite the destination of a connect/sendmsg to `identity`'s proxy
/// address, remembering the original (`dst`, normalised) for the socket.
///
/// A destination that already is a proxy address is not remembered: the
/// kernel runs connect4 again when a dual-stack UDP socket connects to the
/// IPv4-mapped proxy address connect6 chose, and that second pass must not
/// overwrite the resolver the process meant.
#[inline(always)]
pub fn steer(ctx: &SockAddrContext, v6: bool, cfg: &DnsConfig, identity: u32, dst: &NormAddr) {
    let sa = ctx.sock_addr;
    let slot = if is_proxy(cfg, dst) {
        core::ptr::null_mut()
    } else {
        DNS_ORIG.get_or_insert_ptr_mut(ctx, None)
    };
    let proxy = cfg.address_of(identity).to_be();
    // SAFETY: the kernel hands a valid bpf_sock_addr whose user_* fields may
    // be read and written 4 bytes at a time in connect and sendmsg hooks;
    // `slot` is either null or this socket's storage.
    unsafe {
        if !slot.is_null() {
            (*slot).port = (*sa).user_port;
            if v6 {
                (*slot).family = AF_INET6 as u32;
                (*slot).ip6 = [
                    (*sa).user_ip6[0],
                    (*sa).user_ip6[1],
                    (*sa).user_ip6[2],
                    (*sa).user_ip6[3],
                ];
            } else {
                (*slot).family = AF_INET as u32;
                (*slot).ip4 = (*sa).user_ip4;
            }
        }
        (*sa).user_port = u32::from(cfg.port.to_be());
        if v6 {
            // IPv4-mapped: a dual-stack socket reaches the IPv4 proxy.
            (*sa).user_ip6[0] = 0;
            (*sa).user_ip6[1] = 0;
            (*sa).user_ip6[2] = MAPPED_WORD;
            (*sa).user_ip6[3] = proxy;
        } else {
            (*sa).user_ip4 = proxy;
        }
    }
}

/// recvmsg/getpeername: when the peer is the proxy and the socket was
/// steered, show the address the process meant.
#[inline(always)]
pub fn restore(ctx: &SockAddrContext, v6: bool) -> i32 {
    let Some(cfg) = config() else {
        return PASS;
    };
    let sa = ctx.sock_addr;
    // SAFETY: valid bpf_sock_addr; 4-byte reads of user_* fields.
    let (peer, port) = unsafe {
        let peer = if v6 {
            if (*sa).user_ip6[0] != 0 || (*sa).user_ip6[1] != 0 || (*sa).user_ip6[2] != MAPPED_WORD
            {
                return PASS;
            }
            (*sa).user_ip6[3]
        } else {
            (*sa).user_ip4
        };
        (u32::from_be(peer), u16::from_be((*sa).user_port as u16))
    };
    if port != cfg.port || cfg.identity_of(peer).is_none() {
        return PASS;
    }
    let slot = DNS_ORIG.get_ptr_mut(ctx);
    if slot.is_null() {
        return PASS;
    }
    // SAFETY: `slot` is this socket's storage; user_* fields are writable in
    // recvmsg and getpeername hooks.
    unsafe {
        let orig = *slot;
        if v6 && orig.family == AF_INET6 as u32 {
            (*sa).user_ip6[0] = orig.ip6[0];
            (*sa).user_ip6[1] = orig.ip6[1];
            (*sa).user_ip6[2] = orig.ip6[2];
            (*sa).user_ip6[3] = orig.ip6[3];
            (*sa).user_port = orig.port;
        } else if !v6 && orig.family == AF_INET as u32 {
            (*sa).user_ip4 = orig.ip4;
            (*sa).user_port = orig.port;
        }
    }
    PASS
}
