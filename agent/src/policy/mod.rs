//! Policy as code: load YAML, validate it with precise errors, lint it, and
//! compile it for the kernel (egress) and the decision engine (tools).
//!
//! `load` never returns half a policy: either every file parses, validates
//! and compiles (CEL included) and the result is complete, or the caller gets
//! every error with its `file:line:column` and keeps what it had.

pub mod cel;
mod cel_meter;
pub mod decide;
pub mod diag;
pub mod diff;
pub mod explain;
pub mod glob;
pub mod host;
pub mod lint;
pub mod model;
pub mod net;
pub mod packed;
pub mod schema;
pub mod service;
mod source;
pub use source::is_policy_file;
pub mod suite;
pub mod tables;
mod validate;

use std::{collections::BTreeMap, fmt, path::Path, time::Duration};

pub use decide::{Decision, EgressVerdict, ToolCall, ToolVerdict};
pub use diag::{Diagnostic, PolicyErrors, Severity, SourceLoc};
pub use glob::{Glob, Pattern};
pub use host::HostPattern;
pub use model::{Mode, ParamType, Window};
pub use net::{Cidr, PortRange, Protocol};
pub use tables::{KernelTables, TableError};

/// A validated policy, ready to compile for the kernel and to decide calls.
#[derive(Clone, Debug)]
pub struct Policy {
    pub version: PolicyVersion,
    pub roles: Vec<Role>,
    /// Every identity with its effective rules (own rules plus every rule of
    /// every role it has, directly or by inheritance).
    pub identities: Vec<Identity>,
    /// Every rule definition, indexed by the rule number the kernel reports.
    pub rules: Vec<RuleInfo>,
    /// One line per rule for people, by rule number (see `summary`).
    pub summaries: packed::Packed,
    pub schemas: Vec<ToolSchema>,
    /// Context fields callers may send, besides the built-ins.
    pub context_fields: BTreeMap<String, ParamType>,
    /// Upstreams reached through the L7 gateway.
    pub services: Vec<service::Service>,
    /// Whose signed approvals this policy accepts.
    pub approvers: Vec<Approver>,
}

/// An approver of signed approvals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approver {
    pub id: String,
    /// Ed25519 public key.
    pub public_key: [u8; 32],
    pub loc: SourceLoc,
}

impl Policy {
    pub fn identity(&self, id: &str) -> Option<&Identity> {
        self.identities.iter().find(|i| i.id == id)
    }

    pub fn role(&self, id: &str) -> Option<&Role> {
        self.roles.iter().find(|r| r.id == id)
    }

    pub fn rule(&self, index: u32) -> Option<&RuleInfo> {
        self.rules.get(index as usize)
    }

    pub fn rule_by_id(&self, id: &str) -> Option<&RuleInfo> {
        self.rules.iter().find(|r| r.id == id)
    }

    pub fn service(&self, id: &str) -> Option<&service::Service> {
        self.services.iter().find(|s| s.id == id)
    }

    /// `allow 10.0.0.0/8 tcp/443`, `deny stripe.refund`… for rule `index`.
    pub fn summary(&self, index: u32) -> &str {
        self.summaries.get(index as usize).unwrap_or("")
    }

    /// The summary of the rule with id `id`.
    pub fn summary_of(&self, id: &str) -> &str {
        self.rules
            .iter()
            .position(|r| r.id == id)
            .map_or("", |i| self.summary(i as u32))
    }

