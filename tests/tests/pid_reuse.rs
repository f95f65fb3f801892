//! The pid-reuse attack on the API (security review, item 5): an enrolled
//! agent connects, hands the connection to a child and exits; once another
//! process gets its pid, the child calls on the old connection hoping to
//! be taken for that process — an operator (root, not enrolled) who can
//! approve and revoke, or an agent of another identity. Every such call
//! must be refused and change nothing, with the connection pinned by a
//! pidfd (`SO_PEERPIDFD`) and by the pid's start time (older kernels).

use std::{path::Path, process::Command};

use palisade_tests::{
    DaemonProc, Probe, TcpServer, TestEnv,
    probe::{RpcAs, enter_cgroup, rpc},
    root_or_skip,
    session::{Reaped, Session, SessionOptions, spawn_at_pid},
};
use serde_json::{Value, json};

/// `nogroup` on Debian: the unprivileged agent's uid and gid.
const NOBODY: (u32, u32) = (65534, 65534);

fn policy(env: &TestEnv, crm_port: u16) -> String {
    format!(
        r#"version: 1
label: pid-reuse
identities:
  - id: payments
    selectors:
      - cgroup: {payments}
    tools:
      allow:
        - {{id: payments, tool: stripe, actions: [create_payment], approval_if: params.amount > 1000}}
  - id: support
    selectors:
      - cgroup: {support}
    egress:
      grantable:
        - {{id: crm, cidr: 127.120.0.2, ports: [{crm_port}], protocol: tcp, max_ttl: 1m}}
    tools:
      allow:
        - {{id: replies, tool: zendesk, actions: [reply]}}
"#,
        payments = env.selector_path("payments.service"),
        support = env.selector_path("support.service"),
    )
}

fn cgroup_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/cgroup: {e}"))
}

fn refused_as_exited(answer: &Value, what: &str) {
    assert_eq!(answer["ok"], false, "{what}: was accepted: {answer}");
    assert_eq!(answer["code"], "Unauthenticated", "{what}: {answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .contains("has exited"),
        "{what}: {answer}"
    );
}

fn count(env: &TestEnv, pred: impl Fn(&Value) -> bool) -> usize {
    env.audit_events().into_iter().filter(|e| pred(e)).count()
}

/// Wait until the trail holds `n` refusals of calls made as `pid`.
fn wait_refusals(env: &TestEnv, pid: u32, n: usize) {
    let seen = palisade_tests::wait_for(std::time::Duration::from_secs(5), || {
        (count(env, |e| e["reason"] == "caller-exited" && e["pid"] == pid) >= n).then_some(())
    });
    assert!(seen.is_some(), "{n} refusals of pid {pid} recorded");
}

/// A process that sits still as `pid`, in `cgroup` if given.
fn sleeper_at(pid: u32, cgroup: Option<&Path>) -> Reaped {
    let mut cmd = Command::new("sleep");
    cmd.arg("120");
    if let Some(cg) = cgroup {
        enter_cgroup(&mut cmd, cg);
    }
    spawn_at_pid(pid, &mut cmd)
}

