//! What `palisade exec` takes away from an agent before running it, so
//! that it cannot leave its identity or reach around its guard:
//!
//! * a cgroup namespace rooted at its enrolled cgroup and a private mount
//!   namespace in which every cgroup filesystem is read-only and bpffs is
//!   not mounted (when the caller may create namespaces, i.e. has
//!   `CAP_SYS_ADMIN`): the agent cannot write itself into another cgroup,
//!   and cannot unlink or open Palisade's pins; and an IPC namespace of its
//!   own (no SysV shared memory or message queues of the host's);
//! * in that mount namespace, the host's controls read-only (`/sys`,
//!   `/proc/sys` and the /proc knobs containers mask) and the daemon's
//!   config, policy, trail and socket too; its signing key hidden;
//! * the capabilities in `DROPPED`, from the bounding, permitted,
//!   effective, inheritable and ambient sets, unless the identity's policy
//!   keeps them (`confinement.keep_capabilities`);
//! * `no_new_privs`, always: no setuid binary or file capability gives
//!   anything back.
//!
//! The kernel's lineage tracking follows the agent even where none of this
//! applies (an unprivileged caller); this keeps it from trying.

use std::{
    io,
    path::{Path, PathBuf},
};

use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, unshare},
};

/// Capabilities an agent loses unless its policy keeps them, by policy
/// name and number.
pub const DROPPED: &[(&str, u32)] = &[
    // Mounts, namespaces, cgroup delegation, BPF before CAP_BPF: the key to
    // most of the others.
    ("sys_admin", 21),
    // Loading and detaching eBPF programs, reading and writing maps.
    ("bpf", 39),
    // Routes, interfaces, firewall, network namespaces of others.
    ("net_admin", 12),
    // Raw and packet sockets.
    ("net_raw", 13),
    // Reaching into other processes (another identity's agent).
    ("sys_ptrace", 19),
    // Kernel modules.
    ("sys_module", 16),
    // /dev/mem, I/O ports: the kernel's memory.
    ("sys_rawio", 17),
    // Tracing programs and perf events (with CAP_BPF).
    ("perfmon", 38),
    // Root's reach over files it does not own: with these gone a root
    // agent is held to the permission bits like anyone else.
    ("dac_override", 1),
    ("dac_read_search", 2),
    ("fowner", 3),
    ("linux_immutable", 9),
    // Device nodes (a disk's raw blocks).
    ("mknod", 27),
    // The host's clock, reboot, limits, accounting, logs, audit and LSMs.
    ("sys_time", 25),
    ("sys_boot", 22),
    ("sys_resource", 24),
    ("sys_pacct", 20),
    ("sys_tty_config", 26),
    ("syslog", 34),
    ("audit_control", 30),
    ("audit_read", 37),
    ("mac_override", 32),
    ("mac_admin", 33),
    ("wake_alarm", 35),
    ("block_suspend", 36),
    ("checkpoint_restore", 40),
    // Real-time scheduling for itself (a SCHED_FIFO spinner owns a CPU
    // the daemon needs) and raising others' priority.
    ("sys_nice", 23),
];

/// Host controls under /proc that a root agent could use to run code
/// outside its cgroup or change the kernel (`core_pattern`'s helper,
/// `modprobe`, binfmt_misc, sysrq): read-only in exec's mount namespace,
/// with every mount below them and everything under /sys.
const READ_ONLY_PROC: &[&str] = &[
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/proc/irq",
    "/proc/bus",
    "/proc/fs",
    "/proc/acpi",
    "/proc/scsi",
];
const READ_ONLY_TREES: &[&str] = &["/sys", "/proc/sys"];

/// How the host resolves names, the daemon's gateway and notifiers
/// included: a root agent that rewrote them would send the daemon's
/// upstream calls, and the credentials on them, to a listener of its own.
/// Read-only in exec's mount namespace (each file's target, where it is a
/// link).
const RESOLVER_FILES: &[&str] = &[
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
];

/// Which inherited files exec closes (`inherited`): those under every
/// path it makes read-only or hides for the agent (the host controls,
/// `daemon`'s paths), and with a read-only root all of them.
pub fn inherited_file_rule(daemon: &DaemonPaths, api_socket: &Path) -> crate::inherited::FileRule {
    crate::inherited::FileRule {
        api_socket: Some(api_socket.to_path_buf()),
        read_only: READ_ONLY_PROC
            .iter()
            .chain(READ_ONLY_TREES)
            .map(PathBuf::from)
            .chain(daemon.protected.iter().cloned())
            .chain(daemon.hidden.iter().cloned())
            .collect(),
        all: daemon.read_only_root,
    }
}

