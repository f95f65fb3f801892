//! What leaves for the upstream: the agent's hop-by-hop headers and any
//! copy of the credential header go; the service's credential, which the
//! agent never holds, is set. Bodies are asked for unencoded, so masks and
//! the secret scrubber read them as they are.

use std::sync::Arc;

use hyper::header::{self, HeaderValue};

use super::{
    ServiceRt, Shared,
    http::{Req, Resp, strip_hop_by_hop},
    stack::{Next, call},
};

pub fn layer(sh: Arc<Shared>, req: Req, next: Next) -> super::stack::BoxFuture {
    Box::pin(run(sh, req, next))
}

async fn run(_: Arc<Shared>, mut req: Req, next: Next) -> Resp {
    let rt = req.extensions().get::<Arc<ServiceRt>>().cloned();
    let h = req.headers_mut();
    strip_hop_by_hop(h);
    h.remove(header::HOST);
    // The body is already read whole; nothing for the upstream to wait on.
    h.remove(header::EXPECT);
    h.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    if let Some((name, value)) = rt.as_ref().and_then(|r| r.credential.as_ref()) {
        h.remove(name);
        h.insert(name.clone(), value.clone());
    }
    call(next, req).await
}
