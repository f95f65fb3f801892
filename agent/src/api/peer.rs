//! Accepting Unix connections: each is pinned to the process that made it
//! (`identity::PeerProcess`) before it serves anything, and every request
//! on it carries that pin (`PeerConn`) for `server::caller`.

use std::{
    collections::HashMap,
    io,
    os::fd::AsFd,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{UnixListener, UnixStream},
};
use tokio_stream::{Stream, StreamExt, wrappers::UnixListenerStream};
use tonic::transport::server::Connected;

use crate::identity::{PeerError, PeerProcess, PinKind};

/// The pinned peer of one connection, or why it could not be pinned
/// (then every call that needs to know the caller is refused).
#[derive(Clone, Debug)]
pub struct PeerConn(pub Result<Arc<PeerProcess>, Arc<PeerError>>);

/// A Unix connection with its peer pinned at accept.
pub struct PeerStream {
    io: UnixStream,
    peer: PeerConn,
    /// The agent's share of the connection cap, given back on close.
    _slot: Option<Slot>,
}

impl PeerStream {
    fn accept(io: UnixStream, kind: PinKind) -> Self {
        let peer = PeerProcess::of_socket(io.as_fd(), kind)
            .map(Arc::new)
            .map_err(|e| {
                tracing::warn!(error = %e, "API connection without a pinned peer: its calls will be refused");
                Arc::new(e)
            });
        Self {
            io,
            peer: PeerConn(peer),
            _slot: None,
        }
    }
}

/// API connections one agent identity may hold at once. Each costs the
/// daemon two descriptors (the connection and the caller's pidfd); without
/// a cap a root agent holding thousands of idle connections used up the
/// daemon's descriptors, and the operator's `revoke` waited until the agent
/// let go. Generous for runtimes with a channel per worker process.
pub const MAX_CONNECTIONS_PER_AGENT: usize = 256;

/// Who a connection counts against: an agent identity, or the shared
/// bucket of connections whose caller could not be told (gone before it was
/// pinned, or its identity unreadable), which agents could otherwise use to
/// get around their own cap. Operators and host programs are not counted.
const UNKNOWN_CALLER: u32 = u32::MAX;

/// The identity index of a process (`None`: not enrolled; `Err`: cannot
/// tell), as the daemon's hooks see it.
pub type Identify = Arc<dyn Fn(u32) -> Result<Option<u32>, ()> + Send + Sync>;

/// Live API connections per agent identity.
#[derive(Clone)]
pub struct ConnectionCap {
    identify: Identify,
    live: Arc<Mutex<HashMap<u32, usize>>>,
    refused: Arc<AtomicU64>,
}

/// One connection's place under the cap.
struct Slot {
    live: Arc<Mutex<HashMap<u32, usize>>>,
    key: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = live.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                live.remove(&self.key);
            }
        }
    }
}

impl ConnectionCap {
    pub fn new(identify: Identify) -> Self {
        Self {
            identify,
            live: Arc::default(),
            refused: Arc::default(),
        }
    }

    /// The connection with its slot, or `None` (and the connection closed)
    /// when its agent identity holds its share already.
    fn admit(&self, mut stream: PeerStream) -> Option<PeerStream> {
        let key = match &stream.peer.0 {
            Ok(p) => match (self.identify)(p.pid) {
                Ok(None) => return Some(stream),
                Ok(Some(identity)) => identity,
                Err(()) => UNKNOWN_CALLER,
            },
            Err(_) => UNKNOWN_CALLER,
        };
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = live.entry(key).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_AGENT {
            drop(live);
            let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            // Said once, then at every power of two: a flood is not logged
            // line by line.
            if refused.is_power_of_two() {
                tracing::warn!(
                    identity_index = key,
                    refused,
                    cap = MAX_CONNECTIONS_PER_AGENT,
                    "an agent identity holds as many API connections as it may: further ones are closed at once"
                );
            }
            return None;
        }
        *n += 1;
        stream._slot = Some(Slot {
            live: Arc::clone(&self.live),
            key,
        });
        Some(stream)
    }
}

/// The listener's connections, each pinned as it is accepted and counted
/// against its agent identity's share (`cap`).
pub fn incoming(
    listener: UnixListener,
    kind: PinKind,
    cap: ConnectionCap,
) -> impl Stream<Item = io::Result<PeerStream>> {
    UnixListenerStream::new(listener).filter_map(move |r| match r {
        Ok(io) => cap.admit(PeerStream::accept(io, kind)).map(Ok),
        Err(e) => Some(Err(e)),
    })
}

impl Connected for PeerStream {
    type ConnectInfo = PeerConn;

    fn connect_info(&self) -> PeerConn {
        self.peer.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
