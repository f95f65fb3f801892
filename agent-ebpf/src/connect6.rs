//! `cgroup/connect6`: connect() through an IPv6 socket, including IPv4-mapped destinations.

use agent_common::Hook;
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    crate::sock_addr::check(&ctx, Hook::Connect6)
}
