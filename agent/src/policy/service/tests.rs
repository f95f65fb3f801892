use super::*;
use crate::policy::load_str;

const BASE: &str = r#"version: 1
schemas:
  - tool: stripe
    actions: [create_payment]
    params: {amount: number, currency: string}
services:
  - id: stripe
    url: https://api.stripe.test/base/
    address: 127.0.0.1:8443
    port: 9001
    credential: {header: Authorization, prefix: "Bearer ", env: STRIPE_KEY}
    mask: [card.number]
    routes:
      - {id: pay, method: POST, path: /v1/payment_intents, action: create_payment}
      - {method: GET, path: "/v1/customers/{id}", action: get_customer, resource: "customer/{id}"}
      - {method: "*", path: "/v1/files/{rest*}", action: files}
identities:
  - id: agent
    tools:
      allow:
        - {tool: stripe, actions: [create_payment], when: "params.amount <= 5000"}
"#;

fn errors(text: &str) -> String {
    match load_str("p.yaml", text) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_service_validates_and_routes() {
    let p = load_str("p.yaml", BASE)
        .unwrap_or_else(|e| panic!("{e}"))
        .policy;
    let s = p.service("stripe").expect("service");
    let u = s.url().expect("url");
    assert_eq!(
        (u.tls, u.host.as_str(), u.port, u.base_path.as_str()),
        (true, "api.stripe.test", 443, "/base")
    );
    assert_eq!(u.address, Some("127.0.0.1:8443".parse().unwrap()));
    assert_eq!(u.origin(), "https://api.stripe.test");
    let c = s.credential.as_ref().expect("credential");
    assert_eq!(c.header, "authorization");
    assert_eq!(c.secret, Secret::Env("STRIPE_KEY".into()));
    let (r, vars) = s.route("POST", "/v1/payment_intents").expect("route");
    assert_eq!(
        (r.id.as_str(), r.action.as_str()),
        ("pay", "create_payment")
    );
    assert!(vars.is_empty());
    assert!(s.route("GET", "/v1/payment_intents").is_none(), "method");
    let (r, vars) = s.route("GET", "/v1/customers/cus%201").expect("route");
    assert_eq!(r.id, "stripe:2");
    assert_eq!(vars, vec![("id".to_string(), "cus 1".to_string())]);
    assert_eq!(r.resource.as_ref().unwrap().render(&vars), "customer/cus 1");
    let (_, vars) = s.route("DELETE", "/v1/files/a/b.txt").expect("rest");
    assert_eq!(vars, vec![("rest".to_string(), "a/b.txt".to_string())]);
    for bad in [
        "/v1/customers/",
        "/v1/customers/a/b",
        "/v1/../v1/payment_intents",
        "/v1//payment_intents",
        "/v1/files/%2e%2e/x",
        "/v1/files/a%2Fb",
        "v1/payment_intents",
        "/v1/files/a\\b",
    ] {
        assert!(s.route("GET", bad).is_none(), "{bad} must not match");
    }
}

#[test]
fn service_errors_point_at_the_value() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "url: https://api.stripe.test/base/",
            "url: ftp://x",
            "p.yaml:8:10: `ftp://x`: the URL must start with https:// or http://",
        ),
        ("port: 9001", "port: 0", "p.yaml:10:11: `port` 0"),
        (
            "path: /v1/payment_intents",
            "path: v1/payment_intents",
            "p.yaml:14:39: path template `v1/payment_intents` must start with `/`",
        ),
        (
            "resource: \"customer/{id}\"",
            "resource: \"customer/{cid}\"",
            "`{cid}` in `customer/{cid}` is not a variable of the route's path",
        ),
        (
            "mask: [card.number]",
            "mask: [card..number]",
            "p.yaml:12:12: mask path `card..number` has an empty segment",
        ),
        (
            "mask: [card.number]",
            "mask: [card.number]\n    mask_text: pass",
            "p.yaml:13:16: `mask_text` applies to MCP services",
        ),
        (
            "method: POST",
            "method: \"PO ST\"",
            "`PO ST` is not an HTTP method",
        ),
        (
            "prefix: \"Bearer \", env: STRIPE_KEY",
            "prefix: \"Bearer \", env: STRIPE_KEY, file: /k",
            "a secret takes exactly one of `file` or `env`",
        ),
        (
            "address: 127.0.0.1:8443",
            "address: localhost",
            "`address` \"localhost\" is not ADDRESS:PORT",
        ),
    ];
    for (from, to, want) in cases {
        let text = BASE.replacen(from, to, 1);
        assert_ne!(text, BASE, "{from}");
        let got = errors(&text);
        assert!(got.contains(want), "{to}: want `{want}` in\n{got}");
    }
}

#[test]
fn path_variables_must_be_declared_parameters() {
    let text = BASE.replace(
        "path: /v1/payment_intents, action: create_payment",
        "path: \"/v1/payment_intents/{pi}\", action: create_payment",
    );
    let got = errors(&text);
    assert!(
        got.contains("path variable `pi` is not a declared parameter of stripe.create_payment"),
        "{got}"
    );
}

