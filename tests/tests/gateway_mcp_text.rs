//! MCP services with masks withhold answer text that is not JSON: a real
//! MCP server built with the official SDK answers with a card number in
//! the text formats servers print (YAML, flow YAML, XML, key=value, CSV, a
//! Markdown table, a JS object literal, JSON with a comment, prose without
//! the field's name) and in blobs (UTF-16 JSON with and without a mark,
//! YAML of a text type); the agent is the official MCP client under
//! `palisade exec`. Every text shape is withheld (-32002, recorded); the
//! JSON ones are masked. Remote and stdio servers.
//! Control: through a service without masks every shape carries the
//! number, and prose arrives untouched.

use palisade_tests::{
    DaemonProc, TestEnv,
    gateway::{
        McpServer, config, exec, gateway_python, parse_agent, python_dir, shape, subnet,
        wait_withheld,
    },
    root_or_skip,
};
use serde_json::Value;

const NUMBER: &str = "4242424242424242";
const PORT: u16 = 8012;
const TEXT: &[&str] = &[
    "yaml",
    "yamlflow",
    "xml",
    "kv",
    "csv",
    "md",
    "js",
    "jsoncomment",
    "prose",
    "yamlblob",
];
const JSON: &[&str] = &[
    "text",
    "utf16",
    "utf16le",
    "upper",
    "mixedcase",
    "zwsp",
    "trailspace",
];

fn policy(net: u32) -> String {
    let python = gateway_python();
    let server = python_dir().join("mcp_shapes.py");
    format!(
        r#"version: 1
label: mcp-text
services:
  - id: cards
    kind: mcp
    url: http://127.170.{net}.3:{PORT}/mcp
    port: 9131
    mask: [card.number]
  - id: cards-local
    kind: mcp
    command: [{python}, {server}, --stdio]
    port: 9132
    mask: [card.number]
  - id: cards-open
    kind: mcp
    url: http://127.170.{net}.3:{PORT}/mcp
    port: 9133
identities:
  - id: card-agent
    tools:
      allow:
        - {{id: cards, tool: "cards*", actions: [card, "resources/read"]}}
"#,
        python = python.display(),
        server = server.display(),
    )
}

/// What the official client received, shape by shape.
fn agent(env: &TestEnv, url: &str) -> Vec<Value> {
    let script = python_dir().join("agent_mcp_shapes.py");
    let shapes: Vec<&str> = TEXT.iter().chain(JSON).copied().collect();
    let out = exec(
        env,
        "card-agent",
        &gateway_python(),
        &[&script.to_string_lossy(), url, &shapes.join(",")],
    )
    .output()
    .unwrap_or_else(|e| panic!("agent_mcp_shapes: {e}"));
    parse_agent(&out)
}

fn check(out: &[Value], which: &str) {
    for o in out {
        assert!(
            !o.to_string().contains(NUMBER),
            "{which}: the number reached the agent: {o}"
        );
    }
    for name in TEXT {
        let o = shape(out, name);
        assert_eq!(o["error"]["code"], -32002, "{which} {name} withheld: {o}");
        assert!(
            o.to_string().contains("unmaskable-response"),
            "{which} {name}: {o}"
        );
    }
    for name in JSON {
        let o = shape(out, name);
        assert!(o.get("error").is_none(), "{which} {name}: {o}");
        let s = o.to_string();
        assert!(
            s.contains("[masked]") && s.contains("Jane Roe"),
            "{which} {name} masked, the rest arrives: {o}"
        );
    }
}

#[test]
fn text_that_is_not_json_is_withheld_from_masked_mcp_services() {
    if !root_or_skip("text_that_is_not_json_is_withheld_from_masked_mcp_services") {
        return;
    }
    let net = subnet();
    let env = TestEnv::new("gw-mcp-text", "version: 1\n");
    env.write_policy(&policy(net));
    env.write_config(&config(net, ""));
    let addr = format!("127.170.{net}.3");
    let _server = McpServer::start(
        "mcp_shapes.py",
        &["--http".as_ref(), addr.as_ref(), PORT.to_string().as_ref()],
        &addr,
        PORT,
    );
    let _daemon = DaemonProc::start(&env);

    // Control: without masks, every shape carries the number; prose is
    // untouched.
    let open = agent(&env, &format!("http://127.170.{net}.1:9133/mcp"));
    for name in TEXT.iter().chain(JSON) {
        assert!(
            shape(&open, name).to_string().contains(NUMBER),
            "control {name}: {}",
            shape(&open, name)
        );
    }
    assert_eq!(
        shape(&open, "prose")["result"]["content"][0]["text"],
        format!("Jane Roe pays with {NUMBER}")
    );

    check(
        &agent(&env, &format!("http://127.170.{net}.1:9131/mcp")),
        "remote",
    );
    check(
        &agent(&env, &format!("http://127.170.{net}.1:9132/mcp")),
        "stdio",
    );

    wait_withheld(&env, 2 * TEXT.len());
}
