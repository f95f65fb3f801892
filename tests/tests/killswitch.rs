//! The kill switch ends what is already open: after `palisade revoke`, the
//! revoked identity's established TCP connection and connected UDP socket
//! stop carrying data at once (the kernel drops their packets where they
//! leave, and the daemon aborts the sockets — also those the identity holds
//! without having made them as an agent), whether the agent runs as
//! root or unprivileged, while another identity's
//! streams to the same host go on. The far end — listeners in a namespace
//! the test creates — says when the last bytes of each arrived.
//!
//! Addresses: namespace `10.108.0.0/24`, listeners on `.2` ports 94xx.

use std::{thread, time::Duration};

use palisade_tests::{
    DaemonProc, TestEnv,
    capture::{Sink, exec_stream, now_ns},
    launcher,
    netns::NetNs,
    root_or_skip,
};

const HOST: &str = "10.108.0.2";

#[test]
fn revoke_stops_open_connections_at_once() {
    if !root_or_skip("revoke_stops_open_connections_at_once") {
        return;
    }
    let ns = NetNs::new("kill", 108);
    let env = TestEnv::new(
        "kill",
        "version: 1
identities:
  - id: agent
    egress:
      allow: [{cidr: 10.108.0.0/24}]
  - id: other
    egress:
      allow: [{cidr: 10.108.0.0/24}]
",
    );
    let _d = DaemonProc::start(&env);
    let sink = Sink::start(&ns, HOST, &[9401, 9402, 9403], &[9411, 9412, 9413], 8000);
    let stream = |identity: &str, user: bool, tcp: u16, udp: u16| {
        exec_stream(&env.socket, identity, user, HOST, tcp, udp, 6000)
    };
    let agent = stream("agent", false, 9401, 9411);
    let other = stream("other", false, 9402, 9412);
    let unprivileged = stream("agent", true, 9403, 9413);
    thread::sleep(Duration::from_millis(1000));
    env.cli_ok(&["revoke", "agent", "--reason", "test"]);
    let revoked_at = now_ns();
    let agent = agent.join().unwrap_or_else(|_| panic!("agent stream"));
    let other = other.join().unwrap_or_else(|_| panic!("other stream"));
    let unprivileged = unprivileged
        .join()
        .unwrap_or_else(|_| panic!("unprivileged stream"));
    let seen = sink.finish();

    // The agent (root and unprivileged) saw its sockets fail; the other
    // identity did not.
    for agent in [&agent, &unprivileged] {
        assert!(agent.ok(), "{}", agent.0);
        assert!(
            agent.0["tcp_errno"].is_i64(),
            "the revoked TCP connection kept accepting writes: {}",
            agent.0
        );
        // EPERM: dropped where it leaves; EDESTADDRREQ: the daemon aborted
        // the socket, which lost its destination with it.
        let udp = agent.0["udp_errno"].as_i64();
        assert!(
            udp == Some(i64::from(libc::EPERM)) || udp == Some(i64::from(libc::EDESTADDRREQ)),
            "the revoked UDP socket kept sending: {}",
            agent.0
        );
    }
    assert!(
        other.0["tcp_errno"].is_null() && other.0["udp_errno"].is_null(),
        "{}",
        other.0
    );
    // The far end: the agent's data flowed before the revoke and stopped
    // with it (a packet already on the wire may land a moment later); the
    // other identity's kept arriving until its stream ended.
    let grace = 100_000_000; // 100 ms
    for key in ["tcp/9401", "udp/9411", "tcp/9403", "udp/9413"] {
        let r = seen
            .get(key)
            .copied()
            .unwrap_or_else(|| panic!("nothing arrived on {key} before the revoke: {seen:?}"));
        assert!(r.first_ns < revoked_at, "{key}: {r:?}");
        assert!(
            r.last_ns < revoked_at + grace,
            "{key}: data arrived {} ms after the revoke",
            (r.last_ns - revoked_at) / 1_000_000
        );
    }
    for key in ["tcp/9402", "udp/9412"] {
        let r = seen.get(key).copied().unwrap_or_default();
        assert!(
            r.last_ns > revoked_at + 1_000_000_000,
            "the other identity's {key} stopped too: {r:?}"
        );
    }
    // In the trail: the switch, with the sockets the daemon aborted (the
    // agent's four), and the drop of any packet that left before that.
    env.wait_audit("for the kill switch and the aborted sockets", |e| {
        e["kind"] == "kill_switch"
            && e["identity"] == "agent"
            && e["detail"]
                .as_str()
                .and_then(|d| d.split(' ').next()?.parse::<u32>().ok())
                .is_some_and(|n| n >= 4)
    });
}

