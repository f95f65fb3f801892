//! MCP through the gateway: a real MCP server built with the official
//! Python SDK behind the gateway, and agents using the official MCP client
//! under `palisade exec`. The server logs every tool call it executes, so
//! each test sees what reached it.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use palisade_tests::{
    DaemonProc, TestEnv,
    gateway::{
        McpServer, agent, config, exec, gateway_events, gateway_python, parse_agent, python_dir,
        subnet,
    },
    root_or_skip, wait_for,
};
use serde_json::{Value, json};

/// `tests/python/mcp_server.py` over streamable HTTP, logging every tool
/// call it executes, until dropped.
struct CallServer {
    _server: McpServer,
    log: PathBuf,
}

impl CallServer {
    fn start(env: &TestEnv, addr: &str, port: u16) -> Self {
        let log = env.dir.join("mcp-calls.jsonl");
        let port_text = port.to_string();
        let args = [
            "--http".as_ref(),
            addr.as_ref(),
            port_text.as_ref(),
            "--log".as_ref(),
            log.as_os_str(),
        ];
        Self {
            _server: McpServer::start("mcp_server.py", &args, addr, port),
            log,
        }
    }
}

fn calls(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn policy(net: u32, secret_file: &Path, extra_services: &str) -> String {
    format!(
        r#"version: 1
label: mcp-test
services:
  - id: tools
    kind: mcp
    url: http://127.170.{net}.3:8000/mcp
    port: 9101
    credential: {{header: Authorization, prefix: "Bearer ", file: {secret}}}
    mask: [ssn]
{extra_services}identities:
  - id: mcp-agent
    tools:
      allow:
        - {{id: weather, tool: "tools*", actions: [get_weather]}}
        - {{id: issues, tool: "tools*", actions: [create_issue], when: "params.title.size() < 40"}}
        - {{id: patients, tool: "tools*", actions: [lookup_patient]}}
      deny:
        - {{id: no-deletes, tool: "tools*", actions: ["delete_*"]}}
  - id: other-agent
    tools:
      allow:
        - {{id: other-weather, tool: "tools*", actions: [get_weather]}}
"#,
        secret = secret_file.display()
    )
}

/// The official MCP client, enrolled: tool list, then each call's outcome.
fn mcp_agent(env: &TestEnv, identity: &str, url: &str, calls: Value) -> Vec<Value> {
    let script = python_dir().join("agent_mcp.py");
    let out = exec(
        env,
        identity,
        &gateway_python(),
        &[&script.to_string_lossy(), url, &calls.to_string()],
    )
    .output()
    .unwrap_or_else(|e| panic!("agent_mcp: {e}"));
    parse_agent(&out)
}

struct Fixture {
    // The daemon is dropped before the environment it runs in.
    _daemon: DaemonProc,
    server: CallServer,
    net: u32,
    secret: String,
    env: TestEnv,
}

fn start(name: &str, extra_services: &str) -> Option<Fixture> {
    if !root_or_skip(name) {
        return None;
    }
    let net = subnet();
    let env = TestEnv::new(name, "version: 1\n");
    let secret = format!("ghp_test_{}{}", std::process::id(), net * 104_729);
    let secret_file = env.dir.join("mcp.key");
    std::fs::write(&secret_file, &secret).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(
        &secret_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let extra = extra_services
        .replace("SECRET_FILE", &secret_file.display().to_string())
        .replace(
            "LOGFILE",
            &env.dir.join("stdio-calls.jsonl").display().to_string(),
        );
    env.write_policy(&policy(net, &secret_file, &extra));
    env.write_config(&config(net, ""));
    let server = CallServer::start(&env, &format!("127.170.{net}.3"), 8000);
    let daemon = DaemonProc::start(&env);
    Some(Fixture {
        env,
        _daemon: daemon,
        server,
        net,
        secret,
    })
}

#[test]
fn tool_lists_are_filtered_and_forbidden_calls_refused() {
    let Some(f) = start("gw-mcp", "") else { return };
    let url = format!("http://127.170.{}.1:9101/mcp", f.net);
    let out = mcp_agent(
        &f.env,
        "mcp-agent",
        &url,
        json!([
            ["get_weather", {"city": "Oslo"}],
            ["delete_repo", {"name": "prod"}],
            ["create_issue", {"title": "a title far too long for the policy to allow it"}],
            ["create_issue", {"title": "short"}],
            ["lookup_patient", {"patient_id": "p-1"}],
        ]),
    );
    assert_eq!(
        out[0]["tools"],
        json!(["create_issue", "get_weather", "lookup_patient"]),
        "delete_repo is hidden"
    );
    assert_eq!(out[1]["is_error"], false, "{}", out[1]);
    assert!(
        out[1]["text"][0]
            .as_str()
            .is_some_and(|t| t.contains("Oslo"))
    );
    let denied = out[2]["error"].as_str().unwrap_or_default();
    assert!(
        denied.contains("palisade:") && denied.contains("denied-by-rule"),
        "the client shows the refusal: {}",
        out[2]
    );
    assert!(
        out[3]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no-matching-rule")),
        "{}",
        out[3]
    );
    assert_eq!(out[4]["is_error"], false, "{}", out[4]);
    let patient = out[5]["text"][0].as_str().unwrap_or_default();
    assert!(
        patient.contains("Jane Roe") && patient.contains("[masked]"),
        "{patient}"
    );
    assert!(
        !patient.contains("078-05-1120"),
        "the ssn reached the agent"
    );
    assert!(!out.iter().any(|o| o.to_string().contains(&f.secret)));

    // At the far end: only the allowed calls, each with the credential.
    let got = calls(&f.server.log);
    let tools: Vec<&str> = got.iter().filter_map(|c| c["tool"].as_str()).collect();
    assert_eq!(
        tools,
        ["get_weather", "create_issue", "lookup_patient"],
        "{got:?}"
    );
    assert!(
        got.iter()
            .all(|c| c["authorization"] == format!("Bearer {}", f.secret))
    );

    let ev = f.env.wait_audit("refused MCP call", |e| {
        e["kind"] == "gateway" && e["call"]["action"] == "delete_repo"
    });
    assert_eq!(ev["verdict"], "deny");
    assert_eq!(ev["rule"], "no-deletes");
    assert_eq!(ev["http"]["mcp_method"], "tools/call");
    assert_eq!(ev["call"]["tool"], "tools");
    let list = f
        .env
        .wait_audit("tools/list", |e| e["http"]["mcp_method"] == "tools/list");
    assert_eq!(list["detail"], "3 of 4 tools listed", "{list}");
}

#[test]
fn garbage_mcp_messages_get_json_rpc_errors() {
    let Some(f) = start("gw-mcp-garbage", "") else {
        return;
    };
    let base = format!("http://127.170.{}.1:9101", f.net);
    let post = |content: &str| {
        json!({"method": "POST", "path": "/mcp", "content": content,
               "headers": {"Content-Type": "application/json",
                           "Accept": "application/json, text/event-stream"}})
    };
    let out = agent(
        &f.env,
        "mcp-agent",
        "requests",
        &base,
        &[
            post("\u{1}\u{2} not json"),
            post(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#),
            post(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":7}}"#),
            post(
                r#"{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"file:///etc/shadow"}}"#,
            ),
            post(r#"{"id":4,"method":"tools/call"}"#),
            json!({"method": "PUT", "path": "/mcp"}),
            json!({"method": "GET", "path": "/other"}),
        ],
    );
    let code = |i: usize| out[i]["body"]["error"]["code"].as_i64();
    assert_eq!(
        (out[0]["status"].clone(), code(0)),
        (json!(400), Some(-32700)),
        "{}",
        out[0]
    );
    assert_eq!(
        (out[1]["status"].clone(), code(1)),
        (json!(400), Some(-32600)),
        "{}",
        out[1]
    );
    assert!(
        out[1]["body"]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("batches"))
    );
    assert_eq!(
        (out[2]["status"].clone(), code(2)),
        (json!(200), Some(-32602)),
        "{}",
        out[2]
    );
    assert_eq!(out[2]["body"]["id"], 2);
    // Not a protocol method, not allowed: judged and refused.
    assert_eq!(code(3), Some(-32001), "{}", out[3]);
    assert_eq!(
        out[3]["body"]["error"]["data"]["reason"],
        "no-matching-rule"
    );
    assert_eq!(code(4), Some(-32600), "{}", out[4]);
    assert_eq!(out[5]["status"], 405);
    assert_eq!(out[6]["status"], 404);
    assert!(calls(&f.server.log).is_empty());
    // Another identity is served all along.
    let ok = mcp_agent(
        &f.env,
        "other-agent",
        &format!("{base}/mcp"),
        json!([["get_weather", {"city": "Rome"}]]),
    );
    assert_eq!(ok[0]["tools"], json!(["get_weather"]));
    assert_eq!(ok[1]["is_error"], false);
    wait_for(Duration::from_secs(5), || {
        (gateway_events(&f.env)
            .iter()
            .filter(|e| e["reason"] == "bad-mcp-message")
            .count()
            >= 3)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("bad messages recorded: {:?}", gateway_events(&f.env)));
}

#[test]
fn a_stdio_server_runs_outside_the_agent_with_secrets_it_never_sees() {
    let extra = format!(
        r#"  - id: local-tools
    kind: mcp
    tool: tools-local
    command: [{python}, {server}, --stdio, --log, LOGFILE]
    env:
      SERVICE_TOKEN: {{file: SECRET_FILE}}
      MODE: {{value: test}}
    port: 9102
    mask: [ssn]
"#,
        python = gateway_python().display(),
        server = python_dir().join("mcp_server.py").display(),
    );
    let Some(f) = start("gw-mcp-stdio", &extra) else {
        return;
    };
    let log = f.env.dir.join("stdio-calls.jsonl");

    let url = format!("http://127.170.{}.1:9102/mcp", f.net);
    let out = mcp_agent(
        &f.env,
        "mcp-agent",
        &url,
        json!([
            ["get_weather", {"city": "Lima"}],
            ["delete_repo", {"name": "prod"}],
            ["lookup_patient", {"patient_id": "p-2"}],
        ]),
    );
    assert_eq!(
        out[0]["tools"],
        json!(["create_issue", "get_weather", "lookup_patient"])
    );
    assert_eq!(out[1]["is_error"], false, "{}", out[1]);
    assert!(
        out[2]["error"]
            .as_str()
            .is_some_and(|e| e.contains("denied-by-rule")),
        "{}",
        out[2]
    );
    let patient = out[3]["text"][0].as_str().unwrap_or_default();
    assert!(
        patient.contains("[masked]") && !patient.contains("078-05-1120"),
        "{patient}"
    );
    assert!(
        patient.contains("[redacted by palisade]"),
        "the echoed token is scrubbed: {patient}"
    );
    assert!(!out.iter().any(|o| o.to_string().contains(&f.secret)));

    // The server had the secret, ran outside the agent's cgroup, and got
    // only the allowed calls.
    let got = calls(&log);
    let tools: Vec<&str> = got.iter().filter_map(|c| c["tool"].as_str()).collect();
    assert_eq!(tools, ["get_weather", "lookup_patient"], "{got:?}");
    assert_eq!(got[0]["env_token"], f.secret.as_str());
    let cgroup = got[0]["cgroup"].as_str().unwrap_or_default();
    assert!(
        !cgroup.contains("palisade-test-gw-mcp-stdio"),
        "the server ran in {cgroup}"
    );

    // A session belongs to the identity that opened it.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"}}});
    let base = format!("http://127.170.{}.1:9102", f.net);
    let hdrs = json!({"Content-Type": "application/json", "Accept": "application/json, text/event-stream"});
    let a = agent(
        &f.env,
        "mcp-agent",
        "requests",
        &base,
        &[json!({"method": "POST", "path": "/mcp", "content": init.to_string(), "headers": hdrs})],
    );
    assert_eq!(a[0]["status"], 200, "{}", a[0]);
    let sid = a[0]["headers"]["mcp-session-id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!sid.is_empty(), "{}", a[0]);
    let mut stolen = hdrs.clone();
    stolen["mcp-session-id"] = json!(sid);
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                      "params": {"name": "get_weather", "arguments": {"city": "Kyiv"}}});
    let b = agent(
        &f.env,
        "other-agent",
        "requests",
        &base,
        &[
            json!({"method": "POST", "path": "/mcp", "content": call.to_string(), "headers": stolen}),
        ],
    );
    assert_eq!(b[0]["status"], 404, "another identity's session: {}", b[0]);
    assert_eq!(calls(&log).len(), 2, "nothing reached the server");
}
