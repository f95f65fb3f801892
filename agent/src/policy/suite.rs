//! `palisade policy test SUITE.yaml`: the least-privilege test matrix a team
//! keeps in git. Each case names an identity and a destination or a tool
//! call, and the verdict it expects; the clock is fixed so conditions on
//! time are reproducible.
//!
//! ```yaml
//! policy: policy.yaml            # relative to this file
//! now: 2026-11-23T10:00:00Z
//! cases:
//!   - name: small payments go through
//!     identity: finance-agent
//!     tool: stripe
//!     action: create_payment
//!     params: {amount: 1200}
//!     expect: allow
//!   - name: the same through the gateway
//!     identity: finance-agent
//!     request: {service: stripe, method: POST, path: /v1/payment_intents, form: {amount: "1200"}}
//!     expect: allow
//!   - name: no exfiltration
//!     identity: clinical-agent
//!     destination: 203.0.113.5:443
//!     expect: deny
//! ```

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde::Deserialize;
use serde_json::{Map, Value};
use serde_saphyr::Spanned;

use super::{
    Diagnostic, Policy, PolicyErrors, Protocol, SourceLoc,
    decide::{EgressTarget, ToolCall},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteDoc {
    /// Policy file or directory, relative to the suite file.
    #[serde(default)]
    pub policy: Option<String>,
    /// Fixed clock (RFC 3339) for every case that does not set its own.
    #[serde(default)]
    pub now: Option<Spanned<String>>,
    pub cases: Vec<CaseDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseDoc {
    pub name: Spanned<String>,
    pub identity: String,
    /// `ADDRESS:PORT`, `[IPV6]:PORT` or `HOST:PORT`.
    #[serde(default)]
    pub destination: Option<Spanned<String>>,
    #[serde(default)]
    pub protocol: Option<Protocol>,
    #[serde(default)]
    pub tool: Option<String>,
    #[serde(default)]
    pub action: Option<String>,
    /// A request to a gateway service, mapped to its tool call the way
    /// the gateway maps it (instead of `tool` and `action`).
    #[serde(default)]
    pub request: Option<RequestDoc>,
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub params: Option<Value>,
    #[serde(default)]
    pub context: Option<Value>,
    /// Budget use so far in the current window, by budget id.
    #[serde(default)]
    pub usage: BTreeMap<String, f64>,
    #[serde(default)]
    pub now: Option<Spanned<String>>,
    /// `allow`, `deny`, `approval_required` (or `audit` for destinations).
    pub expect: Spanned<String>,
    /// Expected reason code, when the case wants to pin it.
    #[serde(default)]
    pub reason: Option<String>,
    /// Expected deciding rule id.
    #[serde(default)]
    pub rule: Option<String>,
}

/// `request:` of a case: what an agent sends to a service.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestDoc {
    pub service: String,
    pub method: String,
    /// The path below the service's base URL, with an optional `?query`.
    pub path: String,
    /// A JSON body.
    #[serde(default)]
    pub json: Option<Value>,
    /// A form body (`application/x-www-form-urlencoded`).
    #[serde(default)]
    pub form: Option<BTreeMap<String, String>>,
}

impl RequestDoc {
    /// The tool call the gateway would judge, or why it would refuse.
    pub fn call<'p>(
        &self,
        policy: &'p Policy,
    ) -> Result<super::service::HttpCall<'p>, (&'static str, String)> {
        let service = policy.service(&self.service).ok_or((
            "no-service",
            format!("no service `{}` in the policy", self.service),
        ))?;
        let (content_type, body) = match (&self.json, &self.form) {
            (Some(j), None) => (Some("application/json"), j.to_string().into_bytes()),
            (None, Some(f)) => (
                Some("application/x-www-form-urlencoded"),
                super::service::params::form_encode(
                    f.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                )
                .into_bytes(),
            ),
            (None, None) => (None, Vec::new()),
            (Some(_), Some(_)) => {
                return Err((
                    "bad-request",
                    "a request has `json` or `form`, not both".into(),
                ));
            }
        };
        service
            .call_for(
                policy,
                &super::service::HttpRequest {
                    method: &self.method,
                    target: &self.path,
                    content_type,
                    body: &body,
                },
            )
            .map_err(|e| (e.code(), e.to_string()))
    }
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    pub loc: SourceLoc,
    pub passed: bool,
    /// `allow (allowed, rule small-payments)` etc.
    pub got: String,
    pub expected: String,
}

pub struct Suite {
    pub file: PathBuf,
    pub doc: SuiteDoc,
}

