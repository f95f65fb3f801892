//! The policy file as written (YAML), before validation. Field names are the
//! contract with security teams' files: extend, never rename.
//!
//! Values that can be wrong in ways YAML cannot see are kept `Spanned`, so
//! validation can point at them.

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::net::{PortRange, Protocol};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDoc {
    pub version: Spanned<u32>,
    /// A human label shown next to the content hash (e.g. a git tag).
    #[serde(default)]
    pub label: Option<Spanned<String>>,
    #[serde(default)]
    pub identities: Vec<IdentityDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityDoc {
    pub id: Spanned<String>,
    #[serde(default)]
    pub mode: Mode,
    /// Existing cgroups (systemd units, pods…) that belong to this identity.
    #[serde(default)]
    pub selectors: Vec<SelectorDoc>,
    #[serde(default)]
    pub egress: EgressDoc,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deny what the policy does not allow.
    #[default]
    Enforce,
    /// Shadow mode: record "would deny", allow.
    Audit,
}

impl Mode {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Audit => "audit",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorDoc {
    /// Absolute path glob below the cgroup v2 root.
    pub cgroup: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressDoc {
    #[serde(default)]
    pub allow: Vec<Spanned<EgressRuleDoc>>,
    /// Deny wins over allow.
    #[serde(default)]
    pub deny: Vec<Spanned<EgressRuleDoc>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRuleDoc {
    /// Stable id cited by events; defaults to `file:N`.
    #[serde(default)]
    pub id: Option<Spanned<String>>,
    #[serde(default)]
    pub cidr: Option<Spanned<String>>,
    /// Exact name or `*.suffix` (DNS-aware).
    #[serde(default)]
    pub host: Option<Spanned<String>>,
    /// Omitted = any port.
    #[serde(default)]
    pub ports: Option<Vec<Spanned<PortRange>>>,
    #[serde(default)]
    pub protocol: Option<Spanned<Protocol>>,
}
