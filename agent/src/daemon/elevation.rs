//! Break-glass elevation: an operator lets an identity hold one of its
//! elevated roles for a time. The role's CIDR allow rules become kernel
//! grants carrying the expiry (they stop admitting at expiry on the boot
//! clock, daemon or not); its tool rules apply in `Decide` while the
//! elevation is live. Start and end are audit records; what only the
//! elevation allowed carries its id.

use std::time::Duration;

use agent_common::grants::ELEVATION_RULE;
use tracing::{info, warn};

use super::{Caller, Daemon, DaemonError};
use crate::{
    audit::{AuditEvent, CallDetail, EventKind},
    decision::{
        approvals::{Approval, ApprovalError, Ask},
        elevations::{Elevation, Elevations},
        grants::Grant,
    },
    policy::{Decision, ElevatedRole, Policy, ToolCall, ToolVerdict},
};

/// The longest elevation an operator can grant at once.
pub const MAX_ELEVATION: Duration = Duration::from_secs(24 * 3600);

/// The tool name elevation records use (as approvals of elevation do).
const TOOL: &str = super::people::ELEVATION_TOOL;

/// An `Elevate` request.
#[derive(Clone, Debug)]
pub struct ElevateRequest {
    pub identity: String,
    pub role: String,
    pub ttl: Duration,
    pub reason: String,
}

impl Daemon {
    /// Grant `req.role` to `req.identity` for `req.ttl`. Operator only: an
    /// enrolled process (an agent) is refused, whatever its uid.
    pub fn elevate(&self, caller: &Caller, req: ElevateRequest) -> Result<Elevation, DaemonError> {
        let by = self.operator(caller, "elevating an identity")?;
        self.start_elevation(req, &by, "operator")
    }

    /// Start an elevation in the name of `by` (an operator, or the approver
    /// of an agent's request); `how` is the reason of the start record.
    pub(super) fn start_elevation(
        &self,
        req: ElevateRequest,
        by: &str,
        how: &str,
    ) -> Result<Elevation, DaemonError> {
        if req.reason.trim().is_empty() {
            return Err(DaemonError::InvalidArgument(
                "an elevation needs a reason (--reason): it goes into the audit trail".into(),
            ));
        }
        if req.ttl.is_zero() || req.ttl > MAX_ELEVATION {
            return Err(DaemonError::InvalidArgument(format!(
                "duration {} is not between 1s and {}",
                humantime::format_duration(req.ttl),
                humantime::format_duration(MAX_ELEVATION)
            )));
        }
        let active = self.active();
        let role = elevatable(&active.policy, &req.identity, &req.role)?.clone();
        if let Some(index) = self.registry.index_of(&req.identity)
            && self.maps.killed(index)?
        {
            return Err(DaemonError::Revoked(req.identity));
        }
        let e = Elevation::new(&req.identity, &req.role, req.ttl, req.reason.trim(), by);
        // Saved first: a daemon that dies next restores it (with the same
        // expiry) rather than leaving kernel grants nobody knows about.
        self.elevations.add(e.clone())?;
        if let Err(err) = self.write_elevation_grants(&e, &role) {
            self.drop_elevation_grants(&e);
            if let Err(e2) = self.elevations.remove(|x| x.id == e.id) {
                warn!(error = %e2, "forgetting a failed elevation");
            }
            return Err(err);
        }
        info!(
            elevation = %e.id,
            identity = %e.identity,
            role = %e.role,
            by = %e.by,
            "elevation started"
        );
        let mut ev = self.elevation_event(&e, "started", how);
        ev.detail = Some(e.reason.clone());
        self.audit.emit(ev);
        Ok(e)
    }

