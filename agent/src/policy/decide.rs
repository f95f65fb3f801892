//! The policy's verdicts, computed in userspace: tool calls (for the
//! decision API) and egress destinations (the reference semantics the kernel
//! tables implement, extended with host names and approvals).
//!
//! Stateless: budgets are reported as charges for the caller's limiter to
//! apply; the kill switch is daemon state. Every evaluation error denies.

use std::{net::IpAddr, time::SystemTime};

use serde_json::{Map, Value};

use super::{
    Identity, Policy, Protocol, ToolRule, Window,
    cel::{Bindings, CONTEXT_BUILTINS, EvalError, VARIABLES, json_object},
    net::norm_of,
};

/// A tool call to judge.
#[derive(Clone, Debug)]
pub struct ToolCall<'a> {
    pub identity: &'a str,
    pub tool: &'a str,
    pub action: &'a str,
    pub resource: &'a str,
    pub params: &'a Map<String, Value>,
    /// What the caller sent; the built-ins are added from `now`.
    pub context: &'a Map<String, Value>,
    pub now: SystemTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolVerdict {
    Allow,
    Deny,
    ApprovalRequired,
}

impl ToolVerdict {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::ApprovalRequired => "approval_required",
        }
    }
}

/// A budget the call counts against.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetCharge {
    pub budget: String,
    pub amount: f64,
    pub limit: f64,
    pub per: Window,
    pub unit: Option<String>,
}

/// A verdict with the why.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub verdict: ToolVerdict,
    /// A stable code: `allowed`, `denied-by-rule`, `no-matching-rule`…
    pub reason: &'static str,
    pub message: String,
    /// Ids of the rules that decided, the deciding one first.
    pub rules: Vec<String>,
    pub charges: Vec<BudgetCharge>,
}

impl Decision {
    fn deny(reason: &'static str, message: impl Into<String>, rules: Vec<String>) -> Self {
        Self {
            verdict: ToolVerdict::Deny,
            reason,
            message: message.into(),
            rules,
            charges: Vec::new(),
        }
    }

    /// Apply budgets given what was already used in each budget's current
    /// window: a charge that would exceed its limit turns the verdict into a
    /// deny (`budget-exceeded`).
    pub fn check_budgets(&mut self, used: impl Fn(&str) -> f64) {
        if self.verdict == ToolVerdict::Deny {
            return;
        }
        if let Some(c) = self
            .charges
            .iter()
            .find(|c| used(&c.budget) + c.amount > c.limit)
        {
            let unit = c
                .unit
                .as_deref()
                .map(|u| format!(" {u}"))
                .unwrap_or_default();
            let message = format!(
                "budget `{}` allows {}{unit} per {}; {} already used, this call needs {}",
                c.budget,
                amount(c.limit),
                c.per.name(),
                amount(used(&c.budget)),
                amount(c.amount)
            );
            let budget = c.budget.clone();
            *self = Self::deny("budget-exceeded", message, vec![budget]);
        }
    }
}

/// An amount for people: budgets refill continuously, so what is used is
/// rarely whole; two decimals, without trailing zeros.
pub fn amount(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// One step of an explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub rule: String,
    pub outcome: String,
}

/// Collects why each rule did or did not apply (for `policy explain`).
pub type Trace = Vec<Step>;

impl Policy {
    pub fn decide_tool(&self, call: &ToolCall<'_>) -> Decision {
        self.decide_tool_traced(call, &mut None)
    }

    pub fn decide_tool_traced(&self, call: &ToolCall<'_>, trace: &mut Option<Trace>) -> Decision {
        match self.identity(call.identity) {
            Some(ident) => self.decide_as(ident, call, trace),
            None => self.unknown_identity(call),
        }
    }

    /// As `decide_tool`, with the rules of the elevated roles `roles` added
    /// (the identity's active elevations). A role the identity may not be
    /// elevated to adds nothing.
    pub fn decide_tool_elevated(&self, call: &ToolCall<'_>, roles: &[&str]) -> Decision {
        let Some(ident) = self.identity(call.identity) else {
            return self.unknown_identity(call);
        };
        let mut merged = ident.clone();
        for e in roles.iter().filter_map(|r| ident.elevatable(r)) {
            merged.tools.allow.extend(e.tools.allow.iter().cloned());
            merged.tools.deny.extend(e.tools.deny.iter().cloned());
            merged
                .tools
                .require_approval
                .extend(e.tools.require_approval.iter().cloned());
            merged.budgets.extend(e.budgets.iter().cloned());
        }
        self.decide_as(&merged, call, &mut None)
    }

