//! The decision API's RPCs: convert, call the daemon, convert back. Every
//! error becomes a status in `to_status`.

use std::{sync::Arc, time::Duration};

use tonic::{Request, Response, Status};

use super::{server::caller, to_status};
use crate::{
    daemon::{Daemon, DecideInput, EgressRequest},
    decision::approvals::{Approval, State, secs},
    policy::ToolVerdict,
    proto,
};

fn verdict(v: ToolVerdict) -> i32 {
    (match v {
        ToolVerdict::Allow => proto::Verdict::Allow,
        ToolVerdict::Deny => proto::Verdict::Deny,
        ToolVerdict::ApprovalRequired => proto::Verdict::ApprovalRequired,
    }) as i32
}

fn approval_message(a: Approval, with_token: bool) -> proto::Approval {
    let state = match a.state {
        State::Pending => proto::ApprovalState::Pending,
        State::Approved => proto::ApprovalState::Approved,
        State::Rejected => proto::ApprovalState::Rejected,
        State::Expired => proto::ApprovalState::Expired,
        State::Consumed => proto::ApprovalState::Consumed,
    };
    let kind = a.kind().to_string();
    let egress = a.egress.clone();
    let digest = crate::signed_approval::binding_digest(&a);
    proto::Approval {
        id: a.id,
        state: state as i32,
        identity: a.identity,
        kind,
        tool: a.tool,
        action: a.action,
        resource: a.resource,
        params_digest: a.params_digest,
        policy_version: a.policy_version,
        matched_rules: a.rules,
        created_at: secs(a.created),
        expires_at: secs(a.expires),
        approver: a.approver,
        reason: a.reason,
        override_token: if with_token {
            a.override_token.unwrap_or_default()
        } else {
            String::new()
        },
        destination: egress
            .as_ref()
            .map(|e| e.destination.to_string())
            .unwrap_or_default(),
        ports: egress
            .as_ref()
            .map(|e| e.ports.iter().flat_map(|p| [u32::from(p.lo)]).collect())
            .unwrap_or_default(),
        ttl_seconds: egress.map_or(0, |e| e.ttl.as_secs() as u32),
        digest,
    }
}

pub async fn issue_token(
    daemon: &Arc<Daemon>,
    req: Request<proto::IssueTokenRequest>,
) -> Result<Response<proto::IssueTokenResponse>, Status> {
    let caller = caller(&req)?;
    let ttl = match req.get_ref().ttl_seconds {
        0 => None,
        s => Some(Duration::from_secs(u64::from(s))),
    };
    let issued = daemon.issue_token(&caller, ttl).map_err(to_status)?;
    Ok(Response::new(proto::IssueTokenResponse {
        token: issued.token,
        identity: issued.identity,
        expires_at: issued.expires_at as i64,
        kid: issued.kid,
    }))
}

pub async fn decide(
    daemon: &Arc<Daemon>,
    req: Request<proto::DecideRequest>,
) -> Result<Response<proto::DecideResponse>, Status> {
    let caller = caller(&req)?;
    let r = req.into_inner();
    let out = daemon
        .decide_async(
            caller,
            DecideInput {
                token: r.token,
                agent: r.agent,
                tool: r.tool,
                action: r.action,
                resource: r.resource,
                params: r.params,
                context: r.context,
                override_token: r.override_token,
            },
        )
        .await
        .map_err(to_status)?;
    Ok(Response::new(proto::DecideResponse {
        verdict: verdict(out.verdict),
        reason: out.reason,
        message: out.message,
        matched_rules: out.rules,
        policy_version: out.policy_version,
        decision_id: out.decision_id,
        obligations: out
            .obligations
            .into_iter()
            .map(|o| proto::Obligation {
                budget: o.budget,
                remaining: o.remaining,
                limit: o.limit,
                window: o.per.name().to_string(),
                unit: o.unit.unwrap_or_default(),
            })
            .collect(),
        approval_id: out.approval_id.unwrap_or_default(),
        elevation: out.elevation,
    }))
}

pub async fn get_approval(
    daemon: &Arc<Daemon>,
    req: Request<proto::GetApprovalRequest>,
) -> Result<Response<proto::Approval>, Status> {
    let caller = caller(&req)?;
    let r = req.get_ref();
    let a = daemon
        .own_approval(&caller, &r.id, &r.token)
        .map_err(to_status)?;
    // The override token goes only to the identity that asked.
    Ok(Response::new(approval_message(a, true)))
}

pub async fn list_approvals(
    daemon: &Arc<Daemon>,
    req: Request<proto::ListApprovalsRequest>,
) -> Result<Response<proto::ListApprovalsResponse>, Status> {
    let caller = caller(&req)?;
    let list = daemon
        .list_approvals(&caller, req.get_ref().all)
        .map_err(to_status)?;
    Ok(Response::new(proto::ListApprovalsResponse {
        approvals: list
            .into_iter()
            .map(|a| approval_message(a, false))
            .collect(),
    }))
}

pub async fn resolve_approval(
    daemon: &Arc<Daemon>,
    req: Request<proto::ResolveApprovalRequest>,
) -> Result<Response<proto::Approval>, Status> {
    let caller = caller(&req)?;
    let r = req.get_ref();
    let a = daemon
        .resolve_approval(&caller, &r.id, r.approve, &r.reason)
        .map_err(to_status)?;
    // Operators never see the override token: only the agent gets it.
    Ok(Response::new(approval_message(a, false)))
}

pub async fn apply_signed_approval(
    daemon: &Arc<Daemon>,
    req: Request<proto::ApplySignedApprovalRequest>,
) -> Result<Response<proto::Approval>, Status> {
    let caller = caller(&req)?;
    let a = daemon
        .apply_signed_approval(&caller, &req.get_ref().signed)
        .map_err(to_status)?;
    Ok(Response::new(approval_message(a, false)))
}

pub async fn request_egress(
    daemon: &Arc<Daemon>,
    req: Request<proto::RequestEgressRequest>,
) -> Result<Response<proto::RequestEgressResponse>, Status> {
    let caller = caller(&req)?;
    let r = req.into_inner();
    let out = daemon
        .request_egress(
            &caller,
            EgressRequest {
                token: r.token,
                destination: r.destination,
                ports: r.ports,
                protocol: r.protocol,
                ttl: (r.ttl_seconds > 0).then(|| Duration::from_secs(u64::from(r.ttl_seconds))),
                reason: r.reason,
            },
        )
        .map_err(to_status)?;
    Ok(Response::new(proto::RequestEgressResponse {
        granted: out.granted,
        expires_at: out.expires_at as i64,
        approval_id: out.approval_id.unwrap_or_default(),
        rule: out.rule,
    }))
}

pub async fn push_policy(
    daemon: &Arc<Daemon>,
    req: Request<proto::PushPolicyRequest>,
) -> Result<Response<proto::ReloadPolicyResponse>, Status> {
    let caller = caller(&req)?;
    let files = req.into_inner().files.into_iter().collect();
    let r = daemon
        .push_policy(&caller, files)
        .await
        .map_err(to_status)?;
    Ok(Response::new(proto::ReloadPolicyResponse {
        policy_version: r.version,
        policy_generation: r.generation,
        warnings: r.warnings,
    }))
}
