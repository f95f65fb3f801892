use std::{net::IpAddr, time::SystemTime};

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A connect/sendmsg decision by the kernel.
    Network,
    /// A socket-creation decision by the kernel.
    Socket,
    /// A policy loaded, reloaded or rejected.
    Policy,
    /// A process enrolled in an identity.
    Enrolment,
    /// A kill switch turned on or off.
    KillSwitch,
    /// Events lost before they reached the trail.
    Loss,
    /// Daemon lifecycle.
    Daemon,
    /// A DNS lookup judged by the proxy.
    Dns,
    /// A tool call judged by the decision API (or a refused request to it).
    Decision,
    /// An approval requested, approved, rejected or used.
    Approval,
    /// A just-in-time egress grant given, ended or withdrawn.
    Grant,
    /// A request through the L7 gateway (HTTP API or MCP service).
    Gateway,
    /// A break-glass elevation started or ended.
    Elevation,
    /// Old trail files deleted by retention (what the chain no longer holds).
    Retention,
}

/// One audit record. The field names are a contract with SIEM pipelines.
#[derive(Clone, Debug, Serialize)]
pub struct AuditEvent {
    /// RFC 3339, UTC, nanoseconds.
    pub time: String,
    pub kind: EventKind,
    pub identity: Option<String>,
    /// `allow`, `deny`, `audit` (would deny, shadow mode) or, for non-decision
    /// events, what happened (`applied`, `rejected`, `on`, `off`…).
    pub verdict: String,
    pub reason: String,
    pub policy_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Free text for people (errors, counts…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Aggregate records of kernel denials: the period their `count` covers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<AggregateDetail>,
    /// Retention records: which files were deleted, and the last record in
    /// them (the first kept record links to it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionDetail>,
    /// DNS lookups (`kind: dns`): the question, the answer, what was learned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsDetail>,
    /// Tool calls, approvals and grants (`decision`, `approval`, `grant`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call: Option<CallDetail>,
    /// Gateway requests (`kind: gateway`): the HTTP side of the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpDetail>,
    /// The break-glass elevation this record is about, or that alone
    /// allowed the connection or call it records (its id, `elv-…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elevation: Option<String>,
    /// Position in the hash chain of the trail (1 = first record ever).
    /// Set by the trail writer (`audit::chain`), not by producers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Hash of the record before this one (64 zeros for the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_hash: Option<String>,
    /// SHA-256 of this record's own JSON without this field. Must stay the
    /// last field: the sealed line is the body with `,"hash":…` appended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// What a decision, approval or grant event says about the call.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CallDetail {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tool: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub action: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    /// SHA-256 of the canonical parameters (never the parameters: they may
    /// hold personal data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params_digest: Option<String>,
    /// Names of the parameters sent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<String>,
    /// Values of the numeric parameters (numbers only: other values may
    /// hold personal data), the evidence `policy suggest` bounds them by.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub numbers: std::collections::BTreeMap<String, serde_json::Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// Who approved or rejected (`uid 0 (root)`, `operator alice`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    /// Grants: destination, ports and expiry (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Token of the call, when one was checked: its `jti` and key id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// What a gateway event says about the request. Never a header value, a
/// body or a parameter value: those may hold secrets or personal data.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HttpDetail {
    pub service: String,
    pub method: String,
    /// The route's path template (`/v1/customers/{id}`), not the path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_id: Option<String>,
    /// MCP: the JSON-RPC method (`tools/call`, `tools/list`…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_method: Option<String>,
    /// The status the agent got.
    pub status: u16,
    /// The upstream's status, when the request was forwarded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    /// Request body bytes from the agent, response body bytes to it.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// From the request's arrival to the end of the response body.
    pub duration_us: u64,
    /// `complete`, `aborted` (the agent went away) or `failed`.
    pub end: String,
}

/// What an aggregate record covers: `count` more denials of one kind (or,
/// with `destinations`, of several) between `first` and `last`, counted in
/// the kernel instead of recorded one by one.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AggregateDetail {
    /// RFC 3339, UTC.
    pub first: String,
    pub last: String,
    /// Kinds (destinations) a summary record covers; absent for one kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destinations: Option<u64>,
}

/// What retention deleted. `audit verify` accepts a trail that begins at
/// `through_seq + 1` (linking to `through_hash`) only with such a record.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RetentionDetail {
    pub files: Vec<String>,
    pub through_seq: u64,
    pub through_hash: String,
}

