//! `cgroup/sock_create`: enrolled processes may create TCP and UDP sockets
//! only. Raw sockets, ICMP datagram sockets, SCTP, MPTCP and the like are
//! refused at creation, because their traffic does not pass the connect and
//! sendmsg hooks. Every socket of an enrolled process is stamped with its
//! identity here (`sockets`).

use agent_common::{Hook, IPPROTO_TCP, IPPROTO_UDP, Reason, Verdict};
use aya_ebpf::{macros::cgroup_sock, programs::SockContext};

use crate::{
    emit::{Decision, record},
    identity, policy,
};

const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const ALLOW: i32 = 1;
const DENY: i32 = 0;

#[cgroup_sock(sock_create)]
pub fn sock_create(ctx: SockContext) -> i32 {
    let Some(identity) = identity::enrolled() else {
        return ALLOW;
    };
    // Whose socket it is, for the hooks that see only packets.
    let stamped = !crate::sockets::stamp(ctx.sock.cast(), identity).is_null();
    // SAFETY: the kernel hands a valid bpf_sock.
    let (family, sock_type, protocol) =
        unsafe { ((*ctx.sock).family, (*ctx.sock).type_, (*ctx.sock).protocol) };
    if !stamped {
        // No stamp, no kill switch or re-judging where its packets leave:
        // refused, in every mode (the kernel had no memory for it).
        let mut decision = Decision::socket(
            Hook::SockCreate,
            identity,
            policy::active_generation(),
            family as u16,
            protocol as u16,
            sock_type as u8,
        );
        decision.reason = Reason::SocketUntracked;
        record(&decision);
        return DENY;
    }
    let permitted = matches!(
        (sock_type, protocol),
        (SOCK_STREAM, p) if p == IPPROTO_TCP as u32
    ) || matches!((sock_type, protocol), (SOCK_DGRAM, p) if p == IPPROTO_UDP as u32);
    if permitted {
        return ALLOW;
    }
    let generation = policy::active_generation();
    let audit = matches!(policy::identity_config(generation, identity), Some(c) if c.audit != 0);
    let mut decision = Decision::socket(
        Hook::SockCreate,
        identity,
        generation,
        family as u16,
        protocol as u16,
        sock_type as u8,
    );
    if audit {
        decision.verdict = Verdict::Audit;
    }
    record(&decision);
    if audit { ALLOW } else { DENY }
}
