//! What the gateway tests need around the daemon: a test CA and an HTTPS
//! upstream on loopback (a real Python server that logs every request it
//! gets), addresses of their own in 127.170.0.0/16, and agents running
//! ordinary clients (Python `requests`/`httpx`, curl) under `palisade exec`.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use serde_json::Value;

use crate::{TestEnv, palisade_bin, wait_for};

/// The Python with the gateway tests' clients and MCP SDK
/// (`clients/python/requirements-gateway.txt`): `$PALISADE_GATEWAY_PYTHON`,
/// or the virtualenv `cargo xtask setup` makes.
pub fn gateway_python() -> PathBuf {
    if let Some(p) = std::env::var_os("PALISADE_GATEWAY_PYTHON") {
        return p.into();
    }
    crate::client_env("python-gateway").join("bin/python3")
}

/// The repository's `tests/python` directory.
pub fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh `127.170.N.0/24` for one test: the gateway listens on `.1`,
/// upstreams on `.2` and up. N comes from the process id and a counter so
/// concurrent test binaries rarely meet (and a clash fails loudly at bind).
pub fn subnet() -> u32 {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    (std::process::id() * 7 + n * 13) % 250 + 3
}

/// `gateway:` config for a daemon serving on `127.170.N.1`, with short
/// timeouts so abuse tests do not wait long.
pub fn config(net: u32, extra: &str) -> String {
    format!(
        "gateway:\n  listen: 127.170.{net}.1\n  header_timeout: 2s\n  body_timeout: 2s\n  idle_timeout: 3s\n  upstream_timeout: 5s\n{extra}"
    )
}

/// A CA and a server certificate for `127.170.N.2` / `upstream.test`,
/// made with the openssl command.
pub struct TestCa {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl (install it: cargo xtask setup): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCa {
    pub fn new(dir: &Path, ip: &str) -> Self {
        let d = dir.join("pki");
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
        openssl(
            &d,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=palisade test CA",
            ],
        );
        openssl(
            &d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=upstream.test",
            ],
        );
        std::fs::write(
            d.join("ext.cnf"),
            format!("subjectAltName=DNS:upstream.test,IP:{ip}\nextendedKeyUsage=serverAuth\n"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        openssl(
            &d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        );
        Self {
            ca: d.join("ca.pem"),
            cert: d.join("server.pem"),
            key: d.join("server.key"),
        }
    }
}

/// `tests/python/upstream.py`, serving until dropped.
pub struct Upstream {
    child: Child,
    pub log: PathBuf,
    pub addr: String,
    pub port: u16,
}

impl Upstream {
    pub fn start(env: &TestEnv, addr: &str, port: u16, tls: Option<&TestCa>) -> Self {
        let log = env.dir.join(format!("upstream-{addr}-{port}.jsonl"));
        let _ = std::fs::remove_file(&log);
        let mut cmd = Command::new(gateway_python());
        cmd.arg(python_dir().join("upstream.py"))
            .args(["--addr", addr, "--port", &port.to_string(), "--log"])
            .arg(&log);
        if let Some(ca) = tls {
            cmd.arg("--cert").arg(&ca.cert).arg("--key").arg(&ca.key);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the upstream: {e}"));
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("stdout"));
        BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("upstream: {e}"));
        assert_eq!(line.trim(), "ready", "the upstream did not start");
        Self {
            child,
            log,
            addr: addr.to_string(),
            port,
        }
    }

