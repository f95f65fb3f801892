//! From parsed YAML to a `Policy`: every check that needs more than YAML
//! syntax, each error pointing at the offending value.
//!
//! Several files merge into one policy: schemas, context fields and roles
//! are collected from every file first, so a file may use a role another
//! file defines. Rules are numbered per file in a fixed order (roles, then
//! identities; within each: egress allow, deny, require_approval,
//! grantable; tool allow, deny, require_approval; budgets) that does not
//! depend on how the file is laid out or which parser read it.

mod elevated;
mod roles;
mod rules;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{
    Budget, Diagnostic, GrantRule, HostRule, Identity, Loaded, Metadata, NetRule, ParamType,
    Policy, PolicyErrors, PolicyVersion, Role, RuleAction, RuleInfo, RuleKind, RuleOwner, Severity,
    SourceLoc, ToolRules, ToolSchema,
    glob::Glob,
    lint,
    model::{BudgetDoc, EgressDoc, EgressRuleDoc, PolicyDoc, Spanned, ToolRuleDoc, ToolsDoc},
    source::{self, Source},
};
use roles::DeclaredRole;
use rules::{Ctx, Target};

/// The only policy format version this daemon reads.
const SUPPORTED_VERSION: u32 = 1;

/// How much position information a caller needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locate {
    /// Every diagnostic and every rule carries its line and column.
    Everything,
    /// Errors carry positions; a policy that loads may have unlocated
    /// warnings and rules (the daemon's reload path, where speed matters).
    Errors,
}

pub(super) fn validate(sources: &[Source], locate: Locate) -> Result<Loaded, PolicyErrors> {
    // Fast path: policies written as JSON (YAML's subset, the usual form of
    // generated policies) parse an order of magnitude faster with
    // serde_json. It knows no positions, so errors send the same text through
    // the YAML parser again so that the report says where.
    if locate == Locate::Errors
        && let Some(docs) = parse_json(sources)
        && let Ok(loaded) = build(sources, docs)
    {
        return Ok(loaded);
    }
    let mut diags = Vec::new();
    let mut docs: Vec<(&Source, PolicyDoc)> = Vec::new();
    for s in sources {
        match serde_saphyr::from_str_with_options::<PolicyDoc>(
            &s.text,
            source::parse_options(&s.text),
        ) {
            Ok(doc) => docs.push((s, doc)),
            Err(e) => diags.push(Diagnostic::from_yaml(&s.path, &e)),
        }
    }
    if !diags.is_empty() {
        return Err(PolicyErrors { diagnostics: diags });
    }
    build(sources, docs)
}

/// Every source parsed as JSON, or `None` if any is not JSON.
fn parse_json(sources: &[Source]) -> Option<Vec<(&Source, PolicyDoc)>> {
    sources
        .iter()
        .map(|s| {
            if !s.text.trim_start().starts_with('{') {
                return None;
            }
            serde_json::from_str::<PolicyDoc>(&s.text)
                .ok()
                .map(|d| (s, d))
        })
        .collect()
}

fn build<'s>(
    sources: &'s [Source],
    parsed: Vec<(&'s Source, PolicyDoc)>,
) -> Result<Loaded, PolicyErrors> {
    let mut diags = Vec::new();
    let mut docs: Vec<(&Source, PolicyDoc)> = Vec::new();
    for (s, doc) in parsed {
        if doc.version.value == SUPPORTED_VERSION {
            docs.push((s, doc));
        } else {
            diags.push(
                Diagnostic::error(
                    SourceLoc::of(&s.path, &doc.version),
                    format!(
                        "unsupported policy version {} (this daemon reads version {SUPPORTED_VERSION})",
                        doc.version.value
                    ),
                )
                .with_hint("set `version: 1`"),
            );
        }
    }

    let mut b = Builder::default();
    for (s, doc) in &docs {
        b.declare(s, doc, &mut diags);
    }
    let closures = roles::resolve(&b.declared_roles, &mut diags);
    for (s, doc) in &docs {
        b.rules(s, doc, &mut diags);
    }
    for (s, doc) in &docs {
        b.identities(s, doc, &mut diags);
    }
    let mut services = super::service::Declared::default();
    for (s, doc) in &docs {
        services.add(&s.path, &doc.services, &b.schemas, &mut diags);
    }
    b.check_elevated(&closures, &mut diags);
    if diags.iter().any(|d| d.severity == Severity::Error) {
        diags.retain(|d| d.severity == Severity::Error);
        diags.sort_by(|a, b| a.loc.cmp(&b.loc));
        return Err(PolicyErrors { diagnostics: diags });
    }
    let label = docs
        .iter()
        .find_map(|(_, d)| d.label.as_ref().map(|l| l.value.clone()));
    let mut policy = b.finish(&closures, source::content_hash(sources), label);
    policy.services = services.services;
    let bypasses = super::service::only_path(&policy);
    if !bypasses.is_empty() {
        return Err(PolicyErrors {
            diagnostics: bypasses,
        });
    }
    let mut warnings = lint::run(&policy);
    warnings.sort_by(|a, b| a.loc.cmp(&b.loc));
    Ok(Loaded { policy, warnings })
}

