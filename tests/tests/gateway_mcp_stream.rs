//! Remote MCP services, end to end with a hand-written MCP server (the
//! framings no SDK server writes) and an agent posting with a plain HTTP
//! client under `palisade exec`:
//!
//! - event streams framed any way the event-stream format allows (CR
//!   alone, CRLF, LF, a leading byte-order mark, no space after `data:`,
//!   data over two lines) are masked; the agent's raw bytes never hold the
//!   number (as root and as user 65534). Control: the same server through a service without masks
//!   delivers it in every framing.
//! - a URL query string is refused (`unknown-parameter`) and never reaches
//!   the server; the same call without one does.

use std::time::Duration;

use palisade_tests::{
    DaemonProc, TestEnv,
    gateway::{
        McpServer, config, exec, exec_unprivileged, gateway_events, gateway_python, parse_agent,
        python_dir, subnet,
    },
    root_or_skip, wait_for,
};
use serde_json::Value;

const NUMBER: &str = "4242424242424242";
const PORT: u16 = 8011;
const FRAMINGS: &[&str] = &[
    "json", "lf", "crlf", "cr", "bom", "bomcr", "nospace", "split",
];

fn policy(net: u32) -> String {
    format!(
        r#"version: 1
label: mcp-stream
services:
  - id: raw
    kind: mcp
    url: http://127.170.{net}.3:{PORT}/mcp
    port: 9121
    mask: [card.number]
  - id: raw-open
    kind: mcp
    url: http://127.170.{net}.3:{PORT}/mcp
    port: 9122
identities:
  - id: raw-agent
    tools:
      allow:
        - {{id: raw, tool: "raw*", actions: [card]}}
"#
    )
}

/// What the agent's HTTP client received, request by request (as root,
/// or as the unprivileged user 65534).
fn agent_as(
    env: &TestEnv,
    unprivileged: bool,
    net: u32,
    port: u16,
    reqs: &[(&str, &str)],
) -> Vec<Value> {
    let script = python_dir().join("agent_mcp_raw.py");
    let reqs: Vec<Value> = reqs
        .iter()
        .map(|(p, f)| serde_json::json!({"path": p, "fmt": f}))
        .collect();
    let gateway = format!("127.170.{net}.1");
    let port = port.to_string();
    let reqs = Value::Array(reqs).to_string();
    let script = script.to_string_lossy();
    let args = [
        script.as_ref(),
        gateway.as_str(),
        port.as_str(),
        reqs.as_str(),
    ];
    let mut cmd = if unprivileged {
        exec_unprivileged(env, "raw-agent", "/usr/bin/python3", &args)
    } else {
        exec(env, "raw-agent", &gateway_python(), &args)
    };
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("agent_mcp_raw: {e}"));
    parse_agent(&out)
}

fn agent(env: &TestEnv, net: u32, port: u16, reqs: &[(&str, &str)]) -> Vec<Value> {
    agent_as(env, false, net, port, reqs)
}

fn start(env: &TestEnv, net: u32) -> McpServer {
    let addr = format!("127.170.{net}.3");
    let log = env.dir.join("mcp_raw.log");
    McpServer::start(
        "mcp_raw.py",
        &[addr.as_ref(), PORT.to_string().as_ref(), log.as_ref()],
        &addr,
        PORT,
    )
}

/// The request lines the server received.
fn arrived(env: &TestEnv) -> Vec<String> {
    std::fs::read_to_string(env.dir.join("mcp_raw.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["path"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn every_event_stream_framing_is_masked() {
    if !root_or_skip("every_event_stream_framing_is_masked") {
        return;
    }
    let net = subnet();
    let env = TestEnv::new("gw-mcp-stream", "version: 1\n");
    env.write_policy(&policy(net));
    env.write_config(&config(net, ""));
    let _server = start(&env, net);
    let _daemon = DaemonProc::start(&env);
    let reqs: Vec<(&str, &str)> = FRAMINGS.iter().map(|f| ("/mcp", *f)).collect();

    // Control: without masks, every framing carries the number.
    for o in agent(&env, net, 9122, &reqs) {
        assert_eq!(o["status"], 200, "control: {o}");
        assert!(
            o["body"].as_str().is_some_and(|b| b.contains(NUMBER)),
            "control: {o}"
        );
    }
    let masked = agent(&env, net, 9121, &reqs);
    let unprivileged = agent_as(&env, true, net, 9121, &reqs);
    assert_eq!(unprivileged.len(), FRAMINGS.len(), "{unprivileged:?}");
    for o in masked.into_iter().chain(unprivileged) {
        let body = o["body"].as_str().unwrap_or_default();
        assert_eq!(o["status"], 200, "{o}");
        assert!(!body.contains(NUMBER), "the number reached the agent: {o}");
        assert!(
            body.contains("[masked]") && body.contains("Jane Roe"),
            "masked, the rest arrives: {o}"
        );
    }
}

#[test]
fn a_query_string_never_reaches_a_remote_mcp_server() {
    if !root_or_skip("a_query_string_never_reaches_a_remote_mcp_server") {
        return;
    }
    let net = subnet();
    let env = TestEnv::new("gw-mcp-query", "version: 1\n");
    env.write_policy(&policy(net));
    env.write_config(&config(net, ""));
    let _server = start(&env, net);
    let _daemon = DaemonProc::start(&env);
    let out = agent(
        &env,
        net,
        9121,
        &[
            ("/mcp", "json"),
            ("/mcp?profile=admin", "json"),
            ("/mcp?", "json"),
            ("/?x=MCPQUERY", "json"),
        ],
    );
    // Control: the call without a query arrives.
    assert_eq!(out[0]["status"], 200, "{}", out[0]);
    for o in &out[1..] {
        assert_eq!(o["status"], 400, "{o}");
        assert!(
            o["body"]
                .as_str()
                .is_some_and(|b| b.contains("unknown-parameter")),
            "{o}"
        );
    }
    let paths = arrived(&env);
    assert_eq!(paths, vec!["/mcp".to_string()], "what reached the server");
    wait_for(Duration::from_secs(5), || {
        (gateway_events(&env)
            .iter()
            .filter(|e| e["reason"] == "unknown-parameter" && e["verdict"] == "deny")
            .count()
            >= 3)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("refusals recorded: {:?}", gateway_events(&env)));
}
