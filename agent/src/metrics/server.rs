//! The `/metrics` endpoint: a few lines of hyper (already in the tree for
//! gRPC). `GET /metrics` scrapes, `GET /healthz` answers `ok`; anything
//! else is 404 or 405. Slow or idle clients are cut off, and at most
//! `MAX_CONNECTIONS` are served at once.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Weak},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};
use tracing::{debug, info};

use super::MetricsConfig;
use crate::daemon::Daemon;

const MAX_CONNECTIONS: usize = 32;

#[derive(Debug, thiserror::Error)]
#[error("metrics endpoint {addr} (config `metrics.listen`): {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Bind the configured address (before anything else starts). `None` when
/// metrics are disabled; an error when the address is taken, which the
/// daemon reports and starts without metrics.
pub fn bind(cfg: &MetricsConfig) -> Result<Option<std::net::TcpListener>, BindError> {
    if !cfg.enabled {
        return Ok(None);
    }
    let addr = cfg.address();
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| BindError { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| BindError { addr, source })?;
    Ok(Some(listener))
}

/// Serve scrapes for as long as the daemon lives.
pub fn spawn(listener: std::net::TcpListener, daemon: Weak<Daemon>) -> std::io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    info!(address = %listener.local_addr()?, "metrics listening");
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                debug!(%peer, "metrics: too many connections");
                continue;
            };
            if daemon.strong_count() == 0 {
                break;
            }
            let d = daemon.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let d = d.clone();
                    async move { Ok::<_, Infallible>(handle(&req, &d)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(5))
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
                drop(permit);
            });
        }
    });
    Ok(())
}

fn handle(req: &Request<Incoming>, daemon: &Weak<Daemon>) -> Response<Full<Bytes>> {
    let reply = |code: StatusCode, ctype: &'static str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = code;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(ctype),
        );
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => match daemon.upgrade() {
            Some(d) => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                super::collect::scrape(&d),
            ),
            None => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "stopping\n".into(),
            ),
        },
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "try /metrics\n".into()),
    }
}
