//! The decision: the call goes to the same decision core as `Decide`
//! (rules, CEL conditions, budgets, approvals, audit mode); a denial is a
//! 403 with the reason, rule and decision id; a call that needs approval is
//! held open until an operator decides, then forwarded exactly once.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use hyper::StatusCode;
use serde_json::Map;

use super::{
    ServiceRt, Shared,
    http::{Req, Resp},
    listen::Conn,
    release,
    reply::Refusal,
    route::Call,
    stack::{Next, call},
    trail::{self, Trail},
};
use crate::{
    audit::{AuditEvent, CallDetail, EventKind},
    daemon::{Daemon, small_json},
    decision::approvals::{Ask, State},
    policy::{Mode, ToolVerdict, decide::ToolCall},
    tokens::random_id,
};

/// How often a held request looks at its approval.
const POLL: Duration = Duration::from_millis(100);

pub fn layer(sh: Arc<Shared>, req: Req, next: Next) -> super::stack::BoxFuture {
    Box::pin(run(sh, req, next))
}

async fn run(_: Arc<Shared>, req: Req, next: Next) -> Resp {
    let Some(c) = req.extensions().get::<Call>().cloned() else {
        return call(next, req).await;
    };
    let (Some((conn, trail)), Some(rt)) = (
        trail::parts(&req),
        req.extensions().get::<Arc<ServiceRt>>().cloned(),
    ) else {
        return Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal-error",
            "no service",
        )
        .into_response();
    };
    match judge(&conn, &rt, &c, &trail).await {
        Ok(()) => call(next, req).await,
        Err(r) => trail.refuse(r),
    }
}

