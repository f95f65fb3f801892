//! A request the gateway holds for approval, and a reload before the
//! approval: the request is judged again under the active policy (at the
//! reload, and when the approval arrives). A policy that now denies the
//! call refuses it (403 with the new rule) and the approver's later "yes"
//! releases nothing: the upstream receives nothing. The same approval
//! without a reload, or after a reload that still asks for approval, goes
//! through exactly once.

use std::process::Child;

use palisade_tests::{
    gateway::{agent_cmd, gateway_events, parse_agent, pending_approval},
    gateway_fixture::{Fixture, pay, start},
    wait_for,
};
use serde_json::Value;

/// A payment of `amount` USD held for approval, and its approval's id.
fn held(f: &Fixture, amount: &str) -> (Child, String) {
    let c = agent_cmd(
        &f.env,
        "finance-agent",
        "requests",
        &f.base(),
        &[pay(amount)],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap_or_else(|e| panic!("agent: {e}"));
    let id = pending_approval(&f.env);
    (c, id)
}

fn answer(c: Child) -> Value {
    parse_agent(&c.wait_with_output().unwrap_or_else(|e| panic!("{e}")))[0].clone()
}

fn payments(f: &Fixture, amount: &str) -> usize {
    f.upstream
        .requests()
        .iter()
        .filter(|r| {
            r["body"]
                .as_str()
                .is_some_and(|b| b.contains(&format!("amount={amount}&")))
        })
        .count()
}

fn reload(f: &Fixture, text: &str) -> String {
    f.env.write_policy(text);
    f.env.cli_ok(&["reload"]);
    f.env.status()["policy_version"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_default()
}

#[test]
fn a_held_request_is_judged_again_when_a_reload_came_before_its_approval() {
    let Some(f) = start("gw-held-reload") else {
        return;
    };
    let original = std::fs::read_to_string(&f.env.policy).unwrap_or_else(|e| panic!("{e}"));
    let allow = "    tools:\n      allow:\n        - id: payments\n";
    assert!(original.contains(allow), "the fixture's policy changed");
    let denying = original.replace(
        allow,
        "    tools:\n      deny:\n        - {id: no-payments, tool: stripe, actions: [create_payment]}\n      allow:\n        - id: payments\n",
    );

    // Held, then the operator denies payments, then someone approves from
    // the queue at once.
    let (c, id) = held(&f, "1501");
    let v2 = reload(&f, &denying);
    // Refused either way: by the approval's check of the active policy, or,
    // had the reload's check come first, as an approval already withdrawn.
    let _ = f.env.cli(&["approve", &id, "--reason", "from the queue"]);
    let out = answer(c);
    assert_eq!(out["status"], 403, "{out}");
    assert_eq!(out["body"]["error"]["reason"], "denied-by-rule", "{out}");
    assert_eq!(out["body"]["error"]["rule"], "no-payments", "{out}");
    assert_eq!(out["body"]["error"]["approval_id"], id.as_str(), "{out}");
    assert_eq!(payments(&f, "1501"), 0, "the upstream received the payment");
    let ev = f.env.wait_audit("the refused release", |e| {
        e["kind"] == "gateway" && e["call"]["approval_id"] == id.as_str()
    });
    assert_eq!(ev["verdict"], "deny", "{ev}");
    assert_eq!(ev["reason"], "denied-by-rule", "{ev}");
    assert_eq!(ev["rule"], "no-payments", "{ev}");
    if !v2.is_empty() {
        assert_eq!(ev["policy_version"], v2.as_str(), "{ev}");
    }
    let v1 = reload(&f, &original);

    // Held, then the reload, and no approver yet: refused at once (not
    // at the approval timeout), and its approval is withdrawn: it leaves
    // the queue, and a late "yes" is refused and releases nothing.
    let (c, id) = held(&f, "1504");
    reload(&f, &denying);
    let out = answer(c);
    assert_eq!(out["status"], 403, "{out}");
    assert_eq!(out["body"]["error"]["reason"], "denied-by-rule", "{out}");
    let queue = f.env.cli_ok(&["approvals", "--json"]);
    assert!(
        !queue.contains(&id),
        "the withdrawn approval is still pending: {queue}"
    );
    let late = f.env.cli(&["approve", &id, "--reason", "late"]);
    assert!(!late.status.success(), "a withdrawn approval was approved");
    assert!(
        String::from_utf8_lossy(&late.stderr).contains("not pending"),
        "{}",
        String::from_utf8_lossy(&late.stderr)
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(payments(&f, "1504"), 0, "the upstream received the payment");
    assert_eq!(reload(&f, &original), v1);

    // Control: the same approval without a reload goes through once.
    let (c, id) = held(&f, "1502");
    f.env.cli_ok(&["approve", &id, "--reason", "invoice"]);
    let out = answer(c);
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(payments(&f, "1502"), 1);

    // A reload that still asks for approval (another identity added):
    // the approval still holds, and the call goes through once.
    let (c, id) = held(&f, "1503");
    let v3 = reload(
        &f,
        &format!(
            "{original}  - id: newcomer\n    tools:\n      allow:\n        - {{id: r, tool: stripe, actions: [get_customer]}}\n"
        ),
    );
    assert_ne!(v3, v1, "the reload changed the policy version");
    f.env.cli_ok(&["approve", &id, "--reason", "invoice"]);
    let out = answer(c);
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(payments(&f, "1503"), 1);
    let approved = wait_for(std::time::Duration::from_secs(10), || {
        gateway_events(&f.env)
            .into_iter()
            .find(|e| e["call"]["approval_id"] == id.as_str())
    })
    .unwrap_or_else(|| panic!("no record of the approved request"));
    assert_eq!(approved["reason"], "approved", "{approved}");
}

#[test]
fn a_request_sent_again_after_its_approval_spends_it_once() {
    let Some(f) = start("gw-approval-resend") else {
        return;
    };
    // Held; the agent stops waiting (its process ends) before anyone
    // decides; then the operator approves.
    let (mut c, id) = held(&f, "1505");
    let _ = c.kill();
    let _ = c.wait();
    f.env.cli_ok(&["approve", &id, "--reason", "invoice INV-9"]);
    assert_eq!(payments(&f, "1505"), 0, "forwarded with nobody asking");

    // The same request sent again goes through at once, on that approval.
    let out = parse_agent(
        &agent_cmd(
            &f.env,
            "finance-agent",
            "requests",
            &f.base(),
            &[pay("1505")],
        )
        .output()
        .unwrap_or_else(|e| panic!("agent: {e}")),
    )[0]
    .clone();
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(payments(&f, "1505"), 1);
    let ev = f.env.wait_audit("the resent request's record", |e| {
        e["kind"] == "gateway" && e["reason"] == "approved"
    });
    assert_eq!(ev["call"]["approval_id"], id.as_str(), "{ev}");
    let approvals: Value = serde_json::from_str(&f.env.cli_ok(&["approvals", "--all", "--json"]))
        .unwrap_or_else(|e| panic!("{e}"));
    let state = approvals
        .as_array()
        .and_then(|a| a.iter().find(|x| x["id"] == id.as_str()))
        .map(|x| x["state"].clone());
    assert_eq!(state, Some(Value::from("consumed")), "{approvals}");

    // Spent: a third identical request waits for a new approval (refused
    // here), and the upstream still has exactly one payment.
    let (c, id2) = held(&f, "1505");
    assert_ne!(id2, id, "the spent approval was offered again");
    f.env
        .cli_ok(&["reject", &id2, "--reason", "once was enough"]);
    let out = answer(c);
    assert_eq!(out["status"], 403, "{out}");
    assert_eq!(out["body"]["error"]["reason"], "approval-rejected", "{out}");
    assert_eq!(payments(&f, "1505"), 1);
}
