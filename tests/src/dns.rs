//! A real DNS server for the DNS-aware egress tests: dnsmasq (Debian's,
//! installed by `cargo xtask setup`) on a loopback address of its own, or
//! inside a test network namespace, serving fixed records and logging every
//! query it gets. Killed on drop.
//!
//! Each test gets its own slot `n` so that tests running in parallel never
//! share an address: the server answers on `127.224.n.53:53`, names resolve
//! to `127.225.n.x`, and the daemon's proxy range starts at `127.226.0.0 +
//! n·4096`.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use crate::{DaemonProc, Outcome, Probe, TestEnv, wait_for};

static SLOT: AtomicU32 = AtomicU32::new(0);

/// A fresh slot for one test.
pub fn slot() -> u8 {
    let seq = SLOT.fetch_add(1, Ordering::Relaxed);
    ((std::process::id() % 97 + seq * 13) % 250) as u8
}

/// The address test name `x` resolves to in slot `n`.
pub fn answer_ip(n: u8, x: u8) -> String {
    format!("127.225.{n}.{x}")
}

/// The upstream server's address in slot `n`.
pub fn upstream_ip(n: u8) -> String {
    format!("127.224.{n}.53")
}

/// First address of the proxy range in slot `n`.
pub fn proxy_base(n: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 226, 0, 0)) + u32::from(n) * 4096)
}

/// The `dns:` config section for slot `n` (short TTLs so expiry is quick,
/// unless `extra` sets `ttl_min` itself: a test that needs what it learned
/// to last a few seconds on a slow host). Test names resolve to loopback
/// addresses, which a daemon learns only where a cidr rule or
/// `dns.learn_internal` vouches for them: loopback is vouched for unless
/// `extra` sets `learn_internal` itself.
pub fn config(n: u8, dir: &Path, extra: &str) -> String {
    let internal = if extra.contains("learn_internal") {
        ""
    } else {
        "  learn_internal: [127.0.0.0/8]\n"
    };
    let ttl_min = if extra.contains("ttl_min") {
        ""
    } else {
        "  ttl_min: 1\n"
    };
    format!(
        "dns:\n  upstream: {}:53\n  listen: {}\n  state_file: {}\n{ttl_min}  ttl_max: 60\n  grace: 0\n{internal}{extra}",
        upstream_ip(n),
        proxy_base(n),
        dir.join("dns-learned.json").display()
    )
}

/// Debian installs dnsmasq in /usr/sbin, which not every PATH has.
pub fn dnsmasq_bin() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/dnsmasq");
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from("dnsmasq")
    }
}

pub struct Dnsmasq {
    pub addr: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Dnsmasq {
    /// dnsmasq on `addr:53` (in `netns` when given) answering `records`,
    /// each a dnsmasq option such as `--host-record=a.test,127.225.1.1`.
    pub fn start(dir: &Path, netns: Option<&str>, addr: &str, records: &[String]) -> Self {
        let log = dir.join(format!("dnsmasq-{addr}.log"));
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(dnsmasq_bin());
                c
            }
            None => Command::new(dnsmasq_bin()),
        };
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--pid-file=",
            "--user=root",
            "--log-queries",
            "--port=53",
        ])
        .arg(format!("--listen-address={addr}"))
        .arg(format!("--log-facility={}", log.display()))
        .args(records)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("starting dnsmasq (is it installed? `cargo xtask setup`): {e}")
        });
        let mut server = Self {
            addr: addr.to_string(),
            child: Some(child),
            log,
        };
        // Up when it answers a query for a name it does not serve.
        let up = wait_for(Duration::from_secs(10), || {
            if let Some(c) = server.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("dnsmasq exited ({status}):\n{}", server.log_text());
            }
            let r = Probe::plain_in(netns, &["dns", "udp", addr, "up.invalid"]);
            r.0["rcode"].is_string().then_some(())
        });
        assert!(
            up.is_some(),
            "dnsmasq on {addr} did not answer:\n{}",
            server.log_text()
        );
        server
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Did the server ever get a query for `name`?
    pub fn was_asked(&self, name: &str) -> bool {
        self.log_text()
            .lines()
            .any(|l| l.contains("query[") && l.contains(&format!(" {name} from")))
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- dnsmasq {} log ---\n{}", self.addr, self.log_text());
        }
    }
}

