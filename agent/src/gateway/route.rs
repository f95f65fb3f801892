//! HTTP services: the request's method and path pick a route (anything
//! else is refused), the body is read within its limits, and the route,
//! path variables, query and body make the tool call to judge.

use std::sync::Arc;

use hyper::{Method, StatusCode, header};
use serde_json::{Map, Value};

use super::{
    ServiceRt, Shared,
    bodies::{Collected, collect},
    budget::{PER_IDENTITY, Reserved, TOTAL},
    http::{Req, Resp, full},
    listen::Conn,
    reply::Refusal,
    stack::{Next, call},
    trail::{self, Trail},
};
use crate::policy::service::{MaskPath, ServiceKind, params};

/// The tool call a request makes (a request extension).
#[derive(Clone, Debug)]
pub struct Call {
    pub tool: String,
    pub action: String,
    pub resource: String,
    pub params: Map<String, Value>,
    pub digest: String,
    /// The route's own masks (besides the service's).
    pub masks: Vec<MaskPath>,
    /// The HTTP request line (`DELETE /v1/ops/x`) an approval is bound to
    /// and shown with; `None` for MCP messages.
    pub request: Option<String>,
}

/// Read a request body of at most `max` bytes within `timeout`.
#[expect(
    clippy::result_large_err,
    reason = "a refusal is built once per refused request; boxing it buys nothing"
)]
pub async fn read_body(
    sh: &Shared,
    conn: &Conn,
    trail: &Trail,
    headers: &hyper::HeaderMap,
    body: super::http::Body,
) -> Result<(bytes::Bytes, Reserved), Refusal> {
    let max = sh.settings.max_request_bytes;
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            format!("the request body is larger than the gateway's limit of {max} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    // Room for the body before a byte of it is read (`budget`).
    let identity = conn
        .caller
        .identity
        .as_ref()
        .map_or("", |(n, _)| n.as_str());
    let want = declared.map_or(max, |n| usize::try_from(n).unwrap_or(max));
    let Some(reserved) = sh.bodies.reserve(
        identity,
        want,
        max.saturating_mul(PER_IDENTITY),
        max.saturating_mul(TOTAL),
    ) else {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "gateway-busy",
            format!(
                "too many request bodies in flight (at most {PER_IDENTITY} of the largest allowed size per identity, {TOTAL} in all): retry when earlier requests have finished"
            ),
        ));
    };
    let limit = sh.timeouts.body;
    match tokio::time::timeout(limit, collect(body, max)).await {
        Err(_) => Err(Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            "body-timeout",
            format!("the request body did not arrive within {limit:?}"),
        )),
        Ok(Collected::TooLarge) => Err(too_large()),
        Ok(Collected::Failed(e)) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad-body",
            format!("reading the request body: {e}"),
        )),
        Ok(Collected::Whole(b)) => {
            trail.with(|r| r.bytes_in = b.len() as u64);
            Ok((b, reserved))
        }
    }
}

pub fn layer(sh: Arc<Shared>, req: Req, next: Next) -> super::stack::BoxFuture {
    Box::pin(run(sh, req, next))
}

async fn run(sh: Arc<Shared>, req: Req, next: Next) -> Resp {
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
    if rt.service.kind != ServiceKind::Http {
        return call(next, req).await;
    }
    let s = &rt.service;
    // HTTP/1 absolute-form (`POST http://elsewhere/…`) is a proxy request;
    // HTTP/2 always names the authority, which the gateway ignores.
    let absolute = req.version() < hyper::Version::HTTP_2 && req.uri().scheme().is_some();
    if absolute || req.method() == Method::CONNECT {
        return trail.refuse(Refusal::new(
            StatusCode::BAD_REQUEST,
            "not-a-proxy",
            format!(
                "the gateway forwards to service `{}` only: send origin-form requests (a path), not a URL or CONNECT",
                s.id
            ),
        ));
    }
    let method = req.method().as_str().to_string();
    let Some((route, vars)) = s.route(&method, req.uri().path()) else {
        return trail.refuse(Refusal::new(
            StatusCode::FORBIDDEN,
            "no-route",
            format!(
                "no route of service `{}` matches {method} {}; unknown routes are denied",
                s.id,
                req.uri().path()
            ),
        ));
    };
    trail.with(|r| {
        r.route = Some(route.path.text.clone());
        r.route_id = Some(route.id.clone());
        r.tool = route.tool.clone();
        r.action = route.action.clone();
    });
    if let Err(e) = s.refuse_format_suffix(route, req.uri().path()) {
        return trail.refuse(Refusal::new(
            StatusCode::BAD_REQUEST,
            e.code(),
            e.to_string(),
        ));
    }
    let (mut parts, body) = req.into_parts();
    // The reservation lasts until the response has begun: the body is held
    // until then (an approval hold included).
    let (bytes, _reserved) = match read_body(&sh, &conn, &trail, &parts.headers, body).await {
        Ok(b) => b,
        Err(r) => return trail.refuse(r),
    };
    let active = conn.daemon.active();
    let schema = active.policy.schema_for(&route.tool, &route.action);
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let params = match params::extract(&vars, parts.uri.query(), content_type, &bytes, schema) {
        Ok(p) => p,
        Err(e) => {
            let status = if matches!(e, params::ParamsError::Unreadable(_)) {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            } else {
                StatusCode::BAD_REQUEST
            };
            return trail.refuse(Refusal::new(status, e.code(), e.to_string()));
        }
    };
    let resource = route
        .resource
        .as_ref()
        .map(|t| t.render(&vars))
        .unwrap_or_default();
    parts.extensions.insert(Call {
        tool: route.tool.clone(),
        action: route.action.clone(),
        resource,
        digest: crate::decision::input::digest(&params),
        params,
        masks: route.mask.clone(),
        request: Some(format!("{method} {}", parts.uri.path())),
    });
    // The body goes on with the one Content-Type it was judged by.
    super::headers::canonical(&mut parts.headers);
    call(next, hyper::Request::from_parts(parts, full(bytes))).await
}
