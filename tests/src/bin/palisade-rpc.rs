//! An agent's side of the decision API, one call per run, for the tests: it
//! runs enrolled (under `palisade exec`) and prints one JSON line with the
//! answer or the gRPC status code, so tests can assert on exactly what an
//! agent runtime would see.
//!
//! ```text
//! palisade-rpc SOCKET issue
//! palisade-rpc SOCKET decide TOKEN|fresh|none TOOL ACTION PARAMS_JSON [RESOURCE]
//! palisade-rpc SOCKET replay TOOL ACTION PARAMS_JSON      (same token twice)
//! palisade-rpc SOCKET decide-loop MILLIS CONCURRENCY TOOL ACTION PARAMS_JSON
//!     (decisions again and again for MILLIS from CONCURRENCY tasks; counts
//!     by reason, and the slowest and median answer in ms)
//! PARAMS_JSON may be `@FILE` to read it from a file.
//! palisade-rpc SOCKET override OVERRIDE_TOKEN TOOL ACTION PARAMS_JSON
//! palisade-rpc SOCKET approval ID [TOKEN|fresh]
//! palisade-rpc SOCKET egress DEST PORTS TTL_SECONDS [TOKEN|fresh]
//! palisade-rpc SOCKET resolve ID approve|reject
//! palisade-rpc SOCKET health
//! ```

use palisade::{api::client, proto};
use serde_json::{Value, json};

fn status(s: tonic::Status) -> Value {
    json!({"ok": false, "code": format!("{:?}", s.code()), "message": s.message()})
}

fn to_struct(text: &str) -> prost_types::Struct {
    // `@FILE`: the parameters are read from a file.
    let owned;
    let text = match text.strip_prefix('@') {
        Some(file) => {
            owned = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("params {file}: {e}"));
            owned.as_str()
        }
        None => text,
    };
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("params {text:?}: {e}"));
    palisade_tests::session::json_struct(&v)
}

fn decision(r: proto::DecideResponse) -> Value {
    let verdict = proto::Verdict::try_from(r.verdict).map_or("?", |v| v.as_str_name());
    json!({
        "ok": true, "verdict": verdict, "reason": r.reason, "message": r.message,
        "rules": r.matched_rules, "policy_version": r.policy_version, "decision_id": r.decision_id,
        "approval_id": r.approval_id, "elevation": r.elevation,
        "obligations": r.obligations.iter().map(|o| json!({"budget": o.budget, "remaining": o.remaining, "limit": o.limit})).collect::<Vec<_>>(),
    })
}

fn ask(
    token: String,
    override_token: String,
    tool: &str,
    action: &str,
    params: &str,
    resource: &str,
) -> proto::DecideRequest {
    proto::DecideRequest {
        token,
        agent: String::new(),
        tool: tool.into(),
        action: action.into(),
        resource: resource.into(),
        params: Some(to_struct(params)),
        context: None,
        override_token,
    }
}

