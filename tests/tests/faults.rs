//! Faults, for real: the daemon SIGKILLed in the middle of a reload storm,
//! the trail's disk full (a real, small tmpfs), and the daemon restarted
//! while a DNS answer is on its way. Enforcement never has a gap, never
//! mixes two policies, never depends on the trail, and nothing is counted
//! twice or lost without a record.

use std::{
    net::UdpSocket,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::Ordering,
    time::Duration,
};

use palisade_tests::{
    DaemonProc, Probe, TcpServer, TestEnv,
    dns::{Agent, Lab},
    http::Scrape,
    palisade_bin, root_or_skip, wait_for,
};
use serde_json::Value;

/// The server accepts in a loop of its own: wait for it to count.
#[track_caller]
fn accepted(server: &TcpServer, n: u64, what: &str) {
    let seen = wait_for(Duration::from_secs(2), || {
        (server.accepted.load(Ordering::Relaxed) == n).then_some(())
    });
    assert!(
        seen.is_some(),
        "{what}: the server accepted {} connections, not {n}",
        server.accepted.load(Ordering::Relaxed)
    );
}

fn allow(ports: &[u16]) -> String {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!(
        "version: 1\nidentities:\n  - id: agent\n    egress:\n      allow:\n        - {{cidr: 127.140.9.1, ports: [{}], protocol: tcp}}\n",
        list.join(", ")
    )
}

/// A connect loop run enrolled until `stop` exists.
fn connect_until(env: &TestEnv, port: u16, stop: &Path) -> std::thread::JoinHandle<Value> {
    let (socket, stop) = (env.socket.clone(), stop.to_path_buf());
    std::thread::spawn(move || {
        let out = Command::new(palisade_bin())
            .args(["exec", "--socket"])
            .arg(&socket)
            .args(["--identity", "agent", "--"])
            .arg(Probe::bin())
            .args(["tcp-until", "127.140.9.1", &port.to_string()])
            .arg(&stop)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "client said {:?}: {e}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    })
}

#[test]
fn kill9_in_a_reload_storm_leaves_one_whole_generation_enforcing() {
    if !root_or_skip("kill9_in_a_reload_storm_leaves_one_whole_generation_enforcing") {
        return;
    }
    let both = TcpServer::start("127.140.9.1");
    let only_a = TcpServer::start("127.140.9.1");
    let only_b = TcpServer::start("127.140.9.1");
    let never = TcpServer::start("127.140.9.1");
    let policy_a = allow(&[both.addr.port(), only_a.addr.port()]);
    let policy_b = allow(&[only_b.addr.port(), both.addr.port()]);
    let env = TestEnv::new("storm-kill", &policy_a);
    let mut d = DaemonProc::start(&env);
    // An enrolled shell that outlives the daemon (enrolling needs one).
    let mut agent = Agent::start(&env, "agent");
    let stop = env.dir.join("stop");
    let allowed_loop = connect_until(&env, both.addr.port(), &stop);
    let forbidden_loop = connect_until(&env, never.addr.port(), &stop);
    std::thread::sleep(Duration::from_millis(300));

    // The storm: the policy file flips between A and B, each change
    // followed by SIGHUP (and seen by the file watcher too); SIGKILL lands
    // somewhere in the middle.
    let pid = nix::unistd::Pid::from_raw(d.pid() as i32);
    let started = std::time::Instant::now();
    let mut flips = 0u32;
    while started.elapsed() < Duration::from_millis(1500) {
        env.write_policy(if flips.is_multiple_of(2) {
            &policy_b
        } else {
            &policy_a
        });
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP);
        flips += 1;
        std::thread::sleep(Duration::from_millis(3));
    }
    d.kill9();
    for _ in 0..20 {
        env.write_policy(if flips.is_multiple_of(2) {
            &policy_b
        } else {
            &policy_a
        });
        flips += 1;
    }

    // No daemon now. What the kernel enforces is one whole policy: the
    // port both allow is open, the one neither allows is shut, and exactly
    // one of the two that differ is open (a mix would open both or none).
    agent
        .run(&["tcp", "127.140.9.1", &both.port()])
        .expect_ok("allowed by both, after the kill");
    agent
        .run(&["tcp", "127.140.9.1", &never.port()])
        .expect_eperm("allowed by neither, after the kill");
    let a = agent.run(&["tcp", "127.140.9.1", &only_a.port()]).ok();
    let b = agent.run(&["tcp", "127.140.9.1", &only_b.port()]).ok();
    assert!(
        a ^ b,
        "one generation, whole: only-A open {a}, only-B open {b}"
    );

    std::fs::write(&stop, "").unwrap_or_else(|e| panic!("{e}"));
    let allowed = allowed_loop.join().unwrap_or_else(|_| panic!("loop"));
    let forbidden = forbidden_loop.join().unwrap_or_else(|_| panic!("loop"));
    eprintln!("{flips} policy flips; allowed loop {allowed}; forbidden loop {forbidden}");
    assert_eq!(
        allowed["failures"], 0,
        "a gap for the allowed port: {allowed}"
    );
    assert_eq!(
        forbidden["failures"], forbidden["count"],
        "a gap for the forbidden port: {forbidden}"
    );
    assert_eq!(
        never.accepted.load(Ordering::Relaxed),
        0,
        "nothing reached the forbidden port"
    );
    assert!(allowed["count"].as_u64().unwrap_or(0) > 50, "{allowed}");
    let applied = env
        .audit_events()
        .iter()
        .filter(|e| e["kind"] == "policy" && e["verdict"] == "applied")
        .count();
    assert!(applied >= 20, "the storm applied only {applied} policies");

    // A new daemon adopts the pins and applies the file as it is now.
    let _d = DaemonProc::start(&env);
    // Write number flips-1 was the last: B for even numbers, A for odd.
    let last_is_a = flips.is_multiple_of(2);
    let (open, shut) = if last_is_a {
        (&only_a, &only_b)
    } else {
        (&only_b, &only_a)
    };
    let open_now = wait_for(Duration::from_secs(5), || {
        agent
            .run(&["tcp", "127.140.9.1", &open.port()])
            .ok()
            .then_some(())
    });
    assert!(open_now.is_some(), "the policy on file after the restart");
    agent
        .run(&["tcp", "127.140.9.1", &shut.port()])
        .expect_eperm("the other policy's port after the restart");
}

/// A tmpfs of its own, unmounted on drop (panics included).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap_or_else(|e| panic!("{e}"));
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "palisade-test",
            ])
            .arg(at)
            .output()
            .unwrap_or_else(|e| panic!("mount: {e}"));
        assert!(
            out.status.success(),
            "mount tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(at.to_path_buf())
    }

    /// Fill it to the last byte; returns the filler file.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap_or_else(|e| panic!("{e}"));
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let byte = [0u8; 1];
        while f.write_all(&byte).is_ok() {}
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

