//! Connections do not outlive the permission they were opened under. An
//! agent (root and unprivileged) streams TCP and connected UDP to listeners
//! in a namespace the test creates; when the permission ends — a reload
//! removes the rule, a just-in-time grant expires (with the daemon frozen:
//! the kernel ends it alone), an operator ends an elevation early — the far
//! end stops receiving at once, while a stream the policy still allows goes
//! on (the control).
//!
//! Addresses: one namespace per test, `10.117.0.0/24` to `10.119.0.0/24`,
//! listeners on `.2` ports 95xx.

use std::{thread, time::Duration};

use palisade_tests::{
    DaemonProc, TestEnv,
    capture::{Received, Sink, exec_probe, exec_stream, now_ns},
    netns::NetNs,
    probe::{Outcome, RpcAs, rpc},
    root_or_skip,
};

/// Packets already on the wire when the permission ends may land a moment
/// later.
const GRACE_NS: u128 = 150_000_000;

#[track_caller]
fn stopped_by(seen: &std::collections::BTreeMap<String, Received>, key: &str, at: u128) {
    let r = seen
        .get(key)
        .copied()
        .unwrap_or_else(|| panic!("nothing arrived on {key} while allowed: {seen:?}"));
    assert!(r.first_ns < at, "{key} only started after the end: {r:?}");
    assert!(
        r.last_ns < at + GRACE_NS,
        "{key}: data arrived {} ms after the permission ended",
        (r.last_ns - at) / 1_000_000
    );
}

#[track_caller]
fn went_on(seen: &std::collections::BTreeMap<String, Received>, key: &str, at: u128) {
    let r = seen.get(key).copied().unwrap_or_default();
    assert!(
        r.last_ns > at + 1_000_000_000,
        "the control {key} stopped too: {r:?} (end at {at})"
    );
}

#[track_caller]
fn udp_refused(o: &Outcome, what: &str) {
    assert!(o.ok(), "{what}: {}", o.0);
    assert_eq!(
        o.0["udp_errno"],
        i64::from(libc::EPERM),
        "{what}: the cut UDP socket kept sending: {}",
        o.0
    );
}

#[track_caller]
fn unhindered(o: &Outcome, what: &str) {
    assert!(
        o.ok() && o.0["tcp_errno"].is_null() && o.0["udp_errno"].is_null(),
        "{what}: {}",
        o.0
    );
}

fn signal(d: &DaemonProc, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid() as i32), sig)
        .unwrap_or_else(|e| panic!("{sig}: {e}"));
}

fn join(h: thread::JoinHandle<Outcome>, what: &str) -> Outcome {
    h.join().unwrap_or_else(|_| panic!("{what} stream"))
}

fn reload_policy(window: bool) -> String {
    let window = if window {
        "        - {id: window, cidr: 10.117.0.2, ports: [9501, 9502, 9511, 9512]}\n"
    } else {
        ""
    };
    format!(
        "version: 1
identities:
  - id: agent
    egress:
      allow:
{window}        - {{id: steady, cidr: 10.117.0.2, ports: [9503, 9513]}}
"
    )
}

#[test]
fn a_reload_that_removes_the_rule_cuts_open_connections() {
    if !root_or_skip("a_reload_that_removes_the_rule_cuts_open_connections") {
        return;
    }
    const HOST: &str = "10.117.0.2";
    let ns = NetNs::new("pend", 117);
    let env = TestEnv::new("pend-reload", &reload_policy(true));
    let _d = DaemonProc::start(&env);
    let sink = Sink::start(&ns, HOST, &[9501, 9502, 9503], &[9511, 9512, 9513], 8000);
    let root = exec_stream(&env.socket, "agent", false, HOST, 9501, 9511, 6000);
    let unprivileged = exec_stream(&env.socket, "agent", true, HOST, 9502, 9512, 6000);
    let steady = exec_stream(&env.socket, "agent", false, HOST, 9503, 9513, 6000);
    thread::sleep(Duration::from_millis(1000));
    env.write_policy(&reload_policy(false));
    env.cli_ok(&["reload"]);
    let reloaded_at = now_ns();
    let (root, unprivileged, steady) = (
        join(root, "root"),
        join(unprivileged, "unprivileged"),
        join(steady, "steady"),
    );
    let seen = sink.finish();

    udp_refused(&root, "root");
    udp_refused(&unprivileged, "unprivileged");
    unhindered(&steady, "the rule the reload kept");
    for key in ["tcp/9501", "udp/9511", "tcp/9502", "udp/9512"] {
        stopped_by(&seen, key, reloaded_at);
    }
    for key in ["tcp/9503", "udp/9513"] {
        went_on(&seen, key, reloaded_at);
    }
    let ev = env.wait_audit("for the cut connection", |e| {
        e["hook"] == "egress" && e["reason"] == "permission-ended" && e["dst_port"] == 9501
    });
    assert_eq!(ev["verdict"], "deny", "{ev}");
}

