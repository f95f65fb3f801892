//! From a client socket's cgroup to an identity, as the kernel hooks
//! decide it: the nearest enrolled cgroup among the socket's cgroup and its
//! ancestors.

use std::{
    ffi::CString,
    io,
    os::{fd::FromRawFd, unix::ffi::OsStrExt},
    path::PathBuf,
};

use super::peer::PeerSocket;
use crate::daemon::{Daemon, DaemonError};

/// The caller of a gateway connection.
#[derive(Clone, Debug)]
pub struct Caller {
    pub socket: PeerSocket,
    /// Identity name and index; `None` for a process that is not enrolled.
    pub identity: Option<(String, u32)>,
}

/// `FILEID_KERNFS`: cgroupfs file handles carry the cgroup id.
const FILEID_KERNFS: i32 = 0xfe;

#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: u64,
}

/// The absolute path of the cgroup with this id (needs
/// CAP_DAC_READ_SEARCH, which the daemon has as root).
fn cgroup_path(root: &std::path::Path, id: u64) -> io::Result<PathBuf> {
    let c = CString::new(root.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a NUL-terminated path; the result is checked and owned.
    let mount = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if mount < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor.
    let mount = unsafe { std::os::fd::OwnedFd::from_raw_fd(mount) };
    let mut handle = KernfsHandle {
        handle_bytes: 8,
        handle_type: FILEID_KERNFS,
        id,
    };
    // SAFETY: `handle` has the layout of `struct file_handle` with an
    // 8-byte payload; the result is checked and owned.
    let fd = unsafe {
        libc::open_by_handle_at(
            std::os::fd::AsRawFd::as_raw_fd(&mount),
            (&raw mut handle).cast(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ))
}

/// The identity of the client socket `s`.
pub fn identify(daemon: &Daemon, s: PeerSocket) -> Result<Caller, DaemonError> {
    let name = |index: u32| {
        daemon
            .registry
            .name_of(index)
            .unwrap_or_else(|| format!("#{index}"))
    };
    if let Some(index) = daemon.maps.identity_of_cgroup(s.cgroup_id)? {
        return Ok(Caller {
            socket: s,
            identity: Some((name(index), index)),
        });
    }
    // A sub-cgroup of an enrolled one (or nothing enrolled at all). Its
    // path by file handle needs CAP_DAC_READ_SEARCH; without it, a walk of
    // the attached subtree finds it (slower, and rare: agents usually make
    // their sockets in the enrolled cgroup itself).
    let path = cgroup_path(daemon.cgroups.root(), s.cgroup_id).or_else(|e| {
        daemon
            .cgroups
            .walk(&daemon.attach)
            .into_iter()
            .find(|(_, id)| *id == s.cgroup_id)
            .map(|(rel, _)| daemon.cgroups.absolute(&rel))
            .ok_or(e)
    });
    let identity = match path {
        Ok(path) => match daemon.cgroups.relative(&path) {
            Some(rel) => {
                let mut found = None;
                for id in daemon.cgroups.ancestry_ids(&rel) {
                    if let Some(index) = daemon.maps.identity_of_cgroup(id)? {
                        found = Some((name(index), index));
                        break;
                    }
                }
                found
            }
            None => None,
        },
        // Gone already, or a cgroup outside this hierarchy: not enrolled.
        Err(e) => {
            tracing::debug!(cgroup_id = s.cgroup_id, error = %e, "gateway peer cgroup not found");
            None
        }
    };
    Ok(Caller {
        socket: s,
        identity,
    })
}
