//! An agent trying to starve the daemon that guards every identity:
//! re-scheduling its threads (SCHED_IDLE, nice 19, pinned to one CPU),
//! renicing every process of its user, making the daemon the OOM killer's
//! first choice, making itself real-time. Under `palisade exec` the
//! scheduling calls reach only the agent itself, as root and unprivileged,
//! and the daemon's /proc files (`oom_score_adj`, `autogroup`,
//! `coredump_filter`) are out of sight; what an agent without exec's
//! confinement does (here: the host) is put back by the daemon within
//! seconds and recorded.

use std::{path::Path, time::Duration};

use palisade_tests::{
    DaemonProc, TestEnv,
    gateway::{exec, exec_unprivileged, python_dir},
    root_or_skip, wait_for,
};
use serde_json::Value;

const POLICY: &str = "version: 1\nidentities:\n  - id: agent\n    egress:\n      allow:\n        - {cidr: 127.0.0.1, ports: [1], protocol: tcp}\n";

fn attempts(env: &TestEnv, daemon: u32, unprivileged: bool, other_proc: &Path) -> Value {
    let script = python_dir().join("standing.py");
    let script = script.to_string_lossy().to_string();
    let pid = daemon.to_string();
    let other = other_proc.to_string_lossy().to_string();
    let out = if unprivileged {
        exec_unprivileged(env, "agent", "/usr/bin/python3", &[&script, &pid, &other])
    } else {
        exec(
            env,
            "agent",
            Path::new("/usr/bin/python3"),
            &[&script, &pid, &other],
        )
    }
    .output()
    .unwrap_or_else(|e| panic!("agent: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).unwrap_or_else(|e| {
        panic!(
            "agent printed {text:?} ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A procfs mounted at a path of the test's, unmounted on drop.
struct OtherProc(std::path::PathBuf);

impl OtherProc {
    fn mount(at: &Path) -> Self {
        std::fs::create_dir_all(at).unwrap_or_else(|e| panic!("{e}"));
        let ok = std::process::Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a second procfs at {}", at.display());
        Self(at.to_path_buf())
    }
}

impl Drop for OtherProc {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_string()
}

/// The daemon's standing as the host sees it: (scheduling class, nice,
/// CPUs allowed) per thread, and its oom_score_adj.
fn standing(pid: u32) -> (Vec<(i32, i32, usize)>, String) {
    let mut threads = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap_or_else(|e| panic!("{e}")) {
        let Some(tid) = t
            .ok()
            .and_then(|t| t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        else {
            continue;
        };
        // SAFETY: plain scheduler queries about another process.
        let (policy, nice, cpus) = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::sched_getaffinity(tid, size_of::<libc::cpu_set_t>(), &raw mut set);
            (
                libc::sched_getscheduler(tid),
                libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t),
                libc::CPU_COUNT(&set) as usize,
            )
        };
        threads.push((policy, nice, cpus));
    }
    let oom = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .unwrap_or_default()
        .trim()
        .to_string();
    (threads, oom)
}

/// As it started: normal scheduling class, the nice value and CPUs it
/// started with (the harness may itself run niced), its oom_score_adj.
fn untouched(pid: u32, nice0: i32, cpus: usize, oom: &str) -> bool {
    let (threads, now) = standing(pid);
    now == oom
        && threads
            .iter()
            .all(|&(policy, nice, n)| policy == libc::SCHED_OTHER && nice == nice0 && n == cpus)
}

#[test]
fn an_agent_cannot_starve_the_daemon() {
    if !root_or_skip("an_agent_cannot_starve_the_daemon") {
        return;
    }
    let env = TestEnv::new("standing", POLICY);
    // Alone in its autogroup: another daemon of the same session would put
    // a shared autogroup back before this one looked.
    let daemon = DaemonProc::start_in_own_session(&env);
    let pid = daemon.pid();
    let (threads, oom) = standing(pid);
    let (nice0, cpus) = threads.first().map_or((0, 0), |t| (t.1, t.2));
    assert!(
        untouched(pid, nice0, cpus, &oom),
        "the daemon starts normal: {threads:?}"
    );

    // A second procfs on the host, as a chroot or container has one.
    // Outside the daemon's directories, which exec makes read-only.
    let other_proc = OtherProc::mount(&std::env::temp_dir().join(format!(
        "palisade-test-{}standing-proc-{}",
        palisade_tests::run_tag(),
        std::process::id()
    )));
    assert!(
        other_proc
            .0
            .join(pid.to_string())
            .join("autogroup")
            .exists(),
        "control: the daemon's files in the second procfs, from the host"
    );
    for unprivileged in [false, true] {
        let r = attempts(&env, pid, unprivileged, &other_proc.0);
        for (name, outcome) in r.as_object().unwrap_or_else(|| panic!("{r}")) {
            let mine = name.ends_with("-self");
            let want_ok = match name.as_str() {
                // Its own nice and CPUs: allowed (the control).
                "nice-self" | "pin-self" => true,
                // Real-time for itself needs CAP_SYS_NICE, which exec drops.
                "fifo-self" => false,
                // The daemon's /proc files are out of an exec agent's
                // sight (its /proc hides processes it cannot ptrace).
                "oom" | "autogroup" | "coredump" | "see-daemon" | "other-proc-autogroup" => false,
                _ => false,
            };
            assert_eq!(
                outcome == "ok",
                want_ok,
                "{name} (unprivileged: {unprivileged}, own: {mine}): {outcome}; all: {r}"
            );
        }
        let restored = wait_for(Duration::from_secs(5), || {
            untouched(pid, nice0, cpus, &oom).then_some(())
        });
        assert!(
            restored.is_some(),
            "the daemon's standing after the agent (unprivileged: {unprivileged}): {:?}",
            standing(pid)
        );
    }

    // An agent without the filter (selected by cgroup: no seccomp) does
    // what it likes; done here from the host: the daemon puts it back and
    // says so.
    let tid = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|t| t.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .next()
        .unwrap_or_else(|| panic!("no daemon thread"));
    // SAFETY: plain scheduler settings of another process, as root.
    unsafe {
        let p = libc::sched_param { sched_priority: 0 };
        assert_eq!(
            libc::sched_setscheduler(tid, libc::SCHED_IDLE, &raw const p),
            0
        );
        assert_eq!(
            libc::setpriority(
                libc::PRIO_PROCESS,
                tid as libc::id_t,
                if nice0 == 19 { 10 } else { 19 }
            ),
            0
        );
    }
    std::fs::write(format!("/proc/{pid}/oom_score_adj"), "1000").unwrap_or_else(|e| panic!("{e}"));
    let autogroup = format!("/proc/{pid}/autogroup");
    let coredump = format!("/proc/{pid}/coredump_filter");
    let (autogroup0, coredump0) = (read(&autogroup), read(&coredump));
    std::fs::write(&autogroup, "19").unwrap_or_else(|e| panic!("{autogroup}: {e}"));
    std::fs::write(&coredump, "0xff").unwrap_or_else(|e| panic!("{coredump}: {e}"));
    assert!(
        read(&autogroup) != autogroup0 && read(&coredump) != coredump0,
        "control: the writes took: {} {}",
        read(&autogroup),
        read(&coredump)
    );
    assert!(
        !untouched(pid, nice0, cpus, &oom),
        "control: the settings took"
    );
    let restored = wait_for(Duration::from_secs(5), || {
        untouched(pid, nice0, cpus, &oom).then_some(())
    });
    assert!(restored.is_some(), "not restored: {:?}", standing(pid));
    let back = wait_for(Duration::from_secs(5), || {
        (read(&autogroup) == autogroup0 && read(&coredump) == coredump0).then_some(())
    });
    assert!(
        back.is_some(),
        "autogroup and coredump_filter put back: {} {}",
        read(&autogroup),
        read(&coredump)
    );
    let ev = env.wait_audit("the correction is recorded", |e| {
        e["reason"] == "daemon-tampered" && e["detail"].as_str().unwrap_or("").contains("autogroup")
    });
    assert_eq!(ev["kind"], "daemon", "{ev}");
    env.wait_audit("the oom_score_adj correction is recorded", |e| {
        e["reason"] == "daemon-tampered"
            && e["detail"].as_str().unwrap_or("").contains("oom_score_adj")
    });
    drop(daemon);
}
