//! One trail record, one OCSF event: the class its kind maps to, the
//! attributes that map, and the rest in `unmapped`.

use std::time::UNIX_EPOCH;

use serde_json::{Map, Value, json};

type Obj = Map<String, Value>;

fn text<'a>(ev: &'a Obj, key: &str) -> &'a str {
    ev.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn call<'a>(ev: &'a Obj, key: &str) -> &'a str {
    ev.get("call")
        .and_then(|c| c.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

struct Class {
    uid: u32,
    name: &'static str,
    category_uid: u32,
    category: &'static str,
}

const NETWORK_ACTIVITY: Class = Class {
    uid: 4001,
    name: "Network Activity",
    category_uid: 4,
    category: "Network Activity",
};
const DNS_ACTIVITY: Class = Class {
    uid: 4003,
    name: "DNS Activity",
    category_uid: 4,
    category: "Network Activity",
};
const API_ACTIVITY: Class = Class {
    uid: 6003,
    name: "API Activity",
    category_uid: 6,
    category: "Application Activity",
};
const USER_ACCESS: Class = Class {
    uid: 3005,
    name: "User Access Management",
    category_uid: 3,
    category: "Identity & Access Management",
};
const BASE_EVENT: Class = Class {
    uid: 0,
    name: "Base Event",
    category_uid: 0,
    category: "Uncategorized",
};

/// The security-control outcome: (action_id, action), (disposition_id,
/// disposition), severity_id, status_id.
struct Outcome {
    action: (u32, &'static str),
    disposition: (u32, &'static str),
    severity: u32,
    status: u32,
}

const ALLOWED: Outcome = Outcome {
    action: (1, "Allowed"),
    disposition: (1, "Allowed"),
    severity: 1,
    status: 1,
};
const BLOCKED: Outcome = Outcome {
    action: (2, "Denied"),
    disposition: (2, "Blocked"),
    severity: 3,
    status: 2,
};
/// Shadow mode: the policy would deny; nothing was done.
const WOULD_DENY: Outcome = Outcome {
    action: (1, "Allowed"),
    disposition: (16, "No Action"),
    severity: 2,
    status: 1,
};
const DELAYED: Outcome = Outcome {
    action: (99, "Approval Required"),
    disposition: (14, "Delayed"),
    severity: 2,
    status: 0,
};
const APPROVED: Outcome = Outcome {
    action: (1, "Allowed"),
    disposition: (8, "Approved"),
    severity: 1,
    status: 1,
};
const REJECTED: Outcome = Outcome {
    action: (2, "Denied"),
    disposition: (25, "Rejected"),
    severity: 2,
    status: 2,
};
const REVOKED: Outcome = Outcome {
    action: (1, "Allowed"),
    disposition: (24, "Access Revoked"),
    severity: 1,
    status: 1,
};
const INFO: Outcome = Outcome {
    action: (0, "Unknown"),
    disposition: (0, "Unknown"),
    severity: 1,
    status: 0,
};

fn outcome_of(verdict: &str) -> Outcome {
    match verdict {
        "allow" | "granted" | "started" | "off" => ALLOWED,
        "deny" => BLOCKED,
        "audit" => WOULD_DENY,
        "approval_required" | "pending" => DELAYED,
        "approved" => APPROVED,
        "rejected" => REJECTED,
        "expired" | "withdrawn" | "ended" | "on" => REVOKED,
        _ => INFO,
    }
}

fn severity_name(id: u32) -> &'static str {
    match id {
        1 => "Informational",
        2 => "Low",
        3 => "Medium",
        4 => "High",
        _ => "Unknown",
    }
}

fn status_name(id: u32) -> &'static str {
    match id {
        1 => "Success",
        2 => "Failure",
        _ => "Unknown",
    }
}

/// The agent identity as the acting user (an agent is a service account),
/// with the process the kernel attributed the event to.
fn actor(ev: &Obj) -> Option<Value> {
    let identity = text(ev, "identity");
    let mut actor = Obj::new();
    if !identity.is_empty() {
        actor.insert("user".into(), agent_user(identity));
    }
    if let Some(pid) = ev.get("pid").and_then(Value::as_u64) {
        let mut process = json!({"pid": pid});
        if let Some(tid) = ev.get("tid").and_then(Value::as_u64) {
            process["tid"] = tid.into();
        }
        let comm = text(ev, "comm");
        if !comm.is_empty() {
            process["name"] = comm.into();
        }
        if let Some(uid) = ev.get("uid").and_then(Value::as_u64) {
            process["user"] = json!({"uid": uid.to_string()});
        }
        actor.insert("process".into(), process);
    }
    (!actor.is_empty()).then_some(Value::Object(actor))
}

fn agent_user(identity: &str) -> Value {
    json!({"name": identity, "uid": identity, "type_id": 4, "type": "Service"})
}

fn person(name: &str) -> Value {
    json!({"name": name, "type_id": 1, "type": "User"})
}

/// API activity from the action's verb.
fn api_activity(action: &str) -> (u32, &'static str) {
    let a = action.to_ascii_lowercase();
    let starts = |ps: &[&str]| ps.iter().any(|p| a.starts_with(p));
    if starts(&[
        "create", "add", "post", "send", "insert", "new", "upload", "put",
    ]) {
        (1, "Create")
    } else if starts(&[
        "get", "list", "read", "search", "query", "describe", "fetch", "find",
    ]) {
        (2, "Read")
    } else if starts(&["update", "patch", "set", "modify", "edit", "rename", "move"]) {
        (3, "Update")
    } else if starts(&["delete", "remove", "destroy", "drop", "purge", "cancel"]) {
        (4, "Delete")
    } else {
        (99, "Other")
    }
}

/// Network Activity: a connect() or a datagram, judged in the kernel.
fn network(ev: &Obj, e: &mut Obj) -> (Class, (u32, &'static str)) {
    let activity = if text(ev, "hook").starts_with("sendmsg") {
        (6, "Traffic")
    } else {
        (1, "Open")
    };
    let mut dst = Obj::new();
    if let Some(ip) = ev.get("dst_ip") {
        dst.insert("ip".into(), ip.clone());
    }
    if let Some(port) = ev.get("dst_port") {
        dst.insert("port".into(), port.clone());
    }
    if !dst.is_empty() {
        e.insert("dst_endpoint".into(), Value::Object(dst));
    }
    let proto = text(ev, "protocol");
    let mut info = json!({"direction_id": 2, "direction": "Outbound"});
    match proto {
        "tcp" => {
            info["protocol_name"] = "tcp".into();
            info["protocol_num"] = 6.into();
        }
        "udp" => {
            info["protocol_name"] = "udp".into();
            info["protocol_num"] = 17.into();
        }
        _ => {}
    }
    let v6 = text(ev, "dst_ip").contains(':');
    if ev.contains_key("dst_ip") {
        info["protocol_ver_id"] = if v6 { 6 } else { 4 }.into();
    }
    e.insert("connection_info".into(), info);
    (NETWORK_ACTIVITY, activity)
}

fn rcode_id(rcode: &str) -> u32 {
    match rcode {
        "NOERROR" => 0,
        "FORMERR" => 1,
        "SERVFAIL" => 2,
        "NXDOMAIN" => 3,
        "NOTIMP" => 4,
        "REFUSED" => 5,
        _ => 99,
    }
}

/// DNS Activity: a lookup judged by the proxy, with its answer. The
/// query came from a process on this host.
fn dns(ev: &Obj, e: &mut Obj, host: &str) -> (Class, (u32, &'static str)) {
    e.insert("src_endpoint".into(), json!({"hostname": host}));
    let d = ev.get("dns").cloned().unwrap_or(Value::Null);
    let mut query = json!({"hostname": d["query"].as_str().unwrap_or_default()});
    if let Some(t) = d["qtype"].as_str() {
        query["type"] = t.into();
    }
    e.insert("query".into(), query);
    let ttl = d["ttl"].as_u64();
    let answers: Vec<Value> = d["answer"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|ip| {
            let mut a = json!({"rdata": ip, "type": if ip.contains(':') { "AAAA" } else { "A" }});
            if let Some(ttl) = ttl {
                a["ttl"] = ttl.into();
            }
            a
        })
        .collect();
    if !answers.is_empty() {
        e.insert("answers".into(), answers.into());
    }
    let activity = match d["rcode"].as_str() {
        Some(rcode) => {
            e.insert("rcode".into(), rcode.into());
            e.insert("rcode_id".into(), rcode_id(rcode).into());
            (2, "Response")
        }
        None => (1, "Query"),
    };
    let proto = text(ev, "protocol");
    if !proto.is_empty() {
        e.insert(
            "connection_info".into(),
            json!({"direction_id": 2, "direction": "Outbound", "protocol_name": proto}),
        );
    }
    (DNS_ACTIVITY, activity)
}

/// API Activity: a tool call judged by the decision API, or an approval
/// of one (the approver is then the actor, the agent a resource).
fn api(ev: &Obj, e: &mut Obj, host: &str) -> (Class, (u32, &'static str)) {
    let (tool, action) = (call(ev, "tool"), call(ev, "action"));
    let operation = match (tool, action) {
        ("", "") if !call(ev, "destination").is_empty() => "egress".to_string(),
        ("", "") => "unknown".to_string(),
        (t, "") => t.to_string(),
        (t, a) => format!("{t}.{a}"),
    };
    let mut api = json!({"operation": operation});
    if !tool.is_empty() {
        api["service"] = json!({"name": tool});
    }
    let request = [call(ev, "decision_id"), call(ev, "approval_id")]
        .into_iter()
        .find(|s| !s.is_empty());
    if let Some(uid) = request {
        api["request"] = json!({"uid": uid});
    }
    e.insert("api".into(), api);
    e.insert("src_endpoint".into(), json!({"hostname": host}));
    let mut resources = Vec::new();
    let resource = call(ev, "resource");
    if !resource.is_empty() {
        resources.push(json!({"name": resource, "type": "tool resource"}));
    }
    let destination = call(ev, "destination");
    if !destination.is_empty() {
        resources.push(json!({"name": destination, "type": "egress destination"}));
    }
    let approver = call(ev, "approver");
    if text(ev, "kind") == "approval" && !approver.is_empty() {
        resources.push(json!({"name": text(ev, "identity"), "type": "agent identity"}));
        e.insert("actor".into(), json!({"user": person(approver)}));
    }
    if !resources.is_empty() {
        e.insert("resources".into(), resources.into());
    }
    (API_ACTIVITY, api_activity(action))
}

/// User Access Management: egress granted or taken away for a while, an
/// elevation started or ended, a kill switch.
fn access(ev: &Obj, e: &mut Obj) -> (Class, (u32, &'static str)) {
    let identity = text(ev, "identity");
    e.insert("user".into(), agent_user(identity));
    let privilege = match text(ev, "kind") {
        "kill_switch" => "all access".to_string(),
        "elevation" => format!(
            "role {}",
            ev.get("role").and_then(Value::as_str).unwrap_or("?")
        ),
        _ => format!("egress {}", call(ev, "destination")),
    };
    e.insert("privileges".into(), json!([privilege]));
    let approver = call(ev, "approver");
    if !approver.is_empty() {
        e.insert("actor".into(), json!({"user": person(approver)}));
    }
    let activity = match text(ev, "verdict") {
        "granted" | "started" | "off" => (1, "Assign Privileges"),
        "expired" | "withdrawn" | "ended" | "on" => (2, "Revoke Privileges"),
        _ => (99, "Other"),
    };
    (USER_ACCESS, activity)
}

/// Trail fields without an OCSF attribute.
const UNMAPPED: &[&str] = &[
    "kind",
    "identity",
    "verdict",
    "reason",
    "rule",
    "mode",
    "hook",
    "cgroup_id",
    "detail",
    "count",
    "elevation",
    "role",
    "call",
    "dns",
];

pub fn map(ev: &Obj, line: &str, host: &str) -> Obj {
    let mut e = Obj::new();
    let (class, activity) = match text(ev, "kind") {
        "network" => network(ev, &mut e),
        "dns" => dns(ev, &mut e, host),
        "decision" | "approval" => api(ev, &mut e, host),
        "grant" | "elevation" | "kill_switch" => access(ev, &mut e),
        _ => (BASE_EVENT, (99, "Other")),
    };
    let mut o = outcome_of(text(ev, "verdict"));
    if text(ev, "kind") == "loss" {
        o = Outcome {
            severity: 4,
            status: 2,
            ..INFO
        };
    }
    let time = humantime::parse_rfc3339(text(ev, "time"))
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64);
    e.insert("time".into(), time.into());
    let mut metadata = json!({
        "version": super::VERSION,
        "product": {"name": "Palisade", "vendor_name": "Palisade", "version": env!("CARGO_PKG_VERSION")},
        "log_name": "palisade-audit",
        "original_time": text(ev, "time"),
        "profiles": ["security_control", "host"],
    });
    if let Some(seq) = ev.get("seq").and_then(Value::as_u64) {
        metadata["sequence"] = seq.into();
    }
    if let Some(hash) = ev.get("hash").and_then(Value::as_str) {
        metadata["uid"] = hash.into();
    }
    e.insert("metadata".into(), metadata);
    e.insert("class_uid".into(), class.uid.into());
    e.insert("class_name".into(), class.name.into());
    e.insert("category_uid".into(), class.category_uid.into());
    e.insert("category_name".into(), class.category.into());
    e.insert("activity_id".into(), activity.0.into());
    e.insert("activity_name".into(), activity.1.into());
    e.insert(
        "type_uid".into(),
        (u64::from(class.uid) * 100 + u64::from(activity.0)).into(),
    );
    e.insert(
        "type_name".into(),
        format!("{}: {}", class.name, activity.1).into(),
    );
    e.insert("severity_id".into(), o.severity.into());
    e.insert("severity".into(), severity_name(o.severity).into());
    e.insert("status_id".into(), o.status.into());
    e.insert("status".into(), status_name(o.status).into());
    if o.action.0 != 0 {
        e.insert("action_id".into(), o.action.0.into());
        e.insert("action".into(), o.action.1.into());
        e.insert("disposition_id".into(), o.disposition.0.into());
        e.insert("disposition".into(), o.disposition.1.into());
    }
    let reason = text(ev, "reason");
    if !reason.is_empty() {
        e.insert("status_detail".into(), reason.into());
    }
    if !e.contains_key("actor")
        && let Some(a) = actor(ev)
    {
        e.insert("actor".into(), a);
    }
    e.insert(
        "device".into(),
        json!({"hostname": host, "type_id": 1, "type": "Server"}),
    );
    let version = text(ev, "policy_version");
    if !version.is_empty() {
        e.insert(
            "policy".into(),
            json!({"name": "palisade", "version": version, "is_applied": true}),
        );
    }
    let rule = text(ev, "rule");
    if !rule.is_empty() {
        e.insert("firewall_rule".into(), json!({"uid": rule, "name": rule}));
    }
    if let Some(count) = ev.get("count").and_then(Value::as_u64) {
        e.insert("count".into(), count.into());
    }
    e.insert("message".into(), message(ev).into());
    e.insert("raw_data".into(), line.into());
    let unmapped: Obj = UNMAPPED
        .iter()
        .filter_map(|k| ev.get(*k).map(|v| ((*k).to_string(), v.clone())))
        .collect();
    e.insert("unmapped".into(), Value::Object(unmapped));
    e
}

/// One line for people, like the daemon's stderr.
fn message(ev: &Obj) -> String {
    let mut m = format!("{} {}", text(ev, "verdict"), text(ev, "kind"));
    let identity = text(ev, "identity");
    if !identity.is_empty() {
        m.push_str(&format!(" by {identity}"));
    }
    if let (Some(ip), Some(port)) = (ev.get("dst_ip"), ev.get("dst_port")) {
        m.push_str(&format!(" to {}:{port}", ip.as_str().unwrap_or_default()));
    }
    let (tool, action) = (call(ev, "tool"), call(ev, "action"));
    if !tool.is_empty() {
        m.push_str(&format!(" {tool}.{action}"));
    }
    if let Some(q) = ev
        .get("dns")
        .and_then(|d| d.get("query"))
        .and_then(Value::as_str)
    {
        m.push_str(&format!(" {q}"));
    }
    m.push_str(&format!(" ({})", text(ev, "reason")));
    m
}