/// The daemon's own paths, as the enrolment answer gives them.
#[derive(Debug, Default)]
pub struct DaemonPaths {
    /// Made read-only (config, policy, trail directory, socket).
    pub protected: Vec<PathBuf>,
    /// Covered with an empty file (the token signing key).
    pub hidden: Vec<PathBuf>,
    /// `confinement.read_only_root`: every other mount read-only too,
    /// except `writable` (bound onto themselves first, so they stay apart).
    pub read_only_root: bool,
    pub writable: Vec<PathBuf>,
    /// Links to the daemon's files in shared directories: the directories
    /// above them are pinned, and `replaceable_links` says whether the
    /// agent could still replace one.
    pub exposed_links: Vec<PathBuf>,
}

/// The number of a capability by its policy name.
pub fn capability(name: &str) -> Option<u32> {
    DROPPED.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
}

/// Errors applying the confinement; each says which step failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("{step}: {source}")]
    Step {
        step: String,
        #[source]
        source: io::Error,
    },
}

fn step(step: impl Into<String>) -> impl FnOnce(io::Error) -> ConfineError {
    let step = step.into();
    move |source| ConfineError::Step { step, source }
}

/// What `apply` did, for the caller's log.
#[derive(Debug, Default)]
pub struct Applied {
    /// Namespaces were created (the caller had `CAP_SYS_ADMIN`).
    pub namespaces: bool,
    pub read_only: Vec<PathBuf>,
    pub hidden: Vec<PathBuf>,
    pub dropped: Vec<&'static str>,
}

/// Confine the calling (single-threaded, about to exec) process.
pub fn apply(keep: &[String], daemon: &DaemonPaths) -> Result<Applied, ConfineError> {
    let mut applied = Applied::default();
    if has_effective(21) {
        namespaces(daemon, &mut applied)?;
    } else if daemon.read_only_root {
        return Err(step("confinement.read_only_root")(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "needs a mount namespace: run `palisade exec` with CAP_SYS_ADMIN (as root)",
        )));
    }
    for (name, cap) in DROPPED {
        if keep.iter().any(|k| k == name) {
            continue;
        }
        drop_capability(*cap).map_err(step(format!("dropping CAP_{}", name.to_uppercase())))?;
        applied.dropped.push(name);
    }
    // SAFETY: plain prctl calls.
    unsafe {
        if libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        ) != 0
        {
            return Err(step("clearing ambient capabilities")(
                io::Error::last_os_error(),
            ));
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(step("setting no_new_privs")(io::Error::last_os_error()));
        }
    }
    Ok(applied)
}

