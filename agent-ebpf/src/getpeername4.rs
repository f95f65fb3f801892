//! `cgroup/getpeername4`: getpeername(): the peer of a connected socket,
//! shown as the resolver the process meant when it is really the DNS proxy.

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

#[cgroup_sock_addr(getpeername4)]
pub fn getpeername4(ctx: SockAddrContext) -> i32 {
    crate::dns::restore(&ctx, false)
}
