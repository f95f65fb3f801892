//! Least privilege from evidence, end to end: a real agent runs in audit
//! mode against loopback servers and a real DNS server; `palisade policy
//! suggest` turns the trail into a policy; enforced, that policy lets the
//! same agent do exactly what it did, and nothing new.

use std::{path::Path, process::Command};

use palisade_tests::{
    Outcome, Probe, TcpServer, UdpServer,
    dns::{Lab, upstream_ip},
    palisade_bin,
    probe::{RpcAs, rpc},
    root_or_skip, wait_for,
};
use serde_json::Value;

/// `palisade ARGS` (no daemon involved); stdout, or a panic with stderr.
fn palisade(args: &[&str]) -> String {
    let out = Command::new(palisade_bin())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("palisade {args:?}: {e}"));
    assert!(
        out.status.success(),
        "palisade {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_else(|| panic!("path {}", p.display()))
}

/// The loopback servers of this test: a name served by DNS, an address
/// reached without a lookup (TCP) and one reached over UDP, in the test's
/// own ranges (127.180.n.0/24 besides the DNS slot's addresses).
struct World {
    named: TcpServer,
    direct: TcpServer,
    udp: UdpServer,
    other_named: TcpServer,
    other_direct: TcpServer,
}

fn world(lab: &Lab) -> World {
    let n = lab.n;
    World {
        named: TcpServer::start(&lab.ip(1)),
        other_named: TcpServer::start(&lab.ip(2)),
        direct: TcpServer::start(&format!("127.180.{n}.1")),
        other_direct: TcpServer::start(&format!("127.180.{n}.3")),
        udp: UdpServer::start(&format!("127.180.{n}.2")),
    }
}

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