    /// The parameter schema covering `tool.action`, if one is declared.
    pub fn schema_for(&self, tool: &str, action: &str) -> Option<&ToolSchema> {
        self.schemas.iter().find(|s| {
            s.tool.matches(tool)
                && (s.actions.is_empty() || s.actions.iter().any(|a| a.matches(action)))
        })
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

/// A role after inheritance is resolved.
#[derive(Clone, Debug)]
pub struct Role {
    pub id: String,
    pub description: Option<String>,
    /// Direct parents.
    pub inherits: Vec<String>,
    /// This role and every role it inherits, transitively.
    pub closure: Vec<String>,
    pub elevated: bool,
    pub loc: SourceLoc,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    pub org: Option<String>,
    pub tenant: Option<String>,
    pub owner: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
pub struct Identity {
    pub id: String,
    pub description: Option<String>,
    pub mode: Mode,
    pub metadata: Metadata,
    /// Roles named on the identity.
    pub roles: Vec<String>,
    /// Those roles and everything they inherit.
    pub effective_roles: Vec<String>,
    pub selectors: Vec<Glob>,
    /// Enrolled only by `palisade exec`; no selectors on purpose.
    pub exec_only: bool,
    pub allow: Vec<NetRule>,
    pub deny: Vec<NetRule>,
    pub allow_hosts: Vec<HostRule>,
    pub deny_hosts: Vec<HostRule>,
    /// Destinations reachable through an approved grant.
    pub approval_egress: Vec<GrantRule>,
    /// Destinations the identity may grant itself for up to `max_ttl`.
    pub grantable: Vec<GrantRule>,
    pub tools: ToolRules,
    pub budgets: Vec<Budget>,
    /// What its agents keep of the host (`confinement:`).
    pub confinement: Confinement,
    /// Elevated roles the identity names: held only while an operator's
    /// elevation is active, never by default.
    pub elevatable: Vec<ElevatedRole>,
    pub loc: SourceLoc,
}

/// `confinement:` of an identity, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Confinement {
    /// Names from `crate::confine::DROPPED`.
    pub keep_capabilities: Vec<String>,
    pub api_tcp: bool,
    pub unscoped: bool,
    pub keep_inherited_sockets: bool,
    pub read_only_root: bool,
    pub writable: Vec<String>,
}

impl Identity {
    /// The elevated role `role`, if the identity may be elevated to it.
    pub fn elevatable(&self, role: &str) -> Option<&ElevatedRole> {
        self.elevatable.iter().find(|e| e.role == role)
    }
}

/// What an elevation to one role adds, for as long as it lasts: the rules
/// of the role and of every role it inherits.
#[derive(Clone, Debug, Default)]
pub struct ElevatedRole {
    pub role: String,
    /// The role and everything it inherits.
    pub closure: Vec<String>,
    /// Egress allow rules (CIDR only), enforced as kernel grants that carry
    /// the elevation's expiry.
    pub allow: Vec<NetRule>,
    pub tools: ToolRules,
    pub budgets: Vec<Budget>,
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

/// Where a grant may go: a CIDR or a host pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Cidr(Cidr),
    Host(HostPattern),
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cidr(c) => write!(f, "{c}"),
            Self::Host(h) => write!(f, "{h}"),
        }
    }
}

/// A `grantable` or `require_approval` egress rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantRule {
    pub rule: u32,
    pub destination: Destination,
    pub ports: Vec<PortRange>,
    pub protocol: Protocol,
    pub max_ttl: Duration,
}

#[derive(Clone, Debug, Default)]
pub struct ToolRules {
    pub allow: Vec<ToolRule>,
    pub deny: Vec<ToolRule>,
    pub require_approval: Vec<ToolRule>,
}

impl ToolRules {
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty() && self.require_approval.is_empty()
    }

    pub fn all(&self) -> impl Iterator<Item = &ToolRule> {
        self.deny
            .iter()
            .chain(&self.require_approval)
            .chain(&self.allow)
    }
}

#[derive(Clone, Debug)]
pub struct ToolRule {
    pub rule: u32,
    pub tool: Pattern,
    /// Empty = every action.
    pub actions: Vec<Pattern>,
    /// Empty = every resource.
    pub resources: Vec<Pattern>,
    pub when: Option<cel::CelExpr>,
    pub approval_if: Option<cel::CelExpr>,
}

impl ToolRule {
    /// Does the rule cover this call (ignoring its conditions)?
    pub fn covers(&self, tool: &str, action: &str, resource: &str) -> bool {
        self.tool.matches(tool)
            && (self.actions.is_empty() || self.actions.iter().any(|a| a.matches(action)))
            && (self.resources.is_empty() || self.resources.iter().any(|r| r.matches(resource)))
    }

    /// `covers`, in any letter case: for `deny` and `require_approval`
    /// rules, which must also hold where a service looks names up ignoring
    /// case (a `deny` of `account/acct_root` for `ACCT_ROOT`); matching
    /// more is the safe side of a restriction, and `allow` stays exact.
    pub fn covers_in_any_case(&self, tool: &str, action: &str, resource: &str) -> bool {
        self.tool.matches_ignoring_case(tool)
            && (self.actions.is_empty()
                || self.actions.iter().any(|a| a.matches_ignoring_case(action)))
            && (self.resources.is_empty()
                || self
                    .resources
                    .iter()
                    .any(|r| r.matches_ignoring_case(resource)))
    }
}

