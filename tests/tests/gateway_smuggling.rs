//! Making the upstream act on something other than what the gateway
//! judged, or hand back what the gateway hides: two readings of one body
//! (repeated or contradictory `Content-Type`/`Content-Encoding`/framing,
//! a JSON name given twice, a header the agent has dropped after judging,
//! a body on a method servers need not read, a header name spelled with
//! `_`, number text read differently), routing-override headers, an
//! approval spent on another request or another service, a remote MCP
//! session used by another identity, and the credential echoed where the
//! scrubber did not look (trailers, the reason phrase, a header's name). Each attack is
//! carried out by an enrolled agent (root, and uid 65534 with curl where
//! the client does not matter) and checked at the far end — the
//! upstream's log of every request it received — next to a control that
//! the same path works when the request is unambiguous.

use std::{path::Path, process::Stdio, time::Duration};

use palisade_tests::{
    gateway::{
        TestCa, Upstream, agent, agent_cmd, exec, exec_unprivileged, gateway_python, parse_agent,
        python_dir,
    },
    gateway_fixture::{Fixture, policy, start},
};
use serde_json::{Value, json};

/// The fixture, reloaded with what these tests need besides: routes whose
/// upstream echoes the credential in a trailer or the reason phrase, a
/// `method: "*"` route that needs approval, and a remote MCP service
/// (`rmcp`, port 9002) whose upstream is the same logging server.
fn start_smuggling(name: &str) -> Option<Fixture> {
    let f = start(name)?;
    let ca = f.env.dir.join("pki/ca.pem");
    let text = policy(f.net, &ca, &f.secret_file, "")
        .replace(
            "      - {method: GET, path: /v1/stream, action: stream}\n",
            "      - {method: GET, path: /v1/stream, action: stream}\n      - {method: GET, path: /v1/trailer, action: trailer}\n      - {method: GET, path: /v1/reason, action: reason}\n      - {method: GET, path: /v1/gzip, action: gzip}\n      - {method: GET, path: /v1/escaped, action: escaped}\n      - {method: GET, path: /v1/gzip-twice, action: gzip}\n      - {method: GET, path: /v1/gzip-te, action: gzip}\n      - {method: GET, path: /v1/utf16, action: gzip}\n      - {id: ops, method: \"*\", path: \"/v1/ops/{rest*}\", action: ops}\n",
        )
        .replace(
            "        - {id: reads, tool: stripe, actions: [get_customer, big, text, stream]}\n",
            "        - {id: reads, tool: stripe, actions: [get_customer, big, text, stream, trailer, reason, gzip, escaped]}\n        - {id: ops-appr, tool: stripe, actions: [ops], approval_if: \"true\"}\n        - {id: rmcp-read, tool: rmcp, actions: [safe_read]}\n",
        )
        .replace(
            "        - {id: other-reads, tool: stripe, actions: [get_customer]}\n",
            "        - {id: other-reads, tool: stripe, actions: [get_customer]}\n        - {id: other-rmcp, tool: rmcp, actions: [safe_read]}\n",
        )
        .replace(
            "identities:\n",
            &format!(
                "  - id: rmcp\n    kind: mcp\n    url: https://upstream.test:8443/mcp\n    address: 127.170.{net}.2:8443\n    ca_file: {ca}\n    port: 9002\n    credential: {{header: Authorization, prefix: \"Bearer \", file: {secret}}}\nidentities:\n",
                net = f.net,
                ca = ca.display(),
                secret = f.secret_file.display()
            ),
        );
    assert!(
        text.contains("/v1/trailer")
            && text.contains("ops-appr")
            && text.contains("id: rmcp\n")
            && text.contains("other-rmcp"),
        "the fixture's policy changed; update start_smuggling:\n{text}"
    );
    f.env.write_policy(&text);
    f.env.cli_ok(&["reload"]);
    Some(f)
}

/// `tests/python/smuggle.py MODE gateway 9001 ARG` as root `finance-agent`.
fn smuggle(f: &Fixture, mode: &str, arg: &str) -> Value {
    let script = python_dir().join("smuggle.py");
    let out = exec(
        &f.env,
        "finance-agent",
        &gateway_python(),
        &[&script.to_string_lossy(), mode, &f.gateway(), "9001", arg],
    )
    .output()
    .unwrap_or_else(|e| panic!("smuggle.py: {e}"));
    parse_agent(&out)[0].clone()
}