/// Rules defined by one role or identity, before roles are merged in.
#[derive(Default, Clone)]
struct RuleSet {
    allow: Vec<NetRule>,
    deny: Vec<NetRule>,
    allow_hosts: Vec<HostRule>,
    deny_hosts: Vec<HostRule>,
    approval_egress: Vec<GrantRule>,
    grantable: Vec<GrantRule>,
    tools: ToolRules,
    budgets: Vec<Budget>,
}

impl RuleSet {
    fn extend(&mut self, other: &RuleSet) {
        self.allow.extend(other.allow.iter().cloned());
        self.deny.extend(other.deny.iter().cloned());
        self.allow_hosts.extend(other.allow_hosts.iter().cloned());
        self.deny_hosts.extend(other.deny_hosts.iter().cloned());
        self.approval_egress
            .extend(other.approval_egress.iter().cloned());
        self.grantable.extend(other.grantable.iter().cloned());
        self.tools.allow.extend(other.tools.allow.iter().cloned());
        self.tools.deny.extend(other.tools.deny.iter().cloned());
        self.tools
            .require_approval
            .extend(other.tools.require_approval.iter().cloned());
        self.budgets.extend(other.budgets.iter().cloned());
    }

    /// `extend` without copies, for rules owned by one identity.
    fn append(&mut self, mut other: RuleSet) {
        if self.is_empty() {
            *self = other;
            return;
        }
        self.allow.append(&mut other.allow);
        self.deny.append(&mut other.deny);
        self.allow_hosts.append(&mut other.allow_hosts);
        self.deny_hosts.append(&mut other.deny_hosts);
        self.approval_egress.append(&mut other.approval_egress);
        self.grantable.append(&mut other.grantable);
        self.tools.allow.append(&mut other.tools.allow);
        self.tools.deny.append(&mut other.tools.deny);
        self.tools
            .require_approval
            .append(&mut other.tools.require_approval);
        self.budgets.append(&mut other.budgets);
    }

    fn is_empty(&self) -> bool {
        self.allow.is_empty()
            && self.deny.is_empty()
            && self.allow_hosts.is_empty()
            && self.deny_hosts.is_empty()
            && self.approval_egress.is_empty()
            && self.grantable.is_empty()
            && self.tools.is_empty()
            && self.budgets.is_empty()
    }
}

struct DeclaredIdentity {
    identity: Identity,
    /// Which document and position it came from (the first definition).
    origin: (std::path::PathBuf, usize),
}

#[derive(Default)]
struct Builder {
    schemas: Vec<ToolSchema>,
    context_fields: BTreeMap<String, ParamType>,
    context_locs: HashMap<String, SourceLoc>,
    declared_roles: BTreeMap<String, DeclaredRole>,
    /// (file, index in that file's `roles`) of each role's first definition.
    role_origins: BTreeMap<String, (std::path::PathBuf, usize)>,
    role_info: BTreeMap<String, (Option<String>, bool)>,
    role_rules: BTreeMap<String, RuleSet>,
    identities: Vec<DeclaredIdentity>,
    identity_locs: HashMap<String, SourceLoc>,
    identity_rules: BTreeMap<String, RuleSet>,
    rules: Vec<RuleInfo>,
    summaries: super::packed::Packed,
    rule_ids: HashMap<String, SourceLoc>,
    approvers: Vec<super::Approver>,
}

pub(in crate::policy) fn name_error(kind: &str, id: &str) -> Option<String> {
    let valid_chars = id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if id.is_empty() {
        Some(format!("{kind} id is empty"))
    } else if id.len() > 63 {
        Some(format!("{kind} id `{id}` is longer than 63 characters"))
    } else if !valid_chars || !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        Some(format!(
            "{kind} id `{id}` may use only lowercase letters, digits, `-`, `_` and `.`, starting with a letter or digit"
        ))
    } else {
        None
    }
}

