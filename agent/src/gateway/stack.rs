//! The one place the gateway's layers are composed (innermost first
//! below: the forwarder, then each layer around it).
//!
//! Each concern is a small tower layer written as a function
//! `(shared, request, next) -> future of the response` (`Mw` adapts it),
//! so a file holds one concern and nothing else.

use std::{convert::Infallible, future::Future, pin::Pin, sync::Arc, task::Poll};

use tower::{Layer, Service, util::BoxCloneSyncService};

use super::{
    Shared, authorize, caller, credential, forward, headers,
    http::{Req, Resp},
    mask, mcp, route, trail,
};

/// What a layer returns: boxed where the layer is defined, so each
/// future is checked for `Send` with its concrete types.
pub type BoxFuture = Pin<Box<dyn Future<Output = Resp> + Send>>;

/// The rest of the stack, as a layer sees it.
pub type Next = BoxCloneSyncService<Req, Resp, Infallible>;
/// The whole stack.
pub type Stack = Next;

/// Run the rest of the stack. Every layer is always ready, so `call`
/// goes straight in; the future is named as the boxed type it is (not
/// through `Service::Future`), which keeps the compiler's `Send` check of
/// the callers' futures concrete.
pub async fn call(mut next: Next, req: Req) -> Resp {
    let fut: Pin<Box<dyn Future<Output = Result<Resp, Infallible>> + Send>> = next.call(req);
    match fut.await {
        Ok(r) => r,
        Err(e) => match e {},
    }
}

#[derive(Clone)]
pub struct Mw<F> {
    shared: Arc<Shared>,
    f: F,
}

#[derive(Clone)]
pub struct MwService<F> {
    shared: Arc<Shared>,
    f: F,
    next: Next,
}

impl<F: Clone, S> Layer<S> for Mw<F>
where
    S: Service<Req, Response = Resp, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    type Service = MwService<F>;

    fn layer(&self, inner: S) -> MwService<F> {
        MwService {
            shared: self.shared.clone(),
            f: self.f.clone(),
            next: BoxCloneSyncService::new(inner),
        }
    }
}

impl<F> Service<Req> for MwService<F>
where
    F: Fn(Arc<Shared>, Req, Next) -> BoxFuture,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Resp, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let fut = (self.f)(self.shared.clone(), req, self.next.clone());
        Box::pin(async move { Ok(fut.await) })
    }
}

fn mw<F>(shared: &Arc<Shared>, f: F) -> Mw<F>
where
    F: Fn(Arc<Shared>, Req, Next) -> BoxFuture + Clone + Send + Sync + 'static,
{
    Mw {
        shared: shared.clone(),
        f,
    }
}

pub fn build(shared: Arc<Shared>) -> Stack {
    let svc = forward::Forward::new(shared.clone());
    // Responses: masked fields, the secret scrubbed.
    let svc = mw(&shared, mask::layer).layer(svc);
    // The agent's headers out, the service's credential in.
    let svc = mw(&shared, credential::layer).layer(svc);
    // The decision: rules, conditions, budgets, approvals.
    let svc = mw(&shared, authorize::layer).layer(svc);
    // MCP services: each JSON-RPC message judged, tool lists filtered.
    let svc = mw(&shared, mcp::layer).layer(svc);
    // HTTP services: route, body within limits, parameters.
    let svc = mw(&shared, route::layer).layer(svc);
    // Headers read one way only: ambiguous framing and routing overrides refused.
    let svc = mw(&shared, headers::layer).layer(svc);
    // Who is calling (from the kernel), kill switch, which service.
    let svc = mw(&shared, caller::layer).layer(svc);
    // One audit record per request, written when the response ends.
    let svc = mw(&shared, trail::layer).layer(svc);
    BoxCloneSyncService::new(svc)
}
