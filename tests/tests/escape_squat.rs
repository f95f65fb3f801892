//! An agent must not hold an address or port where the daemon serves
//! agents: the kernel refuses enrolled processes a bind to the gateway's
//! address, the DNS proxy range, or those ports on the unspecified address
//! (which would take the connections of other agents meant for the
//! gateway). What is left — a wildcard port that only the next policy gives
//! to a service, or a port a host program holds — costs that one service,
//! never the policy: the operator's reload applies, the daemon starts, the
//! port stays closed to agents until the gateway listens there itself.

use std::{
    process::{Child, Command, Stdio},
    sync::atomic::Ordering,
    time::Duration,
};

use palisade_tests::{
    Probe, TcpServer,
    gateway::{agent, exec, exec_unprivileged, request},
    gateway_fixture::{Fixture, policy, start},
    palisade_bin, wait_for,
};
use serde_json::Value;

/// Who holds the port.
#[derive(Clone, Copy, Debug)]
enum Holder {
    /// `other-agent`, unprivileged.
    Agent,
    /// `other-agent` as root, binding with `SO_REUSEADDR` and
    /// `SO_REUSEPORT` as well.
    RootAgent,
    /// A host program (not enrolled), unprivileged.
    Host,
}

/// A world-writable directory outside the daemon's (which agents see
/// read-only) for what the test's agents report.
fn shared_dir(f: &Fixture) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("palisade-squat-{}-{}", std::process::id(), f.net));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .unwrap_or_else(|e| panic!("{e}"));
    dir
}

/// `holder` trying every 10 ms to listen on `addr:port`, and holding it
/// once it can (until killed); every connection it accepts is counted in
/// the file `<flag>.accepted`.
fn squatter(f: &Fixture, holder: Holder, addr: &str, port: u16) -> (Held, std::path::PathBuf) {
    let flag = shared_dir(f).join(format!("squatting-{port}-{holder:?}"));
    for ext in ["", "started", "accepted"] {
        let _ = std::fs::remove_file(flag.with_extension(ext));
    }
    let reuse = if matches!(holder, Holder::RootAgent) {
        "        s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n        s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEPORT,1)\n"
    } else {
        ""
    };
    let code = format!(
        "import socket,time\nflag='{}'\nopen(flag+'.started','w').close()\nwhile True:\n    s=socket.socket(socket.AF_INET6 if ':' in '{addr}' else socket.AF_INET)\n    try:\n{reuse}        s.bind(('{addr}',{port}))\n        break\n    except OSError:\n        s.close()\n        time.sleep(0.01)\ns.listen(16)\nopen(flag,'w').close()\ns.settimeout(1)\nend=time.time()+120\nwhile time.time()<end:\n    try:\n        c,_=s.accept()\n    except OSError:\n        continue\n    open(flag+'.accepted','a').write('x')\n    c.close()\n",
        flag.display(),
    );
    let mut cmd = match holder {
        Holder::Agent => {
            exec_unprivileged(&f.env, "other-agent", "/usr/bin/python3", &["-c", &code])
        }
        Holder::RootAgent => exec(
            &f.env,
            "other-agent",
            std::path::Path::new("/usr/bin/python3"),
            &["-c", &code],
        ),
        Holder::Host => {
            let mut c = Command::new("/usr/bin/setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .args(["/usr/bin/python3", "-c", &code]);
            c
        }
    };
    let child = cmd
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("squatter: {e}"));
    let started = flag.with_extension("started");
    let held = Held(child);
    wait_for(Duration::from_secs(10), || started.exists().then_some(()))
        .unwrap_or_else(|| panic!("the squatter did not start"));
    (held, flag)
}

/// The squatter, stopped when the test ends (also when it fails); it
/// gives up by itself after two minutes.
struct Held(Child);

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn holding(flag: &std::path::Path) {
    wait_for(Duration::from_secs(10), || flag.exists().then_some(()))
        .unwrap_or_else(|| panic!("the squatter never held its port ({})", flag.display()));
}

/// Within 15 s, finance-agent's request through the gateway is served.
fn serves(f: &Fixture) -> bool {
    wait_for(Duration::from_secs(15), || {
        let out = agent(
            &f.env,
            "finance-agent",
            "requests",
            &f.base(),
            &[request("GET", "/v1/customers/c9")],
        );
        (out[0]["status"] == 200).then_some(())
    })
    .is_some()
}

