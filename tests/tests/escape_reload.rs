//! Escaping through a reload: agents selected by cgroup must stay confined
//! while the policy changes under them.
//!
//! - A reload that gives their cgroup to another identity must not free
//!   them for a moment (the cgroup and every thread's lineage change in
//!   place; many threads used to make the gap long).
//! - A reload that removes their identity leaves them denied everything,
//!   not unenrolled.
//! - An identity number still carried by a process (one that moved out of
//!   its cgroup) is not handed to an identity added later.
//!
//! A capture in a namespace counts what reaches the forbidden host; each
//! test's control shows the same path arrives when allowed.
//!
//! Addresses: namespace `10.122.0.0/24`, the far host `.2`, ports 9401–9403.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use palisade_tests::{
    DaemonProc, Probe, TestEnv, capture::Capture, netns::NetNs, probe::enter_cgroup, root_or_skip,
};

const HOST: &str = "10.122.0.2";
const NOBODY: &str = "65534";

/// The probe, started in `cgroup` and left running.
fn spawn_in(cgroup: &Path, args: &[&str]) -> Child {
    let mut cmd = Command::new(Probe::bin());
    cmd.args(args).stdout(Stdio::piped());
    enter_cgroup(&mut cmd, cgroup);
    cmd.spawn()
        .unwrap_or_else(|e| panic!("starting the probe in {}: {e}", cgroup.display()))
}

fn outcome(child: Child) -> serde_json::Value {
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for the probe: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("probe said {text:?}: {e}"))
}

fn reload(env: &TestEnv, policy: &str) {
    env.write_policy(policy);
    env.cli_ok(&["reload"]);
}

#[test]
fn a_reload_that_gives_a_cgroup_to_another_identity_never_frees_its_agents() {
    if !root_or_skip("a_reload_that_gives_a_cgroup_to_another_identity_never_frees_its_agents") {
        return;
    }
    let ns = NetNs::new("rsel", 122);
    let env = TestEnv::new("rsel", "version: 1\n");
    let sel = env.make_cgroup("sel");
    let policy = |id: &str, port: &str| {
        format!(
            "version: 1
identities:
  - id: {id}
    selectors: [{{cgroup: {sel}}}]
    egress:
      allow: [{{cidr: 10.122.0.9/32, ports: [{port}]}}]
",
            sel = env.selector_path("sel"),
        )
    };
    env.write_policy(&policy("p", "1"));
    env.write_config("");
    let _d = DaemonProc::start(&env);

    let cap = Capture::start(&ns, 12_000, &[HOST], &["port:9401"]);
    // Many threads each: every one is a lineage entry the reload moves.
    let agents = [
        spawn_in(
            &sel,
            &[
                "as-user",
                NOBODY,
                "park-threads",
                "1000",
                "tcp-for",
                HOST,
                "9401",
                "8000",
            ],
        ),
        spawn_in(
            &sel,
            &["park-threads", "1000", "tcp-for", HOST, "9401", "8000"],
        ),
    ];
    std::thread::sleep(Duration::from_millis(500));
    let until = Instant::now() + Duration::from_millis(7000);
    let mut reloads = 0;
    while Instant::now() < until {
        let (id, port) = if reloads % 2 == 0 {
            ("q", "2")
        } else {
            ("p", "1")
        };
        reload(&env, &policy(id, port));
        reloads += 1;
    }
    for agent in agents {
        let o = outcome(agent);
        assert_eq!(
            o["eperm"], o["count"],
            "an agent's connect got past the guard during reloads: {o}"
        );
        assert!(
            o["eperm"].as_u64().unwrap_or(0) > 100,
            "the agent did not keep trying: {o}"
        );
    }
    let counts = cap.finish();
    assert!(reloads >= 20, "only {reloads} reloads");
    assert_eq!(
        counts["port:9401"], 0,
        "agents reached the forbidden host during {reloads} reloads: {counts:?}"
    );

    // Control: the same cgroup reaches the host once its identity may.
    reload(
        &env,
        &format!(
            "version: 1
identities:
  - id: q
    selectors: [{{cgroup: {sel}}}]
    egress:
      allow: [{{cidr: {HOST}/32, ports: [9401]}}]
",
            sel = env.selector_path("sel"),
        ),
    );
    let cap = Capture::start(&ns, 1500, &[HOST], &["port:9401"]);
    std::thread::sleep(Duration::from_millis(100));
    let _ = Probe::in_cgroup(&sel, &["as-user", NOBODY, "tcp", HOST, "9401"]);
    let counts = cap.finish();
    assert!(
        counts["port:9401"] >= 1,
        "the control never arrived: {counts:?}"
    );
}

