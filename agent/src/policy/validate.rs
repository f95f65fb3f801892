//! From parsed YAML to a `Policy`: every check that needs more than YAML
//! syntax, each error pointing at the offending value.

use std::collections::HashMap;

use serde_saphyr::Spanned;

use super::{
    Diagnostic, HostPattern, HostRule, Identity, Loaded, NetRule, Policy, PolicyErrors,
    PolicyVersion, RuleAction, RuleInfo, SourceLoc,
    glob::Glob,
    model::{EgressRuleDoc, PolicyDoc},
    net::{self, Cidr, PortRange, Protocol},
    source::{self, Source},
};

/// The only policy format version this daemon reads.
const SUPPORTED_VERSION: u32 = 1;

pub(super) fn validate(sources: &[Source]) -> Result<Loaded, PolicyErrors> {
    let mut diags = Vec::new();
    let mut docs = Vec::new();
    for s in sources {
        match serde_saphyr::from_str_with_options::<PolicyDoc>(
            &s.text,
            source::parse_options(&s.text),
        ) {
            Ok(doc) => docs.push((s, doc)),
            Err(e) => diags.push(Diagnostic::from_yaml(&s.path, &e)),
        }
    }

    let mut builder = Builder::default();
    for (source, doc) in &docs {
        builder.add_file(source, doc, &mut diags);
    }
    if diags.iter().any(|d| d.severity == super::Severity::Error) {
        diags.sort_by(|a, b| a.loc.cmp(&b.loc));
        return Err(PolicyErrors { diagnostics: diags });
    }
    let label = docs
        .iter()
        .find_map(|(_, d)| d.label.as_ref().map(|l| l.value.clone()));
    let policy = Policy {
        version: PolicyVersion {
            hash: source::content_hash(sources),
            label,
        },
        identities: builder.identities,
        rules: builder.rules,
    };
    Ok(Loaded {
        policy,
        warnings: diags,
    })
}

#[derive(Default)]
struct Builder {
    identities: Vec<Identity>,
    rules: Vec<RuleInfo>,
    identity_locs: HashMap<String, SourceLoc>,
    rule_ids: HashMap<String, SourceLoc>,
}

fn identity_name_error(id: &str) -> Option<String> {
    let valid_chars = id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if id.is_empty() {
        Some("identity id is empty".into())
    } else if id.len() > 63 {
        Some(format!("identity id `{id}` is longer than 63 characters"))
    } else if !valid_chars || !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        Some(format!(
            "identity id `{id}` may use only lowercase letters, digits, `-`, `_` and `.`, starting with a letter or digit"
        ))
    } else {
        None
    }
}