#[test]
fn a_full_trail_disk_changes_no_verdict_and_the_loss_is_written_once_space_returns() {
    if !root_or_skip(
        "a_full_trail_disk_changes_no_verdict_and_the_loss_is_written_once_space_returns",
    ) {
        return;
    }
    let server = TcpServer::start("127.140.9.2");
    let mut env = TestEnv::new(
        "disk-full",
        &format!(
            "version: 1\nidentities:\n  - id: agent\n    egress:\n      allow:\n        - {{cidr: 127.140.9.2, ports: [{}], protocol: tcp}}\n",
            server.addr.port()
        ),
    );
    let disk = Tmpfs::mount(&env.dir.join("trail"), "256k");
    env.audit = disk.0.join("audit.jsonl");
    env.write_config("kernel:\n  aggregate_ms: 300\n");
    let _d = DaemonProc::start(&env);
    let mut agent = Agent::start(&env, "agent");
    agent
        .run(&["tcp", "127.140.9.2", &server.port()])
        .expect_ok("before the disk fills");

    let filler = disk.fill();
    // Enforcement does not notice: allowed still connects, the rest is
    // still refused (each a record the trail cannot take).
    for port in 20000..20020 {
        agent
            .run(&["tcp", "127.140.9.2", &port.to_string()])
            .expect_eperm("a denied port while the disk is full");
    }
    agent
        .run(&["tcp", "127.140.9.2", &server.port()])
        .expect_ok("allowed while the disk is full");
    accepted(&server, 2, "the two allowed connects");
    let metric = |env: &TestEnv| {
        Scrape::fetch(&env.metrics_address())
            .value("palisade_events_lost_total{stage=\"trail_write\"}")
            .unwrap_or(-1.0) as u64
    };
    let lost = wait_for(Duration::from_secs(10), || {
        let n = metric(&env);
        (n > 0).then_some(n)
    })
    .unwrap_or_else(|| panic!("no trail write failure counted"));

    // Space returns; the next write starts with the loss, counted exactly.
    std::fs::remove_file(&filler).unwrap_or_else(|e| panic!("{e}"));
    agent
        .run(&["tcp", "127.140.9.2", "21000"])
        .expect_eperm("a denial after space returned");
    let loss = env.wait_audit("for the loss record", |e| {
        e["kind"] == "loss" && e["reason"] == "audit-write-failed"
    });
    let lost_now = metric(&env);
    assert!(lost_now >= lost);
    let recorded: u64 = env
        .audit_events()
        .iter()
        .filter(|e| e["kind"] == "loss" && e["reason"] == "audit-write-failed")
        .map(|e| e["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(recorded, lost_now, "loss records vs metric: {loss}");
    // No half record: the chain checks out.
    let out = Command::new(palisade_bin())
        .args(["audit", "verify"])
        .arg(&env.audit)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A DNS server that answers `slow.test` with `addr` after `delay`.
fn slow_resolver(sock: UdpSocket, addr: std::net::Ipv4Addr, delay: Duration) {
    use hickory_proto::{
        op::{Message, MessageType},
        rr::{RData, Record, rdata::A},
    };
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let Some(question) = q.queries.first().cloned() else {
                continue;
            };
            let sock = sock.try_clone().unwrap_or_else(|e| panic!("{e}"));
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let mut r = Message::new(q.metadata.id, MessageType::Response, q.metadata.op_code);
                r.metadata.recursion_desired = q.metadata.recursion_desired;
                r.metadata.recursion_available = true;
                r.add_query(question.clone());
                r.add_answer(Record::from_rdata(
                    question.name().clone(),
                    30,
                    RData::A(A(addr)),
                ));
                if let Ok(bytes) = r.to_vec() {
                    let _ = sock.send_to(&bytes, peer);
                }
            });
        }
    });
}

