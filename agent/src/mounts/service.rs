//! `palisade mount`: mount the kernel filesystems the daemon needs where
//! they last — in the host's mount namespace — and make them visible in the
//! calling process's own namespace too.
//!
//! Why two namespaces: systemd runs a unit's `ExecStartPre=+…` inside the
//! mount namespace it builds for the service (ProtectSystem=, PrivateTmp=,
//! ReadWritePaths=…), the same one ExecStart then runs in. A bpffs mounted
//! there is a new bpffs instance that dies with that namespace when the
//! service stops, taking every pin — and enforcement — with it; and the
//! daemon, without CAP_SYS_ADMIN, cannot mount one itself. So this enters
//! PID 1's mount namespace, mounts what is missing there, takes a clone of
//! each mount (`open_tree`), returns, and attaches the clones over the same
//! paths here (`move_mount`). Both namespaces then see one bpffs instance,
//! owned by the host: pins outlive the service, and the next start of the
//! service finds bpffs already in the namespace it copies from the host.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    path::Path,
};

use nix::sched::{CloneFlags, setns};

use super::{BPFFS, Mounted, SECURITYFS, ensure_all, tracefs_dir};

// From <linux/mount.h>; the libc crate does not carry them for glibc.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x0000_0004;

#[derive(Debug, thiserror::Error)]
pub enum ServiceMountError {
    #[error("opening the mount namespace {path}: {source}")]
    Namespace {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "entering the mount namespace {what}: {source} (needs CAP_SYS_ADMIN, as the unit's `+` prefix gives)"
    )]
    Setns {
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("cloning the {fs} mount at {path} in the host's namespace: {source}")]
    Clone {
        fs: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("attaching {fs} at {path} in this namespace: {source}")]
    Attach {
        fs: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

/// What happened to one filesystem.
#[derive(Debug)]
pub struct Outcome {
    pub fs: &'static str,
    pub path: String,
    /// In the host's mount namespace: there already, mounted now, or why not.
    pub host: Result<Mounted, String>,
    /// Attached here from the host (false: it was visible already, or this
    /// process runs in the host's namespace).
    pub attached: bool,
}

impl Outcome {
    /// Mounted in the host's namespace, whether by us or before.
    pub fn ok(&self) -> bool {
        self.host.is_ok()
    }
}

fn same_file(a: &File, b: &File) -> io::Result<bool> {
    let (a, b) = (a.metadata()?, b.metadata()?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

fn open_ns(path: &'static str) -> Result<File, ServiceMountError> {
    File::open(path).map_err(|source| ServiceMountError::Namespace { path, source })
}

/// A process's mount namespace and its root directory there: a chroot or
/// `pivot_root` below the namespace's top (a container, a test harness)
/// puts them apart, and setns(2) leaves the caller at the top.
struct Place {
    ns: File,
    root: File,
}

impl Place {
    fn of(ns: &'static str, root: &'static str) -> Result<Self, ServiceMountError> {
        Ok(Self {
            ns: open_ns(ns)?,
            root: open_ns(root)?,
        })
    }
}

/// Enter `place`'s namespace and stand in its root, so paths resolve as
/// that process sees them.
fn enter(place: &Place, what: &'static str) -> Result<(), ServiceMountError> {
    let fail = |source| ServiceMountError::Setns { what, source };
    setns(place.ns.as_fd(), CloneFlags::CLONE_NEWNS).map_err(fail)?;
    nix::unistd::fchdir(place.root.as_fd()).map_err(fail)?;
    nix::unistd::chroot(".").map_err(fail)?;
    nix::unistd::chdir("/").map_err(fail)
}

fn cstring(path: &str) -> io::Result<CString> {
    CString::new(path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// A detached copy of the mount at `path` (`open_tree(OPEN_TREE_CLONE)`).
fn clone_mount(path: &str) -> io::Result<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: open_tree reads a NUL-terminated path and returns a new fd
    // (or -1); no memory of ours is kept.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("open_tree returned a bad fd"))?;
    // SAFETY: the kernel just gave us this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Attach a detached mount over `path`.
fn attach(tree: &OwnedFd, path: &str) -> io::Result<()> {
    let empty = cstring("")?;
    let to = cstring(path)?;
    // SAFETY: move_mount reads two NUL-terminated paths; `tree` is a valid
    // open_tree fd for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn device(path: &str) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.dev())
}

/// Mount bpffs (when `pin_dir` lives under /sys/fs/bpf), tracefs and
/// securityfs in PID 1's mount namespace where missing, and make each
/// visible in this process's namespace. Must run single-threaded (setns).
pub fn mount_for_service(pin_dir: &Path) -> Result<Vec<Outcome>, ServiceMountError> {
    let own = Place::of("/proc/self/ns/mnt", "/proc/self/root")?;
    let host = Place::of("/proc/1/ns/mnt", "/proc/1/root")?;
    let in_host = same_file(&own.ns, &host.ns).map_err(|source| ServiceMountError::Namespace {
        path: "/proc/1/ns/mnt",
        source,
    })?;
    if !in_host {
        enter(&host, "of PID 1")?;
    }
    let mounted = ensure_all(pin_dir);
    let mut outcomes = Vec::new();
    let mut clones = Vec::new();
    for (fs, result) in mounted {
        let path = match fs {
            "bpffs" if !pin_dir.starts_with(BPFFS) => continue,
            "bpffs" => BPFFS.to_string(),
            "tracefs" => tracefs_dir().unwrap_or(super::TRACEFS).to_string(),
            _ => SECURITYFS.to_string(),
        };
        let host_result = result.map_err(|e| e.to_string());
        if !in_host && host_result.is_ok() {
            let tree = clone_mount(&path).map_err(|source| ServiceMountError::Clone {
                fs,
                path: path.clone(),
                source,
            });
            match tree {
                Ok(t) => clones.push((outcomes.len(), device(&path), t)),
                Err(e) => {
                    let _ = enter(&own, "of this process");
                    return Err(e);
                }
            }
        }
        outcomes.push(Outcome {
            fs,
            path,
            host: host_result,
            attached: false,
        });
    }
    if in_host {
        return Ok(outcomes);
    }
    enter(&own, "of this process")?;
    for (i, host_dev, tree) in clones {
        let o = &mut outcomes[i];
        // Already the host's instance here (copied when the namespace was made).
        if host_dev.is_some() && device(&o.path) == host_dev {
            continue;
        }
        attach(&tree, &o.path).map_err(|source| ServiceMountError::Attach {
            fs: o.fs,
            path: o.path.clone(),
            source,
        })?;
        o.attached = true;
    }
    Ok(outcomes)
}