#[test]
fn ids_and_ports_are_unique() {
    let route = "    routes: [{method: GET, path: /, action: a}]\nidentities:";
    let twice = BASE.replace(
        "identities:",
        &format!("  - id: stripe\n    url: http://x\n    port: 9002\n{route}"),
    );
    let got = errors(&twice);
    assert!(
        got.contains("p.yaml:17:9: service `stripe` is already defined at p.yaml:7:9"),
        "{got}"
    );
    let port = BASE.replace(
        "identities:",
        &format!("  - id: other\n    url: http://x\n    port: 9001\n{route}"),
    );
    let got = errors(&port);
    assert!(
        got.contains(
            "p.yaml:19:11: port 9001 is already the port of service `stripe` (p.yaml:10:11)"
        ),
        "{got}"
    );
}

#[test]
fn a_direct_path_to_a_protected_upstream_is_refused() {
    for (rule, what) in [
        (
            "{id: direct, host: \"*.stripe.test\", ports: [443], protocol: tcp}",
            "api.stripe.test:443",
        ),
        ("{id: direct, cidr: 127.0.0.0/8}", "127.0.0.1:8443"),
    ] {
        let text = BASE.replace(
            "  - id: agent\n",
            &format!("  - id: agent\n    egress:\n      allow:\n        - {rule}\n"),
        );
        let got = errors(&text);
        assert!(
            got.contains(&format!(
                "identity `agent` may reach {what} directly (rule `direct`), but service `stripe` protects it"
            )) && got.contains("p.yaml:21:11"),
            "{rule}: {got}"
        );
        // A deny for the upstream closes the direct path again.
        let denied = text.replacen(
            "      allow:\n",
            "      deny:\n        - {host: api.stripe.test}\n        - {cidr: 127.0.0.1/32}\n      allow:\n",
            1,
        );
        assert_eq!(errors(&denied), "", "{rule}");
    }
}

#[test]
fn templates_and_masks_parse() {
    assert!(PathTemplate::parse("/a/{x*}/b").is_err());
    assert!(PathTemplate::parse("/a/{x}/{x}").is_err());
    assert!(PathTemplate::parse("/a/x{y}").is_err());
    let t = PathTemplate::parse("/").unwrap();
    assert_eq!(t.matches(&split_path("/").unwrap()), Some(vec![]));
    let m = MaskPath::parse("data.*.card.number").unwrap();
    assert_eq!(m.segs[1], MaskSeg::Any);
    assert!(MaskPath::parse("a.**").is_err());
    assert!(MaskPath::parse("a.b*").is_err());
    assert_eq!(
        MaskPath::parse("**.ssn").unwrap().segs[0],
        MaskSeg::AnyDepth
    );
}

#[test]
fn mask_text_is_withhold_or_pass() {
    let mcp = "version: 1\nservices:\n  - id: m\n    kind: mcp\n    url: http://127.0.0.1:9/mcp\n    port: 9002\n    mask: [number]\n";
    let p = load_str("p.yaml", mcp).unwrap();
    assert_eq!(p.policy.services[0].mask_text, MaskText::Withhold);
    let p = load_str("p.yaml", &format!("{mcp}    mask_text: pass\n")).unwrap();
    assert_eq!(p.policy.services[0].mask_text, MaskText::Pass);
    let e = errors(&format!("{mcp}    mask_text: allow\n"));
    assert!(
        e.contains("p.yaml:8:16: `mask_text` is `withhold` or `pass`, not \"allow\""),
        "{e}"
    );
}

#[test]
fn a_format_suffix_on_a_variable_is_refused_however_spelled() {
    let text = BASE.replace(
        r#"      - {method: "*", path: "/v1/files/{rest*}", action: files}"#,
        "      - {method: \"*\", path: \"/v1/files/{rest*}\", action: files}\n      - {method: GET, path: \"/v2/accounts/{pk}/\", action: account}\n      - {method: GET, path: /v1/export.json, action: export}",
    );
    let p = load_str("p.yaml", &text)
        .unwrap_or_else(|e| panic!("{e}"))
        .policy;
    let s = p.service("stripe").expect("service");
    let refused = |method: &str, path: &str| {
        let (r, _) = s
            .route(method, path)
            .unwrap_or_else(|| panic!("{path} routes"));
        s.refuse_format_suffix(r, path).is_err()
    };
    for path in [
        "/v1/customers/acct_root.json",
        "/v1/customers/acct_root.%6Ason",
        "/v1/customers/acct_root.XML",
        "/v2/accounts/acct_root.json/",
        "/v1/files/a/b.json",
        "/v1/files/a/b.json/",
    ] {
        assert!(refused("GET", path), "{path}");
    }
    for path in [
        "/v1/customers/acct_root",
        "/v1/customers/.profile",
        "/v1/customers/a.b-c",
        "/v2/accounts/acct_root/",
        "/v1/files/a.json/b",
        "/v1/export.json",
    ] {
        assert!(!refused("GET", path), "{path}");
    }
}