/// A rule-bearing item of a file.
enum Item<'d> {
    Egress(RuleAction, &'d Spanned<EgressRuleDoc>),
    Tool(RuleAction, &'d Spanned<ToolRuleDoc>),
    Budget(&'d BudgetDoc),
}

fn items<'d>(
    egress: &'d EgressDoc,
    tools: &'d ToolsDoc,
    budgets: &'d [BudgetDoc],
) -> Vec<Item<'d>> {
    let mut v = Vec::new();
    for (action, list) in [
        (RuleAction::Allow, &egress.allow),
        (RuleAction::Deny, &egress.deny),
        (RuleAction::RequireApproval, &egress.require_approval),
        (RuleAction::Grantable, &egress.grantable),
    ] {
        v.extend(list.iter().map(|r| Item::Egress(action, r)));
    }
    for (action, list) in [
        (RuleAction::Allow, &tools.allow),
        (RuleAction::Deny, &tools.deny),
        (RuleAction::RequireApproval, &tools.require_approval),
    ] {
        v.extend(list.iter().map(|r| Item::Tool(action, r)));
    }
    v.extend(budgets.iter().map(Item::Budget));
    v
}

impl Builder {
    /// Pass 1: schemas, context fields, roles and identities (no rules yet).
    fn declare(&mut self, s: &Source, doc: &PolicyDoc, diags: &mut Vec<Diagnostic>) {
        let file = s.path.as_path();
        let mut ctx = Ctx {
            file,
            text: &s.text,
            schemas: &[],
            context_fields: &BTreeMap::new(),
            diags,
        };
        let schemas: Vec<ToolSchema> = doc.schemas.iter().filter_map(|d| ctx.schema(d)).collect();
        self.schemas.extend(schemas);
        for (name, ty) in &doc.context {
            let loc = SourceLoc::of(file, ty);
            if super::cel::CONTEXT_BUILTINS.contains(&name.as_str()) {
                diags.push(Diagnostic::error(
                    loc,
                    format!("`{name}` is a built-in context field; it cannot be redeclared"),
                ));
            } else if let Some(prev) = self.context_locs.get(name) {
                if self.context_fields.get(name) != Some(&ty.value) {
                    diags.push(Diagnostic::error(
                        loc,
                        format!("context field `{name}` is declared with another type at {prev}"),
                    ));
                }
            } else {
                self.context_locs.insert(name.clone(), loc);
                self.context_fields.insert(name.clone(), ty.value);
            }
        }
        for a in &doc.approvers {
            self.approver(file, a, diags);
        }
        for (pos, role) in doc.roles.iter().enumerate() {
            let loc = SourceLoc::of(file, &role.id);
            if let Some(msg) = name_error("role", &role.id.value) {
                diags.push(Diagnostic::error(loc.clone(), msg));
            }
            if let Some(prev) = self.declared_roles.get(&role.id.value) {
                diags.push(Diagnostic::error(
                    loc,
                    format!(
                        "role `{}` is already defined at {}",
                        role.id.value, prev.loc
                    ),
                ));
                continue;
            }
            self.declared_roles.insert(
                role.id.value.clone(),
                DeclaredRole {
                    loc,
                    inherits: role
                        .inherits
                        .iter()
                        .map(|p| (p.value.clone(), SourceLoc::of(file, p)))
                        .collect(),
                },
            );
            self.role_info.insert(
                role.id.value.clone(),
                (role.description.clone(), role.elevated),
            );
            self.role_origins
                .insert(role.id.value.clone(), (s.path.clone(), pos));
        }
        for (pos, ident) in doc.identities.iter().enumerate() {
            let loc = SourceLoc::of(file, &ident.id);
            if let Some(msg) = name_error("identity", &ident.id.value) {
                diags.push(Diagnostic::error(loc.clone(), msg));
            }
            if let Some(prev) = self.identity_locs.get(&ident.id.value) {
                diags.push(Diagnostic::error(
                    loc,
                    format!("identity `{}` is already defined at {prev}", ident.id.value),
                ));
                continue;
            }
            self.identity_locs
                .insert(ident.id.value.clone(), loc.clone());
            let mut selectors = Vec::new();
            for sel in &ident.selectors {
                match Glob::parse(&sel.cgroup.value) {
                    Ok(g) => selectors.push(g),
                    Err(e) => diags.push(Diagnostic::error(SourceLoc::of(file, &sel.cgroup), e)),
                }
            }
            let mut keep_capabilities = Vec::new();
            for cap in &ident.confinement.keep_capabilities {
                let name = cap.value.trim().to_ascii_lowercase();
                let name = name.strip_prefix("cap_").unwrap_or(&name).to_string();
                if crate::confine::capability(&name).is_none() {
                    diags.push(Diagnostic::error(
                        SourceLoc::of(file, cap),
                        format!(
                            "`{}` is not a capability `palisade exec` drops; name one of: {}",
                            cap.value,
                            crate::confine::DROPPED
                                .iter()
                                .map(|(n, _)| *n)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                } else if !keep_capabilities.contains(&name) {
                    keep_capabilities.push(name);
                }
            }
            if ident.exec_only && !ident.selectors.is_empty() {
                diags.push(
                    Diagnostic::error(
                        loc.clone(),
                        format!(
                            "identity `{}` is `exec_only` but has selectors",
                            ident.id.value
                        ),
                    )
                    .with_hint("remove `exec_only: true`, or the selectors"),
                );
            }
            let m = &ident.metadata;
            self.identities.push(DeclaredIdentity {
                origin: (s.path.clone(), pos),
                identity: Identity {
                    id: ident.id.value.clone(),
                    description: ident.description.clone(),
                    mode: ident.mode,
                    metadata: Metadata {
                        org: m.org.clone(),
                        tenant: m.tenant.clone(),
                        owner: m.owner.clone(),
                        labels: m.labels.clone(),
                    },
                    roles: ident.roles.iter().map(|r| r.value.clone()).collect(),
                    effective_roles: Vec::new(),
                    selectors,
                    exec_only: ident.exec_only,
                    allow: Vec::new(),
                    deny: Vec::new(),
                    allow_hosts: Vec::new(),
                    deny_hosts: Vec::new(),
                    approval_egress: Vec::new(),
                    grantable: Vec::new(),
                    tools: ToolRules::default(),
                    budgets: Vec::new(),
                    confinement: crate::policy::Confinement {
                        keep_capabilities,
                        api_tcp: ident.confinement.api_tcp,
                        unscoped: ident.confinement.unscoped,
                        keep_inherited_sockets: ident.confinement.keep_inherited_sockets,
                        read_only_root: ident.confinement.read_only_root,
                        writable: ident.confinement.writable.clone(),
                    },
                    elevatable: Vec::new(),
                    loc,
                },
            });
        }
    }

    /// An approver of signed approvals: a unique id and a 32-byte key.
    fn approver(
        &mut self,
        file: &std::path::Path,
        a: &super::model::ApproverDoc,
        diags: &mut Vec<Diagnostic>,
    ) {
        use base64::Engine as _;
        let loc = SourceLoc::of(file, &a.id);
        if let Some(msg) = name_error("approver", &a.id.value) {
            diags.push(Diagnostic::error(loc.clone(), msg));
        }
        if let Some(prev) = self.approvers.iter().find(|p| p.id == a.id.value) {
            diags.push(Diagnostic::error(
                loc,
                format!(
                    "approver `{}` is already defined at {}",
                    a.id.value, prev.loc
                ),
            ));
            return;
        }
        let text = a.public_key.value.trim().trim_end_matches('=');
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text));
        match bytes.ok().and_then(|b| <[u8; 32]>::try_from(b).ok()) {
            Some(public_key) => self.approvers.push(super::Approver {
                id: a.id.value.clone(),
                public_key,
                loc,
            }),
            None => diags.push(
                Diagnostic::error(
                    SourceLoc::of(file, &a.public_key),
                    format!(
                        "approver `{}`: public_key is not a base64 Ed25519 public key (32 bytes)",
                        a.id.value
                    ),
                )
                .with_hint("`palisade keys approver --out KEY` prints the public key to put here"),
            ),
        }
    }

    /// Pass 2: number and parse every rule of roles and identities.
    fn rules(&mut self, s: &Source, doc: &PolicyDoc, diags: &mut Vec<Diagnostic>) {
        let file = s.path.as_path();
        let file_name = file.file_name().map_or_else(
            || file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut all: Vec<(RuleOwner, Item<'_>)> = Vec::new();
        for (pos, role) in doc.roles.iter().enumerate() {
            if self.role_origins.get(&role.id.value) == Some(&(s.path.clone(), pos)) {
                let owner = RuleOwner::Role(role.id.value.as_str().into());
                all.extend(
                    items(&role.egress, &role.tools, &role.budgets)
                        .into_iter()
                        .map(|i| (owner.clone(), i)),
                );
            }
        }
        for (pos, ident) in doc.identities.iter().enumerate() {
            let first = self
                .identities
                .iter()
                .any(|d| d.origin == (s.path.clone(), pos));
            if first {
                let owner = RuleOwner::Identity(ident.id.value.as_str().into());
                all.extend(
                    items(&ident.egress, &ident.tools, &ident.budgets)
                        .into_iter()
                        .map(|i| (owner.clone(), i)),
                );
            }
        }

        let schemas = std::mem::take(&mut self.schemas);
        let context_fields = std::mem::take(&mut self.context_fields);
        let mut ctx = Ctx {
            file,
            text: &s.text,
            schemas: &schemas,
            context_fields: &context_fields,
            diags,
        };
        let shared: std::sync::Arc<std::path::Path> = std::sync::Arc::from(file);
        for (n, (owner, item)) in all.into_iter().enumerate() {
            let (explicit, loc) = match &item {
                Item::Egress(_, r) => (r.value.id.as_deref(), SourceLoc::in_file(&shared, *r)),
                Item::Tool(_, r) => (r.value.id.as_ref(), SourceLoc::in_file(&shared, *r)),
                Item::Budget(b) => (b.id.as_ref(), SourceLoc::in_file(&shared, &b.tool)),
            };
            let id = explicit.map_or_else(|| format!("{file_name}:{}", n + 1), |e| e.value.clone());
            if let Some(prev) = self.rule_ids.get(&id) {
                let at = explicit.map_or(loc.clone(), |e| SourceLoc::of(file, e));
                ctx.diags.push(Diagnostic::error(
                    at,
                    format!("rule id `{id}` is already used at {prev}"),
                ));
                continue;
            }
            self.rule_ids.insert(id.clone(), loc.clone());
            let index = self.rules.len() as u32;
            let set = match &owner {
                RuleOwner::Role(r) => self.role_rules.entry(r.to_string()).or_default(),
                RuleOwner::Identity(i) => self.identity_rules.entry(i.to_string()).or_default(),
            };
            let (kind, action, summary) = match item {
                Item::Egress(action, r) => {
                    let summary = egress_summary(action, &r.value);
                    match action {
                        RuleAction::Allow | RuleAction::Deny => {
                            match ctx.egress(&loc, &r.value, index) {
                                Some(Target::Net(n)) if action == RuleAction::Allow => {
                                    set.allow.push(n)
                                }
                                Some(Target::Net(n)) => set.deny.push(n),
                                Some(Target::Host(h)) if action == RuleAction::Allow => {
                                    set.allow_hosts.push(h)
                                }
                                Some(Target::Host(h)) => set.deny_hosts.push(h),
                                None => continue,
                            }
                        }
                        _ => match ctx.grant(&loc, &r.value, index) {
                            Some(g) if action == RuleAction::Grantable => set.grantable.push(g),
                            Some(g) => set.approval_egress.push(g),
                            None => continue,
                        },
                    }
                    (RuleKind::Egress, action, summary)
                }
                Item::Tool(action, r) => {
                    let Some(rule) = ctx.tool(&r.value, index, action == RuleAction::Allow) else {
                        continue;
                    };
                    let summary = tool_summary(action, &r.value);
                    match action {
                        RuleAction::Allow => set.tools.allow.push(rule),
                        RuleAction::Deny => set.tools.deny.push(rule),
                        _ => set.tools.require_approval.push(rule),
                    }
                    (RuleKind::Tool, action, summary)
                }
                Item::Budget(b) => {
                    let Some(budget) = ctx.budget(b, index, id.clone()) else {
                        continue;
                    };
                    let unit = b
                        .unit
                        .as_deref()
                        .map(|u| format!(" {u}"))
                        .unwrap_or_default();
                    let what = if b.sum.is_some() {
                        unit
                    } else {
                        " calls".into()
                    };
                    let summary = format!(
                        "budget {} {}{what} per {}",
                        b.tool.value,
                        b.limit.value,
                        b.per.value.name()
                    );
                    set.budgets.push(budget);
                    (RuleKind::Budget, RuleAction::Budget, summary)
                }
            };
            self.rules.push(RuleInfo {
                id,
                owner,
                kind,
                action,
                loc,
            });
            self.summaries.push(&summary);
        }
        self.schemas = schemas;
        self.context_fields = context_fields;
    }

    /// Pass 3: identities' role references.
    fn identities(&mut self, s: &Source, doc: &PolicyDoc, diags: &mut Vec<Diagnostic>) {
        for ident in &doc.identities {
            for role in &ident.roles {
                if !self.declared_roles.contains_key(&role.value) {
                    diags.push(
                        Diagnostic::error(
                            SourceLoc::of(&s.path, role),
                            format!("unknown role `{}`", role.value),
                        )
                        .with_hint(roles::hint_for(&role.value, self.declared_roles.keys())),
                    );
                }
            }
        }
    }

    fn finish(
        mut self,
        closures: &BTreeMap<String, Vec<String>>,
        hash: String,
        label: Option<String>,
    ) -> Policy {
        let roles: Vec<Role> = self
            .declared_roles
            .iter()
            .map(|(id, d)| {
                let (description, elevated) = self.role_info.get(id).cloned().unwrap_or_default();
                Role {
                    id: id.clone(),
                    description,
                    inherits: d.inherits.iter().map(|(p, _)| p.clone()).collect(),
                    closure: closures.get(id).cloned().unwrap_or_default(),
                    elevated,
                    loc: d.loc.clone(),
                }
            })
            .collect();
        let mut identity_rules = std::mem::take(&mut self.identity_rules);
        let identities = std::mem::take(&mut self.identities)
            .into_iter()
            .map(|d| {
                let mut ident = d.identity;
                let mut effective: BTreeSet<String> = BTreeSet::new();
                for r in &ident.roles {
                    // Elevated roles are held only through an elevation.
                    if !self.is_elevated(r) {
                        effective.extend(closures.get(r).cloned().unwrap_or_default());
                    }
                }
                ident.elevatable = self.elevatable(&ident.roles, closures);
                let mut set = RuleSet::default();
                for r in &effective {
                    if let Some(rules) = self.role_rules.get(r) {
                        set.extend(rules);
                    }
                }
                if let Some(own) = identity_rules.remove(&ident.id) {
                    set.append(own);
                }
                ident.effective_roles = effective.into_iter().collect();
                ident.allow = set.allow;
                ident.deny = set.deny;
                ident.allow_hosts = set.allow_hosts;
                ident.deny_hosts = set.deny_hosts;
                ident.approval_egress = set.approval_egress;
                ident.grantable = set.grantable;
                ident.tools = set.tools;
                ident.budgets = set.budgets;
                ident
            })
            .collect();
        Policy {
            version: PolicyVersion { hash, label },
            roles,
            identities,
            rules: self.rules,
            summaries: {
                let mut s = self.summaries;
                s.shrink_to_fit();
                s
            },
            schemas: self.schemas,
            context_fields: self.context_fields,
            services: Vec::new(),
            approvers: self.approvers,
        }
    }
}

fn egress_summary(action: RuleAction, r: &EgressRuleDoc) -> String {
    let dest = r
        .cidr
        .as_ref()
        .or(r.host.as_deref())
        .map_or("?", |d| d.value.as_str());
    let proto = r.protocol.as_ref().map_or("any", |p| p.value.name());
    let ports = r.ports.as_ref().map_or_else(
        || "any port".to_string(),
        |p| {
            p.iter()
                .map(|x| x.value.to_string())
                .collect::<Vec<_>>()
                .join(",")
        },
    );
    format!("{} {dest} {proto}/{ports}", action.name())
}

fn tool_summary(action: RuleAction, r: &ToolRuleDoc) -> String {
    let actions = r.actions.as_ref().map_or_else(
        || "*".to_string(),
        |a| {
            a.iter()
                .map(|x| x.value.clone())
                .collect::<Vec<_>>()
                .join(",")
        },
    );
    let mut s = format!("{} {}.{actions}", action.name(), r.tool.value);
    if let Some(w) = &r.when {
        s.push_str(&format!(" when {}", w.value));
    }
    if let Some(a) = &r.approval_if {
        s.push_str(&format!(" approval_if {}", a.value));
    }
    s
}