/// A cgroup namespace at the current (enrolled) cgroup, an IPC namespace,
/// and a mount namespace that no longer propagates to the host, with
/// cgroupfs read-only and bpffs gone.
fn namespaces(daemon: &DaemonPaths, applied: &mut Applied) -> Result<(), ConfineError> {
    // The working directory by its path, taken before any mount: see the
    // end of this function.
    let cwd = std::env::current_dir().map_err(step(
        "finding the working directory (start the agent from a directory that exists)",
    ))?;
    // A new IPC namespace too: a root agent would otherwise attach the
    // host's SysV shared memory and message queues (root's own, or any
    // with CAP_IPC_OWNER) and steer the processes that read them.
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWCGROUP | CloneFlags::CLONE_NEWIPC)
        .map_err(|e| step("creating mount and cgroup namespaces")(e.into()))?;
    // Changes below stay in this namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| step("making the mount namespace private")(e.into()))?;
    private_proc()?;
    // Paths that are not mount points become ones (bound onto themselves)
    // so that they can be remounted read-only below.
    let writable: Vec<&PathBuf> = if daemon.read_only_root {
        daemon
            .writable
            .iter()
            .filter(|p| p.is_absolute() && (p.is_dir() || p.is_file()))
            .collect()
    } else {
        Vec::new()
    };
    for p in &writable {
        mount(
            Some(p.as_path()),
            p.as_path(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| step(format!("binding writable {}", p.display()))(e.into()))?;
    }
    let mut roots: Vec<PathBuf> = READ_ONLY_PROC.iter().map(PathBuf::from).collect();
    roots.extend(daemon.protected.iter().cloned());
    roots.extend(
        RESOLVER_FILES
            .iter()
            .filter_map(|f| std::fs::canonicalize(f).ok()),
    );
    let roots: Vec<PathBuf> = roots.into_iter().filter(|p| p.exists()).collect();
    // A read-only mount fixes what is under a path, not the path: renaming
    // a directory above it (`/etc`, `/var/lib`) and putting another in its
    // place would lead every daemon path into the agent's copy. A mount
    // point cannot be renamed by a process of the namespace it is mounted
    // in (EBUSY), so each directory above the daemon's paths becomes one
    // (bound onto itself, first, so that the mounts below stay on top).
    for a in ancestors_to_pin(
        daemon
            .protected
            .iter()
            .chain(&daemon.hidden)
            .chain(&daemon.exposed_links),
    ) {
        mount(
            Some(a.as_path()),
            a.as_path(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| step(format!("pinning {}", a.display()))(e.into()))?;
    }
    for p in &roots {
        match mount(
            Some(p),
            p,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        ) {
            // Renamed away since it was listed (a file in a shared
            // directory replaced): what takes its place is not ours to bind.
            Err(nix::errno::Errno::ENOENT) if !p.exists() => continue,
            r => r.map_err(|e| step(format!("binding {}", p.display()))(e.into()))?,
        }
    }
    for p in &daemon.hidden {
        // A directory is covered with an empty read-only tmpfs (what is
        // renamed into it later stays hidden too); a file with /dev/null.
        let hidden = if p.is_dir() {
            mount(
                Some("tmpfs"),
                p,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=4k,mode=0555"),
            )
        } else if p.is_file() {
            mount(
                Some("/dev/null"),
                p,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        } else {
            continue;
        };
        hidden.map_err(|e| step(format!("hiding {}", p.display()))(e.into()))?;
        applied.hidden.push(p.clone());
    }
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(step("reading /proc/self/mountinfo"))?;
    let mut mounts = parse_mountinfo(&text);
    // Deepest first: a mount on top of another goes before it.
    mounts.sort_by_key(|m| std::cmp::Reverse(m.point.as_os_str().len()));
    for m in &mounts {
        let protected = matches!(m.fstype.as_str(), "cgroup" | "cgroup2")
            || READ_ONLY_TREES.iter().any(|t| m.point.starts_with(t))
            || roots.iter().any(|t| m.point.starts_with(t));
        // Everything else too with `read_only_root`, except the writable
        // paths and /proc (per-process files such as oom_score_adj).
        let whole = daemon.read_only_root
            && m.fstype != "proc"
            && !writable.iter().any(|w| m.point.starts_with(w));
        // Another procfs (a chroot's, a container's) would show every
        // process again, the daemon's files included: gone like bpffs.
        let other_proc = m.fstype == "proc" && !m.point.starts_with("/proc");
        let read_only = protected || whole || other_proc;
        if m.fstype == "bpf" || other_proc {
            match umount2(&m.point, MntFlags::MNT_DETACH) {
                Ok(()) => {
                    applied.hidden.push(m.point.clone());
                    continue;
                }
                // Below a mount taken away already.
                Err(_) if !still_mounted(&m.point) => continue,
                // Listed twice (bound along with a directory above it):
                // what the path shows now is no procfs.
                Err(_) if other_proc && !is_procfs(&m.point) => continue,
                // A procfs that stays is made read-only below.
                Err(_) if other_proc => {}
                Err(e) => {
                    return Err(step(format!("unmounting bpffs at {}", m.point.display()))(
                        e.into(),
                    ));
                }
            }
        }
        if read_only && !m.read_only {
            match remount_read_only(m) {
                // Unmounted since mountinfo was read (another namespace's
                // bind, a container going away, a file bound here replaced
                // by a rename, which takes its mount along): nothing left
                // to protect. Only if it is really gone from mountinfo.
                // (ENOENT: no longer reachable by its path in this view,
                // gone or covered by a mount above it.)
                Err(ConfineError::Step { source, .. })
                    if source.raw_os_error() == Some(libc::ENOENT)
                        || (source.raw_os_error() == Some(libc::EINVAL)
                            && !still_mounted(&m.point)) =>
                {
                    continue;
                }
                r => r?,
            }
            if !applied.read_only.contains(&m.point) {
                applied.read_only.push(m.point.clone());
            }
        }
    }
    // The working directory still points at the directory beneath the
    // mounts made above (a pinned /tmp, a read-only /etc/palisade, a
    // hidden key directory): relative paths from it would go around every
    // one of them. Entered again by its path, it is what the agent's
    // absolute paths see; a directory now hidden is refused.
    std::env::set_current_dir(&cwd).map_err(|e| {
        step(format!(
            "entering the working directory {} again in the agent's view (it is hidden from \
             the agent: start it from another directory)",
            cwd.display()
        ))(e)
    })?;
    applied.namespaces = true;
    Ok(())
}

/// A /proc of the agent's own, `hidepid=ptraceable`: the host's /proc let a
/// root agent write the per-process files of the daemon (same user, so
/// the file modes allow it, and no ptrace check applies to them):
/// `autogroup` (nice 19 for the daemon's whole session), `oom_score_adj`,
/// `coredump_filter`. In this one a process the agent could not ptrace —
/// the daemon, any process with capabilities the agent lacks, other
/// users' — has no directory at all (`invisible` would not do: it lets
/// members of its `gid=`, root's group by default, see everything, and a
/// root agent can join any group). The host's /proc goes first, with
/// what was mounted below it (`binfmt_misc`).
fn private_proc() -> Result<(), ConfineError> {
    umount2("/proc", MntFlags::MNT_DETACH)
        .map_err(|e| step("unmounting the host's /proc")(e.into()))?;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("hidepid=ptraceable"),
    )
    .map_err(|e| step("mounting a /proc of the agent's own (hidepid)")(e.into()))
}

fn is_procfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC)
}

