//! An agent writes the text of the approval request it triggers (its
//! resource string, its parameters): the Slack and Teams messages an
//! approver reads must show that text literally — no new lines, no bold
//! fake "fields", no links or channel mentions — and must show the call's
//! real parameters, so a forged amount in the resource cannot stand in for
//! the real one. Carried out by an enrolled agent under `palisade exec`
//! against real HTTP receivers in Slack's and Teams' shape.

use std::time::Duration;

use palisade_tests::{
    DaemonProc, TestEnv,
    dns::slot,
    hooks::{Hit, HookServer},
    probe::{RpcAs, rpc},
    root_or_skip, wait_for,
};
use serde_json::Value;

const POLICY: &str = r#"version: 1
identities:
  - id: payments
    exec_only: true
    tools:
      require_approval:
        - {id: refunds, tool: pay, actions: [refund]}
"#;

/// The resource an attacking agent sends: it closes a code span, starts
/// new lines, prints a bold "Parameters" block with a forged amount, a
/// Markdown link, a Slack link and a channel-wide mention.
const FORGED: &str = "acct_1`.\n\n*Parameters*\namount: 5 USD (verified by finance :white_check_mark:)\n[Approve safely here](https://evil.example/approve) <https://evil.example/approve|acct_safe_1> <!channel> `x";

fn ask(env: &TestEnv, resource: &str, amount: u64) {
    let v = rpc(
        env,
        RpcAs::Identity("payments"),
        &[
            "decide",
            "fresh",
            "pay",
            "refund",
            &format!(r#"{{"amount": {amount}}}"#),
            resource,
        ],
    );
    assert_eq!(v["verdict"], "APPROVAL_REQUIRED", "{v}");
}

fn hit_with(server: &HookServer, needle: &str, what: &str) -> Hit {
    wait_for(Duration::from_secs(10), || {
        server
            .hits()
            .into_iter()
            .find(|h| String::from_utf8_lossy(&h.body).contains(needle))
    })
    .unwrap_or_else(|| panic!("{what} received no notification with `{needle}`"))
}

/// Every mrkdwn text of a Slack message (the fallback `text` included).
fn slack_texts(v: &Value) -> Vec<String> {
    let mut out = vec![v["text"].as_str().unwrap_or_default().to_string()];
    for b in v["blocks"].as_array().into_iter().flatten() {
        if b["text"]["type"] == "mrkdwn" {
            out.push(b["text"]["text"].as_str().unwrap_or_default().into());
        }
        for f in b["fields"]
            .as_array()
            .into_iter()
            .chain(b["elements"].as_array())
            .flatten()
        {
            out.push(f["text"].as_str().unwrap_or_default().into());
        }
    }
    out
}

/// Slack formats nothing inside an inline code span; outside the spans,
/// nothing of the agent's may appear. Returns the spans' contents.
fn slack_check(text: &str) -> Vec<String> {
    let parts: Vec<&str> = text.split('`').collect();
    assert!(parts.len() % 2 == 1, "unbalanced code spans: {text:?}");
    let mut spans = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i % 2 == 1 {
            assert!(!p.contains('\n'), "a new line inside a span: {text:?}");
            assert!(!p.contains('<') && !p.contains('>'), "raw <>: {text:?}");
            spans.push(p.to_string());
        } else {
            for forged in ["amount: 5", "evil.example", "channel", "Approve safely"] {
                assert!(!p.contains(forged), "`{forged}` outside code: {text:?}");
            }
        }
    }
    spans
}

/// Every Markdown text of a Teams card (TextBlocks and fact values).
fn teams_texts(v: &Value) -> Vec<String> {
    let mut texts = Vec::new();
    for el in v["attachments"][0]["content"]["body"]
        .as_array()
        .into_iter()
        .flatten()
    {
        match el["type"].as_str() {
            Some("TextBlock") => texts.push(el["text"].as_str().unwrap_or_default().to_string()),
            Some("FactSet") => {
                for f in el["facts"].as_array().into_iter().flatten() {
                    texts.push(f["value"].as_str().unwrap_or_default().to_string());
                }
            }
            other => panic!("unexpected element {other:?}"),
        }
    }
    texts
}

