//! Approvals where people are: announcing new approvals (Slack, Teams,
//! webhooks) and applying approvals signed elsewhere.

use std::time::SystemTime;

use super::{Caller, Daemon, DaemonError};
use crate::{
    decision::approvals::Approval,
    notifier::Notice,
    signed_approval::{self, SignedError},
};

/// The tool name of an elevation request that waits for approval.
pub const ELEVATION_TOOL: &str = "palisade.elevate";

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The parameters as the approver sees them: JSON, cut to
/// `PARAMS_SHOWN` characters (the digest names them exactly).
fn shown_params(p: &serde_json::Map<String, serde_json::Value>) -> String {
    let json = serde_json::Value::Object(p.clone()).to_string();
    let max = crate::notifier::formats::PARAMS_SHOWN;
    if json.chars().count() <= max {
        return json;
    }
    let mut s: String = json.chars().take(max).collect();
    s.push_str("… (cut; the digest names them in full)");
    s
}

impl Daemon {
    /// Tell the configured channels about a new approval. Returns at once.
    /// `params` are the call's, shown to the approver next to their digest.
    pub(super) fn announce(
        &self,
        a: &Approval,
        params: Option<&serde_json::Map<String, serde_json::Value>>,
    ) {
        if self.notifier.is_empty() {
            return;
        }
        let socket = if self.config.socket == std::path::Path::new(crate::cli::DEFAULT_SOCKET) {
            String::new()
        } else {
            format!(" --socket {}", self.config.socket.display())
        };
        let (kind, action) = match (&a.egress, a.tool.as_str()) {
            (Some(_), _) => ("egress", a.action.clone()),
            (None, ELEVATION_TOOL) => ("elevation", a.action.clone()),
            (None, _) => ("tool", a.action.clone()),
        };
        self.notifier.notify(Notice {
            id: a.id.clone(),
            kind: kind.into(),
            identity: a.identity.clone(),
            tool: a.tool.clone(),
            action,
            resource: a.resource.clone(),
            params: params.map(shown_params).unwrap_or_default(),
            params_digest: a.params_digest.clone(),
            digest: signed_approval::binding_digest(a),
            destination: a
                .egress
                .as_ref()
                .map(|e| {
                    let ports: Vec<String> = e.ports.iter().map(ToString::to_string).collect();
                    format!(
                        "{} {} {}",
                        e.destination,
                        e.protocol.name(),
                        ports.join(",")
                    )
                })
                .unwrap_or_default(),
            rules: a.rules.clone(),
            policy_version: a.policy_version.clone(),
            created: rfc3339(a.created),
            expires: rfc3339(a.expires),
            host: crate::ocsf::hostname(),
            approve_command: format!("palisade approve {}{socket} --reason \"…\"", a.id),
            reject_command: format!("palisade reject {}{socket} --reason \"…\"", a.id),
        });
    }

    /// Apply a signed approval. Whoever hands it over (an operator, a
    /// relay, the agent itself) adds no authority: the signature of an
    /// approver the active policy lists does, over exactly this pending
    /// call.
    pub fn apply_signed_approval(
        &self,
        caller: &Caller,
        jws: &str,
    ) -> Result<Approval, DaemonError> {
        let active = self.active();
        let now = crate::tokens::unix(SystemTime::now());
        let claims =
            signed_approval::verify(jws, &active.policy.approvers, now).map_err(|e| match e {
                SignedError::Malformed | SignedError::Header(_) | SignedError::Payload(_) => {
                    DaemonError::InvalidArgument(e.to_string())
                }
                _ => DaemonError::PermissionDenied(e.to_string()),
            })?;
        let pending = self
            .decisions
            .approvals
            .get(&claims.approval)
            .ok_or_else(|| DaemonError::NotFound(format!("no approval `{}`", claims.approval)))?;
        if signed_approval::binding_digest(&pending) != claims.digest {
            return Err(DaemonError::PermissionDenied(format!(
                "the signed digest does not match approval `{}`: it was signed for another call",
                claims.approval
            )));
        }
        let reason = if claims.reason.is_empty() {
            "signed approval".to_string()
        } else {
            claims.reason.clone()
        };
        self.resolve_as(
            caller,
            &format!("{} (signed)", claims.approver),
            &claims.approval,
            claims.verdict == "approve",
            &reason,
        )
    }
}
