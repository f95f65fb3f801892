//! Where the L7 gateway meets the daemon: started with it, told about each
//! policy before and after the generation flip, stopped with it.

use super::{Daemon, DaemonError};
use crate::policy::Policy;

impl Daemon {
    /// Before the flip: secrets, clients, listeners and kernel endpoints for
    /// the policy's services. A failure fails the reload.
    pub(super) fn gateway_prepare(&self, policy: &Policy) -> Result<(), DaemonError> {
        self.gateway.prepare(policy).map_err(DaemonError::Gateway)
    }

    /// What the active policy asks for that cannot be served because an
    /// address or port it needs is taken: gateway services, identities' DNS
    /// proxy addresses, the TCP API and the metrics endpoint (reported by
    /// `reload` and `status`).
    pub fn unavailable(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .gateway
            .unbound()
            .into_iter()
            .map(|e| format!("gateway: {e}; retrying"))
            .collect();
        if let Some(addr) = &self.config.api.tcp
            && self.api_tcp_addr.get().is_none()
        {
            v.push(format!(
                "api.tcp {addr}: not listening (the address is taken or was refused); the Unix socket serves"
            ));
        }
        if self.config.metrics.enabled && self.metrics_addr.is_none() {
            v.push(format!(
                "metrics.listen {}: not listening (the address is taken or was refused)",
                self.config.metrics.address()
            ));
        }
        if let Some(dns) = &self.dns {
            v.extend(
                dns.unbound()
                    .into_iter()
                    .map(|e| format!("DNS proxy: {e}; the identity's host rules admit nothing until a reload binds it")),
            );
        }
        v
    }

    /// After the flip: serve the new services.
    pub(super) fn gateway_commit(&self) {
        self.gateway.commit();
    }
}
