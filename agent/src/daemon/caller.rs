//! Who the caller is, on every call: the process that opened the
//! connection, as long as it is still there, judged by what it is now.
//!
//! A connection outlives its process when a child inherits it. Once the
//! process that connected has exited its pid can go to any new process, so
//! a call on such a connection could be taken for that process (root and
//! not enrolled: an operator; enrolled elsewhere: another identity). Calls
//! are therefore refused once the pinned process has gone. The identity is
//! read again on every call, never remembered per connection, so a process
//! moved to another cgroup, enrolled or revoked since it connected is
//! judged as what it is at the call.

use tracing::{error, warn};

use super::{Caller, Daemon, DaemonError};
use crate::audit::{AuditEvent, EventKind};

impl Caller {
    /// The process that opened this connection is still running. Over TCP
    /// there is no process to check (those callers need an operator
    /// token); a Unix caller without a pinned process is refused.
    fn check_present(&self) -> Result<(), DaemonError> {
        if self.over_tcp {
            return Ok(());
        }
        match &self.peer {
            Some(p) if p.alive() => Ok(()),
            Some(p) => Err(DaemonError::Unauthenticated(format!(
                "the process that opened this connection (pid {}) has exited; a connection \
                 speaks only for the process that made it: connect again",
                p.pid
            ))),
            None => Err(DaemonError::Unauthenticated(
                "this connection is not tied to a process".into(),
            )),
        }
    }
}

impl Daemon {
    /// The identity of the calling process now, or `None` if it is not
    /// enrolled. Refused when the process that connected has exited.
    pub fn caller_identity(&self, caller: &Caller) -> Result<Option<(String, u32)>, DaemonError> {
        if caller.over_tcp {
            // Whatever token it shows: the local process that owns the
            // connection's socket decides, as on the Unix socket.
            let (local, remote) = caller.tcp_peer.ok_or_else(|| {
                DaemonError::Unauthenticated("TCP caller without addresses".to_string())
            })?;
            return self.identity_of_tcp_peer(local, remote);
        }
        let found = self.identity_of_pid(caller.pid);
        // Checked after the read (once is enough: a process that had gone
        // before it has gone after it too): while the pinned process lives
        // its pid is its own, so what was read was about that process.
        self.present(caller)?;
        found
    }

    /// `check_present`, recording a refusal: calls on a connection whose
    /// process has gone are what a pid-reuse attack looks like.
    fn present(&self, caller: &Caller) -> Result<(), DaemonError> {
        caller.check_present().inspect_err(|e| {
            warn!(pid = caller.pid, uid = caller.uid, "call refused: {e}");
            let mut ev = AuditEvent::new(EventKind::Decision, "deny", "caller-exited");
            ev.pid = Some(caller.pid);
            ev.uid = Some(caller.uid);
            ev.policy_version = Some(self.active().policy.version.to_string());
            ev.detail = Some(e.to_string());
            self.audit.emit(ev);
        })
    }

    /// After `Enroll` moved the caller's pid: was that pid still the
    /// caller's? If the caller exited between the check and the move,
    /// whichever process took its pid may have been moved instead; say so
    /// loudly (the trail names the pid) and refuse.
    pub(super) fn confirm_moved(&self, caller: &Caller, identity: &str) -> Result<(), DaemonError> {
        caller.check_present().inspect_err(|e| {
            error!(
                pid = caller.pid,
                identity, "the enrolling process exited during Enroll: pid {} may now belong to another process", caller.pid
            );
            let mut ev = AuditEvent::new(EventKind::Enrolment, "unconfirmed", "caller-exited");
            ev.identity = Some(identity.to_string());
            ev.pid = Some(caller.pid);
            ev.uid = Some(caller.uid);
            ev.detail = Some(format!(
                "{e}; the process now holding pid {} may have been moved into `{identity}`",
                caller.pid
            ));
            self.audit.emit(ev);
        })
    }
}
