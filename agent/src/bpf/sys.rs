//! The bpf(2) commands aya does not expose for every link type: pin and
//! open objects, create a cgroup link, swap the program behind a link,
//! detach a link.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `enum bpf_link_type`.
pub const BPF_LINK_TYPE_CGROUP: u32 = 3;
const BPF_LINK_CREATE: libc::c_long = 28;
/// `enum bpf_attach_type`.
pub const BPF_CGROUP_SETSOCKOPT: u32 = 22;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_LINK_DETACH: libc::c_long = 34;

/// `union bpf_attr` is at most this large for the commands used here.
#[repr(C, align(8))]
pub(super) struct Attr([u8; 128]);

impl Attr {
    pub(super) fn new() -> Self {
        Self([0; 128])
    }

    pub(super) fn put_u32(&mut self, offset: usize, v: u32) {
        self.0[offset..offset + 4].copy_from_slice(&v.to_ne_bytes());
    }

    pub(super) fn put_u64(&mut self, offset: usize, v: u64) {
        self.0[offset..offset + 8].copy_from_slice(&v.to_ne_bytes());
    }

    pub(super) fn put_bytes(&mut self, offset: usize, v: &[u8]) {
        self.0[offset..offset + v.len()].copy_from_slice(v);
    }
}

pub(super) fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid, zero-initialised bpf_attr of the size passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            size_of::<Attr>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Open a pinned bpffs object (map, program or link).
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = Attr::new();
    // struct { __aligned_u64 pathname; __u32 bpf_fd; __u32 file_flags; }
    attr.put_u64(0, c.as_ptr() as u64);
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a fresh file descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Pin an object (here: a link) at `path` on bpffs.
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = Attr::new();
    // struct { __aligned_u64 pathname; __u32 bpf_fd; __u32 file_flags; }
    attr.put_u64(0, c.as_ptr() as u64);
    attr.put_u32(8, fd.as_raw_fd() as u32);
    bpf(BPF_OBJ_PIN, &mut attr).map(drop)
}

/// Attach `prog` to `target` (a cgroup) with a new `bpf_link`.
pub fn link_create(
    prog: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    attach_type: u32,
) -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    // struct { __u32 prog_fd; __u32 target_fd; __u32 attach_type; __u32 flags; }
    attr.put_u32(0, prog.as_raw_fd() as u32);
    attr.put_u32(4, target.as_raw_fd() as u32);
    attr.put_u32(8, attach_type);
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: the kernel returned a fresh file descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Replace the program behind `link` with `prog`, atomically.
pub fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = Attr::new();
    // struct { __u32 link_fd; __u32 new_prog_fd; __u32 flags; __u32 old_prog_fd; }
    attr.put_u32(0, link.as_raw_fd() as u32);
    attr.put_u32(4, prog.as_raw_fd() as u32);
    bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
}

/// Detach a link from its hook now (Linux 5.9+). Unlinking a pin only drops
/// a reference, and the kernel releases the last one asynchronously; this
/// makes "enforcement is off" true when the call returns.
pub fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = Attr::new();
    // struct { __u32 link_fd; }
    attr.put_u32(0, link.as_raw_fd() as u32);
    bpf(BPF_LINK_DETACH, &mut attr).map(|_| ())
}

/// What the kernel says about a link (`struct bpf_link_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub link_type: u32,
    pub id: u32,
    pub prog_id: u32,
    /// Cgroup links: the cgroup attached to; 0 once the link was detached.
    pub cgroup_id: u64,
}

/// Read a link's info (`BPF_OBJ_GET_INFO_BY_FD`).
pub fn link_info(link: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    // struct bpf_link_info { __u32 type; __u32 id; __u32 prog_id; union
    // (8-aligned, at 16) { struct { __u64 cgroup_id; __u32 attach_type; }
    // cgroup; ... } }. The buffer is larger than any kernel's struct; the
    // kernel accepts a larger, zeroed tail.
    #[repr(C, align(8))]
    struct Info([u8; 128]);
    let mut info = Info([0; 128]);
    let mut attr = Attr::new();
    // struct { __u32 bpf_fd; __u32 info_len; __aligned_u64 info; }
    attr.put_u32(0, link.as_raw_fd() as u32);
    attr.put_u32(4, size_of::<Info>() as u32);
    attr.put_u64(8, info.0.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let u32_at =
        |o: usize| u32::from_ne_bytes([info.0[o], info.0[o + 1], info.0[o + 2], info.0[o + 3]]);
    let mut id = [0u8; 8];
    id.copy_from_slice(&info.0[16..24]);
    let link_type = u32_at(0);
    Ok(LinkInfo {
        link_type,
        id: u32_at(4),
        prog_id: u32_at(8),
        cgroup_id: if link_type == BPF_LINK_TYPE_CGROUP {
            u64::from_ne_bytes(id)
        } else {
            0
        },
    })
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_LSM: u32 = 29;
const BPF_LSM_MAC: u32 = 27;

/// Load a program that returns 0 as a BPF LSM program on the kernel function
/// with BTF id `attach_btf_id` (a `bpf_lsm_*` hook). Loading, not attaching:
/// it tells whether this kernel takes BPF LSM programs at all (some refuse
/// them with EPERM although `bpf` is among the active LSMs) without the full
/// BTF parse aya's loader needs for the real program.
pub fn probe_lsm_load(attach_btf_id: u32) -> io::Result<OwnedFd> {
    // r0 = 0; exit
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = b"GPL\0";
    let mut attr = Attr::new();
    attr.put_u32(0, BPF_PROG_TYPE_LSM);
    attr.put_u32(4, insns.len() as u32);
    attr.put_u64(8, insns.as_ptr() as u64);
    attr.put_u64(16, license.as_ptr() as u64);
    attr.put_u32(68, BPF_LSM_MAC);
    attr.put_u32(108, attach_btf_id);
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: a successful BPF_PROG_LOAD returns a new fd that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
