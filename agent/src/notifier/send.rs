//! One HTTP(S) POST with a deadline: a fresh connection each time (a
//! notification is rare), TLS with rustls against the host's roots.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

/// A destination URL, checked when the config is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, as sent.
    pub target: String,
}

impl std::fmt::Display for Url {
    /// Scheme, host and port only: the path of a Slack or Teams webhook
    /// is its secret, and must not reach logs or metrics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

impl std::str::FromStr for Url {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let uri: hyper::Uri = s
            .parse()
            .map_err(|e| format!("not a URL ({e}); write https://HOST/PATH"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err("must start with https:// (or http://)".into()),
        };
        let host = uri
            .host()
            .ok_or("has no host")?
            .trim_matches(['[', ']'])
            .to_string();
        Ok(Self {
            https,
            port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
            host,
            target: uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        })
    }
}

/// Why a delivery failed, and whether trying again may help.
#[derive(Debug)]
pub enum SendError {
    Retry(String),
    Permanent(String),
}

/// The TLS settings every HTTPS delivery uses: the host's root
/// certificates, AWS-LC.
pub fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(format!(
            "no trusted root certificates found on this host ({} errors); install ca-certificates",
            found.errors.len()
        ));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

async fn exchange<S>(
    io: S,
    url: &Url,
    headers: &[(String, String)],
    body: Bytes,
) -> Result<u16, SendError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| SendError::Retry(format!("{url}: {e}")))?;
    tokio::spawn(conn);
    let mut req = hyper::Request::post(url.target.as_str())
        .header(hyper::header::HOST, url.host.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("palisade/", env!("CARGO_PKG_VERSION")),
        );
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| SendError::Permanent(format!("building the request: {e}")))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| SendError::Retry(format!("{url}: {e}")))?;
    let status = resp.status();
    let text = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if status.is_success() {
        return Ok(status.as_u16());
    }
    let msg = format!(
        "{url} answered {status}: {}",
        String::from_utf8_lossy(&text)
            .chars()
            .take(200)
            .collect::<String>()
    );
    // Slack and Teams answer 4xx for a bad payload or a revoked URL, which
    // no retry fixes; 408, 429 and 5xx are worth another try.
    if status.is_server_error()
        || status == hyper::StatusCode::TOO_MANY_REQUESTS
        || status == hyper::StatusCode::REQUEST_TIMEOUT
    {
        Err(SendError::Retry(msg))
    } else {
        Err(SendError::Permanent(msg))
    }
}

/// POST `body` to `url`; the status on success.
pub async fn post(
    url: &Url,
    tls: Option<&Arc<rustls::ClientConfig>>,
    headers: &[(String, String)],
    body: Bytes,
    timeout: Duration,
) -> Result<u16, SendError> {
    let attempt = async {
        let tcp = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|e| SendError::Retry(format!("connecting to {url}: {e}")))?;
        if !url.https {
            return exchange(tcp, url, headers, body).await;
        }
        let tls = tls.ok_or_else(|| SendError::Permanent("TLS is not set up".into()))?;
        let name = rustls::pki_types::ServerName::try_from(url.host.clone())
            .map_err(|e| SendError::Permanent(format!("{url}: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| SendError::Retry(format!("TLS with {url}: {e}")))?;
        exchange(stream, url, headers, body).await
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(SendError::Retry(format!(
            "{url}: no answer within {} ms",
            timeout.as_millis()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::Url;

    #[test]
    fn urls_are_checked_and_shown_without_their_secret_path() {
        let u: Url = "https://hooks.slack.com/services/T0/B0/secret"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (u.https, u.port, u.target.as_str()),
            (true, 443, "/services/T0/B0/secret")
        );
        assert_eq!(u.to_string(), "https://hooks.slack.com:443");
        let u: Url = "http://127.0.0.1:8080/hook?x=1"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (u.https, u.port, u.target.as_str()),
            (false, 8080, "/hook?x=1")
        );
        assert!("ftp://x".parse::<Url>().is_err());
        assert!("nonsense".parse::<Url>().is_err());
    }
}
