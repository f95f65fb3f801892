//! The innermost service: send the request to the service's upstream
//! (its pooled client connects nowhere else) and hand back the response,
//! streaming, without hop-by-hop headers.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http_body_util::BodyExt;
use hyper::{StatusCode, Uri, Version};
use tower::Service;

use super::{
    ServiceRt, Shared,
    http::{BoxError, Req, Resp, strip_hop_by_hop},
    reply::Refusal,
    trail,
};
use crate::policy::service::ServiceKind;

#[derive(Clone)]
pub struct Forward {
    shared: Arc<Shared>,
}

impl Forward {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl Service<Req> for Forward {
    type Response = Resp;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Resp, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move { Ok(forward(&shared, req).await) })
    }
}

async fn forward(sh: &Shared, mut req: Req) -> Resp {
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
    if let Some(stdio) = &rt.stdio {
        let resp = stdio
            .handle(conn.caller.identity_name(), req, sh.timeouts.upstream)
            .await;
        trail.with(|r| r.upstream_status = Some(resp.status().as_u16()));
        return resp;
    }
    let (Some(client), Some(u)) = (rt.client.clone(), rt.service.url()) else {
        return trail.refuse(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-upstream",
            format!("service `{}` has no HTTP upstream", rt.service.id),
        ));
    };
    // An HTTP service's path is below its base URL; an MCP service is one
    // endpoint, its URL.
    let target = match rt.service.kind {
        ServiceKind::Http => format!(
            "{}{}",
            u.base_path,
            req.uri().path_and_query().map_or("/", |p| p.as_str())
        ),
        ServiceKind::Mcp => format!(
            "{}{}",
            if u.base_path.is_empty() {
                "/"
            } else {
                &u.base_path
            },
            req.uri()
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default()
        ),
    };
    let uri: Uri = match format!("{}{target}", u.origin()).parse() {
        Ok(uri) => uri,
        Err(e) => {
            return trail.refuse(Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad-request",
                format!("the request target cannot be forwarded: {e}"),
            ));
        }
    };
    *req.uri_mut() = uri;
    // The client picks HTTP/1.1 or HTTP/2 per upstream connection (ALPN).
    *req.version_mut() = Version::HTTP_11;
    let limit = sh.timeouts.upstream;
    match tokio::time::timeout(limit, client.request(req)).await {
        Err(_) => trail.refuse(Refusal::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream-timeout",
            format!(
                "the upstream of service `{}` did not answer within {limit:?}",
                rt.service.id
            ),
        )),
        Ok(Err(e)) => trail.refuse(Refusal::new(
            StatusCode::BAD_GATEWAY,
            "upstream-unreachable",
            format!(
                "the upstream of service `{}` failed: {}",
                rt.service.id,
                crate::cli::error_chain(&e)
            ),
        )),
        Ok(Ok(resp)) => {
            trail.with(|r| r.upstream_status = Some(resp.status().as_u16()));
            // hyper reads chunked framing and passes any other transfer
            // coding on as body bytes, which neither the masker nor the
            // credential scrubber can read.
            if let Some(te) = resp
                .headers()
                .get_all(hyper::header::TRANSFER_ENCODING)
                .iter()
                .flat_map(|v| v.to_str().unwrap_or("?").split(','))
                .map(str::trim)
                .find(|t| !t.is_empty() && !t.eq_ignore_ascii_case("chunked"))
            {
                return trail.refuse(Refusal::new(
                    StatusCode::BAD_GATEWAY,
                    "unscrubbable-response",
                    format!(
                        "the upstream of service `{}` answered with transfer coding `{}`, which the gateway does not read: refused rather than passed on",
                        rt.service.id,
                        te.escape_debug()
                    ),
                ));
            }
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            // hyper would send the upstream's own reason phrase on to an
            // HTTP/1 agent: a channel the scrubber does not see, so the
            // standard phrase for the status goes instead.
            parts.extensions.remove::<hyper::ext::ReasonPhrase>();
            hyper::Response::from_parts(
                parts,
                body.map_err(|e| Box::new(e) as BoxError).boxed_unsync(),
            )
        }
    }
}
