//! What each destination receives: a Slack message (incoming webhook,
//! Block Kit), a Microsoft Teams message with an Adaptive Card (a Teams
//! workflow's "when a webhook request is received" trigger), and a plain
//! JSON document for webhooks, signed with HMAC-SHA256.

use aws_lc_rs::hmac;
use serde_json::{Value, json};

use super::{
    Notice,
    escape::{literal, markdown, slack_code, slack_plain},
};

/// Slack's limits (Block Kit): header text 150 characters, a field 2000,
/// a section's text 3000, at most 10 fields.
const SLACK_HEADER: usize = 150;
const SLACK_FIELD: usize = 2000;

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Parameters shown to the approver, at most this many characters of
/// their JSON (the digest names them exactly).
pub const PARAMS_SHOWN: usize = 1000;

/// What is asked, for people: `stripe.create_payment on acct_1`,
/// `egress to 10.0.0.1/32 tcp 5432`, `role release-manager for 30m`.
pub fn what(n: &Notice) -> String {
    match n.kind.as_str() {
        "egress" => format!("egress to {}", n.destination),
        "elevation" => format!("elevation to role {}", n.action),
        _ => {
            let mut s = format!("{}.{}", n.tool, n.action);
            if !n.resource.is_empty() {
                s.push_str(&format!(" on {}", n.resource));
            }
            s
        }
    }
}

/// The facts every format shows, in order. Every value may hold text an
/// agent chose; each format shows them as literal text.
fn facts(n: &Notice) -> Vec<(&'static str, String)> {
    let mut f = vec![("Identity", n.identity.clone()), ("Asks for", what(n))];
    if n.kind == "tool" {
        f.push((
            "Parameters",
            if n.params.is_empty() {
                "{}".into()
            } else {
                n.params.clone()
            },
        ));
    }
    if !n.params_digest.is_empty() {
        f.push(("Parameters digest", n.params_digest.clone()));
    }
    if !n.rules.is_empty() {
        f.push(("Rule", n.rules.join(", ")));
    }
    f.push(("Host", n.host.clone()));
    f.push(("Expires", n.expires.clone()));
    f
}

pub fn slack(n: &Notice) -> Value {
    let fields: Vec<Value> = facts(n)
        .into_iter()
        .map(|(k, v)| {
            let head = format!("*{k}*\n");
            let room = SLACK_FIELD - head.chars().count();
            json!({"type": "mrkdwn", "text": format!("{head}{}", slack_code(&v, room))})
        })
        .collect();
    let who = slack_code(&n.identity, 200);
    let asks = slack_code(&what(n), 2000);
    json!({
        // The fallback (push and desktop notifications) is mrkdwn too.
        "text": format!("Palisade: {who} asks for {asks} (approval {})", slack_plain(&n.id)),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": cut(&format!("Approval needed: {}", literal(&n.identity)), SLACK_HEADER), "emoji": false}},
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("{who} asks for {asks}.")}},
            {"type": "section", "fields": fields},
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("Approve: {}\nReject: {}", slack_code(&n.approve_command, 1000), slack_code(&n.reject_command, 1000))}},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": format!("approval {} · policy {} · digest {}", slack_code(&n.id, 200), slack_code(&n.policy_version, 500), slack_code(&n.digest, 200))}
            ]}
        ]
    })
}

pub fn teams(n: &Notice) -> Value {
    let facts: Vec<Value> = facts(n)
        .into_iter()
        .map(|(k, v)| json!({"title": k, "value": markdown(&v)}))
        .collect();
    let who = markdown(&n.identity);
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": format!("Approval needed: {who}"), "weight": "Bolder", "size": "Medium", "wrap": true},
                    {"type": "TextBlock", "text": format!("{who} asks for {}.", markdown(&what(n))), "wrap": true},
                    {"type": "FactSet", "facts": facts},
                    {"type": "TextBlock", "text": format!("Approve: {}", literal(&n.approve_command)), "fontType": "Monospace", "wrap": true},
                    {"type": "TextBlock", "text": format!("Reject: {}", literal(&n.reject_command)), "fontType": "Monospace", "wrap": true},
                    {"type": "TextBlock", "text": format!("approval {} · policy {} · digest {}", markdown(&n.id), markdown(&n.policy_version), markdown(&n.digest)), "isSubtle": true, "size": "Small", "wrap": true}
                ]
            }
        }]
    })
}

pub fn webhook(n: &Notice, delivery: &str) -> Value {
    json!({
        "type": "palisade.approval.requested",
        "delivery": delivery,
        "approval": {
            "id": n.id,
            "kind": n.kind,
            "identity": n.identity,
            "tool": n.tool,
            "action": n.action,
            "resource": n.resource,
            "params": n.params,
            "params_digest": n.params_digest,
            "destination": n.destination,
            "rules": n.rules,
            "policy_version": n.policy_version,
            "created": n.created,
            "expires": n.expires,
            "digest": n.digest,
        },
        "host": n.host,
        "approve_command": n.approve_command,
        "reject_command": n.reject_command,
    })
}

/// The webhook signature: `sha256=` and the hex HMAC-SHA256, under the
/// shared secret, of `TIMESTAMP.BODY` (the timestamp, sent in its own
/// header, lets receivers refuse old deliveries).
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("sha256={}", crate::hex::lower(ctx.sign().as_ref()))
}
