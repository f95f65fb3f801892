//! Connecting to the daemon: its Unix socket, or its optional loopback TCP
//! listener given as `http://127.0.0.1:PORT` (used by the CLI and tests).

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::proto::palisade_client::PalisadeClient;

#[derive(Debug, thiserror::Error)]
#[error("cannot reach the Palisade daemon at {path}: {source} (is `palisade daemon` running?)")]
pub struct ConnectError {
    pub path: PathBuf,
    #[source]
    pub source: tonic::transport::Error,
}

pub async fn connect(socket: &Path) -> Result<PalisadeClient<Channel>, ConnectError> {
    let path = socket.to_path_buf();
    // `http://127.0.0.1:PORT`: the optional loopback TCP listener, where
    // only operator tokens and health work.
    if let Some(url) = path.to_str().filter(|s| s.starts_with("http://")) {
        let channel = Endpoint::from_shared(url.to_string())
            .map_err(|source| ConnectError {
                path: path.clone(),
                source,
            })?
            .connect()
            .await
            .map_err(|source| ConnectError { path, source })?;
        return Ok(PalisadeClient::new(channel));
    }
    let for_connector = path.clone();
    // The URI is required by the API but unused: the connector dials the socket.
    let channel = Endpoint::from_static("http://palisade.local")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let p = for_connector.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(p).await?)) }
        }))
        .await
        .map_err(|source| ConnectError { path, source })?;
    Ok(PalisadeClient::new(channel))
}

/// A request carrying the operator token from `PALISADE_OPERATOR_TOKEN`, if
/// set (for operator calls from users who are neither root nor in the
/// operator group, and over TCP).
pub fn request<T>(message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    if let Ok(token) = std::env::var("PALISADE_OPERATOR_TOKEN")
        && let Ok(value) = format!("Bearer {}", token.trim()).parse()
    {
        req.metadata_mut().insert("authorization", value);
    }
    req
}
