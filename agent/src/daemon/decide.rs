//! The decision API's operations: tokens and decisions. The caller is always
//! the kernel-attested peer; tokens and override tokens must name it.

use std::time::{Duration, Instant, SystemTime};

use prost_types::Struct;
use serde_json::{Map, Value};

use super::{Caller, Daemon, DaemonError, eval_slots};
use crate::{
    audit::{AuditEvent, CallDetail, EventKind, clip},
    decision::{
        approvals::{Ask, State},
        budgets::{ChargeError, Remaining},
        input,
    },
    policy::{
        Identity, Mode, Policy, ToolVerdict,
        decide::{Decision, ToolCall},
    },
    tokens::{AccessClaims, OverrideClaims, random_id, unix},
};

/// A `Decide` request, as received.
#[derive(Clone, Debug, Default)]
pub struct DecideInput {
    pub token: String,
    pub agent: String,
    pub tool: String,
    pub action: String,
    pub resource: String,
    pub params: Option<Struct>,
    pub context: Option<Struct>,
    pub override_token: String,
}

/// The answer.
#[derive(Clone, Debug)]
pub struct DecideOutcome {
    pub verdict: ToolVerdict,
    pub reason: String,
    pub message: String,
    pub rules: Vec<String>,
    pub policy_version: String,
    pub decision_id: String,
    pub obligations: Vec<Remaining>,
    pub approval_id: Option<String>,
    /// The break-glass elevation that alone allowed (or made approvable)
    /// the call; empty when the standing policy decided.
    pub elevation: String,
}

/// Longest tool, action or agent name a call may carry (bytes).
const MAX_NAME: usize = 256;
/// Longest resource (bytes).
const MAX_RESOURCE: usize = 2048;
/// Most top-level parameters a call may carry (their names are recorded).
const MAX_PARAMS: usize = 256;

/// Calls whose names would bloat every record they are written into are
/// refused: each decision is one trail record, and a flood of megabyte
/// names would fill the disk.
fn check_sizes(req: &DecideInput) -> Result<(), DaemonError> {
    let too_long = |what: &str, s: &str, max: usize| {
        (s.len() > max).then(|| {
            DaemonError::InvalidArgument(format!("{what} is {} bytes long; at most {max}", s.len()))
        })
    };
    if let Some(e) = too_long("tool", &req.tool, MAX_NAME)
        .or_else(|| too_long("action", &req.action, MAX_NAME))
        .or_else(|| too_long("agent", &req.agent, MAX_NAME))
        .or_else(|| too_long("resource", &req.resource, MAX_RESOURCE))
    {
        return Err(e);
    }
    if let Some(p) = &req.params {
        if p.fields.len() > MAX_PARAMS {
            return Err(DaemonError::InvalidArgument(format!(
                "params has {} fields; at most {MAX_PARAMS}",
                p.fields.len()
            )));
        }
        if let Some(k) = p.fields.keys().find(|k| k.len() > MAX_NAME) {
            return Err(DaemonError::InvalidArgument(format!(
                "a params field name is {} bytes long; at most {MAX_NAME}",
                k.len()
            )));
        }
    }
    Ok(())
}

/// A token just issued.
pub struct Issued {
    pub token: String,
    pub identity: String,
    pub expires_at: u64,
    pub kid: String,
}

