//! The far end of an attack: `palisade-probe capture` inside a test's
//! network namespace, counting the frames that arrive for given addresses
//! with given markers in them (before the IP stack there decides anything).

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Child, ChildStdout, Command, Stdio},
};

use crate::{Probe, netns::NetNs};

pub struct Capture {
    child: Option<Child>,
    out: BufReader<ChildStdout>,
}

impl Capture {
    /// Listen on the namespace's interface for `millis`; returns once the
    /// capture is listening.
    pub fn start(ns: &NetNs, millis: u64, dsts: &[&str], markers: &[&str]) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(Probe::bin())
            .args(["capture", &ns.peer_if, &millis.to_string(), &dsts.join(",")])
            .args(markers)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the capture in {}: {e}", ns.name));
        let mut out = BufReader::new(
            child
                .stdout
                .take()
                .unwrap_or_else(|| panic!("capture stdout")),
        );
        let mut line = String::new();
        out.read_line(&mut line)
            .unwrap_or_else(|e| panic!("reading the capture: {e}"));
        assert!(line.contains("ready"), "capture did not start: {line:?}");
        Self {
            child: Some(child),
            out,
        }
    }

    /// Wait for the capture to end; frames counted per marker.
    pub fn finish(mut self) -> BTreeMap<String, u64> {
        let mut line = String::new();
        self.out
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("reading the capture: {e}"));
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("capture said {line:?}: {e}"));
        v["counts"]
            .as_object()
            .unwrap_or_else(|| panic!("capture failed: {line}"))
            .iter()
            .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
            .collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
