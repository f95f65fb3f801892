//! Decision API from the command line: `decide`, `token`, `approvals`,
//! `approve`, `reject`, `egress`, `policy push`. Everything goes through the
//! daemon's API.

use std::{collections::HashMap, path::Path, process::ExitCode};

use anyhow::{Context as _, bail};

use super::ops::rpc_error;
use crate::{
    api::client::{self, request},
    proto,
};

fn to_struct(json: &str, flag: &str) -> anyhow::Result<prost_types::Struct> {
    fn value(v: serde_json::Value) -> prost_types::Value {
        use prost_types::value::Kind;
        let kind = match v {
            serde_json::Value::Null => Kind::NullValue(0),
            serde_json::Value::Bool(b) => Kind::BoolValue(b),
            serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::String(s) => Kind::StringValue(s),
            serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
                values: a.into_iter().map(value).collect(),
            }),
            serde_json::Value::Object(o) => Kind::StructValue(prost_types::Struct {
                fields: o.into_iter().map(|(k, v)| (k, value(v))).collect(),
            }),
        };
        prost_types::Value { kind: Some(kind) }
    }
    match serde_json::from_str(json).with_context(|| format!("{flag} is not JSON"))? {
        serde_json::Value::Object(o) => Ok(prost_types::Struct {
            fields: o.into_iter().map(|(k, v)| (k, value(v))).collect(),
        }),
        other => bail!("{flag} must be a JSON object, got {other}"),
    }
}

/// `palisade decide`: exit 0 on ALLOW, 1 on DENY, 3 on APPROVAL_REQUIRED,
/// so shell-driven agents can guard a step with it.
/// A number for people: no float noise.
fn amount(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[expect(clippy::too_many_arguments, reason = "one flag each")]
pub fn decide(
    socket: &Path,
    tool: &str,
    action: &str,
    resource: &str,
    params: &str,
    context: &str,
    override_token: Option<&str>,
    wait: u64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let params = to_struct(params, "--params")?;
    let context = to_struct(context, "--context")?;
    let r = super::block_on(async {
        let mut c = client::connect(socket).await?;
        let ask = |token: String, override_token: String| proto::DecideRequest {
            token,
            agent: String::new(),
            tool: tool.to_string(),
            action: action.to_string(),
            resource: resource.to_string(),
            params: Some(params.clone()),
            context: Some(context.clone()),
            override_token,
        };
        // The daemon knows the caller from the socket: no token needed.
        let first = ask(
            String::new(),
            override_token.map(str::to_string).unwrap_or_default(),
        );
        let r = c.decide(first).await.map_err(rpc_error)?.into_inner();
        if wait == 0 || r.approval_id.is_empty() {
            return anyhow::Ok(r);
        }
        // Wait for an operator, then make exactly the approved call.
        eprintln!("waiting up to {wait}s for approval {} ...", r.approval_id);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
        loop {
            let a = c
                .get_approval(proto::GetApprovalRequest {
                    id: r.approval_id.clone(),
                    token: String::new(),
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            match proto::ApprovalState::try_from(a.state) {
                Ok(proto::ApprovalState::Approved) if !a.override_token.is_empty() => {
                    return anyhow::Ok(
                        c.decide(ask(String::new(), a.override_token))
                            .await
                            .map_err(rpc_error)?
                            .into_inner(),
                    );
                }
                Ok(proto::ApprovalState::Pending) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
                _ => return anyhow::Ok(r),
            }
        }
    })??;
    let v = proto::Verdict::try_from(r.verdict).unwrap_or(proto::Verdict::Deny);
    if json {
        let obligations: Vec<serde_json::Value> = r
            .obligations
            .iter()
            .map(|o| serde_json::json!({"budget": o.budget, "remaining": o.remaining, "limit": o.limit, "window": o.window, "unit": o.unit}))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "verdict": v.as_str_name(), "reason": r.reason, "message": r.message,
                "matched_rules": r.matched_rules, "policy_version": r.policy_version,
                "decision_id": r.decision_id, "approval_id": r.approval_id, "obligations": obligations,
            })
        );
    } else {
        println!("{} ({}): {}", v.as_str_name(), r.reason, r.message);
        if !r.approval_id.is_empty() {
            println!(
                "approval: {} (an operator runs `palisade approve {}`)",
                r.approval_id, r.approval_id
            );
        }
        for o in &r.obligations {
            println!(
                "budget {}: {} of {}{} left this {}",
                o.budget,
                amount(o.remaining),
                amount(o.limit),
                if o.unit.is_empty() {
                    String::new()
                } else {
                    format!(" {}", o.unit)
                },
                o.window
            );
        }
    }
    Ok(match v {
        proto::Verdict::Allow => ExitCode::SUCCESS,
        proto::Verdict::ApprovalRequired => ExitCode::from(3),
        _ => ExitCode::FAILURE,
    })
}

pub fn token(socket: &Path, ttl: u32) -> anyhow::Result<ExitCode> {
    let r = super::block_on(async {
        let mut c = client::connect(socket).await?;
        anyhow::Ok(
            c.issue_token(proto::IssueTokenRequest { ttl_seconds: ttl })
                .await
                .map_err(rpc_error)?
                .into_inner(),
        )
    })??;
    println!("{}", r.token);
    Ok(ExitCode::SUCCESS)
}