/// Connections the squatter accepted.
fn taken(flag: &std::path::Path) -> usize {
    std::fs::read_to_string(flag.with_extension("accepted")).map_or(0, |s| s.len())
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
    // A port of its own per run: a wildcard bind conflicts with every
    // concurrent test's listener on that port.
    let port2 = 9100 + u16::try_from(f.net).unwrap_or(0);
    let pay2 = format!(
        "  - id: stripe2\n    url: https://upstream.test:8443\n    address: 127.170.{}.2:8443\n    ca_file: {}\n    port: {port2}\n    routes:\n      - {{id: c2, method: GET, path: \"/v1/customers/{{id}}\", action: get_customer}}\n",
        f.net,
        f.env.dir.join("pki/ca.pem").display()
    );
    f.env.write_policy(&with(&f, Some(&far), ""));
    f.env.cli_ok(&["reload"]);
    Probe::enrolled(&f.env, "other-agent", &["tcp", &ip, &port])
        .expect_ok("control: the rule allows it");
    let arrived = arrivals(&far);
    assert!(arrived >= 1, "control: nothing arrived at the far end");

    // The gateway's address is reserved; a wildcard bind of a port no
    // policy uses yet is not (an agent may listen on its own ports).
    let (squatter, flag) = squatter(&f, Holder::Agent, "0.0.0.0", port2);
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
        said.contains(&port2.to_string()),
        "the reload says the port is taken: {said}"
    );
    Probe::enrolled(&f.env, "other-agent", &["tcp", &ip, &port])
        .expect_eperm("after the reload removed the rule");
    let status = f.env.cli_ok(&["status"]);
    assert!(
        status.contains(&port2.to_string()),
        "status names the unavailable service: {status}"
    );
    // The squatter's wildcard listener would take connections to the
    // gateway's address at that port: the kernel keeps it closed to agents.
    Probe::enrolled(
        &f.env,
        "finance-agent",
        &["tcp", &f.gateway(), &port2.to_string()],
    )
    .expect_eperm("the gateway port another agent holds");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        taken(&flag),
        0,
        "the squatting agent took another agent's connection"
    );

    // Once the agent lets go, the service is served and open to agents.
    drop(squatter);
    let base2 = format!("http://{}:{port2}", f.gateway());
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
fn a_program_holding_a_service_port_across_a_restart_does_not_stop_the_daemon() {
    let Some(mut f) = start("gw-squat-restart") else {
        return;
    };
    let far = TcpServer::start(&format!("127.170.{}.3", f.net));
    // other-agent may not reach `far` (no rule): the restarted daemon must
    // still say so.
    // A host program tries for the service's port while the daemon runs,
    // and gets it while the operator restarts the daemon. (An agent cannot:
    // `agents_cannot_bind_where_the_daemon_serves_agents`.)
    let (squatter, flag) = squatter(&f, Holder::Host, &f.gateway(), 9001);
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
    drop(squatter);
    assert!(
        serves(&f),
        "the service never came back after the port came free"
    );
}

/// Bind attempts as `[family, address, port, "tcp"|"udp"]`; prints one
/// result per attempt (`ok` or the errno's name) as JSON.
const BINDS: &str = r#"
import errno, json, os, socket, sys, time
tries = json.loads(sys.argv[1])
go = sys.argv[2] if len(sys.argv) > 2 else None
if go:
    open(go + ".ready", "w").close()
    while not os.path.exists(go):
        time.sleep(0.01)
out = []
for fam, addr, port, typ in tries:
    s = socket.socket(socket.AF_INET6 if fam == 6 else socket.AF_INET,
                      socket.SOCK_STREAM if typ == "tcp" else socket.SOCK_DGRAM)
    try:
        s.bind((addr, port))
        out.append("ok")
    except OSError as e:
        out.append(errno.errorcode.get(e.errno, str(e.errno)))
    s.close()
# `IP:PORT:N`: N binds to IP at port 0 (the kernel picks the port, no bind
# hook sees it): did any get PORT?
if len(sys.argv) > 3:
    ip, want, n = sys.argv[3].split(":")
    took = False
    for _ in range(int(n)):
        s = socket.socket()
        try:
            s.bind((ip, 0))
            took = took or s.getsockname()[1] == int(want)
        except OSError:
            pass
        s.close()
    out.append("autobind-took-it" if took else "autobind-missed")