/// `tool.action` patterns the identity's rules can allow (token `scopes`).
fn scopes(ident: &Identity) -> Vec<String> {
    let mut v: Vec<String> = ident
        .tools
        .allow
        .iter()
        .chain(&ident.tools.require_approval)
        .flat_map(|r| {
            if r.actions.is_empty() {
                vec![format!("{}.*", r.tool)]
            } else {
                r.actions
                    .iter()
                    .map(|a| format!("{}.{a}", r.tool))
                    .collect()
            }
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Does judging a call of `ident` evaluate CEL (whose cost depends on what
/// the caller sends)?
fn has_conditions(ident: &Identity) -> bool {
    ident
        .tools
        .all()
        .any(|r| r.when.is_some() || r.approval_if.is_some())
        || ident.budgets.iter().any(|b| b.sum.is_some())
}

/// Inputs at most this many values (lists, maps and their items counted
/// together) and string bytes are judged on the thread that received the
/// call: loops in conditions iterate over inputs, so even a cubic
/// condition over 32 values is 32,768 steps, a fraction of the
/// evaluation budget.
const INLINE_VALUES: usize = 32;
const INLINE_STRING_BYTES: usize = 8 * 1024;

/// Are the call's params and context small enough that evaluating any
/// condition over them is cheap?
fn small_input(req: &DecideInput) -> bool {
    fn walk(v: &prost_types::Value, values: &mut usize, bytes: &mut usize) -> bool {
        use prost_types::value::Kind;
        *values += 1;
        if *values > INLINE_VALUES {
            return false;
        }
        match &v.kind {
            Some(Kind::StringValue(s)) => {
                *bytes += s.len();
                *bytes <= INLINE_STRING_BYTES
            }
            Some(Kind::ListValue(l)) => l.values.iter().all(|v| walk(v, values, bytes)),
            Some(Kind::StructValue(s)) => fields(s, values, bytes),
            _ => true,
        }
    }
    fn fields(s: &Struct, values: &mut usize, bytes: &mut usize) -> bool {
        s.fields.iter().all(|(k, v)| {
            *bytes += k.len();
            walk(v, values, bytes)
        })
    }
    let (mut values, mut bytes) = (0, 0);
    [&req.params, &req.context]
        .into_iter()
        .flatten()
        .all(|s| fields(s, &mut values, &mut bytes))
}

/// The same bound for a call's parameters as JSON (the gateway's calls).
pub fn small_json(params: &Map<String, Value>) -> bool {
    fn walk(v: &Value, values: &mut usize, bytes: &mut usize) -> bool {
        *values += 1;
        if *values > INLINE_VALUES {
            return false;
        }
        match v {
            Value::String(s) => {
                *bytes += s.len();
                *bytes <= INLINE_STRING_BYTES
            }
            Value::Array(l) => l.iter().all(|v| walk(v, values, bytes)),
            Value::Object(m) => fields(m, values, bytes),
            _ => true,
        }
    }
    fn fields(m: &Map<String, Value>, values: &mut usize, bytes: &mut usize) -> bool {
        m.iter().all(|(k, v)| {
            *bytes += k.len();
            *bytes <= INLINE_STRING_BYTES && walk(v, values, bytes)
        })
    }
    let (mut values, mut bytes) = (0, 0);
    fields(params, &mut values, &mut bytes)
}

impl Daemon {
    /// Does judging a call of `identity` with inputs that `small` says are
    /// not small evaluate conditions whose cost the caller chooses?
    pub fn costly_to_judge(&self, identity: &str, small: bool) -> bool {
        !small
            && self
                .active()
                .policy
                .identity(identity)
                .is_some_and(has_conditions)
    }

    /// Run `work` done for `identity` whose cost the caller chooses (a
    /// decision over conditions fed a large input, a large answer
    /// scrubbed) where it cannot hold the runtime: with `costly`, it waits
    /// for one of the identity's evaluation slots (`eval_slots`) and runs
    /// on a thread the runtime has handed its other work away from
    /// (`block_in_place`), so every other connection, of this identity and
    /// of the others, keeps being served. Cheap work runs where it is.
    pub async fn run_costly<T>(
        &self,
        identity: &str,
        costly: bool,
        work: impl FnOnce() -> T,
    ) -> Result<T, eval_slots::Busy> {
        if !costly {
            return Ok(work());
        }
        let _slot = self.eval_slots.acquire(identity).await?;
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        Ok(if multi_thread {
            tokio::task::block_in_place(work)
        } else {
            work()
        })
    }

    /// `decide` for the API: calls of identities whose rules have
    /// conditions, with inputs larger than `small_input` allows, are
    /// evaluated on the blocking pool, a few at a time per identity
    /// (`eval_slots`), so a costly call never holds the runtime workers or
    /// another identity's decisions. Small calls, the common case, are
    /// judged where they arrived: no thread hand-off, and no slot an
    /// agent's own concurrency could run out of.
    pub async fn decide_async(
        self: &std::sync::Arc<Self>,
        caller: Caller,
        req: DecideInput,
    ) -> Result<DecideOutcome, DaemonError> {
        if small_input(&req) {
            return self.decide(&caller, req);
        }
        let identity = match self.agent_identity(&caller, "Decide") {
            Ok((identity, _)) => identity,
            // Refused before anything is evaluated (and recorded as such).
            Err(_) => return self.decide(&caller, req),
        };
        let conditions = self
            .active()
            .policy
            .identity(&identity)
            .is_some_and(has_conditions);
        if !conditions {
            return self.decide(&caller, req);
        }
        let slot = match self.eval_slots.acquire(&identity).await {
            Ok(slot) => slot,
            Err(busy) => {
                let e = DaemonError::Busy(busy.to_string());
                let mut ev = self.call_event(&identity, &caller, &req, "deny", e.code());
                ev.detail = Some(e.to_string());
                self.record_call(ev);
                return Err(e);
            }
        };
        let daemon = self.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            daemon.decide(&caller, req)
        })
        .await
        .map_err(|e| DaemonError::Config(format!("decision evaluation stopped: {e}")))?
    }

    fn refuse_if_revoked(&self, identity: &str, index: u32) -> Result<(), DaemonError> {
        if self.maps.killed(index)? {
            return Err(DaemonError::Revoked(identity.to_string()));
        }
        Ok(())
    }

    /// A single-use access token for the caller's own identity.
    pub fn issue_token(
        &self,
        caller: &Caller,
        ttl: Option<Duration>,
    ) -> Result<Issued, DaemonError> {
        let (identity, index) = self.agent_identity(caller, "IssueToken")?;
        self.refuse_if_revoked(&identity, index)?;
        let active = self.active();
        let ident = active
            .policy
            .identity(&identity)
            .ok_or_else(|| DaemonError::UnknownIdentity(identity.clone()))?;
        let claims = AccessClaims {
            iss: String::new(),
            aud: String::new(),
            sub: identity.clone(),
            org: ident.metadata.org.clone(),
            tenant: ident.metadata.tenant.clone(),
            role: ident.roles.first().cloned().unwrap_or_default(),
            roles: ident.effective_roles.clone(),
            scopes: scopes(ident),
            iat: 0,
            iat_ms: None,
            nbf: 0,
            exp: 0,
            jti: String::new(),
        };
        let (token, c) = self.decisions.tokens.issue_access(claims, ttl)?;
        Ok(Issued {
            token,
            identity,
            expires_at: c.exp,
            kid: self.decisions.tokens.signing_kid(),
        })
    }

    /// Judge a tool call. Errors are refusals to judge (bad or replayed
    /// token, unenrolled caller…); a judged call always gets a verdict, and
    /// anything that cannot be evaluated is a DENY.
    pub fn decide(&self, caller: &Caller, req: DecideInput) -> Result<DecideOutcome, DaemonError> {
        let started = Instant::now();
        let (identity, index) = self.agent_identity(caller, "Decide")?;
        let result = self.decide_for(caller, &identity, index, &req, started);
        if let Err(e) = &result {
            // A refusal is recorded like a decision: who, what, why.
            let mut ev = self.call_event(&identity, caller, &req, "deny", e.code());
            ev.detail = Some(e.to_string());
            self.record_call(ev);
            self.metrics.record_decision(&crate::metrics::Decision {
                identity: &identity,
                tool: &req.tool,
                verdict: "deny",
                latency: started.elapsed(),
            });
        }
        result
    }

    fn call_event(
        &self,
        identity: &str,
        caller: &Caller,
        req: &DecideInput,
        verdict: &str,
        reason: &str,
    ) -> AuditEvent {
        let version = self.active().policy.version.to_string();
        call_event_of(identity, caller, req, verdict, reason, version)
    }
}

/// The audit record of a call, before its outcome is filled in.
fn call_event_of(
    identity: &str,
    caller: &Caller,
    req: &DecideInput,
    verdict: &str,
    reason: &str,
    policy_version: String,
) -> AuditEvent {
    let mut ev = AuditEvent::new(EventKind::Decision, verdict, reason);
    ev.identity = Some(identity.to_string());
    ev.pid = Some(caller.pid);
    ev.uid = Some(caller.uid);
    ev.policy_version = Some(policy_version);
    // Clipped: a refused oversized call is recorded too, and must not
    // carry its bulk into the trail.
    ev.call = Some(CallDetail {
        tool: clip(&req.tool, MAX_NAME),
        action: clip(&req.action, MAX_NAME),
        resource: clip(&req.resource, MAX_RESOURCE),
        ..CallDetail::default()
    });
    ev
}

impl Daemon {
    fn decide_for(
        &self,
        caller: &Caller,
        identity: &str,
        index: u32,
        req: &DecideInput,
        started: Instant,
    ) -> Result<DecideOutcome, DaemonError> {
        check_sizes(req)?;
        if !req.agent.is_empty() && req.agent != identity {
            return Err(DaemonError::PermissionDenied(format!(
                "the request names agent `{}`, but the caller is `{identity}`",
                req.agent
            )));
        }
        self.refuse_if_revoked(identity, index)?;
        // Authenticate before looking at the call.
        let override_claims: Option<OverrideClaims> = if req.override_token.is_empty() {
            None
        } else {
            Some(
                self.decisions
                    .tokens
                    .verify_override(&req.override_token, identity)?,
            )
        };
        // The peer is the proof; a token presented as well must verify
        // and name the same identity (and is spent).
        let access = self.presented_token(&req.token, identity)?;
        let active = self.active();
        let policy: &Policy = &active.policy;
        let version = policy.version.to_string();
        let call_site = CallSite {
            caller,
            identity,
            req,
            policy,
            version: &version,
            decision_id: random_id(),
            started,
        };
        let inputs = input::to_json(req.params.as_ref(), "params")
            .and_then(|p| input::to_json(req.context.as_ref(), "context").map(|c| (p, c)));
        let (params, context): (Map<String, Value>, Map<String, Value>) = match inputs {
            Ok(pc) => pc,
            Err(e) => {
                let d = Decision {
                    verdict: ToolVerdict::Deny,
                    reason: "invalid-input",
                    message: e.to_string(),
                    rules: vec![],
                    charges: vec![],
                };
                return Ok(self.finish(
                    &call_site,
                    Answer {
                        token: access.as_ref(),
                        ..Answer::new(d)
                    },
                ));
            }
        };
        let digest = input::digest(&params);
        let call = ToolCall {
            identity,
            tool: &req.tool,
            action: &req.action,
            resource: &req.resource,
            params: &params,
            context: &context,
            now: SystemTime::now(),
        };
        let ask = || Ask {
            identity: identity.to_string(),
            tool: req.tool.clone(),
            action: req.action.clone(),
            resource: req.resource.clone(),
            params_digest: digest.clone(),
            policy_version: version.clone(),
            rules: Vec::new(),
            egress: None,
        };

        if req.tool == super::people::ELEVATION_TOOL {
            let (d, approval) =
                self.request_elevation(policy, &req.action, &params, ask(), || {
                    self.call_event(identity, caller, req, "pending", "elevation-requested")
                })?;
            return Ok(self.finish(
                &call_site,
                Answer {
                    digest: Some(&digest),
                    approval: approval.map(|a| (a.id, String::new())),
                    token: access.as_ref(),
                    ..Answer::new(d)
                },
            ));
        }

        if let Some(claims) = override_claims {
            // An approved call: exactly the one approved, once.
            let approval = self.decisions.approvals.consume(&claims.approval, &ask())?;
            self.decisions.tokens.spend_override(&claims)?;
            self.metrics
                .set_pending_approvals(self.decisions.approvals.pending() as u64);
            let decided = policy.decide_tool(&call);
            let obligations = match self
                .decisions
                .budgets
                .charge(identity, &decided.charges, true)
            {
                Ok(r) => r,
                Err(ChargeError::State(e)) => return Err(DaemonError::State(e)),
                Err(ChargeError::Exceeded(_)) => Vec::new(),
            };
            let d = Decision {
                verdict: ToolVerdict::Allow,
                reason: "approved-override",
                message: format!("approved by {}: {}", approval.approver, approval.reason),
                rules: approval.rules.clone(),
                charges: vec![],
            };
            return Ok(self.finish(
                &call_site,
                Answer {
                    digest: Some(&digest),
                    obligations,
                    approval: Some((approval.id, approval.approver)),
                    ..Answer::new(d)
                },
            ));
        }

        let judged = self.judge(policy, &call, ask, || {
            self.call_event(identity, caller, req, "pending", "approval-requested")
        })?;
        let approval = judged.approval.map(|a| (a.id, String::new()));
        let elevation = judged.elevation;
        Ok(self.finish(
            &call_site,
            Answer {
                digest: Some(&digest),
                obligations: judged.obligations,
                approval,
                token: access.as_ref(),
                elevation: elevation.as_deref(),
                ..Answer::new(judged.decision)
            },
        ))
    }

    fn mode_of(&self, policy: &Policy, identity: &str) -> Mode {
        policy.identity(identity).map_or(Mode::Enforce, |i| i.mode)
    }

    /// Audit, metrics, and the answer (shadow mode turns would-deny and
    /// would-ask into allow here, and says so).
    fn finish(&self, site: &CallSite<'_>, answer: Answer<'_>) -> DecideOutcome {
        let CallSite {
            caller,
            identity,
            req,
            policy,
            version,
            ref decision_id,
            started,
        } = *site;
        let Answer {
            decision: d,
            digest,
            obligations,
            approval,
            token,
            elevation,
        } = answer;
        let mode = self.mode_of(policy, identity);
        let shadow = mode == Mode::Audit && d.verdict != ToolVerdict::Allow;
        let (verdict, audit_verdict) = if shadow {
            (ToolVerdict::Allow, "audit")
        } else {
            (d.verdict, d.verdict.name())
        };
        let message = if shadow {
            format!("would {} (audit mode): {}", d.verdict.name(), d.message)
        } else {
            d.message.clone()
        };
        let policy_version = version.to_string();
        let mut ev = call_event_of(
            identity,
            caller,
            req,
            audit_verdict,
            d.reason,
            policy_version.clone(),
        );
        ev.rule = d.rules.first().cloned();
        ev.detail = Some(message.clone());
        ev.mode = Some(mode.name().to_string());
        if let Some(c) = ev.call.as_mut() {
            c.decision_id = Some(decision_id.clone());
            c.params_digest = digest.map(str::to_string);
            if let Some(p) = &req.params {
                c.params = p.fields.keys().cloned().collect();
                c.numbers = crate::discovery::numeric_params(p);
            }
            if let Some((id, approver)) = &approval {
                c.approval_id = Some(id.clone());
                if !approver.is_empty() {
                    c.approver = Some(approver.clone());
                }
            }
            c.jti = token.map(|t| t.jti.clone());
        }
        ev.elevation = elevation.map(str::to_string);
        self.record_call(ev);
        self.metrics.record_decision(&crate::metrics::Decision {
            identity,
            tool: &req.tool,
            verdict: audit_verdict,
            latency: started.elapsed(),
        });
        DecideOutcome {
            verdict,
            reason: d.reason.to_string(),
            message,
            rules: d.rules,
            policy_version,
            decision_id: decision_id.clone(),
            obligations,
            approval_id: approval
                .filter(|(_, approver)| approver.is_empty())
                .map(|(id, _)| id),
            elevation: elevation.unwrap_or_default().to_string(),
        }
    }

    /// An access token a caller chose to present along with its peer
    /// credentials: none is fine, one must verify, name `identity` and
    /// be unused (it is spent here).
    pub(super) fn presented_token(
        &self,
        token: &str,
        identity: &str,
    ) -> Result<Option<AccessClaims>, DaemonError> {
        if token.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.decisions.tokens.verify_access(token, identity)?))
    }

    /// Record a refused token on a call other than `Decide` (which records
    /// its own refusals), then return the error.
    pub(super) fn refused_token(
        &self,
        caller: &Caller,
        identity: &str,
        what: &str,
        e: DaemonError,
    ) -> DaemonError {
        let mut ev = AuditEvent::new(EventKind::Decision, "deny", e.code());
        ev.identity = Some(identity.to_string());
        ev.pid = Some(caller.pid);
        ev.uid = Some(caller.uid);
        ev.policy_version = Some(self.active().policy.version.to_string());
        ev.detail = Some(format!("{what}: {e}"));
        self.audit.emit(ev);
        e
    }

    /// Forget used token ids of expired tokens (called periodically).
    pub fn prune_tokens(&self) {
        self.decisions.tokens.prune();
    }

    /// For `GetApproval`: the caller's own approval.
    pub fn own_approval(
        &self,
        caller: &Caller,
        id: &str,
        token: &str,
    ) -> Result<crate::decision::approvals::Approval, DaemonError> {
        let (identity, _) = self.agent_identity(caller, "GetApproval")?;
        self.presented_token(token, &identity)
            .map_err(|e| self.refused_token(caller, &identity, "GetApproval", e))?;
        match self.decisions.approvals.get(id) {
            Some(a) if a.identity == identity => Ok(a),
            _ => Err(DaemonError::NotFound(format!(
                "no approval `{id}` for `{identity}`"
            ))),
        }
    }

    /// Approval state names for the API.
    pub fn approval_state(s: State) -> &'static str {
        match s {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Rejected => "rejected",
            State::Expired => "expired",
            State::Consumed => "consumed",
        }
    }

    /// Unix seconds now (for answers).
    pub fn now_unix() -> u64 {
        unix(SystemTime::now())
    }
}

