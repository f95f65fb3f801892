//! Kernel egress enforcement: what an enrolled process may and may not reach.

use palisade_tests::{
    DaemonProc, Probe, TcpServer, TestEnv, UdpServer, netns::NetNs, root_or_skip,
};

fn policy(allowed_tcp: u16, allowed_udp: u16) -> String {
    format!(
        "version: 1
identities:
  - id: agent
    egress:
      allow:
        - cidr: 127.0.0.1
          ports: [{allowed_tcp}]
          protocol: tcp
        - cidr: 127.0.0.1
          ports: [{allowed_udp}]
          protocol: udp
        - cidr: ::1/128
          ports: [{allowed_tcp}]
      deny:
        - cidr: 127.0.0.2
"
    )
}

#[test]
fn allowed_tcp_connects_and_others_get_eperm() {
    if !root_or_skip("allowed_tcp_connects_and_others_get_eperm") {
        return;
    }
    let allowed = TcpServer::start("127.0.0.1");
    let other = TcpServer::start("127.0.0.1");
    let env = TestEnv::new("tcp", &policy(allowed.addr.port(), 1));
    let _d = DaemonProc::start(&env);

    Probe::enrolled(&env, "agent", &["tcp", "127.0.0.1", &allowed.port()])
        .expect_ok("allowed port");
    Probe::enrolled(&env, "agent", &["tcp", "127.0.0.1", &other.port()]).expect_eperm("other port");
    // The same destination is fine for a process that is not enrolled.
    Probe::plain(&["tcp", "127.0.0.1", &other.port()]).expect_ok("unenrolled process");
    assert!(allowed.wait_accepted(1) >= 1);
}

#[test]
fn ipv6_and_ipv4_mapped_destinations_are_judged_as_what_they_are() {
    if !root_or_skip("ipv6_and_ipv4_mapped") {
        return;
    }
    let allowed = TcpServer::start("127.0.0.1");
    let denied = TcpServer::start("127.0.0.1");
    let v6_allowed = TcpServer::start("::1");
    let v6_denied = TcpServer::start("::1");
    // The policy allows the v4 port and the v6 port of `allowed`/`v6_allowed`.
    let text = format!(
        "version: 1\nidentities:\n  - id: agent\n    egress:\n      allow:\n        - {{cidr: 127.0.0.1, ports: [{}]}}\n        - {{cidr: '::1', ports: [{}]}}\n",
        allowed.port(),
        v6_allowed.port()
    );
    let env = TestEnv::new("v6", &text);
    let _d = DaemonProc::start(&env);

    Probe::enrolled(&env, "agent", &["tcp", "::1", &v6_allowed.port()]).expect_ok("IPv6 allowed");
    Probe::enrolled(&env, "agent", &["tcp", "::1", &v6_denied.port()]).expect_eperm("IPv6 denied");
    // ::ffff:127.0.0.1 is 127.0.0.1: allowed port passes, other port is denied.
    Probe::enrolled(&env, "agent", &["tcp", "::ffff:127.0.0.1", &allowed.port()])
        .expect_ok("IPv4-mapped to an allowed IPv4 destination");
    Probe::enrolled(&env, "agent", &["tcp", "::ffff:127.0.0.1", &denied.port()])
        .expect_eperm("IPv4-mapped to a denied IPv4 destination");
    Probe::plain(&["tcp", "::ffff:127.0.0.1", &denied.port()]).expect_ok("unenrolled, mapped");
}

#[test]
fn udp_sendto_is_judged_per_datagram() {
    if !root_or_skip("udp_sendto_is_judged_per_datagram") {
        return;
    }
    let allowed = UdpServer::start("127.0.0.1");
    let denied = UdpServer::start("127.0.0.1");
    let env = TestEnv::new("udp", &policy(1, allowed.addr.port()));
    let _d = DaemonProc::start(&env);

    Probe::enrolled(&env, "agent", &["udp", "127.0.0.1", &allowed.port()]).expect_ok("allowed UDP");
    assert_eq!(allowed.received(), 1, "the allowed datagram arrives");
    Probe::enrolled(&env, "agent", &["udp", "127.0.0.1", &denied.port()])
        .expect_eperm("denied UDP sendto");
    Probe::enrolled(&env, "agent", &["udp-connect", "127.0.0.1", &denied.port()])
        .expect_eperm("denied connected UDP");
    assert_eq!(denied.received(), 0, "nothing reached the denied port");
    // An explicit deny rule wins over nothing else and is reported.
    Probe::enrolled(&env, "agent", &["udp", "127.0.0.2", "53"]).expect_eperm("deny rule");
}

