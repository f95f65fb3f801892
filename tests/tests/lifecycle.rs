//! Enforcement outlives the daemon: kill -9, restart and adoption, and the
//! only two ways it ends (`--detach`, `uninstall`).

use nix::sys::signal::Signal;
use palisade_tests::{
    DaemonProc, Probe, TcpServer, TestEnv,
    kernel::{
        ATTACH_INET_SOCK_CREATE, ATTACH_INET4_CONNECT, ATTACH_INET6_CONNECT, ATTACH_UDP4_SENDMSG,
        attached_programs,
    },
    palisade_bin, root_or_skip,
};

fn policy(port: u16) -> String {
    format!(
        "version: 1\nidentities:\n  - id: agent\n    egress:\n      allow:\n        - {{cidr: 127.0.0.1, ports: [{port}]}}\n"
    )
}

fn one_of_each(env: &TestEnv) {
    for t in [
        ATTACH_INET4_CONNECT,
        ATTACH_INET6_CONNECT,
        ATTACH_UDP4_SENDMSG,
        ATTACH_INET_SOCK_CREATE,
    ] {
        assert_eq!(
            attached_programs(&env.attach, t),
            1,
            "attach type {t}: exactly one program"
        );
    }
}

#[test]
fn sigkill_keeps_enforcement_and_a_new_daemon_adopts_it() {
    if !root_or_skip("sigkill_keeps_enforcement_and_a_new_daemon_adopts_it") {
        return;
    }
    let allowed = TcpServer::start("127.0.0.1");
    let denied = TcpServer::start("127.0.0.1");
    let env = TestEnv::new("kill9", &policy(allowed.addr.port()));
    let mut d = DaemonProc::start(&env);
    // Enrol a long-lived "agent" first, so the same process is judged across
    // the crash: a shell that runs the probe twice, waiting for a go file.
    let go = env.dir.join("go");
    let script = format!(
        "{p} tcp 127.0.0.1 {deny}; while [ ! -e {go} ]; do sleep 0.05; done; {p} tcp 127.0.0.1 {deny}; {p} tcp 127.0.0.1 {allow}",
        p = Probe::bin().display(),
        deny = denied.port(),
        allow = allowed.port(),
        go = go.display()
    );
    let agent = std::process::Command::new(palisade_bin())
        .args(["exec", "--socket"])
        .arg(&env.socket)
        .args(["--identity", "agent", "--", "sh", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    // Enrolled (exec asks the daemon) before the daemon dies.
    env.wait_enrolments("agent", 1);

    d.kill9();
    std::fs::write(&go, "").unwrap_or_else(|e| panic!("{e}"));
    let out = agent.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(
        lines[0]["errno"], 1,
        "denied before the crash: {}",
        lines[0]
    );
    assert_eq!(
        lines[1]["errno"], 1,
        "still denied with the daemon dead: {}",
        lines[1]
    );
    assert_eq!(
        lines[2]["ok"], true,
        "still allowed with the daemon dead: {}",
        lines[2]
    );
    one_of_each(&env);

    // A new daemon adopts the pins: no second attachment, same verdicts.
    let _d2 = DaemonProc::start(&env);
    one_of_each(&env);
    Probe::enrolled(&env, "agent", &["tcp", "127.0.0.1", &denied.port()])
        .expect_eperm("after adoption");
    Probe::enrolled(&env, "agent", &["tcp", "127.0.0.1", &allowed.port()])
        .expect_ok("after adoption");
    env.wait_audit("adoption", |e| {
        e["kind"] == "daemon" && e["reason"] == "adopted-pins"
    });
}

#[test]
fn sigterm_keeps_enforcement_detach_and_uninstall_remove_it() {
    if !root_or_skip("sigterm_keeps_enforcement_detach_and_uninstall_remove_it") {
        return;
    }
    let allowed = TcpServer::start("127.0.0.1");
    let denied = TcpServer::start("127.0.0.1");
    let env = TestEnv::new("detach", &policy(allowed.addr.port()));

    // SIGTERM: the daemon exits 0, enforcement stays.
    let mut d = DaemonProc::start(&env);
    Probe::enrolled(&env, "agent", &["tcp", "127.0.0.1", &denied.port()])
        .expect_eperm("while running");
    assert_eq!(d.signal_and_wait(Signal::SIGTERM), Some(0));
    one_of_each(&env);
    let stays = Probe::in_cgroup(
        &env.attach.join("palisade/agent"),
        &["tcp", "127.0.0.1", &denied.port()],
    );
    stays.expect_eperm("after SIGTERM, the managed cgroup is still confined");

    // --detach: the daemon removes everything on exit.
    let mut d = DaemonProc::start_with(&env, &["--detach"]);
    assert_eq!(d.signal_and_wait(Signal::SIGTERM), Some(0));
    assert_eq!(
        attached_programs(&env.attach, ATTACH_INET4_CONNECT),
        0,
        "detached"
    );
    assert!(!env.bpffs.exists(), "pins removed");
    Probe::in_cgroup(
        &env.attach.join("palisade/agent"),
        &["tcp", "127.0.0.1", &denied.port()],
    )
    .expect_ok("no enforcement after --detach");

    // uninstall: same, from the CLI, with the daemon gone.
    let mut d = DaemonProc::start(&env);
    d.kill9();
    one_of_each(&env);
    let out = std::process::Command::new(palisade_bin())
        .args(["uninstall", "--bpffs"])
        .arg(&env.bpffs)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        attached_programs(&env.attach, ATTACH_INET4_CONNECT),
        0,
        "uninstalled"
    );
}