text = json.dumps(out)
if go:
    open(go + ".out", "w").write(text)
print(text)
"#;

fn binds(out: &std::process::Output) -> Vec<String> {
    assert!(
        out.status.success(),
        "bind attempts: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<String>>(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn agents_cannot_bind_where_the_daemon_serves_agents() {
    let Some(mut f) = start("gw-squat-bind") else {
        return;
    };
    // The daemon's loopback TCP API too (operators' tokens go there), at a
    // fixed port the kernel could pick for a program by itself.
    let fixed_api = 40000 + u16::try_from(f.net).unwrap_or(0);
    let _unreserve = Unreserve(fixed_api);
    f.env.write_config(&palisade_tests::gateway::config(
        f.net,
        &format!(
            "  max_mask_bytes: 1048576\napi:\n  tcp: 127.170.{}.4:{fixed_api}\n",
            f.net
        ),
    ));
    f.restart();
    let gw = f.gateway();
    let free = 9100 + u16::try_from(f.net).unwrap_or(0);
    let endpoint = |key: &str| -> (String, u16) {
        let a: std::net::SocketAddr = f.env.status()["health"][key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} in status"))
            .parse()
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        (a.ip().to_string(), a.port())
    };
    let (api_ip, api_port) = endpoint("api_tcp_address");
    let (metrics_ip, metrics_port) = endpoint("metrics_address");
    // Every one the daemon's: the service's port, any other port and
    // protocol of the gateway's address, the service's port on the
    // unspecified address (IPv4, and IPv6 which takes IPv4 too), the
    // gateway's address written as IPv4-mapped IPv6, a DNS proxy address,
    // the DNS port on the unspecified address; the TCP API's and the
    // metrics endpoint's address and port, and those ports on `0.0.0.0`.
    let refused: Vec<Value> = vec![
        serde_json::json!([4, gw, 9001, "tcp"]),
        serde_json::json!([4, gw, 0, "tcp"]),
        serde_json::json!([4, gw, 9999, "udp"]),
        serde_json::json!([4, "0.0.0.0", 9001, "tcp"]),
        serde_json::json!([6, "::", 9001, "tcp"]),
        serde_json::json!([6, format!("::ffff:{gw}"), 9001, "tcp"]),
        serde_json::json!([4, "127.53.0.7", 5353, "udp"]),
        serde_json::json!([4, "0.0.0.0", 53, "udp"]),
        serde_json::json!([4, api_ip, api_port, "tcp"]),
        serde_json::json!([4, "0.0.0.0", api_port, "tcp"]),
        serde_json::json!([6, "::", api_port, "tcp"]),
        serde_json::json!([6, "::1", api_port, "tcp"]),
        serde_json::json!([4, "127.0.0.1", api_port, "tcp"]),
        serde_json::json!([4, metrics_ip, metrics_port, "tcp"]),
        serde_json::json!([4, "0.0.0.0", metrics_port, "tcp"]),
    ];
    // Controls: an agent's own ports bind as before.
    let allowed: Vec<Value> = vec![
        serde_json::json!([4, "127.0.0.1", 0, "tcp"]),
        serde_json::json!([4, "0.0.0.0", 0, "udp"]),
        serde_json::json!([4, "0.0.0.0", free, "tcp"]),
        serde_json::json!([6, "::1", 0, "tcp"]),
    ];
    let all: Vec<Value> = refused.iter().chain(&allowed).cloned().collect();
    let arg = serde_json::to_string(&all).unwrap_or_default();
    let py = std::path::Path::new("/usr/bin/python3");
    for (who, out) in [
        (
            "unprivileged",
            exec_unprivileged(
                &f.env,
                "other-agent",
                "/usr/bin/python3",
                &["-c", BINDS, &arg],
            )
            .output(),
        ),
        (
            "root",
            exec(&f.env, "other-agent", py, &["-c", BINDS, &arg]).output(),
        ),
    ] {
        let got = binds(&out.unwrap_or_else(|e| panic!("{e}")));
        for (i, t) in all.iter().enumerate() {
            let want = if i < refused.len() { "EPERM" } else { "ok" };
            assert_eq!(got[i], want, "{who} agent binding {t}: {got:?}");
        }
    }
    let denials: Vec<Value> = f
        .env
        .audit_events()
        .into_iter()
        .filter(|e| e["reason"] == "daemon-address")
        .collect();
    assert!(
        !denials.is_empty(),
        "the refused binds are not in the trail"
    );

    // While the daemon restarts, the reservations stay: a root agent
    // waiting for that moment still cannot take the gateway's port.
    let go = shared_dir(&f).join("restart-go");
    let _ = std::fs::remove_file(&go);
    for ext in ["out", "ready"] {
        let _ = std::fs::remove_file(go.with_extension(ext));
    }
    let during = serde_json::to_string(&refused).unwrap_or_default();
    // And the kernel never picks the API's port for it: 150,000 binds to
    // port 0 of the API's address (about 99.5 % to get it once were it
    // not reserved: 28,232 ports in the range).
    assert_eq!(api_port, fixed_api);
    let autobind = format!("{api_ip}:{api_port}:150000");
    let mut waiting = exec(
        &f.env,
        "other-agent",
        py,
        &["-c", BINDS, &during, &go.display().to_string(), &autobind],
    )
    .stdout(Stdio::null())
    .spawn()
    .unwrap_or_else(|e| panic!("{e}"));
    wait_for(Duration::from_secs(10), || {
        go.with_extension("ready").exists().then_some(())
    })
    .unwrap_or_else(|| panic!("the waiting agent did not start"));
    f.restart_with(|_| {
        std::fs::write(&go, "").unwrap_or_else(|e| panic!("{e}"));
        let got = wait_for(Duration::from_secs(60), || {
            std::fs::read_to_string(go.with_extension("out")).ok()
        })
        .unwrap_or_else(|| panic!("the waiting agent did not report"));
        let mut got: Vec<String> = serde_json::from_str(&got).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            got.pop().as_deref(),
            Some("autobind-missed"),
            "the kernel gave the agent the API's port while no daemon ran"
        );
        assert!(
            got.iter().all(|r| r == "EPERM"),
            "binds while no daemon runs: {got:?}"
        );
    });
    let _ = waiting.wait();
    // Control: the restarted gateway serves its port.
    assert!(serves(&f), "the gateway did not serve after the restart");
}

