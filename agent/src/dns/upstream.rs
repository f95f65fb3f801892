//! The proxy's side towards the real resolver. UDP queries share a few
//! connected sockets (random source ports), each query under a fresh random
//! id; an answer is accepted only for an id in flight on that socket and
//! only if it repeats the question. TCP queries get a connection each.
//!
//! The daemon is never enrolled, so these sockets are never steered or
//! judged by the hooks.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use hickory_proto::op::{Message, MessageType, Query};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    sync::oneshot,
};
use tracing::warn;

/// UDP sockets towards the upstream (spreads source ports and ids).
const UDP_SOCKETS: usize = 4;
/// Largest DNS message (TCP length prefix is 16 bits).
pub const MAX_MESSAGE: usize = 65_535;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no answer from {0} in time")]
    Timeout(SocketAddr),
    #[error("talking to {addr}: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("encoding the query: {0}")]
    Encode(String),
    #[error("{addr} answered with a malformed message: {detail}")]
    Malformed { addr: SocketAddr, detail: String },
    #[error("too many queries in flight")]
    Busy,
}

struct Pending {
    tx: oneshot::Sender<Message>,
    question: Option<Query>,
}

struct Channel {
    sock: UdpSocket,
    pending: Mutex<HashMap<u16, Pending>>,
}

pub struct Upstream {
    pub addr: SocketAddr,
    channels: Vec<Arc<Channel>>,
    timeout: Duration,
}

fn plock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Upstream {
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Arc<Self>> {
        let mut channels = Vec::with_capacity(UDP_SOCKETS);
        for _ in 0..UDP_SOCKETS {
            let local: SocketAddr = if addr.is_ipv4() {
                "0.0.0.0:0".parse().map_err(io::Error::other)?
            } else {
                "[::]:0".parse().map_err(io::Error::other)?
            };
            let sock = UdpSocket::bind(local).await?;
            sock.connect(addr).await?;
            let ch = Arc::new(Channel {
                sock,
                pending: Mutex::new(HashMap::new()),
            });
            tokio::spawn(read_answers(Arc::downgrade(&ch), addr));
            channels.push(ch);
        }
        Ok(Arc::new(Self {
            addr,
            channels,
            timeout,
        }))
    }

    /// Ask over UDP; the answer comes back under the caller's message id
    /// only after `finish` (this returns the upstream's message as is).
    pub async fn exchange_udp(&self, query: &Message) -> Result<Message, UpstreamError> {
        let ch = &self.channels[rand::random_range(0..self.channels.len())];
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut pending = plock(&ch.pending);
            if pending.len() >= usize::from(u16::MAX) / 2 {
                return Err(UpstreamError::Busy);
            }
            let id = loop {
                let id: u16 = rand::random();
                if !pending.contains_key(&id) {
                    break id;
                }
            };
            pending.insert(
                id,
                Pending {
                    tx,
                    question: query.queries.first().cloned(),
                },
            );
            id
        };
        let result = self.send_and_wait(ch, query, id, rx).await;
        if result.is_err() {
            plock(&ch.pending).remove(&id);
        }
        result
    }

    async fn send_and_wait(
        &self,
        ch: &Channel,
        query: &Message,
        id: u16,
        rx: oneshot::Receiver<Message>,
    ) -> Result<Message, UpstreamError> {
        let mut q = query.clone();
        q.metadata.id = id;
        let bytes = q
            .to_vec()
            .map_err(|e| UpstreamError::Encode(e.to_string()))?;
        ch.sock
            .send(&bytes)
            .await
            .map_err(|source| UpstreamError::Io {
                addr: self.addr,
                source,
            })?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(msg)) => Ok(msg),
            _ => Err(UpstreamError::Timeout(self.addr)),
        }
    }

    /// Ask over TCP, on a connection of its own.
    pub async fn exchange_tcp(&self, query: &Message) -> Result<Message, UpstreamError> {
        let addr = self.addr;
        let io_err = |source| UpstreamError::Io { addr, source };
        let mut q = query.clone();
        q.metadata.id = rand::random();
        let bytes = q
            .to_vec()
            .map_err(|e| UpstreamError::Encode(e.to_string()))?;
        let len = u16::try_from(bytes.len())
            .map_err(|_| UpstreamError::Encode("query longer than 65535 bytes".into()))?;
        let exchange = async {
            let mut stream = TcpStream::connect(addr).await.map_err(io_err)?;
            let mut framed = Vec::with_capacity(bytes.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&bytes);
            stream.write_all(&framed).await.map_err(io_err)?;
            let n = stream.read_u16().await.map_err(io_err)?;
            let mut buf = vec![0u8; usize::from(n)];
            stream.read_exact(&mut buf).await.map_err(io_err)?;
            Ok::<_, UpstreamError>(buf)
        };
        let buf = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| UpstreamError::Timeout(addr))??;
        let msg = Message::from_vec(&buf).map_err(|e| UpstreamError::Malformed {
            addr,
            detail: e.to_string(),
        })?;
        if msg.metadata.id != q.metadata.id || msg.queries.first() != q.queries.first() {
            return Err(UpstreamError::Malformed {
                addr,
                detail: "the answer does not match the question".into(),
            });
        }
        Ok(msg)
    }
}

/// Hand each UDP answer to the query waiting for it; drop anything else.
async fn read_answers(ch: std::sync::Weak<Channel>, addr: SocketAddr) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let Some(channel) = ch.upgrade() else { return };
        let n = match channel.sock.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                // ICMP errors (e.g. port unreachable) surface here; the
                // waiting queries time out.
                warn!(upstream = %addr, error = %e, "upstream socket");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(msg) = Message::from_vec(&buf[..n]) else {
            warn!(upstream = %addr, len = n, "malformed answer from upstream dropped");
            continue;
        };
        if msg.metadata.message_type != MessageType::Response {
            continue;
        }
        let mut pending = plock(&channel.pending);
        let matches = pending
            .get(&msg.metadata.id)
            .is_some_and(|p| p.question.as_ref() == msg.queries.first());
        if matches && let Some(p) = pending.remove(&msg.metadata.id) {
            let _ = p.tx.send(msg);
        }
    }
}
