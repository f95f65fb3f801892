//! Break-glass elevation against the real daemon and kernel: an elevated
//! role's destination and tool are closed before, open during and closed
//! after the elevation, also when the daemon was killed (-9) before the
//! expiry; a restarted daemon keeps an elevation with its expiry, never
//! extends or revives it; an agent cannot elevate itself; what only an
//! elevation allowed carries its id in the trail.

use std::time::{Duration, Instant};

use palisade_tests::{
    DaemonProc, Probe, TcpServer, TestEnv, palisade_bin,
    probe::{RpcAs, rpc},
    root_or_skip,
};
use serde_json::Value;

/// The break-glass database's address (this file's loopback range).
const DB: &str = "127.233.0.1";

fn policy(env: &TestEnv, db_port: &str) -> String {
    format!(
        r#"version: 1
label: elevation
roles:
  - id: dba-breakglass
    elevated: true
    egress:
      allow:
        - {{id: prod-db, cidr: {DB}, ports: [{db_port}], protocol: tcp}}
    tools:
      allow:
        - {{id: drop-tables, tool: db, actions: [drop_table]}}
identities:
  - id: ops
    roles: [dba-breakglass]
    selectors:
      - cgroup: {sel}
    tools:
      allow:
        - {{id: read-tables, tool: db, actions: [select]}}
"#,
        sel = env.selector_path("ops.service"),
    )
}

fn start(name: &str, db_port: &str) -> (TestEnv, DaemonProc) {
    let env = TestEnv::new(name, "version: 1\n");
    env.make_cgroup("ops.service");
    env.write_policy(&policy(&env, db_port));
    env.write_config("");
    let d = DaemonProc::start(&env);
    (env, d)
}

fn elevate(env: &TestEnv, ttl: &str) -> Value {
    let out = env.cli_ok(&[
        "elevate",
        "ops",
        "--role",
        "dba-breakglass",
        "--for",
        ttl,
        "--reason",
        "INC-4711 replica stuck",
        "--json",
    ]);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("elevate --json {out:?}: {e}"))
}

