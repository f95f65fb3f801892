//! Going around the gateway's tool rules, as an attacker would: straight
//! to the upstream (kernel), aiming the gateway elsewhere (absolute-form,
//! CONNECT, a forged Host), or asking as another identity (or claiming to
//! be one). Each attack is carried out by an enrolled agent and checked at
//! the far end — the upstream's log or a listener that must see nothing —
//! next to a control showing the same path works when allowed.

use std::{process::Command, sync::atomic::Ordering, time::Duration};

use palisade_tests::{
    Outcome, Probe, TcpServer,
    gateway::{agent, exec, exec_unprivileged, gateway_python, parse_agent, python_dir, request},
    gateway_fixture::{Fixture, pay, start},
    wait_for,
};
use serde_json::{Value, json};

/// The probe, enrolled as `identity`, then as the unprivileged user 65534.
fn unprivileged(f: &Fixture, identity: &str, args: &[&str]) -> Outcome {
    let bin = Probe::bin();
    let out = exec_unprivileged(&f.env, identity, &bin.to_string_lossy(), args)
        .output()
        .unwrap_or_else(|e| panic!("probe: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_else(|| {
        panic!(
            "unprivileged probe printed nothing: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    Outcome(serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
}

#[test]
fn the_upstream_is_reachable_only_through_the_gateway() {
    let Some(f) = start("gw-direct") else { return };
    let up = format!("127.170.{}.2", f.net);
    Probe::enrolled(&f.env, "finance-agent", &["tcp", &up, "8443"])
        .expect_eperm("an enrolled agent connecting to the upstream directly");
    unprivileged(&f, "finance-agent", &["tcp", &up, "8443"])
        .expect_eperm("an unprivileged enrolled agent connecting to the upstream directly");
    Probe::enrolled(&f.env, "finance-agent", &["udp", &up, "8443"])
        .expect_eperm("UDP to the upstream directly");
    Probe::plain(&["tcp", &up, "8443"]).expect_ok("the same connection, not enrolled");
    Probe::enrolled(&f.env, "finance-agent", &["tcp", &f.gateway(), "9001"])
        .expect_ok("the gateway endpoint");
    Probe::enrolled(&f.env, "finance-agent", &["tcp", &f.gateway(), "9002"])
        .expect_eperm("a port of the gateway address nothing serves");
    Probe::enrolled(&f.env, "finance-agent", &["udp", &f.gateway(), "9001"])
        .expect_eperm("UDP to the gateway address");
    Probe::enrolled(
        &f.env,
        "finance-agent",
        &["tcp", &format!("::ffff:{up}"), "8443"],
    )
    .expect_eperm("the upstream through an IPv4-mapped IPv6 address");
    assert!(f.upstream.requests().is_empty());

    // A process that is not enrolled reaches the gateway and is refused.
    let out = Command::new(gateway_python())
        .arg(python_dir().join("agent_http.py"))
        .args([
            "requests",
            &f.base(),
            &json!([request("GET", "/v1/customers/x")]).to_string(),
        ])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let out = parse_agent(&out);
    assert_eq!(out[0]["status"], 403);
    assert_eq!(out[0]["body"]["error"]["reason"], "caller-not-enrolled");
    assert!(f.upstream.requests().is_empty());

    // A policy that would open a direct path is refused by `policy check`.
    let bad = f.env.dir.join("bypass.yaml");
    let text = std::fs::read_to_string(&f.env.policy)
        .unwrap_or_default()
        .replace(
            "  - id: other-agent\n",
            "  - id: other-agent\n    egress:\n      allow:\n        - {id: direct, cidr: 127.170.0.0/16}\n",
        );
    std::fs::write(&bad, text).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(palisade_tests::palisade_bin())
        .args(["policy", "check"])
        .arg(&bad)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "bypass.yaml:41:11: identity `other-agent` may reach 127.170.{}.2:8443 directly (rule `direct`), but service `stripe` protects it",
            f.net
        )),
        "{err}"
    );
}

