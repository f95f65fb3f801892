//! The policy file as written (YAML), before validation. Field names are the
//! contract with security teams' files: extend, never rename.
//!
//! Values that can be wrong in ways YAML cannot see are kept `Spanned`, so
//! validation can point at them. The JSON Schema (`palisade policy schema`)
//! is derived from these types, so editors and the parser never disagree.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::net::{PortRange, Protocol};

/// A value and where it was written. The parser's own spanned type keeps
/// two full locations (96 bytes); a 100,000-rule policy holds several per
/// rule while it is validated, so only what diagnostics use is kept.
#[derive(Clone, Debug, PartialEq)]
pub struct Spanned<T> {
    pub value: T,
    line: u32,
    column: u32,
    /// Byte offset in the file + 1; 0 when unknown.
    offset: u32,
}

impl<T> Spanned<T> {
    /// 1-based line; 0 when unknown (a value read by the JSON parser).
    pub fn line(&self) -> u32 {
        self.line
    }

    pub fn column(&self) -> u32 {
        self.column
    }

    pub fn byte_offset(&self) -> Option<usize> {
        (self.offset > 0).then(|| self.offset as usize - 1)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = serde_saphyr::Spanned::<T>::deserialize(d)?;
        let at = &s.referenced;
        let offset = at
            .span()
            .byte_offset()
            .and_then(|o| u32::try_from(o + 1).ok())
            .unwrap_or(0);
        Ok(Self {
            line: u32::try_from(at.line()).unwrap_or(u32::MAX),
            column: u32::try_from(at.column()).unwrap_or(u32::MAX),
            offset,
            value: s.value,
        })
    }
}

/// A policy file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyDoc {
    /// Format version; must be 1.
    #[schemars(with = "u32")]
    pub version: Spanned<u32>,
    /// A human label shown next to the content hash (e.g. a git tag).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub label: Option<Spanned<String>>,
    /// Named bundles of rules that identities take on.
    #[serde(default)]
    pub roles: Vec<RoleDoc>,
    /// The agent identities and what they may do.
    #[serde(default)]
    pub identities: Vec<IdentityDoc>,
    /// Parameter schemas of tools: conditions may only use declared
    /// parameters, and calls with undeclared parameters are denied.
    #[serde(default)]
    pub schemas: Vec<ToolSchemaDoc>,
    /// Context fields agent runtimes may send with a call, besides the
    /// built-ins (`time`, `hour`, `minute`, `weekday`, `date`).
    #[serde(default, deserialize_with = "unique_keys")]
    #[schemars(with = "BTreeMap<String, ParamType>")]
    pub context: BTreeMap<String, Spanned<ParamType>>,
    /// Upstream APIs and MCP servers that agents reach only through the
    /// daemon's L7 gateway (docs/gateway.md).
    #[serde(default)]
    pub services: Vec<super::service::doc::ServiceDoc>,
    /// People (or services) whose Ed25519-signed approvals a node applies
    /// without an operator on it (`palisade approve --signed`).
    #[serde(default)]
    pub approvers: Vec<ApproverDoc>,
}

/// An approver and the public key their signed approvals verify with.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproverDoc {
    /// The name signed approvals carry (`approver`), e.g. `alice` or
    /// `approvals-service`.
    #[schemars(with = "String")]
    pub id: Spanned<String>,
    /// Ed25519 public key: 32 bytes, base64 (`palisade keys approver`
    /// prints it).
    #[schemars(with = "String")]
    pub public_key: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A role: rules granted to every identity that has it, directly or through
/// inheritance.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleDoc {
    #[schemars(with = "String")]
    pub id: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Roles whose rules this role includes (e.g. operator inherits viewer).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub inherits: Vec<Spanned<String>>,
    /// Marks an elevated or break-glass role (reported as a KPI).
    #[serde(default)]
    pub elevated: bool,
    #[serde(default)]
    pub egress: EgressDoc,
    #[serde(default)]
    pub tools: ToolsDoc,
    #[serde(default)]
    pub budgets: Vec<BudgetDoc>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityDoc {
    /// Lowercase letters, digits, `-`, `_`, `.`; at most 63 characters.
    #[schemars(with = "String")]
    pub id: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub roles: Vec<Spanned<String>>,
    #[serde(default)]
    pub metadata: MetadataDoc,
    #[serde(default)]
    pub mode: Mode,
    /// Existing cgroups (systemd units, pods…) that belong to this identity.
    #[serde(default)]
    pub selectors: Vec<SelectorDoc>,
    /// Only `palisade exec` enrols this identity: it has no selectors on
    /// purpose (the linter does not ask for one).
    #[serde(default)]
    pub exec_only: bool,
    /// Rules of the identity itself: they add to (allow) or restrict (deny)
    /// what its roles grant.
    #[serde(default)]
    pub egress: EgressDoc,
    #[serde(default)]
    pub tools: ToolsDoc,
    #[serde(default)]
    pub budgets: Vec<BudgetDoc>,
    /// What the identity's agents keep of the host (defaults keep nothing).
    #[serde(default)]
    pub confinement: ConfinementDoc,
}