/// Connections the identity holds without having made them as an agent —
/// a launcher's, kept with `keep_inherited_sockets` (likewise a process a
/// selector takes in with its connections open, or one passed a connected
/// socket): no connect hook ran on them as the agent, so no stamp ties them
/// to it. `palisade revoke` ends them too.
#[test]
fn revoke_also_ends_connections_made_before_enrolment() {
    if !root_or_skip("revoke_also_ends_connections_made_before_enrolment") {
        return;
    }
    const FAR: &str = "10.109.0.2";
    let ns = NetNs::new("killpre", 109);
    let env = TestEnv::new(
        "killpre",
        "version: 1
identities:
  - id: keeper
    egress:
      allow: [{cidr: 10.109.0.0/24}]
    confinement: {keep_inherited_sockets: true}
",
    );
    let _d = DaemonProc::start(&env);
    let launcher_cgroup = env.make_cgroup("launcher");
    let sink = Sink::start(&ns, FAR, &[9421, 9422], &[9431, 9432], 12000);
    let go = env.dir.join("revoked");
    let go_arg = go.to_str().unwrap_or_default().to_string();
    let far: std::net::Ipv4Addr = FAR.parse().unwrap_or_else(|e| panic!("{e}"));
    let mut agents = Vec::new();
    for (who, user, tcp, udp) in [
        ("root", false, 9421, 9431),
        ("unprivileged", true, 9422, 9432),
    ] {
        for (kind, is_udp, port) in [("tcp", false, tcp), ("udp", true, udp)] {
            let mut args = if user {
                vec!["as-user", "65534"]
            } else {
                vec![]
            };
            args.extend([
                "write-fd-wait",
                "3",
                "BEFORE-",
                go_arg.as_str(),
                "AFTER-REVOKE",
            ]);
            let ty = if is_udp {
                libc::SOCK_DGRAM
            } else {
                libc::SOCK_STREAM
            };
            let dst = std::net::SocketAddrV4::new(far, port);
            let child = launcher::with_socket_from(
                launcher::exec_probe(&env, "keeper", &args),
                &launcher_cgroup,
                move || launcher::inet_socket(ty, Some(dst)),
            )
            .spawn()
            .unwrap_or_else(|e| panic!("running palisade exec: {e}"));
            agents.push((format!("{who} {kind}"), format!("{kind}/{port}"), child));
        }
    }
    // Each agent writes at once; what arrives before the revoke shows the
    // path works (checked at the far end below).
    thread::sleep(Duration::from_millis(1500));
    let revoked_at = now_ns();
    env.cli_ok(&["revoke", "keeper", "--reason", "test"]);
    std::fs::write(&go, "").unwrap_or_else(|e| panic!("{e}"));
    let mut keys = Vec::new();
    for (what, key, child) in agents {
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.contains(r#""step":"write-after""#),
            "{what}: the connection made before enrolment still took writes after the revoke: {out}"
        );
        keys.push((what, key));
    }
    let seen = sink.finish();
    for (what, key) in &keys {
        let r = seen
            .get(key.as_str())
            .copied()
            .unwrap_or_else(|| panic!("{what}: nothing arrived before the revoke: {seen:?}"));
        assert!(r.first_ns < revoked_at, "{what}: {r:?}");
        assert!(
            r.last_ns < revoked_at,
            "{what}: data arrived {} ms after the revoke",
            (r.last_ns - revoked_at) / 1_000_000
        );
    }
}

