//! `cgroup/recvmsg4`: recvmsg()/recvfrom() on a UDP socket: the source of a datagram,
//! shown as the resolver the process meant when it is really the DNS proxy.

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

#[cgroup_sock_addr(recvmsg4)]
pub fn recvmsg4(ctx: SockAddrContext) -> i32 {
    crate::dns::restore(&ctx, false)
}