impl Builder {
    fn add_file(&mut self, source: &Source, doc: &PolicyDoc, diags: &mut Vec<Diagnostic>) {
        let file = source.path.as_path();
        if doc.version.value != SUPPORTED_VERSION {
            diags.push(
                Diagnostic::error(
                    SourceLoc::of(file, &doc.version),
                    format!(
                        "unsupported policy version {} (this daemon reads version {SUPPORTED_VERSION})",
                        doc.version.value
                    ),
                )
                .with_hint("set `version: 1`"),
            );
            return;
        }

        // Number this file's rules in document order: `file:1`, `file:2`…
        let mut file_rules: Vec<(usize, RuleAction, &Spanned<EgressRuleDoc>)> = Vec::new();
        for (i, ident) in doc.identities.iter().enumerate() {
            for r in &ident.egress.allow {
                file_rules.push((i, RuleAction::Allow, r));
            }
            for r in &ident.egress.deny {
                file_rules.push((i, RuleAction::Deny, r));
            }
        }
        file_rules.sort_by_key(|(_, _, r)| (r.referenced.line(), r.referenced.column()));
        let file_name = file.file_name().map_or_else(
            || file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );

        let first_identity = self.identities.len();
        for ident in &doc.identities {
            let loc = SourceLoc::of(file, &ident.id);
            if let Some(msg) = identity_name_error(&ident.id.value) {
                diags.push(Diagnostic::error(loc.clone(), msg));
            }
            if let Some(prev) = self.identity_locs.get(&ident.id.value) {
                diags.push(Diagnostic::error(
                    loc.clone(),
                    format!("identity `{}` is already defined at {prev}", ident.id.value),
                ));
                continue;
            }
            self.identity_locs
                .insert(ident.id.value.clone(), loc.clone());
            let mut selectors = Vec::new();
            for s in &ident.selectors {
                match Glob::parse(&s.cgroup.value) {
                    Ok(g) => selectors.push(g),
                    Err(e) => diags.push(Diagnostic::error(SourceLoc::of(file, &s.cgroup), e)),
                }
            }
            self.identities.push(Identity {
                id: ident.id.value.clone(),
                mode: ident.mode,
                selectors,
                allow: Vec::new(),
                deny: Vec::new(),
                allow_hosts: Vec::new(),
                deny_hosts: Vec::new(),
                loc,
            });
        }

        for (n, (ident_pos, action, rule)) in file_rules.into_iter().enumerate() {
            let ident_name = &doc.identities[ident_pos].id.value;
            let Some(target) = self.identities[first_identity..]
                .iter()
                .position(|i| i.id == *ident_name)
                .map(|p| p + first_identity)
            else {
                continue; // duplicate identity, already reported
            };
            let rule_loc = SourceLoc::of(file, rule);
            let id = match &rule.value.id {
                Some(explicit) => explicit.value.clone(),
                None => format!("{file_name}:{}", n + 1),
            };
            if let Some(prev) = self.rule_ids.get(&id) {
                let loc = rule
                    .value
                    .id
                    .as_ref()
                    .map_or(rule_loc.clone(), |s| SourceLoc::of(file, s));
                diags.push(Diagnostic::error(
                    loc,
                    format!("rule id `{id}` is already used at {prev}"),
                ));
                continue;
            }
            self.rule_ids.insert(id.clone(), rule_loc.clone());
            let index = self.rules.len() as u32;
            let Some(target_rule) = parse_rule(file, &rule_loc, &rule.value, index, diags) else {
                continue;
            };
            self.rules.push(RuleInfo {
                id,
                identity: ident_name.clone(),
                action,
                loc: rule_loc,
            });
            let identity = &mut self.identities[target];
            match (target_rule, action) {
                (ParsedRule::Net(r), RuleAction::Allow) => identity.allow.push(r),
                (ParsedRule::Net(r), RuleAction::Deny) => identity.deny.push(r),
                (ParsedRule::Host(r), RuleAction::Allow) => identity.allow_hosts.push(r),
                (ParsedRule::Host(r), RuleAction::Deny) => identity.deny_hosts.push(r),
            }
        }
    }
}

enum ParsedRule {
    Net(NetRule),
    Host(HostRule),
}

