//! `cgroup/sendmsg4`: sendto()/sendmsg() with a destination on an unconnected IPv4 UDP socket.

use agent_common::Hook;
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    crate::sock_addr::check(&ctx, Hook::Sendmsg4)
}
