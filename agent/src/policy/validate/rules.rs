//! One rule at a time: from its YAML form to its validated form, with every
//! problem reported at the offending value.

use std::{collections::BTreeMap, path::Path, time::Duration};

use super::super::{
    Budget, Destination, Diagnostic, GrantRule, HostPattern, HostRule, NetRule, ParamType, Pattern,
    SourceLoc, ToolRule, ToolSchema,
    cel::{CelExpr, Scope},
    model::{BudgetDoc, EgressRuleDoc, Spanned, ToolRuleDoc, ToolSchemaDoc},
    net::{self, Cidr, PortRange, Protocol},
};

/// Longest just-in-time grant a policy may allow.
const MAX_GRANT_TTL: Duration = Duration::from_secs(7 * 86_400);
const DEFAULT_GRANT_TTL: Duration = Duration::from_secs(3600);

/// What every rule parser needs: where it is, and what CEL may reference.
pub struct Ctx<'a> {
    pub file: &'a Path,
    pub text: &'a str,
    pub schemas: &'a [ToolSchema],
    pub context_fields: &'a BTreeMap<String, ParamType>,
    pub diags: &'a mut Vec<Diagnostic>,
}

pub enum Target {
    Net(NetRule),
    Host(HostRule),
}

impl Ctx<'_> {
    fn at<T>(&self, s: &Spanned<T>) -> SourceLoc {
        SourceLoc::of(self.file, s)
    }

    fn error(&mut self, loc: SourceLoc, msg: impl Into<String>) {
        self.diags.push(Diagnostic::error(loc, msg));
    }

    fn ports(
        &mut self,
        rule_loc: &SourceLoc,
        ports: Option<&Vec<Spanned<PortRange>>>,
    ) -> Vec<PortRange> {
        match ports {
            None => vec![PortRange::ALL],
            Some(list) if list.is_empty() => {
                self.diags.push(
                    Diagnostic::error(
                        rule_loc.clone(),
                        "`ports` is an empty list, which matches nothing",
                    )
                    .with_hint("omit `ports` to match any port"),
                );
                vec![]
            }
            Some(list) => net::coalesce(list.iter().map(|p| p.value).collect()),
        }
    }

    fn patterns(&mut self, list: Option<&Vec<Spanned<String>>>) -> Vec<Pattern> {
        let mut out = Vec::new();
        for p in list.into_iter().flatten() {
            match Pattern::parse(&p.value) {
                Ok(pat) => out.push(pat),
                Err(e) => {
                    let loc = self.at(p);
                    self.error(loc, e);
                }
            }
        }
        out
    }

    /// Compile a CEL condition, pointing errors at the right column.
    fn cel(&mut self, expr: &Spanned<String>, scope: &Scope<'_>) -> Option<CelExpr> {
        match CelExpr::compile(&expr.value, scope) {
            Ok(e) => Some(e),
            Err(err) => {
                let mut loc = self.at(expr);
                // Inside a one-line scalar, point at the column in the file.
                let quoted = expr
                    .byte_offset()
                    .and_then(|o| self.text.get(o..))
                    .and_then(|rest| rest.chars().next())
                    .map(|c| c == '\'' || c == '"');
                if let Some(quoted) = quoted
                    && !expr.value.contains('\n')
                {
                    loc.column += u32::from(quoted) + err.column.saturating_sub(1) as u32;
                }
                self.diags.push(
                    Diagnostic::error(loc, format!("CEL: {} in `{}`", err.message, expr.value))
                        .with_hint("conditions are CEL over params, context, identity, tool, action, resource"),
                );
                None
            }
        }
    }

    /// The declared parameters for a rule on `tool` / `actions`, when one
    /// schema covers them all.
    fn params_for(
        &self,
        tool: &Pattern,
        actions: &[Pattern],
    ) -> Option<&BTreeMap<String, ParamType>> {
        if !tool.is_literal() {
            return None;
        }
        let schema = self
            .schemas
            .iter()
            .find(|s| s.tool.matches(tool.as_str()))?;
        let covered = if actions.is_empty() {
            schema.actions.is_empty()
        } else {
            actions.iter().all(|a| {
                a.is_literal()
                    && (schema.actions.is_empty()
                        || schema.actions.iter().any(|s| s.matches(a.as_str())))
            })
        };
        covered.then_some(&schema.params)
    }

    pub fn egress(
        &mut self,
        rule_loc: &SourceLoc,
        doc: &EgressRuleDoc,
        index: u32,
    ) -> Option<Target> {
        let before = self.diags.len();
        let ports = self.ports(rule_loc, doc.ports.as_ref());
        let protocol = doc.protocol.as_ref().map_or(Protocol::Any, |p| p.value);
        if let Some(ttl) = &doc.max_ttl {
            let loc = self.at(ttl);
            self.error(
                loc,
                "`max_ttl` applies to `grantable` and `require_approval` rules only",
            );
        }
        let dest = self.destination(rule_loc, doc)?;
        if self.diags.len() > before {
            return None;
        }
        Some(match dest {
            Destination::Cidr(cidr) => Target::Net(NetRule {
                rule: index,
                cidr,
                ports,
                protocol,
            }),
            Destination::Host(pattern) => Target::Host(HostRule {
                rule: index,
                pattern,
                ports,
                protocol,
            }),
        })
    }

    pub fn grant(
        &mut self,
        rule_loc: &SourceLoc,
        doc: &EgressRuleDoc,
        index: u32,
    ) -> Option<GrantRule> {
        let before = self.diags.len();
        let ports = self.ports(rule_loc, doc.ports.as_ref());
        let protocol = doc.protocol.as_ref().map_or(Protocol::Any, |p| p.value);
        let max_ttl = match &doc.max_ttl {
            None => DEFAULT_GRANT_TTL,
            Some(t) => match humantime::parse_duration(&t.value) {
                Ok(d) if d.is_zero() => {
                    let loc = self.at(t);
                    self.error(loc, "`max_ttl` must be longer than zero");
                    d
                }
                Ok(d) if d > MAX_GRANT_TTL => {
                    let loc = self.at(t);
                    self.error(
                        loc,
                        format!("`max_ttl` {} is longer than the 7-day limit", t.value),
                    );
                    d
                }
                Ok(d) => d,
                Err(e) => {
                    let loc = self.at(t);
                    self.diags.push(
                        Diagnostic::error(loc, format!("`max_ttl` `{}`: {e}", t.value))
                            .with_hint("write e.g. \"15m\", \"2h\", \"1d\""),
                    );
                    DEFAULT_GRANT_TTL
                }
            },
        };
        let destination = self.destination(rule_loc, doc)?;
        (self.diags.len() == before).then_some(GrantRule {
            rule: index,
            destination,
            ports,
            protocol,
            max_ttl,
        })
    }

    fn destination(&mut self, rule_loc: &SourceLoc, doc: &EgressRuleDoc) -> Option<Destination> {
        match (&doc.cidr, &doc.host) {
            (Some(cidr), None) => match cidr.value.parse::<Cidr>() {
                Ok(c) => Some(Destination::Cidr(c)),
                Err(e) => {
                    let loc = self.at(cidr);
                    self.error(loc, e);
                    None
                }
            },
            (None, Some(host)) => match HostPattern::parse(&host.value) {
                Ok(p) => Some(Destination::Host(p)),
                Err(e) => {
                    let loc = self.at(host);
                    self.error(loc, e);
                    None
                }
            },
            (Some(_), Some(host)) => {
                let loc = self.at(host);
                self.diags.push(
                    Diagnostic::error(loc, "a rule names either `cidr` or `host`, not both")
                        .with_hint("split it into two rules"),
                );
                None
            }
            (None, None) => {
                self.diags.push(
                    Diagnostic::error(rule_loc.clone(), "an egress rule needs `cidr` or `host`")
                        .with_hint("e.g. `- cidr: 10.20.0.0/16` or `- host: api.example.com`"),
                );
                None
            }
        }
    }

    pub fn tool(&mut self, doc: &ToolRuleDoc, index: u32, is_allow: bool) -> Option<ToolRule> {
        let before = self.diags.len();
        let tool = match Pattern::parse(&doc.tool.value) {
            Ok(p) => Some(p),
            Err(e) => {
                let loc = self.at(&doc.tool);
                self.error(loc, e);
                None
            }
        };
        let actions = self.patterns(doc.actions.as_ref());
        let resources = self.patterns(doc.resources.as_ref());
        if let Some(list) = &doc.actions
            && list.is_empty()
        {
            let loc = self.at(&doc.tool);
            self.error(
                loc,
                "`actions` is an empty list, which matches nothing; omit it to match every action",
            );
        }
        let tool = tool?;
        let owner = match actions.as_slice() {
            [one] => format!("{tool}.{one}"),
            _ => tool.to_string(),
        };
        let context_fields = self.context_fields;
        let params = self.params_for(&tool, &actions).cloned();
        let scope = Scope {
            context_fields,
            params: params.as_ref(),
            params_owner: &owner,
        };
        let when = doc.when.as_ref().and_then(|w| self.cel(w, &scope));
        let approval_if = match &doc.approval_if {
            Some(a) if !is_allow => {
                let loc = self.at(a);
                self.error(
                    loc,
                    "`approval_if` belongs in `allow` rules; put the condition in `when` here",
                );
                None
            }
            Some(a) => self.cel(a, &scope),
            None => None,
        };
        (self.diags.len() == before).then_some(ToolRule {
            rule: index,
            tool,
            actions,
            resources,
            when,
            approval_if,
        })
    }

    pub fn budget(&mut self, doc: &BudgetDoc, index: u32, id: String) -> Option<Budget> {
        let before = self.diags.len();
        let tool = match Pattern::parse(&doc.tool.value) {
            Ok(p) => Some(p),
            Err(e) => {
                let loc = self.at(&doc.tool);
                self.error(loc, e);
                None
            }
        };
        let actions = self.patterns(doc.actions.as_ref());
        if !(doc.limit.value.is_finite() && doc.limit.value > 0.0) {
            let loc = self.at(&doc.limit);
            self.error(
                loc,
                format!(
                    "budget `limit` must be a positive number, not {}",
                    doc.limit.value
                ),
            );
        }
        let tool = tool?;
        let params = self.params_for(&tool, &actions).cloned();
        let owner = tool.to_string();
        let context_fields = self.context_fields;
        let scope = Scope {
            context_fields,
            params: params.as_ref(),
            params_owner: &owner,
        };
        let sum = doc.sum.as_ref().and_then(|s| self.cel(s, &scope));
        (self.diags.len() == before).then_some(Budget {
            rule: index,
            id,
            tool,
            actions,
            limit: doc.limit.value,
            per: doc.per.value,
            sum,
            unit: doc.unit.clone(),
        })
    }

    pub fn schema(&mut self, doc: &ToolSchemaDoc) -> Option<ToolSchema> {
        let before = self.diags.len();
        let tool = match Pattern::parse(&doc.tool.value) {
            Ok(p) => Some(p),
            Err(e) => {
                let loc = self.at(&doc.tool);
                self.error(loc, e);
                None
            }
        };
        let actions = self.patterns(doc.actions.as_ref());
        for name in doc.params.keys() {
            let ok = !name.is_empty()
                && name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                let loc = self.at(&doc.tool);
                self.error(
                    loc,
                    format!(
                        "parameter name `{name}` is not a CEL identifier (letters, digits, `_`)"
                    ),
                );
            }
        }
        let tool = tool?;
        (self.diags.len() == before).then(|| ToolSchema {
            tool,
            actions,
            params: doc
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.value))
                .collect(),
        })
    }
}
