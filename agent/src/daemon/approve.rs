//! Operators' side of approvals: list, approve, reject. Approving a tool
//! call hands the agent a single-use override token; approving an egress
//! request puts the grant in the kernel at once; approving an agent's
//! elevation request starts the elevation in the approver's name.

use super::{Caller, Daemon, DaemonError};
use crate::{
    audit::{AuditEvent, CallDetail, EventKind},
    decision::approvals::{Approval, State},
    tokens::OverrideClaims,
};

impl Daemon {
    pub fn list_approvals(&self, caller: &Caller, all: bool) -> Result<Vec<Approval>, DaemonError> {
        self.operator(caller, "listing approvals")?;
        Ok(self.decisions.approvals.list(all))
    }

    pub fn resolve_approval(
        &self,
        caller: &Caller,
        id: &str,
        approve: bool,
        reason: &str,
    ) -> Result<Approval, DaemonError> {
        let approver = self.operator(caller, "resolving approvals")?;
        self.resolve_as(caller, &approver, id, approve, reason)
    }

    /// Resolve approval `id` in the name of `approver` (an operator, or the
    /// signer of a verified signed approval).
    pub(super) fn resolve_as(
        &self,
        caller: &Caller,
        approver: &str,
        id: &str,
        approve: bool,
        reason: &str,
    ) -> Result<Approval, DaemonError> {
        let approver = approver.to_string();
        let pending = self
            .decisions
            .approvals
            .get(id)
            .ok_or_else(|| DaemonError::NotFound(format!("no approval `{id}`")))?;
        // The override token, issued only for a tool approval being approved.
        let elevation = pending.tool == super::people::ELEVATION_TOOL;
        // A call or destination asked under another policy is not what
        // the active one would ask about (its rule may be gone): asked
        // again, it is judged again. (Elevations name a role, checked when
        // they start; a held gateway request judges its call again itself.)
        let active = self.active().policy.version.to_string();
        if approve
            && !elevation
            && pending.state == State::Pending
            && pending.policy_version != active
            && !self.decisions.approvals.is_held(id)
        {
            return Err(DaemonError::Precondition(format!(
                "approval `{id}` was asked under policy {}; policy {active} is active: the call must be asked again",
                pending.policy_version
            )));
        }
        let token = if approve && pending.egress.is_none() && !elevation {
            let ttl = self
                .decisions
                .approvals
                .remaining(&pending)
                .min(self.decisions.override_ttl);
            Some(self.decisions.tokens.issue_override(
                OverrideClaims {
                    iss: String::new(),
                    aud: String::new(),
                    sub: pending.identity.clone(),
                    approval: pending.id.clone(),
                    tool: pending.tool.clone(),
                    action: pending.action.clone(),
                    resource: pending.resource.clone(),
                    params_digest: pending.params_digest.clone(),
                    policy_version: pending.policy_version.clone(),
                    iat: 0,
                    iat_ms: None,
                    nbf: 0,
                    exp: 0,
                    jti: String::new(),
                },
                ttl,
            )?)
        } else {
            None
        };
        let a = self
            .decisions
            .approvals
            .resolve(id, approve, &approver, reason, token)?;
        let mut ev = approval_event(
            &a,
            if approve { "approved" } else { "rejected" },
            if reason.is_empty() {
                "operator"
            } else {
                reason
            },
        );
        ev.uid = Some(caller.uid);
        if let Some(call) = ev.call.as_mut() {
            call.approver = Some(approver.clone());
            call.destination = a.egress.as_ref().map(|e| e.destination.to_string());
        }
        self.audit.emit(ev);
        if approve && let Some(e) = &a.egress {
            let index = self
                .registry
                .index_of(&a.identity)
                .ok_or_else(|| DaemonError::UnknownIdentity(a.identity.clone()))?;
            let rule_id = a.rules.first().cloned().unwrap_or_default();
            self.grant(
                &a.identity,
                index,
                e.destination,
                e.ports.clone(),
                e.protocol,
                e.rule,
                rule_id,
                e.ttl,
                reason,
                &approver,
            )?;
        }
        if approve && elevation {
            self.start_requested_elevation(&a, &approver, reason)?;
        }
        self.metrics
            .set_pending_approvals(self.decisions.approvals.pending() as u64);
        Ok(a)
    }

    /// After the policy changed: tool approvals asked under an earlier
    /// version can never be spent (an override names the version it was
    /// asked under), and an egress request's rule may be gone, so they are
    /// withdrawn and recorded, instead of waiting for an operator to
    /// approve what the active policy never asked about. Elevations name a
    /// role, checked when they start; approvals a held gateway request
    /// waits on are judged again by that request.
    pub(super) fn withdraw_stale_approvals(&self) {
        let version = self.active().policy.version.to_string();
        // Pending egress requests too: the rule they were asked under may
        // be gone (an approved one's grant is the reload's to judge).
        let ended = match self.decisions.approvals.withdraw_stale(&version, |a| {
            a.tool != super::people::ELEVATION_TOOL
                && (a.egress.is_none() || a.state == State::Pending)
        }) {
            Ok(ended) => ended,
            Err(e) => {
                // They still release nothing: the version differs.
                tracing::warn!(error = %e, "withdrawing approvals of an earlier policy");
                return;
            }
        };
        for a in &ended {
            let mut ev = approval_event(a, "withdrawn", "policy-changed");
            ev.detail = Some(format!(
                "asked under policy {}; policy {version} is active: the call must be asked again",
                a.policy_version
            ));
            self.audit.emit(ev);
        }
        if !ended.is_empty() {
            self.metrics
                .set_pending_approvals(self.decisions.approvals.pending() as u64);
        }
    }

    /// `Approvals::withdraw`, for the gateway's held requests refused
    /// under a newer policy; true when the approval was ended here. A
    /// journal that cannot be written leaves the approval as it was (it
    /// still releases nothing: the policy version differs).
    pub fn withdraw_approval(&self, id: &str) -> bool {
        match self.decisions.approvals.withdraw(id) {
            Ok(ended) => {
                self.metrics
                    .set_pending_approvals(self.decisions.approvals.pending() as u64);
                ended.is_some()
            }
            Err(e) => {
                tracing::warn!(approval = id, error = %e, "withdrawing an approval");
                false
            }
        }
    }
}

/// An approval's audit record: who asked what under which policy.
pub(super) fn approval_event(a: &Approval, verdict: &str, reason: &str) -> AuditEvent {
    let mut ev = AuditEvent::new(EventKind::Approval, verdict, reason);
    ev.identity = Some(a.identity.clone());
    ev.rule = a.rules.first().cloned();
    ev.policy_version = Some(a.policy_version.clone());
    ev.call = Some(CallDetail {
        tool: a.tool.clone(),
        action: a.action.clone(),
        resource: a.resource.clone(),
        params_digest: (!a.params_digest.is_empty()).then(|| a.params_digest.clone()),
        approval_id: Some(a.id.clone()),
        ..CallDetail::default()
    });
    ev
}
