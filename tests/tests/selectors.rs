//! Identities that select existing cgroups (systemd units, pods) by path.

use palisade_tests::{DaemonProc, Probe, TcpServer, TestEnv, root_or_skip, wait_for};

#[test]
fn existing_and_new_cgroups_are_selected_by_path() {
    if !root_or_skip("existing_and_new_cgroups_are_selected_by_path") {
        return;
    }
    let denied = TcpServer::start("127.0.0.1");
    let env = TestEnv::new("selectors", "version: 1\n");
    let existing = env.make_cgroup("system.slice/billing-agent.service");
    let unrelated = env.make_cgroup("system.slice/sshd.service");
    let text = format!(
        "version: 1\nidentities:\n  - id: billing\n    selectors:\n      - cgroup: {}\n    egress:\n      allow:\n        - {{cidr: 10.9.9.9}}\n",
        env.selector_path("system.slice/*-agent.service")
    );
    env.write_policy(&text);
    let _d = DaemonProc::start(&env);

    Probe::in_cgroup(&existing, &["tcp", "127.0.0.1", &denied.port()])
        .expect_eperm("selected at start");
    Probe::in_cgroup(&unrelated, &["tcp", "127.0.0.1", &denied.port()]).expect_ok("not selected");

    // A unit that starts after the daemon is picked up by itself.
    let later = env.make_cgroup("system.slice/report-agent.service");
    let confined = wait_for(std::time::Duration::from_secs(5), || {
        (!Probe::in_cgroup(&later, &["tcp", "127.0.0.1", &denied.port()]).ok()).then_some(())
    });
    assert!(
        confined.is_some(),
        "a cgroup created later was not enrolled"
    );
    // Sub-cgroups of a selected cgroup stay confined (the kernel walks ancestry).
    let nested = env.make_cgroup("system.slice/billing-agent.service/worker");
    Probe::in_cgroup(&nested, &["tcp", "127.0.0.1", &denied.port()]).expect_eperm("nested cgroup");
}
