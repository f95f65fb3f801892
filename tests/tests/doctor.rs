//! `palisade doctor` reports what this host truly has: each answer is
//! checked against the kernel's own files and against what a real daemon
//! then does.

use std::process::Command;

use palisade_tests::{DaemonProc, TestEnv, palisade_bin, root_or_skip};
use serde_json::Value;

fn doctor(wrapper: &[&str]) -> (Option<i32>, Value) {
    let mut cmd = match wrapper.split_first() {
        Some((w, rest)) => {
            let mut c = Command::new(w);
            c.args(rest).arg(palisade_bin());
            c
        }
        None => Command::new(palisade_bin()),
    };
    let out = cmd
        .args(["doctor", "--json"])
        .output()
        .unwrap_or_else(|e| panic!("palisade doctor: {e}"));
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor JSON: {e}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), v)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check `{name}` in {report}"))
}

fn cgroup2_mount() -> String {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            right
                .starts_with("cgroup2 ")
                .then(|| left.split_whitespace().nth(4).map(str::to_string))
                .flatten()
        })
        .unwrap_or_else(|| panic!("no cgroup2 in mountinfo"))
}

#[test]
fn doctor_reports_what_this_host_has() {
    if !root_or_skip("doctor_reports_what_this_host_has") {
        return;
    }
    let (code, report) = doctor(&[]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["ready"], true);

    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let k = check(&report, "kernel");
    assert_eq!(k["level"], "ok");
    assert!(
        k["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(release.trim()),
        "{k}"
    );

    let btf = std::path::Path::new("/sys/kernel/btf/vmlinux").exists();
    assert_eq!(check(&report, "btf")["level"] == "ok", btf);

    let cg = check(&report, "cgroup2");
    assert_eq!(cg["level"], "ok");
    let mount = cgroup2_mount();
    assert!(
        cg["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("mounted at {mount} ")),
        "cgroup2 is at {mount}: {cg}"
    );

    let lsms = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    let bpf_listed = lsms.trim().split(',').any(|l| l == "bpf");
    assert_eq!(check(&report, "lsm")["level"] == "ok", bpf_listed, "{lsms}");

    for hook in [
        "connect4",
        "connect6",
        "sendmsg4",
        "sendmsg6",
        "sock_create",
        "cgroup_mkdir",
        "setsockopt",
        "egress",
        "lineage",
    ] {
        let c = check(&report, &format!("hook:{hook}"));
        assert_eq!(c["level"], "ok", "{c}");
    }

    // The LSM answer agrees with what the daemon manages to attach.
    let env = TestEnv::new(
        "doctor",
        "version: 1\nidentities:\n  - id: a\n    egress: {}\n",
    );
    let _d = DaemonProc::start(&env);
    let lsm = check(&report, "hook:socket_create");
    let attached = env.bpffs.join("link_socket_create").exists();
    let guard = env.status()["health"]["packet_guard"].clone();
    assert_eq!(
        lsm["level"] == "ok",
        attached,
        "doctor {lsm} vs daemon pin {attached}"
    );
    assert_eq!(guard == "lsm", attached, "{guard}");
    if !attached {
        assert_eq!(
            lsm["level"], "warn",
            "an LSM refusal is a warning, not fatal"
        );
        assert!(
            lsm["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("seccomp"),
            "{lsm}"
        );
        let warnings = env.status()["health"]["warnings"].clone();
        assert!(
            warnings.to_string().contains("BPF LSM refused"),
            "{warnings}"
        );
    }

    // Human output ends with the verdict.
    let out = Command::new(palisade_bin())
        .arg("doctor")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\nready: Palisade can enforce on this host"),
        "{text}"
    );
}

#[test]
fn doctor_and_daemon_refuse_without_bpf_capabilities() {
    if !root_or_skip("doctor_and_daemon_refuse_without_bpf_capabilities") {
        return;
    }
    let drop = [
        "setpriv",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--bounding-set=-bpf,-sys_admin,-perfmon",
        "--",
    ];
    let (code, report) = doctor(&drop);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["ready"], false);
    let caps = check(&report, "capabilities");
    assert_eq!(caps["level"], "fail");
    let detail = caps["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("missing CAP_BPF") && detail.contains("CAP_PERFMON"),
        "{caps}"
    );
    assert!(
        caps["fix"].as_str().is_some_and(|f| !f.is_empty()),
        "{caps}"
    );

    let env = TestEnv::new(
        "doctor-refuse",
        "version: 1\nidentities:\n  - id: a\n    egress: {}\n",
    );
    let out = Command::new(drop[0])
        .args(&drop[1..])
        .arg(palisade_bin())
        .args(["daemon", "--config"])
        .arg(&env.config)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("missing CAP_BPF"), "{err}");
    assert!(
        !env.bpffs.exists(),
        "nothing was pinned by a daemon that refused to start"
    );
}

