//! The decision core every transport shares: `Decide` and the L7 gateway
//! hand it a tool call and get the verdict with budgets charged and, when a
//! human must decide, the approval the call waits for. Transports only
//! convert their request into a `ToolCall` and the verdict back.

use super::{Daemon, DaemonError};
use crate::{
    audit::{AuditEvent, EventKind},
    decision::{
        approvals::{Approval, ApprovalError, Ask},
        budgets::{ChargeError, Remaining},
    },
    policy::{Mode, Policy, ToolVerdict, decide::Decision, decide::ToolCall},
};

/// A judged call.
#[derive(Debug)]
pub struct Judged {
    pub decision: Decision,
    /// What remains of each budget the call counts against.
    pub obligations: Vec<Remaining>,
    /// The approval the call needs (enforce mode only).
    pub approval: Option<Approval>,
    /// The break-glass elevation that alone allowed the call (or made it
    /// approvable), if any.
    pub elevation: Option<String>,
}

impl Daemon {
    /// Judge `call` with `policy`: rules and conditions, then budgets
    /// (charged only when allowed), then, for a call that needs approval,
    /// the pending approval (an identical pending one is reused). A new
    /// approval is recorded with `pending_event`'s who and what; `ask`
    /// describes it (built only then).
    pub(crate) fn judge(
        &self,
        policy: &Policy,
        call: &ToolCall<'_>,
        ask: impl FnOnce() -> Ask,
        pending_event: impl FnOnce() -> AuditEvent,
    ) -> Result<Judged, DaemonError> {
        let identity = call.identity;
        let (mut d, elevation) = self.decide_elevated(policy, call);
        let mut obligations = Vec::new();
        let mut approval = None;
        match d.verdict {
            ToolVerdict::Allow => {
                match self.decisions.budgets.charge(identity, &d.charges, false) {
                    Ok(r) => obligations = r,
                    // The charge could not be journaled: nothing is allowed
                    // on it.
                    Err(ChargeError::State(e)) => return Err(DaemonError::State(e)),
                    Err(ChargeError::Exceeded(_)) => {
                        // The deny replaces the decision and its charges;
                        // report what remains of each budget all the same.
                        let budgets = &self.decisions.budgets;
                        let used = budgets.used(identity, &d.charges);
                        obligations = budgets.peek(identity, &d.charges);
                        d.check_budgets(|b| used.get(b).copied().unwrap_or(0.0));
                    }
                }
            }
            ToolVerdict::ApprovalRequired => {
                obligations = self.decisions.budgets.peek(identity, &d.charges);
                let mode = policy.identity(identity).map_or(Mode::Enforce, |i| i.mode);
                if mode == Mode::Enforce {
                    let ask = ask();
                    let digest = ask.params_digest.clone();
                    let requested = self.decisions.approvals.request_call(Ask {
                        rules: d.rules.clone(),
                        ..ask
                    });
                    let (a, new) = match requested {
                        Ok(r) => r,
                        Err(e @ ApprovalError::Quota { .. }) => {
                            // The identity's own flood of requests: it is
                            // refused, and no one else is affected.
                            d.verdict = ToolVerdict::Deny;
                            d.reason = "approval-quota";
                            d.message = e.to_string();
                            return Ok(Judged {
                                decision: d,
                                obligations,
                                approval: None,
                                elevation,
                            });
                        }
                        Err(e) => return Err(e.into()),
                    };
                    if new {
                        let mut ev = pending_event();
                        ev.reason = "approval-requested".into();
                        ev.rule = d.rules.first().cloned();
                        self.approval_pending(&a, ev, digest, Some(call.params));
                    }
                    approval = Some(a);
                }
            }
            ToolVerdict::Deny => {}
        }
        Ok(Judged {
            decision: d,
            obligations,
            approval,
            elevation,
        })
    }

    /// The verdict `policy` gives `call` now, with the caller's active
    /// elevations, without charging budgets or asking for approval: for a
    /// held request whose policy changed before it was released.
    pub(crate) fn rejudge(&self, policy: &Policy, call: &ToolCall<'_>) -> Decision {
        self.decide_elevated(policy, call).0
    }

    /// Record that approval `a` (new) waits for a person — `ev` says who
    /// asked what, and why — and tell the notification channels.
    pub(super) fn approval_pending(
        &self,
        a: &Approval,
        mut ev: AuditEvent,
        digest: String,
        params: Option<&serde_json::Map<String, serde_json::Value>>,
    ) {
        ev.kind = EventKind::Approval;
        ev.verdict = "pending".into();
        if let Some(c) = ev.call.as_mut() {
            c.approval_id = Some(a.id.clone());
            c.params_digest = Some(digest);
        }
        self.audit.emit(ev);
        self.metrics
            .set_pending_approvals(self.decisions.approvals.pending() as u64);
        self.announce(a, params);
    }

    /// Spend an approved approval on exactly the call it was given for,
    /// once, and charge the call's budgets (an approved call is charged
    /// even past a limit: a human said yes).
    pub(crate) fn spend_approval(
        &self,
        policy: &Policy,
        call: &ToolCall<'_>,
        approval_id: &str,
        ask: &Ask,
    ) -> Result<(Approval, Vec<Remaining>), DaemonError> {
        let approval = self.decisions.approvals.consume(approval_id, ask)?;
        self.metrics
            .set_pending_approvals(self.decisions.approvals.pending() as u64);
        let decided = policy.decide_tool(call);
        let obligations = self
            .decisions
            .budgets
            .charge(call.identity, &decided.charges, true)
            .unwrap_or_default();
        Ok((approval, obligations))
    }
}