fn elevations(env: &TestEnv) -> Vec<Value> {
    env.cli_ok(&["elevations", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn drop_table(env: &TestEnv, agent: &std::path::Path) -> Value {
    let a = rpc(
        env,
        RpcAs::Cgroup(agent),
        &["decide", "none", "db", "drop_table", "{}"],
    );
    assert_eq!(a["ok"], true, "decide failed: {a}");
    a
}

#[test]
fn an_elevation_opens_egress_and_tools_until_expiry_even_with_the_daemon_killed() {
    if !root_or_skip("an_elevation_opens_egress_and_tools_until_expiry_even_with_the_daemon_killed")
    {
        return;
    }
    let db = TcpServer::start(DB);
    let port = db.port();
    let (env, mut d) = start("elevation-expiry", &port);
    let agent = env.make_cgroup("ops.service");
    let connect = || Probe::in_cgroup(&agent, &["tcp", DB, &port]);
    // The listener counts what it accepted; give its accept loop a moment.
    let reached = || {
        std::thread::sleep(Duration::from_millis(50));
        db.accepted.load(std::sync::atomic::Ordering::Relaxed)
    };

    // Before: the elevated role is not held.
    connect().expect_eperm("before any elevation");
    assert_eq!(reached(), 0, "nothing may arrive before the elevation");
    let before = drop_table(&env, &agent);
    assert_eq!(before["verdict"], "DENY", "{before}");
    let select = rpc(
        &env,
        RpcAs::Cgroup(&agent),
        &["decide", "none", "db", "select", "{}"],
    );
    assert_eq!(select["verdict"], "ALLOW", "the standing rule: {select}");
    assert_eq!(select["elevation"], "", "{select}");

    // During: 15 s from here.
    let t0 = Instant::now();
    let ttl = Duration::from_secs(15);
    let e = elevate(&env, "15s");
    // The daemon counts the 15 s from some moment between t0 and now.
    let t1 = Instant::now();
    let id = e["id"].as_str().unwrap_or_default().to_string();
    assert!(id.starts_with("elv-"), "{e}");
    assert_eq!(e["identity"], "ops", "{e}");
    let listed = elevations(&env);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], id.as_str());
    env.wait_audit("for the elevation's start", |r| {
        r["kind"] == "elevation"
            && r["verdict"] == "started"
            && r["elevation"] == id.as_str()
            && r["detail"] == "INC-4711 replica stuck"
    });
    let m = palisade_tests::http::Scrape::fetch(&env.metrics_address());
    m.expect("palisade_kpi_identities_elevated", 1.0);

    connect().expect_ok("during the elevation");
    assert_eq!(reached(), 1, "the listener saw the elevated connection");
    let allowed = env.wait_audit("for the connection only the elevation allowed", |r| {
        r["kind"] == "network" && r["verdict"] == "allow" && r["dst_port"] == db.addr.port()
    });
    assert_eq!(allowed["elevation"], id.as_str(), "{allowed}");
    assert_eq!(allowed["reason"], "elevation", "{allowed}");
    assert_eq!(allowed["identity"], "ops", "{allowed}");

    let during = drop_table(&env, &agent);
    assert_eq!(during["verdict"], "ALLOW", "{during}");
    assert_eq!(during["elevation"], id.as_str(), "{during}");
    assert_eq!(during["rules"][0], "drop-tables", "{during}");
    let decided = env.wait_audit("for the elevated decision", |r| {
        r["kind"] == "decision" && r["verdict"] == "allow" && r["call"]["action"] == "drop_table"
    });
    assert_eq!(decided["elevation"], id.as_str(), "{decided}");
    // A call the standing policy allows is not marked.
    let plain = env
        .audit_events()
        .into_iter()
        .find(|r| r["kind"] == "decision" && r["call"]["action"] == "select")
        .unwrap_or_else(|| panic!("no record of the select call"));
    assert!(plain.get("elevation").is_none(), "{plain}");

    // The daemon dies hard before the expiry: the kernel keeps the grant
    // until its time, then closes it alone.
    d.kill9();
    assert!(
        t0.elapsed() < ttl - Duration::from_secs(2),
        "the machine is too slow for this test: {:?} of {ttl:?} used before the kill",
        t0.elapsed()
    );
    connect().expect_ok("daemon killed, elevation still live");
    assert_eq!(reached(), 2);
    while t1.elapsed() < ttl + Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(100));
    }
    connect().expect_eperm("after expiry, no daemon running");
    assert_eq!(reached(), 2, "nothing arrived after the expiry");

    // A restarted daemon records the end and does not revive it.
    let _d = DaemonProc::start(&env);
    let ended = env.wait_audit("for the end recorded after the restart", |r| {
        r["kind"] == "elevation" && r["verdict"] == "ended" && r["elevation"] == id.as_str()
    });
    assert_eq!(ended["reason"], "expired", "{ended}");
    assert!(
        elevations(&env).is_empty(),
        "an expired elevation is listed"
    );
    connect().expect_eperm("after the restart");
    assert_eq!(reached(), 2);
    let after = drop_table(&env, &agent);
    assert_eq!(after["verdict"], "DENY", "{after}");
    assert_eq!(after["elevation"], "", "{after}");
    let m = palisade_tests::http::Scrape::fetch(&env.metrics_address());
    m.expect("palisade_kpi_identities_elevated", 0.0);
}

