//! A real systemd, booted as PID 1 of its own pid, mount, cgroup, UTS and
//! IPC namespaces over the Debian root `cargo xtask setup` makes
//! (`~/.cache/palisade/debian/systemd-root`), so tests can run the shipped
//! unit the way a host runs it.
//!
//! The root is the lower layer of an overlay (it stays clean); the test
//! writes its files into the upper layer before boot. The new root gets a
//! fresh procfs (with /proc/sys read-only, so systemd cannot retune the
//! host's kernel), a fresh read-only sysfs with nothing mounted below it
//! (no bpffs, no securityfs), the cgroup2 hierarchy seen through a cgroup
//! namespace rooted at this container's own cgroup, a tmpfs on /run, a
//! minimal /dev, and `pivot_root` into it before `exec /sbin/init`. It
//! shares the host's network namespace: the daemon and agents in it reach
//! servers the test runs on loopback.
//!
//! Everything goes with the guard: SIGKILL to PID 1 ends every process in
//! the pid namespace, the mount namespace (and with it the bpffs instance
//! and its pins) goes with them, then the cgroup subtree is removed.

use std::{
    ffi::CString,
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use palisade::identity::CgroupFs;

use crate::{env::remove_cgroup_tree, run_tag, wait_for};

/// Runs as PID 1 of the new namespaces; `$1` lower, `$2` work directory,
/// then `host-path:root-path` pairs to bind (files).
const BOOT: &str = r#"set -eu
L=$1; D=$2; shift 2; R=$D/merged
while [ ! -e "$D/go" ]; do sleep 0.02; done
mount -t overlay overlay -o "lowerdir=$L,upperdir=$D/upper,workdir=$D/work" "$R"
for pair in "$@"; do
  src=${pair%%:*}; dst=$R${pair#*:}
  mkdir -p "$(dirname "$dst")"; : > "$dst"; mount --bind "$src" "$dst"
done
mount -t proc proc "$R/proc"
mount --bind "$R/proc/sys" "$R/proc/sys"; mount -o remount,bind,ro "$R/proc/sys"
mount -t sysfs -o ro sysfs "$R/sys"
mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
mount -t tmpfs -o mode=755 tmpfs "$R/run"
mount -t tmpfs -o mode=755 tmpfs "$R/dev"
for d in null zero full random urandom tty; do : > "$R/dev/$d"; mount --bind "/dev/$d" "$R/dev/$d"; done
: > "$R/dev/console"; mount --bind "$D/console" "$R/dev/console"
mkdir "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mkdir -p "$R/.oldroot"
cd "$R"
pivot_root . .oldroot
cd /
umount -l /.oldroot
rmdir /.oldroot
exec env -i container=palisade-test /sbin/init
"#;

/// The unpacked Debian root with systemd that `cargo xtask setup` makes.
pub fn root_image() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_default();
    let root = Path::new(&home).join(".cache/palisade/debian/systemd-root");
    assert!(
        root.join(".palisade-root").exists() && root.join("lib/systemd/systemd").exists(),
        "{} is missing: run `cargo xtask setup` (it makes the Debian root with systemd)",
        root.display()
    );
    root
}

pub struct SystemdHost {
    /// The test's directory: overlay layers, console log.
    pub dir: PathBuf,
    unshare: Option<Child>,
    /// PID 1 of the container, as the host sees it.
    pub pid1: i32,
    cgroup_root: PathBuf,
    /// The container's cgroup on the host (its cgroup namespace root).
    pub cgroup: PathBuf,
}

fn write(path: &Path, text: &str) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap_or_else(|e| panic!("creating {}: {e}", p.display()));
    }
    fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Move the calling process into `cgroup` (for `pre_exec`: only raw
/// syscalls on a prepared path).
fn join_cgroup(procs: &CString) -> std::io::Result<()> {
    // SAFETY: open/write/close on a NUL-terminated path and a static
    // buffer; async-signal-safe, as pre_exec requires.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = libc::write(fd, b"0".as_ptr().cast(), 1);
        libc::close(fd);
        if n != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn cgroup_procs(dir: &Path) -> CString {
    CString::new(dir.join("cgroup.procs").display().to_string())
        .unwrap_or_else(|e| panic!("cgroup path: {e}"))
}

impl SystemdHost {
    /// Boot systemd over the cached root with `files` (path in the root,
    /// content) written and `binds` (host file, path in the root) mounted.
    pub fn boot(name: &str, files: &[(&str, String)], binds: &[(PathBuf, &str)]) -> Self {
        let lower = root_image();
        let unique = format!("palisade-test-{}{name}-{}", run_tag(), std::process::id());
        let dir = std::env::temp_dir().join(&unique);
        let _ = fs::remove_dir_all(&dir);
        for d in ["upper", "work", "merged"] {
            fs::create_dir_all(dir.join(d)).unwrap_or_else(|e| panic!("{e}"));
        }
        write(&dir.join("console"), "");
        for (path, text) in files {
            write(&dir.join("upper").join(path.trim_start_matches('/')), text);
        }
        // /dev/console is a log file here, not a terminal: no getty on it.
        let units = dir.join("upper/etc/systemd/system");
        fs::create_dir_all(&units).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("/dev/null", units.join("console-getty.service"))
            .unwrap_or_else(|e| panic!("masking console-getty: {e}"));
        let cgroups = CgroupFs::discover().unwrap_or_else(|e| panic!("cgroup v2: {e}"));
        let cgroup_root = cgroups.root().to_path_buf();
        let cgroup = cgroup_root.join(&unique);
        fs::create_dir_all(&cgroup)
            .unwrap_or_else(|e| panic!("creating {}: {e}", cgroup.display()));
        let mut host = Self {
            dir: dir.clone(),
            unshare: None,
            pid1: 0,
            cgroup_root: cgroup_root.clone(),
            cgroup: cgroup.clone(),
        };

        let procs = cgroup_procs(&cgroup);
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--pid",
            "--fork",
            "--kill-child",
            "--mount",
            "--propagation",
            "private",
            "--cgroup",
            "--uts",
            "--ipc",
            "--",
            "/bin/sh",
            "-c",
            BOOT,
            "boot",
        ])
        .arg(&lower)
        .arg(&dir)
        .args(
            binds
                .iter()
                .map(|(src, dst)| format!("{}:{dst}", src.display())),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("boot.log")).unwrap_or_else(|e| panic!("boot log: {e}")));
        // SAFETY: join_cgroup only makes async-signal-safe syscalls.
        unsafe {
            cmd.pre_exec(move || join_cgroup(&procs));
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("unshare (util-linux): {e}"));
        let unshare_pid = child.id();
        host.unshare = Some(child);

        // PID 1 is unshare's child. Once it exists (the cgroup namespace is
        // made by then), move unshare itself back out, then let the boot
        // script go on: the container's cgroup must hold only the
        // container, or systemd cannot enable controllers below it.
        host.pid1 = wait_for(Duration::from_secs(10), || {
            fs::read_to_string(format!("/proc/{unshare_pid}/task/{unshare_pid}/children"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("unshare started no PID 1:\n{}", host.boot_log()));
        let ours = own_cgroup(&cgroup_root);
        fs::write(ours.join("cgroup.procs"), unshare_pid.to_string())
            .unwrap_or_else(|e| panic!("moving unshare back to {}: {e}", ours.display()));
        write(&dir.join("go"), "");
        // Up once PID 1 is systemd and its bus answers; then wait for the
        // boot to finish.
        let state = wait_for(Duration::from_secs(60), || {
            let comm = fs::read_to_string(format!("/proc/{}/comm", host.pid1)).ok()?;
            if comm.trim() != "systemd" {
                return None;
            }
            let out = host.sh("timeout 60 systemctl is-system-running --wait");
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (!state.is_empty() && state != "offline").then_some(state)
        })
        .unwrap_or_else(|| panic!("systemd did not boot:\n{}", host.boot_log()));
        assert_eq!(
            state,
            "running",
            "systemd did not come up cleanly ({state}):\n{}",
            host.diagnose()
        );
        host
    }

    fn boot_log(&self) -> String {
        fs::read_to_string(self.dir.join("boot.log")).unwrap_or_default()
    }

    /// A path inside the running container, from the host.
    pub fn path(&self, p: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid1)).join(p.trim_start_matches('/'))
    }

    /// Run `script` with /bin/sh inside the container (its namespaces,
    /// root and a cgroup of its own tree, so the daemon can enrol it).
    pub fn sh(&self, script: &str) -> Output {
        let exec = self.cgroup.join("palisade-test-exec");
        fs::create_dir_all(&exec).unwrap_or_else(|e| panic!("{e}"));
        let procs = cgroup_procs(&exec);
        let mut cmd = Command::new("nsenter");
        cmd.args(["--target", &self.pid1.to_string()])
            .args(["--mount", "--pid", "--cgroup", "--uts", "--ipc"])
            .args(["--root", "--wd", "--", "/bin/sh", "-c", script])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .stdin(Stdio::null());
        // SAFETY: join_cgroup only makes async-signal-safe syscalls.
        unsafe {
            cmd.pre_exec(move || join_cgroup(&procs));
        }
        cmd.output()
            .unwrap_or_else(|e| panic!("nsenter (util-linux): {e}"))
    }

    /// `sh`, which must succeed; its standard output.
    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "`{script}` failed in the container ({}):\n{}{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.diagnose()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `systemctl show -p KEY --value UNIT`.
    pub fn show(&self, unit: &str, key: &str) -> String {
        self.sh_ok(&format!("systemctl show -p {key} --value {unit}"))
            .trim()
            .to_string()
    }

    /// What systemd says about its state and the palisade unit.
    pub fn diagnose(&self) -> String {
        let out = self.sh(
            "systemctl --no-pager --failed; systemctl --no-pager status palisade; \
             journalctl --no-pager -n 60 -u palisade",
        );
        format!(
            "--- systemd ---\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

/// This process's cgroup on the host.
fn own_cgroup(root: &Path) -> PathBuf {
    let text = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/");
    root.join(rel.trim_start_matches('/'))
}

impl Drop for SystemdHost {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.diagnose());
        }
        if self.pid1 > 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid1),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(mut c) = self.unshare.take()
            && wait_for(Duration::from_secs(10), || c.try_wait().ok().flatten()).is_none()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The pid namespace's processes are gone once unshare has returned;
        // their cgroups empty out a moment later.
        let _ = wait_for(Duration::from_secs(5), || {
            remove_cgroup_tree(&self.cgroup_root, &self.cgroup);
            (!self.cgroup.exists()).then_some(())
        });
        if std::env::var_os("PALISADE_KEEP_TEST_DIRS").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