/// What stays the same for every answer one `Decide` call can end in.
struct CallSite<'a> {
    caller: &'a Caller,
    identity: &'a str,
    req: &'a DecideInput,
    policy: &'a Policy,
    /// `policy.version` as text.
    version: &'a str,
    decision_id: String,
    started: Instant,
}

/// How one `Decide` call ends: the decision and what goes with it.
struct Answer<'a> {
    decision: Decision,
    /// The digest of the call's parameters (none when they did not parse).
    digest: Option<&'a str>,
    obligations: Vec<Remaining>,
    /// (approval id, approver): an approver for a call carried out under
    /// an approval, empty for an approval the call now waits for.
    approval: Option<(String, String)>,
    /// The access token presented with the call.
    token: Option<&'a AccessClaims>,
    /// The elevation the verdict rests on.
    elevation: Option<&'a str>,
}

impl Answer<'_> {
    fn new(decision: Decision) -> Self {
        Self {
            decision,
            digest: None,
            obligations: Vec::new(),
            approval: None,
            token: None,
            elevation: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_names_are_refused_and_recorded_clipped() {
        let big = "x".repeat(60_000);
        for req in [
            DecideInput {
                tool: big.clone(),
                ..DecideInput::default()
            },
            DecideInput {
                action: big.clone(),
                ..DecideInput::default()
            },
            DecideInput {
                resource: big.clone(),
                ..DecideInput::default()
            },
        ] {
            let err = check_sizes(&req).unwrap_err();
            assert!(err.to_string().contains("60000 bytes"), "{err}");
        }
        assert!(
            check_sizes(&DecideInput {
                tool: "stripe".into(),
                ..DecideInput::default()
            })
            .is_ok()
        );
        let clipped = clip(&format!("é{big}"), MAX_NAME);
        assert!(clipped.len() < MAX_NAME + 32, "{}", clipped.len());
        assert!(clipped.ends_with("(60002 bytes)"), "{clipped}");
    }

    fn with_items(n: usize) -> DecideInput {
        use prost_types::{ListValue, Value as V, value::Kind};
        let items = (0..n)
            .map(|i| V {
                kind: Some(Kind::NumberValue(i as f64)),
            })
            .collect();
        let list = V {
            kind: Some(Kind::ListValue(ListValue { values: items })),
        };
        DecideInput {
            params: Some(Struct {
                fields: [("items".to_string(), list)].into_iter().collect(),
            }),
            ..DecideInput::default()
        }
    }

    #[test]
    fn only_small_inputs_are_judged_inline() {
        assert!(small_input(&DecideInput::default()));
        assert!(small_input(&with_items(8)));
        assert!(!small_input(&with_items(10_000)));
        let long = DecideInput {
            context: Some(Struct {
                fields: [(
                    "text".to_string(),
                    prost_types::Value {
                        kind: Some(prost_types::value::Kind::StringValue("x".repeat(20_000))),
                    },
                )]
                .into_iter()
                .collect(),
            }),
            ..DecideInput::default()
        };
        assert!(!small_input(&long));
    }
}