#[test]
fn a_restart_keeps_an_elevation_as_it_was_and_an_operator_can_end_it() {
    if !root_or_skip("a_restart_keeps_an_elevation_as_it_was_and_an_operator_can_end_it") {
        return;
    }
    let db = TcpServer::start(DB);
    let port = db.port();
    let (env, mut d) = start("elevation-restart", &port);
    let agent = env.make_cgroup("ops.service");
    let connect = || Probe::in_cgroup(&agent, &["tcp", DB, &port]);

    let e = elevate(&env, "10m");
    let id = e["id"].as_str().unwrap_or_default().to_string();
    connect().expect_ok("during the elevation");

    d.kill9();
    let d2 = DaemonProc::start(&env);
    let listed = elevations(&env);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(
        listed[0]["expires_at"], e["expires_at"],
        "a restart must not extend an elevation"
    );
    connect().expect_ok("after the restart, still elevated");
    assert_eq!(drop_table(&env, &agent)["elevation"], id.as_str());

    // Ending it early closes both paths at once.
    env.cli_ok(&["elevate", "--end", &id, "--reason", "incident over"]);
    connect().expect_eperm("after the operator ended it");
    assert_eq!(drop_table(&env, &agent)["verdict"], "DENY");
    let ended = env.wait_audit("for the early end", |r| {
        r["kind"] == "elevation" && r["verdict"] == "ended" && r["elevation"] == id.as_str()
    });
    assert_eq!(ended["reason"], "ended-by-operator", "{ended}");
    assert!(elevations(&env).is_empty());
    drop(d2);

    // And a restart after that does not bring it back.
    let _d3 = DaemonProc::start(&env);
    assert!(elevations(&env).is_empty());
    connect().expect_eperm("an ended elevation stays ended across a restart");
}

