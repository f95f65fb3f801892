//! Host checks that need no eBPF: kernel, BTF, cgroup v2, bpffs, tracefs,
//! the LSM list and the process's capabilities.

use std::{
    io,
    path::{Path, PathBuf},
};

use nix::sys::statfs::{BPF_FS_MAGIC, CGROUP2_SUPER_MAGIC, statfs};

use super::Check;
use crate::{
    config::Config,
    identity::CgroupFs,
    mounts::{self, Mounted},
};

/// What mounting each kernel filesystem gave (`mounts::ensure_all`).
pub type MountResults = [(&'static str, io::Result<Mounted>)];

fn mount_result<'a>(mounts: &'a MountResults, name: &str) -> Option<&'a io::Result<Mounted>> {
    mounts.iter().find(|(n, _)| *n == name).map(|(_, r)| r)
}

/// " (mounted at start)" when this process mounted it.
fn mounted_note(mounts: &MountResults, name: &str) -> &'static str {
    match mount_result(mounts, name) {
        Some(Ok(Mounted::Now)) => " (mounted by palisade)",
        _ => "",
    }
}

/// Ring buffers (5.8) are the newest kernel feature the programs rely on;
/// BPF links for cgroups and `BPF_LINK_UPDATE` (5.7) come before.
const MIN_KERNEL: (u32, u32) = (5, 8);

/// Capability bits (linux/capability.h).
const CAP_CHOWN: u32 = 0;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

pub fn checks(config: &Config, mounts: &MountResults) -> Vec<Check> {
    let caps = effective_caps();
    vec![
        kernel(),
        btf(),
        capabilities(caps),
        cgroup2(config),
        bpffs(config, mounts),
        tracefs(mounts),
        lsm_list(mounts),
        landlock(),
        secrets_layout(config),
    ]
}

/// `(major, minor)` of a release string such as `6.18.44-fc`.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn kernel() -> Check {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    match parse_release(&release) {
        Some(v) if v >= MIN_KERNEL => Check::ok(
            "kernel",
            format!(
                "Linux {release} (needs {}.{} or later)",
                MIN_KERNEL.0, MIN_KERNEL.1
            ),
        ),
        Some(_) => Check::fail(
            "kernel",
            format!(
                "Linux {release} is older than {}.{}: no BPF ring buffers",
                MIN_KERNEL.0, MIN_KERNEL.1
            ),
            "run a kernel 5.8 or later (distribution kernels from 2021 on)",
        ),
        None => Check::warn(
            "kernel",
            format!("cannot tell the kernel version from {release:?}"),
            "check `uname -r`: Palisade needs 5.8 or later",
        ),
    }
}

fn btf() -> Check {
    let path = Path::new("/sys/kernel/btf/vmlinux");
    if !path.exists() {
        return Check::fail(
            "btf",
            format!("{} is missing: the kernel has no BTF", path.display()),
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (most distribution kernels are)",
        );
    }
    // The daemon's own lean reader (a full parse holds ~20 MiB for a moment,
    // which the preflight of a small daemon should not cost).
    match crate::bpf::KernelBtf::load() {
        Ok(_) => {
            let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            Check::ok("btf", format!("{} ({} KiB)", path.display(), size / 1024))
        }
        Err(e) => Check::fail(
            "btf",
            format!("{} cannot be read: {e}", path.display()),
            "run the daemon as root; check the file is readable",
        ),
    }
}

/// The effective capability set of this process.
pub fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

fn has(caps: u64, bit: u32) -> bool {
    caps & (1u64 << bit) != 0
}

