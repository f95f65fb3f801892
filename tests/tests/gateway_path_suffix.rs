//! A path read two ways: servers that take format suffixes (Django REST
//! framework's `format_suffix_patterns`, Rails, Grape) read
//! `/v1/accounts/acct_root.json` as account `acct_root` in JSON, while a
//! gateway matching `/v1/accounts/{id}` would judge `acct_root.json`, which
//! no deny rule names. The upstream of the gateway fixture reads suffixes
//! the way those servers do and logs what it executed; the agent is curl
//! under `palisade exec`, as root and as uid 65534. The upstream also looks
//! ids up ignoring case, as a database's default collation does, so a
//! `deny` must hold for every spelling of the id.

use palisade_tests::{
    gateway::exec_as,
    gateway_fixture::{Fixture, start},
};
use serde_json::Value;

fn accounts_policy(f: &Fixture, format_suffixes: Option<bool>) -> String {
    let text = f.policy_with(
        "      - {method: \"*\", path: \"/v1/accounts/{id}\", action: account, resource: \"account/{id}\"}\n      - {method: \"*\", path: \"/v1/accounts/{id}/\", action: account, resource: \"account/{id}\"}\n",
        r#"  - id: accounts-agent
    tools:
      allow:
        - {id: accounts, tool: stripe, actions: [account]}
      deny:
        - {id: not-the-treasury, tool: stripe, actions: [account], resources: ["account/acct_root"]}
"#,
    );
    match format_suffixes {
        None => text,
        Some(v) => text.replace(
            "    approval_timeout: 30s\n",
            &format!("    approval_timeout: 30s\n    format_suffixes: {v}\n"),
        ),
    }
}

/// `curl -X method` as accounts-agent; (status, body).
fn curl(f: &Fixture, root: bool, method: &str, path: &str) -> (String, Value) {
    let url = format!("{}{path}", f.base());
    let args = ["-s", "-X", method, "-w", "\n%{http_code}", url.as_str()];
    let out = exec_as(&f.env, "accounts-agent", root, "/usr/bin/curl", &args)
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (
        code.to_string(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn executed_on_the_treasury(f: &Fixture) -> Vec<String> {
    f.upstream
        .requests()
        .iter()
        .filter_map(|r| r["path"].as_str().map(str::to_string))
        .filter(|p| p.to_lowercase().starts_with("/v1/accounts/acct_root"))
        .collect()
}

#[test]
fn a_format_suffix_never_turns_a_denied_id_into_an_allowed_one() {
    let Some(f) = start("gw-suffix") else { return };
    f.reload_policy(&accounts_policy(&f, None));
    for root in [true, false] {
        // The deny rule holds for the id as written…
        let (code, body) = curl(&f, root, "DELETE", "/v1/accounts/acct_root");
        assert_eq!(code, "403", "{body}");
        assert_eq!(body["error"]["reason"], "denied-by-rule", "{body}");
        // …and with a suffix the upstream would strip.
        for path in [
            "/v1/accounts/acct_root.json",
            "/v1/accounts/acct_root.api",
            "/v1/accounts/acct_root.XML",
            // The suffix percent-encoded, and before a trailing slash
            // (Django REST framework's default router): read alike.
            "/v1/accounts/acct_root.%6Ason",
            "/v1/accounts/acct_root.json/",
        ] {
            for method in ["DELETE", "GET"] {
                let (code, body) = curl(&f, root, method, path);
                assert_eq!(code, "400", "{method} {path}: {body}");
                assert_eq!(body["error"]["reason"], "ambiguous-path", "{body}");
                assert!(
                    body["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("format_suffixes: false")),
                    "{body}"
                );
            }
        }
        // Control: another account, with and without a suffix-free id.
        let (code, body) = curl(&f, root, "DELETE", "/v1/accounts/acct_ops");
        assert_eq!(code, "200", "{body}");
        assert_eq!(body["closed"], "acct_ops");
    }
    assert_eq!(executed_on_the_treasury(&f), Vec::<String>::new());
    let ev = f.env.wait_audit("the suffix refusal", |e| {
        e["kind"] == "gateway" && e["reason"] == "ambiguous-path"
    });
    assert_eq!(ev["identity"], "accounts-agent");

    // A service whose upstream reads dots literally says so, and ids with
    // dots pass (judged as written: `acct_root.json` is not `acct_root`).
    f.reload_policy(&accounts_policy(&f, Some(false)));
    let (code, body) = curl(&f, false, "GET", "/v1/accounts/v1.2.3");
    assert_eq!(code, "200", "{body}");
    assert_eq!(
        f.upstream.requests().last().map(|r| r["path"].clone()),
        Some(Value::from("/v1/accounts/v1.2.3"))
    );
}

#[test]
fn a_deny_holds_for_the_id_in_any_letter_case() {
    let Some(f) = start("gw-idcase") else { return };
    f.reload_policy(&accounts_policy(&f, None));
    for root in [true, false] {
        for path in ["/v1/accounts/ACCT_ROOT", "/v1/accounts/Acct_Root"] {
            let (code, body) = curl(&f, root, "DELETE", path);
            assert_eq!(code, "403", "{path}: {body}");
            assert_eq!(body["error"]["reason"], "denied-by-rule", "{body}");
            assert_eq!(body["error"]["rule"], "not-the-treasury", "{body}");
        }
        // Control: the allow rule is not widened, and other ids pass.
        let (code, body) = curl(&f, root, "DELETE", "/v1/accounts/ACCT_OPS");
        assert_eq!(code, "200", "{body}");
        assert_eq!(body["closed"], "acct_ops");
    }
    assert_eq!(executed_on_the_treasury(&f), Vec::<String>::new());
}
