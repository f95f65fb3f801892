//! `cgroup/setsockopt`: enrolled processes may not set IPv4 options or IPv6
//! routing headers on a socket. Either would send packets through a route
//! of the process's choosing (loose/strict source routing, segment routing)
//! to a host other than the destination the connect and sendmsg hooks
//! judged. The same options given per message (control data) are caught
//! where the packet leaves (`egress`).

use agent_common::{Hook, Reason, Verdict};
use aya_ebpf::{macros::cgroup_sockopt, programs::SockoptContext};

use crate::{
    emit::{Decision, record},
    identity, policy,
};

const SOL_IP: i32 = 0;
const SOL_IPV6: i32 = 41;
const IP_OPTIONS: i32 = 4;
/// Accepted by `ip_cmsg_send` only, but refused here too: no enrolled
/// process needs to set IP options by any name.
const IP_RETOPTS: i32 = 7;
const IPV6_2292RTHDR: i32 = 5;
/// Sets every RFC 2292 option at once from a control-message buffer,
/// a routing header among them.
const IPV6_2292PKTOPTIONS: i32 = 6;
const IPV6_RTHDR: i32 = 57;

/// Return values of sockopt programs.
const PROCEED: i32 = 1;
const REFUSE: i32 = 0;

#[inline(always)]
const fn sets_a_route(level: i32, optname: i32) -> bool {
    match level {
        SOL_IP => optname == IP_OPTIONS || optname == IP_RETOPTS,
        SOL_IPV6 => matches!(optname, IPV6_RTHDR | IPV6_2292RTHDR | IPV6_2292PKTOPTIONS),
        _ => false,
    }
}

#[cgroup_sockopt(setsockopt)]
pub fn setsockopt(ctx: SockoptContext) -> i32 {
    // SAFETY: the kernel hands a valid bpf_sockopt.
    let (level, optname, sk) = unsafe {
        let s = ctx.sockopt;
        ((*s).level, (*s).optname, (*s).__bindgen_anon_1.sk)
    };
    // Every other option of every process passes after two compares.
    if !sets_a_route(level, optname) {
        return PROCEED;
    }
    let Some(identity) = identity::enrolled() else {
        return PROCEED;
    };
    // SAFETY: `sk` is the (non-null) socket the option is set on.
    let (family, sock_type, protocol) = unsafe { ((*sk).family, (*sk).type_, (*sk).protocol) };
    let generation = policy::active_generation();
    let audit = matches!(policy::identity_config(generation, identity), Some(c) if c.audit != 0);
    let mut decision = Decision::socket(
        Hook::Setsockopt,
        identity,
        generation,
        family as u16,
        protocol as u16,
        sock_type as u8,
    );
    decision.reason = Reason::SourceRoute;
    // Which option: level in the address bytes, option in the port field.
    decision.addr[0] = level as u8;
    decision.port = optname as u16;
    if audit {
        decision.verdict = Verdict::Audit;
    }
    record(&decision);
    if audit { PROCEED } else { REFUSE }
}
