//! `cgroup/sendmsg6`: sendto()/sendmsg() with a destination on an unconnected IPv6 UDP socket.

use agent_common::Hook;
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    crate::sock_addr::check(&ctx, Hook::Sendmsg6)
}