fn capabilities(caps: u64) -> Check {
    let admin = has(caps, CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    for (bit, name, why) in [
        (CAP_BPF, "CAP_BPF", "create maps, load programs"),
        (
            CAP_NET_ADMIN,
            "CAP_NET_ADMIN",
            "load cgroup socket programs",
        ),
        (
            CAP_PERFMON,
            "CAP_PERFMON",
            "load the LSM program and the tracepoint",
        ),
    ] {
        if !has(caps, bit) && !admin {
            missing.push(format!("{name} ({why})"));
        }
    }
    if !missing.is_empty() {
        return Check::fail(
            "capabilities",
            format!("missing {}", missing.join(", ")),
            "run as root with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (the systemd unit and the DaemonSet grant them)",
        );
    }
    let mut have: Vec<&str> = [
        (CAP_BPF, "CAP_BPF"),
        (CAP_PERFMON, "CAP_PERFMON"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        (CAP_CHOWN, "CAP_CHOWN"),
    ]
    .iter()
    .filter(|(b, _)| has(caps, *b))
    .map(|(_, n)| *n)
    .collect();
    if has(caps, CAP_SYS_ADMIN) && !has(caps, CAP_BPF) {
        have.push("(CAP_SYS_ADMIN stands in for the rest)");
    }
    if !has(caps, CAP_CHOWN) {
        return Check::warn(
            "capabilities",
            format!("{}; no CAP_CHOWN", have.join(" ")),
            "grant CAP_CHOWN if `socket_group` is set (the socket is handed to that group)",
        );
    }
    Check::ok("capabilities", have.join(" "))
}

fn cgroup2(config: &Config) -> Check {
    let cgroups = match CgroupFs::discover() {
        Ok(c) => c,
        Err(e) => {
            return Check::fail(
                "cgroup2",
                format!("no cgroup v2 hierarchy: {e}"),
                "boot with systemd.unified_cgroup_hierarchy=1, or mount it: mount -t cgroup2 none /sys/fs/cgroup",
            );
        }
    };
    let root = cgroups.root();
    let layout = if root == Path::new("/sys/fs/cgroup") {
        "unified layout"
    } else {
        "hybrid layout: v1 controllers elsewhere"
    };
    let attach = config
        .cgroup
        .attach
        .clone()
        .unwrap_or_else(|| root.to_path_buf());
    if !attach.starts_with(root) {
        return Check::fail(
            "cgroup2",
            format!(
                "cgroup.attach {} is outside the cgroup v2 hierarchy at {}",
                attach.display(),
                root.display()
            ),
            "set cgroup.attach to a directory below the cgroup v2 mount (or leave it unset)",
        );
    }
    match statfs(&attach) {
        Ok(s) if s.filesystem_type() == CGROUP2_SUPER_MAGIC => Check::ok(
            "cgroup2",
            format!(
                "mounted at {} ({layout}); programs attach at {}",
                root.display(),
                attach.display()
            ),
        ),
        Ok(_) => Check::fail(
            "cgroup2",
            format!("{} is not on cgroup2", attach.display()),
            "set cgroup.attach to a cgroup v2 directory",
        ),
        Err(e) => Check::fail(
            "cgroup2",
            format!("cgroup.attach {}: {e}", attach.display()),
            "create it, or leave cgroup.attach unset to use the root",
        ),
    }
}

/// Nearest existing ancestor of `p` (itself included).
fn existing(p: &Path) -> PathBuf {
    let mut cur = p.to_path_buf();
    while !cur.exists() {
        if !cur.pop() {
            return PathBuf::from("/");
        }
    }
    cur
}

fn bpffs(config: &Config, mounts: &MountResults) -> Check {
    let pin = &config.bpffs;
    let on_bpffs = |p: &Path| statfs(p).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC);
    let near = existing(pin);
    if on_bpffs(&near) {
        return Check::ok(
            "bpffs",
            format!(
                "{} is on bpffs{}{}",
                pin.display(),
                mounted_note(mounts, "bpffs"),
                if near == *pin {
                    ""
                } else {
                    " (the directory is created at start)"
                }
            ),
        );
    }
    if let Some(Err(e)) = mount_result(mounts, "bpffs") {
        return Check::fail(
            "bpffs",
            format!(
                "bpffs is not mounted at {} and could not be: {e}",
                mounts::BPFFS
            ),
            format!(
                "run `palisade mount` as root first (the systemd unit does, in ExecStartPre), or give the daemon CAP_SYS_ADMIN; by hand: mount -t bpf bpf {}",
                mounts::BPFFS
            ),
        );
    }
    Check::fail(
        "bpffs",
        format!("{} is not on a bpf filesystem", pin.display()),
        "set `bpffs` to a directory under a bpffs mount such as /sys/fs/bpf/palisade",
    )
}

fn tracefs(mounts: &MountResults) -> Check {
    let Some(dir) = mounts::tracefs_dir() else {
        let why = match mount_result(mounts, "tracefs") {
            Some(Err(e)) => format!(": {e}"),
            _ => String::new(),
        };
        return Check::fail(
            "tracefs",
            format!("tracefs is not mounted and could not be{why}; the tracepoints cannot attach"),
            format!(
                "run `palisade mount` as root first (the systemd unit does, in ExecStartPre), or give the daemon CAP_SYS_ADMIN; by hand: mount -t tracefs nodev {}",
                mounts::TRACEFS
            ),
        );
    };
    if Path::new(dir)
        .join("events/cgroup/cgroup_mkdir/id")
        .exists()
    {
        return Check::ok(
            "tracefs",
            format!(
                "{dir}{} (cgroup_mkdir tracepoint present)",
                mounted_note(mounts, "tracefs")
            ),
        );
    }
    Check::fail(
        "tracefs",
        format!(
            "{dir} has no events/cgroup/cgroup_mkdir: this kernel lacks the cgroup tracepoints"
        ),
        "use a kernel built with CONFIG_CGROUPS and tracepoints (every distribution kernel is)",
    )
}

fn lsm_list(mounts: &MountResults) -> Check {
    let path = Path::new(mounts::SECURITYFS).join("lsm");
    match std::fs::read_to_string(&path) {
        Ok(list) => {
            let list = list.trim().to_string();
            let note = mounted_note(mounts, "securityfs");
            if list.split(',').any(|l| l == "bpf") {
                Check::ok("lsm", format!("active LSMs: {list} (bpf among them){note}"))
            } else {
                Check::warn(
                    "lsm",
                    format!(
                        "active LSMs: {list} (no bpf){note}: packet sockets are refused only to agents started with `palisade exec`"
                    ),
                    "add bpf to the kernel's lsm= boot parameter (CONFIG_BPF_LSM=y)",
                )
            }
        }
        Err(e) => {
            let why = match mount_result(mounts, "securityfs") {
                Some(Err(m)) => format!("; {m}"),
                _ => String::new(),
            };
            Check::warn(
                "lsm",
                format!("cannot read {} ({e}{why})", path.display()),
                "run with CAP_SYS_ADMIN so securityfs can be mounted, or mount it: mount -t securityfs none /sys/kernel/security",
            )
        }
    }
}

/// Where the daemon's secrets lie decides how well `palisade exec` hides
/// them: a directory of their own is covered whole, so a secret replaced
/// by a rename stays hidden; one right in a shared directory, or beside
/// the API socket (which agents must reach), is covered file by file, and
/// its replacement (`keys rotate`, an editor) shows in agents already
/// running.
fn secrets_layout(config: &Config) -> Check {
    let socket = std::path::absolute(&config.socket).unwrap_or_else(|_| config.socket.clone());
    let socket = std::fs::canonicalize(&socket).unwrap_or(socket);
    let secrets = std::iter::once(("the token signing key", config.tokens.key_file.clone()))
        .chain(config.loaded_from.clone().map(|f| ("the config file", f)))
        .chain(
            config
                .approvals
                .notify
                .iter()
                .filter_map(|t| t.secret_file.clone())
                .map(|f| ("a notifier's secret", f)),
        );
    let mut alone = Vec::new();
    for (what, file) in secrets {
        let file = std::path::absolute(&file).unwrap_or(file);
        if crate::daemon::enrol::hiding_dir(&file, &socket).is_some() {
            continue;
        }
        // Covered alone: its directory is shared, or holds the socket.
        let shared = file.parent().is_none_or(crate::daemon::enrol::is_shared);
        alone.push(if shared {
            format!(
                "{what} ({}) sits directly in a shared directory",
                file.display()
            )
        } else {
            format!(
                "{what} ({}) shares its directory with the API socket",
                file.display()
            )
        });
    }
    if alone.is_empty() {
        return Check::ok(
            "secrets-layout",
            "the daemon's secrets lie in directories of their own: agents cannot see them, even once replaced",
        );
    }
    Check::warn(
        "secrets-layout",
        format!(
            "{}: agents see an empty file there, but agents already running see its replacement once it is replaced by a rename (`keys rotate`, an editor)",
            alone.join("; ")
        ),
        "give the key, the config and notifier secrets a directory apart from the socket's (the defaults do: /var/lib/palisade, /etc/palisade, /run/palisade)",
    )
}

/// What `palisade exec` can do to keep an agent from other processes.
fn landlock() -> Check {
    let support = crate::landlock::Support::probe();
    let what = support.describe();
    match support.abi {
        0 => Check::warn(
            "landlock",
            format!(
                "{what}: `palisade exec` refuses to run agents unless their identity sets `confinement.unscoped: true`"
            ),
            "add landlock to the kernel's lsm= boot parameter (CONFIG_SECURITY_LANDLOCK=y)",
        ),
        1..=5 => Check::warn(
            "landlock",
            format!("{what}: an exec agent may still signal processes of its own user"),
            "Linux 6.12 or later scopes signals and abstract Unix sockets too",
        ),
        _ => Check::ok("landlock", what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(parse_release("6.18.44-fc-v782"), Some((6, 18)));
        assert_eq!(parse_release("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(parse_release("garbage"), None);
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use crate::doctor::Level;

    #[test]
    fn a_key_beside_the_socket_or_right_in_tmp_is_reported_and_the_defaults_are_not() {
        let base = std::env::temp_dir().join(format!("palisade-layout-{}", std::process::id()));
        std::fs::create_dir_all(base.join("run")).unwrap();
        std::fs::create_dir_all(base.join("lib")).unwrap();
        let mut config = Config::default();
        assert_eq!(secrets_layout(&config).level, Level::Ok, "the defaults");
        config.socket = base.join("run/palisade.sock");
        config.tokens.key_file = base.join("run/keys.yaml");
        let beside = secrets_layout(&config);
        assert_eq!(beside.level, Level::Warn);
        assert!(
            beside
                .detail
                .contains("shares its directory with the API socket"),
            "{}",
            beside.detail
        );
        config.tokens.key_file = PathBuf::from("/tmp/palisade-keys.yaml");
        let shared = secrets_layout(&config);
        assert!(
            shared.detail.contains("directly in a shared directory"),
            "{}",
            shared.detail
        );
        config.tokens.key_file = base.join("lib/keys.yaml");
        assert_eq!(
            secrets_layout(&config).level,
            Level::Ok,
            "a directory of its own"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
