use crate::{bpf::BpfError, identity::IdentityError, policy::PolicyErrors};

/// What the daemon's operations can fail with. The API maps each variant to
/// one gRPC status code (see `api::status`).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("policy rejected:\n{0}")]
    Policy(PolicyErrors),
    #[error("policy cannot be compiled for the kernel: {0}")]
    Tables(#[from] crate::policy::TableError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("cgroup filesystem: {0}")]
    Cgroup(#[source] std::io::Error),
    #[error("audit trail: {0}")]
    Audit(#[source] std::io::Error),
    #[error(transparent)]
    Trail(#[from] crate::audit::trail::TrailError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::server::BindError),
    #[error("this host cannot run Palisade as configured (`palisade doctor` says more):\n{0}")]
    Preflight(String),
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("DNS proxy: {0}")]
    Dns(#[from] crate::dns::DnsError),
    #[error("gateway: {0}")]
    Gateway(#[from] crate::gateway::GatewayError),
    #[error("unknown identity `{0}`: it is not defined in the active policy")]
    UnknownIdentity(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("cannot identify the calling process: {0}")]
    Unauthenticated(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Token(#[from] crate::tokens::TokenError),
    #[error("identity `{0}` is revoked (kill switch): no tokens, no decisions")]
    Revoked(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Approval(#[from] crate::decision::approvals::ApprovalError),
    #[error("grant: {0}")]
    Grant(#[from] crate::decision::grants::GrantError),
    #[error("decision state: {0}")]
    State(String),
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Elevation(#[from] crate::decision::elevations::ElevationError),
    #[error("{0}")]
    Precondition(String),
}

impl From<crate::state::StateError> for DaemonError {
    fn from(e: crate::state::StateError) -> Self {
        Self::State(e.to_string())
    }
}

impl DaemonError {
    /// A stable reason code for the audit trail.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Token(t) => t.code(),
            Self::Revoked(_) => "kill-switch",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::PermissionDenied(_) => "permission-denied",
            Self::Approval(crate::decision::approvals::ApprovalError::Quota { .. }) => {
                "approval-quota"
            }
            Self::Approval(crate::decision::approvals::ApprovalError::State(_))
            | Self::State(_) => "state-unavailable",
            Self::Approval(_) => "approval-mismatch",
            Self::InvalidArgument(_) => "invalid-request",
            Self::NotFound(_) | Self::UnknownIdentity(_) => "not-found",
            Self::Busy(_) => "evaluation-busy",
            _ => "internal-error",
        }
    }
}