#[test]
fn the_gateway_cannot_be_aimed_elsewhere() {
    let Some(f) = start("gw-aim") else { return };
    // A listener the policy protects nothing on, in the test's own subnet:
    // reachable when not enrolled (the control), never through the gateway.
    let other = TcpServer::start(&format!("127.170.{}.3", f.net));
    let target = format!("127.170.{}.3:{}", f.net, other.port());
    Probe::plain(&["tcp", &format!("127.170.{}.3", f.net), &other.port()])
        .expect_ok("the other listener, not enrolled");
    let accepted = || other.accepted.load(Ordering::Relaxed);
    wait_for(Duration::from_secs(5), || (accepted() >= 1).then_some(()))
        .unwrap_or_else(|| panic!("the control never arrived"));
    let seen = accepted();

    let up = format!("127.170.{}.2:8443", f.net);
    for (who, t) in [("finance-agent", &target), ("finance-agent", &up)] {
        let script = python_dir().join("abuse.py");
        let out = exec(
            &f.env,
            who,
            &gateway_python(),
            &[&script.to_string_lossy(), "proxy", &f.gateway(), "9001", t],
        )
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        let res: Vec<Value> = serde_json::from_str(text.lines().last().unwrap_or("null"))
            .unwrap_or_else(|e| panic!("proxy output {text:?}: {e}"));
        assert_eq!(res.len(), 3);
        for r in &res {
            assert_eq!(r["status"], 400, "aimed at {t}: {r}");
            assert!(
                r["body"]
                    .as_str()
                    .is_some_and(|b| b.contains("not-a-proxy")),
                "{r}"
            );
        }
    }
    // A forged Host header is dropped: the request goes to the service's
    // upstream under the upstream's own name.
    let out = agent(
        &f.env,
        "finance-agent",
        "requests",
        &f.base(),
        &[json!({"method": "GET", "path": "/v1/customers/forged",
                  "headers": {"Host": target, "X-Forwarded-Host": target}})],
    );
    assert_eq!(out[0]["status"], 200, "{}", out[0]);

    // The listener counts what it accepts every few milliseconds.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        accepted(),
        seen,
        "the gateway connected to the other listener"
    );
    let reqs = f.upstream.requests();
    assert_eq!(
        reqs.len(),
        1,
        "only the origin-form request arrives: {reqs:?}"
    );
    assert_eq!(reqs[0]["path"], "/v1/customers/forged");
    assert_eq!(reqs[0]["headers"]["host"], "upstream.test:8443");
}

#[test]
fn another_identity_gets_its_own_rules_whatever_it_claims() {
    let Some(f) = start("gw-other") else { return };
    // other-agent may read customers (the control) but has no payment rule;
    // it claims finance-agent's identity in headers and brings its own
    // credential, as root and unprivileged.
    let forged = json!({"X-Palisade-Identity": "finance-agent",
                        "Authorization": "Bearer sk_stolen_elsewhere"});
    let mut payment = pay("100");
    payment["headers"] = forged.clone();
    let out = agent(
        &f.env,
        "other-agent",
        "requests",
        &f.base(),
        &[
            json!({"method": "GET", "path": "/v1/customers/o1", "headers": forged}),
            payment,
        ],
    );
    assert_eq!(out[0]["status"], 200, "control: {}", out[0]);
    assert_eq!(out[1]["status"], 403, "{}", out[1]);
    assert!(
        out[1]["body"]["error"]["decision_id"].is_string(),
        "{}",
        out[1]
    );
    let curl = exec_unprivileged(
        &f.env,
        "other-agent",
        "/usr/bin/curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "X-Palisade-Identity: finance-agent",
            "-d",
            "amount=100&currency=usd&customer=cus_1",
            &format!("{}/v1/payment_intents", f.base()),
        ],
    )
    .output()
    .unwrap_or_else(|e| panic!("curl: {e}"));
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "403", "{curl:?}");
    unprivileged(
        &f,
        "other-agent",
        &["tcp", &format!("127.170.{}.2", f.net), "8443"],
    )
    .expect_eperm("other-agent straight to the upstream");

    // At the far end: the read, with the service's credential and not the
    // agent's, and no payment at all.
    let reqs = f.upstream.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0]["path"], "/v1/customers/o1");
    assert_eq!(
        reqs[0]["headers"]["authorization"],
        format!("Bearer {}", f.secret)
    );
    let ev = f.env.wait_audit("other-agent's refused payment", |e| {
        e["kind"] == "gateway" && e["call"]["action"] == "create_payment"
    });
    assert_eq!(ev["identity"], "other-agent", "{ev}");
    assert_eq!(ev["verdict"], "deny", "{ev}");

    // The same payment as finance-agent goes through (the rule exists).
    let out = agent(
        &f.env,
        "finance-agent",
        "requests",
        &f.base(),
        &[pay("100")],
    );
    assert_eq!(out[0]["status"], 200, "{}", out[0]);
}