#[test]
fn a_restart_while_a_dns_answer_is_on_its_way_learns_nothing_stale() {
    if !root_or_skip("a_restart_while_a_dns_answer_is_on_its_way_learns_nothing_stale") {
        return;
    }
    let mut lab = Lab::with_raw(
        "dns-restart-inflight",
        "  - id: agent\n    egress:\n      allow:\n        - {host: slow.test, protocol: tcp}\n",
        &[],
        &["--server=/slow.test/127.140.{n}.98"],
        "  upstream_timeout_ms: 4000\n",
    );
    let target = lab.ip(7);
    let server = TcpServer::start(&target);
    let sock = UdpSocket::bind((format!("127.140.{}.98", lab.n).as_str(), 53))
        .unwrap_or_else(|e| panic!("slow resolver: {e}"));
    slow_resolver(
        sock,
        target.parse().unwrap_or_else(|e| panic!("{e}")),
        Duration::from_millis(1500),
    );
    let mut agent = Agent::start(&lab.env, "agent");

    // A lookup on its way when the daemon dies.
    let asking = {
        let env_socket = lab.env.socket.clone();
        std::thread::spawn(move || {
            let out = Command::new(palisade_bin())
                .args(["exec", "--socket"])
                .arg(&env_socket)
                .args(["--identity", "agent", "--"])
                .arg(Probe::bin())
                .args(["dns", "udp", "127.9.9.9", "slow.test"])
                .output()
                .unwrap_or_else(|e| panic!("{e}"));
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    lab.daemon.kill9();
    lab.daemon = DaemonProc::start(&lab.env);
    let first = asking.join().unwrap_or_else(|_| panic!("lookup thread"));
    eprintln!("the lookup cut by the restart: {first}");
    // Its answer arrived after the restart: nothing learned from it.
    std::thread::sleep(Duration::from_millis(1500));
    agent
        .run(&["tcp", &target, &server.port()])
        .expect_eperm("the address of an answer the dead daemon never released");
    assert_eq!(server.accepted.load(Ordering::Relaxed), 0);

    // Asked again, the new daemon answers and learns.
    let again = agent.run(&["dns", "udp", "127.9.9.9", "slow.test"]);
    assert_eq!(again.0["rcode"], "NOERROR", "{}", again.0);
    agent
        .run(&["tcp", &target, &server.port()])
        .expect_ok("the address the new daemon learned");
    accepted(&server, 1, "the connect after the second lookup");
}