/// A host program holding the TCP API's port costs that listener, not the
/// daemon: it starts, serves the Unix socket, and says what is missing.
#[test]
fn a_program_holding_the_api_tcp_port_does_not_stop_the_daemon() {
    let Some(mut f) = start("gw-squat-api") else {
        return;
    };
    let addr = format!("127.170.{}.6", f.net);
    let port = 9100 + u16::try_from(f.net).unwrap_or(0);
    let (holder, flag) = squatter(&f, Holder::Host, &addr, port);
    holding(&flag);
    f.env.write_config(&palisade_tests::gateway::config(
        f.net,
        &format!("  max_mask_bytes: 1048576\napi:\n  tcp: {addr}:{port}\n"),
    ));
    f.restart();
    let status = f.env.cli_ok(&["status"]);
    assert!(
        status.contains(&format!("api.tcp {addr}:{port}")),
        "status names the missing listener: {status}"
    );
    // The daemon serves: enforcement, the gateway and the Unix socket.
    assert!(serves(&f), "the gateway does not serve");

    // Agents wait for the port too, unprivileged and root, binding again
    // and again; the kernel keeps them off the daemon's port while the
    // host program holds it and after.
    let agents = [Holder::Agent, Holder::RootAgent].map(|h| squatter(&f, h, &addr, port));
    let bound = || {
        agents
            .iter()
            .find(|(_, flag)| flag.exists())
            .map(|(_, flag)| flag.display().to_string())
    };
    drop(holder);
    // The daemon takes its port once the host program lets go of it.
    let missing = format!("api.tcp {addr}:{port}: not listening");
    let back = wait_for(Duration::from_secs(20), || {
        if bound().is_some() {
            return Some(false);
        }
        (!f.env.cli_ok(&["status"]).contains(&missing)).then_some(true)
    });
    assert_eq!(
        bound(),
        None,
        "an agent bound the API's port once the host program let go of it"
    );
    assert_eq!(
        back,
        Some(true),
        "the API's TCP listener did not come back once the port was free"
    );
    assert!(
        f.env
            .cli_ok(&["status", "--json"])
            .contains(&format!("{addr}:{port}")),
        "status names the TCP listener's address"
    );
    // Still theirs to try while the daemon listens: neither gets it.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        bound(),
        None,
        "an agent bound the API's port beside the daemon"
    );
    drop(agents);
}

