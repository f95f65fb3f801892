//! "Tests leave nothing behind", checked at the end of `cargo xtask test`.
//!
//! Every name the test harness gives to what it creates (cgroups, pin
//! directories, network namespaces, temporary directories) carries this
//! run's tag (`PALISADE_TEST_RUN`), so the check finds this run's leftovers
//! and not those of other runs on the same machine. Processes are caught
//! another way: xtask is the child subreaper of the run, so every process a
//! test started and did not reap ends up as xtask's child when the test
//! binaries exit. Daemons started without the harness leave
//! `<cgroup2>/palisade/<identity>` and `/sys/fs/bpf/palisade`, which are
//! compared with what was there before the run.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::toolchain::workspace_root;

/// This run's tag: short, and unique among runs alive on the host.
pub fn run_tag() -> String {
    format!("r{}", std::process::id())
}

/// Make this process the reaper of its orphaned descendants.
pub fn become_subreaper() -> anyhow::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument and touches
    // no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        anyhow::bail!(
            "prctl(PR_SET_CHILD_SUBREAPER): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// What a run may leave: found by `scan`, reported by `check`.
#[derive(Default)]
pub struct Snapshot {
    /// Identity cgroups under `<cgroup2>/palisade/`.
    default_cgroups: BTreeSet<PathBuf>,
    default_pins: bool,
}

fn cgroup2_root() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mountpoint = left.split_whitespace().nth(4)?;
        (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mountpoint))
    })
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn scan() -> Snapshot {
    let default_cgroups = cgroup2_root()
        .map(|r| entries(&r.join("palisade")))
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    Snapshot {
        default_cgroups,
        default_pins: Path::new("/sys/fs/bpf/palisade").exists(),
    }
}

/// One thing left behind, and how it was cleared.
struct Leftover {
    what: String,
    cleared: bool,
}

/// List what this run left, clear it, and fail if there was anything.
pub fn check(tag: &str, before: &Snapshot) -> anyhow::Result<()> {
    let mut found: Vec<Leftover> = Vec::new();
    processes(&mut found);
    let ours = |p: &Path| name_of(p).contains(&format!("-{tag}-"));
    if let Some(root) = cgroup2_root() {
        for cg in entries(&root).into_iter().filter(|p| ours(p)) {
            let cleared = remove_cgroup_tree(&root, &cg);
            found.push(Leftover {
                what: format!("cgroup {}", cg.display()),
                cleared,
            });
        }
        let after = scan();
        for cg in after.default_cgroups.difference(&before.default_cgroups) {
            let cleared = remove_cgroup_tree(&root, cg);
            found.push(Leftover {
                what: format!("cgroup {}", cg.display()),
                cleared,
            });
        }
    }
    let bpffs = Path::new("/sys/fs/bpf");
    let mut pins: Vec<PathBuf> = entries(bpffs).into_iter().filter(|p| ours(p)).collect();
    if !before.default_pins && scan().default_pins {
        pins.push(bpffs.join("palisade"));
    }
    for pin in pins {
        let cleared = uninstall(&pin);
        found.push(Leftover {
            what: format!("pin directory {}", pin.display()),
            cleared,
        });
    }
    for ns in entries(Path::new("/run/netns"))
        .into_iter()
        .filter(|p| name_of(p).starts_with("pal-") && ours(p))
    {
        let name = name_of(&ns);
        let cleared = Command::new("ip")
            .args(["netns", "del", &name])
            .output()
            .is_ok_and(|o| o.status.success());
        found.push(Leftover {
            what: format!("network namespace {name}"),
            cleared,
        });
    }
    if std::env::var_os("PALISADE_KEEP_TEST_DIRS").is_none() {
        for dir in entries(&std::env::temp_dir())
            .into_iter()
            .filter(|p| name_of(p).starts_with("palisade-") && ours(p))
        {
            let cleared = fs::remove_dir_all(&dir).is_ok();
            found.push(Leftover {
                what: format!("directory {}", dir.display()),
                cleared,
            });
        }
    }
    if found.is_empty() {
        println!("leftovers: none (processes, cgroups, pins, network namespaces, directories)");
        return Ok(());
    }
    println!("leftovers: the tests left {} thing(s) behind:", found.len());
    for l in &found {
        println!(
            "  {}{}",
            l.what,
            if l.cleared {
                " (removed now)"
            } else {
                " (COULD NOT REMOVE)"
            }
        );
    }
    anyhow::bail!("the tests left {} thing(s) behind", found.len())
}

/// Our remaining children: orphans of the tests, reparented to us. Each is
/// listed with its command line, then killed and reaped.
fn processes(found: &mut Vec<Leftover>) {
    // Reap the ones that already exited: they left nothing.
    // SAFETY: waitpid on our own children, no memory passed.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
    let me = std::process::id();
    let children: Vec<i32> = entries(Path::new(&format!("/proc/{me}/task")))
        .iter()
        .filter_map(|t| fs::read_to_string(t.join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    for pid in children {
        let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .split('\0')
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        // SAFETY: plain syscalls on a pid that is our own child (it cannot
        // be reused before we reap it).
        let cleared = unsafe {
            libc::kill(pid, libc::SIGKILL) == 0
                && libc::waitpid(pid, std::ptr::null_mut(), 0) == pid
        };
        found.push(Leftover {
            what: format!("process {pid}: {cmdline}"),
            cleared,
        });
    }
}

/// Move processes out and remove the tree, deepest first.
fn remove_cgroup_tree(root: &Path, top: &Path) -> bool {
    let mut dirs = Vec::new();
    let mut stack = vec![top.to_path_buf()];
    while let Some(d) = stack.pop() {
        stack.extend(entries(&d).into_iter().filter(|p| p.is_dir()));
        dirs.push(d);
    }
    for d in dirs.iter().rev() {
        if let Ok(procs) = fs::read_to_string(d.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = fs::write(root.join("cgroup.procs"), pid);
            }
        }
        let _ = fs::remove_dir(d);
    }
    !top.exists()
}

/// Detach and unpin with the daemon's own uninstall.
fn uninstall(pin: &Path) -> bool {
    let bin = workspace_root().join("target/release/palisade");
    Command::new(bin)
        .arg("uninstall")
        .arg("--bpffs")
        .arg(pin)
        .output()
        .is_ok_and(|o| o.status.success())
        && !pin.exists()
}
