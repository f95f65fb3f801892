//! The Python client (`clients/python`) against the real daemon: Python
//! scenario scripts (`clients/python/tests/scenarios.py`) run enrolled
//! through `palisade exec`, print JSON, and the assertions are here. The
//! operator's side (approve, reject, stop the daemon) is done from the test,
//! as root, with the CLI.
//!
//! These tests need the pinned `clients/python/requirements-dev.txt`, which
//! `cargo xtask setup` installs into a virtualenv (`$PALISADE_PYTHON` names
//! another interpreter); without them they fail, never skip.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio},
    sync::OnceLock,
    time::Duration,
};

use palisade_tests::{DaemonProc, TestEnv, client_python, palisade_bin, root_or_skip, wait_for};
use serde_json::Value;

/// The test policy: finance rules with the daily budget as a parameter, and a
/// grantable egress destination.
fn policy(daily_limit: u32) -> String {
    format!(
        r#"version: 1
label: pyclient
context:
  ticket: string
schemas:
  - tool: stripe
    actions: [create_payment]
    params: {{amount: number, currency: string, customer: string}}
roles:
  - id: payments-operator
    egress:
      grantable:
        - {{id: staging-db, cidr: 10.50.1.0/24, ports: [5432], protocol: tcp, max_ttl: 15m}}
    tools:
      allow:
        - id: payments
          tool: stripe
          actions: [create_payment]
          when: params.currency == "USD" && params.amount <= 5000
          approval_if: params.amount > 1000
      deny:
        - id: no-refunds-or-payouts
          tool: stripe
          actions: [refund, "payout*"]
    budgets:
      - {{id: daily-spend, tool: stripe, actions: [create_payment], limit: {daily_limit}, per: day, sum: params.amount, unit: USD}}
      - {{id: stripe-rate, tool: stripe, limit: 100, per: minute}}
identities:
  - id: finance-agent
    roles: [payments-operator]
"#
    )
}

const IDENTITY: &str = "finance-agent";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn client_dir() -> PathBuf {
    repo().join("clients/python")
}

fn scenarios() -> PathBuf {
    client_dir().join("tests/scenarios.py")
}

