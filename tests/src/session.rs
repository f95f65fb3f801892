//! A long-lived client connection for the tests (`palisade-session`), and
//! a way to hand a freed pid to a process of the test's choosing.

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::probe::{Probe, enter_cgroup};

/// A JSON object as a protobuf `Struct` (`params`, `context`).
pub fn json_struct(v: &Value) -> prost_types::Struct {
    fn value(v: &Value) -> prost_types::Value {
        use prost_types::value::Kind;
        let kind = match v {
            Value::Null => Kind::NullValue(0),
            Value::Bool(b) => Kind::BoolValue(*b),
            Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
            Value::String(s) => Kind::StringValue(s.clone()),
            Value::Array(a) => Kind::ListValue(prost_types::ListValue {
                values: a.iter().map(value).collect(),
            }),
            Value::Object(o) => Kind::StructValue(json_struct(&Value::Object(o.clone()))),
        };
        prost_types::Value { kind: Some(kind) }
    }
    prost_types::Struct {
        fields: v
            .as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), value(v))).collect())
            .unwrap_or_default(),
    }
}

/// How to start a session.
#[derive(Default)]
pub struct SessionOptions<'a> {
    /// Start inside this cgroup (else in the test's own).
    pub cgroup: Option<&'a Path>,
    /// Drop to this uid and gid before connecting.
    pub creds: Option<(u32, u32)>,
    /// Connect, fork, and talk from the child (see `palisade-session`).
    pub handoff: bool,
}

/// A running `palisade-session`: one connection, commands in, answers out.
/// Killed (with its forked child) when dropped.
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// The process that connected (in handoff mode, the parent).
    pub connected_pid: u32,
    /// The process that makes the calls (in handoff mode, the child).
    pub caller_pid: u32,
}

impl Session {
    pub fn start(socket: &Path, opts: &SessionOptions<'_>) -> Self {
        let bin = Probe::bin().with_file_name("palisade-session");
        let mut cmd = Command::new(bin);
        cmd.arg(socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some((uid, gid)) = opts.creds {
            cmd.args(["--uid", &uid.to_string(), "--gid", &gid.to_string()]);
        }
        if opts.handoff {
            cmd.arg("--handoff");
        }
        if let Some(cg) = opts.cgroup {
            enter_cgroup(&mut cmd, cg);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("palisade-session: {e}"));
        let stdin = child.stdin.take();
        let stdout = BufReader::new(
            child
                .stdout
                .take()
                .unwrap_or_else(|| panic!("palisade-session stdout")),
        );
        let mut s = Self {
            connected_pid: child.id(),
            caller_pid: child.id(),
            child,
            stdin,
            stdout,
        };
        if opts.handoff {
            let pids = s.read_line();
            s.caller_pid = pids["child"]
                .as_u64()
                .and_then(|p| u32::try_from(p).ok())
                .unwrap_or_else(|| panic!("no child pid in {pids}"));
        }
        s
    }

    fn read_line(&mut self) -> Value {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("palisade-session: {e}"));
        assert!(!line.is_empty(), "palisade-session ended without answering");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("palisade-session {line:?}: {e}"))
    }

    /// Send one command, return its answer.
    pub fn call(&mut self, cmd: &Value) -> Value {
        let stdin = self
            .stdin
            .as_mut()
            .unwrap_or_else(|| panic!("session closed"));
        writeln!(stdin, "{cmd}").unwrap_or_else(|e| panic!("palisade-session stdin: {e}"));
        stdin
            .flush()
            .unwrap_or_else(|e| panic!("palisade-session stdin: {e}"));
        self.read_line()
    }

    /// Handoff mode: let the process that connected exit, and reap it, so
    /// its pid is free. Returns that pid.
    pub fn release_parent(&mut self) -> u32 {
        let released = self.call(&serde_json::json!({"op": "release"}));
        assert_eq!(released["ok"], true, "{released}");
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("waiting for the parent: {e}"));
        assert!(status.success(), "the parent failed: {status}");
        self.connected_pid
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Closing stdin ends the command loop; the caller exits by itself.
        drop(self.stdin.take());
        if self.caller_pid != self.connected_pid {
            let gone = crate::wait_for(Duration::from_secs(2), || {
                (!Path::new(&format!("/proc/{}", self.caller_pid)).exists()).then_some(())
            });
            if gone.is_none() && is_session(self.caller_pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.caller_pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Still our `palisade-session` (not a process that took its pid)?
fn is_session(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("palisade-session"))
}

/// A child process killed and reaped when dropped.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `cmd` as process `pid`, which must be free (a process that exited
/// and was reaped). The kernel allocates the pid after
/// `/proc/sys/kernel/ns_last_pid`, so that is set just below `pid` right
/// before the fork; other processes on the host fork too, hence the
/// retries.
pub fn spawn_at_pid(pid: u32, cmd: &mut Command) -> Reaped {
    for _ in 0..100 {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} was taken by another process on this host before the test could \
             reuse it; run the test again"
        );
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .unwrap_or_else(|e| panic!("setting ns_last_pid (needs root): {e}"));
        let child = Reaped(cmd.spawn().unwrap_or_else(|e| panic!("spawning: {e}")));
        if child.0.id() == pid {
            return child;
        }
    }
    panic!("could not start a process as pid {pid} in 100 tries");
}
