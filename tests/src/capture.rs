//! The far end of an attack: `palisade-probe capture` inside a test's
//! network namespace, counting the frames that arrive for given addresses
//! with given markers in them (before the IP stack there decides anything).

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Child, ChildStdout, Command, Stdio},
};

use crate::{Probe, netns::NetNs};

/// A probe action running in a namespace: it says `ready`, later prints
/// one JSON line with what it saw.
struct Background {
    child: Option<Child>,
    out: BufReader<ChildStdout>,
}

impl Background {
    /// Run the probe with `args` in `ns` (`None`: on the host).
    fn start(ns: Option<&NetNs>, args: &[&str]) -> Self {
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.name]).arg(Probe::bin());
                c
            }
            None => Command::new(Probe::bin()),
        };
        let where_ = ns.map_or("the host", |n| n.name.as_str());
        let mut child = cmd
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {args:?} in {where_}: {e}"));
        let mut out = BufReader::new(
            child
                .stdout
                .take()
                .unwrap_or_else(|| panic!("{args:?}: no stdout")),
        );
        let mut line = String::new();
        out.read_line(&mut line)
            .unwrap_or_else(|e| panic!("reading {args:?}: {e}"));
        assert!(line.contains("ready"), "{args:?} did not start: {line:?}");
        Self {
            child: Some(child),
            out,
        }
    }

    fn finish(mut self) -> serde_json::Value {
        let mut line = String::new();
        self.out
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("reading the result: {e}"));
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("result {line:?}: {e}"))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub struct Capture(Background);

impl Capture {
    /// Listen on the namespace's interface for `millis`; returns once the
    /// capture is listening.
    pub fn start(ns: &NetNs, millis: u64, dsts: &[&str], markers: &[&str]) -> Self {
        let millis = millis.to_string();
        let dsts = dsts.join(",");
        let mut args = vec!["capture", ns.peer_if.as_str(), &millis, &dsts];
        args.extend_from_slice(markers);
        Self(Background::start(Some(ns), &args))
    }

    /// Wait for the capture to end; frames counted per marker.
    pub fn finish(self) -> BTreeMap<String, u64> {
        let v = self.0.finish();
        v["counts"]
            .as_object()
            .unwrap_or_else(|| panic!("capture failed: {v}"))
            .iter()
            .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
            .collect()
    }
}

/// What a stream's far end received on one port.
#[derive(Clone, Copy, Debug, Default)]
pub struct Received {
    pub bytes: u64,
    /// When the first and last bytes arrived (ns since the epoch).
    pub first_ns: u128,
    pub last_ns: u128,
}

/// TCP and UDP listeners in a namespace, reporting what arrived and when.
pub struct Sink(Background);

impl Sink {
    pub fn start(ns: &NetNs, ip: &str, tcp: &[u16], udp: &[u16], millis: u64) -> Self {
        let list = |p: &[u16]| p.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        let (tcp, udp, millis) = (list(tcp), list(udp), millis.to_string());
        Self(Background::start(
            Some(ns),
            &["sink", ip, &tcp, &udp, &millis],
        ))
    }

    /// Listeners on the host itself (a loopback address).
    pub fn start_here(ip: &str, tcp: &[u16], udp: &[u16], millis: u64) -> Self {
        let list = |p: &[u16]| p.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        let (tcp, udp, millis) = (list(tcp), list(udp), millis.to_string());
        Self(Background::start(None, &["sink", ip, &tcp, &udp, &millis]))
    }

    /// Keyed `tcp/PORT`, `udp/PORT`.
    pub fn finish(self) -> BTreeMap<String, Received> {
        let v = self.0.finish();
        let num = |x: &serde_json::Value| x.as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
        v["ports"]
            .as_object()
            .unwrap_or_else(|| panic!("sink failed: {v}"))
            .iter()
            .map(|(k, r)| {
                (
                    k.clone(),
                    Received {
                        bytes: r["bytes"].as_u64().unwrap_or(0),
                        first_ns: num(&r["first_ns"]),
                        last_ns: num(&r["last_ns"]),
                    },
                )
            })
            .collect()
    }
}

/// `palisade-probe stream` run as an agent of `identity` under `palisade
/// exec` (as uid 65534 when `unprivileged`): TCP to `tcp` and connected UDP
/// to `udp` on `host`, a chunk every 10 ms for `millis`. The thread's
/// result says whether each kept sending (`tcp_errno`, `udp_errno`).
pub fn exec_stream(
    socket: &std::path::Path,
    identity: &str,
    unprivileged: bool,
    host: &str,
    tcp: u16,
    udp: u16,
    millis: u64,
) -> std::thread::JoinHandle<crate::probe::Outcome> {
    let (tcp, udp, millis) = (tcp.to_string(), udp.to_string(), millis.to_string());
    exec_probe(
        socket,
        identity,
        unprivileged,
        &["stream", host, &tcp, &udp, &millis],
    )
}

/// `palisade-probe ARGS…` as an agent of `identity` under `palisade exec`
/// (as uid 65534 when `unprivileged`), in a thread: its last line of output.
pub fn exec_probe(
    socket: &std::path::Path,
    identity: &str,
    unprivileged: bool,
    args: &[&str],
) -> std::thread::JoinHandle<crate::probe::Outcome> {
    let socket = socket.to_path_buf();
    let identity = identity.to_string();
    let args: Vec<String> = args.iter().map(|s| (*s).to_string()).collect();
    std::thread::spawn(move || {
        let out = Command::new(crate::palisade_bin())
            .arg("exec")
            .arg("--socket")
            .arg(&socket)
            .args(["--identity", &identity, "--"])
            .arg(Probe::bin())
            .args(if unprivileged {
                &["as-user", "65534"][..]
            } else {
                &[]
            })
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        crate::probe::Outcome(
            serde_json::from_str(text.lines().last().unwrap_or_default())
                .unwrap_or_else(|e| panic!("{identity} {args:?} said {text:?}: {e}")),
        )
    })
}

/// Nanoseconds since the epoch, the clock the sink stamps arrivals with.
pub fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
