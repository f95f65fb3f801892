//! The proxy's sockets: one UDP socket and one TCP listener per identity
//! that names hosts, on that identity's own address (`listen + index`).
//! Only the kernel's steering sends an enrolled process there, so the
//! address a query arrives on says who asked.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Weak},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::Semaphore,
    task::JoinHandle,
};
use tracing::{debug, warn};

use super::{DnsError, DnsService, proxy::Transport, upstream::MAX_MESSAGE};

/// TCP connections one identity may hold open at the proxy.
const TCP_CONNECTIONS: usize = 256;
/// A TCP connection idle this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// The sockets of one identity; dropping it stops them.
pub struct Listener {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub fn proxy_addr(base: Ipv4Addr, index: u32, port: u16) -> SocketAddr {
    SocketAddr::new(
        Ipv4Addr::from(u32::from(base).wrapping_add(index)).into(),
        port,
    )
}

impl Listener {
    pub async fn bind(
        service: Weak<DnsService>,
        index: u32,
        addr: SocketAddr,
    ) -> Result<Self, DnsError> {
        let bind_err = |source| DnsError::Bind { addr, source };
        let udp = Arc::new(UdpSocket::bind(addr).await.map_err(bind_err)?);
        let tcp = TcpListener::bind(addr).await.map_err(bind_err)?;
        let tasks = vec![
            tokio::spawn(serve_udp(service.clone(), index, udp)),
            tokio::spawn(serve_tcp(service, index, tcp)),
        ];
        Ok(Self { tasks })
    }
}

async fn serve_udp(service: Weak<DnsService>, index: u32, sock: Arc<UdpSocket>) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                warn!(identity = index, error = %e, "DNS proxy UDP receive");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(svc) = service.upgrade() else { return };
        let bytes = buf[..n].to_vec();
        let sock = sock.clone();
        tokio::spawn(async move {
            if let Some(answer) = svc.handle(index, &bytes, Transport::Udp).await
                && let Err(e) = sock.send_to(&answer, peer).await
            {
                debug!(identity = index, %peer, error = %e, "DNS answer not delivered");
            }
        });
    }
}

async fn serve_tcp(service: Weak<DnsService>, index: u32, listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(TCP_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(r) => r,
            Err(e) => {
                warn!(identity = index, error = %e, "DNS proxy TCP accept");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(identity = index, %peer, "too many DNS-over-TCP connections; closing one");
            continue;
        };
        let service = service.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(service, index, stream).await {
                debug!(identity = index, %peer, error = %e, "DNS-over-TCP connection ended");
            }
            drop(permit);
        });
    }
}

/// Length-prefixed messages (RFC 1035 §4.2.2) until the client closes, goes
/// idle, or an answer is withheld (then the connection is closed).
async fn serve_connection(
    service: Weak<DnsService>,
    index: u32,
    mut stream: TcpStream,
) -> std::io::Result<()> {
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        let mut msg = vec![0u8; len];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut msg))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let Some(svc) = service.upgrade() else {
            return Ok(());
        };
        let Some(answer) = svc.handle(index, &msg, Transport::Tcp).await else {
            return Ok(());
        };
        let Ok(alen) = u16::try_from(answer.len()) else {
            return Ok(());
        };
        let mut framed = Vec::with_capacity(answer.len() + 2);
        framed.extend_from_slice(&alen.to_be_bytes());
        framed.extend_from_slice(&answer);
        stream.write_all(&framed).await?;
    }
}
