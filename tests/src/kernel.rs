//! Asking the kernel directly what is attached, independent of the daemon.

use std::{ffi::CString, os::unix::ffi::OsStrExt, path::Path};

/// Attach types (uapi `enum bpf_attach_type`).
pub const ATTACH_INET_SOCK_CREATE: u32 = 2;
pub const ATTACH_INET4_CONNECT: u32 = 10;
pub const ATTACH_INET6_CONNECT: u32 = 11;
pub const ATTACH_UDP4_SENDMSG: u32 = 14;
pub const ATTACH_UDP6_SENDMSG: u32 = 15;

const BPF_PROG_QUERY: libc::c_long = 16;

/// How many programs of `attach_type` are attached directly to `cgroup`.
pub fn attached_programs(cgroup: &Path, attach_type: u32) -> u32 {
    let c = CString::new(cgroup.as_os_str().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    // SAFETY: opening a directory read-only.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    assert!(
        fd >= 0,
        "open {}: {}",
        cgroup.display(),
        std::io::Error::last_os_error()
    );
    // struct { u32 target_fd; u32 attach_type; u32 query_flags; u32 attach_flags;
    //          u64 prog_ids; u32 prog_cnt; ... }
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(fd as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&attach_type.to_ne_bytes());
    // SAFETY: attr is a zeroed bpf_attr of the size passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: closing our fd.
    unsafe { libc::close(fd) };
    assert!(ret == 0, "BPF_PROG_QUERY on {}: {err}", cgroup.display());
    u32::from_ne_bytes([attr[24], attr[25], attr[26], attr[27]])
}