    /// An agent asks to be elevated: `Decide` with tool `palisade.elevate`,
    /// the role as action and params `{"for": "30m", "reason": "…"}`. Never
    /// granted on the spot: the answer is a pending approval, and an
    /// operator approving it (`palisade approve`, or a signed approval)
    /// starts the elevation in the approver's name. A role the identity
    /// may not be elevated to, or a bad duration, is denied.
    pub(super) fn request_elevation(
        &self,
        policy: &Policy,
        role: &str,
        params: &serde_json::Map<String, serde_json::Value>,
        ask: Ask,
        pending_event: impl FnOnce() -> AuditEvent,
    ) -> Result<(Decision, Option<Approval>), DaemonError> {
        let deny = |reason: &'static str, message: String| Decision {
            verdict: ToolVerdict::Deny,
            reason,
            message,
            rules: vec![],
            charges: vec![],
        };
        let ttl = match params.get("for").and_then(serde_json::Value::as_str) {
            Some(s) => match humantime::parse_duration(s) {
                Ok(d) if !d.is_zero() && d <= MAX_ELEVATION => d,
                _ => {
                    return Ok((
                        deny(
                            "invalid-input",
                            format!(
                                "params.for: `{s}` is not a duration between 1s and {}",
                                humantime::format_duration(MAX_ELEVATION)
                            ),
                        ),
                        None,
                    ));
                }
            },
            None => {
                return Ok((
                    deny(
                        "invalid-input",
                        "an elevation request needs params.for, how long (e.g. \"30m\")".into(),
                    ),
                    None,
                ));
            }
        };
        let why = params
            .get("reason")
            .and_then(serde_json::Value::as_str)
            .map(str::trim)
            .unwrap_or_default();
        if why.is_empty() {
            return Ok((
                deny(
                    "invalid-input",
                    "an elevation request needs params.reason: it goes into the audit trail".into(),
                ),
                None,
            ));
        }
        if let Err(e) = elevatable(policy, &ask.identity, role) {
            return Ok((deny("elevation-not-allowed", e.to_string()), None));
        }
        let digest = ask.params_digest.clone();
        let requested = self.decisions.approvals.request(Ask {
            resource: humantime::format_duration(ttl).to_string(),
            rules: vec![role.to_string()],
            ..ask
        });
        let (a, new) = match requested {
            Ok(r) => r,
            Err(e @ ApprovalError::Quota { .. }) => {
                return Ok((deny("approval-quota", e.to_string()), None));
            }
            Err(e) => return Err(e.into()),
        };
        if new {
            let mut ev = pending_event();
            ev.reason = "elevation-requested".into();
            ev.detail = Some(format!("{role} for {}: {why}", a.resource));
            self.approval_pending(&a, ev, digest, None);
        }
        let d = Decision {
            verdict: ToolVerdict::ApprovalRequired,
            reason: "elevation-requested",
            message: format!(
                "elevation to `{role}` for {} waits for an operator's approval ({})",
                a.resource, a.id
            ),
            rules: vec![role.to_string()],
            charges: vec![],
        };
        Ok((d, Some(a)))
    }

    /// The elevation an approved request asks for, started in the
    /// approver's name.
    pub(super) fn start_requested_elevation(
        &self,
        a: &Approval,
        approver: &str,
        reason: &str,
    ) -> Result<Elevation, DaemonError> {
        let ttl = humantime::parse_duration(&a.resource).map_err(|e| {
            DaemonError::InvalidArgument(format!("approval {}: duration {}: {e}", a.id, a.resource))
        })?;
        let why = if reason.is_empty() {
            format!("requested by the agent, approved by {approver}")
        } else {
            format!("requested by the agent, approved by {approver}: {reason}")
        };
        self.start_elevation(
            ElevateRequest {
                identity: a.identity.clone(),
                role: a.action.clone(),
                ttl,
                reason: why,
            },
            approver,
            "approved-request",
        )
    }

    /// End an elevation before its time. Operator only.
    pub fn end_elevation(
        &self,
        caller: &Caller,
        id: &str,
        reason: &str,
    ) -> Result<Elevation, DaemonError> {
        let by = self.operator(caller, "ending an elevation")?;
        let mut gone = self.elevations.remove(|e| e.id == id)?;
        let e = gone
            .pop()
            .ok_or_else(|| DaemonError::NotFound(format!("no active elevation `{id}`")))?;
        self.drop_elevation_grants(&e);
        let mut ev = self.elevation_event(&e, "ended", "ended-by-operator");
        ev.detail = Some(if reason.is_empty() {
            format!("ended by {by}")
        } else {
            format!("ended by {by}: {reason}")
        });
        self.audit.emit(ev);
        Ok(e)
    }

    /// Active elevations. Operator only.
    pub fn list_elevations(&self, caller: &Caller) -> Result<Vec<Elevation>, DaemonError> {
        self.operator(caller, "listing elevations")?;
        Ok(self.elevations.active())
    }

    /// Distinct identities with an active elevation (the KPI).
    pub fn elevated_identities(&self) -> u64 {
        let mut ids: Vec<String> = self
            .elevations
            .active()
            .into_iter()
            .map(|e| e.identity)
            .collect();
        ids.sort();
        ids.dedup();
        ids.len() as u64
    }

    /// Judge a tool call with the caller's active elevations: the policy's
    /// own verdict, unless an elevation changes it (the first that allows,
    /// else the first that makes it approvable), which is then named.
    pub(super) fn decide_elevated(
        &self,
        policy: &Policy,
        call: &ToolCall<'_>,
    ) -> (Decision, Option<String>) {
        let base = policy.decide_tool(call);
        if base.verdict == ToolVerdict::Allow {
            return (base, None);
        }
        let mut approvable = None;
        for e in self.elevations.active_for(call.identity) {
            let d = policy.decide_tool_elevated(call, &[e.role.as_str()]);
            match d.verdict {
                ToolVerdict::Allow => return (d, Some(e.id)),
                ToolVerdict::ApprovalRequired if base.verdict == ToolVerdict::Deny => {
                    approvable.get_or_insert((d, Some(e.id)));
                }
                _ => {}
            }
        }
        approvable.unwrap_or((base, None))
    }

    /// The elevation whose kernel grants carry `number` (kernel events).
    pub(super) fn elevation_by_number(&self, number: u32) -> Option<Elevation> {
        self.elevations.by_number(number)
    }

    /// Record and forget elevations past their expiry (the kernel already
    /// stopped admitting their grants).
    pub(super) fn sweep_elevations(&self) {
        match self.elevations.take_expired() {
            Ok(ended) => {
                for e in ended {
                    self.drop_elevation_grants(&e);
                    self.audit
                        .emit(self.elevation_event(&e, "ended", "expired"));
                }
            }
            Err(e) => warn!(error = %e, "sweeping elevations"),
        }
    }

    /// End every elevation of `identity` (kill switch).
    pub(super) fn end_elevations_of(&self, identity: &str, why: &str) {
        match self.elevations.remove(|e| e.identity == identity) {
            Ok(ended) => {
                for e in ended {
                    self.drop_elevation_grants(&e);
                    self.audit.emit(self.elevation_event(&e, "ended", why));
                }
            }
            Err(e) => warn!(error = %e, "ending elevations"),
        }
    }

    /// After a reload: rewrite each elevation's grants from the new policy,
    /// or end it where the identity may no longer hold the role.
    pub(super) fn refresh_elevations(&self) {
        let active = self.active();
        for e in self.elevations.active() {
            let role = elevatable(&active.policy, &e.identity, &e.role).cloned();
            let rewritten = role.map_err(|err| err.to_string()).and_then(|role| {
                if self.grants_match(&e, &role) {
                    return Ok(());
                }
                self.drop_elevation_grants(&e);
                self.write_elevation_grants(&e, &role)
                    .map_err(|err| err.to_string())
            });
            if let Err(why) = rewritten {
                warn!(elevation = %e.id, %why, "ending elevation after reload");
                self.drop_elevation_grants(&e);
                if let Err(err) = self.elevations.remove(|x| x.id == e.id) {
                    warn!(error = %err, "ending elevation");
                }
                let mut ev = self.elevation_event(&e, "ended", "policy-no-longer-allows");
                ev.detail = Some(why);
                self.audit.emit(ev);
            }
        }
        // Kernel ranges of elevations that no longer live (ended while no
        // daemon ran, or lost with their state file) go too.
        let live: Vec<u32> = self
            .elevations
            .active()
            .iter()
            .map(Elevation::kernel_rule)
            .collect();
        if let Err(err) = self.decisions.grants.retain(&self.maps, |g| {
            g.rule & ELEVATION_RULE == 0 || live.contains(&g.rule)
        }) {
            warn!(error = %err, "removing the grants of ended elevations");
        }
    }

    /// At start: the saved elevations. Those that ended while no daemon ran
    /// are recorded as ended (never revived); live ones get their grants
    /// back with their original expiry.
    pub(super) fn restore_elevations(&self, ended: Vec<Elevation>) {
        for e in ended {
            let mut ev = self.elevation_event(&e, "ended", "expired");
            ev.detail = Some("expired while the daemon was not running".into());
            self.audit.emit(ev);
        }
        let n = self.elevations.active().len();
        if n > 0 {
            info!(elevations = n, "restoring active elevations");
        }
        // Their grants are checked (and rewritten where needed) by the first
        // `apply`, against the policy being applied: the stand-in policy
        // active until then names no identity and would end them all.
    }

    fn write_elevation_grants(
        &self,
        e: &Elevation,
        role: &ElevatedRole,
    ) -> Result<(), DaemonError> {
        if role.allow.is_empty() {
            return Ok(());
        }
        let index = self.registry.ensure(&e.identity)?;
        for r in &role.allow {
            self.decisions.grants.add(
                &self.maps,
                Grant {
                    identity: e.identity.clone(),
                    index,
                    cidr: r.cidr,
                    ports: r.ports.clone(),
                    protocol: r.protocol,
                    rule: e.kernel_rule(),
                    rule_id: e.id.clone(),
                    expires: e.expires(),
                    expires_ns: e.expires_boot_ns,
                },
            )?;
        }
        Ok(())
    }

    /// Do the kernel grants of `e` already say what `role` says? (Then a
    /// reload leaves them alone: no moment without them.)
    fn grants_match(&self, e: &Elevation, role: &ElevatedRole) -> bool {
        let rule = e.kernel_rule();
        let mut have: Vec<String> = self
            .decisions
            .grants
            .all()
            .iter()
            .filter(|g| g.rule == rule)
            .map(|g| format!("{} {:?} {:?}", g.cidr, g.ports, g.protocol))
            .collect();
        let mut want: Vec<String> = role
            .allow
            .iter()
            .map(|r| format!("{} {:?} {:?}", r.cidr, r.ports, r.protocol))
            .collect();
        have.sort();
        want.sort();
        have == want
    }

    fn drop_elevation_grants(&self, e: &Elevation) {
        let rule = e.kernel_rule();
        if let Err(err) = self.decisions.grants.retain(&self.maps, |g| g.rule != rule) {
            warn!(elevation = %e.id, error = %err, "removing an elevation's grants");
        }
    }

    fn elevation_event(&self, e: &Elevation, verdict: &str, reason: &str) -> AuditEvent {
        let mut ev = AuditEvent::new(EventKind::Elevation, verdict, reason);
        ev.identity = Some(e.identity.clone());
        ev.policy_version = Some(self.active().policy.version.to_string());
        ev.elevation = Some(e.id.clone());
        ev.call = Some(CallDetail {
            tool: TOOL.into(),
            action: e.role.clone(),
            approver: Some(e.by.clone()),
            expires: Some(humantime::format_rfc3339_seconds(e.expires()).to_string()),
            ..CallDetail::default()
        });
        ev
    }
}