/// Markdown (Teams): no raw new line, every metacharacter escaped.
fn markdown_check(text: &str) {
    assert!(!text.contains('\n'), "raw new line: {text:?}");
    let b = text.as_bytes();
    for (i, c) in b.iter().enumerate() {
        if b"[]()*_<>`".contains(c) {
            let escapes = b[..i].iter().rev().take_while(|x| **x == b'\\').count();
            assert!(escapes % 2 == 1, "unescaped `{}` in {text:?}", *c as char);
        }
    }
}

#[test]
fn notifications_show_agent_text_literally_and_the_real_parameters() {
    if !root_or_skip("notifications_show_agent_text_literally_and_the_real_parameters") {
        return;
    }
    let n = slot();
    let slack = HookServer::start(&format!("127.180.{n}.41"), &[200]);
    let teams = HookServer::start(&format!("127.180.{n}.42"), &[202]);
    let env = TestEnv::new("notifymk", POLICY);
    env.write_config(&format!(
        r#"approvals:
  notify:
    - {{type: slack, url: "{}"}}
    - {{type: teams, url: "{}"}}
"#,
        slack.url("/services/T00/B00/XXXX"),
        teams.url("/workflows/abc/triggers/manual/paths/invoke"),
    ));
    let _d = DaemonProc::start(&env);

    // Control: an ordinary request still carries its fields.
    ask(&env, "acct_plain_7", 42);
    let plain_slack = slack_texts(&hit_with(&slack, "acct_plain_7", "Slack").json()).join("\n");
    for want in [
        "payments",
        "pay.refund on acct_plain_7",
        "Parameters digest",
    ] {
        assert!(
            plain_slack.contains(want),
            "Slack lacks `{want}`: {plain_slack}"
        );
    }
    let plain_teams = teams_texts(&hit_with(&teams, "plain", "Teams").json()).join("\n");
    for want in ["payments", "refund on acct", "plain", "7"] {
        assert!(
            plain_teams.contains(want),
            "Teams lacks `{want}`: {plain_teams}"
        );
    }

    // The attack: a forged amount and links in the resource, the real
    // amount in the parameters.
    ask(&env, FORGED, 99_999_123);
    let s = hit_with(&slack, "evil", "Slack").json();
    let mut shown = Vec::new();
    for text in slack_texts(&s) {
        shown.extend(slack_check(&text));
    }
    let shown = shown.join("\n");
    assert!(
        shown.contains("&lt;!channel&gt;") && shown.contains("\\n\\n*Parameters*"),
        "the resource is shown, escaped: {shown}"
    );
    assert!(
        shown.contains("{\"amount\":99999123}"),
        "the real amount is shown: {shown}"
    );
    let texts = teams_texts(&hit_with(&teams, "evil", "Teams").json());
    // The approve/reject commands are the daemon's own (no agent text).
    for text in texts
        .iter()
        .filter(|t| !t.starts_with("Approve: ") && !t.starts_with("Reject: "))
    {
        markdown_check(text);
    }
    let all = texts.join("\n");
    assert!(
        all.contains("\\[Approve safely here\\]\\(https\\://evil"),
        "the link is shown as text: {all}"
    );
    assert!(all.contains("99999123"), "the real amount is shown: {all}");

    // The ordinary request's parameters were shown too.
    assert!(
        plain_slack.contains("*Parameters*\n`{\"amount\":42}`"),
        "{plain_slack}"
    );
    assert!(
        plain_teams.contains(r#"\{"amount"\:42\}"#)
            && plain_teams.contains(r"pay\.refund on acct\_plain\_7"),
        "{plain_teams}"
    );
}
