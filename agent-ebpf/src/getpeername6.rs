//! `cgroup/getpeername6`: getpeername(): the peer of a connected socket,
//! shown as the resolver the process meant when it is really the DNS proxy.

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

#[cgroup_sock_addr(getpeername6)]
pub fn getpeername6(ctx: SockAddrContext) -> i32 {
    crate::dns::restore(&ctx, true)
}