#[test]
fn a_grant_that_expires_cuts_what_it_opened_even_with_the_daemon_frozen() {
    if !root_or_skip("a_grant_that_expires_cuts_what_it_opened_even_with_the_daemon_frozen") {
        return;
    }
    const HOST: &str = "10.118.0.2";
    let ns = NetNs::new("pgrant", 118);
    let env = TestEnv::new(
        "pend-grant",
        "version: 1
identities:
  - id: agent
    egress:
      allow:
        - {id: telemetry, cidr: 10.118.0.2, ports: [9531, 9532], protocol: udp}
      grantable:
        - {id: window, cidr: 10.118.0.2, ports: [9521, 9522], protocol: tcp, max_ttl: 1m}
",
    );
    let d = DaemonProc::start(&env);
    let granted = rpc(
        &env,
        RpcAs::Identity("agent"),
        &["egress", HOST, "9521,9522", "2"],
    );
    let expires_at = now_ns() + 2_000_000_000;
    assert_eq!(granted["granted"], true, "{granted}");
    let sink = Sink::start(&ns, HOST, &[9521, 9522], &[9531, 9532], 8000);
    let root = exec_stream(&env.socket, "agent", false, HOST, 9521, 9531, 6000);
    let unprivileged = exec_stream(&env.socket, "agent", true, HOST, 9522, 9532, 6000);
    // Both enrolled before the daemon is frozen (`exec` asks the daemon).
    env.wait_enrolments("agent", 2);
    // The kernel ends the grant by itself.
    signal(&d, nix::sys::signal::Signal::SIGSTOP);
    let (root, unprivileged) = (join(root, "root"), join(unprivileged, "unprivileged"));
    signal(&d, nix::sys::signal::Signal::SIGCONT);
    let seen = sink.finish();

    // The UDP streams, allowed by a rule, are the control.
    unhindered(&root, "root");
    unhindered(&unprivileged, "unprivileged");
    for key in ["tcp/9521", "tcp/9522"] {
        stopped_by(&seen, key, expires_at);
    }
    for key in ["udp/9531", "udp/9532"] {
        went_on(&seen, key, expires_at);
    }
    env.wait_audit("for the connection the expired grant opened", |e| {
        e["hook"] == "egress" && e["reason"] == "permission-ended" && e["dst_port"] == 9521
    });
}

#[test]
fn an_elevation_ended_early_cuts_what_it_opened() {
    if !root_or_skip("an_elevation_ended_early_cuts_what_it_opened") {
        return;
    }
    const HOST: &str = "10.119.0.2";
    let ns = NetNs::new("pelev", 119);
    let env = TestEnv::new(
        "pend-elevation",
        "version: 1
roles:
  - id: dba-breakglass
    elevated: true
    egress:
      allow:
        - {id: prod-db, cidr: 10.119.0.2, ports: [9541, 9542], protocol: tcp}
identities:
  - id: ops
    roles: [dba-breakglass]
    egress:
      allow:
        - {id: metrics, cidr: 10.119.0.2, ports: [9551, 9552], protocol: udp}
",
    );
    let _d = DaemonProc::start(&env);
    let out = env.cli_ok(&[
        "elevate",
        "ops",
        "--role",
        "dba-breakglass",
        "--for",
        "10m",
        "--reason",
        "INC-1",
        "--json",
    ]);
    let elevation: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("elevate --json {out:?}: {e}"));
    let id = elevation["id"].as_str().unwrap_or_default().to_string();
    let sink = Sink::start(&ns, HOST, &[9541, 9542], &[9551, 9552], 8000);
    let root = exec_stream(&env.socket, "ops", false, HOST, 9541, 9551, 6000);
    let unprivileged = exec_stream(&env.socket, "ops", true, HOST, 9542, 9552, 6000);
    thread::sleep(Duration::from_millis(1000));
    env.cli_ok(&["elevate", "--end", &id, "--reason", "incident over"]);
    let ended_at = now_ns();
    let (root, unprivileged) = (join(root, "root"), join(unprivileged, "unprivileged"));
    let seen = sink.finish();

    unhindered(&root, "root");
    unhindered(&unprivileged, "unprivileged");
    for key in ["tcp/9541", "tcp/9542"] {
        stopped_by(&seen, key, ended_at);
    }
    for key in ["udp/9551", "udp/9552"] {
        went_on(&seen, key, ended_at);
    }
    env.wait_audit("for the connection the elevation opened", |e| {
        e["hook"] == "egress" && e["reason"] == "permission-ended" && e["identity"] == "ops"
    });
}