fn parse_rule(
    file: &std::path::Path,
    rule_loc: &SourceLoc,
    doc: &EgressRuleDoc,
    index: u32,
    diags: &mut Vec<Diagnostic>,
) -> Option<ParsedRule> {
    let errors_before = diags.len();
    let ports = match &doc.ports {
        None => vec![PortRange::ALL],
        Some(list) if list.is_empty() => {
            diags.push(
                Diagnostic::error(
                    rule_loc.clone(),
                    "`ports` is an empty list, which matches nothing",
                )
                .with_hint("omit `ports` to match any port"),
            );
            vec![]
        }
        Some(list) => net::coalesce(list.iter().map(|p| p.value).collect()),
    };
    let protocol = doc.protocol.as_ref().map_or(Protocol::Any, |p| p.value);
    let parsed = match (&doc.cidr, &doc.host) {
        (Some(cidr), None) => match cidr.value.parse::<Cidr>() {
            Ok(c) => Some(ParsedRule::Net(NetRule {
                rule: index,
                cidr: c,
                ports,
                protocol,
            })),
            Err(e) => {
                diags.push(Diagnostic::error(SourceLoc::of(file, cidr), e));
                None
            }
        },
        (None, Some(host)) => match HostPattern::parse(&host.value) {
            Ok(pattern) => Some(ParsedRule::Host(HostRule {
                rule: index,
                pattern,
                ports,
                protocol,
            })),
            Err(e) => {
                diags.push(Diagnostic::error(SourceLoc::of(file, host), e));
                None
            }
        },
        (Some(_), Some(host)) => {
            diags.push(
                Diagnostic::error(
                    SourceLoc::of(file, host),
                    "a rule names either `cidr` or `host`, not both",
                )
                .with_hint("split it into two rules"),
            );
            None
        }
        (None, None) => {
            diags.push(
                Diagnostic::error(rule_loc.clone(), "an egress rule needs `cidr` or `host`")
                    .with_hint("e.g. `- cidr: 10.20.0.0/16` or `- host: api.example.com`"),
            );
            None
        }
    };
    if diags.len() > errors_before {
        None
    } else {
        parsed
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::{Mode, load_str};

    fn errors(text: &str) -> Vec<String> {
        match load_str("p.yaml", text) {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(e) => e.diagnostics.iter().map(ToString::to_string).collect(),
        }
    }

    const GOOD: &str = "\
version: 1
label: release-7
identities:
  - id: clinical-agent
    mode: audit
    selectors:
      - cgroup: /system.slice/clinical-*.service
    egress:
      allow:
        - cidr: 10.20.0.0/16
          ports: [443, 5432]
          protocol: tcp
        - host: internal-ehr.myorg
      deny:
        - id: no-metadata
          cidr: 169.254.169.254
";

    #[test]
    fn accepts_the_core_shape() {
        let loaded = load_str("p.yaml", GOOD).unwrap_or_else(|e| panic!("{e}"));
        let p = loaded.policy;
        assert_eq!(p.identities.len(), 1);
        let id = &p.identities[0];
        assert_eq!(id.mode, Mode::Audit);
        assert_eq!(id.allow.len(), 1);
        assert_eq!(id.allow_hosts.len(), 1);
        assert_eq!(id.deny.len(), 1);
        assert_eq!(p.rules.len(), 3);
        assert_eq!(p.rules[0].id, "p.yaml:1");
        assert_eq!(p.rules[2].id, "no-metadata");
        assert!(p.version.hash.starts_with("sha256:"));
        assert_eq!(
            p.version.to_string(),
            format!("release-7@{}", p.version.hash)
        );
    }

    #[test]
    fn unknown_key_has_line_and_column() {
        let e = errors("version: 1\nidentities:\n  - id: a\n    egres: {}\n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("p.yaml:4:5: unknown field `egres`"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn bad_cidr_points_at_the_value() {
        let e = errors(
            "version: 1\nidentities:\n  - id: a\n    egress:\n      allow:\n        - cidr: 10.0.0.300/8\n",
        );
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("p.yaml:6:17: `10.0.0.300` is not an IPv4 or IPv6 address"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn bad_port_and_protocol() {
        let e = errors(
            "version: 1\nidentities:\n  - id: a\n    egress:\n      allow:\n        - cidr: 10.0.0.0/8\n          ports: [70000]\n",
        );
        assert!(
            e[0].starts_with("p.yaml:7:19: `70000` is not a valid port"),
            "{}",
            e[0]
        );
        let e = errors(
            "version: 1\nidentities:\n  - id: a\n    egress:\n      allow:\n        - cidr: 10.0.0.0/8\n          protocol: icmp\n",
        );
        assert!(
            e[0].starts_with("p.yaml:7:21: unknown variant `icmp`"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn syntax_error_has_position() {
        let e = errors("version: 1\nidentities: [\n");
        assert!(e[0].starts_with("p.yaml:2:"), "{}", e[0]);
    }

    #[test]
    fn duplicate_identity_and_rule_ids() {
        let e = errors("version: 1\nidentities:\n  - id: a\n  - id: a\n");
        assert!(
            e[0].starts_with("p.yaml:4:9: identity `a` is already defined at p.yaml:3:9"),
            "{}",
            e[0]
        );
        let e = errors(
            "version: 1\nidentities:\n  - id: a\n    egress:\n      allow:\n        - {id: r, cidr: 10.0.0.1}\n        - {id: r, cidr: 10.0.0.2}\n",
        );
        assert!(
            e[0].contains("rule id `r` is already used at p.yaml:6:"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn rule_needs_exactly_one_target() {
        let e = errors(
            "version: 1\nidentities:\n  - id: a\n    egress:\n      allow:\n        - ports: [443]\n",
        );
        assert!(e[0].contains("needs `cidr` or `host`"), "{}", e[0]);
        let e = errors(
            "version: 1\nidentities:\n  - id: a\n    egress:\n      allow:\n        - {cidr: 10.0.0.1, host: a.b}\n",
        );
        assert!(e[0].contains("not both"), "{}", e[0]);
    }

    #[test]
    fn version_and_identity_names() {
        let e = errors("version: 2\n");
        assert!(
            e[0].starts_with("p.yaml:1:10: unsupported policy version 2"),
            "{}",
            e[0]
        );
        let e = errors("version: 1\nidentities:\n  - id: Bad Name\n");
        assert!(
            e[0].starts_with("p.yaml:3:9: identity id `Bad Name`"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn reports_every_error_not_just_the_first() {
        let e = errors(
            "version: 1\nidentities:\n  - id: a\n    egress:\n      allow:\n        - cidr: nope\n        - cidr: 1.2.3.4/99\n",
        );
        assert_eq!(e.len(), 2, "{e:?}");
    }
}
