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

    /// After the flip: serve the new services.
    pub(super) fn gateway_commit(&self) {
        self.gateway.commit();
    }
}
