//! Identities that select existing cgroups (systemd units, pods) by path.

use palisade_tests::{DaemonProc, Probe, TcpServer, TestEnv, launcher, root_or_skip, wait_for};

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

/// A daemon that cannot open another descriptor (out of them: an agent
/// holding connections, a host at its limit) reads the cgroup tree only in
/// part. It took the cgroups it could not read for gone and dropped their
/// enrolment: a process started in a selected cgroup then ran with no rules
/// at all. A tree that cannot be read whole now changes nothing.
#[test]
fn a_daemon_out_of_descriptors_keeps_selected_cgroups_enrolled() {
    if !root_or_skip("a_daemon_out_of_descriptors_keeps_selected_cgroups_enrolled") {
        return;
    }
    let denied = TcpServer::start("127.0.0.1");
    let env = TestEnv::new("selfd", "version: 1\n");
    let selected = env.make_cgroup("system.slice/pay-agent.service");
    let unrelated = env.make_cgroup("system.slice/sshd.service");
    let text = format!(
        "version: 1\nidentities:\n  - id: pay\n    selectors:\n      - cgroup: {}\n    egress:\n      allow:\n        - {{cidr: 10.9.9.9}}\n",
        env.selector_path("system.slice/*-agent.service")
    );
    env.write_policy(&text);
    let d = DaemonProc::start(&env);
    let port = denied.port();
    let connect = |cgroup| Probe::in_cgroup(cgroup, &["tcp", "127.0.0.1", &port]);
    connect(&selected).expect_eperm("selected at start");
    connect(&unrelated).expect_ok("the control: not selected");
    // No descriptor number the daemon may still use is free (a limit of 3:
    // stdio holds those), for several resyncs (one a second in tests).
    let before = launcher::set_descriptor_limit(d.pid(), 3);
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let during = connect(&selected);
    launcher::restore_descriptor_limit(d.pid(), &before);
    during.expect_eperm(
        "a process started in the selected cgroup while the daemon was out of descriptors",
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    connect(&selected).expect_eperm("after the daemon has descriptors again");
}