/// A memory cgroup of the test's own (cgroup v1's `memory` hierarchy, or
/// v2 with the controller enabled below the root), and the file that says
/// how much it holds.
fn memory_cgroup(
    v2_root: &std::path::Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let v1 = mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mut r = right.split_whitespace();
        (r.next()? == "cgroup" && r.nth(1)?.split(',').any(|o| o == "memory"))
            .then(|| left.split_whitespace().nth(4).map(std::path::PathBuf::from))?
    });
    let (dir, usage) = match v1 {
        Some(root) => (root.join(name), "memory.usage_in_bytes"),
        None => {
            std::fs::write(v2_root.join("cgroup.subtree_control"), "+memory")
                .unwrap_or_else(|e| panic!("enabling the memory controller: {e}"));
            (v2_root.join(name), "memory.current")
        }
    };
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let usage = dir.join(usage);
    (dir, usage)
}

fn bytes_in(usage: &std::path::Path) -> i64 {
    std::fs::read_to_string(usage)
        .unwrap_or_else(|e| panic!("{}: {e}", usage.display()))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", usage.display()))
}

/// Bytes `usage` grew by while `COUNT` sockets were held by `cmd` (a probe
/// `hold-sockets` that says when they are open).
fn growth_while_held(usage: &std::path::Path, mut cmd: std::process::Command) -> i64 {
    use std::io::BufRead as _;
    let before = bytes_in(usage);
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut line = String::new();
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    // Kept open until the probe has ended: it writes a last line.
    let mut reader = std::io::BufReader::new(stdout);
    reader
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        line.contains(r#""held":"#),
        "the sockets were not opened: {line}"
    );
    let held = bytes_in(usage);
    let _ = child.wait();
    drop(reader);
    held - before
}

