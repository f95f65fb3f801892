//! Policy as code: load YAML, validate it with precise errors, and compile it
//! into the tables the kernel reads.
//!
//! `load` never returns half a policy: either every file parses and validates
//! and the result is complete, or the caller gets every error with its
//! `file:line:column` and keeps what it had.

pub mod diag;
pub mod glob;
pub mod host;
pub mod model;
pub mod net;
mod source;
pub mod tables;
mod validate;

use std::{fmt, path::Path};

pub use diag::{Diagnostic, PolicyErrors, Severity, SourceLoc};
pub use glob::Glob;
pub use host::HostPattern;
pub use model::Mode;
pub use net::{Cidr, PortRange, Protocol};
pub use tables::{KernelTables, TableError};

/// A validated policy, ready to compile for the kernel.
#[derive(Clone, Debug)]
pub struct Policy {
    pub version: PolicyVersion,
    pub identities: Vec<Identity>,
    /// Every rule, indexed by the rule number the kernel reports.
    pub rules: Vec<RuleInfo>,
}

impl Policy {
    pub fn identity(&self, id: &str) -> Option<&Identity> {
        self.identities.iter().find(|i| i.id == id)
    }

    pub fn rule(&self, index: u32) -> Option<&RuleInfo> {
        self.rules.get(index as usize)
    }
}

/// Content hash of the policy files, plus the optional human label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyVersion {
    /// `sha256:` and the first 16 hex digits of the hash of every file.
    pub hash: String,
    pub label: Option<String>,
}

impl fmt::Display for PolicyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.label {
            Some(label) => write!(f, "{label}@{}", self.hash),
            None => f.write_str(&self.hash),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Identity {
    pub id: String,
    pub mode: Mode,
    pub selectors: Vec<Glob>,
    pub allow: Vec<NetRule>,
    pub deny: Vec<NetRule>,
    pub allow_hosts: Vec<HostRule>,
    pub deny_hosts: Vec<HostRule>,
    pub loc: SourceLoc,
}

/// A CIDR rule after validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetRule {
    pub rule: u32,
    pub cidr: Cidr,
    /// Coalesced; `[PortRange::ALL]` when the rule names no ports.
    pub ports: Vec<PortRange>,
    pub protocol: Protocol,
}

/// A host-name rule after validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRule {
    pub rule: u32,
    pub pattern: HostPattern,
    pub ports: Vec<PortRange>,
    pub protocol: Protocol,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    Allow,
    Deny,
}

impl RuleAction {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// What events and verdicts say about a rule.
#[derive(Clone, Debug)]
pub struct RuleInfo {
    /// Explicit `id:` or `file:N` (N-th rule of that file, from 1).
    pub id: String,
    pub identity: String,
    pub action: RuleAction,
    pub loc: SourceLoc,
}

/// A loaded policy and the warnings found on the way.
#[derive(Debug)]
pub struct Loaded {
    pub policy: Policy,
    pub warnings: Vec<Diagnostic>,
}

/// Load a policy file, or every `*.yaml`/`*.yml` file of a directory (in name
/// order, merged into one policy).
pub fn load(path: &Path) -> Result<Loaded, PolicyErrors> {
    let sources = source::read(path)?;
    validate::validate(&sources)
}

/// Validate policy text held in memory (`name` is used in messages).
pub fn load_str(name: &str, text: &str) -> Result<Loaded, PolicyErrors> {
    let sources = vec![source::Source {
        path: name.into(),
        text: text.to_string(),
    }];
    validate::validate(&sources)
}
