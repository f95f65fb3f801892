//! Each format against the shape its receiver documents.

use serde_json::Value;

use super::{Notice, formats};

pub fn notice() -> Notice {
    Notice {
        id: "apr-0123456789abcdef0123".into(),
        kind: "tool".into(),
        identity: "finance-agent".into(),
        tool: "stripe".into(),
        action: "create_payment".into(),
        resource: "acct_<1>&co".into(),
        params: r#"{"amount":4200}"#.into(),
        params_digest: "ab".repeat(32),
        digest: "cd".repeat(32),
        destination: String::new(),
        rules: vec!["large-payments".into()],
        policy_version: "finance-v3@sha256:0123456789abcdef".into(),
        created: "2026-11-23T10:00:00Z".into(),
        expires: "2026-11-23T11:00:00Z".into(),
        host: "node-7".into(),
        approve_command: "palisade approve apr-0123456789abcdef0123 --reason \"…\"".into(),
        reject_command: "palisade reject apr-0123456789abcdef0123".into(),
    }
}

/// Slack Block Kit, as an incoming webhook takes it: `text` (the
/// notification fallback) and `blocks` of known types within their limits.
pub fn check_slack(v: &Value) {
    assert!(v["text"].as_str().is_some_and(|t| !t.is_empty()), "{v}");
    let blocks = v["blocks"]
        .as_array()
        .unwrap_or_else(|| panic!("blocks: {v}"));
    assert!(!blocks.is_empty() && blocks.len() <= 50);
    for b in blocks {
        match b["type"].as_str() {
            Some("header") => {
                assert_eq!(b["text"]["type"], "plain_text");
                assert!(
                    b["text"]["text"]
                        .as_str()
                        .is_some_and(|t| t.chars().count() <= 150)
                );
            }
            Some("section") => {
                if let Some(fields) = b["fields"].as_array() {
                    assert!(fields.len() <= 10, "{b}");
                    for f in fields {
                        assert_eq!(f["type"], "mrkdwn");
                        assert!(
                            f["text"]
                                .as_str()
                                .is_some_and(|t| t.chars().count() <= 2000)
                        );
                    }
                } else {
                    assert!(
                        b["text"]["text"]
                            .as_str()
                            .is_some_and(|t| t.chars().count() <= 3000)
                    );
                }
            }
            Some("context") => {
                let el = b["elements"].as_array().unwrap_or_else(|| panic!("{b}"));
                assert!(!el.is_empty() && el.len() <= 10);
            }
            other => panic!("unexpected block type {other:?}: {b}"),
        }
    }
}

/// A Teams workflow webhook message: one attachment holding an Adaptive
/// Card of a version Teams renders, with TextBlocks and a FactSet.
pub fn check_teams(v: &Value) {
    assert_eq!(v["type"], "message");
    let att = v["attachments"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(att.len(), 1);
    assert_eq!(
        att[0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &att[0]["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(
        card["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    assert!(matches!(
        card["version"].as_str(),
        Some("1.2" | "1.3" | "1.4" | "1.5")
    ));
    for el in card["body"].as_array().unwrap_or_else(|| panic!("{card}")) {
        match el["type"].as_str() {
            Some("TextBlock") => assert!(el["text"].is_string(), "{el}"),
            Some("FactSet") => {
                for f in el["facts"].as_array().unwrap_or_else(|| panic!("{el}")) {
                    assert!(f["title"].is_string() && f["value"].is_string(), "{f}");
                }
            }
            other => panic!("unexpected element {other:?}"),
        }
    }
}

#[test]
fn slack_messages_follow_block_kit_and_escape_mrkdwn() {
    let v = formats::slack(&notice());
    check_slack(&v);
    let text = v.to_string();
    assert!(
        text.contains("palisade approve apr-0123456789abcdef0123"),
        "{text}"
    );
    assert!(text.contains("acct_&lt;1&gt;&amp;co"), "escaped: {text}");
    assert!(text.contains("*Parameters digest*"), "{text}");
    assert!(
        text.contains(r#"*Parameters*\n`{\"amount\":4200}`"#),
        "{text}"
    );
    let mut long = notice();
    long.identity = "x".repeat(400);
    check_slack(&formats::slack(&long));
}

#[test]
fn teams_messages_carry_an_adaptive_card() {
    let v = formats::teams(&notice());
    check_teams(&v);
    let facts = &v["attachments"][0]["content"]["body"][2]["facts"];
    assert_eq!(facts[0]["title"], "Identity");
    assert_eq!(facts[0]["value"], "finance\\-agent");
    assert_eq!(facts[2]["title"], "Parameters");
    assert_eq!(facts[2]["value"], r#"\{"amount"\:4200\}"#);
    assert!(
        v.to_string()
            .contains("palisade reject apr-0123456789abcdef0123")
    );
}

#[test]
fn webhooks_are_signed_over_timestamp_and_body() {
    // Python: hmac.new(b"k3y", b'1700000000.{"a":1}', sha256).hexdigest()
    assert_eq!(
        formats::signature(b"k3y", 1_700_000_000, br#"{"a":1}"#),
        "sha256=fd5a70e965043f7df6309c2c3b5ff5a8ffa99b1f5175e9a311459e73c4634d4a"
    );
    let v = formats::webhook(&notice(), "d1");
    assert_eq!(v["type"], "palisade.approval.requested");
    assert_eq!(v["approval"]["id"], "apr-0123456789abcdef0123");
    assert_eq!(v["approval"]["digest"], "cd".repeat(32));
}