/// Requests built to bloat their audit records (a 30,000-byte parameter
/// name, a 30,000-byte path segment), as an unprivileged agent: each is
/// answered and recorded once, and each record stays a few KiB, with what
/// was cut said; an ordinary request is recorded in full (the control).
#[test]
fn oversized_requests_cost_the_trail_a_bounded_record_each() {
    let Some(f) = start("gw-bloat") else { return };
    let long = "a".repeat(30_000);
    let reqs = [
        request("GET", &format!("/v1/customers/o1?{long}=1")),
        request("GET", &format!("/v1/customers/{long}")),
        request("POST", &format!("/v1/payment_intents?{long}=1")),
        request("GET", "/v1/customers/o2"),
    ];
    let out = agent(&f.env, "other-agent", "requests", &f.base(), &reqs);
    assert_eq!(out.len(), reqs.len(), "{out:?}");
    assert_eq!(out[3]["status"], 200, "control: {}", out[3]);
    let records = wait_for(Duration::from_secs(10), || {
        let g: Vec<Value> = f
            .env
            .audit_events()
            .into_iter()
            .filter(|e| e["kind"] == "gateway")
            .collect();
        (g.len() >= reqs.len()).then_some(g)
    })
    .unwrap_or_else(|| panic!("not every request was recorded"));
    for r in &records {
        let size = r.to_string().len();
        assert!(size < 8 * 1024, "a {size}-byte gateway record: {r}");
    }
    let text = records
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("bytes)"), "nothing says what was cut: {text}");
    assert!(
        records
            .iter()
            .any(|r| r["call"]["resource"] == "customer/o2" && r["verdict"] == "allow"),
        "the control's record: {text}"
    );
}

