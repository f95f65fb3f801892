//! MCP services over streamable HTTP: each JSON-RPC message an agent posts
//! is read whole and judged before anything reaches the server.
//!
//! - `tools/call` is a call of the service's tool with the MCP tool's name
//!   as the action and its arguments as the parameters; a refusal is a
//!   JSON-RPC error the client shows.
//! - `tools/list` is passed on, and its answer lists only the tools the
//!   identity may call.
//! - The protocol's own messages (`initialize`, `ping`, notifications, the
//!   client's answers to the server) pass; every other method (`resources/
//!   read`, `prompts/get`…) is judged as an action named after it.
//! - Results of `tools/call` are masked (`mask:` paths apply to the tool's
//!   structured result and to JSON in its text content).

mod rpc;
mod sse;
pub mod stdio;

use std::sync::Arc;

use hyper::{Method, StatusCode, header};
use serde_json::{Map, Value};

use super::{
    ServiceRt, Shared,
    bodies::{Collected, collect},
    http::{Req, Resp, full},
    listen::Conn,
    mask,
    reply::Refusal,
    route::{Call, read_body},
    stack::{Next, call},
    trail::{self, Trail},
};
use crate::policy::{
    Mode, Policy,
    service::{MaskPath, ServiceKind},
};

/// Methods of the protocol itself, passed without a decision.
const PROTOCOL: &[&str] = &["initialize", "ping"];

pub fn layer(sh: Arc<Shared>, req: Req, next: Next) -> super::stack::BoxFuture {
    Box::pin(run(sh, req, next))
}

async fn run(sh: Arc<Shared>, req: Req, next: Next) -> Resp {
    let (Some((conn, trail)), Some(rt)) = (
        trail::parts(&req),
        req.extensions().get::<Arc<ServiceRt>>().cloned(),
    ) else {
        return call(next, req).await;
    };
    if rt.service.kind != ServiceKind::Mcp {
        return call(next, req).await;
    }
    let path = req.uri().path();
    if path != "/mcp" && path != "/" {
        return trail.refuse(Refusal::new(
            StatusCode::NOT_FOUND,
            "no-route",
            format!(
                "MCP service `{}` is reached at /mcp, not {path}",
                rt.service.id
            ),
        ));
    }
    trail.with(|r| r.route = Some("/mcp".into()));
    match *req.method() {
        Method::POST => post(&sh, &conn, &trail, &rt, req, next).await,
        // The server's event stream, and the end of a session.
        Method::GET | Method::DELETE => {
            trail.with(|r| {
                r.verdict = "allow";
                r.reason = "mcp-transport".into();
            });
            call(next, req).await
        }
        _ => trail.refuse(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "MCP over HTTP uses POST, GET and DELETE",
        )),
    }
}

/// Answer with a JSON-RPC error, and record it.
fn rpc_refusal(
    trail: &Trail,
    status: StatusCode,
    id: Option<&Value>,
    code: i64,
    reason: &str,
    msg: String,
) -> Resp {
    trail.with(|r| {
        r.reason = reason.to_string();
        r.detail = Some(msg.clone());
    });
    rpc::error(status, id, code, &msg, None)
}

async fn post(
    sh: &Shared,
    conn: &Conn,
    trail: &Trail,
    rt: &Arc<ServiceRt>,
    req: Req,
    next: Next,
) -> Resp {
    let (mut parts, body) = req.into_parts();
    // The message is judged as JSON, so it goes on labelled as JSON only.
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    let (bytes, _reserved) = match read_body(sh, conn, trail, &parts.headers, body).await {
        Ok(b) => b,
        Err(r) => return trail.refuse(r),
    };
    let msg = match rpc::parse(&bytes) {
        Ok(m) => m,
        Err((code, m)) => {
            return rpc_refusal(
                trail,
                StatusCode::BAD_REQUEST,
                None,
                code,
                "bad-mcp-message",
                m,
            );
        }
    };
    let forward = |parts: hyper::http::request::Parts| {
        call(
            next.clone(),
            hyper::Request::from_parts(parts, full(bytes.clone())),
        )
    };
    let (id, method, params) = match msg {
        rpc::Message::Response => {
            trail.with(|r| {
                r.verdict = "allow";
                r.reason = "mcp-response".into();
            });
            return forward(parts).await;
        }
        rpc::Message::Call { id, method, params } => (id, method, params),
    };
    trail.with(|r| r.mcp_method = Some(method.clone()));
    if PROTOCOL.contains(&method.as_str()) || method.starts_with("notifications/") {
        trail.with(|r| {
            r.verdict = "allow";
            r.reason = "mcp-protocol".into();
        });
        return forward(parts).await;
    }
    if method == "tools/list" {
        let resp = forward(parts).await;
        return list_filter(sh, conn, trail, rt, id, resp).await;
    }
    // A call: `tools/call` names its tool; any other method is its own action.
    let (action, args) = if method == "tools/call" {
        let p = params.as_ref().and_then(Value::as_object);
        let name = p.and_then(|p| p.get("name")).and_then(Value::as_str);
        let args = match p.and_then(|p| p.get("arguments")) {
            None | Some(Value::Null) => Some(Map::new()),
            Some(Value::Object(a)) => Some(a.clone()),
            Some(_) => None,
        };
        match (name, args) {
            (Some(n), Some(a)) => (n.to_string(), a),
            _ => {
                return rpc_refusal(
                    trail,
                    StatusCode::OK,
                    id.as_ref(),
                    rpc::INVALID_PARAMS,
                    "bad-mcp-message",
                    "Invalid params: tools/call needs a string `name` and an object `arguments`"
                        .into(),
                );
            }
        }
    } else {
        let args = match params {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => {
                return rpc_refusal(
                    trail,
                    StatusCode::OK,
                    id.as_ref(),
                    rpc::INVALID_PARAMS,
                    "bad-mcp-message",
                    "Invalid params: `params` must be an object".into(),
                );
            }
        };
        (method.clone(), args)
    };
    let c = Call {
        tool: rt.service.tool.clone(),
        action,
        resource: String::new(),
        digest: crate::decision::input::digest(&args),
        params: args,
        masks: Vec::new(),
        request: None,
    };
    if let Err(r) = super::authorize::judge(conn, rt, &c, trail).await {
        trail.with(|rec| {
            if !rec.decided {
                rec.reason = r.reason.clone();
            }
            rec.detail = Some(r.message.clone());
        });
        return rpc::refused(id.as_ref(), &r);
    }
    let resp = forward(parts).await;
    if method != "tools/call" || rt.service.mask.is_empty() {
        return resp;
    }
    let masks = rt.service.mask.clone();
    let want = id.clone();
    rewrite(
        sh,
        trail,
        resp,
        Box::new(move |v: &mut Value| v.get("id") == want.as_ref() && mask_result(v, &masks)),
    )
    .await
}

