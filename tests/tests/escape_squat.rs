//! An agent that binds an address or port the daemon needs first — the
//! gateway's address at a port the operator's next policy gives to a new
//! service, or the port of a service it serves now across a restart —
//! must not keep the rules the operator removes, nor keep the daemon from
//! starting. The one service whose port is taken is unavailable (and said
//! so) until the port is free; everything else applies.

use std::{
    process::{Child, Stdio},
    sync::atomic::Ordering,
    time::Duration,
};

use palisade_tests::{
    Probe, TcpServer,
    gateway::{agent, exec_unprivileged, request},
    gateway_fixture::{Fixture, policy, start},
    wait_for,
};

/// `other-agent`, unprivileged, trying every 10 ms to listen on
/// `addr:port`, and holding it once it can (until killed).
fn squatter(f: &Fixture, addr: &str, port: u16) -> (Child, std::path::PathBuf) {
    // Outside the daemon's directories, which agents see read-only.
    let dir = std::env::temp_dir().join(format!("palisade-squat-{}-{}", std::process::id(), f.net));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .unwrap_or_else(|e| panic!("{e}"));
    let flag = dir.join(format!("squatting-{port}"));
    let _ = std::fs::remove_file(&flag);
    let code = format!(
        "import socket,time\nopen('{}.started','w').close()\nwhile True:\n    s=socket.socket()\n    try:\n        s.bind(('{addr}',{port}))\n        break\n    except OSError:\n        s.close()\n        time.sleep(0.01)\ns.listen(16)\nopen('{}','w').close()\ntime.sleep(120)\n",
        flag.display(),
        flag.display()
    );
    let child = exec_unprivileged(&f.env, "other-agent", "/usr/bin/python3", &["-c", &code])
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("squatter: {e}"));
    let started = flag.with_extension("started");
    wait_for(Duration::from_secs(10), || started.exists().then_some(()))
        .unwrap_or_else(|| panic!("the squatting agent did not start"));
    (child, flag)
}

fn holding(flag: &std::path::Path) {
    wait_for(Duration::from_secs(10), || flag.exists().then_some(()))
        .unwrap_or_else(|| panic!("the agent never held its port ({})", flag.display()));
}

/// The far end's count, once it has settled.
fn arrivals(far: &TcpServer) -> u64 {
    std::thread::sleep(Duration::from_millis(200));
    far.accepted.load(Ordering::Relaxed)
}

/// The fixture's policy, `other-agent` also allowed to reach `far`, and
/// with `service` (a YAML list item) added to the services.
fn with(f: &Fixture, far: Option<&TcpServer>, service: &str) -> String {
    let egress = far.map_or_else(String::new, |far| {
        format!(
            "    egress:\n      allow:\n        - {{cidr: {}, ports: [{}], protocol: tcp}}\n",
            far.addr.ip(),
            far.addr.port()
        )
    });
    let ca = f.env.dir.join("pki/ca.pem");
    policy(f.net, &ca, &f.secret_file, &egress).replacen(
        "services:\n",
        &format!("services:\n{service}"),
        1,
    )
}

#[test]
fn an_agent_holding_the_next_policys_port_does_not_keep_the_old_rules() {
    let Some(f) = start("gw-squat-reload") else {
        return;
    };
    let far = TcpServer::start(&format!("127.170.{}.3", f.net));
    let ip = far.addr.ip().to_string();
    let port = far.port();
    // The new service reuses the fixture's upstream on another gateway port.
    let pay2 = format!(
        "  - id: stripe2\n    url: https://upstream.test:8443\n    address: 127.170.{}.2:8443\n    ca_file: {}\n    port: 9002\n    routes:\n      - {{id: c2, method: GET, path: \"/v1/customers/{{id}}\", action: get_customer}}\n",
        f.net,
        f.env.dir.join("pki/ca.pem").display()
    );
    f.env.write_policy(&with(&f, Some(&far), ""));
    f.env.cli_ok(&["reload"]);
    Probe::enrolled(&f.env, "other-agent", &["tcp", &ip, &port])
        .expect_ok("control: the rule allows it");
    let arrived = arrivals(&far);
    assert!(arrived >= 1, "control: nothing arrived at the far end");

    let (mut squatter, flag) = squatter(&f, &f.gateway(), 9002);
    holding(&flag);
    // The operator removes the rule and adds a service on the held port.
    f.env.write_policy(&with(&f, None, &pay2));
    let out = f.env.cli(&["reload"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the reload applies: {said}");
    assert!(
        said.contains("9002"),
        "the reload says the port is taken: {said}"
    );
    Probe::enrolled(&f.env, "other-agent", &["tcp", &ip, &port])
        .expect_eperm("after the reload removed the rule");
    let status = f.env.cli_ok(&["status"]);
    assert!(
        status.contains("9002"),
        "status names the unavailable service: {status}"
    );

    // Once the agent lets go, the service is served and open to agents.
    let _ = squatter.kill();
    let _ = squatter.wait();
    let base2 = format!("http://{}:9002", f.gateway());
    let served = wait_for(Duration::from_secs(15), || {
        let out = agent(
            &f.env,
            "finance-agent",
            "requests",
            &base2,
            &[request("GET", "/v1/customers/c9")],
        );
        // The gateway answers, with its own refusal (finance-agent has no
        // rule for stripe2): the port is the gateway's again.
        (out[0]["status"] == 403 && out[0]["body"].to_string().contains("decision_id"))
            .then_some(())
    });
    assert!(
        served.is_some(),
        "stripe2 never served after the port came free"
    );
    assert_eq!(
        arrivals(&far),
        arrived,
        "the far end saw a connection after the rule was removed"
    );
}

#[test]
fn an_agent_holding_a_service_port_across_a_restart_does_not_stop_the_daemon() {
    let Some(mut f) = start("gw-squat-restart") else {
        return;
    };
    let far = TcpServer::start(&format!("127.170.{}.3", f.net));
    // other-agent may not reach `far` (no rule): the restarted daemon must
    // still say so.
    // The agent tries for the service's port while the daemon runs, and
    // gets it while the operator restarts the daemon.
    let (mut squatter, flag) = squatter(&f, &f.gateway(), 9001);
    f.restart_with(|_| holding(&flag));
    Probe::enrolled(
        &f.env,
        "other-agent",
        &["tcp", &far.addr.ip().to_string(), &far.port()],
    )
    .expect_eperm("denied by the restarted daemon");
    assert_eq!(
        far.accepted.load(Ordering::Relaxed),
        0,
        "the far end saw a connection"
    );
    let status = f.env.cli_ok(&["status"]);
    assert!(
        status.contains("9001"),
        "status names the unavailable service: {status}"
    );
    let _ = squatter.kill();
    let _ = squatter.wait();
    let served = wait_for(Duration::from_secs(15), || {
        let out = agent(
            &f.env,
            "finance-agent",
            "requests",
            &f.base(),
            &[request("GET", "/v1/customers/c9")],
        );
        (out[0]["status"] == 200).then_some(())
    });
    assert!(
        served.is_some(),
        "the service never came back after the port came free"
    );
}