/// Unmount tracefs, securityfs and bpffs in a private mount namespace (the
/// host keeps its own), then run `palisade ARGS…` there: a brand-new host
/// as far as the command can tell.
fn on_a_bare_host(args: &[&str]) -> Command {
    let script = r#"set -e
for m in /sys/kernel/debug/tracing /sys/kernel/tracing /sys/kernel/security /sys/fs/bpf; do
  while mountpoint -q "$m" 2>/dev/null; do umount -l "$m"; done
done
bin="$1"; shift
exec "$bin" "$@"
"#;
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
    ])
    .arg(palisade_bin())
    .args(args);
    cmd
}

#[test]
fn doctor_and_daemon_mount_what_a_bare_host_lacks() {
    if !root_or_skip("doctor_and_daemon_mount_what_a_bare_host_lacks") {
        return;
    }
    // Doctor mounts what it needs, like the daemon, and reports it.
    let out = on_a_bare_host(&["doctor", "--json"])
        .output()
        .unwrap_or_else(|e| panic!("unshare: {e}"));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor JSON: {e}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["ready"], true, "{report:#}");
    for name in ["bpffs", "tracefs", "lsm"] {
        let c = check(&report, name);
        assert!(
            c["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("mounted by palisade"),
            "{name} should have been mounted by doctor: {c}"
        );
    }
    assert_eq!(check(&report, "tracefs")["level"], "ok");
    assert_eq!(check(&report, "hook:cgroup_mkdir")["level"], "ok");

    // The daemon starts there too, with nothing done by hand, and enforces.
    let allowed = palisade_tests::TcpServer::start("127.0.0.1");
    let env = TestEnv::new(
        "barehost",
        &format!(
            "version: 1\nidentities:\n  - id: agent\n    egress:\n      allow:\n        - {{cidr: 127.0.0.1, ports: [{}], protocol: tcp}}\n",
            allowed.port()
        ),
    );
    let log = std::fs::File::create(env.dir.join("daemon.log")).unwrap_or_else(|e| panic!("{e}"));
    let mut daemon = on_a_bare_host(&["daemon", "--detach", "--config"])
        .arg(&env.config)
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting the daemon: {e}"));
    struct Stop<'a>(&'a mut std::process::Child);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = self.0.wait();
        }
    }
    let _stop = Stop(&mut daemon);
    let up = palisade_tests::wait_for(std::time::Duration::from_secs(20), || {
        env.cli(&["status", "--json"])
            .status
            .success()
            .then_some(())
    });
    let log_text = || std::fs::read_to_string(env.dir.join("daemon.log")).unwrap_or_default();
    assert!(up.is_some(), "daemon did not start:\n{}", log_text());
    palisade_tests::Probe::enrolled(&env, "agent", &["tcp", "127.0.0.1", &allowed.port()])
        .expect_ok("allowed port");
    palisade_tests::Probe::enrolled(&env, "agent", &["tcp", "127.0.0.1", "9"])
        .expect_eperm("any other port");
    let text = log_text();
    for fs in ["\"tracefs\"", "\"securityfs\""] {
        assert!(
            text.contains(fs),
            "the daemon should log mounting {fs}:\n{text}"
        );
    }
}
