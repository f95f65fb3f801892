//! The Python client's framework adapters (LangChain/LangGraph, CrewAI, the
//! OpenAI Agents SDK) against the real daemon and the real framework
//! packages: each framework's tests (`clients/python/tests_frameworks/`)
//! run enrolled as the agent through `palisade exec`, while a stand-in
//! operator approves or rejects what they ask (`palisade_tests::operator`).
//! Also: the package builds (wheel and sdist) and installs into a fresh
//! virtualenv from the repository path, offline, and decides from there.
//!
//! These need the environments `cargo xtask setup` prepares; without them
//! they fail, never skip.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use palisade_tests::{
    DaemonProc, TestEnv, client_env, client_python, operator::AutoOperator, palisade_bin,
    root_or_skip,
};

/// Finance rules: payments in USD up to 5,000, a human above 1,000;
/// refunds denied by rule.
const POLICY: &str = r#"version: 1
label: pyadapters
schemas:
  - tool: stripe
    actions: [create_payment]
    params: {amount: number, currency: string, customer: string}
roles:
  - id: payments-operator
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

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/python")
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `python -m unittest -v FILE`, enrolled as finance-agent, against a fresh
/// daemon with the stand-in operator; asserts everything ran and passed.
fn framework_tests(name: &str, python: &Path, file: &str, at_least: u32) {
    if !root_or_skip(name) {
        return;
    }
    let env = TestEnv::new(name, POLICY);
    let _daemon = DaemonProc::start(&env);
    let operator = AutoOperator::start(env.socket.clone());
    let dir = client_dir().join("tests_frameworks");
    let out = Command::new(palisade_bin())
        .arg("exec")
        .arg("--socket")
        .arg(&env.socket)
        .args(["--identity", "finance-agent", "--"])
        .arg(python)
        .args(["-m", "unittest", "-v", file])
        .current_dir(&dir)
        .env("PALISADE_SOCKET", &env.socket)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("OPENAI_AGENTS_DISABLE_TRACING", "1")
        .env("CREWAI_DISABLE_TELEMETRY", "true")
        .env("OTEL_SDK_DISABLED", "true")
        .output()
        .unwrap_or_else(|e| panic!("running {file}: {e}"));
    let text = describe(&out);
    assert!(out.status.success(), "{file} failed: {text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ran: u32 = stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("Ran ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no `Ran N tests` line: {text}"));
    assert!(ran >= at_least, "only {ran} tests ran in {file}: {text}");
    assert!(!stderr.contains("skipped"), "a test was skipped: {text}");
    assert!(
        operator.resolved() >= 2,
        "the operator resolved {} approvals; the approval tests did not reach it: {text}",
        operator.resolved()
    );
}

#[test]
fn langchain_and_langgraph_adapter() {
    framework_tests("py-langchain", &client_python(), "test_langchain.py", 7);
}

#[test]
fn openai_agents_adapter() {
    framework_tests(
        "py-openai-agents",
        &client_python(),
        "test_openai_agents.py",
        5,
    );
}

#[test]
fn crewai_adapter() {
    let python = client_env("python-crewai").join("bin/python3");
    framework_tests("py-crewai", &python, "test_crewai.py", 6);
}

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what} failed: {}", describe(&out));
    out
}

/// A fresh virtualenv; returns its python.
fn fresh_venv(dir: &Path) -> PathBuf {
    run(
        Command::new("python3").args(["-m", "venv"]).arg(dir),
        "python3 -m venv",
    );
    dir.join("bin/python3")
}

/// `pip install …` into `python`'s virtualenv from the wheelhouse setup
/// filled: what a user's `pip install` does, without the network.
fn pip_install(python: &Path, what: &Path) {
    run(
        Command::new(python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-index",
            ])
            .arg("--find-links")
            .arg(client_env("wheelhouse"))
            .arg(what),
        &format!("pip install {}", what.display()),
    );
}