/// The tests set the kernel's next pid: one at a time in this binary.
static PIDS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn attack(peer_pin: &str) {
    let _serial = PIDS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let crm = TcpServer::start("127.120.0.2");
    let env = TestEnv::new(&format!("pid-reuse-{peer_pin}"), "version: 1\n");
    let payments = env.make_cgroup("payments.service");
    let support = env.make_cgroup("support.service");
    let host = env.make_cgroup("host.scope");
    env.write_policy(&policy(&env, crm.addr.port()));
    // Agents running as nobody reach the socket through its group.
    env.write_config(&format!(
        "socket_group: nogroup\napi:\n  peer_pin: {peer_pin}\n"
    ));
    let _d = DaemonProc::start(&env);

    // A payment waiting for a human: what the attacker wants approved.
    let asked = rpc(
        &env,
        RpcAs::Cgroup(&payments),
        &[
            "decide",
            "none",
            "stripe",
            "create_payment",
            r#"{"amount": 9000}"#,
        ],
    );
    assert_eq!(asked["verdict"], "APPROVAL_REQUIRED", "{asked}");
    let approval = asked["approval_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // --- A root agent hoping to become an operator ---------------------
    let mut s = Session::start(
        &env.socket,
        &SessionOptions {
            cgroup: Some(&payments),
            handoff: true,
            ..SessionOptions::default()
        },
    );
    // While the agent that connected lives, the child speaks as it: an
    // agent, and no operator.
    let control = s.call(&json!({"op": "decide", "tool": "stripe", "action": "create_payment", "params": {"amount": 10}}));
    assert_eq!(
        control["verdict"], "ALLOW",
        "the handed-over connection before the exit: {control}"
    );
    let as_agent = s.call(&json!({"op": "resolve", "id": approval, "approve": true}));
    assert_eq!(
        as_agent["code"], "PermissionDenied",
        "an agent approving: {as_agent}"
    );

    let freed = s.release_parent();
    // A host process, root and not enrolled, gets the agent's pid.
    let operator_like = sleeper_at(freed, Some(&host));
    let host_cgroup = cgroup_of(freed);
    let calls = [
        (
            "approve",
            json!({"op": "resolve", "id": approval, "approve": true}),
        ),
        ("revoke", json!({"op": "revoke", "identity": "support"})),
        ("enroll", json!({"op": "enroll", "identity": "payments"})),
        ("list approvals", json!({"op": "list_approvals"})),
        (
            "decide",
            json!({"op": "decide", "tool": "stripe", "action": "create_payment", "params": {"amount": 10}}),
        ),
        ("issue a token", json!({"op": "issue"})),
    ];
    for (what, cmd) in &calls {
        refused_as_exited(
            &s.call(cmd),
            &format!("root agent, pid reused by a host process: {what}"),
        );
    }
    // Nothing happened: the approval still waits, support is not revoked,
    // the host process was not moved.
    let pending = env.cli_ok(&["approvals", "--json"]);
    assert!(
        pending.contains(&approval),
        "the approval is still pending: {pending}"
    );
    let status = env.status();
    let support_status = status["identities"]
        .as_array()
        .and_then(|ids| ids.iter().find(|i| i["id"] == "support"))
        .cloned()
        .unwrap_or_default();
    assert_ne!(
        support_status["killed"], true,
        "support was revoked: {status}"
    );
    assert_eq!(cgroup_of(freed), host_cgroup, "the host process was moved");
    // Records are written in order: once the refusals are in the trail,
    // anything the calls had done would be too.
    wait_refusals(&env, freed, calls.len());
    assert_eq!(
        count(&env, |e| e["kind"] == "approval"
            && e["verdict"] == "approved"),
        0
    );
    assert_eq!(count(&env, |e| e["kind"] == "kill_switch"), 0);
    assert_eq!(count(&env, |e| e["kind"] == "enrolment"), 0);
    // The child itself, on a connection of its own, is what it is: the
    // agent, with no operator rights.
    let own = s.call(&json!({"op": "decide", "fresh": true, "tool": "stripe", "action": "create_payment", "params": {"amount": 10}}));
    assert_eq!(own["verdict"], "ALLOW", "the child's own connection: {own}");
    let own_approve =
        s.call(&json!({"op": "resolve", "fresh": true, "id": approval, "approve": true}));
    assert_eq!(own_approve["code"], "PermissionDenied", "{own_approve}");
    drop(operator_like);
    drop(s);
    // Control: a real operator approves the same request.
    env.cli_ok(&["approve", &approval, "--reason", "checked"]);

    // --- An unprivileged agent hoping to become another identity -------
    let mut s = Session::start(
        &env.socket,
        &SessionOptions {
            cgroup: Some(&payments),
            creds: Some(NOBODY),
            handoff: true,
        },
    );
    let control = s.call(&json!({"op": "decide", "tool": "stripe", "action": "create_payment", "params": {"amount": 10}}));
    assert_eq!(
        control["verdict"], "ALLOW",
        "unprivileged, before the exit: {control}"
    );
    let freed = s.release_parent();
    // An agent of another identity gets the pid.
    let other_agent = sleeper_at(freed, Some(&support));
    let crm_port = crm.addr.port();
    let calls = [
        (
            "decide as support",
            json!({"op": "decide", "tool": "zendesk", "action": "reply", "params": {}}),
        ),
        ("issue support's token", json!({"op": "issue"})),
        (
            "support's grant",
            json!({"op": "egress", "destination": "127.120.0.2", "port": crm_port}),
        ),
        ("list approvals", json!({"op": "list_approvals"})),
    ];
    for (what, cmd) in &calls {
        refused_as_exited(
            &s.call(cmd),
            &format!("unprivileged agent, pid reused by support: {what}"),
        );
    }
    wait_refusals(&env, freed, calls.len());
    // At the far end: no grant opened the CRM to support.
    let crm_port = crm_port.to_string();
    Probe::in_cgroup(&support, &["tcp", "127.120.0.2", &crm_port])
        .expect_eperm("support after the attacker's grant request");
    assert_eq!(
        count(&env, |e| e["kind"] == "grant"),
        0,
        "no grant recorded"
    );
    assert_eq!(
        count(&env, |e| e["kind"] == "decision"
            && e["identity"] == "support"),
        0,
        "nothing was decided as support"
    );
    drop(other_agent);
    drop(s);
    // Control: support's own request opens the path.
    let granted = rpc(
        &env,
        RpcAs::Cgroup(&support),
        &["egress", "127.120.0.2", &crm_port, "30"],
    );
    assert_eq!(granted["granted"], true, "{granted}");
    Probe::in_cgroup(&support, &["tcp", "127.120.0.2", &crm_port])
        .expect_ok("support with its own grant");
    let seen = palisade_tests::wait_for(std::time::Duration::from_secs(5), || {
        (crm.accepted.load(std::sync::atomic::Ordering::Relaxed) >= 1).then_some(())
    });
    assert!(seen.is_some(), "the CRM saw the granted connection");
}

#[test]
fn a_reused_pid_gives_a_handed_over_connection_nothing_pidfd() {
    if !root_or_skip("a_reused_pid_gives_a_handed_over_connection_nothing_pidfd") {
        return;
    }
    attack("auto");
}

#[test]
fn a_reused_pid_gives_a_handed_over_connection_nothing_start_time() {
    if !root_or_skip("a_reused_pid_gives_a_handed_over_connection_nothing_start_time") {
        return;
    }
    attack("start-time");
}
