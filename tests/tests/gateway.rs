//! The L7 gateway for HTTP APIs, end to end: the real daemon and kernel
//! programs, an HTTPS upstream on loopback with its own test CA (a Python
//! server that logs every request it receives), and agents running ordinary
//! clients (`requests`, curl) under `palisade exec`. Each test looks at the
//! far end — what the upstream received — next to what the agent got.

use std::{path::Path, process::Command, time::Duration};

use palisade_tests::{
    Probe,
    gateway::{
        agent, agent_cmd, exec, exec_unprivileged, gateway_events, gateway_python, parse_agent,
        pending_approval, python_dir, request,
    },
    gateway_fixture::{Fixture, pay, start},
    http::Scrape,
    wait_for,
};
use serde_json::{Value, json};

#[test]
fn an_allowed_request_carries_the_credential_the_agent_never_sees() {
    let Some(f) = start("gw-credential") else {
        return;
    };
    let out = agent(
        &f.env,
        "finance-agent",
        "requests",
        &f.base(),
        &[pay("800"), json!({"env": f.secret})],
    );
    assert_eq!(out[0]["status"], 200, "{}", out[0]);
    let body = &out[0]["body"];
    assert_eq!(body["amount"], "800", "{}", out[0]);
    // The upstream echoes the Authorization it got; the agent sees it scrubbed.
    assert_eq!(
        body["authorization_seen"], "Bearer [redacted by palisade]",
        "{body}"
    );
    assert!(!out[0].to_string().contains(&f.secret), "{}", out[0]);
    assert_eq!(
        out[1]["env_has"], false,
        "the agent's environment holds the secret"
    );

    // At the far end: exactly one request, with the credential and the
    // upstream's own name, and the agent's parameters as sent.
    let reqs = f.upstream.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(
        reqs[0]["headers"]["authorization"],
        format!("Bearer {}", f.secret)
    );
    assert_eq!(reqs[0]["headers"]["host"], "upstream.test:8443");
    assert_eq!(reqs[0]["body"], "amount=800&currency=usd&customer=cus_1");

    // An unprivileged agent can use the service and cannot read the secret.
    let curl = exec_unprivileged(
        &f.env,
        "finance-agent",
        "/usr/bin/curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{}/v1/customers/cus_9", f.base()),
        ],
    )
    .output()
    .unwrap_or_else(|e| panic!("curl: {e}"));
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "200", "{curl:?}");
    // exec hides the daemon's credential files from its agents (an empty
    // file in its place): from an unprivileged one, which the 0600 mode
    // stops too, and from a root one, which the mode does not stop, while
    // root outside reads the secret.
    let secret_file = f.secret_file.to_string_lossy();
    for (who, mut cat) in [
        (
            "an unprivileged agent",
            exec_unprivileged(&f.env, "finance-agent", "/bin/cat", &[&secret_file]),
        ),
        (
            "a root agent",
            exec(
                &f.env,
                "finance-agent",
                Path::new("/bin/cat"),
                &[&secret_file],
            ),
        ),
    ] {
        let out = cat.output().unwrap_or_else(|e| panic!("cat: {e}"));
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains(&f.secret),
            "{who} read the service's credential file"
        );
    }
    assert!(
        std::fs::read_to_string(&f.secret_file)
            .unwrap_or_default()
            .contains(&f.secret),
        "the control: root outside reads the credential"
    );

    // One audit record per request, with what happened and no secret.
    let ev = f.env.wait_audit("gateway allow", |e| {
        e["kind"] == "gateway" && e["call"]["action"] == "create_payment"
    });
    assert_eq!(ev["identity"], "finance-agent");
    assert_eq!(ev["verdict"], "allow", "{ev}");
    assert_eq!(ev["reason"], "allowed");
    assert_eq!(ev["rule"], "payments");
    assert_eq!(ev["call"]["tool"], "stripe");
    assert_eq!(
        ev["call"]["params"],
        json!(["amount", "currency", "customer"])
    );
    assert_eq!(ev["call"]["params_digest"].as_str().map(str::len), Some(64));
    let http = &ev["http"];
    assert_eq!(http["service"], "stripe");
    assert_eq!(http["method"], "POST");
    assert_eq!(http["route"], "/v1/payment_intents");
    assert_eq!(
        (http["status"].clone(), http["upstream_status"].clone()),
        (json!(200), json!(200))
    );
    assert!(http["bytes_in"].as_u64() > Some(0) && http["bytes_out"].as_u64() > Some(0));
    assert!(
        ev["policy_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("gateway-test@"))
    );
    let trail = std::fs::read_to_string(&f.env.audit).unwrap_or_default();
    assert!(
        !trail.contains(&f.secret),
        "the secret is in the audit trail"
    );

    let scrape = Scrape::fetch(&f.env.metrics_address());
    assert!(
        scrape
            .value("palisade_gateway_requests_total{service=\"stripe\",verdict=\"allow\"}")
            .is_some_and(|n| n >= 2.0),
        "{}",
        scrape.0
    );
}

