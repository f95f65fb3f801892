//! `lsm/socket_create`: enrolled processes may create only the sockets of
//! the allowlist (`agent_common::guard::socket_allowed`): Unix, TCP and UDP
//! over IPv4/IPv6, routing netlink. Packet sockets under any name, vsock,
//! XDP and every other family never reach the cgroup socket hooks; raw,
//! ICMP, SCTP and MPTCP sockets go around the connect hooks. socketpair(2)
//! creates each end through this hook too.

use agent_common::{Hook, Verdict, guard::socket_allowed};
use aya_ebpf::{macros::lsm, programs::LsmContext};

use crate::{
    emit::{Decision, record},
    identity, policy,
};

const EPERM: i32 = 1;

#[lsm(hook = "socket_create")]
pub fn socket_create(ctx: LsmContext) -> i32 {
    // int socket_create(int family, int type, int protocol, int kern)
    let (family, sock_type, protocol, kern): (i32, i32, i32, i32) =
        (ctx.arg(0), ctx.arg(1), ctx.arg(2), ctx.arg(3));
    if kern != 0 || socket_allowed(family as u32, sock_type as u32, protocol as u32) {
        return 0;
    }
    let Some(identity) = identity::enrolled() else {
        return 0;
    };
    let generation = policy::active_generation();
    let audit = matches!(policy::identity_config(generation, identity), Some(c) if c.audit != 0);
    let mut decision = Decision::socket(
        Hook::SocketLsm,
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
    if audit { 0 } else { -EPERM }
}