/// The elevated role `role` of `identity` in `policy`.
fn elevatable<'p>(
    policy: &'p Policy,
    identity: &str,
    role: &str,
) -> Result<&'p ElevatedRole, DaemonError> {
    let ident = policy
        .identity(identity)
        .ok_or_else(|| DaemonError::UnknownIdentity(identity.to_string()))?;
    ident.elevatable(role).ok_or_else(|| {
        let may: Vec<&str> = ident.elevatable.iter().map(|e| e.role.as_str()).collect();
        DaemonError::Precondition(format!(
            "identity `{identity}` cannot be elevated to `{role}`: it names no elevated role of that name (it may be elevated to: {})",
            if may.is_empty() {
                "none".to_string()
            } else {
                may.join(", ")
            }
        ))
    })
}

/// The store, from the configured state file. A file that is not the
/// daemon's own (made by someone else, or writable by others: an agent's
/// forged elevation) is set aside unread, named in `warnings`: no
/// elevation is restored from it.
pub(super) fn load(
    config: &crate::config::Config,
    warnings: &mut Vec<String>,
) -> Result<(Elevations, Vec<Elevation>), DaemonError> {
    let path = config
        .elevations_file
        .clone()
        .unwrap_or_else(|| "/var/lib/palisade/elevations.json".into());
    if let Some(why) = crate::owned::not_own(&path) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let text = match crate::owned::set_aside(&path, now) {
            Ok(aside) => format!(
                "elevations file {} not read: {why}; kept as {}; no elevation restored",
                path.display(),
                aside.display()
            ),
            Err(e) => {
                return Err(DaemonError::State(format!(
                    "elevations file {}: {why}, and it cannot be set aside: {e}",
                    path.display()
                )));
            }
        };
        warn!("{text}");
        warnings.push(text);
    }
    Ok(Elevations::load(&path)?)
}