#[test]
fn an_agent_cannot_elevate_itself() {
    if !root_or_skip("an_agent_cannot_elevate_itself") {
        return;
    }
    let db = TcpServer::start(DB);
    let port = db.port();
    let (env, _d) = start("elevation-self", &port);
    let agent = env.make_cgroup("ops.service");
    // The agent runs the operator CLI itself, as root inside its cgroup:
    // the daemon sees an enrolled peer and refuses the operator RPC.
    let socket = env.socket.to_string_lossy().into_owned();
    let args = [
        "elevate",
        "ops",
        "--role",
        "dba-breakglass",
        "--for",
        "10m",
        "--reason",
        "let me in",
        "--socket",
        &socket,
    ];
    let out = Probe::in_cgroup_cmd(&agent, &palisade_bin(), &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an agent elevated itself: {stderr}");
    assert!(
        stderr.contains("PermissionDenied") && stderr.contains("agent `ops`"),
        "{stderr}"
    );
    assert!(elevations(&env).is_empty(), "no elevation may exist");
    Probe::in_cgroup(&agent, &["tcp", DB, &port]).expect_eperm("after the refused elevation");
    assert_eq!(
        db.accepted.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "nothing arrived"
    );
    assert!(
        !env.audit_events()
            .iter()
            .any(|r| r["kind"] == "elevation" && r["verdict"] == "started"),
        "an elevation start was recorded"
    );

    // Operator-side refusals: a role the identity does not name, no reason.
    let out = env.cli(&[
        "elevate", "ops", "--role", "root", "--for", "5m", "--reason", "x",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("FailedPrecondition"),
        "{stderr}"
    );
    let out = env.cli(&["elevate", "ops", "--role", "dba-breakglass", "--for", "5m"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("needs a reason"),
        "{stderr}"
    );
}

#[test]
fn policy_check_points_at_misused_elevated_roles() {
    let dir = std::env::temp_dir().join(format!("pe-elev-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let file = dir.join("p.yaml");
    std::fs::write(
        &file,
        "version: 1
roles:
  - id: breakglass
    elevated: true
    egress:
      deny:
        - {cidr: 10.0.0.0/8}
  - id: standing
    inherits: [breakglass]
identities:
  - id: a
    roles: [standing]
",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(palisade_bin())
        .args(["policy", "check"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    let at = |line: u32, what: &str| {
        assert!(
            text.lines()
                .any(|l| l.contains(&format!("p.yaml:{line}:")) && l.contains(what)),
            "no error at line {line} about {what:?}:\n{text}"
        );
    };
    at(3, "egress `deny`");
    at(8, "inherits elevated role `breakglass`");
}

/// An agent asks for its elevated role through the decision API (tool
/// `palisade.elevate`): it gets a pending approval, never the role; its own
/// attempt to approve is refused and nothing opens; once an operator
/// approves, the role's destination and tools open for the asked time in
/// the approver's name. Roles it may not hold and bad durations are denied.
#[test]
fn an_agent_asks_for_an_elevation_and_only_an_operator_starts_it() {
    if !root_or_skip("an_agent_asks_for_an_elevation_and_only_an_operator_starts_it") {
        return;
    }
    let db = TcpServer::start(DB);
    let port = db.port();
    let (env, _d) = start("elevation-request", &port);
    let agent = env.make_cgroup("ops.service");
    let ask = |role: &str, params: &str| {
        rpc(
            &env,
            RpcAs::Cgroup(&agent),
            &["decide", "none", "palisade.elevate", role, params],
        )
    };
    let wanted = r#"{"for": "2m", "reason": "INC-4712 replica stuck"}"#;

    // Roles it may not hold, and requests without a sane duration or reason.
    for (role, params, reason) in [
        ("db-owner", wanted, "elevation-not-allowed"),
        (
            "dba-breakglass",
            r#"{"for": "30d", "reason": "x"}"#,
            "invalid-input",
        ),
        ("dba-breakglass", r#"{"reason": "x"}"#, "invalid-input"),
        ("dba-breakglass", r#"{"for": "5m"}"#, "invalid-input"),
    ] {
        let a = ask(role, params);
        assert_eq!(
            (a["verdict"].as_str(), a["reason"].as_str()),
            (Some("DENY"), Some(reason)),
            "{role} {params}: {a}"
        );
    }

    let asked = ask("dba-breakglass", wanted);
    assert_eq!(asked["verdict"], "APPROVAL_REQUIRED", "{asked}");
    let id = asked["approval_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!id.is_empty(), "{asked}");
    assert!(elevations(&env).is_empty(), "a request is not an elevation");
    Probe::in_cgroup(&agent, &["tcp", DB, &port]).expect_eperm("while the request is pending");
    assert_eq!(drop_table(&env, &agent)["verdict"], "DENY");

    // The agent approving its own request, as root in its cgroup: refused.
    let socket = env.socket.to_string_lossy().into_owned();
    let out = Probe::in_cgroup_cmd(
        &agent,
        &palisade_bin(),
        &["approve", &id, "--reason", "self", "--socket", &socket],
    );
    assert!(!out.status.success(), "an agent approved its own elevation");
    assert!(
        elevations(&env).is_empty(),
        "no elevation after the self-approval"
    );
    Probe::in_cgroup(&agent, &["tcp", DB, &port]).expect_eperm("after the self-approval");
    assert_eq!(
        db.accepted.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "nothing arrived"
    );

    // The operator approves: the elevation starts, in the approver's name.
    env.cli_ok(&["approve", &id, "--reason", "on call agrees"]);
    let listed = elevations(&env);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["role"], "dba-breakglass", "{listed:?}");
    Probe::in_cgroup(&agent, &["tcp", DB, &port]).expect_ok("after the approval");
    let d = drop_table(&env, &agent);
    assert_eq!(d["verdict"], "ALLOW", "{d}");
    let started = env.wait_audit("for the start", |r| {
        r["kind"] == "elevation" && r["verdict"] == "started"
    });
    assert_eq!(started["reason"], "approved-request", "{started}");
}

/// The operator takes the elevated role out of the policy while the daemon
/// is stopped (the incident is over, the role was too broad): the restarted
/// daemon ends the elevation, and the kernel's grant goes with it — also
/// after a revoke and restore — instead of staying open until its expiry.
#[test]
fn a_role_removed_while_the_daemon_was_stopped_closes_the_elevations_path() {
    if !root_or_skip("a_role_removed_while_the_daemon_was_stopped_closes_the_elevations_path") {
        return;
    }
    let db = TcpServer::start(DB);
    let port = db.port();
    let (env, d) = start("elevation-role-removed", &port);
    let agent = env.make_cgroup("ops.service");
    let connect = || Probe::in_cgroup(&agent, &["tcp", DB, &port]);
    let arrived = || {
        std::thread::sleep(Duration::from_millis(200));
        db.accepted.load(std::sync::atomic::Ordering::Relaxed)
    };

    let e = elevate(&env, "2h");
    let id = e["id"].as_str().unwrap_or_default().to_string();
    connect().expect_ok("control: during the elevation");
    let before = arrived();
    assert!(before >= 1, "control: nothing arrived during the elevation");

    drop(d);
    let without_role = policy(&env, &port).replace("    roles: [dba-breakglass]\n", "");
    assert_ne!(
        without_role,
        policy(&env, &port),
        "the role was not taken out"
    );
    env.write_policy(&without_role);
    let _d2 = DaemonProc::start(&env);
    let ended = env.wait_audit("for the end recorded after the restart", |r| {
        r["kind"] == "elevation" && r["verdict"] == "ended" && r["elevation"] == id.as_str()
    });
    assert_eq!(ended["reason"], "policy-no-longer-allows", "{ended}");
    assert!(elevations(&env).is_empty());
    connect().expect_eperm("after the restart without the role");
    env.cli_ok(&["revoke", "ops", "--reason", "test"]);
    env.cli_ok(&["restore", "ops"]);
    connect().expect_eperm("after revoke and restore");
    assert_eq!(
        arrived(),
        before,
        "the far end saw a connection after the role was removed"
    );
}

#[test]
fn an_elevations_file_the_daemon_did_not_write_is_set_aside_and_nothing_restored() {
    if !root_or_skip(
        "an_elevations_file_the_daemon_did_not_write_is_set_aside_and_nothing_restored",
    ) {
        return;
    }
    let db = TcpServer::start(DB);
    let port = db.port();
    let (env, mut d) = start("elevation-planted", &port);
    let agent = env.make_cgroup("ops.service");
    let connect = || Probe::in_cgroup(&agent, &["tcp", DB, &port]);
    elevate(&env, "10m");
    connect().expect_ok("the operator's elevation");
    d.kill9();
    // The file as an agent would plant it where it may write: the content
    // a genuine elevation's, the owner another user (uid 65534).
    let file = env.dir.join("elevations.json");
    let genuine = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    std::os::unix::fs::chown(&file, Some(65534), Some(65534)).unwrap_or_else(|e| panic!("{e}"));
    let d2 = DaemonProc::start(&env);
    let arrived = db.accepted.load(std::sync::atomic::Ordering::Relaxed);
    connect().expect_eperm("an elevation from a file the daemon did not write");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        db.accepted.load(std::sync::atomic::Ordering::Relaxed),
        arrived,
        "nothing arrived through the planted elevation"
    );
    assert!(elevations(&env).is_empty(), "{:?}", elevations(&env));
    let status = env.status();
    let warnings = status["health"]["warnings"].to_string();
    assert!(
        warnings.contains("not read: it is owned by uid 65534"),
        "the set-aside file is reported: {warnings}"
    );
    let aside: Vec<String> = std::fs::read_dir(&env.dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with("elevations.json.untrusted-"))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(aside.len(), 1, "kept aside for inspection: {aside:?}");
    drop(d2);

    // The control: the same content in a file of the daemon's own is
    // restored, and the agent gets through.
    std::fs::write(&file, &genuine).unwrap_or_else(|e| panic!("{e}"));
    let _d3 = DaemonProc::start(&env);
    assert_eq!(elevations(&env).len(), 1);
    connect().expect_ok("the control: the daemon's own file restores the elevation");
}
