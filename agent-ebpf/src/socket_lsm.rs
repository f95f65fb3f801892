//! `lsm/socket_create`: packet sockets (`AF_PACKET`) and `AF_XDP` sockets
//! never reach `cgroup/sock_create`, which only sees inet sockets, and they
//! can put any frame on the wire. Refuse them to enrolled processes here.

use agent_common::{AF_PACKET, Hook, Verdict};
use aya_ebpf::{macros::lsm, programs::LsmContext};

use crate::{
    emit::{Decision, record},
    identity, policy,
};

const AF_XDP: i32 = 44;
const EPERM: i32 = 1;

#[lsm(hook = "socket_create")]
pub fn socket_create(ctx: LsmContext) -> i32 {
    // int socket_create(int family, int type, int protocol, int kern)
    let (family, sock_type, protocol, kern): (i32, i32, i32, i32) =
        (ctx.arg(0), ctx.arg(1), ctx.arg(2), ctx.arg(3));
    if kern != 0 || (family != AF_PACKET as i32 && family != AF_XDP) {
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