/// Each socket an agent opens carries its identity stamp, a socket storage
/// the kernel charges to the memory cgroup the map was made in. Made by the
/// daemon, agents' sockets (about 330 bytes each) counted against the
/// daemon's own memory limit: enough of them — a compromised agent opens
/// them on purpose — and the daemon is killed at its limit. The daemon
/// makes the storage outside every memory cgroup.
#[test]
fn agents_sockets_do_not_count_against_the_daemons_memory() {
    if !root_or_skip("agents_sockets_do_not_count_against_the_daemons_memory") {
        return;
    }
    const COUNT: &str = "10000";
    // A host rule: the identity's DNS is steered to the daemon's proxy,
    // and each socket connected to port 53 gets a second storage
    // (`DNS_ORIG`, the resolver it meant).
    let env = TestEnv::new(
        "killmem",
        "version: 1
identities:
  - id: agent
    egress:
      allow: [{cidr: 10.109.1.0/24}, {host: api.example.test, protocol: tcp}]
",
    );
    env.write_config(&palisade_tests::dns::config(
        palisade_tests::dns::slot(),
        &env.dir,
        "",
    ));
    let (cgroup, usage) = memory_cgroup(
        &env.cgroup_root,
        &format!("palisade-test-{}-killmem", palisade_tests::run_tag()),
    );
    /// Removes the memory cgroup once its processes are gone.
    struct Removed(std::path::PathBuf);
    impl Drop for Removed {
        fn drop(&mut self) {
            for _ in 0..50 {
                if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                    return;
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let _removed = Removed(cgroup.clone());
    let mut daemon = DaemonProc::start_in_cgroup(&env, &cgroup);
    let agent = launcher::exec_probe(
        &env,
        "agent",
        &["as-user", "65534", "hold-sockets", COUNT, "1000"],
    );
    let by_agent = growth_while_held(&usage, agent);
    let steered = launcher::exec_probe(
        &env,
        "agent",
        &[
            "as-user",
            "65534",
            "hold-sockets",
            COUNT,
            "1000",
            "192.0.2.53:53",
        ],
    );
    let by_steered = growth_while_held(&usage, steered);
    // The control: the same sockets opened inside the daemon's cgroup count
    // there, so the measure sees 10,000 sockets' worth of memory.
    let mut inside = std::process::Command::new(palisade_tests::Probe::bin());
    inside.args(["hold-sockets", COUNT, "1000"]);
    palisade_tests::probe::enter_cgroup(&mut inside, &cgroup);
    let by_process_inside = growth_while_held(&usage, inside);
    daemon.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    assert!(
        by_process_inside > 2_000_000,
        "control: 10,000 sockets in the cgroup grew it by {by_process_inside} bytes only"
    );
    assert!(
        by_agent < 1_000_000,
        "an agent's 10,000 sockets grew the daemon's memory cgroup by {by_agent} bytes"
    );
    assert!(
        by_steered < 1_000_000,
        "an agent's 10,000 sockets connected to port 53 grew the daemon's memory cgroup by {by_steered} bytes"
    );
}

/// The descriptors the daemon has open.
fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// A root agent can reach the API socket: thousands of idle connections
/// (each costs the daemon a connection and a pidfd) used up the daemon's
/// descriptors, and the operator's `revoke` waited until the agent let go,
/// while the agent kept connecting. Each agent identity now holds at most
/// its share of API connections; further ones are closed at accept.
#[test]
fn revoke_gets_through_while_an_agent_holds_api_connections() {
    if !root_or_skip("revoke_gets_through_while_an_agent_holds_api_connections") {
        return;
    }
    const FAR: &str = "10.109.2.2";
    let ns = NetNs::named("killapi", 109, 2);
    let env = TestEnv::new(
        "killapi",
        "version: 1
identities:
  - id: agent
    egress:
      allow: [{cidr: 10.109.2.0/24}]
",
    );
    let daemon = DaemonProc::start(&env);
    // What a service gets by default (systemd: 1024), so that descriptors
    // can run out within the test.
    launcher::set_descriptor_limit(daemon.pid(), 1024);
    let _sink = Sink::start(&ns, FAR, &[9441], &[], 15000);
    let agent = |args: &[&str]| launcher::exec_probe(&env, "agent", args);
    let connect = || {
        let out = agent(&["tcp", FAR, "9441"])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The control: the agent reaches the sink.
    assert!(connect().contains(r#""ok":true"#), "control: {}", connect());
    let baseline = open_descriptors(daemon.pid());
    // A root agent opens 1,000 idle connections to the API and holds them.
    let socket = env.socket.to_str().unwrap_or_default().to_string();
    let mut holder = agent(&["hold-api", &socket, "1000", "8000"])
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut line = String::new();
    let mut reader =
        std::io::BufReader::new(holder.stdout.take().unwrap_or_else(|| panic!("no stdout")));
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or_else(|e| panic!("{e}"));
    let held: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
    let during = open_descriptors(daemon.pid());
    // The operator's revoke gets through at once.
    let started = std::time::Instant::now();
    let out = std::process::Command::new(palisade_tests::palisade_bin())
        .args(["revoke", "agent", "--reason", "test", "--socket"])
        .arg(&env.socket)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let took = started.elapsed();
    let after = connect();
    let _ = holder.kill();
    let _ = holder.wait();
    drop(reader);
    assert!(
        out.status.success(),
        "revoke failed while the agent held API connections: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        took < Duration::from_secs(5),
        "revoke took {took:?} while the agent held API connections"
    );
    assert!(
        after.contains(r#""errno":1"#),
        "the agent still connected after the revoke: {after}"
    );
    assert_eq!(held["connected"], 1000, "{held}");
    let open = held["open"].as_u64().unwrap_or(u64::MAX);
    assert!(
        (200..=256).contains(&open),
        "{open} of the agent's 1,000 API connections stayed open (the cap is 256): {held}"
    );
    assert!(
        during < baseline + 2 * 256 + 50,
        "the daemon's descriptors went from {baseline} to {during}"
    );
    let detached: Vec<_> = env
        .audit_events()
        .into_iter()
        .filter(|e| e["reason"] == "guard-detached")
        .collect();
    assert!(detached.is_empty(), "false guard records: {detached:?}");
}
