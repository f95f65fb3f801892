//! `metrics:` in the daemon config.

use std::net::SocketAddr;

use serde::Deserialize;
use serde_saphyr::Spanned;

/// Prometheus endpoint. On by default, on loopback only: metrics name
/// identities and tools, so exposing them beyond the host is a decision
/// (`allow_remote: true`), not an accident.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// Default `127.0.0.1:9740`; port 0 picks a free port (see `status`).
    pub listen: Option<Spanned<SocketAddr>>,
    /// Accept a non-loopback `listen` address.
    pub allow_remote: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
            allow_remote: false,
        }
    }
}

impl MetricsConfig {
    pub fn address(&self) -> SocketAddr {
        self.listen
            .as_ref()
            .map_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9740)), |s| s.value)
    }

    /// Check what serde cannot: a remote address needs `allow_remote`.
    /// Returns the message and, when known, the line and column.
    pub fn check(&self) -> Result<(), (String, Option<(u32, u32)>)> {
        let addr = self.address();
        if self.enabled && !addr.ip().is_loopback() && !self.allow_remote {
            let at = self
                .listen
                .as_ref()
                .map(|s| (s.referenced.line() as u32, s.referenced.column() as u32));
            return Err((
                format!(
                    "metrics.listen {addr} is not a loopback address: metrics name identities and tools; set `metrics.allow_remote: true` to expose them on purpose (e.g. inside a pod's network namespace)"
                ),
                at,
            ));
        }
        Ok(())
    }
}