#[test]
fn package_builds_and_installs_from_the_repository_path() {
    if !root_or_skip("package_builds_and_installs_from_the_repository_path") {
        return;
    }
    let env = TestEnv::new("py-package", POLICY);
    let work = env.dir.join("package");

    // python -m build: a wheel and an sdist, with the stubs and py.typed.
    let dist = work.join("dist");
    run(
        Command::new(client_python())
            .args(["-m", "build", "--no-isolation", "--outdir"])
            .arg(&dist)
            .arg(client_dir())
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        "python -m build",
    );
    let built: Vec<PathBuf> = std::fs::read_dir(&dist)
        .unwrap_or_else(|e| panic!("{}: {e}", dist.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("{e}")).path())
        .collect();
    let find = |suffix: &str| {
        built
            .iter()
            .find(|p| p.to_string_lossy().ends_with(suffix))
            .unwrap_or_else(|| panic!("no *{suffix} in {built:?}"))
            .clone()
    };
    let wheel = find("-py3-none-any.whl");
    let sdist = find(".tar.gz");
    assert!(
        wheel.to_string_lossy().contains("palisade_client-0.1.0"),
        "{wheel:?}"
    );
    let listing = |cmd: &str, archive: &Path| {
        String::from_utf8_lossy(
            &run(
                Command::new(client_python()).args(["-c", cmd]).arg(archive),
                "listing an archive",
            )
            .stdout,
        )
        .into_owned()
    };
    let in_wheel = listing(
        "import sys, zipfile; print('\\n'.join(zipfile.ZipFile(sys.argv[1]).namelist()))",
        &wheel,
    );
    for f in [
        "palisade_client/_gen/palisade_pb2.py",
        "palisade_client/_gen/palisade_pb2_grpc.py",
        "palisade_client/_gen/palisade_pb2.pyi",
        "palisade_client/py.typed",
        "palisade_client/aio.py",
        "palisade_client/langchain.py",
    ] {
        assert!(
            in_wheel.lines().any(|l| l == f),
            "{f} not in the wheel:\n{in_wheel}"
        );
    }
    let metadata = listing(
        "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); print(z.read([n for n in z.namelist() if n.endswith('METADATA')][0]).decode())",
        &wheel,
    );
    for line in [
        "Requires-Python: >=3.10",
        "Provides-Extra: langchain",
        "Provides-Extra: crewai",
        "Provides-Extra: openai-agents",
    ] {
        assert!(
            metadata.contains(line),
            "{line:?} not in METADATA:\n{metadata}"
        );
    }
    let in_sdist = listing(
        "import sys, tarfile; print('\\n'.join(tarfile.open(sys.argv[1]).getnames()))",
        &sdist,
    );
    for f in [
        "pyproject.toml",
        "palisade_client/_gen/palisade_pb2.py",
        "README.md",
    ] {
        assert!(in_sdist.contains(f), "{f} not in the sdist:\n{in_sdist}");
    }

    // pip install ./clients/python into a fresh virtualenv (a real build
    // with build isolation), and the built wheel into another.
    let from_path = fresh_venv(&work.join("venv-path"));
    pip_install(&from_path, &client_dir());
    let from_wheel = fresh_venv(&work.join("venv-wheel"));
    pip_install(&from_wheel, &wheel);

    // Each decides against the daemon, enrolled, from outside the checkout.
    let _daemon = DaemonProc::start(&env);
    let script = "import palisade_client, sys\n\
        assert 'site-packages' in palisade_client.__file__, palisade_client.__file__\n\
        from palisade_client import Client\n\
        d = Client().decide('stripe', 'create_payment', params={'amount': 10, 'currency': 'USD', 'customer': 'c'})\n\
        print(palisade_client.__version__, d.verdict.name, d.reason)\n";
    for python in [&from_path, &from_wheel] {
        let out = run(
            Command::new(palisade_bin())
                .arg("exec")
                .arg("--socket")
                .arg(&env.socket)
                .args(["--identity", "finance-agent", "--"])
                .arg(python)
                .args(["-c", script])
                .current_dir(&work)
                .env("PALISADE_SOCKET", &env.socket),
            "deciding from the installed package",
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "0.1.0 ALLOW allowed",
            "{}",
            describe(&out)
        );
    }
}

/// An example agent of `examples/agents/`, run enrolled against the finance
/// example policy with `--wait`; the test approves the one payment that
/// needs a human, as an operator would. Returns what it printed.
fn example(name: &str, script: &str) -> Option<String> {
    if !root_or_skip(name) {
        return None;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let finance = std::fs::read_to_string(repo.join("examples/policies/finance.yaml"))
        .unwrap_or_else(|e| panic!("examples/policies/finance.yaml: {e}"));
    let env = TestEnv::new(name, &finance);
    let _daemon = DaemonProc::start(&env);
    let child = Command::new(palisade_bin())
        .arg("exec")
        .arg("--socket")
        .arg(&env.socket)
        .args(["--identity", "finance-agent", "--"])
        .arg(client_python())
        .arg(repo.join("examples/agents").join(script))
        .args(["--wait", "60"])
        .env("PALISADE_SOCKET", &env.socket)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    let mut child = ChildGuard(Some(child));
    let pending = palisade_tests::wait_for(std::time::Duration::from_secs(60), || {
        let list: serde_json::Value =
            serde_json::from_str(&env.cli_ok(&["approvals", "--json"])).ok()?;
        list.as_array()?
            .iter()
            .find(|a| a["state"] == "pending")
            .cloned()
    })
    .unwrap_or_else(|| {
        panic!(
            "{script}: no approval was asked for within 60 s; the example printed:\n{}",
            describe(&child.kill_and_collect())
        )
    });
    assert_eq!(pending["tool"], "stripe", "{pending}");
    let id = pending["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{pending}"));
    env.cli_ok(&["approve", id, "--reason", "known customer"]);
    let out = child.wait();
    let text = describe(&out);
    assert!(out.status.success(), "{script}: {text}");
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Kills the example if the test fails before it ends.
struct ChildGuard(Option<std::process::Child>);

impl ChildGuard {
    fn wait(mut self) -> Output {
        let child = self.0.take().unwrap_or_else(|| panic!("waited twice"));
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for the example: {e}"))
    }

    /// Stops the example and returns what it had printed.
    fn kill_and_collect(&mut self) -> Output {
        let mut child = self.0.take().unwrap_or_else(|| panic!("collected twice"));
        let _ = child.kill();
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for the example: {e}"))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn example_langgraph_agent() {
    let Some(out) = example("py-example-langgraph", "langgraph_agent.py") else {
        return;
    };
    for expected in [
        "  tool success: pi_1",
        "  tool error: denied by policy: no-matching-rule",
        "  tool error: denied by policy: denied-by-rule",
        "  tool success: pi_2",
        "agent: payments made: pi_1, pi_2",
    ] {
        assert!(out.contains(expected), "expected {expected:?} in:\n{out}");
    }
}

#[test]
fn example_openai_agents_agent() {
    let Some(out) = example("py-example-openai-agents", "openai_agents_agent.py") else {
        return;
    };
    for expected in [
        "  tool output: pi_1",
        "  tool output: denied by policy: no-matching-rule",
        "  tool output: denied by policy: denied-by-rule",
        "  tool output: pi_2",
        "agent: payments made: pi_1, pi_2",
    ] {
        assert!(out.contains(expected), "expected {expected:?} in:\n{out}");
    }
}
