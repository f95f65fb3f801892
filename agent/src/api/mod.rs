//! The gRPC API on the daemon's Unix socket: a thin adapter. Each RPC reads
//! the caller's kernel-attested credentials, calls a `Daemon` operation and
//! maps its error to a status code in one place (`to_status`).

pub mod client;
mod decision;
mod elevation;
pub mod observe;
mod peer;
mod server;

pub use server::{PalisadeService, serve};

use tonic::{Code, Status};

use crate::daemon::DaemonError;

/// The one mapping from daemon errors to gRPC status codes.
pub fn to_status(err: DaemonError) -> Status {
    let code = match &err {
        DaemonError::Policy(_) | DaemonError::Tables(_) | DaemonError::InvalidArgument(_) => {
            Code::InvalidArgument
        }
        DaemonError::UnknownIdentity(_) | DaemonError::NotFound(_) => Code::NotFound,
        DaemonError::Token(crate::tokens::TokenError::WrongIdentity { .. })
        | DaemonError::Revoked(_) => Code::PermissionDenied,
        DaemonError::Token(crate::tokens::TokenError::ReplayCacheFull)
        | DaemonError::Approval(crate::decision::approvals::ApprovalError::Quota { .. }) => {
            Code::ResourceExhausted
        }
        DaemonError::Token(crate::tokens::TokenError::State(_))
        | DaemonError::Approval(crate::decision::approvals::ApprovalError::State(_))
        | DaemonError::State(_) => Code::Unavailable,
        DaemonError::Token(crate::tokens::TokenError::KeyFile(_)) => Code::Internal,
        DaemonError::Token(_) => Code::Unauthenticated,
        DaemonError::Approval(crate::decision::approvals::ApprovalError::NotFound(_)) => {
            Code::NotFound
        }
        DaemonError::Approval(_) => Code::FailedPrecondition,
        DaemonError::Grant(crate::decision::grants::GrantError::TooMany(..)) => {
            Code::ResourceExhausted
        }
        DaemonError::PermissionDenied(_) => Code::PermissionDenied,
        DaemonError::Busy(_) => Code::ResourceExhausted,
        DaemonError::Unauthenticated(_) => Code::Unauthenticated,
        DaemonError::Config(_)
        | DaemonError::Preflight(_)
        | DaemonError::Metrics(_)
        | DaemonError::Gateway(_)
        | DaemonError::Precondition(_) => Code::FailedPrecondition,
        DaemonError::Cgroup(_)
        | DaemonError::Audit(_)
        | DaemonError::Trail(_)
        | DaemonError::Bpf(_)
        | DaemonError::Identity(_)
        | DaemonError::Dns(_)
        | DaemonError::Grant(_)
        | DaemonError::Elevation(_) => Code::Internal,
    };
    Status::new(code, err.to_string())
}
