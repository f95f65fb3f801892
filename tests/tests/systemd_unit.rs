//! `deploy/systemd/palisade.service`, unmodified, under a real systemd (PID
//! 1 of its own namespaces over a Debian root, see `palisade_tests::systemd`)
//! on a host where nothing has mounted bpffs: it starts (Type=notify),
//! enforces, is restarted after `kill -9` with no gap in enforcement,
//! reloads on `systemctl reload`, keeps enforcing after `systemctl stop`,
//! and runs with the confinement the unit promises.

use std::{
    path::{Path, PathBuf},
    sync::atomic::Ordering,
    time::Duration,
};

use palisade_tests::{
    Probe, TcpServer, palisade_bin, root_or_skip, systemd::SystemdHost, wait_for,
};
use serde_json::Value;

const DENIED: &str = "127.150.0.1";
const ALLOWED: &str = "127.150.0.2";
const LATER: &str = "127.150.0.3";

fn unit() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/palisade.service");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn policy(extra_allow: &str) -> String {
    format!(
        "version: 1\nidentities:\n  - id: agent\n    mode: enforce\n    egress:\n      allow:\n        - cidr: {ALLOWED}\n{extra_allow}"
    )
}

/// The unit's CapabilityBoundingSet as a /proc/PID/status mask.
fn unit_caps_mask(unit: &str) -> u64 {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .unwrap_or_else(|| panic!("no CapabilityBoundingSet= in the unit"));
    line.split_whitespace()
        .map(|c| match c {
            "CAP_CHOWN" => 0,
            "CAP_NET_ADMIN" => 12,
            "CAP_SYS_ADMIN" => 21,
            "CAP_PERFMON" => 38,
            "CAP_BPF" => 39,
            other => panic!("the test does not know {other}: add its number"),
        })
        .fold(0u64, |m, bit| m | (1 << bit))
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {key} in:\n{status}"))
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn all_eperm(outcomes: &[Value]) -> bool {
    outcomes
        .iter()
        .all(|o| o["errno"].as_i64() == Some(i64::from(libc::EPERM)))
}

struct Unit<'a> {
    host: &'a SystemdHost,
}

impl Unit<'_> {
    fn main_pid(&self) -> String {
        self.host.show("palisade", "MainPID")
    }

    fn state(&self) -> String {
        self.host.show("palisade", "ActiveState")
    }

    /// A probe inside the container, through `palisade exec` when enrolled.
    fn probe(&self, enrolled: bool, ip: &str, server: &TcpServer) -> Value {
        let exec = if enrolled {
            "palisade exec --identity agent -- "
        } else {
            ""
        };
        let out = self
            .host
            .sh_ok(&format!("{exec}palisade-probe tcp {ip} {}", server.port()));
        serde_json::from_str(out.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("probe output {out:?}: {e}"))
    }

    fn audit(&self) -> Vec<Value> {
        lines(&self.host.path("/var/log/palisade/audit.jsonl"))
    }
}

fn mounted_at(mountinfo: &str, point: &str) -> Option<String> {
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (left.split_whitespace().nth(4)? == point).then(|| {
            right
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string()
        })
    })
}