/// curl as `finance-agent`, root or uid 65534; its standard output.
fn curl(f: &Fixture, unprivileged: bool, args: &[&str]) -> String {
    let mut cmd = if unprivileged {
        exec_unprivileged(&f.env, "finance-agent", "/usr/bin/curl", args)
    } else {
        exec(&f.env, "finance-agent", Path::new("/usr/bin/curl"), args)
    };
    let out = cmd.output().unwrap_or_else(|e| panic!("curl: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Requests the upstream received whose body or path holds `tag`.
fn arrived(f: &Fixture, tag: &str) -> Vec<Value> {
    f.upstream
        .requests()
        .into_iter()
        .filter(|r| {
            r["body"].as_str().is_some_and(|b| b.contains(tag))
                || r["path"].as_str().is_some_and(|p| p.contains(tag))
        })
        .collect()
}

/// No request with any of `tags` in its body or path reached the upstream.
fn assert_none_arrived(f: &Fixture, tags: &[&str]) {
    for tag in tags {
        let got = arrived(f, tag);
        assert!(got.is_empty(), "{tag} reached the upstream: {got:?}");
    }
}

/// Every value of header `name` in an upstream log record, repeats included.
fn header_lines(r: &Value, name: &str) -> Vec<String> {
    r["hlist"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h[0] == name)
        .filter_map(|h| h[1].as_str().map(str::to_string))
        .collect()
}

/// A JSON body that reads as a 100 USD payment, and as a form as 99,999.
fn polyglot(tag: &str) -> String {
    format!(
        r#"{{"amount":100,"currency":"usd","customer":"c&amount=99999&currency=usd&customer={tag}&x="}}"#
    )
}

/// A JSON payment POSTed over h2c as root with `extra` header fields
/// besides `content-type: application/json`, and by curl as uid 65534
/// with the same `-H` headers: both refused 400 with `reason`. Bodies
/// carry `{tag}H2` and `{tag}CURL`.
fn payment_refused_over_h2_and_curl(f: &Fixture, extra: &[(&str, &str)], tag: &str, reason: &str) {
    let mut headers = vec![
        json!([":method", "POST"]),
        json!([":scheme", "http"]),
        json!([":authority", "x"]),
        json!([":path", "/v1/payment_intents"]),
        json!(["content-type", "application/json"]),
    ];
    headers.extend(
        extra
            .iter()
            .map(|(k, v)| json!([k.to_ascii_lowercase(), v])),
    );
    let h2 = json!({"headers": headers, "body": polyglot(&format!("{tag}H2"))});
    let out = smuggle(f, "h2", &h2.to_string());
    assert_eq!(out["status"], 400, "{out}");
    assert_eq!(out["body"]["error"]["reason"], reason, "{out}");
    let lines: Vec<String> = extra.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let mut args = vec!["-s", "-H", "Content-Type: application/json"];
    for l in &lines {
        args.extend(["-H", l.as_str()]);
    }
    let body = polyglot(&format!("{tag}CURL"));
    let url = format!("{}/v1/payment_intents", f.base());
    args.extend(["--data-binary", body.as_str(), url.as_str()]);
    let text = curl(f, true, &args);
    assert!(text.contains(reason), "{text}");
}

fn raw_post(extra_headers: &str, body: &str) -> String {
    format!(
        "POST /v1/payment_intents HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra_headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn a_body_two_readers_could_read_apart_never_reaches_the_upstream() {
    let Some(f) = start_smuggling("gw-smuggle-ct") else {
        return;
    };
    let json_ct = "Content-Type: application/json\r\n";
    for (tag, headers, named) in [
        (
            "F1DUP",
            format!("{json_ct}Content-Type: application/x-www-form-urlencoded\r\n"),
            "Content-Type",
        ),
        (
            "F1LIST",
            "Content-Type: application/json, application/x-www-form-urlencoded\r\n".into(),
            "Content-Type",
        ),
        (
            "F1CHARSET",
            "Content-Type: application/json; charset=utf-8; charset=utf-16\r\n".into(),
            "Content-Type",
        ),
        (
            "F1ENC",
            format!("{json_ct}Content-Encoding: identity\r\nContent-Encoding: gzip\r\n"),
            "Content-Encoding",
        ),
        (
            "F1RANGE",
            format!("{json_ct}Content-Range: bytes 0-10/100\r\n"),
            "Content-Range",
        ),
    ] {
        let out = smuggle(&f, "h1", &raw_post(&headers, &polyglot(tag)));
        assert_eq!(out["status"], 400, "{tag}: {out}");
        assert_eq!(
            out["body"]["error"]["reason"], "ambiguous-header",
            "{tag}: {out}"
        );
        assert!(
            out["body"]["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("`{named}`"))),
            "{tag}: the error names the header: {out}"
        );
    }
    // Both framings at once: hyper's HTTP/1 server reads the body as
    // chunked and drops Content-Length (RFC 9112 6.3); what goes on has
    // one framing, the length of the body judged.
    let body = polyglot("F1TECL");
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let out = smuggle(
        &f,
        "h1",
        &format!(
            "POST /v1/payment_intents HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{json_ct}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n{chunked}"
        ),
    );
    assert!(out["status"] == 400 || out["status"] == 200, "{out}");
    for r in arrived(&f, "F1TECL") {
        assert_eq!(header_lines(&r, "content-length"), [body.len().to_string()]);
        assert!(header_lines(&r, "transfer-encoding").is_empty(), "{r}");
        assert_eq!(r["body"], body.as_str());
    }
    // The same over HTTP/2 (two content-type fields on one stream), and
    // unprivileged with curl.
    payment_refused_over_h2_and_curl(
        &f,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        "F1",
        "ambiguous-header",
    );
    assert_none_arrived(
        &f,
        &[
            "F1DUP",
            "F1LIST",
            "F1CHARSET",
            "F1ENC",
            "F1RANGE",
            "F1H2",
            "F1CURL",
        ],
    );

    // Control: one Content-Type, the same bytes: judged as JSON (100 USD)
    // and forwarded with exactly that one type.
    let out = smuggle(&f, "h1", &raw_post(json_ct, &polyglot("F1OK")));
    assert_eq!(out["status"], 200, "{out}");
    let got = arrived(&f, "F1OK");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(header_lines(&got[0], "content-type"), ["application/json"]);
    // A type written loosely goes on in one canonical spelling.
    let out = smuggle(
        &f,
        "h1",
        &raw_post(
            "Content-Type: Application/JSON; Charset=\"UTF-8\"; x=1\r\n",
            &polyglot("F1CANON"),
        ),
    );
    assert_eq!(out["status"], 200, "{out}");
    let got = arrived(&f, "F1CANON");
    assert_eq!(
        header_lines(&got[0], "content-type"),
        ["application/json; charset=utf-8"]
    );
}

#[test]
fn a_json_name_given_twice_never_reaches_the_upstream() {
    let Some(f) = start_smuggling("gw-smuggle-dupkey") else {
        return;
    };
    let post = |content: &str| {
        json!({"method": "POST", "path": "/v1/payment_intents", "content": content,
               "headers": {"Content-Type": "application/json"}})
    };
    let out = agent(
        &f.env,
        "finance-agent",
        "requests",
        &f.base(),
        &[
            post(r#"{"amount":99999,"currency":"usd","customer":"F2LAST","amount":100}"#),
            post(r#"{"amount":99999,"currency":"usd","customer":"F2ESC","\u0061mount":100}"#),
            post(r#"{"amount":100,"currency":"usd","customer":"F2DEEP","meta":{"k":1,"k":2}}"#),
            post(r#"{"amount":100,"currency":"usd","customer":"F2OK"}"#),
        ],
    );
    for o in &out[..3] {
        assert_eq!(o["status"], 400, "{o}");
        assert!(
            o["body"]["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("given twice")),
            "{o}"
        );
    }
    assert_eq!(out[3]["status"], 200, "the control: {}", out[3]);
    let text = curl(
        &f,
        true,
        &[
            "-s",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"amount":99999,"currency":"usd","customer":"F2CURL","amount":100}"#,
            &format!("{}/v1/payment_intents", f.base()),
        ],
    );
    assert!(text.contains("given twice"), "{text}");
    for tag in ["F2LAST", "F2ESC", "F2DEEP", "F2CURL"] {
        assert!(arrived(&f, tag).is_empty(), "{tag} reached the upstream");
    }
    assert_eq!(arrived(&f, "F2OK").len(), 1);

    // A remote MCP service: the JSON-RPC message is forwarded as sent, so
    // a first-wins server would run the first `name`.
    let base = format!("http://{}:9002", f.gateway());
    let rpc = |content: &str| {
        json!({"method": "POST", "path": "/mcp", "content": content,
               "headers": {"Content-Type": "application/json",
                           "Accept": "application/json, text/event-stream"}})
    };
    let out = agent(
        &f.env,
        "finance-agent",
        "requests",
        &base,
        &[
            rpc(
                r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"delete_all","name":"safe_read","arguments":{"tag":"F2MCPDUP"}}}"#,
            ),
            rpc(
                r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"delete_all","\u006eame":"safe_read","arguments":{"tag":"F2MCPESC"}}}"#,
            ),
            rpc(
                r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"safe_read","arguments":{"tag":"F2MCPOK"}}}"#,
            ),
        ],
    );
    for o in &out[..2] {
        assert_eq!(o["status"], 400, "{o}");
        assert_eq!(o["body"]["error"]["code"], -32700, "{o}");
        assert!(
            o["body"]["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("given twice")),
            "{o}"
        );
    }
    assert!(
        arrived(&f, "F2MCPDUP").is_empty(),
        "the duplicate reached the server"
    );
    assert!(
        arrived(&f, "F2MCPESC").is_empty(),
        "the escaped duplicate reached the server"
    );
    // Names in another letter case: Go's encoding/json matches them to
    // `name`, `method`, `arguments` (last one wins).
    let out = agent(
        &f.env,
        "finance-agent",
        "requests",
        &base,
        &[
            rpc(
                r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"safe_read","Name":"delete_all","arguments":{"tag":"F2CASE1"}}}"#,
            ),
            rpc(
                r#"{"jsonrpc":"2.0","id":8,"method":"ping","Method":"tools/call","params":{"name":"delete_all","arguments":{"tag":"F2CASE2"}}}"#,
            ),
            rpc(
                r#"{"jsonrpc":"2.0","id":9,"Method":"tools/call","result":{},"params":{"name":"delete_all","arguments":{"tag":"F2CASE3"}}}"#,
            ),
            rpc(
                r#"{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"safe_read","Arguments":{"tag":"F2CASE4"}}}"#,
            ),
        ],
    );
    for (o, code) in out.iter().zip([-32700, -32700, -32600, -32600]) {
        assert_eq!(o["status"], 400, "{o}");
        assert_eq!(o["body"]["error"]["code"], code, "{o}");
    }
    assert_none_arrived(&f, &["F2CASE1", "F2CASE2", "F2CASE3", "F2CASE4"]);
    // The control reached the server.
    let ok = arrived(&f, "F2MCPOK");
    assert_eq!(ok.len(), 1, "the control: {}", out[2]);
    assert_eq!(header_lines(&ok[0], "content-type"), ["application/json"]);
}

#[test]
fn the_credential_never_comes_back_in_trailers_the_reason_or_a_header_name() {
    let Some(f) = start_smuggling("gw-smuggle-trailer") else {
        return;
    };
    let redacted = "Bearer [redacted by palisade]";
    for unprivileged in [true, false] {
        // HTTP/2 carries trailers to the agent.
        let text = curl(
            &f,
            unprivileged,
            &[
                "-s",
                "-i",
                "--http2-prior-knowledge",
                &format!("{}/v1/trailer", f.base()),
            ],
        );
        assert!(text.starts_with("HTTP/2 200"), "{text}");
        assert!(
            !text.contains(&f.secret),
            "the secret reached the agent: {text}"
        );
        assert!(
            text.to_ascii_lowercase()
                .contains(&format!("x-auth: {}", redacted.to_ascii_lowercase())),
            "the trailer came through, scrubbed: {text}"
        );
        // HTTP/1.1 carries the reason phrase; a header's name, both.
        let text = curl(
            &f,
            unprivileged,
            &["-s", "-i", &format!("{}/v1/reason", f.base())],
        );
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            !text.contains(&f.secret),
            "the secret reached the agent: {text}"
        );
        assert!(text.ends_with("ok"), "{text}");
    }
    // A raw HTTP/2 client sees the trailers as frames.
    let h2 = json!({"headers": [[":method", "GET"], [":scheme", "http"], [":authority", "x"],
                                [":path", "/v1/trailer"]]});
    let out = smuggle(&f, "h2", &h2.to_string());
    assert_eq!(out["status"], 200, "{out}");
    assert!(!out.to_string().contains(&f.secret), "{out}");
    assert!(
        out["trailers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t[0] == "x-auth" && t[1] == redacted),
        "{out}"
    );
    // A compressed answer the scrubber cannot read is refused whole,
    // however the compression is declared.
    for path in ["/v1/gzip", "/v1/gzip-twice", "/v1/gzip-te", "/v1/utf16"] {
        for unprivileged in [true, false] {
            let text = curl(
                &f,
                unprivileged,
                &["-s", "--compressed", &format!("{}{path}", f.base())],
            );
            assert!(text.contains("unscrubbable-response"), "{path}: {text}");
            assert!(
                !text.contains(&f.secret),
                "{path}: the secret reached the agent: {text}"
            );
        }
        assert_eq!(
            f.upstream
                .requests()
                .iter()
                .filter(|r| r["path"] == path)
                .count(),
            2,
            "{path}: the upstream answered both (and compressed the credential)"
        );
    }
    // A credential with `/` and `+`, echoed JSON-escaped, percent-encoded
    // and as HTML references: no spelling of it reaches the agent.
    let secret = format!("{}/x+y/z==", f.secret);
    std::fs::write(&f.secret_file, format!("{secret}\n")).unwrap_or_else(|e| panic!("{e}"));
    f.env.cli_ok(&["reload"]);
    let spelled = [
        secret.clone(),
        secret.replace('/', "\\/"),
        secret.replace('/', "%2F").replace('+', "%2B"),
        secret.replace('/', "&#47;").replace('+', "&#43;"),
        secret.replace('+', "%2B"),
        secret.replace('+', "\\u002B"),
        secret.replace('=', "\\u003d"),
        secret.replace('+', "&#43;"),
        secret.replace('/', "%252F").replace('+', "%252B"),
        secret.replace('/', "&amp;#47;").replace('+', "&amp;#43;"),
        secret.replace('/', "\\\\\\/"),
        secret
            .replace('/', "\\/")
            .replace('+', "\\+")
            .replace('=', "\\="),
        secret
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_string()
                } else {
                    format!("&#{};", c as u32)
                }
            })
            .collect::<String>(),
    ];
    for unprivileged in [true, false] {
        let text = curl(
            &f,
            unprivileged,
            &["-s", "-i", &format!("{}/v1/escaped", f.base())],
        );
        assert!(text.contains("HTTP/1.1 200"), "{text}");
        for s in &spelled {
            assert!(
                !text.contains(s.as_str()),
                "`{s}` reached the agent: {text}"
            );
        }
        assert!(text.contains("[redacted by palisade]"), "{text}");
    }
    let echoed: Vec<Value> = f
        .upstream
        .requests()
        .into_iter()
        .filter(|r| r["path"] == "/v1/escaped")
        .collect();
    assert_eq!(echoed.len(), 2);
    assert!(
        echoed
            .iter()
            .all(|r| r["headers"]["authorization"] == format!("Bearer {secret}")),
        "the upstream got the new credential: {echoed:?}"
    );
    // The upstream did get the credential, and echoed it each time.
    let reqs: Vec<Value> = f
        .upstream
        .requests()
        .into_iter()
        .filter(|r| r["path"] == "/v1/trailer" || r["path"] == "/v1/reason")
        .collect();
    assert_eq!(reqs.len(), 5, "{reqs:?}");
    assert!(
        reqs.iter()
            .all(|r| r["headers"]["authorization"] == format!("Bearer {}", f.secret))
    );
}