fn state_name(s: i32) -> &'static str {
    proto::ApprovalState::try_from(s).map_or("?", |s| match s {
        proto::ApprovalState::Pending => "pending",
        proto::ApprovalState::Approved => "approved",
        proto::ApprovalState::Rejected => "rejected",
        proto::ApprovalState::Expired => "expired",
        proto::ApprovalState::Consumed => "consumed",
        proto::ApprovalState::Unspecified => "?",
    })
}

pub fn approvals(socket: &Path, all: bool, json: bool) -> anyhow::Result<ExitCode> {
    let r = super::block_on(async {
        let mut c = client::connect(socket).await?;
        anyhow::Ok(
            c.list_approvals(request(proto::ListApprovalsRequest { all }))
                .await
                .map_err(rpc_error)?
                .into_inner(),
        )
    })??;
    if json {
        let list: Vec<serde_json::Value> = r
            .approvals
            .iter()
            .map(|a| serde_json::json!({
                "id": a.id, "state": state_name(a.state), "identity": a.identity, "kind": a.kind,
                "tool": a.tool, "action": a.action, "resource": a.resource, "destination": a.destination,
                "params_digest": a.params_digest, "rules": a.matched_rules, "policy_version": a.policy_version,
                "created_at": a.created_at, "expires_at": a.expires_at, "approver": a.approver, "reason": a.reason,
                "digest": a.digest,
            }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if r.approvals.is_empty() {
        println!("no {}approvals", if all { "" } else { "pending " });
    }
    for a in &r.approvals {
        let what = if a.kind == "egress" {
            format!(
                "egress to {} ports {:?} for {}s",
                a.destination, a.ports, a.ttl_seconds
            )
        } else {
            format!("{}.{} {}", a.tool, a.action, a.resource)
        };
        // What an agent asked for is its own text: printed inert.
        let line = format!(
            "{}  {:<9} {:<20} {}  rule {}{}",
            a.id,
            state_name(a.state),
            a.identity,
            what,
            a.matched_rules.join(","),
            if a.approver.is_empty() {
                String::new()
            } else {
                format!("  by {}: {}", a.approver, a.reason)
            }
        );
        println!("{}", crate::audit::terminal_safe(&line));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn resolve(socket: &Path, id: &str, approve: bool, reason: &str) -> anyhow::Result<ExitCode> {
    let a = super::block_on(async {
        let mut c = client::connect(socket).await?;
        anyhow::Ok(
            c.resolve_approval(request(proto::ResolveApprovalRequest {
                id: id.to_string(),
                approve,
                reason: reason.to_string(),
            }))
            .await
            .map_err(rpc_error)?
            .into_inner(),
        )
    })??;
    println!("{}: {} by {}", a.id, state_name(a.state), a.approver);
    Ok(ExitCode::SUCCESS)
}

/// `palisade approve --signed FILE`.
pub fn apply_signed(socket: &Path, file: &Path) -> anyhow::Result<ExitCode> {
    let signed =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let a = super::block_on(async {
        let mut c = client::connect(socket).await?;
        anyhow::Ok(
            c.apply_signed_approval(request(proto::ApplySignedApprovalRequest {
                signed: signed.trim().to_string(),
            }))
            .await
            .map_err(rpc_error)?
            .into_inner(),
        )
    })??;
    println!("{}: {} by {}", a.id, state_name(a.state), a.approver);
    Ok(ExitCode::SUCCESS)
}

pub fn egress(
    socket: &Path,
    destination: &str,
    ports: &[u32],
    protocol: &str,
    ttl: Option<&str>,
    reason: &str,
) -> anyhow::Result<ExitCode> {
    let ttl_seconds = match ttl {
        None => 0,
        Some(t) => humantime::parse_duration(t)
            .with_context(|| format!("--ttl `{t}`"))?
            .as_secs() as u32,
    };
    let r = super::block_on(async {
        let mut c = client::connect(socket).await?;
        anyhow::Ok(
            c.request_egress(proto::RequestEgressRequest {
                destination: destination.to_string(),
                ports: ports.to_vec(),
                protocol: protocol.to_string(),
                ttl_seconds,
                reason: reason.to_string(),
                token: String::new(),
            })
            .await
            .map_err(rpc_error)?
            .into_inner(),
        )
    })??;
    if r.granted {
        println!("granted until {} (unix) by rule {}", r.expires_at, r.rule);
    } else {
        println!("waiting for approval {} (rule {})", r.approval_id, r.rule);
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn push(socket: &Path, files: &[std::path::PathBuf]) -> anyhow::Result<ExitCode> {
    let mut map = HashMap::new();
    for f in files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .with_context(|| format!("{}: not a file name", f.display()))?;
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        map.insert(name, text);
    }
    let r = super::block_on(async {
        let mut c = client::connect(socket).await?;
        anyhow::Ok(
            c.push_policy(request(proto::PushPolicyRequest { files: map }))
                .await
                .map_err(rpc_error)?
                .into_inner(),
        )
    })??;
    super::ops::report_applied(&r);
    Ok(ExitCode::SUCCESS)
}