    fn unknown_identity(&self, call: &ToolCall<'_>) -> Decision {
        Decision::deny(
            "unknown-identity",
            format!(
                "identity `{}` is not in policy {}",
                call.identity, self.version
            ),
            vec![],
        )
    }

    fn decide_as(
        &self,
        ident: &Identity,
        call: &ToolCall<'_>,
        trace: &mut Option<Trace>,
    ) -> Decision {
        if let Some(d) = self.check_inputs(call) {
            return d;
        }
        let bindings = Self::bindings(ident, call);
        let rule_id = |r: &ToolRule| {
            self.rule(r.rule)
                .map_or_else(|| r.rule.to_string(), |i| i.id.clone())
        };
        // Explanations are written only for `policy explain`.
        let mut note = |r: &ToolRule, outcome: &dyn Fn() -> String| {
            if let Some(t) = trace.as_mut() {
                t.push(Step {
                    rule: rule_id(r),
                    outcome: outcome(),
                });
            }
        };

        // Deny wins, then approval, then allow; nothing matching denies.
        for (rules, verdict, reason) in [
            (&ident.tools.deny, ToolVerdict::Deny, "denied-by-rule"),
            (
                &ident.tools.require_approval,
                ToolVerdict::ApprovalRequired,
                "approval-required-by-rule",
            ),
        ] {
            for r in rules.iter() {
                match applies(r, call, &bindings, true) {
                    Applies::No(why) => note(r, &|| why.explain(call)),
                    Applies::Error(e) => {
                        note(r, &|| format!("error: {e}"));
                        return Decision::deny(e.reason(), e.to_string(), vec![rule_id(r)]);
                    }
                    Applies::Yes => {
                        note(r, &|| "applies".into());
                        let mut d = Decision {
                            verdict,
                            reason,
                            message: format!("rule `{}` {}", rule_id(r), verdict.name()),
                            rules: vec![rule_id(r)],
                            charges: Vec::new(),
                        };
                        if verdict != ToolVerdict::Deny {
                            d.charges = match self.charges(ident, call, &bindings) {
                                Ok(c) => c,
                                Err(e) => {
                                    return Decision::deny(e.reason(), e.to_string(), d.rules);
                                }
                            };
                        }
                        return d;
                    }
                }
            }
        }
        let mut matched = Vec::new();
        let mut needs_approval = Vec::new();
        for r in &ident.tools.allow {
            match applies(r, call, &bindings, false) {
                Applies::No(why) => note(r, &|| why.explain(call)),
                Applies::Error(e) => {
                    note(r, &|| format!("error: {e}"));
                    return Decision::deny(e.reason(), e.to_string(), vec![rule_id(r)]);
                }
                Applies::Yes => {
                    let approval = match &r.approval_if {
                        None => false,
                        Some(cond) => match cond.eval_bool(&bindings) {
                            Ok(b) => b,
                            Err(e) => {
                                note(r, &|| format!("approval_if error: {e}"));
                                return Decision::deny(e.reason(), e.to_string(), vec![rule_id(r)]);
                            }
                        },
                    };
                    note(r, &|| {
                        if approval {
                            "applies; approval_if is true".into()
                        } else {
                            "applies".into()
                        }
                    });
                    if approval {
                        needs_approval.push(rule_id(r));
                    }
                    matched.push(rule_id(r));
                }
            }
        }
        if matched.is_empty() {
            return Decision::deny(
                "no-matching-rule",
                format!(
                    "no rule allows `{}.{}` for identity `{}`",
                    call.tool, call.action, ident.id
                ),
                vec![],
            );
        }
        let charges = match self.charges(ident, call, &bindings) {
            Ok(c) => c,
            Err(e) => return Decision::deny(e.reason(), e.to_string(), matched),
        };
        if needs_approval.is_empty() {
            Decision {
                verdict: ToolVerdict::Allow,
                reason: "allowed",
                message: format!("allowed by rule `{}`", matched[0]),
                rules: matched,
                charges,
            }
        } else {
            Decision {
                verdict: ToolVerdict::ApprovalRequired,
                reason: "approval-condition",
                message: format!(
                    "rule `{}` requires approval for this call",
                    needs_approval[0]
                ),
                rules: needs_approval,
                charges,
            }
        }
    }