#[test]
fn an_approval_is_spent_only_by_the_request_it_was_given_for() {
    let Some(f) = start_smuggling("gw-smuggle-approval") else {
        return;
    };
    // A harmless-looking read waits for approval; the agent gives up.
    let out = agent(
        &f.env,
        "finance-agent",
        "requests",
        &f.base(),
        &[json!({"method": "GET", "path": "/v1/ops/reports-1", "timeout": 1})],
    );
    assert_eq!(out[0]["status"], 0, "held: {}", out[0]);
    let get_id = palisade_tests::gateway::pending_approval(&f.env);
    // The same path with DELETE, held while the operator approves the read.
    let delete = agent_cmd(
        &f.env,
        "finance-agent",
        "requests",
        &f.base(),
        &[json!({"method": "DELETE", "path": "/v1/ops/reports-1", "timeout": 4})],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap_or_else(|e| panic!("agent: {e}"));
    std::thread::sleep(Duration::from_millis(1500));
    f.env
        .cli_ok(&["approve", &get_id, "--reason", "a read is fine"]);
    let out = parse_agent(&delete.wait_with_output().unwrap_or_else(|e| panic!("{e}")));
    assert_ne!(out[0]["status"], 200, "the DELETE went through: {}", out[0]);
    let deletes: Vec<Value> = f
        .upstream
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "DELETE")
        .collect();
    assert!(deletes.is_empty(), "the upstream ran {deletes:?}");
    // The operator sees each request's method and path.
    let list: Value = serde_json::from_str(&f.env.cli_ok(&["approvals", "--json"]))
        .unwrap_or_else(|e| panic!("{e}"));
    let resources: Vec<&str> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["resource"].as_str())
        .collect();
    assert!(
        resources.contains(&"stripe: DELETE /v1/ops/reports-1"),
        "pending: {list}"
    );
    let text = f.env.cli_ok(&["approvals"]);
    assert!(text.contains("stripe: DELETE /v1/ops/reports-1"), "{text}");
    // Control: the read sent again goes through once, on the approval
    // given for it.
    let out = agent(
        &f.env,
        "finance-agent",
        "requests",
        &f.base(),
        &[json!({"method": "GET", "path": "/v1/ops/reports-1", "timeout": 20})],
    );
    assert_eq!(out[0]["status"], 200, "{}", out[0]);
    assert_eq!(out[0]["body"]["op"], "GET");
    let spent = f.env.wait_audit("the read's approved record", |e| {
        e["kind"] == "gateway" && e["reason"] == "approved"
    });
    assert_eq!(spent["call"]["approval_id"], get_id.as_str(), "{spent}");
    let ops: Vec<Value> = f
        .upstream
        .requests()
        .into_iter()
        .filter(|r| r["path"] == "/v1/ops/reports-1")
        .collect();
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(ops[0]["method"], "GET");
    let ev = f.env.wait_audit("the DELETE's approval request", |e| {
        e["reason"] == "approval-requested"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("DELETE /v1/ops/reports-1"))
    });
    assert_eq!(ev["call"]["resource"], "stripe: DELETE /v1/ops/reports-1");
}

