//! DNS answers an attacker controls, and DNS floods, against the real
//! kernel, a real dnsmasq and the real proxy: an allowed name pointing
//! inside opens nothing unless a cidr rule vouches for it, and one identity
//! flooding lookups (fast or slow) cannot take the learned map or the
//! proxy's upstream slots from another, nor flood the trail.

use std::time::Duration;

use palisade_tests::{Probe, TcpServer, dns::Lab, root_or_skip};

/// A resolver address nothing listens on: only steering can answer it.
const NOBODY: &str = "127.9.9.9";

fn addrs(o: &palisade_tests::Outcome) -> Vec<String> {
    o.0["addrs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn inside_addresses_in_answers_are_not_learned_unless_a_cidr_rule_covers_them() {
    if !root_or_skip("inside_addresses_in_answers_are_not_learned_unless_a_cidr_rule_covers_them") {
        return;
    }
    // `plain` may look up anything under corp.test; `vouched` also has a
    // cidr rule over the slot's loopback range (for UDP port 1 only, so it
    // opens nothing the test uses by itself).
    let lab = Lab::with_raw(
        "dns-inside",
        "  - id: plain\n    egress:\n      allow:\n        - {host: '*.corp.test', protocol: tcp}\n  - id: vouched\n    egress:\n      allow:\n        - {host: '*.corp.test', protocol: tcp}\n        - {cidr: 127.225.{n}.0/24, ports: [1], protocol: udp}\n",
        &[("lo.corp.test", 5), ("mixed.corp.test", 6)],
        &[
            "--host-record=meta.corp.test,169.254.169.254",
            "--host-record=mixed.corp.test,198.51.100.7",
            "--host-record=mapped.corp.test,::ffff:10.1.2.3",
            "--host-record=ula.corp.test,fd00:140::5",
        ],
        "  learn_internal: []\n",
    );
    let inside = lab.ip(5);
    let server = TcpServer::start(&inside);
    let port = server.addr.port();

    // The attack: an allowed name answering with a loopback address.
    let r = lab.ask("plain", "udp", NOBODY, "lo.corp.test");
    assert_eq!(r.0["rcode"], "NOERROR", "{}", r.0);
    assert!(
        addrs(&r).is_empty(),
        "the inside address reached the agent: {}",
        r.0
    );
    lab.connect("plain", &inside, port)
        .expect_eperm("connect to the inside address an allowed name gave");
    assert_eq!(
        server.accepted.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let ev = lab.env.wait_audit("for the withheld answer", |e| {
        e["kind"] == "dns" && e["identity"] == "plain" && e["dns"]["query"] == "lo.corp.test"
    });
    assert_eq!(
        (ev["verdict"].as_str(), ev["reason"].as_str()),
        (Some("deny"), Some("internal-address")),
        "{ev}"
    );
    assert_eq!(ev["dns"]["withheld"][0], inside, "{ev}");
    assert!(ev["dns"]["learned"].is_null(), "{ev}");

    // Cloud metadata, an IPv4-mapped private address and a ULA: the same.
    for (name, qtype, kind) in [
        ("meta.corp.test", "A", "metadata"),
        ("mapped.corp.test", "AAAA", "private"),
        ("ula.corp.test", "AAAA", "ula"),
    ] {
        let r = lab.ask_type("plain", NOBODY, name, qtype);
        assert!(addrs(&r).is_empty(), "{name}: {}", r.0);
        let ev = lab.env.wait_audit(&format!("for {name}"), |e| {
            e["kind"] == "dns" && e["dns"]["query"] == name
        });
        assert_eq!(ev["reason"], "internal-address", "{ev}");
        assert!(
            ev["detail"].as_str().is_some_and(|d| d.contains(kind)),
            "{name}: {ev}"
        );
    }

    // A mixed answer keeps its outside address (learned, never connected
    // to: it is a documentation address) and loses the inside one.
    let r = lab.ask("plain", "udp", NOBODY, "mixed.corp.test");
    assert_eq!(addrs(&r), vec!["198.51.100.7".to_string()], "{}", r.0);
    let ev = lab.env.wait_audit("for the mixed answer", |e| {
        e["kind"] == "dns" && e["dns"]["query"] == "mixed.corp.test"
    });
    assert_eq!(ev["verdict"], "allow", "{ev}");
    assert_eq!(ev["dns"]["learned"][0], "198.51.100.7", "{ev}");
    assert_eq!(ev["dns"]["withheld"][0], lab.ip(6), "{ev}");

    // The control: a cidr rule of the identity vouches for the range, so
    // the same answer is learned and opens the host rule's port.
    lab.connect("vouched", &inside, port)
        .expect_eperm("before the lookup, the cidr rule alone does not admit TCP");
    let r = lab.ask("vouched", "udp", NOBODY, "lo.corp.test");
    assert_eq!(addrs(&r), vec![inside.clone()], "{}", r.0);
    lab.connect("vouched", &inside, port)
        .expect_ok("the vouched inside address, learned");
    assert_eq!(server.wait_accepted(1), 1);
}

#[test]
fn an_identity_flooding_lookups_cannot_starve_another() {
    if !root_or_skip("an_identity_flooding_lookups_cannot_starve_another") {
        return;
    }
    // 300 names, each with an address of its own, against a learned map of
    // 128 entries shared by two identities.
    let flood: Vec<String> = (0..300u32)
        .map(|i| {
            format!(
                "--host-record=n{i}.flood.test,127.140.{}.{}",
                1 + i / 250,
                i % 250 + 1
            )
        })
        .collect();
    let raw: Vec<&str> = flood.iter().map(String::as_str).collect();
    let lab = Lab::with_raw(
        "dns-quota",
        "  - id: flooder\n    egress:\n      allow:\n        - {host: '*.flood.test', protocol: tcp}\n  - id: steady\n    egress:\n      allow:\n        - {host: api.steady.test, protocol: tcp}\n        - {host: '*.later.test', protocol: tcp}\n",
        &[("api.steady.test", 1), ("b.later.test", 2)],
        &raw,
        // What steady learned before the flood must outlast the flood
        // however slow the host (the default lab TTL is one second).
        "  learned_capacity: 128\n  ttl_min: 30\n",
    );
    let api = TcpServer::start(&lab.ip(1));
    let later = TcpServer::start(&lab.ip(2));
    let r = lab.ask("steady", "udp", NOBODY, "api.steady.test");
    assert_eq!(addrs(&r), vec![lab.ip(1)], "{}", r.0);
    lab.connect("steady", &lab.ip(1), api.addr.port())
        .expect_ok("steady's learned address before the flood");

    let f = Probe::enrolled(
        &lab.env,
        "flooder",
        &["dns", "flood", NOBODY, "flood.test", "300"],
    );
    assert_eq!(
        f.0["noerror"], 300,
        "every flood answer is released (its own oldest make room): {}",
        f.0
    );

    // The other identity still learns, and what it learned still holds.
    let r = lab.ask("steady", "udp", NOBODY, "b.later.test");
    assert_eq!(
        addrs(&r),
        vec![lab.ip(2)],
        "steady's lookup during the flood: {}",
        r.0
    );
    lab.connect("steady", &lab.ip(2), later.addr.port())
        .expect_ok("steady's address learned after the flood");
    lab.connect("steady", &lab.ip(1), api.addr.port())
        .expect_ok("steady's address learned before the flood");
    let failed: Vec<serde_json::Value> = lab
        .env
        .audit_events()
        .into_iter()
        .filter(|e| {
            e["kind"] == "dns"
                && e["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("learn-"))
        })
        .collect();
    assert!(failed.is_empty(), "learned-map writes failed: {failed:?}");

    // The flooder paid with its own oldest entries.
    lab.connect("flooder", "127.140.1.1", 9)
        .expect_eperm("the flooder's first address, evicted by its own quota");
    let last = lab.connect("flooder", "127.140.2.50", 9);
    assert_eq!(
        last.errno(),
        Some(i64::from(libc::ECONNREFUSED)),
        "the flooder's newest address is still learned (nothing listens): {}",
        last.0
    );
}

#[test]
fn slow_lookups_of_one_identity_are_capped_and_do_not_hold_another() {
    if !root_or_skip("slow_lookups_of_one_identity_are_capped_and_do_not_hold_another") {
        return;
    }
    // dnsmasq forwards slow.test to a socket that never answers.
    let n = palisade_tests::dns::slot();
    let hole_ip = format!("127.140.{n}.99");
    let hole = std::net::UdpSocket::bind((hole_ip.as_str(), 53))
        .unwrap_or_else(|e| panic!("blackhole resolver on {hole_ip}:53: {e}"));
    let lab = Lab::with_raw(
        "dns-inflight",
        "  - id: flooder\n    egress:\n      allow:\n        - {host: '*.slow.test', protocol: tcp}\n  - id: steady\n    egress:\n      allow:\n        - {host: api.steady.test, protocol: tcp}\n",
        &[("api.steady.test", 1)],
        &[
            &format!("--server=/slow.test/{hole_ip}"),
            "--dns-forward-max=2000",
        ],
        "  max_inflight_per_identity: 32\n  upstream_timeout_ms: 4000\n",
    );
    let sprayer = {
        let env_socket = lab.env.socket.clone();
        std::thread::spawn(move || {
            std::process::Command::new(palisade_tests::palisade_bin())
                .args(["exec", "--socket"])
                .arg(&env_socket)
                .args(["--identity", "flooder", "--"])
                .arg(Probe::bin())
                .args(["dns", "spray", NOBODY, "slow.test", "400"])
                .output()
                .unwrap_or_else(|e| panic!("spray: {e}"))
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let r = lab.ask("steady", "udp", NOBODY, "api.steady.test");
    assert_eq!(
        addrs(&r),
        vec![lab.ip(1)],
        "steady's lookup during the slow flood: {}",
        r.0
    );
    let out = sprayer.join().unwrap_or_else(|_| panic!("spray thread"));
    let spray: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("spray said {:?}: {e}", String::from_utf8_lossy(&out.stdout)));
    // Beyond 32 waiting, each new query cancels the flooder's oldest, which
    // is answered SERVFAIL at once; the last 32 are still waiting.
    let servfail = spray["servfail"].as_u64().unwrap_or(0);
    assert!(
        servfail >= 400 - 32 - 8,
        "evicted queries answered SERVFAIL: {spray}"
    );
    // Each eviction is in the trail: one by one up to the identity's
    // budget of lookup records, the rest counted in an aggregate record
    // when the period ends.
    let evictions = |e: &serde_json::Value| {
        e["kind"] == "dns" && e["reason"] == "inflight-evicted" && e["identity"] == "flooder"
    };
    lab.env
        .wait_audit_for(Duration::from_secs(20), "for the aggregate record", |e| {
            evictions(e) && e["count"].is_u64()
        });
    let evicted: u64 = lab
        .env
        .audit_events()
        .iter()
        .filter(|e| evictions(e))
        .map(|e| e["count"].as_u64().unwrap_or(1))
        .sum();
    assert!(evicted >= 400 - 32 - 8, "{evicted} evictions recorded");
    drop(hole);
}

/// A flood of forbidden names, as uid 65534 inside the agent: the trail
/// gets at most the identity's budget of lookup records per period plus
/// one aggregate record, and every lookup is still counted (records plus
/// the aggregate's `count` equal the lookups made). Another identity's
/// lookups meanwhile are recorded one by one (the control).
#[test]
fn a_lookup_flood_costs_a_budget_of_records_and_every_lookup_is_counted() {
    if !root_or_skip("a_lookup_flood_costs_a_budget_of_records_and_every_lookup_is_counted") {
        return;
    }
    let lab = Lab::new(
        "dns-trail-flood",
        "  - id: flooder\n    egress:\n      allow:\n        - host: ok.test\n  - id: steady\n    egress:\n      allow:\n        - host: ok.test\n",
        &[("ok.test", 1)],
        "",
    );
    const FLOOD: u64 = 3000;
    let f = Probe::enrolled(
        &lab.env,
        "flooder",
        &[
            "as-user",
            "65534",
            "dns",
            "flood",
            NOBODY,
            "evil.test",
            &FLOOD.to_string(),
        ],
    );
    assert_eq!(f.0["other"], FLOOD, "every forbidden name refused: {}", f.0);
    let r = lab.ask("steady", "udp", NOBODY, "ok.test");
    assert_eq!(r.0["rcode"], "NOERROR", "{}", r.0);
    // The period ends within 10 s; its aggregate record follows.
    let agg = lab
        .env
        .wait_audit_for(Duration::from_secs(20), "for the aggregate record", |e| {
            e["kind"] == "dns" && e["identity"] == "flooder" && e["count"].is_u64()
        });
    assert_eq!(
        (agg["verdict"].as_str(), agg["reason"].as_str()),
        (Some("deny"), Some("no-host-rule")),
        "{agg}"
    );
    let all = lab.env.audit_events();
    let one_by_one = all
        .iter()
        .filter(|e| e["kind"] == "dns" && e["identity"] == "flooder" && e["count"].is_null())
        .count() as u64;
    let counted: u64 = all
        .iter()
        .filter(|e| e["kind"] == "dns" && e["identity"] == "flooder")
        .filter_map(|e| e["count"].as_u64())
        .sum();
    assert!(
        one_by_one <= 200,
        "{one_by_one} lookup records for one identity in one period"
    );
    assert_eq!(one_by_one + counted, FLOOD, "every lookup counted");
    assert!(
        all.iter().any(|e| e["kind"] == "dns"
            && e["identity"] == "steady"
            && e["dns"]["query"] == "ok.test"),
        "the other identity's lookup was not recorded"
    );
}