#[test]
fn agents_on_the_api_port_before_the_daemon_knew_it_are_evicted() {
    let Some(mut f) = start("gw-squat-early") else {
        return;
    };
    let addr = format!("127.170.{}.7", f.net);
    let port = 9200 + u16::try_from(f.net).unwrap_or(0);
    // While no configuration names the port, agents listen on it: one
    // unprivileged on the address the API will have, one root on `::1`
    // (where `localhost` may lead an operator).
    let mut agents = [(Holder::Agent, addr.as_str()), (Holder::RootAgent, "::1")]
        .map(|(h, a)| squatter(&f, h, a, port));
    for (_, flag) in &agents {
        holding(flag);
    }
    // And a third, given the listening socket by the host service that
    // made it (an identity that keeps inherited sockets): no identity
    // stamp on the socket, only agents holding it.
    let ca = f.env.dir.join("pki/ca.pem");
    f.env.write_policy(&policy(
        f.net,
        &ca,
        &f.secret_file,
        "  - id: keeper\n    confinement: {keep_inherited_sockets: true}\n",
    ));
    f.env.cli_ok(&["reload"]);
    let handed_flag = shared_dir(&f).join(format!("handed-{port}"));
    let mut handed = {
        use std::os::{fd::AsRawFd, unix::process::CommandExt};
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("the host service's listener: {e}"));
        let src = listener.as_raw_fd();
        let code = format!(
            "import socket\ns=socket.socket(fileno=3)\nwhile True:\n    c,_=s.accept()\n    open('{}','a').write('x')\n    c.close()\n",
            handed_flag.display()
        );
        let mut cmd = exec(
            &f.env,
            "keeper",
            std::path::Path::new("/usr/bin/python3"),
            &["-c", &code],
        );
        // SAFETY: dup2 and fcntl only, between fork and exec. (A socket
        // already at 3 keeps close-on-exec through dup2: cleared instead.)
        unsafe {
            cmd.pre_exec(move || {
                let r = if src == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(src, 3)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("the keeper agent: {e}"));
        // The host service lets go of its copy; the agent holds the port.
        std::thread::sleep(Duration::from_millis(500));
        drop(listener);
        Held(child)
    };
    f.env.write_config(&palisade_tests::gateway::config(
        f.net,
        &format!("  max_mask_bytes: 1048576\napi:\n  tcp: {addr}:{port}\n"),
    ));
    f.restart();
    // All three are gone, and the daemon listens.
    let ended = wait_for(Duration::from_secs(10), || {
        matches!(handed.0.try_wait(), Ok(Some(_))).then_some(())
    });
    assert!(
        ended.is_some(),
        "the agent given the host service's socket still runs"
    );
    for (held, flag) in &mut agents {
        let ended = wait_for(Duration::from_secs(10), || {
            matches!(held.0.try_wait(), Ok(Some(_))).then_some(())
        });
        assert!(
            ended.is_some(),
            "the agent on {} still runs",
            flag.display()
        );
    }
    // The operator's call, token and all, reaches the daemon; no agent
    // accepted a connection.
    operator_call_reaches_the_daemon(&f, &addr, port);
    assert!(!handed_flag.exists(), "the keeper accepted a connection");
    for (_, flag) in &agents {
        assert!(
            !flag.with_extension("accepted").exists(),
            "an agent accepted a connection on the API's port ({})",
            flag.display()
        );
    }
    let evictions = f
        .env
        .audit_events()
        .into_iter()
        .filter(|e| e["reason"] == "agent-on-api-port" && e["identity"] == "other-agent")
        .count();
    assert_eq!(evictions, 2, "the trail records each agent's socket");
    assert!(
        f.env
            .audit_events()
            .iter()
            .any(|e| e["reason"] == "agent-on-api-port" && e["identity"] == "keeper"),
        "the keeper's socket is not in the trail"
    );
    // From now on the kernel refuses them the port, on any address.
    let (_again, flag) = squatter(&f, Holder::RootAgent, "::1", port);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !flag.exists(),
        "an agent bound the API's port beside the daemon"
    );
}

