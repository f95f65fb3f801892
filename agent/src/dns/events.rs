//! The audit event of one lookup (`kind: dns`), built up as the proxy goes.

use std::{net::IpAddr, time::Instant};

use hickory_proto::op::ResponseCode;

use super::{
    judge::IdentityJudge,
    message::{Answer, Query},
    proxy::Transport,
};
use crate::audit::{AuditEvent, DnsDetail, EventKind};

#[derive(Debug)]
pub struct Lookup {
    /// `allow`, `deny`, or `audit` (would deny, shadow mode).
    pub verdict: &'static str,
    pub reason: String,
    pub rule: Option<String>,
    pub policy_version: Option<String>,
    identity: Option<String>,
    mode: Option<&'static str>,
    transport: Transport,
    detail: DnsDetail,
    text: Option<String>,
}

impl Lookup {
    pub fn new(query: &Query, judge: Option<&IdentityJudge>, transport: Transport) -> Self {
        Self {
            verdict: "allow",
            reason: "host-rule".into(),
            rule: None,
            policy_version: None,
            identity: judge.map(|j| j.name.clone()),
            mode: judge.map(|j| if j.audit { "audit" } else { "enforce" }),
            transport,
            detail: DnsDetail {
                query: query.name.clone(),
                qtype: query.qtype.to_string(),
                ..DnsDetail::default()
            },
            text: None,
        }
    }

    /// A query that does not parse.
    pub fn malformed(judge: Option<&IdentityJudge>, transport: Transport, error: &str) -> Self {
        Self {
            verdict: "deny",
            reason: "malformed-query".into(),
            rule: None,
            policy_version: None,
            identity: judge.map(|j| j.name.clone()),
            mode: None,
            transport,
            detail: DnsDetail::default(),
            text: Some(error.to_string()),
        }
    }

    pub fn refuse(&mut self, reason: &str, decided_by: Option<String>) {
        self.verdict = "deny";
        self.reason = reason.to_string();
        self.detail.decided_by = decided_by;
    }

    pub fn would_refuse(&mut self, reason: &str, decided_by: Option<String>) {
        self.verdict = "audit";
        self.reason = reason.to_string();
        self.detail.decided_by = decided_by;
    }

    /// Something went wrong after the name was judged (the process gets
    /// SERVFAIL); the verdict stays what the policy said.
    pub fn fail(&mut self, reason: &str, detail: &str) {
        self.reason = reason.to_string();
        self.text = Some(detail.to_string());
    }

    /// The answer was withheld (fail closed).
    pub fn drop_answer(&mut self, reason: &str) {
        self.verdict = "deny";
        self.reason = reason.to_string();
        self.detail.rcode = None;
        self.detail.learned.clear();
        self.detail.ttl = None;
    }

    pub fn set_answer(&mut self, answer: &Answer, rcode: ResponseCode) {
        self.detail.cnames = answer.chain.iter().skip(1).cloned().collect();
        self.detail.answer = answer.addrs.clone();
        self.detail.rcode = Some(rcode_name(rcode));
    }

    /// Inside addresses were kept out of the learned map (and, outside
    /// audit mode, out of the answer). Nothing left to learn in an
    /// enforcing identity is a refusal.
    pub fn withhold(&mut self, addrs: &[IpAddr], kinds: &str, nothing_left: bool, shadow: bool) {
        self.detail.withheld = addrs.to_vec();
        self.reason = "internal-address".into();
        if shadow {
            self.verdict = "audit";
        } else if nothing_left {
            self.verdict = "deny";
        }
        self.text = Some(format!(
            "inside addresses not learned ({kinds}): no cidr rule of the identity covers them"
        ));
    }

    /// Worth a record even when plain allows are not recorded.
    pub fn notable(&self) -> bool {
        self.verdict != "allow" || !self.detail.withheld.is_empty()
    }

    pub fn learned(&mut self, addrs: &[IpAddr], ttl: u32) {
        self.detail.learned = addrs.to_vec();
        self.detail.ttl = Some(ttl);
    }

    pub fn detail_mut(&mut self) -> &mut DnsDetail {
        &mut self.detail
    }

    pub fn finish(self, started: Instant) -> AuditEvent {
        let mut ev = AuditEvent::new(EventKind::Dns, self.verdict, self.reason);
        ev.identity = self.identity;
        ev.rule = self.rule;
        ev.policy_version = self.policy_version;
        ev.mode = self.mode.map(str::to_string);
        ev.protocol = Some(self.transport.name().to_string());
        ev.detail = self
            .text
            .or_else(|| Some(format!("answered in {} µs", started.elapsed().as_micros())));
        ev.dns = (!self.detail.query.is_empty()).then_some(self.detail);
        ev
    }
}

/// The mnemonic of a response code, as DNS tools print it.
pub fn rcode_name(rcode: ResponseCode) -> String {
    match rcode {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => u16::from(other).to_string(),
    }
}
