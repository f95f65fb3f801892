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

use crate::{Probe, wait_for};

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

/// The `dns:` config section for slot `n` (short TTLs so expiry is quick).
pub fn config(n: u8, dir: &Path, extra: &str) -> String {
    format!(
        "dns:\n  upstream: {}:53\n  listen: {}\n  state_file: {}\n  ttl_min: 1\n  ttl_max: 60\n  grace: 0\n{extra}",
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
