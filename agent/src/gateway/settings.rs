//! `gateway:` in the daemon's configuration.
//!
//! ```yaml
//! gateway:
//!   enabled: true
//!   listen: 127.54.0.1             # agents reach service S at http://127.54.0.1:<S.port>
//!   max_request_bytes: 1048576     # larger request bodies get 413
//!   max_mask_bytes: 4194304        # responses to mask are read up to this size, else refused
//!   header_timeout: 10s            # request headers must arrive within this
//!   body_timeout: 30s              # request bodies must arrive within this
//!   idle_timeout: 60s              # a connection with nothing in flight is closed after this
//!   upstream_timeout: 60s          # the upstream must answer (headers) within this
//!   max_connections: 4096          # open agent connections, all identities
//!   max_connections_per_identity: 256
//!   max_headers: 100
//! ```

use std::{net::Ipv4Addr, time::Duration};

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySettings {
    /// `false`: services in the policy are not served (agents cannot
    /// reach them at all).
    pub enabled: bool,
    /// The loopback address the gateway serves on.
    pub listen: Ipv4Addr,
    pub max_request_bytes: usize,
    pub max_mask_bytes: usize,
    pub header_timeout: String,
    pub body_timeout: String,
    pub idle_timeout: String,
    pub upstream_timeout: String,
    pub max_connections: usize,
    pub max_connections_per_identity: usize,
    pub max_headers: usize,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: Ipv4Addr::new(127, 54, 0, 1),
            max_request_bytes: 1 << 20,
            max_mask_bytes: 4 << 20,
            header_timeout: "10s".into(),
            body_timeout: "30s".into(),
            idle_timeout: "60s".into(),
            upstream_timeout: "60s".into(),
            max_connections: 4096,
            max_connections_per_identity: 256,
            max_headers: 100,
        }
    }
}

/// Timeouts, parsed.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub header: Duration,
    pub body: Duration,
    pub idle: Duration,
    pub upstream: Duration,
}

impl GatewaySettings {
    /// Check values `serde` cannot; the message names the key.
    pub fn check(&self, dns_range: Option<(Ipv4Addr, u32)>) -> Result<(), String> {
        if !self.listen.is_loopback() {
            return Err(format!(
                "gateway.listen {} is not a loopback address; the gateway serves local agents only",
                self.listen
            ));
        }
        if let Some((base, len)) = dns_range {
            let off = u32::from(self.listen).wrapping_sub(u32::from(base));
            if off < len {
                return Err(format!(
                    "gateway.listen {} lies inside the DNS proxy range starting at {base}",
                    self.listen
                ));
            }
        }
        for (key, value) in [
            ("gateway.header_timeout", &self.header_timeout),
            ("gateway.body_timeout", &self.body_timeout),
            ("gateway.idle_timeout", &self.idle_timeout),
            ("gateway.upstream_timeout", &self.upstream_timeout),
        ] {
            match humantime::parse_duration(value) {
                Ok(d) if d > Duration::ZERO => {}
                Ok(_) => return Err(format!("{key} must be more than 0")),
                Err(e) => return Err(format!("{key} = {value:?}: {e} (write e.g. \"10s\")")),
            }
        }
        for (key, v) in [
            ("gateway.max_request_bytes", self.max_request_bytes),
            ("gateway.max_mask_bytes", self.max_mask_bytes),
            ("gateway.max_connections", self.max_connections),
            (
                "gateway.max_connections_per_identity",
                self.max_connections_per_identity,
            ),
            ("gateway.max_headers", self.max_headers),
        ] {
            if v == 0 {
                return Err(format!("{key} must be more than 0"));
            }
        }
        Ok(())
    }

    pub fn timeouts(&self) -> Timeouts {
        let d = |t: &str, s| humantime::parse_duration(t).unwrap_or(Duration::from_secs(s));
        Timeouts {
            header: d(&self.header_timeout, 10),
            body: d(&self.body_timeout, 30),
            idle: d(&self.idle_timeout, 60),
            upstream: d(&self.upstream_timeout, 60),
        }
    }
}
