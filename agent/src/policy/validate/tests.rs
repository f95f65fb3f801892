//! Validation errors and their positions, roles, merging.

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

const ROLES: &str = "\
version: 1
roles:
  - id: viewer
    tools:
      allow:
        - {id: read-ledger, tool: ledger, actions: [read]}
  - id: operator
    inherits: [viewer]
    egress:
      allow:
        - {id: ledger-api, cidr: 10.30.0.0/16, ports: [443], protocol: tcp}
  - id: manager
    inherits: [operator]
    tools:
      allow:
        - id: payments
          tool: stripe
          actions: [create_payment]
          when: params.amount <= 5000
          approval_if: params.amount > 1000
identities:
  - id: finance-agent
    roles: [manager]
    metadata: {org: acme, tenant: eu-1, owner: payments-team}
    selectors:
      - cgroup: /system.slice/finance-agent.service
    egress:
      deny:
        - {cidr: 10.30.9.0/24}
";

#[test]
fn roles_inherit_and_identities_get_every_rule() {
    let loaded = load_str("p.yaml", ROLES).unwrap_or_else(|e| panic!("{e}"));
    let p = loaded.policy;
    let id = p
        .identity("finance-agent")
        .unwrap_or_else(|| panic!("identity"));
    assert_eq!(id.effective_roles, vec!["manager", "operator", "viewer"]);
    assert_eq!(id.tools.allow.len(), 2, "viewer's and manager's tool rules");
    assert_eq!(id.allow.len(), 1, "operator's egress rule");
    assert_eq!(
        id.deny.len(),
        1,
        "the identity's own deny restricts what roles grant"
    );
    assert!(id.elevatable.is_empty());
    assert_eq!(id.metadata.tenant.as_deref(), Some("eu-1"));
    assert_eq!(
        p.rule_by_id("payments")
            .map(|r| r.owner.to_string())
            .as_deref(),
        Some("role `manager`")
    );
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn role_cycles_and_unknown_roles_are_rejected() {
    let e = errors(
        "version: 1\nroles:\n  - {id: a, inherits: [b]}\n  - {id: b, inherits: [c]}\n  - {id: c, inherits: [a]}\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("role inheritance cycle: a -> b -> c -> a"),
        "{}",
        e[0]
    );
    let e = errors(
        "version: 1\nroles:\n  - {id: viewer}\nidentities:\n  - id: x\n    roles: [veiwer]\n",
    );
    assert!(
        e[0].starts_with("p.yaml:6:13: unknown role `veiwer`"),
        "{}",
        e[0]
    );
    assert!(e[0].contains("did you mean `viewer`?"), "{}", e[0]);
    let e = errors("version: 1\nroles:\n  - {id: a, inherits: [nope]}\n");
    assert!(
        e[0].starts_with("p.yaml:3:24: unknown role `nope` in `inherits`"),
        "{}",
        e[0]
    );
    let e = errors("version: 1\nroles:\n  - {id: a}\n  - {id: a}\n");
    assert!(
        e[0].contains("role `a` is already defined at p.yaml:3:"),
        "{}",
        e[0]
    );
}

#[test]
fn cel_errors_point_into_the_expression() {
    let e = errors(
        "version: 1\nidentities:\n  - id: a\n    tools:\n      allow:\n        - tool: stripe\n          actions: [pay]\n          when: params.amount <=\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("p.yaml:8:33: CEL: Syntax error"),
        "{}",
        e[0]
    );
    let e = errors(
        "version: 1\nidentities:\n  - id: a\n    tools:\n      allow:\n        - tool: stripe\n          actions: [pay]\n          when: \"context.hours > 9\"\n",
    );
    assert!(
        e[0].starts_with("p.yaml:8:18: CEL: `context.hours` is not a known context field"),
        "{}",
        e[0]
    );
}

#[test]
fn schemas_check_parameter_names() {
    let text = "version: 1\nschemas:\n  - tool: stripe\n    actions: [create_payment]\n    params: {amount: number, currency: string}\nidentities:\n  - id: a\n    tools:\n      allow:\n        - tool: stripe\n          actions: [create_payment]\n          when: params.amout <= 5000\n";
    let e = errors(text);
    assert!(e[0].contains("`params.amout` is not a parameter of stripe.create_payment (declared: amount, currency)"), "{}", e[0]);
    let ok = text.replace("amout", "amount");
    load_str("p.yaml", &ok).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn context_fields_must_be_declared() {
    let rule = "identities:\n  - id: a\n    tools:\n      allow:\n        - {tool: t, actions: [x], when: context.ticket != ''}\n";
    assert!(
        errors(&format!("version: 1\n{rule}"))[0]
            .contains("`context.ticket` is not a known context field")
    );
    load_str(
        "p.yaml",
        &format!("version: 1\ncontext: {{ticket: string}}\n{rule}"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let e = errors("version: 1\ncontext: {hour: integer}\n");
    assert!(
        e[0].contains("`hour` is a built-in context field"),
        "{}",
        e[0]
    );
}

#[test]
fn budgets_and_grants_are_validated() {
    let e = errors(
        "version: 1\nidentities:\n  - id: a\n    budgets:\n      - {tool: stripe, limit: 0, per: day}\n",
    );
    assert!(
        e[0].starts_with("p.yaml:5:31: budget `limit` must be a positive number"),
        "{}",
        e[0]
    );
    let e = errors(
        "version: 1\nidentities:\n  - id: a\n    budgets:\n      - {tool: stripe, limit: 5, per: fortnight}\n",
    );
    assert!(e[0].contains("unknown variant `fortnight`"), "{}", e[0]);
    let e = errors(
        "version: 1\nidentities:\n  - id: a\n    egress:\n      grantable:\n        - {cidr: 10.0.0.1, max_ttl: 30x}\n",
    );
    assert!(e[0].contains("`max_ttl` `30x`"), "{}", e[0]);
    let e = errors(
        "version: 1\nidentities:\n  - id: a\n    egress:\n      allow:\n        - {cidr: 10.0.0.1, max_ttl: 1h}\n",
    );
    assert!(
        e[0].contains("`max_ttl` applies to `grantable` and `require_approval` rules only"),
        "{}",
        e[0]
    );
    let ok = load_str("p.yaml", "version: 1\nidentities:\n  - id: a\n    egress:\n      grantable:\n        - {cidr: 10.0.0.1, ports: [22], max_ttl: 15m}\n").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ok.policy.identities[0].grantable[0].max_ttl,
        std::time::Duration::from_secs(900)
    );
}

#[test]
fn lints_are_warnings_with_positions() {
    let text = "version: 1
roles:
  - id: unused
identities:
  - id: a
    egress:
      allow:
        - {id: everything, cidr: 0.0.0.0/0}
        - {id: shadowed, cidr: 10.1.0.0/16, ports: [443]}
      deny:
        - {id: no-10, cidr: 10.0.0.0/8}
    tools:
      allow:
        - {id: all-actions, tool: github}
";
    let loaded = load_str("p.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    let w: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    let has = |needle: &str| w.iter().any(|x| x.contains(needle));
    assert!(
        has("p.yaml:3:9: warning: role `unused` is not used by any identity"),
        "{w:#?}"
    );
    assert!(has("rule `everything` allows 0.0.0.0/0"), "{w:#?}");
    assert!(
        has(
            "p.yaml:9:11: warning: allow rule `shadowed` never applies to identity `a`: deny rule `no-10`"
        ),
        "{w:#?}"
    );
    assert!(
        has("rule `all-actions` allows every action of `github`"),
        "{w:#?}"
    );
    assert!(has("identity `a` has no selector"), "{w:#?}");
    assert_eq!(w.len(), 5, "{w:#?}");
}

#[test]
fn several_files_merge_and_number_their_rules() {
    let dir = std::env::temp_dir().join(format!("palisade-merge-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("10-roles.yaml"), "version: 1\nroles:\n  - id: web\n    egress:\n      allow:\n        - {cidr: 10.0.0.0/8, ports: [443]}\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("20-agents.yaml"), "version: 1\nidentities:\n  - id: a\n    roles: [web]\n    egress:\n      allow:\n        - {cidr: 192.168.0.1}\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("..data"), "ignored: true\n").unwrap_or_else(|e| panic!("{e}"));
    let loaded = crate::policy::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<&str> = loaded.policy.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, vec!["10-roles.yaml:1", "20-agents.yaml:1"]);
    assert_eq!(loaded.policy.identity("a").map(|i| i.allow.len()), Some(2));
    // A duplicate across files names both places.
    std::fs::write(
        dir.join("30-dup.yaml"),
        "version: 1\nidentities:\n  - id: a\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = crate::policy::load(&dir).unwrap_err().to_string();
    assert!(
        err.contains("30-dup.yaml:3:9: identity `a` is already defined at")
            && err.contains("20-agents.yaml:3:9"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Where the time goes on a large policy (run with `--ignored --nocapture`).
#[test]
#[ignore = "timing probe, not a test"]
fn large_policy_timing() {
    let mut s = String::from("version: 1\nidentities:\n");
    let n_ids: u32 = std::env::var("PALISADE_TIMING_IDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    for id in 0..n_ids {
        s.push_str(&format!(
            "  - id: agent-{id:03}\n    egress:\n      allow:\n"
        ));
        for r in 0..1000u32 {
            let n = id * 1000 + r;
            s.push_str(&format!(
                "        - {{cidr: 10.{}.{}.{}/32, ports: [{}, {}], protocol: tcp}}\n",
                (n >> 16) & 0xff,
                (n >> 8) & 0xff,
                n & 0xff,
                443 + r % 7,
                8000 + r % 5
            ));
        }
    }
    let t = std::time::Instant::now();
    let doc: Result<crate::policy::model::PolicyDoc, _> =
        serde_saphyr::from_str_with_options(&s, crate::policy::source::parse_options(&s));
    println!("serde-saphyr parse: {:?}", t.elapsed());
    assert!(doc.is_ok());
    let t = std::time::Instant::now();
    let v: Result<serde_json::Value, _> =
        serde_saphyr::from_str_with_options(&s, crate::policy::source::parse_options(&s));
    println!(
        "serde-saphyr parse to JSON value (no spans): {:?} ok={}",
        t.elapsed(),
        v.is_ok()
    );
    let json = serde_json::to_string(v.as_ref().unwrap()).unwrap();
    let t = std::time::Instant::now();
    let j: Result<crate::policy::model::PolicyDoc, _> = serde_json::from_str(&json);
    println!(
        "serde_json parse of the same policy ({} bytes): {:?} ok={}",
        json.len(),
        t.elapsed(),
        j.is_ok()
    );
    let dir = std::env::temp_dir().join(format!("palisade-timing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("p.json"), &json).unwrap();
    let t = std::time::Instant::now();
    let l = crate::policy::load_for_daemon(&dir.join("p.json"));
    println!(
        "load_for_daemon on the JSON form (fast path): {:?} ok={}",
        t.elapsed(),
        l.is_ok()
    );
    let _ = std::fs::remove_dir_all(&dir);
    if std::env::var_os("PALISADE_TIMING_JSON_ONLY").is_some() {
        return;
    }
    let block = s
        .replace("        - {cidr: ", "        - cidr: ")
        .replace(", ports: [", "\n          ports: [")
        .replace("], protocol: tcp}", "]\n          protocol: tcp");
    let t = std::time::Instant::now();
    let d2: Result<crate::policy::model::PolicyDoc, _> =
        serde_saphyr::from_str_with_options(&block, crate::policy::source::parse_options(&block));
    println!(
        "serde-saphyr parse, block style: {:?} ok={}",
        t.elapsed(),
        d2.is_ok()
    );
    let t = std::time::Instant::now();
    let _ = load_str("p.yaml", &s).unwrap_or_else(|e| panic!("{e}"));
    println!("load_str (parse + validate + lint): {:?}", t.elapsed());
}

#[test]
fn json_policies_take_the_fast_path_and_still_report_positions() {
    let json = r#"{"version": 1, "identities": [{"id": "a", "selectors": [{"cgroup": "/a.service"}],
        "egress": {"allow": [{"cidr": "10.0.0.0/8", "ports": [443], "protocol": "tcp"}], "deny": [{"id": "d", "cidr": "10.9.0.0/16"}]}}]}"#;
    let dir = std::env::temp_dir().join(format!("palisade-fast-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("p.json"), json).unwrap_or_else(|e| panic!("{e}"));
    let loaded =
        crate::policy::load_for_daemon(&dir.join("p.json")).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&dir);
    let yaml = "version: 1\nidentities:\n  - id: a\n    selectors: [{cgroup: /a.service}]\n    egress:\n      deny:\n        - {id: d, cidr: 10.9.0.0/16}\n      allow:\n        - {cidr: 10.0.0.0/8, ports: [443], protocol: tcp}\n";
    let from_yaml = load_str("p.json", yaml).unwrap_or_else(|e| panic!("{e}"));
    let ids = |l: &crate::policy::Loaded| {
        l.policy
            .rules
            .iter()
            .map(|r| r.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&loaded),
        ids(&from_yaml),
        "numbering does not depend on the parser or the layout"
    );
    assert_eq!(
        loaded.policy.identities[0].allow,
        from_yaml.policy.identities[0].allow
    );
    // An error in a JSON policy is reported with its position.
    let bad = json.replace("10.9.0.0/16", "10.9.0.0/99");
    let e = errors_in("p.json", &bad);
    assert!(
        e[0].starts_with("p.json:2:119: prefix length `/99`"),
        "{}",
        e[0]
    );
}

#[test]
fn duplicate_keys_are_rejected_in_both_forms() {
    let e = errors("version: 1\ncontext: {ticket: string, ticket: integer}\n");
    assert!(e[0].contains("duplicate"), "{}", e[0]);
    let e = errors_in(
        "p.json",
        r#"{"version": 1, "context": {"ticket": "string", "ticket": "integer"}}"#,
    );
    assert!(e[0].contains("duplicate"), "{}", e[0]);
}

fn errors_in(name: &str, text: &str) -> Vec<String> {
    match load_str(name, text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.diagnostics.iter().map(ToString::to_string).collect(),
    }
}

const ELEVATED: &str = "\
version: 1
roles:
  - id: reader
    tools:
      allow:
        - {id: read, tool: db, actions: [select]}
  - id: dba
    elevated: true
    inherits: [reader]
    egress:
      allow:
        - {id: prod-db, cidr: 10.9.0.5, ports: [5432], protocol: tcp}
    tools:
      allow:
        - {id: drop, tool: db, actions: [drop_table]}
identities:
  - id: ops
    roles: [dba]
";

#[test]
fn an_elevated_role_is_held_only_through_an_elevation() {
    let p = load_str("p.yaml", ELEVATED)
        .unwrap_or_else(|e| panic!("{e}"))
        .policy;
    let ops = p.identity("ops").unwrap_or_else(|| panic!("ops"));
    assert!(ops.effective_roles.is_empty(), "{:?}", ops.effective_roles);
    assert!(ops.allow.is_empty() && ops.tools.allow.is_empty());
    let dba = ops.elevatable("dba").unwrap_or_else(|| panic!("dba"));
    assert_eq!(dba.closure, vec!["dba", "reader"]);
    assert_eq!(dba.allow.len(), 1);
    assert_eq!(dba.tools.allow.len(), 2, "its own and the inherited rule");

    let params = serde_json::Map::new();
    let call = crate::policy::ToolCall {
        identity: "ops",
        tool: "db",
        action: "drop_table",
        resource: "",
        params: &params,
        context: &params,
        now: std::time::SystemTime::now(),
    };
    assert_eq!(
        p.decide_tool(&call).verdict,
        crate::policy::ToolVerdict::Deny
    );
    let d = p.decide_tool_elevated(&call, &["dba"]);
    assert_eq!(d.verdict, crate::policy::ToolVerdict::Allow);
    assert_eq!(d.rules, vec!["drop"]);
    let d = p.decide_tool_elevated(&call, &["not-a-role"]);
    assert_eq!(d.verdict, crate::policy::ToolVerdict::Deny);
}

#[test]
fn elevated_roles_misused_are_errors_with_positions() {
    let text = "\
version: 1
roles:
  - id: bg
    elevated: true
    egress:
      allow:
        - {host: db.example.com}
      grantable:
        - {cidr: 10.0.0.1, max_ttl: 5m}
  - id: standing
    inherits: [bg]
";
    let e = load_str("p.yaml", text)
        .err()
        .unwrap_or_else(|| panic!("accepted"))
        .to_string();
    assert!(
        e.contains("p.yaml:3:") && e.contains("`allow` by `host`"),
        "{e}"
    );
    assert!(e.contains("egress `grantable`"), "{e}");
    assert!(
        e.contains("p.yaml:10:") && e.contains("inherits elevated role `bg`"),
        "{e}"
    );
}