/// The token argument: `fresh` asks `IssueToken` for one, `none` or
/// nothing sends none (the socket peer alone authenticates), anything else
/// is sent as given.
async fn token_arg(
    c: &mut proto::palisade_client::PalisadeClient<tonic::transport::Channel>,
    arg: &str,
) -> Result<String, tonic::Status> {
    match arg {
        "fresh" => Ok(c
            .issue_token(proto::IssueTokenRequest { ttl_seconds: 0 })
            .await?
            .into_inner()
            .token),
        "" | "none" => Ok(String::new()),
        given => Ok(given.to_string()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let socket = std::path::PathBuf::from(arg(0));
    let mut c = match client::connect(&socket).await {
        Ok(c) => c,
        Err(e) => {
            println!(
                "{}",
                json!({"ok": false, "code": "Unavailable", "message": e.to_string()})
            );
            return;
        }
    };
    let out = match arg(1).as_str() {
        "issue" => match c
            .issue_token(proto::IssueTokenRequest { ttl_seconds: 0 })
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                json!({"ok": true, "token": r.token, "identity": r.identity, "expires_at": r.expires_at, "kid": r.kid})
            }
            Err(s) => status(s),
        },
        "decide" => {
            let token = match token_arg(&mut c, &arg(2)).await {
                Ok(t) => t,
                Err(s) => {
                    println!("{}", status(s));
                    return;
                }
            };
            match c
                .decide(ask(
                    token,
                    String::new(),
                    &arg(3),
                    &arg(4),
                    &arg(5),
                    &arg(6),
                ))
                .await
            {
                Ok(r) => decision(r.into_inner()),
                Err(s) => status(s),
            }
        }
        "decide-loop" => decide_loop(&c, &args).await,
        "replay" => {
            let token = c
                .issue_token(proto::IssueTokenRequest { ttl_seconds: 0 })
                .await
                .map(|r| r.into_inner().token)
                .unwrap_or_default();
            let first = c
                .decide(ask(
                    token.clone(),
                    String::new(),
                    &arg(2),
                    &arg(3),
                    &arg(4),
                    "",
                ))
                .await;
            let second = c
                .decide(ask(token, String::new(), &arg(2), &arg(3), &arg(4), ""))
                .await;
            json!({
                "first": first.map_or_else(status, |r| decision(r.into_inner())),
                "second": second.map_or_else(status, |r| decision(r.into_inner())),
            })
        }
        "override" => match c
            .decide(ask(String::new(), arg(2), &arg(3), &arg(4), &arg(5), ""))
            .await
        {
            Ok(r) => decision(r.into_inner()),
            Err(s) => status(s),
        },
        "approval" => match async {
            let token = token_arg(&mut c, &arg(3)).await?;
            c.get_approval(proto::GetApprovalRequest { id: arg(2), token })
                .await
        }
        .await
        {
            Ok(r) => {
                let a = r.into_inner();
                let state =
                    proto::ApprovalState::try_from(a.state).map_or("?", |s| s.as_str_name());
                json!({"ok": true, "state": state, "override_token": a.override_token, "approver": a.approver})
            }
            Err(s) => status(s),
        },
        "egress" => {
            let ports: Vec<u32> = arg(3).split(',').filter_map(|p| p.parse().ok()).collect();
            match async {
                let token = token_arg(&mut c, &arg(5)).await?;
                c.request_egress(proto::RequestEgressRequest {
                    destination: arg(2),
                    ports,
                    protocol: "tcp".into(),
                    ttl_seconds: arg(4).parse().unwrap_or(0),
                    reason: "test".into(),
                    token,
                })
                .await
            }
            .await
            {
                Ok(r) => {
                    let r = r.into_inner();
                    json!({"ok": true, "granted": r.granted, "expires_at": r.expires_at, "approval_id": r.approval_id, "rule": r.rule})
                }
                Err(s) => status(s),
            }
        }
        "signed" => match c
            .apply_signed_approval(proto::ApplySignedApprovalRequest {
                signed: std::fs::read_to_string(arg(2)).unwrap_or_default(),
            })
            .await
        {
            Ok(r) => {
                let a = r.into_inner();
                json!({"ok": true, "id": a.id, "approver": a.approver, "state": a.state})
            }
            Err(s) => status(s),
        },
        "resolve" => match c
            .resolve_approval(client::request(proto::ResolveApprovalRequest {
                id: arg(2),
                approve: arg(3) == "approve",
                reason: "test".into(),
            }))
            .await
        {
            Ok(_) => json!({"ok": true}),
            Err(s) => status(s),
        },
        "health" => {
            let channel = tonic::transport::Endpoint::from_static("http://palisade.local")
                .connect_with_connector(tower_service(socket.clone()))
                .await;
            match channel {
                Ok(ch) => {
                    let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
                    match h
                        .check(tonic_health::pb::HealthCheckRequest {
                            service: "palisade.v1.Palisade".into(),
                        })
                        .await
                    {
                        Ok(r) => json!({"ok": true, "status": r.into_inner().status}),
                        Err(s) => status(s),
                    }
                }
                Err(e) => json!({"ok": false, "code": "Unavailable", "message": e.to_string()}),
            }
        }
        other => {
            json!({"ok": false, "code": "Usage", "message": format!("unknown command {other:?}")})
        }
    };
    println!("{out}");
}

/// `decide-loop MILLIS CONCURRENCY TOOL ACTION PARAMS_JSON`.
async fn decide_loop(
    c: &proto::palisade_client::PalisadeClient<tonic::transport::Channel>,
    args: &[String],
) -> Value {
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let millis: u64 = arg(2).parse().unwrap_or(1000);
    let tasks: usize = arg(3).parse().unwrap_or(1);
    let until = std::time::Instant::now() + std::time::Duration::from_millis(millis);
    let req = ask(String::new(), String::new(), &arg(4), &arg(5), &arg(6), "");
    let mut handles = Vec::new();
    for _ in 0..tasks.max(1) {
        let mut c = c.clone();
        let req = req.clone();
        handles.push(tokio::spawn(async move {
            let mut seen: Vec<(String, f64)> = Vec::new();
            loop {
                let token = match c
                    .issue_token(proto::IssueTokenRequest { ttl_seconds: 0 })
                    .await
                {
                    Ok(r) => r.into_inner().token,
                    Err(s) => {
                        seen.push((format!("{:?}", s.code()), 0.0));
                        break;
                    }
                };
                let started = std::time::Instant::now();
                let r = c
                    .decide(proto::DecideRequest {
                        token,
                        ..req.clone()
                    })
                    .await;
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                seen.push((
                    r.map_or_else(|s| format!("{:?}", s.code()), |r| r.into_inner().reason),
                    ms,
                ));
                if std::time::Instant::now() >= until {
                    break;
                }
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap_or_default());
    }
    let mut reasons = serde_json::Map::new();
    for (reason, _) in &all {
        let n = reasons.get(reason).and_then(Value::as_u64).unwrap_or(0);
        reasons.insert(reason.clone(), json!(n + 1));
    }
    let mut ms: Vec<f64> = all.iter().map(|(_, m)| *m).collect();
    ms.sort_by(f64::total_cmp);
    json!({
        "ok": true, "count": all.len(), "reasons": reasons,
        "max_ms": ms.last().copied().unwrap_or(0.0),
        "p50_ms": ms.get(ms.len() / 2).copied().unwrap_or(0.0),
    })
}

fn tower_service(
    path: std::path::PathBuf,
) -> impl tower::Service<
    tonic::transport::Uri,
    Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |_| {
        let p = path.clone();
        async move {
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                tokio::net::UnixStream::connect(p).await?,
            ))
        }
    })
}
