//! Masked fields never reach an agent through an MCP service, whatever
//! shape the server puts them in: a real MCP server built with the
//! official SDK returns one record holding a card number as JSON text,
//! structured content, an embedded resource (text and base64 blob),
//! `_meta`, a log notification, text after a prefix, JSON Lines, a JSON-RPC
//! error's data and a resource read; the agent is the official MCP client
//! under `palisade exec`. Remote (streamable HTTP) and stdio servers, both
//! with `mask_text: pass` (JSON inside text is masked; text that is not
//! JSON passes, see `gateway_mcp_text.rs` for the default). Text that names
//! the field as a member but is not JSON, or is too large to check, is
//! withheld with a JSON-RPC error.
//! Control: the record's other fields arrive, and the same server's
//! answers through a service without masks carry the number.

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

fn policy(net: u32) -> String {
    let python = gateway_python();
    let server = python_dir().join("mcp_shapes.py");
    format!(
        r#"version: 1
label: mcp-mask
services:
  - id: cards
    kind: mcp
    url: http://127.170.{net}.3:8000/mcp
    port: 9111
    mask: [card.number]
    mask_text: pass
  - id: cards-local
    kind: mcp
    command: [{python}, {server}, --stdio]
    port: 9112
    mask: [card.number]
    mask_text: pass
  - id: cards-open
    kind: mcp
    url: http://127.170.{net}.3:8000/mcp
    port: 9113
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
    let out = exec(
        env,
        "card-agent",
        &gateway_python(),
        &[&script.to_string_lossy(), url],
    )
    .output()
    .unwrap_or_else(|e| panic!("agent_mcp_shapes: {e}"));
    parse_agent(&out)
}

/// Nothing of the number in any shape; the rest of the record in each.
fn check_masked(out: &[Value], which: &str) {
    for o in out {
        let s = o.to_string();
        assert!(
            !s.contains(NUMBER),
            "{which}: the number reached the agent: {o}"
        );
    }
    for name in [
        "text",
        "structured",
        "resource",
        "blob",
        "meta",
        "log",
        "pretty",
        "jsonl",
        "resources/read",
    ] {
        let o = shape(out, name);
        assert!(o.get("error").is_none(), "{which} {name}: {o}");
        assert!(
            o.to_string().contains("Jane Roe"),
            "{which} {name}: the unmasked field arrives: {o}"
        );
    }
    for name in [
        "text",
        "structured",
        "resource",
        "blob",
        "meta",
        "pretty",
        "jsonl",
    ] {
        assert!(
            shape(out, name).to_string().contains("[masked]"),
            "{which} {name}: {}",
            shape(out, name)
        );
    }
    let rpc = shape(out, "rpcerror");
    assert_eq!(rpc["error"]["code"], -32042, "{which}: {rpc}");
    assert!(rpc.to_string().contains("[masked]"), "{which}: {rpc}");
    let logs = shape(out, "logs");
    assert!(
        logs.to_string().contains("[masked]"),
        "{which}: the log notification arrives, masked: {logs}"
    );
    // Not JSON, yet names the field: withheld with a JSON-RPC error.
    let python = shape(out, "python");
    assert_eq!(python["error"]["code"], -32002, "{which}: {python}");
    assert!(
        python.to_string().contains("unmaskable-response"),
        "{which}: {python}"
    );
    // Too large to check within `max_mask_bytes`: withheld too.
    let huge = shape(out, "huge");
    assert_eq!(huge["error"]["code"], -32002, "{which}: {huge}");
}

#[test]
fn masked_fields_reach_no_agent_in_any_shape_remote_or_stdio() {
    if !root_or_skip("masked_fields_reach_no_agent_in_any_shape_remote_or_stdio") {
        return;
    }
    let net = subnet();
    let env = TestEnv::new("gw-mcp-mask", "version: 1\n");
    env.write_policy(&policy(net));
    // Small enough that one shape (about 170 KB) cannot be checked.
    env.write_config(&config(net, "  max_mask_bytes: 65536\n"));
    let addr = format!("127.170.{net}.3");
    let _server = McpServer::start(
        "mcp_shapes.py",
        &["--http".as_ref(), addr.as_ref(), "8000".as_ref()],
        &addr,
        8000,
    );
    let _daemon = DaemonProc::start(&env);

    // Control: without masks, every shape carries the number.
    let open = agent(&env, &format!("http://127.170.{net}.1:9113/mcp"));
    for name in [
        "resource", "meta", "pretty", "jsonl", "rpcerror", "python", "logs",
    ] {
        assert!(
            shape(&open, name).to_string().contains(NUMBER),
            "control {name}: {}",
            shape(&open, name)
        );
    }

    check_masked(
        &agent(&env, &format!("http://127.170.{net}.1:9111/mcp")),
        "remote",
    );
    check_masked(
        &agent(&env, &format!("http://127.170.{net}.1:9112/mcp")),
        "stdio",
    );

    // Withheld messages are recorded.
    wait_withheld(&env, 2);
}
