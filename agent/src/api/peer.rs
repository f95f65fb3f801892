//! Accepting Unix connections: each is pinned to the process that made it
//! (`identity::PeerProcess`) before it serves anything, and every request
//! on it carries that pin (`PeerConn`) for `server::caller`.

use std::{
    io,
    os::fd::AsFd,
    pin::Pin,
    sync::Arc,
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
        }
    }
}

/// The listener's connections, each pinned as it is accepted.
pub fn incoming(
    listener: UnixListener,
    kind: PinKind,
) -> impl Stream<Item = io::Result<PeerStream>> {
    UnixListenerStream::new(listener).map(move |r| r.map(|io| PeerStream::accept(io, kind)))
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
