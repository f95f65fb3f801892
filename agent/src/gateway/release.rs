//! A held request across reloads. Its approval was asked under the policy
//! the request was judged by; an operator may have loaded another since (a
//! tightening: the security team's new `deny`). When a reload becomes
//! active, and before anything is forwarded, the request is judged again
//! under the active policy, with the caller's active elevations, and goes
//! on only if that policy still allows it, outright or by approval, and
//! still maps it to the same call of the same service. Otherwise the agent
//! gets a 403 with the new reason and nothing reaches the upstream (the
//! `Decide` path refuses an approval given under another policy version
//! outright).

use std::sync::Arc;

use hyper::StatusCode;

use super::{ServiceRt, reply::Refusal, route::Call};
use crate::{
    daemon::{ActivePolicy, Daemon},
    policy::{Mode, ToolVerdict, decide::ToolCall},
};

/// Why a held request may not go on under the active policy.
pub struct Stale {
    pub reason: String,
    pub message: String,
    pub rule: Option<String>,
    pub policy_version: String,
}

impl Stale {
    pub fn refusal(&self) -> Refusal {
        Refusal {
            rule: self.rule.clone(),
            policy_version: Some(self.policy_version.clone()),
            ..Refusal::new(StatusCode::FORBIDDEN, &self.reason, self.message.clone())
        }
    }
}

/// The policy to release the request under: the active one when it still
/// allows the call (outright or by approval), else why not. `judged` is
/// the policy version the request was held under.
pub fn rejudge(
    daemon: &Daemon,
    rt: &ServiceRt,
    c: &Call,
    tc: &ToolCall<'_>,
    judged: &str,
) -> Result<Arc<ActivePolicy>, Stale> {
    let active = daemon.active();
    let policy = &active.policy;
    let version = policy.version.to_string();
    if version == judged {
        return Ok(active);
    }
    let stale = |reason: &str, message: String, rule: Option<String>| Stale {
        reason: reason.to_string(),
        message,
        rule,
        policy_version: version.clone(),
    };
    // The same service must still map the request to the same call.
    let same = policy
        .services
        .iter()
        .find(|s| s.id == rt.service.id)
        .filter(|s| s.upstream == rt.service.upstream && s.port == rt.service.port);
    let Some(s) = same else {
        return Err(stale(
            "service-changed",
            format!(
                "policy {version}, loaded while the request was held under {judged}, no longer serves service `{}` as it was: the request was not forwarded",
                rt.service.id
            ),
            None,
        ));
    };
    let mapped = match &c.request {
        Some(line) => line.split_once(' ').and_then(|(method, path)| {
            s.route(method, path).map(|(r, vars)| {
                let resource = r
                    .resource
                    .as_ref()
                    .map(|t| t.render(&vars))
                    .unwrap_or_default();
                (r.tool.clone(), r.action.clone(), resource)
            })
        }),
        None => Some((s.tool.clone(), c.action.clone(), c.resource.clone())),
    };
    if mapped.as_ref() != Some(&(c.tool.clone(), c.action.clone(), c.resource.clone())) {
        return Err(stale(
            "no-route",
            format!(
                "policy {version}, loaded while the request was held under {judged}, no longer maps {} to `{}.{}`: the request was not forwarded",
                c.request.as_deref().unwrap_or("the message"),
                c.tool,
                c.action
            ),
            None,
        ));
    }
    let d = daemon.rejudge(policy, tc);
    let mode = policy
        .identity(tc.identity)
        .map_or(Mode::Enforce, |i| i.mode);
    if d.verdict == ToolVerdict::Deny && mode == Mode::Enforce {
        return Err(stale(
            d.reason,
            format!(
                "the approval was given under policy {judged}; the active policy {version} denies the call: {}",
                d.message
            ),
            d.rules.first().cloned(),
        ));
    }
    Ok(active)
}