/// The test virtualenv can import the client's dependencies (once per
/// test binary). Panics with the fix.
fn python_ready() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let out = Command::new(client_python())
            .args([
                "-c",
                "import grpc, grpc_tools, google.protobuf; print(grpc.__version__)",
            ])
            .output()
            .unwrap_or_else(|e| {
                panic!("python3 cannot run ({e}): the Python client tests need it; run `cargo xtask setup`")
            });
        assert!(
            out.status.success(),
            "the test virtualenv lacks grpcio/grpcio-tools/protobuf; run `cargo xtask setup` (it installs clients/python/requirements-dev.txt):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// `python3 -u ARGS`, enrolled as `identity` through `palisade exec` when
/// given, with `PALISADE_SOCKET` pointing at the test's daemon.
fn python(env: &TestEnv, identity: Option<&str>, args: &[&Path]) -> Command {
    python_ready();
    let mut cmd = match identity {
        Some(id) => {
            let mut c = Command::new(palisade_bin());
            c.arg("exec")
                .arg("--socket")
                .arg(&env.socket)
                .args(["--identity", id, "--"])
                .arg(client_python());
            c
        }
        None => Command::new(client_python()),
    };
    cmd.arg("-u")
        .args(args)
        .env("PALISADE_SOCKET", &env.socket)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The result of a scenario: its last line, which must name it.
fn result(name: &str, out: &Output) -> Value {
    assert!(
        out.status.success(),
        "scenario {name} failed: {}",
        describe(out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("scenario {name} printed nothing: {}", describe(out)));
    let v: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("scenario {name}: bad JSON {last:?}: {e}"));
    assert_eq!(v["scenario"], name, "not the scenario's result: {v}");
    v
}

/// Run scenario `name` enrolled and return its result.
fn scenario(env: &TestEnv, name: &str) -> Value {
    let out = python(env, Some(IDENTITY), &[&scenarios()])
        .arg(name)
        .output()
        .unwrap_or_else(|e| panic!("running scenario {name}: {e}"));
    result(name, &out)
}

/// A scenario that talks with the test between steps.
struct Running {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    seen: String,
}

impl Running {
    /// Scenario `name`, enrolled.
    fn start(env: &TestEnv, name: &str) -> Self {
        let mut cmd = python(env, Some(IDENTITY), &[&scenarios()]);
        cmd.arg(name);
        Self::spawn(name, cmd)
    }

    /// Any command; killed if the test ends first.
    fn spawn(name: &str, mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting scenario {name}: {e}"));
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap_or_else(|| panic!("stdout")));
        Self {
            name: name.to_string(),
            child,
            stdin,
            stdout,
            seen: String::new(),
        }
    }

    /// The next JSON line.
    fn line(&mut self) -> Value {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("reading scenario {}: {e}", self.name));
        if n == 0 {
            let out = self.finish_output();
            panic!("scenario {} ended early: {}", self.name, describe(&out));
        }
        self.seen.push_str(&line);
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("scenario {}: bad JSON {line:?}: {e}", self.name))
    }

    fn go(&mut self) {
        let stdin = self.stdin.as_mut().unwrap_or_else(|| panic!("stdin"));
        writeln!(stdin, "go").unwrap_or_else(|e| panic!("to scenario {}: {e}", self.name));
    }

    fn finish_output(&mut self) -> Output {
        drop(self.stdin.take());
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.stdout, &mut rest);
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("waiting for scenario {}: {e}", self.name));
        Output {
            status,
            stdout: format!("{}{rest}", self.seen).into_bytes(),
            stderr: stderr.into_bytes(),
        }
    }

    /// Wait for the end and return the result line.
    fn finish(mut self) -> Value {
        let out = self.finish_output();
        result(&self.name.clone(), &out)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `palisade ARGS --socket S` as root (the operator); must succeed.
fn operator(env: &TestEnv, args: &[&str]) -> String {
    let out = Command::new(palisade_bin())
        .args(args)
        .arg("--socket")
        .arg(&env.socket)
        .output()
        .unwrap_or_else(|e| panic!("palisade {args:?}: {e}"));
    assert!(
        out.status.success(),
        "palisade {args:?}: {}",
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The id of the one pending approval, once it appears.
fn pending_approval(env: &TestEnv) -> Value {
    wait_for(Duration::from_secs(20), || {
        let list: Value = serde_json::from_str(&operator(env, &["approvals", "--json"]))
            .unwrap_or_else(|e| panic!("approvals --json: {e}"));
        let pending: Vec<Value> = list
            .as_array()
            .unwrap_or_else(|| panic!("approvals --json is not a list: {list}"))
            .iter()
            .filter(|a| a["state"] == "pending")
            .cloned()
            .collect();
        assert!(pending.len() <= 1, "more than one pending approval: {list}");
        pending.into_iter().next()
    })
    .unwrap_or_else(|| panic!("no pending approval appeared within 20 s"))
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string `{key}` in {v}"))
}

fn start(name: &str, daily_limit: u32) -> Option<(TestEnv, DaemonProc)> {
    if !root_or_skip(name) {
        return None;
    }
    python_ready();
    let env = TestEnv::new(name, &policy(daily_limit));
    let daemon = DaemonProc::start(&env);
    Some((env, daemon))
}

#[test]
fn python_unit_tests_pass() {
    python_ready();
    let out = Command::new(client_python())
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(client_dir().join("tests"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("python3 -m unittest: {e}"));
    let text = describe(&out);
    assert!(out.status.success(), "Python unit tests failed: {text}");
    // unittest exits 0 when it collects nothing: count what ran.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ran: u32 = stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("Ran ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no `Ran N tests` line: {text}"));
    assert!(ran >= 10, "only {ran} Python unit tests ran: {text}");
    assert!(
        !stderr.contains("skipped"),
        "a Python test was skipped: {text}"
    );
}

#[test]
fn allowed_call_runs_once_and_reports_budgets() {
    let Some((env, _d)) = start("py-allow", 20000) else {
        return;
    };
    let r = scenario(&env, "allow");
    let payment = &r["payment"];
    assert_eq!(payment["result"], "pi_1", "{r}");
    assert_eq!(payment["ran"], 1, "{r}");
    let d = &r["decisions"][0];
    assert_eq!(d["verdict"], "ALLOW", "{r}");
    assert_eq!(d["reason"], "allowed", "{r}");
    assert_eq!(d["matched_rules"], serde_json::json!(["payments"]), "{r}");
    assert_eq!(d["local"], false, "{r}");
    assert!(str_of(d, "policy_version").starts_with("pyclient@"), "{r}");
    let obligations = d["obligations"]
        .as_array()
        .unwrap_or_else(|| panic!("no obligations: {r}"));
    let budget = |id: &str| {
        obligations
            .iter()
            .find(|o| o["budget"] == id)
            .unwrap_or_else(|| panic!("no obligation {id}: {r}"))
    };
    let spend = budget("daily-spend");
    assert_eq!(spend["remaining"], 19200.0, "{r}");
    assert_eq!(spend["limit"], 20000.0, "{r}");
    assert_eq!(spend["window"], "day", "{r}");
    assert_eq!(spend["unit"], "USD", "{r}");
    assert_eq!(budget("stripe-rate")["remaining"], 99.0, "{r}");
    // The decision the client saw is the one in the trail.
    let id = str_of(d, "decision_id").to_string();
    let ev = env.wait_audit("for the decision", |e| {
        e["kind"] == "decision" && e.to_string().contains(&id)
    });
    assert_eq!(ev["identity"], IDENTITY, "{ev}");
    assert_eq!(ev["verdict"], "allow", "{ev}");
}

#[test]
fn denied_call_raises_with_the_reason_and_never_runs() {
    let Some((env, _d)) = start("py-deny", 20000) else {
        return;
    };
    let r = scenario(&env, "deny");
    assert_eq!(r["runs"], 0, "a denied call ran: {r}");
    let euro = &r["euro"];
    assert_eq!(euro["error"], "PalisadeDenied", "{r}");
    assert_eq!(euro["reason"], "no-matching-rule", "{r}");
    assert_eq!(euro["local"], false, "{r}");
    assert!(!str_of(euro, "decision_id").is_empty(), "{r}");
    let refund = &r["refund"];
    assert_eq!(refund["error"], "PalisadeDenied", "{r}");
    assert_eq!(refund["reason"], "denied-by-rule", "{r}");
    assert_eq!(
        refund["matched_rules"],
        serde_json::json!(["no-refunds-or-payouts"]),
        "{r}"
    );
    let text = str_of(refund, "text");
    assert!(
        text.starts_with("stripe.refund denied (denied-by-rule)")
            && text.contains("rules no-refunds-or-payouts")
            && text.contains(str_of(refund, "decision_id")),
        "the exception should say what, why, which rule and which decision: {text}"
    );
}

#[test]
fn approval_required_raises_with_the_approval_id() {
    let Some((env, _d)) = start("py-approval-raise", 20000) else {
        return;
    };
    let r = scenario(&env, "approval-raise");
    let payment = &r["payment"];
    assert_eq!(payment["ran"], 0, "{r}");
    assert_eq!(payment["error"], "ApprovalRequired", "{r}");
    assert_eq!(
        payment["is_denied"], true,
        "ApprovalRequired is a PalisadeDenied: {r}"
    );
    assert_eq!(payment["reason"], "approval-condition", "{r}");
    let id = str_of(payment, "approval_id");
    assert!(!id.is_empty(), "{r}");
    assert!(
        str_of(payment, "text").contains(&format!("palisade approve {id}")),
        "the exception tells how to approve: {r}"
    );
    // The agent can read its own approval; the operator sees the same one.
    assert_eq!(r["approval"]["state"], "PENDING", "{r}");
    assert_eq!(r["approval"]["tool"], "stripe", "{r}");
    assert_eq!(pending_approval(&env)["id"], id);
}

#[test]
fn operator_approval_runs_the_call_exactly_once() {
    let Some((env, _d)) = start("py-approve", 20000) else {
        return;
    };
    let run = Running::start(&env, "approval-wait");
    let pending = pending_approval(&env);
    assert_eq!(pending["tool"], "stripe", "{pending}");
    assert_eq!(pending["action"], "create_payment", "{pending}");
    let id = str_of(&pending, "id");
    operator(&env, &["approve", id, "--reason", "invoice INV-2041"]);
    let r = run.finish();
    let payment = &r["payment"];
    assert_eq!(payment["result"], "pi_1", "{r}");
    assert_eq!(payment["ran"], 1, "{r}");
    assert_eq!(r["runs"], 1, "{r}");
    let decisions = r["decisions"].as_array().unwrap_or_else(|| panic!("{r}"));
    assert_eq!(decisions.len(), 2, "{r}");
    assert_eq!(decisions[0]["verdict"], "APPROVAL_REQUIRED", "{r}");
    assert_eq!(decisions[0]["approval_id"], id, "{r}");
    assert_eq!(decisions[1]["verdict"], "ALLOW", "{r}");
    assert_eq!(decisions[1]["reason"], "approved-override", "{r}");
    assert!(
        str_of(&decisions[1], "message").contains("invoice INV-2041"),
        "{r}"
    );
    let listed: Value = serde_json::from_str(&operator(&env, &["approvals", "--all", "--json"]))
        .unwrap_or_else(|e| panic!("approvals --all --json: {e}"));
    let mine = listed
        .as_array()
        .and_then(|l| l.iter().find(|a| a["id"] == id))
        .unwrap_or_else(|| panic!("approval {id} not listed: {listed}"));
    assert_eq!(mine["state"], "consumed", "{listed}");
}

#[test]
fn override_token_allows_the_approved_call_once() {
    let Some((env, _d)) = start("py-override", 20000) else {
        return;
    };
    let mut run = Running::start(&env, "override-once");
    let id = run.line()["approval_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no approval id"))
        .to_string();
    assert_eq!(str_of(&pending_approval(&env), "id"), id);
    operator(&env, &["approve", &id]);
    let r = run.finish();
    assert_eq!(r["first"]["verdict"], "APPROVAL_REQUIRED", "{r}");
    assert_eq!(r["approval_state"], "APPROVED", "{r}");
    assert_eq!(r["had_token"], true, "{r}");
    assert_eq!(
        r["token_in_repr"], false,
        "the override token leaks into repr: {r}"
    );
    assert_eq!(r["approved"]["verdict"], "ALLOW", "{r}");
    assert_eq!(r["approved"]["reason"], "approved-override", "{r}");
    let replayed = &r["replayed"];
    assert_eq!(
        replayed["verdict"], "DENY",
        "a replayed override token was accepted: {r}"
    );
    assert_eq!(replayed["local"], true, "{r}");
    assert_eq!(replayed["reason"], "rpc-unauthenticated", "{r}");
    assert_eq!(r["after_state"], "CONSUMED", "{r}");
    assert_eq!(r["after_has_token"], false, "{r}");
}

#[test]
fn rejected_approval_is_a_denial() {
    let Some((env, _d)) = start("py-reject", 20000) else {
        return;
    };
    let run = Running::start(&env, "approval-wait");
    let pending = pending_approval(&env);
    operator(
        &env,
        &[
            "reject",
            str_of(&pending, "id"),
            "--reason",
            "not on the invoice",
        ],
    );
    let r = run.finish();
    let payment = &r["payment"];
    assert_eq!(r["runs"], 0, "a rejected call ran: {r}");
    assert_eq!(payment["error"], "PalisadeDenied", "{r}");
    assert_eq!(payment["reason"], "approval-rejected", "{r}");
    assert_eq!(payment["approval_state"], "REJECTED", "{r}");
    assert!(
        str_of(payment, "message").contains("not on the invoice"),
        "{r}"
    );
}

#[test]
fn budget_exhausted_denies_and_obligations_count_down() {
    let Some((env, _d)) = start("py-budget", 2000) else {
        return;
    };
    let r = scenario(&env, "budget");
    let payments = r["payments"].as_array().unwrap_or_else(|| panic!("{r}"));
    assert_eq!(payments[0]["ran"], 1, "{r}");
    assert_eq!(payments[1]["ran"], 1, "{r}");
    assert_eq!(payments[2]["ran"], 0, "a payment over budget ran: {r}");
    assert_eq!(payments[2]["reason"], "budget-exceeded", "{r}");
    let remaining: Vec<Value> = r["decisions"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"))
        .iter()
        .map(|d| {
            d["obligations"]
                .as_array()
                .and_then(|o| o.iter().find(|o| o["budget"] == "daily-spend"))
                .map_or(Value::Null, |o| o["remaining"].clone())
        })
        .collect();
    assert_eq!(remaining[0], 1200.0, "{r}");
    assert_eq!(remaining[1], 300.0, "{r}");
    assert_eq!(
        remaining[2], 300.0,
        "the denied payment must not be charged: {r}"
    );
    assert_eq!(r["runs"], 2, "{r}");
}

#[test]
fn stopped_daemon_fails_closed() {
    let Some((env, mut d)) = start("py-down", 20000) else {
        return;
    };
    let mut run = Running::start(&env, "daemon-down");
    let before = run.line();
    assert_eq!(before["before"]["ran"], 1, "{before}");
    assert_eq!(
        d.signal_and_wait(nix::sys::signal::Signal::SIGTERM),
        Some(0),
        "daemon did not stop cleanly:\n{}",
        d.log_text()
    );
    run.go();
    let r = run.finish();
    let after = &r["after"];
    assert_eq!(after["ran"], 0, "a call ran while the daemon was down: {r}");
    assert_eq!(after["error"], "PalisadeDenied", "{r}");
    assert_eq!(after["reason"], "rpc-unavailable", "{r}");
    assert_eq!(after["local"], true, "{r}");
    assert_eq!(r["direct"]["verdict"], "DENY", "{r}");
    assert_eq!(r["direct"]["status_code"], "UNAVAILABLE", "{r}");
    assert_eq!(r["approval_error"], "UNAVAILABLE", "{r}");
}

#[test]
fn wrong_socket_and_silent_server_fail_closed() {
    let Some((env, _d)) = start("py-wrong-socket", 20000) else {
        return;
    };
    let out = python(&env, Some(IDENTITY), &[&scenarios()])
        .arg("wrong-socket")
        .env("PALISADE_WRONG_SOCKET", env.dir.join("nobody-here.sock"))
        .output()
        .unwrap_or_else(|e| panic!("wrong-socket: {e}"));
    let r = result("wrong-socket", &out);
    assert_eq!(r["payment"]["ran"], 0, "{r}");
    assert_eq!(r["payment"]["reason"], "rpc-unavailable", "{r}");

    // A socket that accepts connections and never answers: the deadline.
    // The agent makes it outside the daemon's directory, which `palisade
    // exec` keeps read-only for agents.
    let silent = std::env::temp_dir().join(format!("palisade-silent-{}.sock", std::process::id()));
    let out = python(&env, Some(IDENTITY), &[&scenarios()])
        .arg("deadline")
        .env("PALISADE_SILENT_SOCKET", &silent)
        .output()
        .unwrap_or_else(|e| panic!("deadline: {e}"));
    let _ = std::fs::remove_file(&silent);
    let r = result("deadline", &out);
    assert_eq!(r["payment"]["ran"], 0, "{r}");
    assert_eq!(r["payment"]["reason"], "rpc-deadline-exceeded", "{r}");
    let seconds = r["seconds"].as_f64().unwrap_or(f64::MAX);
    assert!(seconds < 5.0, "the 0.5 s deadline took {seconds} s: {r}");
}

#[test]
fn unenrolled_process_is_denied() {
    let Some((env, _d)) = start("py-unenrolled", 20000) else {
        return;
    };
    let out = python(&env, None, &[&scenarios()])
        .arg("unenrolled")
        .output()
        .unwrap_or_else(|e| panic!("unenrolled: {e}"));
    let r = result("unenrolled", &out);
    assert_eq!(r["payment"]["ran"], 0, "{r}");
    assert_eq!(r["payment"]["reason"], "rpc-unauthenticated", "{r}");
}

#[test]
fn async_functions_are_guarded() {
    let Some((env, _d)) = start("py-async", 20000) else {
        return;
    };
    let r = scenario(&env, "asyncio-guard");
    assert_eq!(r["allowed"], "pi_async", "{r}");
    assert_eq!(r["denied"]["reason"], "no-matching-rule", "{r}");
    assert_eq!(r["runs"], serde_json::json!([700]), "{r}");
}

#[test]
fn egress_grant_and_refusal() {
    let Some((env, _d)) = start("py-egress", 20000) else {
        return;
    };
    let r = scenario(&env, "egress");
    assert_eq!(r["grant"]["granted"], true, "{r}");
    assert_eq!(r["grant"]["rule"], "staging-db", "{r}");
    assert!(r["grant"]["expires_at"].as_i64().unwrap_or(0) > 0, "{r}");
    assert_eq!(r["refused"]["code"], "PERMISSION_DENIED", "{r}");
}

#[test]
fn example_payments_agent() {
    if !root_or_skip("example_payments_agent") {
        return;
    }
    python_ready();
    let finance = std::fs::read_to_string(repo().join("examples/policies/finance.yaml"))
        .unwrap_or_else(|e| panic!("examples/policies/finance.yaml: {e}"));
    let env = TestEnv::new("py-example", &finance);
    let _d = DaemonProc::start(&env);
    let example = repo().join("examples/agents/payments_agent.py");
    let mut cmd = python(&env, Some("finance-agent"), &[&example]);
    cmd.args(["--wait", "60"]);
    let mut run = Running::spawn("payments_agent.py", cmd);
    let pending = pending_approval(&env);
    assert_eq!(pending["tool"], "stripe", "{pending}");
    operator(
        &env,
        &[
            "approve",
            str_of(&pending, "id"),
            "--reason",
            "known customer",
        ],
    );
    let out = run.finish_output();
    let text = describe(&out);
    assert!(out.status.success(), "{text}");
    for expected in [
        "palisade: ALLOW (allowed, rule payments)",
        "budget daily-spend: 19200 of 20000 USD left this day",
        "DENIED (no-matching-rule)",
        "DENIED (denied-by-rule)",
        "DENIED (unknown-parameter)",
        "palisade: APPROVAL_REQUIRED (approval-condition, rule payments)",
        "palisade: ALLOW (approved-override",
        "agent: payments made: pi_1, pi_2",
    ] {
        assert!(text.contains(expected), "expected {expected:?} in: {text}");
    }
}
