//! Approvals where people are, against the real daemon: every new
//! approval reaches real HTTP receivers in Slack's, Teams' and a signed
//! webhook's shape, a failing receiver is retried and counted, a hanging
//! one never holds up a decision; and approvals signed with an approver's
//! Ed25519 key are applied by the node that holds them, by anyone, for
//! exactly the call they name.

use std::{process::Command, time::Duration};

use palisade_tests::{
    DaemonProc, TestEnv,
    dns::slot,
    hooks::{Hit, HookServer},
    http::Scrape,
    palisade_bin,
    probe::{RpcAs, rpc},
    root_or_skip, wait_for,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn policy(approvers: &str) -> String {
    format!(
        r#"version: 1
{approvers}identities:
  - id: payments
    exec_only: true
    egress:
      require_approval:
        - {{id: partner, cidr: 127.180.250.9, ports: [443], protocol: tcp, max_ttl: 1h}}
    tools:
      allow:
        - id: payments
          tool: stripe
          actions: [create_payment]
          when: params.amount <= 5000
          approval_if: params.amount > 1000
"#
    )
}

fn ask(env: &TestEnv, amount: u32) -> Value {
    let v = rpc(
        env,
        RpcAs::Identity("payments"),
        &[
            "decide",
            "fresh",
            "stripe",
            "create_payment",
            &format!(r#"{{"amount": {amount}}}"#),
        ],
    );
    assert_eq!(v["verdict"], "APPROVAL_REQUIRED", "{v}");
    v
}

/// HMAC-SHA256 (RFC 2104), written out so the test does not trust the
/// daemon's own code.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> String {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

/// Slack incoming webhook (Block Kit): `text` plus blocks of known types
/// within Slack's documented limits.
fn check_slack(v: &Value) {
    assert!(v["text"].as_str().is_some_and(|t| !t.is_empty()), "{v}");
    let blocks = v["blocks"]
        .as_array()
        .unwrap_or_else(|| panic!("blocks: {v}"));
    assert!(!blocks.is_empty() && blocks.len() <= 50);
    for b in blocks {
        match b["type"].as_str() {
            Some("header") => {
                assert_eq!(b["text"]["type"], "plain_text", "{b}");
                assert!(
                    b["text"]["text"]
                        .as_str()
                        .is_some_and(|t| t.chars().count() <= 150)
                );
            }
            Some("section") => match b["fields"].as_array() {
                Some(fields) => {
                    assert!(fields.len() <= 10, "{b}");
                    for f in fields {
                        assert!(matches!(f["type"].as_str(), Some("mrkdwn" | "plain_text")));
                        assert!(
                            f["text"]
                                .as_str()
                                .is_some_and(|t| t.chars().count() <= 2000)
                        );
                    }
                }
                None => {
                    assert!(matches!(
                        b["text"]["type"].as_str(),
                        Some("mrkdwn" | "plain_text")
                    ));
                    assert!(
                        b["text"]["text"]
                            .as_str()
                            .is_some_and(|t| t.chars().count() <= 3000)
                    );
                }
            },
            Some("context") => {
                let el = b["elements"].as_array().unwrap_or_else(|| panic!("{b}"));
                assert!(!el.is_empty() && el.len() <= 10, "{b}");
            }
            other => panic!("not a Slack block type: {other:?}"),
        }
    }
}

/// A Teams workflow webhook message: one Adaptive Card attachment.
fn check_teams(v: &Value) {
    assert_eq!(v["type"], "message", "{v}");
    let att = v["attachments"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(att.len(), 1);
    assert_eq!(
        att[0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &att[0]["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert!(
        matches!(
            card["version"].as_str(),
            Some("1.2" | "1.3" | "1.4" | "1.5")
        ),
        "{card}"
    );
    for el in card["body"].as_array().unwrap_or_else(|| panic!("{card}")) {
        match el["type"].as_str() {
            Some("TextBlock") => assert!(el["text"].is_string(), "{el}"),
            Some("FactSet") => {
                for f in el["facts"].as_array().unwrap_or_else(|| panic!("{el}")) {
                    assert!(f["title"].is_string() && f["value"].is_string(), "{f}");
                }
            }
            other => panic!("not an Adaptive Card element here: {other:?}"),
        }
    }
}

fn one_hit(server: &HookServer, what: &str) -> Hit {
    wait_for(Duration::from_secs(10), || server.hits().into_iter().next())
        .unwrap_or_else(|| panic!("{what} received nothing"))
}

#[test]
fn every_new_approval_reaches_slack_teams_and_signed_webhooks() {
    if !root_or_skip("every_new_approval_reaches_slack_teams_and_signed_webhooks") {
        return;
    }
    let n = slot();
    let ip = |x: u8| format!("127.180.{n}.{x}");
    let slack = HookServer::start(&ip(31), &[200]);
    let teams = HookServer::start(&ip(32), &[202]);
    let hook = HookServer::start(&ip(33), &[204]);
    let flaky = HookServer::start(&ip(34), &[503, 200]);
    let hang = HookServer::start(&ip(35), &[]);
    let gone = HookServer::start(&ip(36), &[410]);
    let env = TestEnv::new("notify", &policy(""));
    env.write_config(&format!(
        r#"approvals:
  notify:
    - {{type: slack, url: "{}"}}
    - {{type: teams, url: "{}"}}
    - {{type: webhook, url: "{}", secret: s3cret, headers: {{x-env: test}}}}
    - {{type: webhook, name: flaky, url: "{}", secret: k}}
    - {{type: webhook, name: hang, url: "{}", secret: k, timeout_ms: 30000}}
    - {{type: webhook, name: gone, url: "{}", secret: k}}
  notify_retry: {{attempts: 3, first_backoff_ms: 50, max_backoff_ms: 100}}
"#,
        slack.url("/services/T00/B00/XXXX"),
        teams.url("/workflows/abc/triggers/manual/paths/invoke?sig=1"),
        hook.url("/palisade"),
        flaky.url("/f"),
        hang.url("/h"),
        gone.url("/g"),
    ));
    let _d = DaemonProc::start(&env);

    // The decision comes back while a receiver holds its request open:
    // notifying never sits on the decision path.
    let asked = ask(&env, 4200);
    let id = asked["approval_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        wait_for(Duration::from_secs(10), || (hang
            .held
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0)
        .then_some(()))
        .is_some(),
        "the hanging receiver never got its request"
    );
    let second = rpc(
        &env,
        RpcAs::Identity("payments"),
        &[
            "decide",
            "fresh",
            "stripe",
            "create_payment",
            r#"{"amount": 100}"#,
        ],
    );
    assert_eq!(
        second["verdict"], "ALLOW",
        "decisions go on while it hangs: {second}"
    );
    let listed: Value = serde_json::from_str(&env.cli_ok(&["approvals", "--json"]))
        .unwrap_or_else(|e| panic!("{e}"));
    let digest = listed[0]["digest"].as_str().unwrap_or_default().to_string();
    assert_eq!(digest.len(), 64, "{listed}");

    // Slack: the documented Block Kit shape, the facts, the command.
    let s = one_hit(&slack, "Slack");
    assert_eq!(s.method, "POST");
    assert_eq!(s.target, "/services/T00/B00/XXXX");
    assert_eq!(s.headers["content-type"], "application/json");
    let body = s.json();
    check_slack(&body);
    let text = body.to_string();
    for want in [
        "payments",
        "stripe.create_payment",
        "Parameters digest",
        &format!("palisade approve {id}"),
        &digest,
    ] {
        assert!(text.contains(want), "Slack message lacks `{want}`: {text}");
    }
    // Teams: an Adaptive Card with the same facts.
    let t = one_hit(&teams, "Teams");
    assert_eq!(
        t.target,
        "/workflows/abc/triggers/manual/paths/invoke?sig=1"
    );
    let body = t.json();
    check_teams(&body);
    let facts = body["attachments"][0]["content"]["body"]
        .as_array()
        .and_then(|b| b.iter().find(|e| e["type"] == "FactSet"))
        .cloned()
        .unwrap_or_else(|| panic!("no FactSet: {body}"));
    let fact = |title: &str| {
        facts["facts"]
            .as_array()
            .and_then(|f| f.iter().find(|x| x["title"] == title))
            .map(|x| x["value"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    assert_eq!(fact("Identity"), "payments");
    // Markdown metacharacters are escaped (agent-chosen text is literal).
    assert_eq!(fact("Asks for"), r"stripe\.create\_payment");
    assert_eq!(fact("Parameters"), r#"\{"amount"\:4200\}"#);
    assert_eq!(fact("Parameters digest").len(), 64);
    // Webhook: JSON, signed over timestamp and body with the secret.
    let w = one_hit(&hook, "webhook");
    let sig = &w.headers["x-palisade-signature"];
    let ts = &w.headers["x-palisade-timestamp"];
    let mut signed = format!("{ts}.").into_bytes();
    signed.extend_from_slice(&w.body);
    assert_eq!(*sig, format!("sha256={}", hmac_sha256(b"s3cret", &signed)));
    let forged = hmac_sha256(b"wrong", &signed);
    assert_ne!(*sig, format!("sha256={forged}"));
    assert_eq!(w.headers["x-env"], "test");
    let body = w.json();
    assert_eq!(body["type"], "palisade.approval.requested");
    assert_eq!(body["approval"]["id"], id.as_str());
    assert_eq!(body["approval"]["digest"], digest.as_str());
    assert_eq!(body["approval"]["kind"], "tool");
    assert!(!w.headers["x-palisade-delivery"].is_empty());

    // An egress approval is announced too.
    let asked = rpc(
        &env,
        RpcAs::Identity("payments"),
        &["egress", "127.180.250.9", "443", "600"],
    );
    assert!(
        asked["approval_id"].as_str().is_some_and(|a| !a.is_empty()),
        "{asked}"
    );
    let egress = wait_for(Duration::from_secs(10), || {
        hook.hits()
            .into_iter()
            .find(|h| h.json()["approval"]["kind"] == "egress")
    })
    .unwrap_or_else(|| panic!("no egress notification"));
    assert!(
        egress.json()["approval"]["destination"]
            .as_str()
            .is_some_and(|d| d.starts_with("127.180.250.9/32 tcp 443")),
        "{}",
        egress.json()
    );

    // Retries and failures are counted.
    let metrics = env.metrics_address();
    let counted = |target: &str, result: &str| {
        Scrape::fetch(&metrics).value(&format!(
            "palisade_approval_notifications_total{{target=\"{target}\",type=\"webhook\",result=\"{result}\"}}"
        ))
    };
    let settled = wait_for(Duration::from_secs(10), || {
        (counted("flaky", "delivered") == Some(2.0) && counted("gone", "failed") == Some(2.0))
            .then_some(())
    });
    assert!(settled.is_some(), "{}", Scrape::fetch(&metrics).0);
    // flaky answers 503 once, then 200: the first notice is retried once.
    assert_eq!(counted("flaky", "retried"), Some(1.0));
    assert_eq!(flaky.hits().len(), 3, "two notices, the first tried twice");
    assert_eq!(counted("gone", "retried"), Some(0.0), "410 is not retried");
    hang.release();
    let released = wait_for(Duration::from_secs(10), || {
        (counted("hang", "delivered") == Some(2.0)).then_some(())
    });
    assert!(released.is_some(), "{}", Scrape::fetch(&metrics).0);
}

fn palisade(args: &[&str]) -> std::process::Output {
    Command::new(palisade_bin())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("palisade {args:?}: {e}"))
}

fn stdout_ok(args: &[&str]) -> String {
    let out = palisade(args);
    assert!(
        out.status.success(),
        "palisade {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_signed_approval_resolves_exactly_its_call_on_the_node() {
    if !root_or_skip("a_signed_approval_resolves_exactly_its_call_on_the_node") {
        return;
    }
    let env = TestEnv::new("signed", "version: 1\n");
    let key = |name: &str| {
        let path = env.dir.join(format!("{name}.key"));
        let out = stdout_ok(&[
            "keys",
            "approver",
            "--out",
            path.to_str().unwrap_or_default(),
            "--id",
            name,
        ]);
        let line = out
            .lines()
            .find(|l| l.contains("public_key"))
            .unwrap_or_else(|| panic!("{out}"))
            .to_string();
        (path, line)
    };
    let (alice_key, alice_line) = key("alice");
    let (mallory_key, _) = key("mallory");
    env.write_policy(&policy(&format!("approvers:\n{alice_line}\n")));
    let _d = DaemonProc::start(&env);

    let first = ask(&env, 4200);
    let first_id = first["approval_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let second = ask(&env, 4300);
    let second_id = second["approval_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let listed: Value = serde_json::from_str(&env.cli_ok(&["approvals", "--json"]))
        .unwrap_or_else(|e| panic!("{e}"));
    let digest_of = |id: &str| {
        listed
            .as_array()
            .and_then(|l| l.iter().find(|a| a["id"] == id))
            .map(|a| a["digest"].as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|| panic!("{id} not listed: {listed}"))
    };
    let sign = |key: &std::path::Path, approver: &str, id: &str, digest: &str, name: &str| {
        let out = env.dir.join(name);
        stdout_ok(&[
            "keys",
            "sign-approval",
            "--key",
            key.to_str().unwrap_or_default(),
            "--approver",
            approver,
            "--id",
            id,
            "--digest",
            digest,
            "--reason",
            "CHG-42",
            "--out",
            out.to_str().unwrap_or_default(),
        ]);
        out
    };
    let apply = |file: &std::path::Path| {
        env.cli(&["approve", "--signed", file.to_str().unwrap_or_default()])
    };

    // The digest of another pending call: refused, nothing resolved.
    let crossed = sign(
        &alice_key,
        "alice",
        &first_id,
        &digest_of(&second_id),
        "crossed.jws",
    );
    let out = apply(&crossed);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("signed for another call"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Alice's name, another key.
    let forged = sign(
        &mallory_key,
        "alice",
        &first_id,
        &digest_of(&first_id),
        "forged.jws",
    );
    let out = apply(&forged);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not verify"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An approver the policy does not list.
    let stranger = sign(
        &mallory_key,
        "mallory",
        &first_id,
        &digest_of(&first_id),
        "stranger.jws",
    );
    assert!(!apply(&stranger).status.success());
    let still = rpc(&env, RpcAs::Identity("payments"), &["approval", &first_id]);
    assert_eq!(still["state"], "PENDING", "{still}");

    // The real one, handed over by the agent itself: the signature is the
    // authority, not whoever delivers it.
    let good = sign(
        &alice_key,
        "alice",
        &first_id,
        &digest_of(&first_id),
        "good.jws",
    );
    let applied = rpc(
        &env,
        RpcAs::Identity("payments"),
        &["signed", good.to_str().unwrap_or_default()],
    );
    assert_eq!(applied["ok"], true, "{applied}");
    assert_eq!(applied["approver"], "alice (signed)");
    let approved = rpc(&env, RpcAs::Identity("payments"), &["approval", &first_id]);
    assert_eq!(approved["state"], "APPROVED", "{approved}");
    let token = approved["override_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let call = rpc(
        &env,
        RpcAs::Identity("payments"),
        &[
            "override",
            &token,
            "stripe",
            "create_payment",
            r#"{"amount": 4200}"#,
        ],
    );
    assert_eq!(call["verdict"], "ALLOW", "{call}");
    // Applied once; the same file again finds nothing pending.
    assert!(!apply(&good).status.success());
    let ev = env.wait_audit("for the signed approval", |e| {
        e["kind"] == "approval" && e["verdict"] == "approved"
    });
    assert_eq!(ev["call"]["approver"], "alice (signed)");
    assert_eq!(ev["reason"], "CHG-42");
    // A signed rejection works the same way, through the operator CLI.
    let reject_file = env.dir.join("reject.jws");
    stdout_ok(&[
        "keys",
        "sign-approval",
        "--key",
        alice_key.to_str().unwrap_or_default(),
        "--approver",
        "alice",
        "--id",
        &second_id,
        "--digest",
        &digest_of(&second_id),
        "--verdict",
        "reject",
        "--out",
        reject_file.to_str().unwrap_or_default(),
    ]);
    let out = apply(&reject_file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rejected = rpc(&env, RpcAs::Identity("payments"), &["approval", &second_id]);
    assert_eq!(rejected["state"], "REJECTED", "{rejected}");
}