fn pay(lab: &Lab, amount: u32) -> Value {
    rpc(
        &lab.env,
        RpcAs::Identity("agent"),
        &[
            "decide",
            "fresh",
            "stripe",
            "create_payment",
            &format!(r#"{{"amount": {amount}, "currency": "USD"}}"#),
        ],
    )
}

/// What the agent does: look up its API and call it, reach a database by
/// address, send metrics over UDP, make two payments. Each step must work.
fn behave(lab: &Lab, w: &World) {
    let r = Probe::enrolled(
        &lab.env,
        "agent",
        &["dns", "udp", &upstream_ip(lab.n), "api.test"],
    );
    assert_eq!(r.0["rcode"], "NOERROR", "lookup of api.test: {}", r.0);
    assert_eq!(addrs(&r), vec![lab.ip(1)]);
    lab.connect("agent", &lab.ip(1), w.named.addr.port())
        .expect_ok("the API by name");
    lab.connect(
        "agent",
        &w.direct.addr.ip().to_string(),
        w.direct.addr.port(),
    )
    .expect_ok("the database by address");
    let before = w.udp.received();
    Probe::enrolled(
        &lab.env,
        "agent",
        &["udp", &w.udp.addr.ip().to_string(), &w.udp.port()],
    )
    .expect_ok("metrics over UDP");
    assert_eq!(w.udp.received(), before + 1, "the datagram arrived");
    for amount in [120, 4200] {
        let v = pay(lab, amount);
        assert_eq!(v["ok"], true, "payment of {amount}: {v}");
        assert_eq!(v["verdict"], "ALLOW", "payment of {amount}: {v}");
    }
}

#[test]
fn the_suggested_policy_allows_exactly_what_the_agent_did() {
    if !root_or_skip("the_suggested_policy_allows_exactly_what_the_agent_did") {
        return;
    }
    let lab = Lab::new(
        "discovery",
        "  - id: agent\n    mode: audit\n    exec_only: true\n",
        &[("api.test", 1), ("other.test", 2)],
        "  steer_audit: true\n",
    );
    let w = world(&lab);
    let env = &lab.env;

    // 1. Shadow mode: everything works and is recorded.
    behave(&lab, &w);
    let udp_dst = w.udp.addr.ip().to_string();
    env.wait_audit("for the UDP send", |e| {
        e["kind"] == "network" && e["dst_ip"] == udp_dst.as_str() && e["verdict"] == "audit"
    });
    env.wait_audit("for the second payment", |e| {
        e["kind"] == "decision" && e["call"]["numbers"]["amount"] == 4200
    });
    env.wait_audit("for the lookup", |e| {
        e["kind"] == "dns" && e["dns"]["query"] == "api.test" && e["verdict"] == "audit"
    });

    // 2. The suggestion: strict-clean, hosts over addresses, bounds.
    let suggested = env.dir.join("suggested.yaml");
    let trail = path(&env.audit);
    palisade(&[
        "policy",
        "suggest",
        "--trail",
        trail,
        "--identity",
        "agent",
        "--out",
        path(&suggested),
    ]);
    let text = std::fs::read_to_string(&suggested).unwrap_or_else(|e| panic!("{e}"));
    let expect = [
        format!(
            "host: api.test, ports: [{}], protocol: tcp",
            w.named.addr.port()
        ),
        format!(
            "cidr: 127.180.{}.1/32, ports: [{}], protocol: tcp",
            lab.n,
            w.direct.addr.port()
        ),
        format!(
            "cidr: 127.180.{}.2/32, ports: [{}], protocol: udp",
            lab.n,
            w.udp.addr.port()
        ),
        "when: \"params.amount >= 0 && params.amount <= 4200\"".to_string(),
        "exec_only: true".to_string(),
    ];
    for e in &expect {
        assert!(text.contains(e.as_str()), "missing `{e}` in:\n{text}");
    }
    assert!(
        !text.contains(&format!("cidr: {}", lab.ip(1))),
        "the API is named, not addressed:\n{text}"
    );
    palisade(&["policy", "check", "--strict", path(&suggested)]);

    // The test matrix passes against it.
    let suite = env.dir.join("suite.yaml");
    palisade(&[
        "policy",
        "suggest",
        "--trail",
        trail,
        "--identity",
        "agent",
        "--tests",
        "--out",
        path(&suite),
    ]);
    let report = palisade(&["policy", "test", "--policy", path(&suggested), path(&suite)]);
    assert!(report.contains(" 0 failed"), "{report}");
    assert!(report.contains("the next port"), "{report}");

    // 3. Enforce it: the same agent passes.
    env.write_policy(&text);
    env.cli_ok(&["reload"]);
    assert_eq!(
        env.status()["identities"][0]["mode"],
        "enforce",
        "{}",
        env.status()
    );
    behave(&lab, &w);

    // 4. One new destination, each way: denied.
    let r = Probe::enrolled(
        env,
        "agent",
        &["dns", "udp", &upstream_ip(lab.n), "other.test"],
    );
    assert_eq!(
        r.0["rcode"], "NXDOMAIN",
        "a name it never looked up: {}",
        r.0
    );
    lab.connect("agent", &lab.ip(2), w.other_named.addr.port())
        .expect_eperm("the other name's address");
    lab.connect(
        "agent",
        &w.other_direct.addr.ip().to_string(),
        w.other_direct.addr.port(),
    )
    .expect_eperm("a new address");
    lab.connect(
        "agent",
        &w.direct.addr.ip().to_string(),
        w.other_direct.addr.port(),
    )
    .expect_eperm("a new port on a known address");
    Probe::enrolled(
        env,
        "agent",
        &["udp", &udp_dst, &w.direct.addr.port().to_string()],
    )
    .expect_eperm("UDP to another port");
    let v = pay(&lab, 4201);
    assert_eq!(v["verdict"], "DENY", "a payment over the bound: {v}");
    assert_eq!(
        w.other_named
            .accepted
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(
        w.other_direct
            .accepted
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    // 5. unused, on the trail of the enforced run.
    let report = wait_for(std::time::Duration::from_secs(5), || {
        let json = palisade(&[
            "policy",
            "unused",
            "--policy",
            path(&suggested),
            "--trail",
            trail,
            "--json",
        ]);
        let v: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
        let status = |kind: &str| {
            v["rules"]
                .as_array()
                .and_then(|rules| {
                    rules
                        .iter()
                        .find(|r| r["summary"].as_str().is_some_and(|s| s.contains(kind)))
                })
                .map(|r| r["status"].as_str().unwrap_or_default().to_string())
        };
        (status("api.test").as_deref() == Some("used")).then(|| v.clone())
    });
    let v = report.unwrap_or_else(|| panic!("the host rule was never reported used"));
    let by_summary = |needle: &str| {
        v["rules"]
            .as_array()
            .and_then(|r| {
                r.iter()
                    .find(|r| r["summary"].as_str().is_some_and(|s| s.contains(needle)))
            })
            .cloned()
            .unwrap_or_else(|| panic!("no rule with {needle}: {v}"))
    };
    assert_eq!(by_summary("stripe")["status"], "used", "{v}");
    assert_eq!(by_summary("stripe")["uses"], 2, "two allowed payments: {v}");
    assert_eq!(by_summary("/32 udp")["status"], "no-evidence", "{v}");
}