#[test]
fn routing_overrides_never_reach_the_upstream() {
    let Some(f) = start_smuggling("gw-smuggle-override") else {
        return;
    };
    let overrides = [
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
        ("X-Method-Override", "DELETE"),
        ("X-Original-Method", "DELETE"),
        ("X-Original-URL", "/v1/admin/x"),
        ("X-Rewrite-URL", "/v1/admin/x"),
    ];
    let reqs: Vec<Value> = overrides
        .iter()
        .enumerate()
        .map(|(i, (h, v))| {
            json!({"method": "GET", "path": format!("/v1/customers/cus_f5over{i}"),
                   "headers": {*h: v}})
        })
        .chain([
            json!({"method": "GET", "path": "/v1/customers/cus_f5fwd",
                   "headers": {"X-Forwarded-For": "10.0.0.1", "X-Forwarded-Host": "admin.internal",
                               "X-Forwarded-Prefix": "/v1/admin", "Forwarded": "for=10.0.0.1;host=admin",
                               "X-Real-IP": "10.0.0.1", "True-Client-IP": "10.0.0.1",
                               "CF-Connecting-IP": "10.0.0.1", "X-Client-IP": "10.0.0.1",
                               "X-Host": "admin.internal", "Range": "bytes=0-3",
                               "If-Range": "\"x\"", "Cookie": "amount=99999; customer=attacker",
                               "Remote-User": "admin", "X-Goog-Authenticated-User-Email": "admin@corp",
                               "X-Auth-Request-User": "admin"}}),
            json!({"method": "GET", "path": "/v1/customers/cus_f5ok"}),
        ])
        .collect();
    let out = agent(&f.env, "finance-agent", "requests", &f.base(), &reqs);
    for (i, (h, _)) in overrides.iter().enumerate() {
        assert_eq!(out[i]["status"], 400, "{h}: {}", out[i]);
        assert_eq!(out[i]["body"]["error"]["reason"], "routing-override", "{h}");
        assert!(
            out[i]["body"]["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(&h.to_ascii_lowercase())),
            "{h}: {}",
            out[i]
        );
    }
    let n = overrides.len();
    // A path a servlet container reads otherwise (`..;` is `..` to it).
    let semis = agent(
        &f.env,
        "finance-agent",
        "requests",
        &f.base(),
        &[
            json!({"method": "GET", "path": "/v1/customers/..;/admin-f5semi"}),
            json!({"method": "GET", "path": "/v1/customers/cus_f5semi;v=1"}),
            json!({"method": "GET", "path": "/v1/customers/cus_f5semi%3bv=1"}),
        ],
    );
    for o in &semis {
        assert_eq!(o["status"], 403, "{o}");
        assert_eq!(o["body"]["error"]["reason"], "no-route", "{o}");
    }
    assert!(
        arrived(&f, "f5semi").is_empty(),
        "{:?}",
        arrived(&f, "f5semi")
    );
    assert_eq!(out[n]["status"], 200, "{}", out[n]);
    assert_eq!(out[n + 1]["status"], 200, "the control: {}", out[n + 1]);
    let text = curl(
        &f,
        true,
        &[
            "-s",
            "-H",
            "X-HTTP-Method-Override: DELETE",
            &format!("{}/v1/customers/cus_f5curl", f.base()),
        ],
    );
    assert!(text.contains("routing-override"), "{text}");
    assert!(arrived(&f, "cus_f5over").is_empty(), "an override arrived");
    assert!(arrived(&f, "cus_f5curl").is_empty(), "an override arrived");
    assert_eq!(arrived(&f, "cus_f5ok").len(), 1);
    let fwd = arrived(&f, "cus_f5fwd");
    assert_eq!(fwd.len(), 1);
    for name in [
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-prefix",
        "forwarded",
        "x-real-ip",
        "true-client-ip",
        "cf-connecting-ip",
        "x-client-ip",
        "x-host",
        "range",
        "if-range",
        "cookie",
        "remote-user",
        "x-goog-authenticated-user-email",
        "x-auth-request-user",
    ] {
        assert!(
            header_lines(&fwd[0], name).is_empty(),
            "{name} arrived: {}",
            fwd[0]
        );
    }
}

#[test]
fn a_body_on_a_method_servers_need_not_read_never_reaches_the_upstream() {
    let Some(f) = start_smuggling("gw-smuggle-cl0") else {
        return;
    };
    // The body is a whole second request: a server that leaves a GET's
    // body unread takes it for the next request on the gateway's
    // connection, with the service's credential.
    let inner = "POST /v1/payment_intents HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 47\r\n\r\namount=99999&currency=usd&customer=cus_CL0INNER";
    for (tag, method, path) in [
        ("CL0GET", "GET", "/v1/customers/cus_cl0get"),
        ("CL0DEL", "DELETE", "/v1/ops/cl0del"),
        ("CL0MCP", "GET", "/mcp"),
    ] {
        let port = if path == "/mcp" { "9002" } else { "9001" };
        let script = python_dir().join("smuggle.py");
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{inner}",
            inner.len()
        );
        let out = exec(
            &f.env,
            "finance-agent",
            &gateway_python(),
            &[&script.to_string_lossy(), "h1", &f.gateway(), port, &raw],
        )
        .output()
        .unwrap_or_else(|e| panic!("smuggle.py: {e}"));
        let out = parse_agent(&out)[0].clone();
        assert_eq!(out["status"], 400, "{tag}: {out}");
        assert_eq!(
            out["body"]["error"]["reason"], "unexpected-body",
            "{tag}: {out}"
        );
    }
    // Over HTTP/2, and unprivileged with curl.
    let h2 = json!({"headers": [[":method", "GET"], [":scheme", "http"], [":authority", "x"],
                                [":path", "/v1/customers/cus_cl0h2"]],
                    "body": inner});
    let out = smuggle(&f, "h2", &h2.to_string());
    assert_eq!(out["status"], 400, "{out}");
    assert_eq!(out["body"]["error"]["reason"], "unexpected-body", "{out}");
    let text = curl(
        &f,
        true,
        &[
            "-s",
            "-X",
            "GET",
            "--data-binary",
            inner,
            &format!("{}/v1/customers/cus_cl0curl", f.base()),
        ],
    );
    assert!(text.contains("unexpected-body"), "{text}");
    assert_none_arrived(&f, &["cl0get", "cl0del", "cl0h2", "cl0curl", "CL0INNER"]);
    let posts: Vec<Value> = f
        .upstream
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "POST")
        .collect();
    assert!(
        posts.is_empty(),
        "a request reached the upstream as POST: {posts:?}"
    );
    // Control: the same reads without a body go through.
    let text = curl(
        &f,
        true,
        &["-s", &format!("{}/v1/customers/cus_cl0ok", f.base())],
    );
    assert!(text.contains("cus_cl0ok"), "{text}");
    assert_eq!(arrived(&f, "cus_cl0ok").len(), 1);
}

