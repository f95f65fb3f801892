//! Connections to an upstream: TCP to the service's own address only,
//! TLS with full certificate validation (rustls, AWS-LC), ALPN for HTTP/2,
//! pooled and kept alive by hyper-util's client.
//!
//! The connector ignores the request URI: whatever an agent sends, a
//! service's client reaches that service's upstream and nothing else.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use hyper::Uri;
use hyper_util::{
    client::legacy::{
        Client,
        connect::{Connected, Connection},
    },
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use rustls::{RootCertStore, pki_types::ServerName};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::{GatewayError, http::Body};
use crate::policy::service::UpstreamUrl;

pub type UpstreamClient = Client<Connector, Body>;

/// How long to wait for a TCP connection (and TLS handshake) upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A plain or TLS stream to the upstream.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Self::Plain(_) => Connected::new(),
            Self::Tls(t) => {
                let c = Connected::new();
                if t.get_ref().1.alpn_protocol() == Some(b"h2") {
                    c.negotiated_h2()
                } else {
                    c
                }
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Connects to one upstream.
#[derive(Clone)]
pub struct Connector {
    host: String,
    port: u16,
    address: Option<SocketAddr>,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<Stream>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            tokio::time::timeout(CONNECT_TIMEOUT, this.connect())
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no connection to {}:{} within {CONNECT_TIMEOUT:?}",
                            this.host, this.port
                        ),
                    )
                })?
        })
    }
}

impl Connector {
    async fn connect(&self) -> io::Result<TokioIo<Stream>> {
        let addrs: Vec<SocketAddr> = match self.address {
            Some(a) => vec![a],
            None => tokio::net::lookup_host((self.host.as_str(), self.port))
                .await?
                .collect(),
        };
        let mut last = io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} resolves to no address", self.host),
        );
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    tcp.set_nodelay(true)?;
                    let stream = match &self.tls {
                        None => Stream::Plain(tcp),
                        Some((tls, name)) => {
                            Stream::Tls(Box::new(tls.connect(name.clone(), tcp).await?))
                        }
                    };
                    return Ok(TokioIo::new(stream));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// The host's trusted roots, read once.
pub fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: std::sync::OnceLock<Arc<RootCertStore>> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut store = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "reading the host's CA certificates");
            }
            let (added, ignored) = store.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "host CA certificates for gateway upstreams");
            Arc::new(store)
        })
        .clone()
}

fn ca_roots(service: &str, path: &std::path::Path) -> Result<RootCertStore, GatewayError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let fail = |why: String| GatewayError::Tls {
        service: service.to_string(),
        why: format!("ca_file {}: {why}", path.display()),
    };
    let mut store = RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no certificate in it".into()));
    }
    for c in certs {
        store.add(c).map_err(|e| fail(e.to_string()))?;
    }
    Ok(store)
}

/// A pooled client for one service's upstream.
pub fn client(service: &str, u: &UpstreamUrl) -> Result<UpstreamClient, GatewayError> {
    let tls = if u.tls {
        let roots = match &u.ca_file {
            Some(p) => Arc::new(ca_roots(service, p)?),
            None => system_roots(),
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| GatewayError::Tls {
                service: service.to_string(),
                why: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let name = ServerName::try_from(u.host.clone()).map_err(|e| GatewayError::Tls {
            service: service.to_string(),
            why: format!("`{}` is not a TLS server name: {e}", u.host),
        })?;
        Some((TlsConnector::from(Arc::new(cfg)), name))
    } else {
        None
    };
    let connector = Connector {
        host: u.host.clone(),
        port: u.port,
        address: u.address,
        tls,
    };
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build(connector))
}
