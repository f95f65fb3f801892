//! DNS-aware egress against the real kernel and a real DNS server
//! (dnsmasq): names are judged by the proxy, their answers open the
//! identity's map, and nothing else does.

use std::time::Duration;

use nix::sys::signal::Signal;
use palisade_tests::{
    DaemonProc, Outcome, Probe, TcpServer,
    capture::{Capture, Sink, exec_stream, now_ns},
    dns::{self, Agent, Dnsmasq, Lab},
    netns::NetNs,
    root_or_skip, wait_for,
};

fn addrs(o: &Outcome) -> Vec<String> {
    o.0["addrs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[track_caller]
fn expect_rcode(o: &Outcome, rcode: &str, what: &str) {
    assert_eq!(o.0["rcode"], rcode, "{what}: {}", o.0);
}

/// A resolver address nothing listens on: only steering can answer it.
const NOBODY: &str = "127.9.9.9";

#[test]
fn allowed_name_resolves_and_its_address_connects() {
    if !root_or_skip("allowed_name_resolves_and_its_address_connects") {
        return;
    }
    let lab = Lab::new(
        "dns-allow",
        "  - id: agent\n    egress:\n      allow:\n        - {id: ehr, host: internal-ehr.test, protocol: tcp}\n",
        &[("internal-ehr.test", 1)],
        "",
    );
    let server = TcpServer::start(&lab.ip(1));
    // Before any lookup the address is unreachable: nothing learned yet.
    lab.connect("agent", &lab.ip(1), server.addr.port())
        .expect_eperm("address before its name was looked up");
    let r = lab.ask("agent", "udp", NOBODY, "Internal-EHR.test.");
    expect_rcode(&r, "NOERROR", "allowed name");
    assert_eq!(addrs(&r), vec![lab.ip(1)]);
    assert_eq!(
        r.0["from"],
        format!("{NOBODY}:53"),
        "the answer shows the resolver asked"
    );
    lab.connect("agent", &lab.ip(1), server.addr.port())
        .expect_ok("connect to the learned address");
    assert!(
        lab.upstream.was_asked("internal-ehr.test") || lab.upstream.was_asked("Internal-EHR.test")
    );
    let ev = lab.env.wait_audit("for the allowed lookup", |e| {
        e["kind"] == "dns" && e["verdict"] == "allow" && !e["dns"]["learned"].is_null()
    });
    assert_eq!(ev["identity"], "agent");
    assert_eq!(ev["rule"], "ehr");
    assert_eq!(ev["dns"]["query"], "internal-ehr.test");
    assert_eq!(ev["dns"]["learned"][0], lab.ip(1));
    assert_eq!(ev["dns"]["ttl"], 1, "dnsmasq's TTL 0 raised to ttl_min");
    // Learned for TCP only (the rule's protocol).
    Probe::enrolled(&lab.env, "agent", &["udp", &lab.ip(1), "9"])
        .expect_eperm("UDP to a TCP-only name");
}

#[test]
fn forbidden_name_gets_nxdomain_and_its_address_is_refused() {
    if !root_or_skip("forbidden_name_gets_nxdomain_and_its_address_is_refused") {
        return;
    }
    let lab = Lab::new(
        "dns-forbid",
        "  - id: agent\n    egress:\n      allow:\n        - host: ok.test\n",
        &[("ok.test", 1), ("exfil.test", 2)],
        "",
    );
    let server = TcpServer::start(&lab.ip(2));
    let r = lab.ask("agent", "udp", NOBODY, "exfil.test");
    expect_rcode(&r, "NXDOMAIN", "forbidden name");
    assert!(
        !lab.upstream.was_asked("exfil.test"),
        "the forbidden query left the host:\n{}",
        lab.upstream.log_text()
    );
    lab.connect("agent", &lab.ip(2), server.addr.port())
        .expect_eperm("forbidden name's address used directly");
    let ev = lab.env.wait_audit("for the refused lookup", |e| {
        e["kind"] == "dns" && e["verdict"] == "deny" && e["dns"]["query"] == "exfil.test"
    });
    assert_eq!(ev["reason"], "no-host-rule");
    assert_eq!(ev["dns"]["rcode"], "NXDOMAIN");
}

#[test]
fn forbidden_names_can_get_refused_instead() {
    if !root_or_skip("forbidden_names_can_get_refused_instead") {
        return;
    }
    let lab = Lab::new(
        "dns-refused",
        "  - id: agent\n    egress:\n      allow:\n        - host: ok.test\n      deny:\n        - {id: no-paste, host: '*.paste.test'}\n",
        &[("ok.test", 1), ("x.paste.test", 2)],
        "  forbidden: refused\n",
    );
    let r = lab.ask("agent", "udp", NOBODY, "x.paste.test");
    expect_rcode(&r, "REFUSED", "name under a deny host rule");
    let ev = lab.env.wait_audit("for the deny rule", |e| {
        e["kind"] == "dns" && e["dns"]["query"] == "x.paste.test"
    });
    assert_eq!(
        (ev["reason"].as_str(), ev["rule"].as_str()),
        (Some("deny-host-rule"), Some("no-paste"))
    );
}

#[test]
fn wildcard_rule_covers_names_below_it_only() {
    if !root_or_skip("wildcard_rule_covers_names_below_it_only") {
        return;
    }
    let lab = Lab::new(
        "dns-wild",
        "  - id: agent\n    egress:\n      allow:\n        - host: '*.usercontent.test'\n",
        &[
            ("raw.usercontent.test", 1),
            ("a.b.usercontent.test", 2),
            ("usercontent.test", 3),
            ("evilusercontent.test", 4),
        ],
        "",
    );
    let server = TcpServer::start(&lab.ip(2));
    expect_rcode(
        &lab.ask("agent", "udp", NOBODY, "raw.usercontent.test"),
        "NOERROR",
        "one label below",
    );
    expect_rcode(
        &lab.ask("agent", "udp", NOBODY, "A.B.UserContent.test"),
        "NOERROR",
        "two labels below, any case",
    );
    expect_rcode(
        &lab.ask("agent", "udp", NOBODY, "usercontent.test"),
        "NXDOMAIN",
        "the apex itself",
    );
    expect_rcode(
        &lab.ask("agent", "udp", NOBODY, "evilusercontent.test"),
        "NXDOMAIN",
        "a lookalike",
    );
    lab.connect("agent", &lab.ip(2), server.addr.port())
        .expect_ok("learned through the wildcard");
}

#[test]
fn cname_chain_leaving_the_allowed_zone_is_refused() {
    if !root_or_skip("cname_chain_leaving_the_allowed_zone_is_refused") {
        return;
    }
    let lab = Lab::with_raw(
        "dns-cname",
        "  - id: agent\n    egress:\n      allow:\n        - host: '*.corp.test'\n",
        &[("real.corp.test", 1), ("evil.other.test", 2)],
        &[
            "--cname=www.corp.test,real.corp.test",
            "--cname=leak.corp.test,evil.other.test",
        ],
        "",
    );
    let inside = TcpServer::start(&lab.ip(1));
    let outside = TcpServer::start(&lab.ip(2));
    let r = lab.ask("agent", "udp", NOBODY, "www.corp.test");
    expect_rcode(&r, "NOERROR", "CNAME inside the zone");
    assert_eq!(addrs(&r), vec![lab.ip(1)]);
    lab.connect("agent", &lab.ip(1), inside.addr.port())
        .expect_ok("address at the end of an allowed chain");
    let r = lab.ask("agent", "udp", NOBODY, "leak.corp.test");
    expect_rcode(&r, "NXDOMAIN", "CNAME out of the zone");
    lab.connect("agent", &lab.ip(2), outside.addr.port())
        .expect_eperm("address behind a CNAME that left the zone");
    let ev = lab.env.wait_audit("for the refused chain", |e| {
        e["kind"] == "dns" && e["dns"]["query"] == "leak.corp.test"
    });
    assert_eq!(ev["reason"], "cname-outside-policy");
    assert_eq!(ev["dns"]["decided_by"], "evil.other.test");
    assert_eq!(ev["dns"]["cnames"][0], "evil.other.test");
}

#[test]
fn ttl_expiry_stops_new_connections() {
    if !root_or_skip("ttl_expiry_stops_new_connections") {
        return;
    }
    let lab = Lab::with_raw(
        "dns-ttl",
        "  - id: agent\n    egress:\n      allow:\n        - host: brief.test\n",
        &[],
        &["--host-record=brief.test,127.225.{n}.1,2"],
        "",
    );
    let server = TcpServer::start(&lab.ip(1));
    let r = lab.ask("agent", "udp", NOBODY, "brief.test");
    expect_rcode(&r, "NOERROR", "short-lived name");
    assert_eq!(r.0["ttls"][0], 2, "{}", r.0);
    lab.connect("agent", &lab.ip(1), server.addr.port())
        .expect_ok("within the TTL");
    std::thread::sleep(Duration::from_millis(2500));
    lab.connect("agent", &lab.ip(1), server.addr.port())
        .expect_eperm("after the TTL (grace 0): a new connection");
    // Asking again opens it again.
    expect_rcode(
        &lab.ask("agent", "udp", NOBODY, "brief.test"),
        "NOERROR",
        "asked again",
    );
    lab.connect("agent", &lab.ip(1), server.addr.port())
        .expect_ok("after asking again");
}

#[test]
fn dns_to_any_resolver_is_steered_to_the_proxy() {
    if !root_or_skip("dns_to_any_resolver_is_steered_to_the_proxy") {
        return;
    }
    let lab = Lab::new(
        "dns-steer",
        "  - id: agent\n    egress:\n      allow:\n        - host: api.test\n",
        &[("api.test", 1)],
        "",
    );
    // A decoy resolver in a namespace of our own that would lie.
    let ns = NetNs::new("dnssteer", 220);
    let decoy = Dnsmasq::start(
        &lab.env.dir,
        Some(&ns.name),
        &ns.peer_ip,
        &["--host-record=api.test,192.0.2.66".into()],
    );
    let plain = Probe::plain(&["dns", "udp", &ns.peer_ip, "api.test"]);
    assert_eq!(
        addrs(&plain),
        vec!["192.0.2.66"],
        "the decoy answers unenrolled processes: {}",
        plain.0
    );
    for how in ["udp", "udp-connect"] {
        let r = lab.ask("agent", how, &ns.peer_ip, "api.test");
        expect_rcode(&r, "NOERROR", how);
        assert_eq!(
            addrs(&r),
            vec![lab.ip(1)],
            "{how}: answered by the proxy, not the decoy"
        );
        assert_eq!(
            r.0["from"],
            format!("{}:53", ns.peer_ip),
            "{how}: source restored"
        );
    }
    let r = lab.ask("agent", "udp-connect", &ns.peer_ip, "api.test");
    assert_eq!(
        r.0["peer"],
        format!("{}:53", ns.peer_ip),
        "getpeername() restored"
    );
    assert!(
        !decoy.was_asked("api.test") || decoy.log_text().matches("query[A] api.test").count() == 1,
        "only the unenrolled probe reached the decoy:\n{}",
        decoy.log_text()
    );
    // IPv6 resolver address (dual-stack socket): connected UDP and TCP are
    // steered; an unconnected datagram cannot be and is refused.
    for how in ["tcp", "udp-connect"] {
        let r = lab.ask("agent", how, "::1", "api.test");
        expect_rcode(&r, "NOERROR", &format!("IPv6 resolver address, {how}"));
        assert_eq!(r.0["from"], "[::1]:53", "{how}");
        assert_eq!(r.0["peer"], "[::1]:53", "{how}");
    }
    lab.ask("agent", "udp", "::1", "api.test")
        .expect_eperm("unconnected UDP to an IPv6 resolver");
    // Reaching the proxy address directly could speak for another identity.
    let proxy = dns::proxy_base(lab.n).to_string();
    Probe::enrolled(&lab.env, "agent", &["udp", &proxy, "5353"])
        .expect_eperm("proxy address, not through steering");
}

#[test]
fn dns_over_tcp_is_steered_and_judged() {
    if !root_or_skip("dns_over_tcp_is_steered_and_judged") {
        return;
    }
    let lab = Lab::new(
        "dns-tcp",
        "  - id: agent\n    egress:\n      allow:\n        - host: api.test\n",
        &[("api.test", 1), ("other.test", 2)],
        "",
    );
    let server = TcpServer::start(&lab.ip(1));
    let r = lab.ask("agent", "tcp", NOBODY, "api.test");
    expect_rcode(&r, "NOERROR", "allowed over TCP");
    assert_eq!(addrs(&r), vec![lab.ip(1)]);
    assert_eq!(
        r.0["peer"],
        format!("{NOBODY}:53"),
        "getpeername() shows the resolver asked"
    );
    lab.connect("agent", &lab.ip(1), server.addr.port())
        .expect_ok("learned over TCP");
    expect_rcode(
        &lab.ask("agent", "tcp", NOBODY, "other.test"),
        "NXDOMAIN",
        "forbidden over TCP",
    );
    lab.env.wait_audit("for a TCP lookup", |e| {
        e["kind"] == "dns" && e["protocol"] == "tcp"
    });
}

#[test]
fn a_second_identity_cannot_use_what_the_first_learned() {
    if !root_or_skip("a_second_identity_cannot_use_what_the_first_learned") {
        return;
    }
    let lab = Lab::new(
        "dns-ident",
        "  - id: first\n    egress:\n      allow:\n        - host: shared.test\n  - id: second\n    egress:\n      allow:\n        - host: mine.test\n",
        &[("shared.test", 1), ("mine.test", 2)],
        "",
    );
    let server = TcpServer::start(&lab.ip(1));
    expect_rcode(
        &lab.ask("first", "udp", NOBODY, "shared.test"),
        "NOERROR",
        "first asks",
    );
    lab.connect("first", &lab.ip(1), server.addr.port())
        .expect_ok("first connects");
    lab.connect("second", &lab.ip(1), server.addr.port())
        .expect_eperm("second, to the address first learned");
    expect_rcode(
        &lab.ask("second", "udp", NOBODY, "shared.test"),
        "NXDOMAIN",
        "second asks for first's name",
    );
    lab.connect("second", &lab.ip(1), server.addr.port())
        .expect_eperm("still refused to second");
}

#[test]
fn learned_names_survive_a_restart_and_unlearned_ones_fail_closed_meanwhile() {
    if !root_or_skip("learned_names_survive_a_restart") {
        return;
    }
    let mut lab = Lab::with_raw(
        "dns-restart",
        "  - id: agent\n    egress:\n      allow:\n        - host: '*.keep.test'\n",
        &[("b.keep.test", 2)],
        &["--host-record=a.keep.test,127.225.{n}.1,60"],
        "",
    );
    let a = TcpServer::start(&lab.ip(1));
    let b = TcpServer::start(&lab.ip(2));
    let (ip_a, ip_b) = (lab.ip(1), lab.ip(2));
    let (port_a, port_b) = (a.addr.port().to_string(), b.addr.port().to_string());
    let mut agent = Agent::start(&lab.env, "agent");
    let r = agent.run(&["dns", "udp", NOBODY, "a.keep.test"]);
    expect_rcode(&r, "NOERROR", "before the crash");
    // Saved within a second; then the daemon dies without any cleanup.
    let state = lab.env.dir.join("dns-learned.json");
    let saved = wait_for(Duration::from_secs(5), || {
        std::fs::read_to_string(&state)
            .ok()
            .filter(|t| t.contains("a.keep.test"))
            .map(drop)
    });
    assert!(
        saved.is_some(),
        "learned names were not saved to {}",
        state.display()
    );
    lab.daemon.kill9();
    agent
        .run(&["tcp", &ip_a, &port_a])
        .expect_ok("learned address, daemon down");
    let r = agent.run(&["dns", "udp", NOBODY, "b.keep.test"]);
    assert!(!r.ok(), "a lookup with the daemon down must fail: {}", r.0);
    agent
        .run(&["tcp", &ip_b, &port_b])
        .expect_eperm("unlearned address, daemon down");
    assert!(
        !lab.upstream.was_asked("b.keep.test"),
        "the query went around the proxy"
    );

    lab.daemon = DaemonProc::start(&lab.env);
    agent
        .run(&["tcp", &ip_a, &port_a])
        .expect_ok("learned address after the restart");
    expect_rcode(
        &agent.run(&["dns", "udp", NOBODY, "b.keep.test"]),
        "NOERROR",
        "after the restart",
    );
    agent
        .run(&["tcp", &ip_b, &port_b])
        .expect_ok("newly learned after the restart");
    // The restarted daemon still knows which name each address came from:
    // a reload that drops the rule closes them.
    lab.env.write_policy(
        "version: 1\nidentities:\n  - id: agent\n    egress:\n      allow:\n        - host: other.test\n",
    );
    lab.daemon.hup();
    let closed = wait_for(Duration::from_secs(5), || {
        (agent.run(&["tcp", &ip_a, &port_a]).errno() == Some(i64::from(libc::EPERM))).then_some(())
    });
    assert!(
        closed.is_some(),
        "the address stayed open after its rule was removed"
    );
    assert_eq!(lab.daemon.signal_and_wait(Signal::SIGTERM), Some(0));
}

#[test]
fn malformed_and_oversized_queries_do_not_crash_the_proxy() {
    if !root_or_skip("malformed_and_oversized_queries_do_not_crash_the_proxy") {
        return;
    }
    let lab = Lab::new(
        "dns-fuzz",
        "  - id: agent\n    egress:\n      allow:\n        - host: api.test\n",
        &[("api.test", 1)],
        "",
    );
    // A header that claims one question and ends there.
    let truncated = "12340100000100000000000003";
    for (how, bytes) in [
        ("raw-udp", truncated),
        ("raw-udp", "ff"),
        ("raw-udp", "big"),
        ("raw-tcp", truncated),
        ("raw-tcp", "big"),
        // A response (QR set) must not be answered.
        ("raw-udp", "123481800001000000000000"),
    ] {
        let r = Probe::enrolled(&lab.env, "agent", &["dns", how, NOBODY, bytes]);
        assert!(r.ok(), "{how} {}: {}", &bytes[..bytes.len().min(16)], r.0);
        if bytes == truncated {
            assert_eq!(r.0["rcode"], "FORMERR", "{how}: {}", r.0);
        }
    }
    expect_rcode(
        &lab.ask("agent", "udp", NOBODY, "api.test"),
        "NOERROR",
        "the proxy still answers",
    );
    lab.env.wait_audit("for the malformed query", |e| {
        e["kind"] == "dns" && e["reason"] == "malformed-query"
    });
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(lab.daemon.pid() as i32), None).is_ok(),
        "the daemon died:\n{}",
        lab.daemon.log_text()
    );
}