#[test]
fn a_header_read_two_ways_or_dropped_after_judging_never_reaches_the_upstream() {
    let Some(f) = start_smuggling("gw-smuggle-names") else {
        return;
    };
    let json_ct = "Content-Type: application/json\r\n";
    // A name with `_`: CGI and WSGI servers read it as its `-` spelling.
    for (tag, headers, named) in [
        (
            "N1OVERRIDE",
            format!("{json_ct}X_HTTP_Method_Override: DELETE\r\n"),
            "x-http-method-override",
        ),
        (
            "N1FWD",
            format!("{json_ct}X_Forwarded_For: 203.0.113.9\r\n"),
            "x-forwarded-for",
        ),
        // PHP reads `.` as `_` too.
        (
            "N1DOT",
            format!("{json_ct}X.HTTP.Method.Override: DELETE\r\n"),
            "x-http-method-override",
        ),
        (
            "N1DOTIP",
            format!("{json_ct}X-Real.IP: 203.0.113.9\r\n"),
            "x-real-ip",
        ),
        // `Connection` naming the header the body was judged by: it
        // would be dropped on the way out, and a form reader would take
        // the JSON's text for form pairs.
        (
            "N1CONNCT",
            format!("{json_ct}Connection: content-type\r\n"),
            "names `content-type`",
        ),
        (
            "N1CONNAUTH",
            format!("{json_ct}Connection: keep-alive, Authorization\r\n"),
            "names `Authorization`",
        ),
    ] {
        let raw = raw_post(&headers, &polyglot(tag));
        let out = smuggle(&f, "h1", &raw);
        assert_eq!(out["status"], 400, "{tag}: {out}");
        assert_eq!(
            out["body"]["error"]["reason"], "ambiguous-header",
            "{tag}: {out}"
        );
        assert!(
            out["body"]["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(named)),
            "{tag}: {out}"
        );
    }
    payment_refused_over_h2_and_curl(
        &f,
        &[("X_HTTP_Method_Override", "DELETE")],
        "N1",
        "ambiguous-header",
    );
    payment_refused_over_h2_and_curl(
        &f,
        &[("X.HTTP.Method.Override", "DELETE")],
        "N1DOT",
        "ambiguous-header",
    );
    assert_none_arrived(
        &f,
        &[
            "N1OVERRIDE",
            "N1FWD",
            "N1DOT",
            "N1DOTIP",
            "N1CONNCT",
            "N1CONNAUTH",
            "N1H2",
            "N1CURL",
            "N1DOTH2",
            "N1DOTCURL",
        ],
    );
    // Control: `Connection: keep-alive` is the connection's own; the
    // request arrives with the type it was judged by.
    let raw = raw_post(
        &format!("{json_ct}Connection: keep-alive\r\n"),
        &polyglot("N1OK"),
    );
    let out = smuggle(&f, "h1", &raw);
    assert_eq!(out["status"], 200, "{out}");
    let got = arrived(&f, "N1OK");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(header_lines(&got[0], "content-type"), ["application/json"]);
}

#[test]
fn number_text_a_server_would_read_otherwise_never_reaches_the_upstream() {
    let Some(f) = start_smuggling("gw-smuggle-numbers") else {
        return;
    };
    let form = |amount: &str, customer: &str| {
        json!({"method": "POST", "path": "/v1/payment_intents",
               "content": format!("amount={amount}&currency=usd&customer={customer}"),
               "headers": {"Content-Type": "application/x-www-form-urlencoded"}})
    };
    // `99999e-100` is almost 0 to a float parser and 99,999 to
    // JavaScript's parseInt or Ruby's to_i; `;` splits pairs for some
    // servers, so `customer` would end and `amount` begin again.
    let out = agent(
        &f.env,
        "finance-agent",
        "requests",
        &f.base(),
        &[
            form("99999e-100", "cus_numexp"),
            form("%2B100", "cus_numplus"),
            form("0100", "cus_numzero"),
            form("100", "cus_numsemi;amount=99999"),
            form("100", "cus_numok"),
        ],
    );
    for (i, why) in [
        (0, "parameter-type"),
        (1, "parameter-type"),
        (2, "parameter-type"),
    ] {
        assert_eq!(out[i]["status"], 403, "{i}: {}", out[i]);
        assert_eq!(out[i]["body"]["error"]["reason"], why, "{i}: {}", out[i]);
    }
    assert_eq!(out[3]["status"], 400, "{}", out[3]);
    assert!(
        out[3]["body"]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("`;`")),
        "{}",
        out[3]
    );
    // Unprivileged, in the query string of a read.
    let text = curl(
        &f,
        true,
        &[
            "-s",
            "-H",
            "Content-Type: application/x-www-form-urlencoded",
            "--data-binary",
            "amount=99999e-100&currency=usd&customer=cus_numcurl",
            &format!("{}/v1/payment_intents", f.base()),
        ],
    );
    assert!(text.contains("parameter-type"), "{text}");
    assert_none_arrived(
        &f,
        &[
            "cus_numexp",
            "cus_numplus",
            "cus_numzero",
            "cus_numsemi",
            "cus_numcurl",
        ],
    );
    // Control: the amount in plain decimal is judged and paid.
    assert_eq!(out[4]["status"], 200, "the control: {}", out[4]);
    let got = arrived(&f, "cus_numok");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["body"], "amount=100&currency=usd&customer=cus_numok");
}