#[test]
fn raw_icmp_and_packet_sockets_are_refused() {
    if !root_or_skip("raw_icmp_and_packet_sockets_are_refused") {
        return;
    }
    let env = TestEnv::new("raw", &policy(1, 1));
    let _d = DaemonProc::start(&env);
    Probe::enrolled(&env, "agent", &["raw"]).expect_eperm("SOCK_RAW");
    Probe::enrolled(&env, "agent", &["packet"]).expect_eperm("AF_PACKET");
    Probe::plain(&["raw"]).expect_ok("root outside the identity may open raw sockets");
    Probe::plain(&["packet"]).expect_ok("root outside the identity may open packet sockets");
    // ICMP datagram ("ping") sockets exist only where ping_group_range lets
    // the caller's group create them; allow it in a namespace of our own so
    // that the refusal seen is Palisade's, not the sysctl's.
    let ns = NetNs::new("icmp", 214);
    ns.sysctl("net.ipv4.ping_group_range", "0 0");
    Probe::plain_in(Some(&ns.name), &["icmp"]).expect_ok("ping socket outside the identity");
    Probe::enrolled_in(&env, Some(&ns.name), "agent", &["icmp"])
        .expect_eperm("ICMP datagram socket");
    env.wait_audit("for the refused raw socket", |e| {
        e["kind"] == "socket" && e["verdict"] == "deny" && e["reason"] == "socket-type-refused"
    });
}

#[test]
fn forked_children_stay_confined() {
    if !root_or_skip("forked_children_stay_confined") {
        return;
    }
    let allowed = TcpServer::start("127.0.0.1");
    let other = TcpServer::start("127.0.0.1");
    let env = TestEnv::new("fork", &policy(allowed.addr.port(), 1));
    let _d = DaemonProc::start(&env);
    let r = Probe::enrolled(&env, "agent", &["fork-tcp", "127.0.0.1", &other.port()]);
    assert!(
        !r.ok(),
        "child of an enrolled process reached a denied port: {}",
        r.0
    );
    Probe::enrolled(&env, "agent", &["fork-tcp", "127.0.0.1", &allowed.port()])
        .expect_ok("child, allowed port");
}

#[test]
fn cidr_rules_reach_a_host_in_a_test_namespace() {
    if !root_or_skip("cidr_rules_reach_a_host_in_a_test_namespace") {
        return;
    }
    let mut ns = NetNs::new("cidr", 213);
    // A real server on the namespace's own address.
    ns.spawn(
        "python3",
        &["-m", "http.server", "8080", "--bind", "10.213.0.2"],
    );
    let text = "version: 1\nidentities:\n  - id: agent\n    egress:\n      allow:\n        - {cidr: 10.213.0.0/24, ports: [8080], protocol: tcp}\n      deny:\n        - {cidr: 10.213.0.2/32, ports: [9090]}\n";
    let env = TestEnv::new("netns", text);
    let _d = DaemonProc::start(&env);
    let up = palisade_tests::wait_for(std::time::Duration::from_secs(10), || {
        Probe::plain(&["tcp", &ns.peer_ip, "8080"])
            .ok()
            .then_some(())
    });
    assert!(
        up.is_some(),
        "server in namespace {} did not come up",
        ns.name
    );
    Probe::enrolled(&env, "agent", &["tcp", &ns.peer_ip, "8080"])
        .expect_ok("allowed /24, port 8080");
    Probe::enrolled(&env, "agent", &["tcp", &ns.peer_ip, "9090"])
        .expect_eperm("deny rule inside the /24");
    Probe::enrolled(&env, "agent", &["tcp", &ns.peer_ip, "22"]).expect_eperm("port not allowed");
}
