//! One audit record per gateway request, in the trail's schema, written
//! when the response body has ended (so streams are recorded with their
//! real size and duration), and the gateway metrics with it.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use http_body_util::BodyExt;

use super::{
    Shared,
    bodies::{Counted, End},
    http::{Req, Resp},
    listen::{Conn, InFlight},
    lock,
    reply::Refusal,
    stack::{Next, call},
};
use crate::{
    audit::{AuditEvent, CallDetail, EventKind, HttpDetail},
    daemon::Daemon,
};

/// What the layers learn about a request.
#[derive(Debug)]
pub struct Record {
    pub service: String,
    pub identity: Option<String>,
    pub method: String,
    pub route: Option<String>,
    pub route_id: Option<String>,
    pub mcp_method: Option<String>,
    pub tool: String,
    pub action: String,
    pub resource: String,
    pub verdict: &'static str,
    pub reason: String,
    /// True once the decision core has judged the call.
    pub decided: bool,
    pub rule: Option<String>,
    pub mode: Option<&'static str>,
    pub detail: Option<String>,
    pub decision_id: Option<String>,
    pub params_digest: Option<String>,
    pub params: Vec<String>,
    pub approval_id: Option<String>,
    pub approver: Option<String>,
    pub policy_version: Option<String>,
    pub status: u16,
    pub upstream_status: Option<u16>,
    pub bytes_in: u64,
}

impl Default for Record {
    fn default() -> Self {
        Self {
            service: String::new(),
            identity: None,
            method: String::new(),
            route: None,
            route_id: None,
            mcp_method: None,
            tool: String::new(),
            action: String::new(),
            resource: String::new(),
            verdict: "deny",
            reason: "refused".into(),
            decided: false,
            rule: None,
            mode: None,
            detail: None,
            decision_id: None,
            params_digest: None,
            params: Vec::new(),
            approval_id: None,
            approver: None,
            policy_version: None,
            status: 0,
            upstream_status: None,
            bytes_in: 0,
        }
    }
}

/// The record of the request in flight (a request extension).
#[derive(Clone, Debug, Default)]
pub struct Trail(Arc<Mutex<Record>>);

impl Trail {
    pub fn with<T>(&self, f: impl FnOnce(&mut Record) -> T) -> T {
        f(&mut lock(&self.0))
    }

    /// Answer with a refusal, and record why. A refusal after the decision
    /// (the upstream failed, the response could not be masked) keeps the
    /// verdict and says what happened in `detail`.
    pub fn refuse(&self, r: Refusal) -> Resp {
        self.with(|rec| {
            if rec.decided {
                rec.detail = Some(format!("{}: {}", r.reason, r.message));
            } else {
                rec.reason = r.reason.clone();
                rec.detail = Some(r.message.clone());
                if r.rule.is_some() {
                    rec.rule = r.rule.clone();
                }
            }
        });
        r.into_response()
    }

    fn emit(&self, daemon: &Daemon, started: Instant, bytes_out: u64, end: End) {
        let r = lock(&self.0);
        let mut ev = AuditEvent::new(EventKind::Gateway, r.verdict, r.reason.clone());
        ev.identity = r.identity.clone();
        ev.policy_version = Some(
            r.policy_version
                .clone()
                .unwrap_or_else(|| daemon.active().policy.version.to_string()),
        );
        ev.rule = r.rule.clone();
        ev.mode = r.mode.map(str::to_string);
        ev.detail = r.detail.clone();
        if !r.tool.is_empty() {
            ev.call = Some(CallDetail {
                tool: r.tool.clone(),
                action: r.action.clone(),
                resource: r.resource.clone(),
                decision_id: r.decision_id.clone(),
                params_digest: r.params_digest.clone(),
                params: r.params.clone(),
                approval_id: r.approval_id.clone(),
                approver: r.approver.clone(),
                ..CallDetail::default()
            });
        }
        let duration = started.elapsed();
        ev.http = Some(HttpDetail {
            service: r.service.clone(),
            method: r.method.clone(),
            route: r.route.clone(),
            route_id: r.route_id.clone(),
            mcp_method: r.mcp_method.clone(),
            status: r.status,
            upstream_status: r.upstream_status,
            bytes_in: r.bytes_in,
            bytes_out,
            duration_us: u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
            end: match end {
                End::Complete => "complete".into(),
                End::Aborted => "aborted".into(),
                End::Failed(e) => format!("failed: {e}"),
            },
        });
        let service = if r.service.is_empty() {
            "-"
        } else {
            &r.service
        };
        daemon.metrics.gateway.record(service, r.verdict, duration);
        drop(r);
        daemon.record_call(ev);
    }
}

pub fn layer(sh: Arc<Shared>, req: Req, next: Next) -> super::stack::BoxFuture {
    Box::pin(run(sh, req, next))
}

async fn run(_: Arc<Shared>, mut req: Req, next: Next) -> Resp {
    let started = Instant::now();
    let Some(conn) = req.extensions().get::<Arc<Conn>>().cloned() else {
        return Refusal::new(
            hyper::StatusCode::INTERNAL_SERVER_ERROR,
            "internal-error",
            "request without a connection",
        )
        .into_response();
    };
    let trail = Trail::default();
    trail.with(|r| {
        r.method = req.method().as_str().to_string();
        r.identity = conn.caller.identity.as_ref().map(|(n, _)| n.clone());
    });
    req.extensions_mut().insert(trail.clone());
    // Recorded even if the agent goes away before there is an answer (a
    // held request whose client gave up).
    let mut pending = Pending {
        trail: trail.clone(),
        daemon: conn.daemon.clone(),
        started,
        inflight: Some(InFlight::new(&conn.activity)),
    };
    let resp = call(next, req).await;
    let (parts, body) = resp.into_parts();
    trail.with(|r| r.status = parts.status.as_u16());
    let daemon = conn.daemon.clone();
    let inflight = pending.inflight.take();
    drop(pending);
    let body = Counted::new(body, move |bytes, end| {
        drop(inflight);
        trail.emit(&daemon, started, bytes, end);
    });
    hyper::Response::from_parts(parts, body.boxed_unsync())
}

/// A request without an answer yet; dropped armed, it records `aborted`.
struct Pending {
    trail: Trail,
    daemon: Arc<Daemon>,
    started: Instant,
    inflight: Option<InFlight>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(i) = self.inflight.take() {
            drop(i);
            self.trail.with(|r| {
                if r.status == 0 {
                    r.detail = Some(match r.detail.take() {
                        Some(d) => format!("{d}; the agent went away before the answer"),
                        None => "the agent went away before the answer".into(),
                    });
                }
            });
            self.trail.emit(&self.daemon, self.started, 0, End::Aborted);
        }
    }
}

/// The pieces every inner layer needs from a request.
pub fn parts(req: &Req) -> Option<(Arc<Conn>, Trail)> {
    Some((
        req.extensions().get::<Arc<Conn>>()?.clone(),
        req.extensions().get::<Trail>()?.clone(),
    ))
}
