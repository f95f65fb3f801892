//! Who may use the gateway: an enrolled process (as the kernel says, per
//! connection) whose identity is in the policy and not switched off; and
//! which service its request is for (the port it came in on).

use std::sync::Arc;

use hyper::StatusCode;

use super::{
    Shared,
    http::{Req, Resp},
    reply::Refusal,
    stack::{Next, call},
    trail,
};

pub fn layer(sh: Arc<Shared>, req: Req, next: Next) -> super::stack::BoxFuture {
    Box::pin(run(sh, req, next))
}

async fn run(sh: Arc<Shared>, mut req: Req, next: Next) -> Resp {
    let Some((conn, trail)) = trail::parts(&req) else {
        return Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal-error",
            "no trail",
        )
        .into_response();
    };
    let Some((identity, index)) = conn.caller.identity.clone() else {
        return trail.refuse(Refusal::new(
            StatusCode::FORBIDDEN,
            "caller-not-enrolled",
            "this process is not enrolled in any identity; the gateway serves enrolled agents only",
        ));
    };
    match conn.daemon.maps.killed(index) {
        Ok(false) => {}
        Ok(true) => {
            return trail.refuse(Refusal::new(
                StatusCode::FORBIDDEN,
                "kill-switch",
                format!("identity `{identity}` is revoked (kill switch)"),
            ));
        }
        // The kill switch cannot be read: refuse rather than guess.
        Err(e) => {
            return trail.refuse(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "internal-error",
                format!("cannot read the kill switch: {e}"),
            ));
        }
    }
    if conn.daemon.active().policy.identity(&identity).is_none() {
        return trail.refuse(Refusal::new(
            StatusCode::FORBIDDEN,
            "unknown-identity",
            format!("identity `{identity}` is not in the active policy"),
        ));
    }
    let Some(rt) = sh.runtime.load().by_port.get(&conn.port).cloned() else {
        return trail.refuse(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-service",
            format!("no service is served on port {} now", conn.port),
        ));
    };
    trail.with(|r| r.service = rt.service.id.clone());
    req.extensions_mut().insert(rt);
    call(next, req).await
}
