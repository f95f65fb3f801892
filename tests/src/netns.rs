//! A network namespace with a veth pair, so tests can talk to a "remote"
//! host that exists only inside this test: host side `10.<n>.0.1/24`,
//! namespace side `10.<n>.0.2/24`. Removed on drop.

use std::process::{Child, Command, Stdio};

pub struct NetNs {
    pub name: String,
    pub host_ip: String,
    pub peer_ip: String,
    /// The namespace's end of the veth pair.
    pub peer_if: String,
    /// The host's end of the veth pair.
    pub host_if: String,
    children: Vec<Child>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!(
            "running `ip {}` (is iproute2 installed? `cargo xtask setup`): {e}",
            args.join(" ")
        )
    });
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetNs {
    /// `octet` picks the private /24 (10.octet.0.0/24); give each test its own.
    pub fn new(tag: &str, octet: u8) -> Self {
        Self::named(&format!("pal-{}{tag}", crate::run_tag()), octet, 0)
    }

    /// A namespace called `<prefix>-<pid>` on `10.<octet>.<third>.0/24`
    /// (for tests given their own prefix and range).
    pub fn named(prefix: &str, octet: u8, third: u8) -> Self {
        let name = format!("{prefix}-{}", std::process::id());
        let (host_if, peer_if) = if third == 0 {
            (
                format!("pv{octet}h{}", std::process::id() % 10000),
                format!("pv{octet}p{}", std::process::id() % 10000),
            )
        } else {
            (
                format!("pv{octet}x{third}h{}", std::process::id() % 10000),
                format!("pv{octet}x{third}p{}", std::process::id() % 10000),
            )
        };
        let host_ip = format!("10.{octet}.{third}.1");
        let peer_ip = format!("10.{octet}.{third}.2");
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        ip(&["netns", "add", &name]);
        let ns = Self {
            name: name.clone(),
            host_ip: host_ip.clone(),
            peer_ip: peer_ip.clone(),
            peer_if: peer_if.clone(),
            host_if: host_if.clone(),
            children: Vec::new(),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
        ]);
        ip(&["link", "set", &peer_if, "netns", &name]);
        ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{peer_ip}/24"),
            "dev",
            &peer_if,
        ]);
        ip(&["-n", &name, "link", "set", &peer_if, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ns
    }

    /// Add an address (`10.x.0.3/24`, `fd00:x::2/64`) to the namespace's
    /// end (`peer`) or the host's end; IPv6 ones are usable at once.
    pub fn add_addr(&self, cidr: &str, peer: bool) {
        let mut args: Vec<&str> = Vec::new();
        if peer {
            args.extend(["-n", &self.name]);
        }
        let dev = if peer { &self.peer_if } else { &self.host_if };
        args.extend(["addr", "add", cidr, "dev", dev]);
        if cidr.contains(':') {
            args.push("nodad");
        }
        ip(&args);
    }

    /// Set a per-namespace sysctl (e.g. `net.ipv4.ping_group_range`).
    pub fn sysctl(&self, key: &str, value: &str) {
        ip(&[
            "netns",
            "exec",
            &self.name,
            "sysctl",
            "-q",
            "-w",
            &format!("{key}={value}"),
        ]);
    }

    /// Run a long-lived command inside the namespace (killed on drop).
    pub fn spawn(&mut self, program: &str, args: &[&str]) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program} in {}: {e}", self.name));
        self.children.push(child);
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
