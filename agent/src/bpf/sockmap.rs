//! The socket-local storages agents' sockets get — `SOCK_GUARD` (the
//! identity stamp, on every enrolled socket) and `DNS_ORIG` (a steered DNS
//! socket's original resolver) — are created outside every memory cgroup.
//!
//! The kernel charges a socket storage to the memory cgroup of the process
//! that created the map, not to the socket's owner: made by the daemon, each
//! socket an agent opens (about 330 bytes, and 140 more when connected to
//! port 53) would count against the daemon's own limit (a unit's
//! `MemoryMax=`, a pod's limit). Agents with enough sockets — a compromised
//! one opening them on purpose — would drive the daemon to its limit and
//! have it killed. Created by a process in the root memory cgroup, the
//! storage is charged to no one, while the socket itself still counts
//! against the agent's own cgroup, which bounds how many it can make. (The
//! daemon's other maps have a fixed number of entries.)
//!
//! A short-lived child (forked before the object loads) moves itself to the
//! root of the memory hierarchy, creates the map with bpf(2) and pins it
//! where the loader looks for it; the loader then takes the pinned map as
//! it would one a previous daemon left. Where that is not possible (no
//! memory controller, a read-only cgroupfs) the loader creates the map
//! itself, as before, and the daemon says so.

use std::{ffi::CString, io, os::unix::ffi::OsStrExt, path::Path};

use agent_common::{dns::OrigDst, guard::SockGuard};

use super::sys::{Attr, bpf};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_BTF_LOAD: libc::c_long = 18;
const BPF_MAP_TYPE_SK_STORAGE: u32 = 24;
const BPF_F_NO_PREALLOC: u32 = 1;
/// An accepted socket gets a copy of its listener's storage (as the
/// program's map definition says).
const BPF_F_CLONE: u32 = 1 << 9;
/// The socket storages of the eBPF object, as its definitions make them:
/// (name — at most 15 bytes, the loader's —, value size, map flags).
pub const SOCKET_STORAGES: &[(&str, u32, u32)] = &[
    (
        "SOCK_GUARD",
        size_of::<SockGuard>() as u32,
        BPF_F_NO_PREALLOC | BPF_F_CLONE,
    ),
    ("DNS_ORIG", size_of::<OrigDst>() as u32, BPF_F_NO_PREALLOC),
];

/// BTF the kernel requires of a socket storage: `int` for the key (type 1)
/// and `value_size` bytes for the value (type 3, an array of type 2,
/// `unsigned char`).
fn storage_btf(value_size: u32) -> Vec<u8> {
    const KIND_INT: u32 = 1;
    const KIND_ARRAY: u32 = 3;
    const INT_SIGNED: u32 = 1 << 24;
    let strings = b"\0int\0unsigned char\0";
    let mut types = Vec::new();
    let mut put = |words: &[u32]| {
        for w in words {
            types.extend_from_slice(&w.to_ne_bytes());
        }
    };
    // [1] int: name "int" (offset 1), size 4, signed, 32 bits.
    put(&[1, KIND_INT << 24, 4, INT_SIGNED | 32]);
    // [2] unsigned char: name at offset 5, size 1, 8 bits.
    put(&[5, KIND_INT << 24, 1, 8]);
    // [3] unsigned char[48], indexed by int.
    put(&[0, KIND_ARRAY << 24, 0, 2, 1, value_size]);
    let mut out = Vec::new();
    out.extend_from_slice(&0xeb9f_u16.to_ne_bytes()); // magic
    out.push(1); // version
    out.push(0); // flags
    let words = [
        24u32,
        0,
        types.len() as u32,
        types.len() as u32,
        strings.len() as u32,
    ];
    for w in words {
        out.extend_from_slice(&w.to_ne_bytes());
    }
    out.extend_from_slice(&types);
    out.extend_from_slice(strings);
    out
}

/// The `cgroup.procs` of the root of the hierarchy that carries the memory
/// controller (cgroup v2, or v1's `memory`), from `mountinfo`.
fn memory_root_procs(mountinfo: &str) -> Option<std::path::PathBuf> {
    let mut v2 = None;
    for line in mountinfo.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut right = right.split_whitespace();
        let (fstype, super_opts) = (right.next()?, right.nth(1).unwrap_or_default());
        let mut left = left.split_whitespace();
        // Only a mount of the hierarchy's root is its root.
        let (root, mountpoint) = (left.nth(3)?, left.next()?);
        if root != "/" {
            continue;
        }
        let dir =
            std::path::PathBuf::from(crate::identity::cgroupfs::unescape_mountinfo(mountpoint));
        match fstype {
            "cgroup" if super_opts.split(',').any(|o| o == "memory") => {
                return Some(dir.join("cgroup.procs"));
            }
            "cgroup2" if v2.is_none() => v2 = Some(dir),
            _ => {}
        }
    }
    let v2 = v2?;
    let controllers = std::fs::read_to_string(v2.join("cgroup.controllers")).ok()?;
    controllers
        .split_whitespace()
        .any(|c| c == "memory")
        .then(|| v2.join("cgroup.procs"))
}