    /// Parameters and caller context against their declarations.
    fn check_inputs(&self, call: &ToolCall<'_>) -> Option<Decision> {
        if let Some(schema) = self.schema_for(call.tool, call.action) {
            for (name, value) in call.params {
                match schema.params.get(name) {
                    None => {
                        return Some(Decision::deny(
                            "unknown-parameter",
                            format!(
                                "`{name}` is not a declared parameter of {}.{} (declared: {})",
                                call.tool,
                                call.action,
                                schema.params.keys().cloned().collect::<Vec<_>>().join(", ")
                            ),
                            vec![],
                        ));
                    }
                    Some(ty) if !ty.admits(value) => {
                        return Some(Decision::deny(
                            "parameter-type",
                            format!("parameter `{name}` must be {}, got {value}", ty.name()),
                            vec![],
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        for (name, value) in call.context {
            match self.context_fields.get(name) {
                None => {
                    let why = if CONTEXT_BUILTINS.contains(&name.as_str()) {
                        "is set by the daemon's clock and cannot be sent"
                    } else {
                        "is not a declared context field"
                    };
                    return Some(Decision::deny(
                        "unknown-context-field",
                        format!("context `{name}` {why}"),
                        vec![],
                    ));
                }
                Some(ty) if !ty.admits(value) => {
                    return Some(Decision::deny(
                        "context-type",
                        format!("context `{name}` must be {}, got {value}", ty.name()),
                        vec![],
                    ));
                }
                Some(_) => {}
            }
        }
        None
    }

    /// The call's variables, each built only if a condition reads it.
    fn bindings<'a>(ident: &'a Identity, call: &'a ToolCall<'_>) -> Bindings<'a> {
        let (params, context, now) = (call.params, call.context, call.now);
        let (tool, action, resource) = (call.tool, call.action, call.resource);
        Bindings::lazy(move |i| match VARIABLES.get(i).copied() {
            Some("params") => json_object(params),
            Some("context") => {
                let mut context = context.clone();
                for (k, v) in clock_fields(now) {
                    context.insert(k.to_string(), v);
                }
                json_object(&context)
            }
            Some("identity") => json_object(&identity_fields(ident)),
            Some("tool") => tool.to_string().into(),
            Some("action") => action.to_string().into(),
            Some("resource") => resource.to_string().into(),
            _ => cel::Value::Null,
        })
    }

    fn charges(
        &self,
        ident: &Identity,
        call: &ToolCall<'_>,
        b: &Bindings<'_>,
    ) -> Result<Vec<BudgetCharge>, EvalError> {
        ident
            .budgets
            .iter()
            .filter(|bd| bd.covers(call.tool, call.action))
            .map(|bd| {
                let amount = match &bd.sum {
                    None => 1.0,
                    Some(e) => e.eval_number(b)?,
                };
                // A budget only ever counts spending: a negative charge
                // would refill the bucket (a "refund" of -100000 buys the
                // next 100000), so the call is denied instead.
                if amount < 0.0 {
                    return Err(EvalError::Failed(format!(
                        "budget `{}`: `{}` is {amount}, and a charge cannot be negative",
                        bd.id,
                        bd.sum.as_ref().map_or("1", |e| e.source.as_str())
                    )));
                }
                Ok(BudgetCharge {
                    budget: bd.id.clone(),
                    amount,
                    limit: bd.limit,
                    per: bd.per,
                    unit: bd.unit.clone(),
                })
            })
            .collect()
    }
}

enum Applies<'r> {
    Yes,
    No(Miss<'r>),
    Error(EvalError),
}

/// Why a rule does not apply (put in words only when explaining).
enum Miss<'r> {
    Uncovered,
    /// The `when` condition, false.
    False(&'r str),
}

impl Miss<'_> {
    fn explain(&self, call: &ToolCall<'_>) -> String {
        match self {
            Self::Uncovered => format!(
                "does not cover {}.{} on `{}`",
                call.tool, call.action, call.resource
            ),
            Self::False(source) => format!("`{source}` is false"),
        }
    }
}

/// Does `r` apply to `call`? A `restriction` (deny, require_approval)
/// covers the call in any letter case.
fn applies<'r>(
    r: &'r ToolRule,
    call: &ToolCall<'_>,
    b: &Bindings<'_>,
    restriction: bool,
) -> Applies<'r> {
    let covered = if restriction {
        r.covers_in_any_case(call.tool, call.action, call.resource)
    } else {
        r.covers(call.tool, call.action, call.resource)
    };
    if !covered {
        return Applies::No(Miss::Uncovered);
    }
    match &r.when {
        None => Applies::Yes,
        Some(cond) => match cond.eval_bool(b) {
            Ok(true) => Applies::Yes,
            Ok(false) => Applies::No(Miss::False(&cond.source)),
            Err(e) => Applies::Error(e),
        },
    }
}

/// `identity` as conditions see it.
fn identity_fields(ident: &Identity) -> Map<String, Value> {
    let mut identity = Map::new();
    identity.insert("id".into(), ident.id.clone().into());
    identity.insert("mode".into(), ident.mode.name().into());
    for (k, v) in [
        ("org", &ident.metadata.org),
        ("tenant", &ident.metadata.tenant),
        ("owner", &ident.metadata.owner),
    ] {
        identity.insert(k.into(), v.clone().map_or(Value::Null, Value::String));
    }
    identity.insert(
        "roles".into(),
        Value::Array(
            ident
                .effective_roles
                .iter()
                .cloned()
                .map(Value::String)
                .collect(),
        ),
    );
    identity.insert(
        "labels".into(),
        Value::Object(
            ident
                .metadata
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        ),
    );
    identity
}

/// The built-in context fields for a moment (UTC).
pub fn clock_fields(now: SystemTime) -> Vec<(&'static str, Value)> {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // 1970-01-01 was a Thursday (weekday 4, with Sunday = 0).
    let weekday = (days + 4) % 7;
    let rfc3339 = humantime::format_rfc3339_seconds(now).to_string();
    vec![
        ("time", Value::String(rfc3339.clone())),
        ("unix", Value::from(secs)),
        ("hour", Value::from(rem / 3600)),
        ("minute", Value::from((rem % 3600) / 60)),
        ("weekday", Value::from(weekday)),
        (
            "date",
            Value::String(rfc3339.get(..10).unwrap_or_default().to_string()),
        ),
    ]
}

/// A destination to judge: an address, a host name, or both (a name and the
/// address it resolved to).
#[derive(Clone, Debug)]
pub struct EgressTarget {
    pub ip: Option<IpAddr>,
    pub host: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EgressVerdict {
    Allow,
    Deny,
    /// Would deny; the identity is in audit mode, so the kernel allows.
    Audit,
    /// Not reachable now; an approved just-in-time grant can open it.
    ApprovalRequired,
}

impl EgressVerdict {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Audit => "audit",
            Self::ApprovalRequired => "approval_required",
        }
    }
}