#[test]
fn a_learned_deny_beats_a_cidr_allow() {
    if !root_or_skip("a_learned_deny_beats_a_cidr_allow") {
        return;
    }
    let lab = Lab::with_raw(
        "dns-learned-deny",
        "  - id: agent\n    egress:\n      allow:\n        - cidr: 127.225.{n}.0/24\n        - host: '*.corp.test'\n      deny:\n        - {id: no-evil, host: evil.other.test}\n",
        &[("evil.other.test", 2), ("fine.other.test", 3)],
        &["--cname=leak.corp.test,evil.other.test"],
        "",
    );
    let evil = TcpServer::start(&lab.ip(2));
    let fine = TcpServer::start(&lab.ip(3));
    lab.connect("agent", &lab.ip(2), evil.addr.port())
        .expect_ok("the cidr rule admits it before anything is learned");
    let r = lab.ask("agent", "udp", NOBODY, "leak.corp.test");
    expect_rcode(&r, "NXDOMAIN", "a chain into a denied name");
    lab.connect("agent", &lab.ip(2), evil.addr.port())
        .expect_eperm("the denied name's address, learned as a deny, beats the cidr allow");
    lab.connect("agent", &lab.ip(3), fine.addr.port())
        .expect_ok("other addresses of the cidr rule");
    let ev = lab.env.wait_audit("for the learned deny", |e| {
        e["kind"] == "network" && e["verdict"] == "deny" && e["dst_ip"] == lab.ip(2)
    });
    assert_eq!(
        (ev["reason"].as_str(), ev["rule"].as_str()),
        (Some("deny-rule"), Some("no-evil"))
    );
}