/// Whether `point` is still a mount point of this namespace.
fn still_mounted(point: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|text| parse_mountinfo(&text).iter().any(|m| m.point == point))
        // Unreadable: assume it is, so that the error stands.
        .unwrap_or(true)
}

/// The directories above `paths` (not `/`), shallowest first, each once.
fn ancestors_to_pin<'a>(paths: impl Iterator<Item = &'a PathBuf>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    // A link counts as there even when it leads nowhere.
    for p in paths.filter(|p| p.is_absolute() && std::fs::symlink_metadata(p).is_ok()) {
        for a in p.ancestors().skip(1) {
            if a.parent().is_some() && a.is_dir() && !out.iter().any(|o| o == a) {
                out.push(a.to_path_buf());
            }
        }
    }
    out.sort_by_key(|a| a.components().count());
    out
}

fn remount_read_only(m: &MountPoint) -> Result<(), ConfineError> {
    mount(
        None::<&str>,
        &m.point,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | m.flags,
        None::<&str>,
    )
    .map_err(|e| step(format!("making {} read-only", m.point.display()))(e.into()))
}

struct MountPoint {
    point: PathBuf,
    fstype: String,
    read_only: bool,
    /// Per-mount flags to keep on a remount.
    flags: MsFlags,
}

fn parse_mountinfo(text: &str) -> Vec<MountPoint> {
    text.lines()
        .filter_map(|line| {
            // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER
            let (left, right) = line.split_once(" - ")?;
            let mut l = left.split_whitespace();
            let point = crate::identity::cgroupfs::unescape_mountinfo(l.nth(4)?);
            let opts = l.next()?;
            let fstype = right.split_whitespace().next()?.to_string();
            let mut flags = MsFlags::empty();
            for o in opts.split(',') {
                flags |= match o {
                    "nosuid" => MsFlags::MS_NOSUID,
                    "nodev" => MsFlags::MS_NODEV,
                    "noexec" => MsFlags::MS_NOEXEC,
                    "noatime" => MsFlags::MS_NOATIME,
                    "nodiratime" => MsFlags::MS_NODIRATIME,
                    "relatime" => MsFlags::MS_RELATIME,
                    _ => MsFlags::empty(),
                };
            }
            Some(MountPoint {
                point: PathBuf::from(point),
                fstype,
                read_only: opts.split(',').any(|o| o == "ro"),
                flags,
            })
        })
        .collect()
}

/// `capget`/`capset` (version 3: two 32-bit words per set).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
const CAP_V3: u32 = 0x2008_0522;

fn capget() -> io::Result<[CapData; 2]> {
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and two data structs, as version 3 expects.
    if unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(data)
}