/// Create the socket storage `name` (`SOCKET_STORAGES`) uncharged and pin
/// it at `pin`, unless something is pinned there already. `Ok(false)`: not
/// possible here (the loader then creates it, charged to the daemon).
pub fn create_uncharged(pin: &Path, name: &str, value_size: u32, flags: u32) -> io::Result<bool> {
    if pin.exists() {
        return Ok(true);
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let Some(procs) = memory_root_procs(&mountinfo) else {
        return Ok(false);
    };
    // Everything the child needs is made before the fork: after it, only
    // system calls on this memory.
    let procs = CString::new(procs.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let pin_c = CString::new(pin.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let btf = storage_btf(value_size);
    let mut btf_attr = Attr::new();
    // struct { __aligned_u64 btf; __aligned_u64 btf_log_buf; __u32 btf_size; … }
    btf_attr.put_u64(0, btf.as_ptr() as u64);
    btf_attr.put_u32(16, btf.len() as u32);
    let mut map_attr = Attr::new();
    // struct { __u32 map_type, key_size, value_size, max_entries, map_flags,
    // inner_map_fd, numa_node; char map_name[16]; __u32 map_ifindex,
    // btf_fd, btf_key_type_id, btf_value_type_id; … }
    map_attr.put_u32(0, BPF_MAP_TYPE_SK_STORAGE);
    map_attr.put_u32(4, 4);
    map_attr.put_u32(8, value_size);
    map_attr.put_u32(16, flags);
    map_attr.put_bytes(28, &name.as_bytes()[..name.len().min(15)]);
    map_attr.put_u32(52, 1);
    map_attr.put_u32(56, 3);

    // SAFETY: the child makes only system calls on memory prepared above and
    // leaves with `_exit`, so nothing of the parent's threads (locks, the
    // allocator) is touched there.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(io::Error::last_os_error());
    }
    if child == 0 {
        // SAFETY: see above; every call is async-signal-safe.
        unsafe { libc::_exit(child_create(&procs, &pin_c, &mut btf_attr, &mut map_attr)) };
    }
    let mut status = 0;
    // SAFETY: waiting for the child just forked.
    if unsafe { libc::waitpid(child, &mut status, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(0) => Ok(true),
        // The move into the root cgroup was refused: not possible here.
        Some(1) => Ok(false),
        Some(code) => Err(io::Error::other(format!(
            "creating {} in the root memory cgroup: step {code} failed",
            pin.display()
        ))),
        None => Err(io::Error::other(format!(
            "creating {}: the child ended abnormally ({status:#x})",
            pin.display()
        ))),
    }
}

/// In the forked child: into the root memory cgroup, load the BTF, create
/// the map, pin it. Returns the exit code: 0, or the step that failed.
fn child_create(procs: &CString, pin: &CString, btf_attr: &mut Attr, map_attr: &mut Attr) -> i32 {
    // SAFETY: plain system calls on valid, NUL-terminated buffers.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
            return 1;
        }
        libc::close(fd);
    }
    let Ok(btf_fd) = bpf(BPF_BTF_LOAD, btf_attr) else {
        return 2;
    };
    map_attr.put_u32(48, btf_fd as u32);
    let Ok(map_fd) = bpf(BPF_MAP_CREATE, map_attr) else {
        return 3;
    };
    let mut pin_attr = Attr::new();
    pin_attr.put_u64(0, pin.as_ptr() as u64);
    pin_attr.put_u32(8, map_fd as u32);
    if bpf(BPF_OBJ_PIN, &mut pin_attr).is_err() {
        return 4;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_hierarchy_is_found_in_v1_and_v2_layouts() {
        let hybrid = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            memory_root_procs(hybrid),
            Some("/sys/fs/cgroup/memory/cgroup.procs".into())
        );
        // A bind mount of a sub-cgroup is not the root.
        let sub = "35 31 0:32 /kubepods /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(memory_root_procs(sub), None);
        // Without the memory controller anywhere: none.
        let cpu_only = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n";
        assert_eq!(memory_root_procs(cpu_only), None);
    }

    #[test]
    fn the_storage_btf_is_well_formed() {
        let b = storage_btf(48);
        assert_eq!(u16::from_ne_bytes([b[0], b[1]]), 0xeb9f);
        let word = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let (hdr, type_len, str_off, str_len) = (word(4), word(12), word(16), word(20));
        assert_eq!(hdr, 24);
        assert_eq!(str_off, type_len);
        assert_eq!(b.len() as u32, hdr + type_len + str_len);
        // The value type's element count is the value's size.
        assert_eq!(word(24 + 16 + 16 + 20), 48);
    }
}