/// What an agent keeps that would let it reach around its guard; each is
/// off unless named here.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfinementDoc {
    /// Capabilities `palisade exec` leaves in the agent's bounding set
    /// (lowercase, without `cap_`), any of `confine::DROPPED`:
    /// `sys_admin`, `bpf`, `net_admin`, `net_raw`, `sys_ptrace`,
    /// `sys_module`, `sys_rawio`, `perfmon`, `dac_override`, `fowner`…
    /// Keeping `sys_ptrace` also lets the agent use ptrace and
    /// process_vm_readv/writev and pidfd_getfd on its own processes.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub keep_capabilities: Vec<Spanned<String>>,
    /// May the agent connect to the daemon's loopback TCP API (`api.tcp`)?
    /// Even then an enrolled process is never an operator.
    #[serde(default)]
    pub api_tcp: bool,
    /// Run the agent without Landlock scoping: it may then reach processes
    /// outside itself (ptrace-mode access such as `/proc/PID/mem`,
    /// signals, abstract Unix sockets), and exec runs it on hosts without
    /// Landlock instead of refusing.
    #[serde(default)]
    pub unscoped: bool,
    /// Keep network sockets and kernel handles (io_uring, BPF, pidfds)
    /// inherited from whoever ran `palisade exec`; they are judged as
    /// their creator's, not the agent's.
    #[serde(default)]
    pub keep_inherited_sockets: bool,
    /// Make every mount read-only for the agent (root included) except
    /// the paths in `writable`: host files such as /etc/cron.d cannot be
    /// used to start processes outside the agent.
    #[serde(default)]
    pub read_only_root: bool,
    /// With `read_only_root`: absolute paths the agent may still write.
    #[serde(default)]
    pub writable: Vec<String>,
}