/// A connected UDP socket cannot be made to look like it talks somewhere
/// allowed: the agent keeps "connecting" it to an allowed address with a
/// family the kernel then refuses (the connect hook sees the allowed
/// address, the socket stays connected to its old peer). After a reload
/// removes the rule, its datagrams to the old peer stop all the same, for
/// root and unprivileged agents; before, they arrive (the control).
#[test]
fn a_refused_connect_cannot_keep_a_socket_whose_rule_is_gone() {
    if !root_or_skip("a_refused_connect_cannot_keep_a_socket_whose_rule_is_gone") {
        return;
    }
    const HOST: &str = "10.116.0.2";
    let ns = NetNs::new("pstale", 116);
    let policy = |window: bool| {
        let window = if window {
            "        - {id: window, cidr: 10.116.0.2, ports: [9561, 9562]}\n"
        } else {
            ""
        };
        format!(
            "version: 1\nidentities:\n  - id: agent\n    egress:\n      allow:\n{window}        - {{id: decoy, cidr: 10.116.0.2, ports: [9569]}}\n"
        )
    };
    let env = TestEnv::new("pend-stale", &policy(true));
    let _d = DaemonProc::start(&env);
    let sink = Sink::start(&ns, HOST, &[], &[9561, 9562, 9569], 8000);
    let stale = |user: bool, port: &str| {
        exec_probe(
            &env.socket,
            "agent",
            user,
            &["udp-stale", HOST, port, HOST, "9569", "6000"],
        )
    };
    let root = stale(false, "9561");
    let unprivileged = stale(true, "9562");
    thread::sleep(Duration::from_millis(1000));
    env.write_policy(&policy(false));
    env.cli_ok(&["reload"]);
    let reloaded_at = now_ns();
    let (root, unprivileged) = (join(root, "root"), join(unprivileged, "unprivileged"));
    let seen = sink.finish();
    for (o, what) in [(&root, "root"), (&unprivileged, "unprivileged")] {
        assert!(
            o.0["refused_connects"].as_u64().unwrap_or(0) > 0,
            "{what}: the decoy connects were not even tried: {}",
            o.0
        );
        udp_refused(o, what);
    }
    for key in ["udp/9561", "udp/9562"] {
        stopped_by(&seen, key, reloaded_at);
    }
    assert!(
        seen.get("udp/9569").is_none_or(|r| r.bytes == 0),
        "{seen:?}"
    );
}

/// A datagram begun under `UDP_CORK` while its destination is allowed is
/// judged by the sendmsg hook at that first send; the kernel appends later
/// data and sends it at uncork without judging anything again. Once a
/// reload removes the rule, such a datagram never arrives — unconnected,
/// or sent with `sendto` from a socket connected to an address that stays
/// allowed — for root and unprivileged agents, while the same corked
/// datagram to a destination still allowed arrives (the control).
#[test]
fn a_datagram_corked_while_allowed_does_not_leave_after_the_rule_is_gone() {
    if !root_or_skip("a_datagram_corked_while_allowed_does_not_leave_after_the_rule_is_gone") {
        return;
    }
    const HOST: &str = "10.117.0.2";
    let ns = NetNs::new("pcork", 117);
    let policy = |window: bool| {
        let window = if window {
            "        - {id: window, cidr: 10.117.0.2, ports: [9581, 9582, 9583, 9584]}\n"
        } else {
            ""
        };
        format!(
            "version: 1\nidentities:\n  - id: agent\n    egress:\n      allow:\n{window}        - {{id: steady, cidr: 10.117.0.2, ports: [9588, 9589]}}\n"
        )
    };
    let env = TestEnv::new("pend-cork", &policy(true));
    let _d = DaemonProc::start(&env);
    let sink = Sink::start(&ns, HOST, &[], &[9581, 9582, 9583, 9584, 9588, 9589], 10000);
    let go = env.dir.join("go");
    let go_arg = go.to_str().unwrap_or_default().to_string();
    let cork = |user: bool, port: &str, connect: &str| {
        exec_probe(
            &env.socket,
            "agent",
            user,
            &["udp-cork", HOST, port, connect, &go_arg],
        )
    };
    let corked = [
        ("root, unconnected", cork(false, "9581", "0")),
        ("unprivileged, unconnected", cork(true, "9582", "0")),
        ("root, connected elsewhere", cork(false, "9583", "9589")),
        (
            "unprivileged, connected elsewhere",
            cork(true, "9584", "9589"),
        ),
    ];
    let control = [
        ("root, control", cork(false, "9588", "0")),
        ("unprivileged, control", cork(true, "9589", "0")),
    ];
    env.wait_enrolments("agent", 6);
    // Each has begun its datagram (the sendmsg hook allowed it).
    thread::sleep(Duration::from_millis(500));
    env.write_policy(&policy(false));
    env.cli_ok(&["reload"]);
    std::fs::write(&go, "").unwrap_or_else(|e| panic!("{e}"));
    for (what, h) in corked.into_iter().chain(control) {
        let o = join(h, what);
        assert!(o.ok(), "{what}: {}", o.0);
    }
    let seen = sink.finish();
    for key in ["udp/9581", "udp/9582", "udp/9583", "udp/9584"] {
        assert!(
            seen.get(key).is_none_or(|r| r.bytes == 0),
            "{key}: a datagram corked before the reload arrived after it: {seen:?}"
        );
    }
    for key in ["udp/9588", "udp/9589"] {
        assert!(
            seen.get(key).is_some_and(|r| r.bytes > 0),
            "{key}: the control's corked datagram did not arrive: {seen:?}"
        );
    }
    let ended = env
        .audit_events()
        .into_iter()
        .filter(|e| e["kind"] == "network" && e["reason"] == "permission-ended")
        .count();
    assert!(ended >= 1, "no permission-ended record");
}