/// Mask a `tools/call` result: its structured content, and JSON in its
/// text content.
fn mask_result(v: &mut Value, masks: &[MaskPath]) -> bool {
    let Some(result) = v.get_mut("result") else {
        return false;
    };
    let mut n = 0;
    if let Some(s) = result.get_mut("structuredContent") {
        n += masks.iter().map(|m| mask::apply(s, &m.segs)).sum::<usize>();
    }
    if let Some(items) = result.get_mut("content").and_then(Value::as_array_mut) {
        for item in items {
            let Some(text) = item.get("text").and_then(Value::as_str) else {
                continue;
            };
            let Ok(mut j) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            let k: usize = masks.iter().map(|m| mask::apply(&mut j, &m.segs)).sum();
            if k > 0 {
                item["text"] = Value::String(j.to_string());
                n += k;
            }
        }
    }
    n > 0
}

/// May `identity` call MCP tool `name` of `tool` at all? (Some allow or
/// approval rule covers it and no unconditional deny does.)
fn may_call(policy: &Policy, identity: &str, tool: &str, name: &str) -> bool {
    let Some(ident) = policy.identity(identity) else {
        return false;
    };
    let covers = |r: &&crate::policy::ToolRule| r.covers(tool, name, "");
    !ident
        .tools
        .deny
        .iter()
        .filter(covers)
        .any(|r| r.when.is_none())
        && ident
            .tools
            .allow
            .iter()
            .chain(&ident.tools.require_approval)
            .any(|r| covers(&r))
}

async fn list_filter(
    sh: &Shared,
    conn: &Conn,
    trail: &Trail,
    rt: &ServiceRt,
    id: Option<Value>,
    resp: Resp,
) -> Resp {
    let Some((identity, _)) = conn.caller.identity.clone() else {
        return resp;
    };
    let active = conn.daemon.active();
    let audit = active
        .policy
        .identity(&identity)
        .is_some_and(|i| i.mode == Mode::Audit);
    trail.with(|r| {
        r.verdict = "allow";
        r.reason = "tools-filtered".into();
        r.tool = rt.service.tool.clone();
        r.action = "tools/list".into();
        r.policy_version = Some(active.policy.version.to_string());
    });
    let tool = rt.service.tool.clone();
    let t = trail.clone();
    rewrite(
        sh,
        trail,
        resp,
        Box::new(move |v: &mut Value| {
            if v.get("id") != id.as_ref() {
                return false;
            }
            let Some(tools) = v.pointer_mut("/result/tools").and_then(Value::as_array_mut) else {
                return false;
            };
            let before = tools.len();
            let allowed = |t: &Value| {
                t.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| may_call(&active.policy, &identity, &tool, n))
            };
            let shown = tools.iter().filter(|x| allowed(x)).count();
            if !audit {
                tools.retain(allowed);
            }
            t.with(|r| {
                r.detail = Some(if audit {
                    format!("{shown} of {before} tools callable; all listed (audit mode)")
                } else {
                    format!("{shown} of {before} tools listed")
                });
            });
            !audit
        }),
    )
    .await
}

/// Rewrite the JSON-RPC message(s) of a response: an event stream as it
/// streams, a JSON body whole (up to `gateway.max_mask_bytes`).
async fn rewrite(sh: &Shared, trail: &Trail, resp: Resp, mut rw: sse::Rewrite) -> Resp {
    let (mut parts, body) = resp.into_parts();
    let ct = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let max = sh.settings.max_mask_bytes;
    if ct.starts_with("text/event-stream") {
        parts.headers.remove(header::CONTENT_LENGTH);
        let body = sse::SseRewrite::new(body, max, rw);
        return hyper::Response::from_parts(parts, http_body_util::BodyExt::boxed_unsync(body));
    }
    if !ct.starts_with("application/json") {
        return hyper::Response::from_parts(parts, body);
    }
    match tokio::time::timeout(sh.timeouts.upstream, collect(body, max)).await {
        Ok(Collected::Whole(b)) => {
            let out = match serde_json::from_slice::<Value>(&b) {
                Ok(mut v) => {
                    if rw(&mut v) {
                        bytes::Bytes::from(v.to_string())
                    } else {
                        b
                    }
                }
                Err(_) => b,
            };
            parts.headers.remove(header::CONTENT_LENGTH);
            hyper::Response::from_parts(parts, full(out))
        }
        _ => trail.refuse(Refusal::new(
            StatusCode::BAD_GATEWAY,
            "unmaskable-response",
            format!("the MCP answer is larger than {max} bytes or did not arrive; refused rather than passed on unchecked"),
        )),
    }
}
