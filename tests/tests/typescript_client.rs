//! The TypeScript client (`clients/typescript`, `@palisade/client`) and its
//! MCP adapter against the real daemon: the package is built (types
//! generated from `proto/`), then its tests run under Node's built-in test
//! runner, enrolled as the agent through `palisade exec`, while a stand-in
//! operator approves or rejects what they ask (`palisade_tests::operator`).
//!
//! They need Node.js >= 20 and the npm packages `cargo xtask setup`
//! installs (`npm ci` from the committed lockfile); without them they
//! fail, never skip.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
};

use palisade_tests::{DaemonProc, TestEnv, operator::AutoOperator, palisade_bin, root_or_skip};

const POLICY: &str = r#"version: 1
label: tsclient
schemas:
  - tool: stripe
    actions: [create_payment]
    params: {amount: number, currency: string, customer: string}
roles:
  - id: payments-operator
    egress:
      grantable:
        - {id: staging-db, cidr: 10.50.1.0/24, ports: [5432], protocol: tcp, max_ttl: 15m}
    tools:
      allow:
        - id: payments
          tool: stripe
          actions: [create_payment]
          when: params.currency == "USD" && params.amount <= 5000
          approval_if: params.amount > 1000
      deny:
        - id: no-refunds
          tool: stripe
          actions: [refund]
    budgets:
      - {id: daily-spend, tool: stripe, actions: [create_payment], limit: 10000000, per: day, sum: params.amount, unit: USD}
identities:
  - id: finance-agent
    roles: [payments-operator]
"#;

fn package() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/typescript")
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `npm run build` once per test binary: types from proto/, then tsc.
fn built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        assert!(
            package().join("node_modules/@grpc/grpc-js").exists(),
            "clients/typescript/node_modules is missing: run `cargo xtask setup` (npm ci)"
        );
        let out = Command::new("npm")
            .args(["run", "--silent", "build"])
            .current_dir(package())
            .output()
            .unwrap_or_else(|e| panic!("npm run build: {e} (Node.js >= 20 and npm are needed)"));
        assert!(
            out.status.success(),
            "npm run build failed: {}",
            describe(&out)
        );
    });
}

/// `node --test FILES` enrolled as finance-agent against a fresh daemon with
/// the stand-in operator; asserts that at least `at_least` tests ran, all
/// passed and none was skipped.
fn node_tests(name: &str, files: &[&str], at_least: u32, approvals: usize) {
    if !root_or_skip(name) {
        return;
    }
    built();
    let env = TestEnv::new(name, POLICY);
    let _daemon = DaemonProc::start(&env);
    let operator = AutoOperator::start(env.socket.clone());
    let out = Command::new(palisade_bin())
        .arg("exec")
        .arg("--socket")
        .arg(&env.socket)
        .args(["--identity", "finance-agent", "--"])
        .args(["node", "--test", "--test-reporter=tap"])
        .args(files)
        .current_dir(package())
        .env("PALISADE_SOCKET", &env.socket)
        .output()
        .unwrap_or_else(|e| panic!("node --test: {e}"));
    let text = describe(&out);
    assert!(out.status.success(), "node tests failed: {text}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let count = |what: &str| -> u32 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("# {what} "))?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `# {what} N` line: {text}"))
    };
    assert!(
        count("pass") >= at_least,
        "only {} tests passed: {text}",
        count("pass")
    );
    assert_eq!(count("fail"), 0, "{text}");
    assert_eq!(count("skipped"), 0, "{text}");
    assert_eq!(count("todo"), 0, "{text}");
    assert!(
        operator.resolved() >= approvals,
        "the operator resolved {} approvals, expected {approvals}: {text}",
        operator.resolved()
    );
}

#[test]
fn typescript_client_against_the_daemon() {
    node_tests(
        "ts-client",
        &[
            "dist/test/unit.test.js",
            "dist/test/scripted.test.js",
            "dist/test/client.test.js",
        ],
        17,
        3,
    );
}

#[test]
fn mcp_server_guard_with_the_sdk_client() {
    node_tests("ts-mcp", &["dist/test/mcp.test.js"], 6, 3);
}

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what} failed: {}", describe(&out));
    out
}

/// What the README tells a new user: a fresh Node project installs the
/// client from the repository path and decides with it; and the package's
/// tarball holds the built module, its types and the proto it loads.
#[test]
fn fresh_node_project_installs_from_the_repository_path() {
    if !root_or_skip("fresh_node_project_installs_from_the_repository_path") {
        return;
    }
    built();
    let env = TestEnv::new("ts-fresh", POLICY);
    let project = env.dir.join("my-agent");
    std::fs::create_dir_all(&project).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        project.join("package.json"),
        r#"{"name": "my-agent", "version": "1.0.0", "type": "module", "private": true}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    run(
        Command::new("npm")
            .args(["install", "--offline", "--no-audit", "--no-fund"])
            .arg(package())
            .current_dir(&project),
        "npm install <repo>/clients/typescript",
    );
    std::fs::write(
        project.join("agent.mjs"),
        r#"import { guard, VERSION } from "@palisade/client";
let ran = 0;
const pay = guard(async (p) => ++ran, { tool: "stripe", action: "create_payment" });
await pay({ amount: 10, currency: "USD", customer: "c" });
const refused = await pay({ amount: 10, currency: "EUR", customer: "c" }).catch((e) => e.reason);
console.log(VERSION, ran, refused);
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let _daemon = DaemonProc::start(&env);
    let out = run(
        Command::new(palisade_bin())
            .arg("exec")
            .arg("--socket")
            .arg(&env.socket)
            .args(["--identity", "finance-agent", "--", "node", "agent.mjs"])
            .current_dir(&project)
            .env("PALISADE_SOCKET", &env.socket),
        "node agent.mjs",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0.1.0 1 no-matching-rule",
        "{}",
        describe(&out)
    );

    let pack = run(
        Command::new("npm")
            .args(["pack", "--dry-run", "--json"])
            .current_dir(package()),
        "npm pack --dry-run",
    );
    let listing: serde_json::Value = serde_json::from_slice(&pack.stdout)
        .unwrap_or_else(|e| panic!("npm pack --json: {e}: {}", describe(&pack)));
    let files: Vec<&str> = listing[0]["files"]
        .as_array()
        .unwrap_or_else(|| panic!("{listing}"))
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    for f in [
        "dist/src/index.js",
        "dist/src/index.d.ts",
        "dist/src/mcp.js",
        "dist/src/mcp.d.ts",
        "dist/src/gen/palisade/v1/DecideRequest.d.ts",
        "proto/palisade/v1/palisade.proto",
        "package.json",
    ] {
        assert!(files.contains(&f), "{f} not in the package: {files:?}");
    }
    assert!(
        !files.iter().any(|f| f.starts_with("dist/test/")),
        "tests shipped in the package: {files:?}"
    );
}
