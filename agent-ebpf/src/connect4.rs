//! `cgroup/connect4`: connect() through an IPv4 socket (TCP and connected UDP).

use agent_common::Hook;
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    crate::sock_addr::check(&ctx, Hook::Connect4)
}