#[derive(Debug, Default, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetadataDoc {
    #[serde(default)]
    pub org: Option<String>,
    #[serde(default)]
    pub tenant: Option<String>,
    /// Who answers for this agent (a team or a person).
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default, deserialize_with = "unique_keys")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
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

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SelectorDoc {
    /// Absolute path glob below the cgroup v2 root (`*`, `?`, `**`).
    #[schemars(with = "String")]
    pub cgroup: Spanned<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EgressDoc {
    #[serde(default)]
    #[schemars(with = "Vec<EgressRuleDoc>")]
    pub allow: Vec<Spanned<EgressRuleDoc>>,
    /// Deny wins over allow.
    #[serde(default)]
    #[schemars(with = "Vec<EgressRuleDoc>")]
    pub deny: Vec<Spanned<EgressRuleDoc>>,
    /// Destinations reachable only through an approved just-in-time grant.
    #[serde(default)]
    #[schemars(with = "Vec<EgressRuleDoc>")]
    pub require_approval: Vec<Spanned<EgressRuleDoc>>,
    /// Destinations the identity may grant itself for a while (`max_ttl`)
    /// through the API, without approval.
    #[serde(default)]
    #[schemars(with = "Vec<EgressRuleDoc>")]
    pub grantable: Vec<Spanned<EgressRuleDoc>>,
}

/// Fields most rules leave out are boxed: generated policies hold this
/// 100,000 times while they are validated.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EgressRuleDoc {
    /// Stable id cited by events; defaults to `file:N`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub id: Option<Box<Spanned<String>>>,
    #[serde(default)]
    pub description: Option<Box<str>>,
    /// An address or prefix, IPv4 or IPv6.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub cidr: Option<Spanned<String>>,
    /// Exact name or `*.suffix` (DNS-aware).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub host: Option<Box<Spanned<String>>>,
    /// Omitted = any port. A number or a range like "8000-9000".
    #[serde(default)]
    #[schemars(with = "Option<Vec<PortRange>>")]
    pub ports: Option<Vec<Spanned<PortRange>>>,
    #[serde(default)]
    #[schemars(with = "Option<Protocol>")]
    pub protocol: Option<Spanned<Protocol>>,
    /// Longest grant, for `grantable` and `require_approval` rules
    /// (e.g. "15m", "2h"; default 1h).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub max_ttl: Option<Box<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolsDoc {
    #[serde(default)]
    #[schemars(with = "Vec<ToolRuleDoc>")]
    pub allow: Vec<Spanned<ToolRuleDoc>>,
    /// Deny wins over everything else.
    #[serde(default)]
    #[schemars(with = "Vec<ToolRuleDoc>")]
    pub deny: Vec<Spanned<ToolRuleDoc>>,
    /// Calls that need a human's approval (when `when` holds).
    #[serde(default)]
    #[schemars(with = "Vec<ToolRuleDoc>")]
    pub require_approval: Vec<Spanned<ToolRuleDoc>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolRuleDoc {
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub id: Option<Spanned<String>>,
    #[serde(default)]
    pub description: Option<String>,
    /// Tool name (glob: `stripe`, `github.*`).
    #[schemars(with = "String")]
    pub tool: Spanned<String>,
    /// Action globs; omitted = every action (flagged by the linter).
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub actions: Option<Vec<Spanned<String>>>,
    /// Resource globs; omitted = every resource (flagged by the linter).
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub resources: Option<Vec<Spanned<String>>>,
    /// CEL condition over `params`, `context`, `identity`, `tool`, `action`,
    /// `resource`; the rule applies only when it is true.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub when: Option<Spanned<String>>,
    /// For allow rules: CEL condition under which the call needs approval.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub approval_if: Option<Spanned<String>>,
}

/// A budget or rate limit on an identity's calls of a tool.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetDoc {
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub id: Option<Spanned<String>>,
    #[schemars(with = "String")]
    pub tool: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub actions: Option<Vec<Spanned<String>>>,
    /// Most calls (or most of `sum`) per window.
    #[schemars(with = "f64")]
    pub limit: Spanned<f64>,
    #[schemars(with = "Window")]
    pub per: Spanned<Window>,
    /// CEL number to add up per call (e.g. `params.amount`); omitted = count
    /// calls (a rate limit).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub sum: Option<Spanned<String>>,
    /// What `sum` counts, for people (e.g. "USD").
    #[serde(default)]
    pub unit: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    Second,
    Minute,
    Hour,
    Day,
}

impl Window {
    pub const fn seconds(self) -> u64 {
        match self {
            Self::Second => 1,
            Self::Minute => 60,
            Self::Hour => 3600,
            Self::Day => 86_400,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Second => "second",
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }
}

/// Declared parameters of a tool's actions.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolSchemaDoc {
    #[schemars(with = "String")]
    pub tool: Spanned<String>,
    /// Action globs this schema covers; omitted = every action.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub actions: Option<Vec<Spanned<String>>>,
    #[serde(deserialize_with = "unique_keys")]
    #[schemars(with = "BTreeMap<String, ParamType>")]
    pub params: BTreeMap<String, Spanned<ParamType>>,
}

/// The type of a declared parameter or context field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Number,
    Integer,
    Bool,
    List,
    Map,
    Any,
}

impl ParamType {
    pub const fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Number => "number",
            Self::Integer => "integer",
            Self::Bool => "bool",
            Self::List => "list",
            Self::Map => "map",
            Self::Any => "any",
        }
    }

    /// Does a JSON value have this type?
    pub fn admits(self, v: &serde_json::Value) -> bool {
        use serde_json::Value as J;
        match self {
            Self::String => v.is_string(),
            Self::Number => v.is_number(),
            Self::Integer => v.is_i64() || v.is_u64(),
            Self::Bool => v.is_boolean(),
            Self::List => v.is_array(),
            Self::Map => v.is_object(),
            Self::Any => !matches!(v, J::Null),
        }
    }
}

/// A mapping whose keys must be unique, whichever parser reads it (the YAML
/// parser rejects duplicates; JSON parsers would keep the last silently).
fn unique_keys<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Visitor<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<V> {
        type Value = BTreeMap<String, V>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a mapping")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = map.next_entry::<String, V>()? {
                if out.contains_key(&k) {
                    return Err(serde::de::Error::custom(format!("duplicate key `{k}`")));
                }
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Visitor(std::marker::PhantomData))
}
