//! Listening and serving connections: the caller is identified once per
//! connection, before a byte is read; HTTP/1.1 and HTTP/2 (prior knowledge)
//! share each port; limits are explicit (connections per identity and in
//! all, header size and count, header and idle timeouts), so no client can
//! hold the gateway for others.

use std::{
    collections::HashMap,
    convert::Infallible,
    io,
    net::{Ipv4Addr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tracing::{debug, warn};

use super::{Gateway, lock, peer, who};
use crate::daemon::Daemon;

/// Largest request head (request line and headers) read.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Socket send buffer of an agent connection (the kernel doubles it).
const SEND_BUFFER: usize = 128 * 1024;
/// Concurrent HTTP/2 streams per connection.
const MAX_STREAMS: u32 = 32;
/// HTTP/2 flow-control windows: what a client may send ahead of the
/// gateway reading it, per stream and per connection (the memory an
/// unread upload can take).
const STREAM_WINDOW: u32 = 256 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;

/// Open connections, per identity (`""` for callers that are not enrolled)
/// and in all.
#[derive(Default)]
pub struct Limits {
    per_identity: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
    refused: AtomicU64,
}

/// One open connection's place in the limits.
struct Slot {
    limits: Arc<Limits>,
    key: String,
}

impl Limits {
    fn take(self: &Arc<Self>, key: &str, per: usize, total: usize) -> Option<Slot> {
        let mut map = lock(&self.per_identity);
        let n = map.entry(key.to_string()).or_default();
        if *n >= per || self.total.load(Ordering::Relaxed) >= total {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            limits: self.clone(),
            key: key.to_string(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = lock(&self.limits.per_identity);
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
        self.limits.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// When a connection last moved bytes, and how many responses are still
/// being produced or sent on it.
#[derive(Default)]
pub struct Activity {
    last_ms: AtomicU64,
    pub inflight: AtomicUsize,
    epoch: OnceInstant,
}

#[derive(Default)]
struct OnceInstant(std::sync::OnceLock<Instant>);

impl Activity {
    fn now_ms(&self) -> u64 {
        let epoch = self.epoch.0.get_or_init(Instant::now);
        u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_ms.load(Ordering::Relaxed)),
        )
    }
}

/// A response still on its way: the connection is not idle.
pub struct InFlight(Arc<Activity>);

impl InFlight {
    pub fn new(a: &Arc<Activity>) -> Self {
        a.inflight.fetch_add(1, Ordering::Relaxed);
        Self(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// The TCP stream, noting activity.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// What every request on a connection carries (a request extension).
pub struct Conn {
    pub daemon: Arc<Daemon>,
    pub port: u16,
    pub caller: who::Caller,
    pub activity: Arc<Activity>,
}

/// Listen on `addr:port` and serve what arrives until aborted.
pub fn bind(gw: &Arc<Gateway>, addr: Ipv4Addr, port: u16) -> io::Result<JoinHandle<()>> {
    let std = std::net::TcpListener::bind((addr, port))?;
    std.set_nonblocking(true)?;
    let listener = TcpListener::from_std(std)?;
    let gw = Arc::downgrade(gw);
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let Some(gw) = gw.upgrade() else { return };
                    tokio::spawn(async move { serve(gw, stream, peer, port).await });
                }
                Err(e) => {
                    // Out of descriptors and the like: back off, keep going.
                    warn!(port, error = %e, "gateway accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }))
}

async fn serve(gw: Arc<Gateway>, stream: TcpStream, peer: SocketAddr, port: u16) {
    let Some(daemon) = gw.daemon() else { return };
    let Some(stack) = gw.stack.get().cloned() else {
        return;
    };
    let Ok(local) = stream.local_addr() else {
        return;
    };
    // Who is calling, from the kernel, before reading anything.
    let socket = match peer::client_socket(peer, local) {
        Ok(Some(s)) => s,
        Ok(None) => {
            debug!(%peer, "gateway client socket gone before it was identified");
            return;
        }
        Err(e) => {
            warn!(%peer, error = %e, "identifying a gateway client");
            return;
        }
    };
    // Off the runtime's workers: naming the caller asks the kernel for a
    // filtered walk of its sockets, and a socket without an identity stamp
    // (made by a process that is not enrolled) is looked for among every
    // process's descriptors — milliseconds no other connection should wait.
    let identified = {
        let daemon = daemon.clone();
        tokio::task::spawn_blocking(move || who::identify(&daemon, socket, local, peer)).await
    };
    let caller = match identified {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            warn!(%peer, error = %e, "identifying a gateway client");
            return;
        }
        Err(e) => {
            warn!(%peer, error = %e, "identifying a gateway client stopped");
            return;
        }
    };
    let s = &gw.shared.settings;
    let key = caller.identity_name().to_string();
    let Some(_slot) = gw
        .limits
        .take(&key, s.max_connections_per_identity, s.max_connections)
    else {
        warn!(identity = %key, port, "gateway connection refused: connection limit reached");
        return;
    };
    let _ = stream.set_nodelay(true);
    // A fixed send buffer: an agent that stops reading holds at most this
    // much of an answer in the kernel, not what autotuning would grow to
    // (megabytes a connection, charged to the daemon).
    let _ = nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::SndBuf, &SEND_BUFFER);
    let activity = Arc::new(Activity::default());
    activity.touch();
    let index = caller.identity.as_ref().map(|(_, i)| *i);
    let conn = Arc::new(Conn {
        daemon: daemon.clone(),
        port,
        caller,
        activity: activity.clone(),
    });
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let stack = stack.clone();
        let conn = conn.clone();
        async move {
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(conn);
            let body: super::http::Body = body
                .map_err(|e| -> super::http::BoxError { Box::new(e) })
                .boxed_unsync();
            let resp = super::stack::call(stack, hyper::Request::from_parts(parts, body)).await;
            Ok::<_, Infallible>(resp)
        }
    });
    let t = gw.shared.timeouts;
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(t.header)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(s.max_headers)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .keep_alive_interval(None);
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let served = b.serve_connection(io, svc);
    tokio::select! {
        r = served => {
            if let Err(e) = r {
                debug!(port, error = %e, "gateway connection ended");
            }
        }
        why = watch(&activity, t.idle, &daemon, index) => {
            debug!(port, why, "gateway connection closed");
        }
    }
}

/// Returns when the connection must close: it has had nothing in flight
/// and moved no bytes for `limit` (a client that connects and sends
/// nothing, or stops halfway through its request head, is covered by this
/// and the header timeout), or its identity's kill switch went on (which
/// also ends responses still streaming).
async fn watch(a: &Activity, limit: Duration, daemon: &Daemon, index: Option<u32>) -> &'static str {
    let tick = (limit / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::time::sleep(tick).await;
        if a.inflight.load(Ordering::Relaxed) == 0 && a.idle_for() >= limit {
            return "idle";
        }
        if let Some(i) = index
            && daemon.maps.killed(i).unwrap_or(false)
        {
            return "kill switch";
        }
    }
}