    /// Every request the upstream has received, in order.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `palisade exec` as `identity`, then `program args…`.
pub fn exec(env: &TestEnv, identity: &str, program: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(palisade_bin());
    c.arg("exec")
        .arg("--socket")
        .arg(&env.socket)
        .args(["--identity", identity, "--"])
        .arg(program)
        .args(args);
    c
}

/// `palisade exec --user user` as `identity`: exec switches to `user` once
/// the agent is confined.
pub fn exec_as_user(
    env: &TestEnv,
    identity: &str,
    user: &str,
    program: &Path,
    args: &[&str],
) -> Command {
    let mut c = Command::new(palisade_bin());
    c.arg("exec")
        .arg("--socket")
        .arg(&env.socket)
        .args(["--identity", identity, "--user", user, "--"])
        .arg(program)
        .args(args);
    c
}

/// `palisade exec` as `identity`, then as the unprivileged user 65534.
pub fn exec_unprivileged(env: &TestEnv, identity: &str, program: &str, args: &[&str]) -> Command {
    let mut all = vec![
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        program,
    ];
    all.extend_from_slice(args);
    exec(env, identity, Path::new("/usr/bin/setpriv"), &all)
}

/// `exec` (as root) or `exec_unprivileged` (as uid 65534) of `program`.
pub fn exec_as(env: &TestEnv, identity: &str, root: bool, program: &str, args: &[&str]) -> Command {
    if root {
        exec(env, identity, Path::new(program), args)
    } else {
        exec_unprivileged(env, identity, program, args)
    }
}

/// One request an agent makes (see `tests/python/agent_http.py`).
pub fn request(method: &str, path: &str) -> Value {
    serde_json::json!({"method": method, "path": path})
}

/// Run `agent_http.py` enrolled as `identity`: the requests go out in
/// order on one keep-alive session; one JSON line comes back per request.
pub fn agent(
    env: &TestEnv,
    identity: &str,
    client: &str,
    base: &str,
    reqs: &[Value],
) -> Vec<Value> {
    let out = agent_cmd(env, identity, client, base, reqs)
        .output()
        .unwrap_or_else(|e| panic!("agent: {e}"));
    parse_agent(&out)
}

pub fn agent_cmd(
    env: &TestEnv,
    identity: &str,
    client: &str,
    base: &str,
    reqs: &[Value],
) -> Command {
    let script = python_dir().join("agent_http.py");
    let reqs = Value::Array(reqs.to_vec()).to_string();
    exec(
        env,
        identity,
        &gateway_python(),
        &[&script.to_string_lossy(), client, base, &reqs],
    )
}

pub fn parse_agent(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "agent failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("agent line {l:?}: {e}")))
        .collect()
}

/// Wait for a pending approval and return its id.
pub fn pending_approval(env: &TestEnv) -> String {
    wait_for(Duration::from_secs(10), || {
        let list: Value = serde_json::from_str(&env.cli_ok(&["approvals", "--json"])).ok()?;
        list.as_array()?
            .first()?
            .get("id")?
            .as_str()
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("no pending approval appeared"))
}

/// The gateway records (`kind: gateway`) in the trail so far.
pub fn gateway_events(env: &TestEnv) -> Vec<Value> {
    env.audit_events()
        .into_iter()
        .filter(|e| e["kind"] == "gateway")
        .collect()
}

/// A Python MCP test server (`tests/python/<script>`) started with `args`,
/// listening on `addr:port` before `start` returns; stopped when dropped.
pub struct McpServer(Child);

impl McpServer {
    pub fn start(script: &str, args: &[&std::ffi::OsStr], addr: &str, port: u16) -> Self {
        let server = Self(
            Command::new(gateway_python())
                .arg(python_dir().join(script))
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting the MCP server {script}: {e}")),
        );
        wait_for(Duration::from_secs(20), || {
            std::net::TcpStream::connect((addr, port)).ok().map(drop)
        })
        .unwrap_or_else(|| panic!("the MCP server {script} did not listen on {addr}:{port}"));
        server
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait until the trail holds at least `at_least` gateway records of MCP
/// messages withheld because they could not be masked.
pub fn wait_withheld(env: &TestEnv, at_least: usize) {
    let withheld = || {
        gateway_events(env)
            .iter()
            .filter(|e| {
                e["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("unmaskable-response"))
            })
            .count()
    };
    wait_for(Duration::from_secs(5), || {
        (withheld() >= at_least).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{at_least} withheld messages recorded, found {}: {:?}",
            withheld(),
            gateway_events(env)
        )
    });
}

/// The answer for shape `name` among an MCP shapes agent's results.
pub fn shape<'a>(out: &'a [Value], name: &str) -> &'a Value {
    out.iter()
        .find(|o| o["shape"] == name)
        .unwrap_or_else(|| panic!("no `{name}` in {out:?}"))
}