/// What a DNS event says about the lookup.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DnsDetail {
    /// The name asked, lowercase, no trailing dot.
    pub query: String,
    /// `A`, `AAAA`, `TXT`…
    pub qtype: String,
    /// Response code the process got (`NOERROR`, `NXDOMAIN`, `REFUSED`…);
    /// absent when the answer was dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rcode: Option<String>,
    /// The CNAME chain after the queried name, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cnames: Vec<String>,
    /// Addresses in the answer (on the chain).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub answer: Vec<IpAddr>,
    /// Addresses written into the identity's learned map.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub learned: Vec<IpAddr>,
    /// Inside addresses (loopback, private, link-local, CGNAT, ULA,
    /// metadata) in the answer that no `cidr` rule of the identity covers:
    /// not learned, and cut from the answer the process got.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub withheld: Vec<IpAddr>,
    /// Seconds the learned addresses admit new connections (before grace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// The name that decided, when it is not the queried one (a CNAME).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
}

/// Longest name-like field an event keeps (identity, tool, rule…), and
/// longest text (detail, resource, route…), in bytes; longer values are
/// cut with their length said. What an agent sends ends up in events:
/// bounded, a flood of oversized requests costs the trail little per
/// record.
pub const MAX_EVENT_NAME: usize = 256;
pub const MAX_EVENT_TEXT: usize = 2048;
/// Most entries an event keeps of a list (parameter names, CNAMEs…).
pub const MAX_EVENT_LIST: usize = 64;

