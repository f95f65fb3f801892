//! What ships in `deploy/`: the systemd unit verifies, its capabilities and
//! system-call filter are enough for the real daemon and no more than it
//! uses; the Kubernetes manifests and the Dockerfile are consistent with
//! each other and with the binary.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use nix::sys::signal::Signal;
use palisade_tests::{Probe, Scratch, TcpServer, TestEnv, palisade_bin, root_or_skip, wait_for};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn unit_text() -> String {
    std::fs::read_to_string(repo().join("deploy/systemd/palisade.service"))
        .unwrap_or_else(|e| panic!("deploy/systemd/palisade.service: {e}"))
}

/// Values of `Key=` lines in the unit.
fn unit_values(key: &str) -> Vec<String> {
    unit_text()
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("running systemd-analyze (Debian package `systemd`; `cargo xtask setup` installs it): {e}")
        })
}

#[test]
fn systemd_unit_verifies_cleanly() {
    // Point ExecStart at the binary under test: verify checks it exists.
    let dir = Scratch::new("unit");
    let unit = dir.join("palisade.service");
    let text = unit_text().replace(
        "/usr/local/bin/palisade",
        &palisade_bin().display().to_string(),
    );
    std::fs::write(&unit, text).unwrap_or_else(|e| panic!("{e}"));
    let out = systemd_analyze(&["verify", &unit.display().to_string()]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{said}"
    );
    // Unknown keys and bad values are only warnings to verify: none allowed.
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify warns:\n{said}"
    );

    let out = systemd_analyze(&["security", "--offline=yes", &unit.display().to_string()]);
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let exposure: f64 = said
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for palisade.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{said}"));
    eprintln!("systemd-analyze security: exposure {exposure}");
    assert!(
        exposure <= 3.5,
        "the unit's exposure level is {exposure}:\n{said}"
    );

    assert_eq!(unit_values("ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    assert_eq!(unit_values("Restart"), ["always"]);
    for key in ["ExecStop", "ExecStopPost", "ExecStartPre", "ExecStart"] {
        for v in unit_values(key) {
            assert!(
                !v.contains("uninstall") && !v.contains("--detach"),
                "{key}={v}: stopping the unit must never remove enforcement"
            );
        }
    }
}

/// `CAP_BPF CAP_PERFMON …` → `+bpf,+perfmon,…` for setpriv.
fn setpriv_caps() -> String {
    let caps = unit_values("CapabilityBoundingSet");
    assert_eq!(caps.len(), 1, "one CapabilityBoundingSet line");
    caps[0]
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Start the daemon under `wrapper` (setpriv, strace…) and wait for its API.
fn start_wrapped(env: &TestEnv, wrapper: &[String]) -> std::process::Child {
    let log =
        std::fs::File::create(env.dir.join("wrapped-daemon.log")).unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(&wrapper[0])
        .args(&wrapper[1..])
        .arg(palisade_bin())
        .arg("daemon")
        .arg("--config")
        .arg(&env.config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", wrapper[0]));
    let up = wait_for(Duration::from_secs(30), || {
        if let Ok(Some(s)) = child.try_wait() {
            panic!(
                "daemon exited ({s}):\n{}",
                std::fs::read_to_string(env.dir.join("wrapped-daemon.log")).unwrap_or_default()
            );
        }
        Command::new(palisade_bin())
            .args(["status", "--socket"])
            .arg(&env.socket)
            .output()
            .ok()
            .filter(|o| o.status.success())
    });
    assert!(
        up.is_some(),
        "daemon did not come up:\n{}",
        std::fs::read_to_string(env.dir.join("wrapped-daemon.log")).unwrap_or_default()
    );
    child
}

/// The daemon's pid: the wrapper's child (strace) or the wrapper itself
/// (setpriv execs).
fn daemon_pid(wrapper_pid: u32) -> i32 {
    let children =
        std::fs::read_to_string(format!("/proc/{wrapper_pid}/task/{wrapper_pid}/children"))
            .unwrap_or_default();
    children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(wrapper_pid as i32)
}

fn stop(child: &mut std::process::Child) {
    let pid = daemon_pid(child.id());
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
    if wait_for(Duration::from_secs(15), || child.try_wait().ok().flatten()).is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("daemon did not stop on SIGTERM");
    }
}

#[test]
fn the_units_capabilities_are_enough() {
    if !root_or_skip("the_units_capabilities_are_enough") {
        return;
    }
    let denied = TcpServer::start("127.0.0.1");
    let env = TestEnv::new(
        "unit-caps",
        "version: 1\nidentities:\n  - id: agent\n    egress:\n      allow:\n        - {cidr: 10.99.0.0/16}\n",
    );
    let caps = setpriv_caps();
    let wrapper: Vec<String> = [
        "setpriv",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        &format!("--bounding-set=-all,{caps}"),
        "--",
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    let mut d = start_wrapped(&env, &wrapper);
    let pid = daemon_pid(d.id());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(u64::MAX);
    assert_eq!(
        eff & (1 << 21),
        0,
        "the daemon must run without CAP_SYS_ADMIN here"
    );
    Probe::enrolled(&env, "agent", &["tcp", "127.0.0.1", &denied.port()])
        .expect_eperm("enforcing with the unit's capabilities only");
    env.wait_audit("the deny", |e| e["verdict"] == "deny");
    stop(&mut d);

    // Without CAP_BPF (and no CAP_SYS_ADMIN to stand in), the daemon refuses
    // to start and says why.
    let out = Command::new("setpriv")
        .args(["--inh-caps=-all", "--ambient-caps=-all"])
        .arg(format!("--bounding-set=-all,{}", caps.replace("+bpf,", "")))
        .arg("--")
        .arg(palisade_bin())
        .args(["daemon", "--config"])
        .arg(&env.config)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot run Palisade") && err.contains("missing CAP_BPF"),
        "{err}"
    );
}

/// Every syscall of a filter spec, groups expanded by systemd-analyze.
fn expand_filter(spec: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo: Vec<String> = spec.split_whitespace().map(str::to_string).collect();
    let mut seen = BTreeSet::new();
    while let Some(item) = todo.pop() {
        if !item.starts_with('@') {
            out.insert(item);
            continue;
        }
        if !seen.insert(item.clone()) {
            continue;
        }
        let o = systemd_analyze(&["syscall-filter", &item]);
        for line in String::from_utf8_lossy(&o.stdout).lines().skip(1) {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            todo.push(t.to_string());
        }
    }
    out
}

#[test]
fn the_units_syscall_filter_allows_what_the_daemon_does() {
    if !root_or_skip("the_units_syscall_filter_allows_what_the_daemon_does") {
        return;
    }
    let target = TcpServer::start("127.0.0.1");
    let env = TestEnv::new(
        "unit-syscalls",
        "version: 1\nidentities:\n  - id: agent\n    egress:\n      allow:\n        - {cidr: 10.99.0.0/16}\n",
    );
    let trace = env.dir.join("strace.txt");
    let wrapper: Vec<String> = [
        "strace",
        "-f",
        "-qq",
        "-c",
        "-o",
        &trace.display().to_string(),
        "--",
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    let mut d = start_wrapped(&env, &wrapper);
    // Exercise it: enrolment, a deny, a reload, a scrape, a watcher.
    Probe::enrolled(&env, "agent", &["tcp", "127.0.0.1", &target.port()]).expect_eperm("traced");
    let _ = Command::new(palisade_bin())
        .args(["reload", "--socket"])
        .arg(&env.socket)
        .output();
    let _ = palisade_tests::http::get(&env.metrics_address(), "/metrics");
    let _ = Command::new("timeout")
        .args([
            "1",
            &palisade_bin().display().to_string(),
            "events",
            "--follow",
            "--socket",
        ])
        .arg(&env.socket)
        .output();
    std::thread::sleep(Duration::from_millis(1200));
    stop(&mut d);

    let summary = std::fs::read_to_string(&trace).unwrap_or_else(|e| panic!("{e}"));
    let used: BTreeSet<String> = summary
        .lines()
        .filter(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .filter(|s| s != "total")
        .collect();
    assert!(used.contains("bpf"), "strace saw no bpf(2): {summary}");
    let filter = unit_values("SystemCallFilter");
    assert_eq!(filter.len(), 1);
    let allowed = expand_filter(&filter[0]);
    let missing: Vec<&String> = used.iter().filter(|s| !allowed.contains(*s)).collect();
    assert!(
        missing.is_empty(),
        "the daemon makes syscalls the unit's SystemCallFilter refuses: {missing:?}\n{summary}"
    );
}

fn manifest(name: &str) -> Vec<Value> {
    let path = repo().join("deploy/kubernetes").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn kubernetes_manifests_are_consistent() {
    let kustomization = manifest("kustomization.yaml");
    let resources: Vec<String> = kustomization[0]["resources"]
        .as_array()
        .unwrap_or_else(|| panic!("kustomization without resources"))
        .iter()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect();
    let mut docs = Vec::new();
    for r in &resources {
        docs.extend(manifest(r));
    }
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for want in [
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "DaemonSet",
    ] {
        assert!(kinds.contains(&want), "no {want} among {kinds:?}");
    }
    let ns = docs
        .iter()
        .find(|d| d["kind"] == "Namespace")
        .and_then(|d| d["metadata"]["name"].as_str())
        .unwrap_or_default()
        .to_string();
    for d in &docs {
        assert!(
            d["apiVersion"].is_string() && d["metadata"]["name"].is_string(),
            "{d}"
        );
        if d["kind"] != "Namespace" {
            assert_eq!(d["metadata"]["namespace"], ns.as_str(), "{d}");
        }
    }
    let by = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .unwrap_or_else(|| panic!("no DaemonSet"));
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostPID"], true, "SO_PEERCRED pids must be the host's");
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"], ds["spec"]["template"]["metadata"]["labels"],
        "selector matches the pod labels"
    );
    let sa = spec["serviceAccountName"].as_str().unwrap_or_default();
    by("ServiceAccount", sa);
    let binding = by("RoleBinding", "palisade");
    assert_eq!(binding["subjects"][0]["name"], sa);
    by(
        "Role",
        binding["roleRef"]["name"].as_str().unwrap_or_default(),
    );

    // Volumes and mounts agree, and the host paths are the ones Palisade uses.
    let volumes = spec["volumes"]
        .as_array()
        .unwrap_or_else(|| panic!("no volumes"));
    let host_path = |vol: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == vol)
            .unwrap_or_else(|| panic!("no volume {vol}"))["hostPath"]["path"]
            .as_str()
            .map(str::to_string)
    };
    let version = env!("CARGO_PKG_VERSION");
    let containers: Vec<&Value> = spec["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["containers"].as_array().into_iter().flatten())
        .collect();
    let mut mounts = std::collections::BTreeMap::new();
    for c in &containers {
        assert_eq!(
            c["image"],
            format!("palisade:{version}").as_str(),
            "image tag is the crate version"
        );
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let vol = m["name"].as_str().unwrap_or_default();
            assert!(
                volumes.iter().any(|v| v["name"] == vol),
                "mount of unknown volume {vol}"
            );
            mounts.insert(
                m["mountPath"].as_str().unwrap_or_default().to_string(),
                vol.to_string(),
            );
        }
    }
    let daemon = spec["containers"][0].clone();
    assert_eq!(
        daemon["securityContext"]["privileged"], true,
        "host cgroup namespace"
    );

    // The config the DaemonSet mounts loads, and its paths are mounted from
    // the host.
    let config_map = by("ConfigMap", "palisade-config");
    let config_text = config_map["data"]["config.yaml"]
        .as_str()
        .unwrap_or_else(|| panic!("no config.yaml"));
    let args: Vec<String> = daemon["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let config_path = args
        .iter()
        .skip_while(|a| *a != "--config")
        .nth(1)
        .unwrap_or_else(|| panic!("no --config in {args:?}"));
    let config_dir = Path::new(config_path).parent().unwrap_or(Path::new("/"));
    assert_eq!(
        mounts
            .get(&config_dir.display().to_string())
            .map(String::as_str),
        Some("config")
    );
    let dir = Scratch::new("k8s");
    std::fs::write(dir.join("config.yaml"), config_text).unwrap_or_else(|e| panic!("{e}"));
    let cfg = palisade::config::Config::load(&dir.join("config.yaml"))
        .unwrap_or_else(|e| panic!("the ConfigMap's config.yaml: {e}"));
    let mounted_from_host = |p: &Path, want_host: &str| {
        let (mount, vol) = mounts
            .iter()
            .filter(|(m, _)| p.starts_with(m.as_str()))
            .max_by_key(|(m, _)| m.len())
            .unwrap_or_else(|| panic!("{} is not on any mounted volume", p.display()));
        assert_eq!(
            host_path(vol).as_deref(),
            Some(want_host),
            "{} (volume {vol} at {mount})",
            p.display()
        );
    };
    mounted_from_host(&cfg.bpffs, "/sys/fs/bpf");
    mounted_from_host(&cfg.socket, "/run/palisade");
    mounted_from_host(
        cfg.audit.file.as_deref().unwrap_or(Path::new("/nowhere")),
        "/var/log/palisade",
    );
    mounted_from_host(Path::new("/sys/fs/cgroup/x"), "/sys/fs/cgroup");
    assert_eq!(
        mounts
            .get(&cfg.policy_path().display().to_string())
            .map(String::as_str),
        Some("policy")
    );
    assert!(cfg.policy_watch_seconds > 0, "ConfigMap edits must apply");
    let metrics_port = cfg.metrics.address().port();
    assert_eq!(daemon["ports"][0]["containerPort"], metrics_port);
    assert_eq!(
        ds["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"],
        metrics_port.to_string().as_str()
    );

    // The example policy validates.
    let policy = by("ConfigMap", "palisade-policy");
    for (name, text) in policy["data"].as_object().into_iter().flatten() {
        std::fs::write(dir.join(name), text.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        let out = Command::new(palisade_bin())
            .args(["policy", "check"])
            .arg(dir.join(name))
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The Dockerfile puts the binary where the DaemonSet runs it.
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile"))
        .unwrap_or_else(|e| panic!("deploy/Dockerfile: {e}"));
    let command = daemon["command"][0].as_str().unwrap_or_default();
    assert!(
        dockerfile
            .lines()
            .any(|l| l.starts_with("COPY --from=build") && l.ends_with(command)),
        "the Dockerfile must install {command}"
    );
    assert!(dockerfile.contains(&format!("ENTRYPOINT [\"{command}\"]")));
    assert!(
        dockerfile.contains("cargo xtask setup")
            && dockerfile.contains("cargo build --release -p agent")
    );
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert_eq!(stages, 2, "a build stage and a slim runtime stage");
}