impl Suite {
    pub fn load(file: &Path) -> Result<Self, PolicyErrors> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            PolicyErrors::single(Diagnostic::error(
                SourceLoc::new(file, 1, 1),
                format!("cannot read test suite: {e}"),
            ))
        })?;
        let doc: SuiteDoc = serde_saphyr::from_str(&text)
            .map_err(|e| PolicyErrors::single(Diagnostic::from_yaml(file, &e)))?;
        Ok(Self {
            file: file.to_path_buf(),
            doc,
        })
    }

    /// The policy path the suite names, resolved against the suite's folder.
    pub fn policy_path(&self) -> Option<PathBuf> {
        let base = self.file.parent().unwrap_or(Path::new("."));
        self.doc.policy.as_ref().map(|p| base.join(p))
    }

    /// Run every case; input errors in a case are failures that say where.
    pub fn run(&self, policy: &Policy) -> Vec<CaseResult> {
        self.doc
            .cases
            .iter()
            .map(|c| self.run_case(policy, c))
            .collect()
    }

    fn run_case(&self, policy: &Policy, c: &CaseDoc) -> CaseResult {
        let loc = SourceLoc::of(&self.file, &c.name);
        let expected = c.expect.value.clone();
        let fail = |got: String| CaseResult {
            name: c.name.value.clone(),
            loc: loc.clone(),
            passed: false,
            got,
            expected: expected.clone(),
        };
        let now = match c.now.as_ref().or(self.doc.now.as_ref()) {
            None => SystemTime::now(),
            Some(t) => match humantime::parse_rfc3339_weak(&t.value) {
                Ok(now) => now,
                Err(e) => {
                    return fail(format!(
                        "bad `now` {:?} at {}: {e}",
                        t.value,
                        SourceLoc::of(&self.file, t)
                    ));
                }
            },
        };
        let (verdict, reason, rule) = match (&c.destination, &c.tool) {
            (Some(dest), None) => {
                let Some(target) =
                    parse_destination(&dest.value, c.protocol.unwrap_or(Protocol::Tcp))
                else {
                    return fail(format!(
                        "bad destination {:?} at {}: write ADDRESS:PORT, [IPV6]:PORT or HOST:PORT",
                        dest.value,
                        SourceLoc::of(&self.file, dest)
                    ));
                };
                let (v, reason, rule) = policy.judge_egress(&c.identity, &target);
                (v.name().to_string(), reason.to_string(), rule)
            }
            (None, tool) if tool.is_some() != c.request.is_some() => {
                let empty = Map::new();
                let as_map = |v: &Option<Value>| match v {
                    None => Ok(empty.clone()),
                    Some(Value::Object(m)) => Ok(m.clone()),
                    Some(other) => Err(format!("must be a mapping, got {other}")),
                };
                let context = match as_map(&c.context) {
                    Ok(p) => p,
                    Err(e) => return fail(format!("`context` {e}")),
                };
                let parts = match (tool, &c.request) {
                    (Some(tool), _) => match as_map(&c.params) {
                        Ok(params) => Ok((
                            tool.clone(),
                            c.action.clone().unwrap_or_default(),
                            c.resource.clone().unwrap_or_default(),
                            params,
                        )),
                        Err(e) => return fail(format!("`params` {e}")),
                    },
                    (None, Some(req)) => req
                        .call(policy)
                        .map(|call| (call.tool, call.action, call.resource, call.params)),
                    (None, None) => return fail("no call".into()),
                };
                match parts {
                    // Refused before any rule: what the gateway answers.
                    Err((code, _)) => ("deny".to_string(), code.to_string(), None),
                    Ok((tool, action, resource, params)) => {
                        let call = ToolCall {
                            identity: &c.identity,
                            tool: &tool,
                            action: &action,
                            resource: &resource,
                            params: &params,
                            context: &context,
                            now,
                        };
                        let mut d = policy.decide_tool(&call);
                        d.check_budgets(|b| c.usage.get(b).copied().unwrap_or(0.0));
                        (
                            d.verdict.name().to_string(),
                            d.reason.to_string(),
                            d.rules.first().cloned(),
                        )
                    }
                }
            }
            _ => {
                return fail(
                    "a case names one of `destination`, `tool` (with `action`) or `request`".into(),
                );
            }
        };
        let got = format!(
            "{verdict} ({reason}{})",
            rule.as_deref()
                .map(|r| format!(", rule {r}"))
                .unwrap_or_default()
        );
        let passed = verdict == c.expect.value
            && c.reason.as_ref().is_none_or(|r| *r == reason)
            && c.rule.as_ref().is_none_or(|r| Some(r) == rule.as_ref());
        let mut expected = expected;
        if let Some(r) = &c.reason {
            expected.push_str(&format!(" ({r})"));
        }
        if let Some(r) = &c.rule {
            expected.push_str(&format!(" rule {r}"));
        }
        CaseResult {
            name: c.name.value.clone(),
            loc,
            passed,
            got,
            expected,
        }
    }
}

/// `10.0.0.1:443`, `[2001:db8::1]:443`, `api.example.com:443`.
pub fn parse_destination(text: &str, protocol: Protocol) -> Option<EgressTarget> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        (h, p)
    } else {
        text.rsplit_once(':')?
    };
    let port: u16 = port.parse().ok()?;
    let (ip, host) = match host.parse::<IpAddr>() {
        Ok(ip) => (Some(ip), None),
        Err(_) => (
            None,
            Some(
                super::HostPattern::parse(host)
                    .ok()
                    .map(|_| host.to_string())?,
            ),
        ),
    };
    Some(EgressTarget {
        ip,
        host,
        port,
        protocol,
    })
}