#[test]
fn the_unit_under_a_real_systemd() {
    if !root_or_skip("the_unit_under_a_real_systemd") {
        return;
    }
    let denied = TcpServer::start(DENIED);
    let allowed = TcpServer::start(ALLOWED);
    let later = TcpServer::start(LATER);
    let unit_text = unit();
    let config = "policy: /etc/palisade/policy.yaml\n\
                  audit:\n  file: /var/log/palisade/audit.jsonl\n\
                  metrics:\n  listen: 127.150.1.1:0\n\
                  dns:\n  listen: 127.150.16.0\n  upstream: 127.150.1.53:53\n";
    let probe_bin: PathBuf = Probe::bin();
    let host = SystemdHost::boot(
        "systemd-unit",
        &[
            ("/etc/systemd/system/palisade.service", unit_text.clone()),
            ("/etc/palisade/config.yaml", config.to_string()),
            ("/etc/palisade/policy.yaml", policy("")),
        ],
        &[
            (palisade_bin(), "/usr/local/bin/palisade"),
            (probe_bin, "/usr/local/bin/palisade-probe"),
        ],
    );
    let unit = Unit { host: &host };
    let pid1_mounts = || host.sh_ok("cat /proc/1/mountinfo");
    assert_eq!(
        mounted_at(&pid1_mounts(), "/sys/fs/bpf"),
        None,
        "this host must start without bpffs"
    );

    // Start: Type=notify, so `systemctl start` returns once the daemon is ready.
    host.sh_ok("systemctl start palisade");
    assert_eq!(unit.state(), "active");
    assert_eq!(
        mounted_at(&pid1_mounts(), "/sys/fs/bpf").as_deref(),
        Some("bpf"),
        "`palisade mount` must leave bpffs in the host's mount namespace, where pins outlive the service"
    );

    // The confinement the unit promises, read from the running process.
    let main = unit.main_pid();
    let status = host.sh_ok(&format!("cat /proc/{main}/status"));
    let want = unit_caps_mask(&unit_text);
    for key in ["CapEff", "CapPrm", "CapBnd"] {
        let have = u64::from_str_radix(&status_field(&status, key), 16)
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(have, want, "{key} {have:#x}, the unit says {want:#x}");
    }
    assert_eq!(want & (1 << 21), 0, "the daemon runs without CAP_SYS_ADMIN");
    assert_eq!(status_field(&status, "CapAmb"), "0000000000000000");
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    assert_eq!(
        status_field(&status, "Seccomp"),
        "2",
        "SystemCallFilter= is a seccomp filter"
    );
    let ns = host.sh_ok(&format!("readlink /proc/1/ns/mnt /proc/{main}/ns/mnt"));
    let ns: Vec<&str> = ns.lines().collect();
    assert_ne!(ns[0], ns[1], "the daemon has a mount namespace of its own");
    let its_mounts = host.sh_ok(&format!("cat /proc/{main}/mountinfo"));
    let options = |point: &str| {
        its_mounts
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.get(4) == Some(&point))
            .filter_map(|f| {
                f.get(5)
                    .map(|o| o.split(',').map(str::to_string).collect::<Vec<_>>())
            })
            .next_back()
            .unwrap_or_else(|| panic!("nothing mounted at {point} for the daemon:\n{its_mounts}"))
    };
    assert!(
        options("/").contains(&"ro".to_string()),
        "ProtectSystem=strict: / read-only for the daemon:\n{its_mounts}"
    );
    for writable in ["/var/log/palisade", "/sys/fs/bpf", "/sys/fs/cgroup"] {
        assert!(
            options(writable).contains(&"rw".to_string()),
            "{writable} writable for the daemon:\n{its_mounts}"
        );
    }
    let same_bpffs = host.sh_ok(&format!(
        "stat -c %d /sys/fs/bpf /proc/{main}/root/sys/fs/bpf"
    ));
    let devs: Vec<&str> = same_bpffs.lines().collect();
    assert_eq!(devs[0], devs[1], "the daemon pins into the host's bpffs");

    // Enforce: the enrolled agent is refused, the same connection from a
    // process that is not enrolled gets through, and so does an allowed one.
    let o = unit.probe(true, DENIED, &denied);
    assert_eq!(o["errno"], libc::EPERM, "enrolled: {o}");
    assert_eq!(denied.accepted.load(Ordering::Relaxed), 0);
    let o = unit.probe(false, DENIED, &denied);
    assert_eq!(o["ok"], true, "control: {o}");
    let o = unit.probe(true, ALLOWED, &allowed);
    assert_eq!(o["ok"], true, "enrolled, allowed: {o}");
    let arrived = wait_for(Duration::from_secs(5), || {
        (denied.accepted.load(Ordering::Relaxed) == 1
            && allowed.accepted.load(Ordering::Relaxed) == 1)
            .then_some(())
    });
    assert!(
        arrived.is_some(),
        "the control and the allowed connection arrive"
    );
    wait_for(Duration::from_secs(5), || {
        unit.audit()
            .into_iter()
            .find(|e| e["verdict"] == "deny" && e["dst_ip"] == DENIED)
    })
    .unwrap_or_else(|| panic!("no deny in the trail:\n{:?}", unit.audit()));

    // An agent that keeps trying, enrolled once, through everything below.
    host.sh_ok(&format!(
        "palisade exec --identity agent -- /bin/sh -c 'while :; do \
           palisade-probe tcp {DENIED} {d} >> /run/agent-denied.jsonl; \
           palisade-probe tcp {LATER} {l} >> /run/agent-later.jsonl; sleep 0.05; done' \
           </dev/null >/dev/null 2>&1 &",
        d = denied.port(),
        l = later.port()
    ));
    let agent_log = host.path("/run/agent-denied.jsonl");
    let count_at_least = |n: usize| {
        wait_for(Duration::from_secs(20), || {
            let v = lines(&agent_log);
            (v.len() >= n).then_some(v)
        })
        .unwrap_or_else(|| panic!("the agent loop stalled below {n} attempts"))
    };
    count_at_least(3);

    // kill -9: systemd restarts the daemon, which adopts the pins; the
    // agent, still trying, never gets through in between.
    let at_kill = lines(&agent_log).len();
    host.sh_ok(&format!("kill -9 {main}"));
    let restarted = wait_for(Duration::from_secs(30), || {
        (unit.state() == "active"
            && host.show("palisade", "NRestarts") == "1"
            && unit.main_pid() != main)
            .then_some(())
    });
    assert!(
        restarted.is_some(),
        "not restarted after kill -9:\n{}",
        host.diagnose()
    );
    let at_restart = lines(&agent_log).len();
    assert!(
        at_restart > at_kill,
        "the agent made no attempt while the daemon was down ({at_kill} → {at_restart})"
    );
    let tried = count_at_least(at_restart + 3);
    assert!(
        all_eperm(&tried),
        "an attempt got through around the restart: {tried:?}"
    );
    assert_eq!(
        denied.accepted.load(Ordering::Relaxed),
        1,
        "nothing new arrived"
    );
    let main = unit.main_pid();

    // systemctl reload: SIGHUP to the same process, which applies the policy.
    let policy_path = host.path("/etc/palisade/policy.yaml");
    let tmp = policy_path.with_extension("tmp");
    std::fs::write(&tmp, policy(&format!("        - cidr: {LATER}\n")))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&tmp, &policy_path).unwrap_or_else(|e| panic!("{e}"));
    host.sh_ok("systemctl reload palisade");
    wait_for(Duration::from_secs(10), || {
        unit.audit()
            .into_iter()
            .find(|e| e["kind"] == "policy" && e["verdict"] == "applied" && e["reason"] == "sighup")
    })
    .unwrap_or_else(|| panic!("no SIGHUP reload in the trail:\n{:?}", unit.audit()));
    assert_eq!(unit.main_pid(), main, "a reload is not a restart");
    let reached = wait_for(Duration::from_secs(10), || {
        (later.accepted.load(Ordering::Relaxed) > 0).then_some(())
    });
    assert!(
        reached.is_some(),
        "the reloaded policy lets the agent reach {LATER}"
    );

    // systemctl stop: the daemon exits, enforcement stays.
    host.sh_ok("systemctl stop palisade");
    assert_eq!(unit.state(), "inactive");
    let at_stop = lines(&agent_log).len();
    let tried = count_at_least(at_stop + 5);
    assert!(
        all_eperm(&tried[at_stop..]),
        "after stop: {:?}",
        &tried[at_stop..]
    );
    assert_eq!(
        denied.accepted.load(Ordering::Relaxed),
        1,
        "nothing new arrived after stop"
    );
    assert!(
        host.path("/sys/fs/bpf/palisade/link_connect4").exists(),
        "the pins outlive the service"
    );
}
