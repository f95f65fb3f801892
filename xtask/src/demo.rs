//! `cargo xtask demo`: Palisade in one minute, on this machine, touching
//! nothing outside its own cgroup and temporary directory.
//!
//! A clinical agent may read from the internal EHR (127.0.0.1:18443) and
//! nothing else; when it tries to send patient records to an external EHR
//! (127.0.0.2:18443) the kernel answers EPERM and the audit trail says so.

use std::{
    fs,
    io::{Read, Write},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::toolchain::{cargo, is_root, require_setup, sh, workspace_root};

/// Answer every HTTP request on `addr` with a fixed body, in a thread.
fn http_server(addr: &str, body: &'static str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(())
}

/// The demo daemon's pin directory.
const PINS: &str = "/sys/fs/bpf/palisade-demo";

struct Demo {
    dir: PathBuf,
    cgroup: PathBuf,
    daemon: Option<Child>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            stop(&mut d);
        }
        // Only left when the daemon had to be killed.
        if Path::new(PINS).exists() {
            let _ = Command::new(workspace_root().join("target/release/palisade"))
                .args(["uninstall", "--bpffs", PINS])
                .status();
        }
        for sub in ["palisade/clinical-agent", "palisade"] {
            let _ = fs::remove_dir(self.cgroup.join(sub));
        }
        let _ = fs::remove_dir(&self.cgroup);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// SIGTERM (the daemon was started with --detach: it removes its pins on
/// the way out), then SIGKILL if it has not exited within 20 s. Signals
/// are sent directly: a minimal host has no `kill` binary.
fn stop(daemon: &mut Child) {
    let Ok(pid) = i32::try_from(daemon.id()) else {
        return;
    };
    // SAFETY: a signal to our own child, which we have not reaped yet.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = daemon.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("demo: the daemon ignored SIGTERM for 20 s; killing it");
    let _ = daemon.kill();
    let _ = daemon.wait();
}

fn cgroup2_root() -> anyhow::Result<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mountinfo")?;
    mounts
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mountpoint = left.split_whitespace().nth(4)?;
            (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mountpoint))
        })
        .context("no cgroup2 mount")
}

pub fn run() -> anyhow::Result<()> {
    if !is_root() {
        bail!("the demo loads eBPF programs and needs root: `sudo -E cargo xtask demo`");
    }
    require_setup()?;
    sh(cargo().args(["build", "--release", "-p", "agent"]))?;
    let root = workspace_root();
    let palisade = root.join("target/release/palisade");
    let demo = Demo {
        dir: std::env::temp_dir().join(format!("palisade-demo-{}", std::process::id())),
        cgroup: cgroup2_root()?.join(format!("palisade-demo-{}", std::process::id())),
        daemon: None,
    };
    let mut demo = demo;
    fs::create_dir_all(&demo.dir)?;
    fs::create_dir_all(&demo.cgroup)?;
    let socket = demo.dir.join("palisade.sock");
    let audit = demo.dir.join("audit.jsonl");
    let config = demo.dir.join("config.yaml");
    fs::write(
        &config,
        format!(
            "policy: {policy}\nsocket: {socket}\nbpffs: {PINS}\naudit:\n  file: {audit}\n  stderr: false\ncgroup:\n  attach: {cgroup}\n",
            policy = root.join("examples/demo/policy.yaml").display(),
            socket = socket.display(),
            audit = audit.display(),
            cgroup = demo.cgroup.display(),
        ),
    )?;

    http_server(
        "127.0.0.1:18443",
        "{\"patient\": \"record from the internal EHR\"}",
    )?;
    http_server("127.0.0.2:18443", "{\"received\": true}")?;

    println!("== Starting the Palisade daemon (policy: examples/demo/policy.yaml)");
    let log = fs::File::create(demo.dir.join("daemon.log"))?;
    demo.daemon = Some(
        Command::new(&palisade)
            .args(["daemon", "--detach", "--config"])
            .arg(&config)
            .stderr(log)
            .spawn()
            .context("starting the daemon")?,
    );
    wait_for_socket(&palisade, &socket, &demo.dir)?;

    println!("\n== Running the clinical agent, enrolled as `clinical-agent`:");
    println!("   palisade exec --identity clinical-agent -- python3 examples/demo/agent.py\n");
    let status = Command::new(&palisade)
        .args(["exec", "--socket"])
        .arg(&socket)
        .args(["--identity", "clinical-agent", "--", "python3"])
        .arg(root.join("examples/demo/agent.py"))
        .status()?;
    if !status.success() {
        bail!("the demo agent failed ({status})");
    }

    std::thread::sleep(Duration::from_millis(500));
    println!("\n== Audit trail ({}):", audit.display());
    for line in fs::read_to_string(&audit)?.lines() {
        let v: serde_like::Line = serde_like::parse(line);
        if v.kind == "network" {
            println!("   {line}");
        }
    }
    println!("\n== palisade status");
    let _ = Command::new(&palisade)
        .args(["status", "--socket"])
        .arg(&socket)
        .status();
    println!("\n== Stopping the daemon (started with --detach, so enforcement is removed).");
    Ok(())
}

fn wait_for_socket(palisade: &Path, socket: &Path, dir: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let ok = Command::new(palisade)
            .args(["status", "--json", "--socket"])
            .arg(socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "the daemon did not start:\n{}",
        fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
    )
}

/// Just enough JSON reading for the demo's output (xtask stays lean).
mod serde_like {
    pub struct Line {
        pub kind: String,
    }

    pub fn parse(line: &str) -> Line {
        let kind = line
            .split("\"kind\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_string();
        Line { kind }
    }
}
