//! The kernel filesystems the daemon needs, mounted when the host has not:
//! bpffs (pins), tracefs (the tracepoints' ids) and securityfs (the list
//! of active LSMs). Many hosts mount none of them at boot; the daemon and
//! `palisade doctor` mount them the same way, so both see the same host.
//!
//! Each is an API filesystem with no state of its own: mounting it twice
//! is harmless, and mounting it where it belongs changes nothing for the
//! rest of the host.

pub mod service;

use std::{fs, io, path::Path};

use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, SECURITYFS_MAGIC, TRACEFS_MAGIC, statfs},
};

/// Where bpffs lives when the host has not mounted it.
pub const BPFFS: &str = "/sys/fs/bpf";
pub const TRACEFS: &str = "/sys/kernel/tracing";
/// Older hosts reach tracefs through debugfs only.
pub const TRACEFS_LEGACY: &str = "/sys/kernel/debug/tracing";
pub const SECURITYFS: &str = "/sys/kernel/security";

/// What `ensure` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mounted {
    /// It was there already.
    Present,
    /// This process mounted it.
    Now,
}

fn is(path: &Path, magic: nix::sys::statfs::FsType) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == magic)
}

pub fn is_bpffs(path: &Path) -> bool {
    is(path, BPF_FS_MAGIC)
}

/// The tracefs directory with the cgroup tracepoints, if one is mounted.
pub fn tracefs_dir() -> Option<&'static str> {
    [TRACEFS, TRACEFS_LEGACY]
        .into_iter()
        .find(|d| is(Path::new(d), TRACEFS_MAGIC))
}

pub fn securityfs_mounted() -> bool {
    is(Path::new(SECURITYFS), SECURITYFS_MAGIC)
}

fn mount_fs(fstype: &str, target: &str, data: Option<&str>) -> io::Result<Mounted> {
    fs::create_dir_all(target)?;
    mount(
        Some(fstype),
        target,
        Some(fstype),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        data,
    )
    .map_err(|e| io::Error::other(format!("mounting {fstype} at {target}: {e}")))?;
    tracing::info!(fs = fstype, path = target, "mounted");
    Ok(Mounted::Now)
}

/// Mount bpffs at `/sys/fs/bpf` when `pin_dir` would live there and it is
/// not mounted yet. A pin directory elsewhere must already be on bpffs.
pub fn ensure_bpffs(pin_dir: &Path) -> io::Result<Mounted> {
    if !pin_dir.starts_with(BPFFS) || is_bpffs(Path::new(BPFFS)) {
        return Ok(Mounted::Present);
    }
    mount_fs("bpf", BPFFS, Some("mode=0700"))
}

/// Mount tracefs at `/sys/kernel/tracing` unless one is mounted already.
pub fn ensure_tracefs() -> io::Result<Mounted> {
    if tracefs_dir().is_some() {
        return Ok(Mounted::Present);
    }
    mount_fs("tracefs", TRACEFS, None)
}

/// Mount securityfs at `/sys/kernel/security` unless it is mounted.
pub fn ensure_securityfs() -> io::Result<Mounted> {
    if securityfs_mounted() {
        return Ok(Mounted::Present);
    }
    mount_fs("securityfs", SECURITYFS, None)
}

/// Mount all three where needed (and possible). Failures are returned per
/// filesystem, not fatal here: the host checks that follow say what is
/// missing and what it costs.
pub fn ensure_all(pin_dir: &Path) -> Vec<(&'static str, io::Result<Mounted>)> {
    vec![
        ("bpffs", ensure_bpffs(pin_dir)),
        ("tracefs", ensure_tracefs()),
        ("securityfs", ensure_securityfs()),
    ]
}