/// Judge one call of an enrolled caller; `Ok` means forward it.
#[expect(
    clippy::result_large_err,
    reason = "a refusal is built once per refused request; boxing it buys nothing"
)]
pub async fn judge(conn: &Conn, rt: &ServiceRt, c: &Call, trail: &Trail) -> Result<(), Refusal> {
    let daemon = &conn.daemon;
    let Some((identity, index)) = conn.caller.identity.clone() else {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "caller-not-enrolled",
            "not enrolled",
        ));
    };
    let active = daemon.active();
    let policy = &active.policy;
    let version = policy.version.to_string();
    let context = Map::new();
    let tc = ToolCall {
        identity: &identity,
        tool: &c.tool,
        action: &c.action,
        resource: &c.resource,
        params: &c.params,
        context: &context,
        now: SystemTime::now(),
    };
    // An approval is for one request to one service: the service, the
    // request's method and path join the resource it is bound to and shown
    // with (the parameters, query included, are bound by their digest), so
    // a GET approved is not spent by a DELETE of a `method: "*"` route, nor
    // a payment approved on a sandbox service by the same one sent to the
    // live service of the same tool.
    let bound = bound_resource(&rt.service.id, c);
    let ask = || Ask {
        identity: identity.clone(),
        tool: c.tool.clone(),
        action: c.action.clone(),
        resource: bound.clone(),
        params_digest: c.digest.clone(),
        policy_version: version.clone(),
        rules: Vec::new(),
        egress: None,
    };
    let decision_id = random_id();
    let mode = policy.identity(&identity).map_or(Mode::Enforce, |i| i.mode);
    trail.with(|r| {
        r.decided = true;
        r.tool = c.tool.clone();
        r.action = c.action.clone();
        r.resource = c.resource.clone();
        r.decision_id = Some(decision_id.clone());
        r.params_digest = Some(c.digest.clone());
        r.params = c.params.keys().cloned().collect();
        r.policy_version = Some(version.clone());
        r.mode = Some(mode.name());
    });
    // Conditions over a large body may cost up to the evaluation budget:
    // judged where they cannot hold other connections (as `Decide` does).
    let costly = daemon.costly_to_judge(&identity, small_json(&c.params));
    let judged = off_runtime(daemon, trail, &identity, costly, || {
        daemon.judge(policy, &tc, ask, || {
            let mut ev = AuditEvent::new(EventKind::Approval, "pending", "approval-requested");
            ev.identity = Some(identity.clone());
            ev.uid = Some(conn.caller.socket.uid);
            ev.cgroup_id = Some(conn.caller.socket.cgroup_id);
            ev.policy_version = Some(version.clone());
            ev.detail = Some(format!(
                "request {}to service `{}` held by the gateway for up to {:?}",
                c.request
                    .as_ref()
                    .map(|l| format!("`{}` ", l.escape_debug()))
                    .unwrap_or_default(),
                rt.service.id,
                rt.service.approval_timeout
            ));
            ev.call = Some(CallDetail {
                tool: c.tool.clone(),
                action: c.action.clone(),
                resource: bound.clone(),
                decision_id: Some(decision_id.clone()),
                ..CallDetail::default()
            });
            ev
        })
    })
    .await?
    .map_err(|e| {
        // Fail closed: a call whose charge or approval cannot be recorded
        // is not forwarded.
        trail.with(|r| r.verdict = "deny");
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "decision-state-unavailable",
            e.to_string(),
        )
    })?;
    let d = judged.decision;
    trail.with(|r| {
        r.reason = d.reason.to_string();
        r.rule = d.rules.first().cloned();
        r.detail = Some(d.message.clone());
    });
    let refusal = |status, reason: &str, message: String| Refusal {
        rule: d.rules.first().cloned(),
        decision_id: Some(decision_id.clone()),
        policy_version: Some(version.clone()),
        ..Refusal::new(status, reason, message)
    };
    match (d.verdict, mode) {
        (ToolVerdict::Allow, _) => {
            trail.with(|r| r.verdict = "allow");
            Ok(())
        }
        (v, Mode::Audit) => {
            trail.with(|r| {
                r.verdict = "audit";
                r.detail = Some(format!("would {} (audit mode): {}", v.name(), d.message));
            });
            Ok(())
        }
        (ToolVerdict::Deny, _) => Err(refusal(StatusCode::FORBIDDEN, d.reason, d.message.clone())),
        (ToolVerdict::ApprovalRequired, Mode::Enforce) => {
            trail.with(|r| r.verdict = "approval_required");
            let Some(a) = judged.approval else {
                return Err(refusal(
                    StatusCode::FORBIDDEN,
                    "approval-required",
                    d.message.clone(),
                ));
            };
            trail.with(|r| r.approval_id = Some(a.id.clone()));
            // A reload while it is held leaves this approval to the request.
            let _hold = daemon.decisions.approvals.hold(&a.id);
            let held = |reason: &str, message: String| Refusal {
                approval_id: Some(a.id.clone()),
                ..refusal(StatusCode::FORBIDDEN, reason, message)
            };
            // A held request the active policy no longer allows is refused
            // with the active policy's reason, the approval named.
            // Its approval can release nothing any more: withdrawn, so no
            // operator is asked to decide it.
            let stale = |s: release::Stale, when: &str| {
                let withdrawn = if daemon.withdraw_approval(&a.id) {
                    "; the approval is withdrawn"
                } else {
                    ""
                };
                trail.with(|r| {
                    r.verdict = "deny";
                    r.reason = s.reason.clone();
                    r.rule = s.rule.clone();
                    r.policy_version = Some(s.policy_version.clone());
                    r.detail = Some(format!(
                        "approval {} ({when}): {}{withdrawn}",
                        a.id, s.message
                    ));
                });
                Refusal {
                    approval_id: Some(a.id.clone()),
                    decision_id: Some(decision_id.clone()),
                    ..s.refusal()
                }
            };
            let deadline = Instant::now() + rt.service.approval_timeout;
            let mut seen = version.clone();
            loop {
                // A reload while waiting: judged again at once, so a call
                // the new policy denies does not wait for an approver.
                let active_version = daemon.active().policy.version.to_string();
                if active_version != seen {
                    seen = active_version;
                    off_runtime(daemon, trail, &identity, costly, || {
                        release::rejudge(daemon, rt, c, &tc, &version)
                    })
                    .await?
                    .map_err(|s| stale(s, "pending"))?;
                }
                if daemon.maps.killed(index).unwrap_or(true) {
                    trail.with(|r| r.verdict = "deny");
                    return Err(held(
                        "kill-switch",
                        format!("identity `{identity}` is revoked (kill switch)"),
                    ));
                }
                let now = daemon.decisions.approvals.get(&a.id);
                match now.as_ref().map(|a| a.state) {
                    Some(State::Approved) => {
                        // Judged again if the operator loaded another
                        // policy while the request was held.
                        let now_active = off_runtime(daemon, trail, &identity, costly, || {
                            release::rejudge(daemon, rt, c, &tc, &version)
                        })
                        .await?
                        .map_err(|s| stale(s, "approved"))?;
                        return match daemon.spend_approval(&now_active.policy, &tc, &a.id, &ask()) {
                            Ok((approved, _)) => {
                                trail.with(|r| {
                                    r.verdict = "allow";
                                    r.reason = "approved".into();
                                    r.approver = Some(approved.approver.clone());
                                    r.detail = Some(format!(
                                        "approved by {}: {}",
                                        approved.approver, approved.reason
                                    ));
                                });
                                Ok(())
                            }
                            Err(e) => {
                                trail.with(|r| r.verdict = "deny");
                                Err(held("approval-unusable", e.to_string()))
                            }
                        };
                    }
                    Some(State::Pending) if Instant::now() < deadline => {
                        tokio::time::sleep(POLL).await;
                    }
                    state => {
                        trail.with(|r| r.verdict = "deny");
                        let (reason, message) = match (state, now) {
                            (Some(State::Pending), _) => (
                                "approval-timeout",
                                format!(
                                    "no decision on approval {} within {:?}; it stays pending: send the same request again, and keep it waiting, to be held until the operator decides",
                                    a.id, rt.service.approval_timeout
                                ),
                            ),
                            (Some(State::Rejected), Some(x)) => (
                                "approval-rejected",
                                format!(
                                    "approval {} was rejected by {}: {}",
                                    a.id, x.approver, x.reason
                                ),
                            ),
                            (Some(State::Consumed), _) => (
                                "approval-used",
                                format!("approval {} was already used by another request", a.id),
                            ),
                            _ => ("approval-expired", format!("approval {} expired", a.id)),
                        };
                        trail.with(|r| r.reason = reason.to_string());
                        return Err(held(reason, message));
                    }
                }
            }
        }
    }
}

/// `judge` run by `Daemon::run_costly`; an identity with too many
/// costly calls waiting is told to slow down (and the call is recorded as
/// denied).
#[expect(
    clippy::result_large_err,
    reason = "a refusal is built once per refused request; boxing it buys nothing"
)]
async fn off_runtime<T>(
    daemon: &Daemon,
    trail: &Trail,
    identity: &str,
    costly: bool,
    judge: impl FnOnce() -> T,
) -> Result<T, Refusal> {
    daemon
        .run_costly(identity, costly, judge)
        .await
        .map_err(|busy| {
            trail.with(|r| r.verdict = "deny");
            Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "evaluation-busy",
                busy.to_string(),
            )
        })
}

/// What a gateway approval is bound to and shown with: `service: resource
/// (METHOD /path)`, the parts a call has.
fn bound_resource(service: &str, c: &Call) -> String {
    match (&c.request, c.resource.is_empty()) {
        (None, true) => service.to_string(),
        (None, false) => format!("{service}: {}", c.resource),
        (Some(line), true) => format!("{service}: {line}"),
        (Some(line), false) => format!("{service}: {} ({line})", c.resource),
    }
}