#[test]
fn an_approval_is_spent_only_on_the_service_it_was_given_for() {
    let Some(f) = start_smuggling("gw-smuggle-approval-svc") else {
        return;
    };
    // A second service of the same tool and routes, another upstream:
    // a sandbox and a live account of one API.
    let up_ip = format!("127.170.{}.2", f.net);
    let pki = f.env.dir.join("pki");
    let ca = TestCa {
        ca: pki.join("ca.pem"),
        cert: pki.join("server.pem"),
        key: pki.join("server.key"),
    };
    assert!(
        ca.cert.exists(),
        "the fixture's certificate moved: {ca:?}",
        ca = ca.cert
    );
    let live = Upstream::start(&f.env, &up_ip, 8444, Some(&ca));
    let text = std::fs::read_to_string(f.env.dir.join("policy.yaml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .replace(
            "identities:\n",
            &format!(
                "  - id: stripe-live\n    tool: stripe\n    url: https://upstream.test:8444\n    address: {up_ip}:8444\n    ca_file: {ca}\n    port: 9003\n    approval_timeout: 30s\n    credential: {{header: Authorization, prefix: \"Bearer \", file: {secret}}}\n    routes:\n      - {{id: ops-live, method: \"*\", path: \"/v1/ops/{{rest*}}\", action: ops}}\nidentities:\n",
                ca = ca.ca.display(),
                secret = f.secret_file.display()
            ),
        );
    f.env.write_policy(&text);
    f.env.cli_ok(&["reload"]);
    let live_base = format!("http://{}:9003", f.gateway());
    // Held on the sandbox; the agent gives up; the operator approves.
    let out = agent(
        &f.env,
        "finance-agent",
        "requests",
        &f.base(),
        &[json!({"method": "GET", "path": "/v1/ops/svc-1", "timeout": 1})],
    );
    assert_eq!(out[0]["status"], 0, "held: {}", out[0]);
    let id = palisade_tests::gateway::pending_approval(&f.env);
    let shown = f.env.cli_ok(&["approvals"]);
    f.env.cli_ok(&["approve", &id, "--reason", "sandbox read"]);
    // The same request to the live service is held anew, not forwarded.
    let out = agent(
        &f.env,
        "finance-agent",
        "requests",
        &live_base,
        &[json!({"method": "GET", "path": "/v1/ops/svc-1", "timeout": 2})],
    );
    assert_ne!(
        out[0]["status"], 200,
        "spent on the live service: {}",
        out[0]
    );
    assert!(
        live.requests().is_empty(),
        "the live upstream ran {:?}",
        live.requests()
    );
    // The operator saw which service the approval was for.
    assert!(shown.contains("stripe: GET /v1/ops/svc-1"), "{shown}");
    let ev = f.env.wait_audit("the live request's own approval", |e| {
        e["reason"] == "approval-requested"
            && e["call"]["resource"] == "stripe-live: GET /v1/ops/svc-1"
    });
    assert_ne!(ev["call"]["approval_id"], id.as_str(), "{ev}");
    // Control: on the service it was given for, it is spent once.
    let out = agent(
        &f.env,
        "finance-agent",
        "requests",
        &f.base(),
        &[json!({"method": "GET", "path": "/v1/ops/svc-1", "timeout": 20})],
    );
    assert_eq!(out[0]["status"], 200, "{}", out[0]);
    let ops: Vec<Value> = f
        .upstream
        .requests()
        .into_iter()
        .filter(|r| r["path"] == "/v1/ops/svc-1")
        .collect();
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert!(live.requests().is_empty(), "{:?}", live.requests());
}

#[test]
fn a_remote_mcp_session_is_its_identitys_alone() {
    let Some(f) = start_smuggling("gw-smuggle-session") else {
        return;
    };
    let base = format!("http://{}:9002", f.gateway());
    let rpc = |id: u32, method: &str, session: Option<&str>| {
        let mut headers = json!({"Content-Type": "application/json",
                                 "Accept": "application/json, text/event-stream"});
        if let Some(s) = session {
            headers["Mcp-Session-Id"] = json!(s);
        }
        json!({"method": "POST", "path": "/mcp", "headers": headers,
               "content": json!({"jsonrpc": "2.0", "id": id, "method": method,
                                 "params": {"tag": format!("SESS{id}")}}).to_string()})
    };
    let out = agent(
        &f.env,
        "finance-agent",
        "requests",
        &base,
        &[rpc(1, "initialize", None)],
    );
    assert_eq!(out[0]["status"], 200, "{}", out[0]);
    let session = out[0]["headers"]["mcp-session-id"]
        .as_str()
        .or_else(|| out[0]["headers"]["Mcp-Session-Id"].as_str())
        .unwrap_or_else(|| panic!("no session issued: {}", out[0]))
        .to_string();
    // Another identity presenting it: no such session, nothing forwarded.
    let sid = session.as_str();
    let stolen = [
        rpc(2, "tools/list", Some(sid)),
        json!({"method": "GET", "path": "/mcp", "headers": {"Mcp-Session-Id": sid,
                                                            "Accept": "text/event-stream"},
               "timeout": 3}),
        json!({"method": "DELETE", "path": "/mcp", "headers": {"Mcp-Session-Id": sid}}),
    ];
    let out = agent(&f.env, "other-agent", "requests", &base, &stolen);
    for o in &out {
        assert_eq!(o["status"], 404, "{o}");
    }
    // Under a name a PHP server reads as Mcp-Session-Id: refused, and the
    // session stays its owner's.
    let mut dotted = rpc(4, "tools/list", None);
    dotted["headers"]["Mcp.Session.Id"] = json!(sid);
    let out = agent(&f.env, "other-agent", "requests", &base, &[dotted]);
    assert_eq!(out[0]["status"], 400, "{}", out[0]);
    assert!(arrived(&f, "SESS4").is_empty());
    let text = curl(
        &f,
        true,
        &[
            "-s",
            "-H",
            "Content-Type: application/json",
            "-H",
            &format!("Mcp-Session-Id: {sid}"),
            "--data-binary",
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{"tag":"SESS3"}}"#,
            &base.replace(":9002", ":9002/mcp"),
        ],
    );
    // curl runs as finance-agent: its own session works (the control).
    assert!(text.contains(sid), "{text}");
    let by_session: Vec<Value> = f
        .upstream
        .requests()
        .into_iter()
        .filter(|r| r["path"] == "/mcp" && r["headers"]["mcp-session-id"] == sid)
        .collect();
    assert_eq!(
        by_session.len(),
        1,
        "only the owner's request arrived: {by_session:?}"
    );
    assert!(arrived(&f, "SESS2").is_empty());
    // A request named like a notification but carrying an id is judged.
    let out = agent(
        &f.env,
        "finance-agent",
        "requests",
        &base,
        &[json!({"method": "POST", "path": "/mcp",
                 "headers": {"Content-Type": "application/json", "Mcp-Session-Id": sid},
                 "content": r#"{"jsonrpc":"2.0","id":9,"method":"notifications/../tools/call","params":{"name":"delete_all","arguments":{"tag":"SESSNOTE"}}}"#})],
    );
    assert!(
        out[0]["body"]["error"]["code"].is_i64(),
        "judged and refused: {}",
        out[0]
    );
    assert!(arrived(&f, "SESSNOTE").is_empty());
}