/// One DNS test's world: a DNS server with `records`, and a daemon whose
/// policy gives `identities` (YAML list items, `{n}` for the slot), with
/// this slot's `dns:` settings plus `extra`.
pub struct Lab {
    // Dropped in this order: the daemon first, so that it writes its last
    // state (dns-learned.json) before the environment's directory and
    // cgroups are removed, not into a directory it recreates afterwards.
    pub daemon: DaemonProc,
    pub upstream: Dnsmasq,
    pub n: u8,
    pub env: TestEnv,
}

impl Lab {
    pub fn new(name: &str, identities: &str, records: &[(&str, u8)], extra: &str) -> Self {
        Self::with_raw(name, identities, records, &[], extra)
    }

    /// `records`: name → last octet of its address in this slot; `raw`:
    /// more dnsmasq options (`{n}` stands for the slot).
    pub fn with_raw(
        name: &str,
        identities: &str,
        records: &[(&str, u8)],
        raw: &[&str],
        extra: &str,
    ) -> Self {
        let n = slot();
        let policy = format!(
            "version: 1\nidentities:\n{}",
            identities.replace("{n}", &n.to_string())
        );
        let env = TestEnv::new(name, &policy);
        env.write_config(&config(n, &env.dir, extra));
        let mut opts: Vec<String> = records
            .iter()
            .map(|(name, x)| format!("--host-record={name},{}", answer_ip(n, *x)))
            .collect();
        opts.extend(raw.iter().map(|r| r.replace("{n}", &n.to_string())));
        let upstream = Dnsmasq::start(&env.dir, None, &upstream_ip(n), &opts);
        let daemon = DaemonProc::start(&env);
        Self {
            daemon,
            upstream,
            n,
            env,
        }
    }

    pub fn ip(&self, x: u8) -> String {
        answer_ip(self.n, x)
    }

    /// Ask `name` as `identity`, over `how` (udp, udp-connect, tcp), sent to
    /// `server` (any address: the kernel steers it).
    pub fn ask(&self, identity: &str, how: &str, server: &str, name: &str) -> Outcome {
        Probe::enrolled(&self.env, identity, &["dns", how, server, name])
    }

    /// Ask for records of type `qtype` (A, AAAA, TXT…) over UDP.
    pub fn ask_type(&self, identity: &str, server: &str, name: &str, qtype: &str) -> Outcome {
        Probe::enrolled(&self.env, identity, &["dns", "udp", server, name, qtype])
    }

    pub fn connect(&self, identity: &str, ip: &str, port: u16) -> Outcome {
        Probe::enrolled(&self.env, identity, &["tcp", ip, &port.to_string()])
    }
}

/// An enrolled shell that runs probes on request: one enrolled process that
/// keeps acting while the daemon is down (enrolling a new one needs it).
pub struct Agent {
    child: Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Agent {
    pub fn start(env: &TestEnv, identity: &str) -> Self {
        let mut child = Command::new(crate::palisade_bin())
            .args(["exec", "--socket"])
            .arg(&env.socket)
            .args([
                "--identity",
                identity,
                "--",
                "sh",
                "-c",
                "while read -r line; do $line; done",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("enrolled shell: {e}"));
        let stdin = child.stdin.take().unwrap_or_else(|| panic!("stdin"));
        let stdout =
            std::io::BufReader::new(child.stdout.take().unwrap_or_else(|| panic!("stdout")));
        Self {
            child,
            stdin,
            stdout,
        }
    }

    pub fn run(&mut self, args: &[&str]) -> Outcome {
        use std::io::{BufRead, Write};
        writeln!(self.stdin, "{} {}", Probe::bin().display(), args.join(" "))
            .unwrap_or_else(|e| panic!("to the enrolled shell: {e}"));
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("from the enrolled shell: {e}"));
        Outcome(serde_json::from_str(&line).unwrap_or_else(|e| panic!("probe said {line:?}: {e}")))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
