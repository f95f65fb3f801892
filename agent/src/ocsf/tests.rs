use serde_json::Value;

use super::from_line;

fn map(line: &str) -> Value {
    from_line(line, "host-1").unwrap_or_else(|| panic!("not mapped: {line}"))
}

#[test]
fn a_denied_connection_is_network_activity_blocked() {
    let line = r#"{"time":"2026-11-23T10:44:04.096613Z","kind":"network","identity":"enf","verdict":"deny","reason":"deny-rule","policy_version":"v1@sha256:2c55fbcfe54dae84","rule":"no-metadata","pid":18406,"tid":18407,"uid":0,"comm":"python3","cgroup_id":9120,"dst_ip":"169.254.169.254","dst_port":80,"protocol":"tcp","hook":"connect4","mode":"enforce","seq":4,"prev_hash":"9c","hash":"47ab"}"#;
    let e = map(line);
    assert_eq!(e["class_uid"], 4001);
    assert_eq!(e["type_uid"], 400101);
    assert_eq!(e["activity_name"], "Open");
    assert_eq!(e["time"], 1_795_430_644_096u64);
    assert_eq!(e["disposition"], "Blocked");
    assert_eq!(e["action_id"], 2);
    assert_eq!(e["dst_endpoint"]["ip"], "169.254.169.254");
    assert_eq!(e["dst_endpoint"]["port"], 80);
    assert_eq!(e["connection_info"]["protocol_num"], 6);
    assert_eq!(e["connection_info"]["direction"], "Outbound");
    assert_eq!(e["actor"]["user"]["name"], "enf");
    assert_eq!(e["actor"]["process"]["pid"], 18406);
    assert_eq!(e["actor"]["process"]["name"], "python3");
    assert_eq!(e["actor"]["process"]["user"]["uid"], "0");
    assert_eq!(e["policy"]["version"], "v1@sha256:2c55fbcfe54dae84");
    assert_eq!(e["firewall_rule"]["uid"], "no-metadata");
    assert_eq!(e["metadata"]["sequence"], 4);
    assert_eq!(e["metadata"]["uid"], "47ab");
    assert_eq!(e["metadata"]["version"], "1.8.0");
    assert_eq!(e["raw_data"], line);
    assert_eq!(e["unmapped"]["cgroup_id"], 9120);
}

#[test]
fn shadow_mode_datagrams_are_traffic_with_no_action() {
    let e = map(
        r#"{"time":"2026-11-23T10:44:04Z","kind":"network","identity":"a","verdict":"audit","reason":"default-deny","dst_ip":"::1","dst_port":53,"protocol":"udp","hook":"sendmsg6","seq":1,"hash":"x"}"#,
    );
    assert_eq!(e["activity_name"], "Traffic");
    assert_eq!(e["disposition"], "No Action");
    assert_eq!(e["action"], "Allowed");
    assert_eq!(e["connection_info"]["protocol_ver_id"], 6);
}

#[test]
fn decisions_and_approvals_are_api_activity() {
    let e = map(
        r#"{"time":"2026-11-23T10:44:04Z","kind":"decision","identity":"pay","verdict":"approval_required","reason":"approval-condition","rule":"payments","pid":7,"uid":1000,"call":{"tool":"stripe","action":"create_payment","decision_id":"d1","params":["amount"],"numbers":{"amount":4200}}}"#,
    );
    assert_eq!(e["class_uid"], 6003);
    assert_eq!(e["activity_name"], "Create");
    assert_eq!(e["api"]["operation"], "stripe.create_payment");
    assert_eq!(e["api"]["request"]["uid"], "d1");
    assert_eq!(e["disposition"], "Delayed");
    assert_eq!(e["src_endpoint"]["hostname"], "host-1");
    assert_eq!(e["unmapped"]["call"]["numbers"]["amount"], 4200);
    let a = map(
        r#"{"time":"2026-11-23T10:44:04Z","kind":"approval","identity":"pay","verdict":"approved","reason":"ok","uid":0,"call":{"tool":"stripe","action":"refund","approval_id":"apr-1","approver":"operator alice"}}"#,
    );
    assert_eq!(a["disposition"], "Approved");
    assert_eq!(a["actor"]["user"]["name"], "operator alice");
    assert_eq!(a["resources"][0]["name"], "pay");
    assert_eq!(a["activity_name"], "Other");
}

#[test]
fn lookups_grants_and_the_rest() {
    let d = map(
        r#"{"time":"2026-11-23T10:44:04Z","kind":"dns","identity":"a","verdict":"deny","reason":"no-host-rule","protocol":"udp","dns":{"query":"evil.test","qtype":"A","rcode":"NXDOMAIN"}}"#,
    );
    assert_eq!(d["class_uid"], 4003);
    assert_eq!(d["query"]["hostname"], "evil.test");
    assert_eq!(d["rcode_id"], 3);
    assert_eq!(d["disposition"], "Blocked");
    let g = map(
        r#"{"time":"2026-11-23T10:44:04Z","kind":"grant","identity":"a","verdict":"expired","reason":"ttl","call":{"destination":"10.0.0.1/32"}}"#,
    );
    assert_eq!(g["class_uid"], 3005);
    assert_eq!(g["activity_name"], "Revoke Privileges");
    assert_eq!(g["privileges"][0], "egress 10.0.0.1/32");
    assert_eq!(g["user"]["name"], "a");
    let l = map(
        r#"{"time":"2026-11-23T10:44:04Z","kind":"loss","identity":null,"verdict":"lost","reason":"kernel-ring-buffer-full","policy_version":null,"count":12}"#,
    );
    assert_eq!(l["class_uid"], 0);
    assert_eq!(l["severity"], "High");
    assert_eq!(l["count"], 12);
    assert!(l.get("actor").is_none());
    assert!(from_line("not json", "h").is_none());
}
