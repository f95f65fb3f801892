//! The operator over TCP: an enrolled process is never an operator, on the
//! Unix socket or the loopback TCP listener, whatever token it holds;
//! `palisade exec` does not hand the agent the operator token of its
//! caller's environment; and the kernel keeps agents off the API's TCP port
//! unless their policy says `confinement.api_tcp: true`. The far end is the
//! daemon: its state (the kill switch) and its audit trail show nothing
//! done for the agent, and the same call from an operator process works.
//!
//! Addresses: the API listens on `127.100.0.1`.

use std::process::{Command, Output};

use palisade_tests::{DaemonProc, Probe, TestEnv, palisade_bin, root_or_skip};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn agents_are_never_operators_over_tcp_and_cannot_reach_the_port() {
    if !root_or_skip("agents_are_never_operators_over_tcp_and_cannot_reach_the_port") {
        return;
    }
    let env = TestEnv::new(
        "optcp",
        "version: 1
identities:
  - id: agent
    egress:
      allow: [{cidr: 127.100.0.0/16}]
  - id: trusted
    confinement: {api_tcp: true}
    egress:
      allow: [{cidr: 127.100.0.0/16}]
",
    );
    env.write_config("api:\n  tcp: 127.100.0.1:0\n");
    let _d = DaemonProc::start(&env);
    let addr = env.status()["health"]["api_tcp_address"]
        .as_str()
        .unwrap_or_else(|| panic!("no TCP listener"))
        .to_string();
    let port = addr.rsplit(':').next().unwrap_or_default().to_string();
    let url = format!("http://{addr}");
    let minted = Command::new(palisade_bin())
        .args(["keys", "operator-token", "--name", "oncall", "--file"])
        .arg(env.dir.join("keys.yaml"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(minted.status.success(), "{}", text(&minted));
    let token = String::from_utf8_lossy(&minted.stdout).trim().to_string();

    // `palisade exec` with the token in its environment: the agent does
    // not get it.
    let out = Command::new(palisade_bin())
        .arg("exec")
        .arg("--socket")
        .arg(&env.socket)
        .args(["--identity", "agent", "--"])
        .arg(Probe::bin())
        .arg("confinement")
        .env("PALISADE_OPERATOR_TOKEN", &token)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        text(&out).contains("\"operator_token_in_env\":false"),
        "the agent got the operator token: {}",
        text(&out)
    );

    // An agent that found the token anyway: the kernel refuses the port,
    // by its address and by the unspecified one.
    for to in ["127.100.0.1", "0.0.0.0"] {
        Probe::enrolled(&env, "agent", &["tcp", to, &port]).expect_eperm("agent to the API port");
    }
    Probe::plain(&["tcp", "127.100.0.1", &port]).expect_ok("an unenrolled process reaches it");
    env.wait_audit("for the refused API port", |e| {
        e["reason"] == "api-port" && e["identity"] == "agent"
    });
    Probe::enrolled(
        &env,
        "agent",
        &["as-user", "65534", "tcp", "127.100.0.1", &port],
    )
    .expect_eperm("unprivileged agent to the API port");
    let as_agent_uid = |identity: &str, uid: Option<&str>, args: &[&str]| -> Output {
        Command::new(palisade_bin())
            .arg("exec")
            .arg("--socket")
            .arg(&env.socket)
            .args(["--identity", identity, "--"])
            .arg(Probe::bin())
            .args(uid.map_or_else(Vec::new, |u| vec!["as-user", u]))
            .args([
                "run",
                "/usr/bin/env",
                &format!("PALISADE_OPERATOR_TOKEN={token}"),
            ])
            .arg(palisade_bin())
            .args(args)
            .args(["--socket", &url])
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let as_agent = |identity: &str, args: &[&str]| as_agent_uid(identity, None, args);
    let o = as_agent("agent", &["revoke", "trusted"]);
    assert!(!o.status.success(), "agent revoked over TCP: {}", text(&o));
    assert!(text(&o).contains("cannot reach"), "{}", text(&o));
    // An identity allowed to reach the port holds a valid token: still an
    // agent, never an operator.
    let o = as_agent("trusted", &["revoke", "agent"]);
    assert!(
        !o.status.success(),
        "an agent revoked over TCP: {}",
        text(&o)
    );
    assert!(
        text(&o).contains("the caller is agent `trusted`"),
        "{}",
        text(&o)
    );
    let o = as_agent_uid("trusted", Some("65534"), &["revoke", "agent"]);
    assert!(
        !o.status.success(),
        "an unprivileged agent revoked over TCP: {}",
        text(&o)
    );
    assert!(
        text(&o).contains("the caller is agent `trusted`"),
        "{}",
        text(&o)
    );
    let o = as_agent("trusted", &["approvals", "--json"]);
    assert!(
        !o.status.success(),
        "an agent listed approvals over TCP: {}",
        text(&o)
    );
    assert!(
        text(&o).contains("the caller is agent `trusted`"),
        "{}",
        text(&o)
    );
    let killed = |id: &str| {
        env.status()["identities"]
            .as_array()
            .and_then(|ids| ids.iter().find(|i| i["id"] == id).cloned())
            .map(|i| i["killed"] == true)
            .unwrap_or(false)
    };
    assert!(
        !killed("agent") && !killed("trusted"),
        "a kill switch moved"
    );

    // The control: an operator process with the token, over TCP.
    let o = Command::new(palisade_bin())
        .args(["revoke", "agent", "--socket", &url])
        .env("PALISADE_OPERATOR_TOKEN", &token)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(o.status.success(), "operator revoke over TCP: {}", text(&o));
    assert!(killed("agent"), "the operator's revoke took effect");
}
