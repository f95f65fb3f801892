//! MCP services over streamable HTTP: each JSON-RPC message an agent posts
//! is read whole and judged before anything reaches the server.
//!
//! - `tools/call` is a call of the service's tool with the MCP tool's name
//!   as the action and its arguments as the parameters; a refusal is a
//!   JSON-RPC error the client shows.
//! - `tools/list` is passed on, and its answer lists only the tools the
//!   identity may call.
//! - The protocol's own messages (`initialize`, `ping`, notifications —
//!   messages without an id —, the client's answers to the server) pass;
//!   every other method (`resources/read`, `prompts/get`, a request named
//!   `notifications/…`) is judged as an action named after it.
//! - `GET` and `DELETE` carry no body (the headers layer refuses one).
//! - A URL query string is refused (`unknown-parameter`): the transport
//!   uses none, and nothing would judge it.
//! - With `mask:` paths, everything the server sends is masked whole
//!   (`masking`): every answer, error, notification and event stream; a
//!   message that cannot be masked is replaced by a JSON-RPC error.

mod answers;
mod rpc;
pub mod sessions;
mod sse;
pub mod stdio;

use std::sync::Arc;

use hyper::{Method, StatusCode, header};
use serde_json::{Map, Value};

use answers::rewrite;

use super::{
    ServiceRt, Shared,
    http::{Req, Resp, full},
    listen::Conn,
    reply::Refusal,
    route::{Call, read_body},
    stack::{Next, call},
    trail::{self, Trail},
};
use crate::policy::{Mode, Policy, service::ServiceKind};

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
    // The transport takes no query string, and nothing would judge one: a
    // query is refused, as an HTTP service refuses an undeclared parameter.
    if let Some(q) = req.uri().query() {
        let shown: String = q.chars().take(64).collect();
        return trail.refuse(Refusal::new(
            StatusCode::BAD_REQUEST,
            "unknown-parameter",
            format!(
                "MCP service `{}` takes no query string (`?{shown}`): refused, not forwarded",
                rt.service.id
            ),
        ));
    }
    // A remote server's session is its identity's alone (the daemon's own
    // stdio servers check this themselves).
    let identity = conn.caller.identity_name();
    let remote = rt.stdio.is_none();
    let session = match session_of(req.headers()) {
        Ok(s) => s,
        Err(r) => return trail.refuse(r),
    };
    if remote
        && let Some(sid) = &session
        && !rt.sessions.belongs_to(sid, identity)
    {
        return trail.refuse(Refusal::new(
            StatusCode::NOT_FOUND,
            "no-session",
            "no such MCP session for this identity (it ended, was never opened, or is another identity's); initialize again",
        ));
    }
    let ending = *req.method() == Method::DELETE;
    let resp = transport(&sh, &conn, &trail, &rt, req, next).await;
    if remote {
        if let Ok(Some(issued)) = session_of(resp.headers()) {
            rt.sessions.issued(&issued, identity);
        }
        if ending
            && resp.status().is_success()
            && let Some(sid) = &session
        {
            rt.sessions.ended(sid);
        }
    }
    resp
}

/// The request's or answer's `Mcp-Session-Id`, if it has one (once).
#[expect(
    clippy::result_large_err,
    reason = "a refusal is built once per refused request; boxing it buys nothing"
)]
fn session_of(h: &hyper::HeaderMap) -> Result<Option<String>, Refusal> {
    super::headers::single(h, "mcp-session-id", "Mcp-Session-Id")
}

/// The request by its method: a message (`POST`), the server's event
/// stream (`GET`) or the end of a session (`DELETE`).
async fn transport(
    sh: &Arc<Shared>,
    conn: &Conn,
    trail: &Trail,
    rt: &Arc<ServiceRt>,
    req: Req,
    next: Next,
) -> Resp {
    match *req.method() {
        Method::POST => post(sh, conn, trail, rt, req, next).await,
        // The server's event stream, and the end of a session.
        Method::GET | Method::DELETE => {
            trail.with(|r| {
                r.verdict = "allow";
                r.reason = "mcp-transport".into();
            });
            let resp = call(next, req).await;
            rewrite(sh, trail, rt, None, resp, None).await
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
            let resp = forward(parts).await;
            return rewrite(sh, trail, rt, None, resp, None).await;
        }
        rpc::Message::Call { id, method, params } => (id, method, params),
    };
    trail.with(|r| r.mcp_method = Some(method.clone()));
    // A notification has no id; a message with one is a request, and a
    // request is judged whatever its method is called.
    let notification = id.is_none() && method.starts_with("notifications/");
    if PROTOCOL.contains(&method.as_str()) || notification {
        trail.with(|r| {
            r.verdict = "allow";
            r.reason = "mcp-protocol".into();
        });
        let resp = forward(parts).await;
        return rewrite(sh, trail, rt, id.as_ref(), resp, None).await;
    }
    if method == "tools/list" {
        let resp = forward(parts).await;
        let filter = list_filter(conn, trail, rt, id.clone());
        return rewrite(sh, trail, rt, id.as_ref(), resp, filter).await;
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
    rewrite(sh, trail, rt, id.as_ref(), resp, None).await
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
        .filter(|r| r.covers_in_any_case(tool, name, ""))
        .any(|r| r.when.is_none())
        && ident
            .tools
            .allow
            .iter()
            .chain(&ident.tools.require_approval)
            .any(|r| covers(&r))
}

/// The rewrite of a `tools/list` answer that lists only the tools the
/// caller may call (none for a caller without an identity).
fn list_filter(
    conn: &Conn,
    trail: &Trail,
    rt: &ServiceRt,
    id: Option<Value>,
) -> Option<sse::Rewrite> {
    let (identity, _) = conn.caller.identity.clone()?;
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
    Some(Box::new(move |v: &mut Value| {
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
    }))
}