/// Which of `exposed` this process could use, with the credentials and
/// mounts it has now: a link it could replace (unlink, or rename over),
/// a file in a directory where it could make entries (the file while
/// missing, or what the daemon makes beside it). Writable means the
/// kernel's own check (read-only mounts and dropped capabilities
/// included); in a sticky directory such as /tmp a link is replaceable
/// only if it or the directory is its own or it keeps `CAP_FOWNER`.
pub fn replaceable_links(exposed: &[PathBuf]) -> Vec<PathBuf> {
    use nix::unistd::{AccessFlags, faccessat};
    use std::os::unix::fs::MetadataExt;
    let euid = nix::unistd::geteuid().as_raw();
    exposed
        .iter()
        .filter(|path| {
            let Some(dir) = path.parent() else {
                return false;
            };
            let writable = faccessat(
                nix::fcntl::AT_FDCWD,
                dir,
                AccessFlags::W_OK | AccessFlags::X_OK,
                nix::fcntl::AtFlags::AT_EACCESS,
            )
            .is_ok();
            let Ok(dir_meta) = std::fs::metadata(dir) else {
                return false;
            };
            match std::fs::symlink_metadata(path) {
                Ok(link) if link.file_type().is_symlink() => {
                    let sticky = dir_meta.mode() & 0o1000 != 0;
                    writable
                        && (!sticky
                            || link.uid() == euid
                            || dir_meta.uid() == euid
                            || has_effective(3))
                }
                _ => writable,
            }
        })
        .cloned()
        .collect()
}

fn has_effective(cap: u32) -> bool {
    capget().is_ok_and(|d| d[(cap / 32) as usize].effective & (1 << (cap % 32)) != 0)
}

/// Remove `cap` from the bounding set (if this process may) and from the
/// effective, permitted and inheritable sets.
fn drop_capability(cap: u32) -> io::Result<()> {
    // SAFETY: plain prctl calls.
    unsafe {
        if libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) == 1
            && libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0
        {
            let e = io::Error::last_os_error();
            // Without CAP_SETPCAP the bounding set cannot shrink; such a
            // caller does not hold the capability to begin with (checked
            // below), and no_new_privs keeps it from gaining it.
            if e.raw_os_error() != Some(libc::EPERM) {
                return Err(e);
            }
        }
    }
    let mut data = capget()?;
    let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
    if (data[word].effective | data[word].permitted | data[word].inheritable) & bit == 0 {
        return Ok(());
    }
    data[word].effective &= !bit;
    data[word].permitted &= !bit;
    data[word].inheritable &= !bit;
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    // SAFETY: header and two data structs, as version 3 expects.
    if unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mount_flags_and_types() {
        let text = "41 31 0:38 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw\n\
                    50 23 0:40 / /sys/fs/bpf rw,relatime - bpf bpf rw,mode=700\n\
                    60 23 0:41 / /mnt/a\\040b ro,relatime - cgroup cgroup rw,cpu\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].fstype, "cgroup2");
        assert!(m[0].flags.contains(MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC));
        assert!(!m[0].read_only);
        assert_eq!(m[1].point, PathBuf::from("/sys/fs/bpf"));
        assert_eq!(m[2].point, PathBuf::from("/mnt/a b"));
        assert!(m[2].read_only);
    }

    #[test]
    fn every_directory_above_the_daemons_paths_is_pinned_once() {
        let dir = std::env::temp_dir().join(format!("confine-pin-{}", std::process::id()));
        let (a, b) = (dir.join("etc/palisade"), dir.join("lib/palisade"));
        for d in [&a, &b] {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{e}"));
        }
        let pinned = ancestors_to_pin([a.clone(), b.clone(), dir.join("gone")].iter());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!pinned.contains(&PathBuf::from("/")), "{pinned:?}");
        for want in [dir.clone(), dir.join("etc"), dir.join("lib")] {
            assert_eq!(
                pinned.iter().filter(|p| **p == want).count(),
                1,
                "{want:?} in {pinned:?}"
            );
        }
        assert!(!pinned.contains(&a), "the path itself is bound elsewhere");
        let depths: Vec<usize> = pinned.iter().map(|p| p.components().count()).collect();
        assert!(depths.is_sorted(), "{pinned:?}");
    }

    #[test]
    fn capability_names() {
        assert_eq!(capability("net_raw"), Some(13));
        assert_eq!(capability("chown"), None);
    }
}