/// A connection to the gateway speaks for the agent that made it, not for
/// whoever holds it later: other-agent (no payment rule) connects, hands
/// the socket to finance-agent over a Unix socket and exits; the payment
/// finance-agent sends on it is judged as other-agent's and refused, and
/// never reaches the upstream. finance-agent's own connection pays (the
/// control). As root and as the unprivileged user.
#[test]
fn a_handed_over_connection_speaks_for_its_maker() {
    let Some(f) = start("gw-handover") else {
        return;
    };
    let script = python_dir().join("handover.py");
    let script = script.to_string_lossy().to_string();
    let host = f.gateway();
    let python = "/usr/bin/python3";
    for (round, unprivileged) in [false, true].into_iter().enumerate() {
        let dir = std::env::temp_dir().join(format!(
            "palisade-handover-{}-{}-{round}",
            std::process::id(),
            f.net
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("handover.sock");
        let path = path.to_string_lossy().to_string();
        let args = |mode: &'static str| {
            vec![
                script.clone(),
                mode.into(),
                path.clone(),
                host.clone(),
                "9001".into(),
            ]
        };
        let run = |identity: &str, args: Vec<String>| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut c = if unprivileged {
                exec_unprivileged(&f.env, identity, python, &args)
            } else {
                exec(&f.env, identity, std::path::Path::new(python), &args)
            };
            c.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c
        };
        let receiver = run("finance-agent", args("receive"))
            .spawn()
            .unwrap_or_else(|e| panic!("receiver: {e}"));
        wait_for(Duration::from_secs(10), || {
            std::path::Path::new(&path).exists().then_some(())
        })
        .unwrap_or_else(|| panic!("the receiver never listened"));
        let giver = run("other-agent", args("give"))
            .output()
            .unwrap_or_else(|e| panic!("giver: {e}"));
        assert!(giver.status.success(), "giver: {giver:?}");
        let out = receiver
            .wait_with_output()
            .unwrap_or_else(|e| panic!("receiver: {e}"));
        let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|v: &Value| v.get("status").is_some())
            .collect();
        assert_eq!(
            lines.len(),
            2,
            "receiver (unprivileged: {unprivileged}): {out:?}"
        );
        assert_eq!(
            lines[0]["status"], 403,
            "the handed-over connection: {}",
            lines[0]
        );
        assert_eq!(
            lines[1]["status"], 200,
            "control, its own connection: {}",
            lines[1]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    // At the far end: the two controls' payments and nothing else.
    let payments = f
        .upstream
        .requests()
        .into_iter()
        .filter(|r| r["path"] == "/v1/payment_intents")
        .count();
    assert_eq!(payments, 2, "{:?}", f.upstream.requests());
    let refused = f.env.wait_audit("the handed-over payment, refused", |e| {
        e["kind"] == "gateway" && e["call"]["action"] == "create_payment" && e["verdict"] == "deny"
    });
    assert_eq!(refused["identity"], "other-agent", "{refused}");
}

/// An agent opening HTTP/2 uploads that never finish — 4 connections × 32
/// streams, each declaring 1,000,000 bytes and sending all but the last —
/// cannot make the daemon hold them all: past its share the gateway
/// answers 503 `gateway-busy` without reading, and the daemon's memory
/// stays bounded (it grew by about 500 MB before); another identity's
/// request goes through meanwhile (the control).
#[test]
fn unfinished_uploads_cannot_exhaust_the_daemons_memory() {
    let Some(f) = start("gw-uploads") else { return };
    let rss = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let pid = f.daemon_pid();
    let before = rss(pid);
    let script = python_dir().join("h2_uploads.py");
    let flood = exec(
        &f.env,
        "finance-agent",
        &gateway_python(),
        &[
            &script.to_string_lossy(),
            &f.gateway(),
            "9001",
            "/v1/payment_intents",
            "4",
            "32",
            "1000000",
            "6",
        ],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap_or_else(|e| panic!("uploads: {e}"));
    let mut peak = before;
    let start = std::time::Instant::now();
    let mut control = None;
    while start.elapsed() < Duration::from_secs(5) {
        peak = peak.max(rss(pid));
        if control.is_none() && start.elapsed() > Duration::from_secs(2) {
            control = Some(agent(
                &f.env,
                "other-agent",
                "requests",
                &f.base(),
                &[request("GET", "/v1/customers/c1")],
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = flood.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let r: Value = serde_json::from_str(text.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("uploads printed {text:?}: {e}"));
    let control = control.unwrap_or_else(|| panic!("no control request"));
    assert_eq!(
        control[0]["status"], 200,
        "another identity meanwhile: {}",
        control[0]
    );
    assert!(
        r["statuses"]["503"].as_u64().unwrap_or(0) > 0,
        "uploads past the share are refused at once: {r}"
    );
    let grown_mib = peak.saturating_sub(before) / 1024;
    assert!(
        grown_mib < 80,
        "the daemon grew by {grown_mib} MiB holding unfinished uploads ({r})"
    );
    // Nothing of the unfinished uploads reached the upstream.
    assert!(
        f.upstream
            .requests()
            .iter()
            .all(|q| q["path"] != "/v1/payment_intents"),
        "{:?}",
        f.upstream.requests()
    );
}