#[test]
fn a_reload_that_removes_an_identity_leaves_its_agents_denied_everything() {
    if !root_or_skip("a_reload_that_removes_an_identity_leaves_its_agents_denied_everything") {
        return;
    }
    let ns = NetNs::new("rrm", 123);
    let env = TestEnv::new("rrm", "version: 1\n");
    let sel = env.make_cgroup("sel");
    let host = "10.123.0.2";
    let with_p = format!(
        "version: 1
identities:
  - id: p
    selectors: [{{cgroup: {sel}}}]
    egress:
      allow: [{{cidr: {host}/32, ports: [9402]}}]
  - id: other
    selectors: [{{cgroup: {other}}}]
    egress:
      allow: [{{cidr: 10.123.0.9/32}}]
",
        sel = env.selector_path("sel"),
        other = env.selector_path("other"),
    );
    env.write_policy(&with_p);
    env.write_config("");
    let _d = DaemonProc::start(&env);

    // Control: p's agents reach the host while p is in the policy.
    let cap = Capture::start(&ns, 1500, &[host], &["port:9402"]);
    std::thread::sleep(Duration::from_millis(100));
    // No listener there: the capture sees the SYN, the agent a refusal.
    let o = Probe::in_cgroup(&sel, &["as-user", NOBODY, "tcp", host, "9402"]);
    assert_ne!(
        o.errno(),
        Some(1),
        "p's agent while p is in the policy: {}",
        o.0
    );
    assert!(cap.finish()["port:9402"] >= 1);

    for revoked in [false, true] {
        env.write_policy(&with_p);
        env.cli_ok(&["reload"]);
        if revoked {
            env.cli_ok(&["revoke", "p"]);
        }
        let go = env.dir.join(format!("go-{revoked}"));
        let go_arg = go.display().to_string();
        // Running before the reload, unprivileged; one forks a child.
        let agents = [
            spawn_in(
                &sel,
                &[
                    "as-user", NOBODY, "await", &go_arg, "tcp-for", host, "9402", "1500",
                ],
            ),
            spawn_in(
                &sel,
                &[
                    "as-user", NOBODY, "await", &go_arg, "fork-tcp", host, "9402",
                ],
            ),
        ];
        std::thread::sleep(Duration::from_millis(300));
        let without_p = with_p
            .split("  - id: other")
            .nth(1)
            .map(|rest| format!("version: 1\nidentities:\n  - id: other{rest}"))
            .unwrap_or_default();
        let cap = Capture::start(&ns, 4000, &[host], &["port:9402"]);
        reload(&env, &without_p);
        std::fs::write(&go, "").unwrap_or_else(|e| panic!("{e}"));
        let [looping, forking] = agents;
        let o = outcome(looping);
        assert_eq!(
            o["eperm"], o["count"],
            "an agent of the removed identity got past the guard (revoked first: {revoked}): {o}"
        );
        assert!(o["eperm"].as_u64().unwrap_or(0) > 10, "{o}");
        let o = outcome(forking);
        assert_eq!(
            o["ok"], false,
            "a forked child of the removed identity connected (revoked first: {revoked}): {o}"
        );
        // A process that enters the cgroup afterwards is denied too.
        Probe::in_cgroup(&sel, &["as-user", NOBODY, "tcp", host, "9402"])
            .expect_eperm("a new process in the removed identity's cgroup");
        let counts = cap.finish();
        assert_eq!(
            counts["port:9402"], 0,
            "the removed identity's agents reached its old host (revoked first: {revoked}): {counts:?}"
        );
        if revoked {
            env.write_policy(&with_p);
            env.cli_ok(&["reload"]);
            env.cli_ok(&["restore", "p"]);
        }
    }
}

#[test]
fn an_identity_number_a_process_still_carries_is_not_given_to_a_new_identity() {
    if !root_or_skip("an_identity_number_a_process_still_carries_is_not_given_to_a_new_identity") {
        return;
    }
    let ns = NetNs::new("rreuse", 124);
    let env = TestEnv::new("rreuse", "version: 1\n");
    let old = env.make_cgroup("old");
    let elsewhere = env.make_cgroup("elsewhere");
    let newer = env.make_cgroup("newer");
    let host = "10.124.0.2";
    let policy = |ids: &str| format!("version: 1\nidentities:\n{ids}");
    let p = format!(
        "  - id: p\n    selectors: [{{cgroup: {}}}]\n    egress:\n      allow: [{{cidr: 10.124.0.9/32}}]\n",
        env.selector_path("old")
    );
    let n = format!(
        "  - id: n\n    selectors: [{{cgroup: {}}}]\n    egress:\n      allow: [{{cidr: {host}/32, ports: [9403]}}]\n",
        env.selector_path("newer")
    );
    let keeper = format!(
        "  - id: keeper\n    selectors: [{{cgroup: {}}}]\n    egress:\n      allow: [{{cidr: 10.124.0.8/32}}]\n",
        env.selector_path("keeper")
    );
    env.write_policy(&policy(&format!("{keeper}{p}")));
    env.write_config("");
    let _d = DaemonProc::start(&env);

    // p's agent leaves for an unselected cgroup (it stays p) and its old
    // cgroup is removed; then p leaves the policy and n arrives.
    let go = env.dir.join("go");
    let go_arg = go.display().to_string();
    let procs = elsewhere.join("cgroup.procs").display().to_string();
    // Root moves out (moving needs write access at the common ancestor),
    // then drops to nobody.
    let agent = spawn_in(
        &old,
        &[
            "move-to", &procs, "as-user", NOBODY, "await", &go_arg, "tcp-for", host, "9403", "1500",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(old.join("cgroup.procs")).is_ok_and(|s| !s.trim().is_empty()) {
        assert!(Instant::now() < deadline, "the agent never left its cgroup");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_dir(&old).unwrap_or_else(|e| panic!("removing {}: {e}", old.display()));
    reload(&env, &policy(&keeper));
    reload(&env, &policy(&format!("{keeper}{n}")));

    let cap = Capture::start(&ns, 3000, &[host], &["port:9403"]);
    std::thread::sleep(Duration::from_millis(100));
    std::fs::write(&go, "").unwrap_or_else(|e| panic!("{e}"));
    let o = outcome(agent);
    assert_ne!(o["step"], "move", "the agent could not move: {o}");
    assert_eq!(
        o["eperm"], o["count"],
        "the removed identity's agent became n: {o}"
    );
    // Control: n's own process reaches n's host.
    let o = Probe::in_cgroup(&newer, &["as-user", NOBODY, "tcp", host, "9403"]);
    assert_ne!(o.errno(), Some(1), "n's own agent: {}", o.0);
    let counts = cap.finish();
    assert_eq!(
        counts["port:9403"], 1,
        "only n's own connection may arrive: {counts:?}"
    );
}
