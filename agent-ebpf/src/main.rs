//! Palisade's eBPF programs. Each hook lives in its own file and is a thin
//! wrapper; the shared steps (who is calling, what the policy says, what to
//! record) live in `identity`, `policy` and `emit`.
#![no_std]
#![no_main]
// Atomic adds on shared map values: the BPF target has no `AtomicU64`.
#![feature(core_intrinsics)]
#![expect(internal_features, reason = "core_intrinsics for atomic adds")]

mod aggregate;
mod bind;
mod cgroup_mkdir;
mod connect4;
mod connect6;
mod dns;
mod egress;
mod emit;
mod gateway;
mod getpeername4;
mod getpeername6;
mod grants;
mod guard;
mod identity;
mod learned;
mod lineage;
mod maps;
mod policy;
mod recvmsg4;
mod recvmsg6;
mod sendmsg4;
mod sendmsg6;
mod sock_addr;
mod sock_create;
mod socket_guard;
mod socket_lsm;
mod sockets;
mod sockopt;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible: LSM programs and bpf_probe_read_kernel_str require it.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