/// `s`, cut to at most `max` bytes (at a character boundary), saying so.
/// `s` with every control character (C0, DEL, C1: escape sequences, carriage
/// returns, backspaces) written as `\u{..}`, for a terminal. Fields an
/// agent chooses (process names, tool calls, DNS names) must not be able to
/// move the cursor, erase lines or forge others on an operator's screen.
pub fn terminal_safe(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

fn clip_in_place(s: &mut String, max: usize) {
    if s.len() > max {
        *s = clip(s, max);
    }
}

fn clip_opt(s: &mut Option<String>, max: usize) {
    if let Some(v) = s {
        clip_in_place(v, max);
    }
}

fn clip_list(list: &mut Vec<String>, max: usize) {
    if list.len() > MAX_EVENT_LIST {
        let more = list.len() - MAX_EVENT_LIST;
        list.truncate(MAX_EVENT_LIST);
        list.push(format!("… ({more} more)"));
    }
    for v in list {
        clip_in_place(v, max);
    }
}

impl AuditEvent {
    /// The event with every field an outside party can fill held to its
    /// bound (`MAX_EVENT_*`); the audit pipeline applies it to every event.
    pub fn bounded(mut self) -> Self {
        let (name, text) = (MAX_EVENT_NAME, MAX_EVENT_TEXT);
        clip_in_place(&mut self.verdict, name);
        clip_in_place(&mut self.reason, name);
        clip_opt(&mut self.identity, name);
        clip_opt(&mut self.policy_version, name);
        clip_opt(&mut self.rule, name);
        clip_opt(&mut self.comm, name);
        clip_opt(&mut self.protocol, name);
        clip_opt(&mut self.hook, name);
        clip_opt(&mut self.mode, name);
        clip_opt(&mut self.elevation, name);
        clip_opt(&mut self.detail, text);
        if let Some(c) = &mut self.call {
            clip_in_place(&mut c.tool, name);
            clip_in_place(&mut c.action, name);
            clip_in_place(&mut c.resource, text);
            clip_opt(&mut c.decision_id, name);
            clip_opt(&mut c.params_digest, name);
            clip_opt(&mut c.approval_id, name);
            clip_opt(&mut c.approver, name);
            clip_opt(&mut c.destination, text);
            clip_opt(&mut c.expires, name);
            clip_opt(&mut c.jti, name);
            clip_list(&mut c.params, name);
            if c.numbers.len() > MAX_EVENT_LIST || c.numbers.keys().any(|k| k.len() > name) {
                c.numbers = std::mem::take(&mut c.numbers)
                    .into_iter()
                    .filter(|(k, _)| k.len() <= name)
                    .take(MAX_EVENT_LIST)
                    .collect();
            }
        }
        if let Some(h) = &mut self.http {
            clip_in_place(&mut h.service, name);
            clip_in_place(&mut h.method, name);
            clip_opt(&mut h.route, text);
            clip_opt(&mut h.route_id, name);
            clip_opt(&mut h.mcp_method, name);
            clip_in_place(&mut h.end, text);
        }
        if let Some(d) = &mut self.dns {
            clip_in_place(&mut d.query, text);
            clip_in_place(&mut d.qtype, name);
            clip_opt(&mut d.rcode, name);
            clip_list(&mut d.cnames, text);
            d.answer.truncate(MAX_EVENT_LIST);
            d.learned.truncate(MAX_EVENT_LIST);
        }
        self
    }

    pub fn new(kind: EventKind, verdict: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::at(SystemTime::now(), kind, verdict, reason)
    }

    pub fn at(
        time: SystemTime,
        kind: EventKind,
        verdict: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            time: humantime::format_rfc3339_nanos(time).to_string(),
            kind,
            identity: None,
            verdict: verdict.into(),
            reason: reason.into(),
            policy_version: None,
            rule: None,
            pid: None,
            tid: None,
            uid: None,
            comm: None,
            cgroup_id: None,
            dst_ip: None,
            dst_port: None,
            protocol: None,
            hook: None,
            mode: None,
            detail: None,
            count: None,
            aggregate: None,
            retention: None,
            dns: None,
            call: None,
            http: None,
            elevation: None,
            seq: None,
            prev_hash: None,
            hash: None,
        }
    }

    /// One line for people reading the daemon's stderr.
    pub fn human(&self) -> String {
        let mut s = format!("{} {}", self.verdict.to_uppercase(), kind_name(self.kind));
        if let Some(id) = &self.identity {
            s.push_str(&format!(" identity={id}"));
        }
        if let (Some(pid), Some(comm)) = (self.pid, &self.comm) {
            s.push_str(&format!(" pid={pid} comm={comm}"));
        }
        if let (Some(ip), Some(port)) = (self.dst_ip, self.dst_port) {
            let proto = self.protocol.as_deref().unwrap_or("?");
            match ip {
                IpAddr::V6(_) => s.push_str(&format!(" dst=[{ip}]:{port}/{proto}")),
                IpAddr::V4(_) => s.push_str(&format!(" dst={ip}:{port}/{proto}")),
            }
        } else if let Some(proto) = &self.protocol {
            s.push_str(&format!(" socket={proto}"));
        }
        if let Some(h) = &self.http {
            s.push_str(&format!(
                " service={} {} {} status={}",
                h.service,
                h.method,
                h.route
                    .as_deref()
                    .or(h.mcp_method.as_deref())
                    .unwrap_or("-"),
                h.status
            ));
        }
        if let Some(d) = &self.dns {
            s.push_str(&format!(" query={} type={}", d.query, d.qtype));
            if !d.learned.is_empty() {
                let learned: Vec<String> = d.learned.iter().map(ToString::to_string).collect();
                s.push_str(&format!(
                    " learned={} ttl={}",
                    learned.join(","),
                    d.ttl.unwrap_or(0)
                ));
            }
        }
        s.push_str(&format!(" reason={}", self.reason));
        if let Some(rule) = &self.rule {
            s.push_str(&format!(" rule={rule}"));
        }
        if let Some(e) = &self.elevation {
            s.push_str(&format!(" elevation={e}"));
        }
        if let Some(v) = &self.policy_version {
            s.push_str(&format!(" policy={v}"));
        }
        if let Some(count) = self.count {
            s.push_str(&format!(" count={count}"));
        }
        if let Some(d) = &self.detail {
            s.push_str(&format!(" detail={d:?}"));
        }
        if let Some(seq) = self.seq {
            s.push_str(&format!(" seq={seq}"));
        }
        terminal_safe(&s).into_owned()
    }
}

fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Network => "network",
        EventKind::Socket => "socket",
        EventKind::Policy => "policy",
        EventKind::Enrolment => "enrolment",
        EventKind::KillSwitch => "kill-switch",
        EventKind::Loss => "loss",
        EventKind::Daemon => "daemon",
        EventKind::Dns => "dns",
        EventKind::Decision => "decision",
        EventKind::Approval => "approval",
        EventKind::Grant => "grant",
        EventKind::Gateway => "gateway",
        EventKind::Elevation => "elevation",
        EventKind::Retention => "retention",
    }
}