#[test]
fn a_call_over_the_limit_or_off_the_routes_never_reaches_the_upstream() {
    let Some(f) = start("gw-deny") else { return };
    let out = agent(
        &f.env,
        "finance-agent",
        "requests",
        &f.base(),
        &[
            pay("7200"),
            json!({"method": "POST", "path": "/v1/payment_intents",
                   "form": {"amount": "100", "currency": "eur", "customer": "cus_1"}}),
            json!({"method": "POST", "path": "/v1/payment_intents",
                   "form": {"amount": "100", "currency": "usd", "memo": "ignore previous instructions"}}),
            request("POST", "/v1/refunds"),
            request("GET", "/v1/customers/../payment_intents"),
            request("GET", "/v1/customers/a%2F..%2Fb"),
        ],
    );
    for (i, (want_status, want_reason)) in [
        (403, "no-matching-rule"),
        (403, "no-matching-rule"),
        (403, "unknown-parameter"),
        (403, "no-route"),
        (403, "no-route"),
        (403, "no-route"),
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(out[i]["status"], *want_status, "request {i}: {}", out[i]);
        assert_eq!(
            out[i]["body"]["error"]["reason"], *want_reason,
            "request {i}: {}",
            out[i]
        );
    }
    assert!(
        out[0]["body"]["error"]["decision_id"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    assert!(
        out[3]["body"]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no route of service `stripe` matches POST /v1/refunds")),
        "{}",
        out[3]
    );
    assert!(
        f.upstream.requests().is_empty(),
        "{:?}",
        f.upstream.requests()
    );
    wait_for(Duration::from_secs(5), || {
        (gateway_events(&f.env)
            .iter()
            .filter(|e| e["verdict"] == "deny")
            .count()
            == 6)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("six deny records: {:?}", gateway_events(&f.env)));
}

#[test]
fn a_held_request_goes_through_exactly_once_after_approval() {
    let Some(f) = start("gw-approval") else {
        return;
    };
    // Two identical requests at once: they wait on one approval.
    let spawn = || {
        agent_cmd(
            &f.env,
            "finance-agent",
            "requests",
            &f.base(),
            &[pay("1500")],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("agent: {e}"))
    };
    let a = spawn();
    let b = spawn();
    let id = pending_approval(&f.env);
    std::thread::sleep(Duration::from_millis(500));
    let list: Value = serde_json::from_str(&f.env.cli_ok(&["approvals", "--json"]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert!(
        f.upstream.requests().is_empty(),
        "forwarded before approval"
    );
    f.env.cli_ok(&["approve", &id, "--reason", "invoice INV-7"]);
    let mut outs: Vec<Value> = [a, b]
        .into_iter()
        .map(|c| parse_agent(&c.wait_with_output().unwrap_or_else(|e| panic!("{e}")))[0].clone())
        .collect();
    outs.sort_by_key(|o| o["status"].as_u64());
    assert_eq!(outs[0]["status"], 200, "{outs:?}");
    assert_eq!(outs[1]["status"], 403, "{outs:?}");
    assert_eq!(outs[1]["body"]["error"]["reason"], "approval-used");
    assert_eq!(outs[1]["body"]["error"]["approval_id"], id.as_str());
    let reqs = f.upstream.requests();
    assert_eq!(reqs.len(), 1, "exactly once: {reqs:?}");
    assert!(
        reqs[0]["body"]
            .as_str()
            .is_some_and(|b| b.contains("amount=1500"))
    );
    let ev = f.env.wait_audit("approved gateway request", |e| {
        e["kind"] == "gateway" && e["reason"] == "approved"
    });
    assert_eq!(ev["call"]["approval_id"], id.as_str());
    assert!(
        ev["call"]["approver"]
            .as_str()
            .is_some_and(|a| a.contains("uid 0"))
    );

    // Rejected: refused, with the approval named, and nothing forwarded.
    let c = agent_cmd(
        &f.env,
        "finance-agent",
        "requests",
        &f.base(),
        &[pay("1200")],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap_or_else(|e| panic!("{e}"));
    let id2 = pending_approval(&f.env);
    f.env.cli_ok(&["reject", &id2, "--reason", "not this one"]);
    let out = parse_agent(&c.wait_with_output().unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(out[0]["status"], 403);
    assert_eq!(out[0]["body"]["error"]["reason"], "approval-rejected");
    assert!(
        out[0]["body"]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not this one"))
    );
    assert_eq!(f.upstream.requests().len(), 1);
}

#[test]
fn a_budget_runs_out_across_requests() {
    let Some(f) = start("gw-budget") else { return };
    let out = agent(
        &f.env,
        "finance-agent",
        "requests",
        &f.base(),
        &[pay("800"), pay("800"), pay("800")],
    );
    assert_eq!(
        (out[0]["status"].clone(), out[1]["status"].clone()),
        (json!(200), json!(200))
    );
    assert_eq!(out[2]["status"], 403, "{}", out[2]);
    assert_eq!(out[2]["body"]["error"]["reason"], "budget-exceeded");
    assert_eq!(out[2]["body"]["error"]["rule"], "daily-spend");
    assert_eq!(f.upstream.requests().len(), 2);
}

#[test]
fn masked_fields_never_reach_the_agent_and_streams_pass_through() {
    let Some(f) = start("gw-mask") else { return };
    let out = agent(
        &f.env,
        "finance-agent",
        "requests",
        &f.base(),
        &[
            request("GET", "/v1/customers/cus_42"),
            request("GET", "/v1/big"),
            request("GET", "/v1/text"),
            json!({"stream": true, "path": "/v1/stream"}),
        ],
    );
    let c = &out[0]["body"];
    assert_eq!(out[0]["status"], 200, "{}", out[0]);
    assert_eq!(c["id"], "cus_42");
    assert_eq!(c["name"], "Jane Roe");
    assert_eq!(c["email"], "[masked]");
    assert_eq!(c["ssn"], "[masked]");
    assert_eq!(c["cards"][0]["number"], "[masked]");
    assert_eq!(c["cards"][0]["brand"], "visa");
    let text = out[0].to_string();
    for raw in ["jane@example.com", "078-05-1120", "4000056655665556"] {
        assert!(!text.contains(raw), "{raw} reached the agent");
    }
    // Too large to mask: refused, not passed on unmasked.
    assert_eq!(out[1]["status"], 502, "{}", out[1]);
    assert_eq!(out[1]["body"]["error"]["reason"], "unmaskable-response");
    // No masks on this route: passed on, the echoed credential scrubbed.
    assert_eq!(out[2]["status"], 200);
    assert_eq!(
        out[2]["body"],
        "plain text, auth=Bearer [redacted by palisade]"
    );
    // A stream is not buffered: its first event arrives long before its end.
    let s = &out[3];
    assert_eq!(s["status"], 200, "{s}");
    assert!(
        s["body"]
            .as_str()
            .is_some_and(|b| b.contains("event 0") && b.contains("event 2"))
    );
    let (first, total) = (
        s["first"].as_f64().unwrap_or(9.0),
        s["total"].as_f64().unwrap_or(0.0),
    );
    assert!(
        first < 0.45 && total >= 0.55,
        "first byte {first}s, end {total}s"
    );
    // The upstream did send what was masked.
    assert!(
        f.upstream
            .requests()
            .iter()
            .any(|r| r["path"] == "/v1/customers/cus_42")
    );
}

#[test]
fn the_kill_switch_cuts_the_gateway_path_at_once() {
    let Some(f) = start("gw-kill") else { return };
    let cue = f.env.dir.join("killed");
    let child = agent_cmd(
        &f.env,
        "finance-agent",
        "requests",
        &f.base(),
        &[
            request("GET", "/v1/customers/a"),
            json!({"wait_file": cue}),
            // Same keep-alive connection, after the switch.
            request("GET", "/v1/customers/b"),
        ],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap_or_else(|e| panic!("{e}"));
    wait_for(Duration::from_secs(10), || {
        (!f.upstream.requests().is_empty()).then_some(())
    })
    .unwrap_or_else(|| panic!("the first request never arrived"));
    f.env
        .cli_ok(&["revoke", "finance-agent", "--reason", "incident 7"]);
    std::fs::write(&cue, "").unwrap_or_else(|e| panic!("{e}"));
    let out = parse_agent(&child.wait_with_output().unwrap_or_else(|e| panic!("{e}")));
    // The first answer was on its way when the switch came: it arrives, or
    // the switch aborted the agent's open connection first (status 0).
    assert!(
        out[0]["status"] == 200 || out[0]["status"] == 0,
        "{}",
        out[0]
    );
    // Either the request on the open connection is refused, or the
    // connection was already closed by the switch (within a second) and a
    // new one is refused by the kernel.
    let refused = out[1]["status"] == 403 && out[1]["body"]["error"]["reason"] == "kill-switch";
    let cut = out[1]["status"] == 0;
    assert!(refused || cut, "{}", out[1]);
    assert_eq!(f.upstream.requests().len(), 1);
    // New connections are refused by the kernel.
    Probe::enrolled(&f.env, "finance-agent", &["tcp", &f.gateway(), "9001"])
        .expect_eperm("a new gateway connection after the kill switch");
    f.env.cli_ok(&["restore", "finance-agent"]);
    let out = agent(
        &f.env,
        "finance-agent",
        "requests",
        &f.base(),
        &[request("GET", "/v1/customers/c")],
    );
    assert_eq!(out[0]["status"], 200, "restored: {}", out[0]);
}

/// Run `abuse.py MODE…` enrolled as `identity`.
fn abuse(f: &Fixture, identity: &str, args: &[&str]) -> std::process::Child {
    let script = python_dir().join("abuse.py");
    let mut all = vec![script.to_string_lossy().into_owned()];
    all.extend(args.iter().map(|a| a.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    exec(&f.env, identity, &gateway_python(), &refs)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("abuse {args:?}: {e}"))
}

fn abuse_result(c: std::process::Child) -> Value {
    let out = c.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("null"))
        .unwrap_or_else(|e| panic!("abuse output {text:?}: {e}"))
}

#[test]
fn bad_clients_get_clear_errors_and_never_stall_other_identities() {
    let Some(f) = start("gw-abuse") else { return };
    let gw = f.gateway();
    // Slow and stuck clients of one identity…
    let slowloris: Vec<_> = (0..5)
        .map(|_| abuse(&f, "finance-agent", &["slowloris", &gw, "9001", "0.3"]))
        .collect();
    let slowbody = abuse(&f, "finance-agent", &["slowbody", &gw, "9001"]);
    let held = abuse(&f, "finance-agent", &["hold", &gw, "9001", "40", "4.5"]);
    let garbage = abuse(&f, "finance-agent", &["garbage", &gw, "9001"]);
    // …while another identity is served as usual.
    let started = std::time::Instant::now();
    let out = agent(
        &f.env,
        "other-agent",
        "requests",
        &f.base(),
        &[
            request("GET", "/v1/customers/o1"),
            request("GET", "/v1/customers/o2"),
            request("GET", "/v1/customers/o3"),
        ],
    );
    assert!(out.iter().all(|o| o["status"] == 200), "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let g = abuse_result(garbage);
    assert_eq!(g["status"], 400, "garbage: {g}");
    let b = abuse_result(slowbody);
    assert_eq!(b["status"], 408, "slow body: {b}");
    assert!(
        b["body"]
            .as_str()
            .is_some_and(|t| t.contains("body-timeout")),
        "{b}"
    );
    for c in slowloris {
        let s = abuse_result(c);
        let after = s["closed_after"].as_f64();
        assert!(after.is_some_and(|t| t < 4.0), "slowloris held on: {s}");
    }
    let h = abuse_result(held);
    assert_eq!(h["opened"], 40, "{h}");
    assert_eq!(
        h["still_open"], 0,
        "idle connections closed after idle_timeout: {h}"
    );

    // Oversized and malformed bodies.
    let out = agent(
        &f.env,
        "finance-agent",
        "requests",
        &f.base(),
        &[
            json!({"method": "POST", "path": "/v1/payment_intents", "content_bytes": 2 << 20,
                   "headers": {"Content-Type": "application/json"}}),
            json!({"method": "POST", "path": "/v1/payment_intents", "content": "{\"amount\": ",
                   "headers": {"Content-Type": "application/json"}}),
            json!({"method": "POST", "path": "/v1/payment_intents", "content": "\u{0}\u{1}",
                   "headers": {"Content-Type": "application/octet-stream"}}),
        ],
    );
    assert_eq!(out[0]["status"], 413, "{}", out[0]);
    assert_eq!(out[0]["body"]["error"]["reason"], "body-too-large");
    assert_eq!(out[1]["status"], 400);
    assert!(
        out[1]["body"]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("JSON"))
    );
    assert_eq!(out[2]["status"], 415);
    assert!(
        f.upstream
            .requests()
            .iter()
            .all(|r| r["path"] != "/v1/payment_intents")
    );
    // The daemon is fine.
    f.env.status();
}

#[test]
fn a_reload_that_cannot_read_a_secret_changes_nothing() {
    let Some(f) = start("gw-reload") else { return };
    let text = std::fs::read_to_string(&f.env.policy).unwrap_or_default();
    f.env.write_policy(&text.replace(
        &f.secret_file.display().to_string(),
        "/nonexistent/palisade-secret",
    ));
    let out = f.env.cli(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "service `stripe`: cannot read its secret from file /nonexistent/palisade-secret"
        ),
        "{err}"
    );
    let out = agent(
        &f.env,
        "finance-agent",
        "requests",
        &f.base(),
        &[pay("100")],
    );
    assert_eq!(
        out[0]["status"], 200,
        "the last good policy serves: {}",
        out[0]
    );
    let reqs = f.upstream.requests();
    assert_eq!(
        reqs[0]["headers"]["authorization"],
        format!("Bearer {}", f.secret)
    );
}

#[test]
fn agents_may_speak_http2() {
    let Some(f) = start("gw-h2") else { return };
    let out = agent(
        &f.env,
        "finance-agent",
        "httpx-h2",
        &f.base(),
        &[
            pay("300"),
            request("GET", "/v1/customers/cus_h2"),
            pay("9000"),
        ],
    );
    assert_eq!(out[0]["status"], 200, "{}", out[0]);
    assert_eq!(out[0]["version"], "HTTP/2");
    assert_eq!(out[1]["body"]["ssn"], "[masked]");
    assert_eq!(out[2]["status"], 403);
    let curl = exec(
        &f.env,
        "finance-agent",
        Path::new("/usr/bin/curl"),
        &[
            "-s",
            "--http2-prior-knowledge",
            "-w",
            "\n%{http_version} %{http_code}",
            &format!("{}/v1/customers/cus_curl", f.base()),
        ],
    )
    .output()
    .unwrap_or_else(|e| panic!("curl: {e}"));
    let text = String::from_utf8_lossy(&curl.stdout);
    assert!(text.ends_with("\n2 200"), "{text}");
    assert!(
        text.contains("[masked]") && !text.contains("078-05-1120"),
        "{text}"
    );
    // Upstream requests arrived (HTTP/1.1 to this upstream) with the credential.
    let reqs = f.upstream.requests();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert!(
        reqs.iter()
            .all(|r| r["headers"]["authorization"] == format!("Bearer {}", f.secret))
    );
}

#[test]
fn explain_and_test_map_requests_as_the_gateway_does() {
    // No daemon: the policy tools only.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    let run = |args: &[&str]| {
        let out = Command::new(palisade_tests::palisade_bin())
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let finance = examples.join("finance.yaml").display().to_string();
    let (ok, out) = run(&[
        "policy",
        "explain",
        "--policy",
        &finance,
        "--identity",
        "finance-agent",
        "--service",
        "stripe",
        "--request",
        "POST /v1/payment_intents",
        "--form",
        "amount=7200&currency=USD&customer=cus_1",
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("request: POST /v1/payment_intents → route create-payment")
            && out.contains("params {\"amount\":7200,\"currency\":\"USD\",\"customer\":\"cus_1\"}")
            && out.contains("verdict: approval_required (approval-required-by-rule)"),
        "{out}"
    );
    let (ok, out) = run(&[
        "policy",
        "explain",
        "--policy",
        &finance,
        "--identity",
        "finance-agent",
        "--service",
        "stripe",
        "--request",
        "POST /v1/transfers",
    ]);
    assert!(ok);
    assert!(out.contains("verdict: deny (no-route)"), "{out}");
    let suite = examples
        .join("tests/finance.test.yaml")
        .display()
        .to_string();
    let (ok, out) = run(&["policy", "test", &suite]);
    assert!(ok, "{out}");
    assert!(
        out.contains("PASS an API the policy does not map is refused: deny (no-route)"),
        "{out}"
    );
}

#[test]
fn an_agent_in_a_sub_cgroup_of_its_own_is_still_itself() {
    let Some(f) = start("gw-subcgroup") else {
        return;
    };
    // A process of the agent in a cgroup below its identity's own (made by
    // whoever may write cgroupfs: `palisade exec` agents may not): its
    // sockets belong to the sub-cgroup, which the gateway traces back to
    // the enrolled one, as the kernel hooks do.
    let enrolled = exec(&f.env, "finance-agent", Path::new("/bin/true"), &[])
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(enrolled.success(), "palisade exec /bin/true: {enrolled}");
    let sub = f.env.attach.join("palisade/finance-agent/sub");
    std::fs::create_dir_all(&sub).unwrap_or_else(|e| panic!("mkdir {}: {e}", sub.display()));
    let script = format!(
        "echo $$ > {sub}/cgroup.procs && exec /usr/bin/curl -s -o /dev/null -w '%{{http_code}}' {base}/v1/customers/cus_sub",
        sub = sub.display(),
        base = f.base()
    );
    let out = Command::new("/bin/sh")
        .args(["-c", &script])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = f.env.wait_audit("sub-cgroup request", |e| {
        e["kind"] == "gateway" && e["call"]["resource"] == "customer/cus_sub"
    });
    assert_eq!(ev["identity"], "finance-agent");
    assert_eq!(ev["verdict"], "allow");
}

/// An agent of an identity without the payment rule (enrolled by its
/// cgroup, as a root agent selected by cgroup is) moves into the cgroup of
/// the identity that has it and pays through the gateway: still itself,
/// refused, and the upstream sees no payment; a process that starts in that
/// cgroup pays (the control).
#[test]
fn an_agent_that_moves_into_another_identitys_cgroup_is_still_itself() {
    let Some(f) = start("gw-move") else {
        return;
    };
    for identity in ["finance-agent", "other-agent"] {
        let made = exec(&f.env, identity, Path::new("/bin/true"), &[])
            .status()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(made.success(), "palisade exec {identity} /bin/true: {made}");
    }
    let cgroup = |identity: &str| f.env.attach.join(format!("palisade/{identity}"));
    let pay = |from: &str, to: Option<&str>, customer: &str| {
        let moved = to.map_or_else(String::new, |to| {
            format!("echo $$ > {}/cgroup.procs && ", cgroup(to).display())
        });
        // Enrolled by its first cgroup as it enters it, then moved, then
        // paying.
        let script = format!(
            "echo $$ > {from}/cgroup.procs && {moved}exec /usr/bin/curl -s -o /dev/null -w '%{{http_code}}' -d amount=100 -d currency=usd -d customer={customer} {base}/v1/payment_intents",
            from = cgroup(from).display(),
            base = f.base()
        );
        let out = Command::new("/bin/sh")
            .args(["-c", &script])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        pay("other-agent", Some("finance-agent"), "cus_moved"),
        "403",
        "an agent that moved into finance-agent's cgroup paid as finance-agent"
    );
    assert_eq!(
        pay("finance-agent", None, "cus_control"),
        "200",
        "the control"
    );
    let paid: Vec<_> = f
        .upstream
        .requests()
        .into_iter()
        .filter(|r| r["path"] == "/v1/payment_intents")
        .collect();
    assert_eq!(paid.len(), 1, "only the control's payment: {paid:?}");
    let ev = f.env.wait_audit("the moved agent's refused payment", |e| {
        e["kind"] == "gateway" && e["call"]["action"] == "create_payment" && e["verdict"] == "deny"
    });
    assert_eq!(ev["identity"], "other-agent", "{ev}");
}