#[test]
fn audit_mode_answers_forbidden_names_and_records_would_deny() {
    if !root_or_skip("audit_mode_answers_forbidden_names_and_records_would_deny") {
        return;
    }
    let lab = Lab::new(
        "dns-audit",
        "  - id: shadow\n    mode: audit\n    egress:\n      allow:\n        - host: ok.test\n",
        &[("ok.test", 1), ("elsewhere.test", 2)],
        "",
    );
    let r = lab.ask("shadow", "udp", NOBODY, "elsewhere.test");
    expect_rcode(&r, "NOERROR", "forbidden name in audit mode");
    assert_eq!(addrs(&r), vec![lab.ip(2)]);
    let ev = lab.env.wait_audit("for the would-deny lookup", |e| {
        e["kind"] == "dns" && e["dns"]["query"] == "elsewhere.test"
    });
    assert_eq!(
        (ev["verdict"].as_str(), ev["reason"].as_str()),
        (Some("audit"), Some("no-host-rule"))
    );
    assert_eq!(ev["mode"], "audit");
}

/// A query whose labels are given as raw bytes, in hex, as the probe's
/// `dns raw-udp` sends it (id 0x1234, recursion desired, type A).
fn raw_query(labels: &[&[u8]]) -> String {
    let mut bytes = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in labels {
        bytes.push(l.len() as u8);
        bytes.extend_from_slice(l);
    }
    bytes.extend_from_slice(&[0, 0, 1, 0, 1]);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A label holding a dot prints as `x\.allowed.test`, which a wildcard
/// `*.allowed.test` would match — yet the name asked upstream is the label
/// `x.allowed` under `test`, a zone the policy does not allow. Names with
/// bytes no host name has are refused before judging, for root and for an
/// unprivileged user alike, and the upstream never hears them.
#[test]
fn a_label_holding_a_dot_cannot_pass_for_an_allowed_name() {
    if !root_or_skip("a_label_holding_a_dot_cannot_pass_for_an_allowed_name") {
        return;
    }
    let lab = Lab::new(
        "dns-label",
        "  - id: agent\n    egress:\n      allow:\n        - host: '*.allowed.test'\n",
        &[("x.allowed.test", 1)],
        "",
    );
    let smuggled: [&[&[u8]]; 3] = [
        &[b"x.allowed", b"test"],
        &[b"x", b"y\\.allowed", b"test"],
        &[b"secret\x00", b"allowed", b"test"],
    ];
    for user in [None, Some("65534")] {
        for labels in smuggled {
            let hex = raw_query(labels);
            let mut args = vec![];
            if let Some(u) = user {
                args.extend(["as-user", u]);
            }
            args.extend(["dns", "raw-udp", NOBODY, hex.as_str()]);
            let r = Probe::enrolled(&lab.env, "agent", &args);
            assert_eq!(r.0["rcode"], "REFUSED", "{labels:?} as {user:?}: {}", r.0);
        }
    }
    // Control: the same raw path with ordinary labels is judged, allowed
    // and asked upstream.
    let r = Probe::enrolled(
        &lab.env,
        "agent",
        &[
            "as-user",
            "65534",
            "dns",
            "raw-udp",
            NOBODY,
            &raw_query(&[b"x", b"allowed", b"test"]),
        ],
    );
    assert_eq!(r.0["rcode"], "NOERROR", "the control: {}", r.0);
    assert!(
        wait_for(Duration::from_secs(5), || lab
            .upstream
            .was_asked("x.allowed.test")
            .then_some(()))
        .is_some(),
        "the control never reached the upstream:\n{}",
        lab.upstream.log_text()
    );
    let log = lab.upstream.log_text();
    let asked: Vec<&str> = log.lines().filter(|l| l.contains("query[")).collect();
    assert!(
        // (`up.invalid` is the daemon's own readiness probe.)
        asked
            .iter()
            .all(|l| l.contains(" x.allowed.test from") || l.contains(" up.invalid from")),
        "the upstream heard a smuggled name: {asked:#?}"
    );
    lab.env.wait_audit("for the refused name", |e| {
        e["kind"] == "dns"
            && e["reason"] == "not-a-host-name"
            && e.to_string().contains("x\\\\.allowed.test")
    });
}

/// A connection opened to an address learned from DNS is not cut when the
/// name's TTL runs out, nor by a later reload that still allows the name:
/// only new connections need a fresh answer. The far end, a listener on
/// the learned address, keeps receiving after the reload.
#[test]
fn a_connection_to_a_learned_name_outlives_its_ttl_and_a_reload() {
    if !root_or_skip("a_connection_to_a_learned_name_outlives_its_ttl_and_a_reload") {
        return;
    }
    let identity = "  - id: agent\n    egress:\n      allow:\n        - host: brief.test\n";
    let lab = Lab::with_raw(
        "dns-outlive",
        identity,
        &[],
        &["--host-record=brief.test,127.225.{n}.1,1"],
        "",
    );
    // Long windows: on a slow host the TTL, the sweep and the reload must
    // all fit inside the stream, with a second of it left after the reload.
    let sink = Sink::start_here(&lab.ip(1), &[9561], &[9571], 10000);
    expect_rcode(
        &lab.ask("agent", "udp", NOBODY, "brief.test"),
        "NOERROR",
        "the name",
    );
    let stream = exec_stream(
        &lab.env.socket,
        "agent",
        false,
        &lab.ip(1),
        9561,
        9571,
        8000,
    );
    // Past the TTL, and past the daemon's sweep of what expired.
    std::thread::sleep(Duration::from_millis(2200));
    lab.connect("agent", &lab.ip(1), 9561)
        .expect_eperm("a new connection after the TTL");
    lab.env.write_policy(&format!(
        "version: 1\nidentities:\n{identity}        - {{id: unrelated, cidr: 127.9.9.8, ports: [1]}}\n"
    ));
    lab.env.cli_ok(&["reload"]);
    let reloaded_at = now_ns();
    let out = stream.join().unwrap_or_else(|_| panic!("stream"));
    let seen = sink.finish();
    assert!(
        out.ok() && out.0["tcp_errno"].is_null() && out.0["udp_errno"].is_null(),
        "{}",
        out.0
    );
    for key in ["tcp/9561", "udp/9571"] {
        let r = seen.get(key).copied().unwrap_or_default();
        assert!(
            r.last_ns > reloaded_at + 1_000_000_000,
            "{key} stopped after the TTL or the reload: {r:?} (reload at {reloaded_at})"
        );
    }
}

/// A DNS label sequence on the wire (`a.b` → `\x01a\x01b\x00`).
fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for l in name.split('.').filter(|l| !l.is_empty()) {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
    out
}

/// A query for `qname` (type A) that also carries a record owned by
/// `smuggled` in its additional section and an EDNS option holding
/// `payload`: data a compromised agent would like the upstream to see.
fn laden_query(qname: &str, smuggled: &str, payload: &[u8]) -> String {
    let mut b = vec![0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 2];
    b.extend(wire_name(qname));
    b.extend([0, 1, 0, 1]);
    b.extend(wire_name(smuggled));
    b.extend([0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
    // OPT: root owner, type 41, payload size 1232, no flags, one option.
    b.extend([0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    let rdlen = 4 + payload.len() as u16;
    b.extend(rdlen.to_be_bytes());
    b.extend(65001u16.to_be_bytes());
    b.extend((payload.len() as u16).to_be_bytes());
    b.extend_from_slice(payload);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The proxy judges the question and asks the upstream only that: records
/// in the other sections, EDNS options and the letter case of an allowed
/// name never leave the host, for root and unprivileged agents, over UDP
/// and TCP. The far end is a capture beside the upstream (dnsmasq) in a
/// namespace the test creates; the control is the allowed name itself,
/// which does arrive.
#[test]
fn what_a_query_carries_besides_its_question_never_reaches_the_upstream() {
    if !root_or_skip("what_a_query_carries_besides_its_question_never_reaches_the_upstream") {
        return;
    }
    let ns = NetNs::new("dnssmug", 221);
    let n = dns::slot();
    let env = palisade_tests::TestEnv::new(
        "dns-smuggle",
        "version: 1\nidentities:\n  - id: agent\n    egress:\n      allow:\n        - host: allowed.test\n",
    );
    let upstream_addr = format!("{}:53", dns::upstream_ip(n));
    env.write_config(
        &dns::config(n, &env.dir, "").replace(&upstream_addr, &format!("{}:53", ns.peer_ip)),
    );
    let _upstream = Dnsmasq::start(
        &env.dir,
        Some(&ns.name),
        &ns.peer_ip,
        &[format!(
            "--host-record=allowed.test,{}",
            dns::answer_ip(n, 1)
        )],
    );
    let _d = DaemonProc::start(&env);
    let cap = Capture::start(
        &ns,
        5000,
        &[&ns.peer_ip],
        &["smuggled-record", "smuggled-option", "AlLoWeD", "allowed"],
    );
    for user in [None, Some("65534")] {
        for how in ["raw-udp", "raw-tcp"] {
            let hex = laden_query(
                "AlLoWeD.test",
                "smuggled-record.evil.test",
                b"smuggled-option",
            );
            let mut args = vec![];
            if let Some(u) = user {
                args.extend(["as-user", u]);
            }
            args.extend(["dns", how, NOBODY, hex.as_str()]);
            let r = Probe::enrolled(&env, "agent", &args);
            assert_eq!(r.0["rcode"], "NOERROR", "{how} as {user:?}: {}", r.0);
        }
    }
    // The type field is not free-form either: a type outside the askable
    // ones is refused by the proxy; an ordinary one is asked (the control).
    for user in [None, Some("65534")] {
        for (qtype, rcode) in [("NULL", "REFUSED"), ("A", "NOERROR")] {
            let mut args = vec![];
            if let Some(u) = user {
                args.extend(["as-user", u]);
            }
            args.extend(["dns", "udp", NOBODY, "allowed.test", qtype]);
            let r = Probe::enrolled(&env, "agent", &args);
            assert_eq!(r.0["rcode"], rcode, "{qtype} as {user:?}: {}", r.0);
        }
    }
    env.wait_audit("for the proxy's own refusal of the odd type", |e| {
        e["kind"] == "dns" && e["reason"] == "question-refused"
    });
    let seen = cap.finish();
    assert!(
        seen.get("allowed").copied().unwrap_or(0) > 0,
        "the control: the allowed question never reached the upstream: {seen:?}"
    );
    for marker in ["smuggled-record", "smuggled-option", "AlLoWeD"] {
        assert_eq!(
            seen.get(marker).copied().unwrap_or(0),
            0,
            "{marker} reached the upstream: {seen:?}"
        );
    }
}