#[test]
fn an_agent_keeping_the_api_port_in_flight_is_stopped() {
    let Some(mut f) = start("gw-squat-flight") else {
        return;
    };
    let addr = format!("127.170.{}.9", f.net);
    let port = 9250 + u16::try_from(f.net).unwrap_or(0);
    // Bound before any configuration names the port, then kept in flight
    // in a Unix socket's queue (no process holds it), taken back every few
    // milliseconds to listen and accept, and put back.
    let flag = shared_dir(&f).join(format!("flight-{port}"));
    let code = format!(
        "import socket,os,time,array\nflag='{flag}'\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('{addr}',{port}))\na,b=socket.socketpair()\ndef put(fd):\n    a.sendmsg([b'x'],[(socket.SOL_SOCKET,socket.SCM_RIGHTS,array.array('i',[fd]))])\ndef take():\n    m,anc,fl,ad=b.recvmsg(1,socket.CMSG_SPACE(4))\n    return array.array('i',anc[0][2][:4])[0]\nput(s.fileno())\ns.close()\nend=time.time()+120\nwhile time.time()<end:\n    fd=take()\n    try:\n        t=socket.socket(fileno=os.dup(fd))\n        t.setblocking(False)\n        t.listen(16)\n        open(flag,'w').close()\n        c,_=t.accept()\n        open(flag+'.accepted','a').write('x')\n        c.close()\n    except Exception:\n        pass\n    try:\n        t.close()\n    except Exception:\n        pass\n    put(fd)\n    os.close(fd)\n    time.sleep(0.003)\n",
        flag = flag.display()
    );
    let child = exec_unprivileged(&f.env, "other-agent", "/usr/bin/python3", &["-c", &code])
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("the agent: {e}"));
    let mut agent = Held(child);
    holding(&flag);
    f.env.write_config(&palisade_tests::gateway::config(
        f.net,
        &format!("  max_mask_bytes: 1048576\napi:\n  tcp: {addr}:{port}\n"),
    ));
    f.restart();
    let ended = wait_for(Duration::from_secs(15), || {
        matches!(agent.0.try_wait(), Ok(Some(_))).then_some(())
    });
    assert!(
        ended.is_some(),
        "the agent keeping the port in flight still runs"
    );
    operator_call_reaches_the_daemon(&f, &addr, port);
    assert!(
        !flag.with_extension("accepted").exists(),
        "the agent accepted a connection on the API's port"
    );
    assert!(
        f.env
            .audit_events()
            .iter()
            .any(|e| e["reason"] == "agent-on-api-port" && e["identity"] == "other-agent"),
        "the eviction is not in the trail"
    );
}

/// Once the daemon's TCP listener at `addr:port` is up (within 15 s), an
/// operator's call over it, with an operator token, succeeds.
fn operator_call_reaches_the_daemon(f: &Fixture, addr: &str, port: u16) {
    let missing = format!("api.tcp {addr}:{port}: not listening");
    assert!(
        wait_for(Duration::from_secs(15), || {
            (!f.env.cli_ok(&["status"]).contains(&missing)).then_some(())
        })
        .is_some(),
        "the API's TCP listener never came up"
    );
    let minted = Command::new(palisade_bin())
        .args(["keys", "operator-token", "--name", "oncall", "--file"])
        .arg(f.env.dir.join("keys.yaml"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(minted.status.success(), "{minted:?}");
    let token = String::from_utf8_lossy(&minted.stdout).trim().to_string();
    let call = Command::new(palisade_bin())
        .args(["approvals", "--socket", &format!("http://{addr}:{port}")])
        .env("PALISADE_OPERATOR_TOKEN", &token)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        call.status.success(),
        "the operator's call over TCP: {}",
        String::from_utf8_lossy(&call.stderr)
    );
}

/// Takes a test's fixed port out of the host's reserved ports again.
struct Unreserve(u16);

impl Drop for Unreserve {
    fn drop(&mut self) {
        let path = "/proc/sys/net/ipv4/ip_local_reserved_ports";
        let Ok(list) = std::fs::read_to_string(path) else {
            return;
        };
        let port = self.0.to_string();
        let kept: Vec<&str> = list
            .trim()
            .split(',')
            .filter(|p| !p.is_empty() && *p != port)
            .collect();
        // An empty write leaves the list as it is; a newline empties it.
        let _ = std::fs::write(path, format!("{}\n", kept.join(",")));
    }
}
