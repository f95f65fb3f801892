//! The decision shared by connect4/6 and sendmsg4/6: who is calling, where
//! to, and what the active policy generation says (or, for the DNS of an
//! identity that names hosts, where its proxy is).

use agent_common::{
    AF_INET, AF_INET6, Hook, IDENT_DNS, IPPROTO_TCP, IPPROTO_UDP, NO_RULE, NormAddr, Reason,
    Verdict,
    dns::DNS_PORT,
    guard::{JUDGED_VALID, JUDGED_VIA_LEARNED},
    maps::IDENT_API_TCP,
};
use aya_ebpf::programs::SockAddrContext;

use crate::{
    dns,
    emit::{Decision, record},
    gateway, guard, identity, policy,
};

/// Return values of cgroup sock_addr programs.
pub const ALLOW: i32 = 1;
pub const DENY: i32 = 0;

/// The address, port, protocol and socket type of a sock_addr call
/// (`ipv4`: the hook is one of the IPv4 ones), the address normalised.
#[inline(always)]
pub fn address(ctx: &SockAddrContext, ipv4: bool) -> (NormAddr, u16, u32, u32) {
    let sa = ctx.sock_addr;
    // SAFETY: the kernel hands a valid bpf_sock_addr; each field is read with
    // the access size the verifier allows for it.
    unsafe {
        let addr = if ipv4 {
            NormAddr::from_ip4_word((*sa).user_ip4)
        } else {
            NormAddr::from_ip6_words([
                (*sa).user_ip6[0],
                (*sa).user_ip6[1],
                (*sa).user_ip6[2],
                (*sa).user_ip6[3],
            ])
        };
        let port = u16::from_be((*sa).user_port as u16);
        (addr, port, (*sa).protocol, (*sa).type_)
    }
}

pub fn check(ctx: &SockAddrContext, hook: Hook) -> i32 {
    let Some(identity) = identity::enrolled() else {
        return ALLOW; // not enrolled: never touched
    };
    let sa = ctx.sock_addr;
    // Stamp (or re-stamp) the socket with who uses it now: sockets made
    // before enrolment or handed over by another process count as this
    // identity's from their first connect or send.
    // SAFETY: `sk` of a sock_addr context is the (non-null) socket.
    let slot = crate::sockets::stamp(unsafe { (*sa).__bindgen_anon_1.sk }.cast(), identity);
    let (addr, port, protocol, sock_type) =
        address(ctx, matches!(hook, Hook::Connect4 | Hook::Sendmsg4));

    let generation = policy::active_generation();
    let connect = matches!(hook, Hook::Connect4 | Hook::Connect6);
    let (reason, rule, audit) = if policy::killed(identity) {
        (Reason::KillSwitch, NO_RULE, false)
    } else if slot.is_null() {
        // A socket made before enrolment whose stamp the kernel refused
        // (its option memory spent, or no memory): its packets would pass
        // the kill switch and the re-judging unseen. Not in any mode.
        (Reason::SocketUntracked, NO_RULE, false)
    } else {
        match policy::identity_config(generation, identity) {
            None => (Reason::UnknownIdentity, NO_RULE, false),
            // The L7 gateway: the path to the services a policy protects,
            // judged request by request in the daemon.
            Some(_) if protocol as u8 == IPPROTO_TCP && gateway::is_endpoint(&addr, port) => {
                (Reason::AllowRule, NO_RULE, false)
            }
            Some(cfg) => match dns::config() {
                // DNS of an identity that names hosts goes to its proxy,
                // whatever resolver it was meant for; the proxy judges names.
                // The kernel refuses a sendmsg6 rewritten to an IPv4-mapped
                // address (ENOTSUPP), and there is no IPv6 proxy: an
                // unconnected datagram to an IPv6 resolver is refused.
                Some(_)
                    if port == DNS_PORT && cfg.flags & IDENT_DNS != 0 && hook == Hook::Sendmsg6 =>
                {
                    (Reason::DefaultDeny, NO_RULE, cfg.audit != 0)
                }
                Some(dns_cfg) if port == DNS_PORT && cfg.flags & IDENT_DNS != 0 => {
                    dns::steer(ctx, hook == Hook::Connect6, &dns_cfg, identity, &addr);
                    (Reason::AllowRule, NO_RULE, false)
                }
                // Reaching a proxy address any other way could speak for
                // another identity: never, not even in audit mode.
                Some(dns_cfg) if dns::is_proxy(&dns_cfg, &addr) => {
                    (Reason::DnsProxyDirect, NO_RULE, false)
                }
                // The daemon's TCP API: an agent there could try to act as
                // an operator. Only when the policy says so, in any mode.
                _ if cfg.flags & IDENT_API_TCP == 0 && guard::is_api(&addr, port, protocol) => {
                    (Reason::ApiPort, NO_RULE, false)
                }
                _ => {
                    let j =
                        policy::judge(ctx, generation, &cfg, identity, &addr, port, protocol as u8);
                    // What a connected socket's verdict rests on, kept so
                    // the egress program can judge it again when the
                    // permission may have ended. (A refused connect leaves
                    // the socket's earlier connection and its record.) A
                    // datagram's too: a corked one leaves only later, when
                    // the permission may be gone.
                    if (connect || protocol as u8 == IPPROTO_UDP) && j.allows() {
                        let flags = if j.via_learned {
                            JUDGED_VALID | JUDGED_VIA_LEARNED
                        } else {
                            JUDGED_VALID
                        };
                        crate::sockets::remember_judgement(
                            slot,
                            flags | (u32::from(port) << 16),
                            generation.number,
                            j.until_ns,
                            &addr,
                        );
                    }
                    (j.reason, j.rule, cfg.audit != 0)
                }
            },
        }
    };
    let verdict = match reason {
        Reason::AllowRule | Reason::Elevation => Verdict::Allow,
        _ if audit => Verdict::Audit,
        _ => Verdict::Deny,
    };
    record(&Decision {
        hook,
        identity,
        generation,
        verdict,
        reason,
        rule,
        addr: addr.bytes,
        port,
        family: if addr.is_v6 { AF_INET6 } else { AF_INET },
        protocol: protocol as u16,
        sock_type: sock_type as u8,
    });
    if verdict == Verdict::Deny {
        DENY
    } else {
        ALLOW
    }
}