#[derive(Clone, Debug)]
pub struct Budget {
    pub rule: u32,
    pub id: String,
    pub tool: Pattern,
    pub actions: Vec<Pattern>,
    pub limit: f64,
    pub per: Window,
    /// What to add per call; `None` counts calls.
    pub sum: Option<cel::CelExpr>,
    pub unit: Option<String>,
}

impl Budget {
    pub fn covers(&self, tool: &str, action: &str) -> bool {
        self.tool.matches(tool)
            && (self.actions.is_empty() || self.actions.iter().any(|a| a.matches(action)))
    }
}

#[derive(Clone, Debug)]
pub struct ToolSchema {
    pub tool: Pattern,
    /// Empty = every action.
    pub actions: Vec<Pattern>,
    pub params: BTreeMap<String, ParamType>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    Allow,
    Deny,
    RequireApproval,
    Grantable,
    Budget,
}

impl RuleAction {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::RequireApproval => "require_approval",
            Self::Grantable => "grantable",
            Self::Budget => "budget",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleKind {
    Egress,
    Tool,
    Budget,
}

/// Who defines a rule (shared by all its rules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleOwner {
    Role(std::sync::Arc<str>),
    Identity(std::sync::Arc<str>),
}

impl fmt::Display for RuleOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Role(r) => write!(f, "role `{r}`"),
            Self::Identity(i) => write!(f, "identity `{i}`"),
        }
    }
}

/// What verdicts and events say about a rule.
#[derive(Clone, Debug)]
pub struct RuleInfo {
    /// Explicit `id:` or `FILE:N` (N-th rule of that file, from 1).
    pub id: String,
    pub owner: RuleOwner,
    pub kind: RuleKind,
    pub action: RuleAction,
    pub loc: SourceLoc,
}

/// A loaded policy and the warnings (lints) found on the way.
#[derive(Debug)]
pub struct Loaded {
    pub policy: Policy,
    pub warnings: Vec<Diagnostic>,
}

/// Load a policy file, or every `*.yaml`/`*.yml` file of a directory (in name
/// order, merged into one policy).
pub fn load(path: &Path) -> Result<Loaded, PolicyErrors> {
    let sources = source::read(path)?;
    validate::validate(&sources, validate::Locate::Everything)
}

/// Like `load`, for the daemon: policies written as JSON take a parser an
/// order of magnitude faster. Errors always say where; warnings of a JSON
/// policy that loads name the file only.
pub fn load_for_daemon(path: &Path) -> Result<Loaded, PolicyErrors> {
    let sources = source::read(path)?;
    validate::validate(&sources, validate::Locate::Errors)
}

/// The content hash a policy at `path` would have (its version without
/// the label), without parsing it: a watcher can tell an unchanged policy
/// from a new one for the cost of reading the files.
pub fn content_hash_of(path: &Path) -> Result<String, PolicyErrors> {
    Ok(source::content_hash(&source::read(path)?))
}

/// Validate policy text held in memory (`name` is used in messages).
pub fn load_str(name: &str, text: &str) -> Result<Loaded, PolicyErrors> {
    let sources = vec![source::Source {
        path: name.into(),
        text: text.to_string(),
    }];
    validate::validate(&sources, validate::Locate::Everything)
}

/// Validate a policy given as (path, content) pairs, as if read from disk.
pub fn load_sources(files: Vec<(std::path::PathBuf, String)>) -> Result<Loaded, PolicyErrors> {
    let sources: Vec<source::Source> = files
        .into_iter()
        .map(|(path, text)| source::Source { path, text })
        .collect();
    validate::validate(&sources, validate::Locate::Everything)
}

/// The policy files of a directory, in the order they are read.
pub fn policy_files(dir: &Path) -> Result<Vec<std::path::PathBuf>, PolicyErrors> {
    Ok(source::read(dir)?.into_iter().map(|s| s.path).collect())
}

/// Like `load`, with warnings promoted to errors (`--strict`).
pub fn load_strict(path: &Path) -> Result<Loaded, PolicyErrors> {
    let loaded = load(path)?;
    if loaded.warnings.is_empty() {
        Ok(loaded)
    } else {
        Err(PolicyErrors {
            diagnostics: loaded
                .warnings
                .into_iter()
                .map(|mut w| {
                    w.severity = Severity::Error;
                    w
                })
                .collect(),
        })
    }
}