impl Policy {
    /// What the policy says about a destination: deny rules first, then
    /// allow rules, then approval-required destinations, else deny. Returns
    /// the verdict, a reason code and the deciding rule's id.
    pub fn judge_egress(
        &self,
        identity: &str,
        t: &EgressTarget,
    ) -> (EgressVerdict, &'static str, Option<String>) {
        let Some(ident) = self.identity(identity) else {
            return (EgressVerdict::Deny, "identity-not-in-policy", None);
        };
        let proto_ok =
            |p: Protocol| p == Protocol::Any || t.protocol == Protocol::Any || p == t.protocol;
        let id_of = |rule: u32| self.rule(rule).map(|r| r.id.clone());
        let addr = t.ip.map(norm_of);
        let net_hit = |rules: &[super::NetRule]| {
            rules
                .iter()
                .find(|r| {
                    addr.is_some_and(|a| r.cidr.contains_addr(&a))
                        && proto_ok(r.protocol)
                        && r.ports.iter().any(|p| p.contains(t.port))
                })
                .map(|r| r.rule)
        };
        let host_hit = |rules: &[super::HostRule]| {
            rules
                .iter()
                .find(|r| {
                    t.host.as_deref().is_some_and(|h| r.pattern.matches(h))
                        && proto_ok(r.protocol)
                        && r.ports.iter().any(|p| p.contains(t.port))
                })
                .map(|r| r.rule)
        };
        let decided = if let Some(rule) =
            net_hit(&ident.deny).or_else(|| host_hit(&ident.deny_hosts))
        {
            (EgressVerdict::Deny, "deny-rule", id_of(rule))
        } else if let Some(rule) = net_hit(&ident.allow).or_else(|| host_hit(&ident.allow_hosts)) {
            (EgressVerdict::Allow, "allow-rule", id_of(rule))
        } else if let Some(g) = ident.approval_egress.iter().find(|g| {
            let dest = match &g.destination {
                super::Destination::Cidr(c) => addr.is_some_and(|a| c.contains_addr(&a)),
                super::Destination::Host(h) => t.host.as_deref().is_some_and(|n| h.matches(n)),
            };
            dest && proto_ok(g.protocol) && g.ports.iter().any(|p| p.contains(t.port))
        }) {
            (
                EgressVerdict::ApprovalRequired,
                "approval-required",
                id_of(g.rule),
            )
        } else {
            (EgressVerdict::Deny, "default-deny", None)
        };
        match decided {
            (EgressVerdict::Deny, reason, rule) if ident.mode == super::Mode::Audit => {
                (EgressVerdict::Audit, reason, rule)
            }
            other => other,
        }
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
