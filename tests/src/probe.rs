//! Running `palisade-probe`, enrolled or not, and reading what happened.

use std::{path::Path, process::Command};

use crate::{TestEnv, palisade_bin};

/// The outcome of one probe run.
#[derive(Debug, Clone)]
pub struct Outcome(pub serde_json::Value);

impl Outcome {
    pub fn ok(&self) -> bool {
        self.0["ok"].as_bool().unwrap_or(false)
    }

    pub fn errno(&self) -> Option<i64> {
        self.0["errno"].as_i64()
    }

    /// Assert success, with the probe's own error in the message.
    #[track_caller]
    pub fn expect_ok(&self, what: &str) {
        assert!(self.ok(), "{what}: expected success, got {}", self.0);
    }

    /// Assert failure with EPERM, the kernel hooks' answer.
    #[track_caller]
    pub fn expect_eperm(&self, what: &str) {
        assert_eq!(
            self.errno(),
            Some(i64::from(libc::EPERM)),
            "{what}: expected EPERM, got {}",
            self.0
        );
    }
}

pub struct Probe;

impl Probe {
    /// The probe binary, built next to the test executables
    /// (`target/release/palisade-probe`, tests live in `target/release/deps`).
    pub fn bin() -> std::path::PathBuf {
        // `cargo xtask test` may stage the binaries where every user can
        // run them (a checkout in root's home is out of their reach).
        if let Some(p) = std::env::var_os("PALISADE_PROBE") {
            return p.into();
        }
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
        // Benchmarks run from target/release, tests from target/release/deps.
        [exe.parent(), exe.parent().and_then(Path::parent)]
            .into_iter()
            .flatten()
            .map(|d| d.join("palisade-probe"))
            .find(|b| b.exists())
            .unwrap_or_else(|| {
                panic!(
                    "palisade-probe is missing near {}: build the tests crate's binaries",
                    exe.display()
                )
            })
    }

    fn parse(out: std::process::Output, what: &str) -> Outcome {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().last().unwrap_or_else(|| {
            panic!(
                "{what}: probe printed nothing (exit {:?}); stderr:\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        Outcome(
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{what}: bad probe output {line:?}: {e}")),
        )
    }

    /// Run the probe enrolled as `identity` through `palisade exec`.
    pub fn enrolled(env: &TestEnv, identity: &str, args: &[&str]) -> Outcome {
        Self::enrolled_in(env, None, identity, args)
    }

    /// Same, inside network namespace `netns` when given.
    pub fn enrolled_in(
        env: &TestEnv,
        netns: Option<&str>,
        identity: &str,
        args: &[&str],
    ) -> Outcome {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(palisade_bin());
                c
            }
            None => Command::new(palisade_bin()),
        };
        let out = cmd
            .arg("exec")
            .arg("--socket")
            .arg(&env.socket)
            .arg("--identity")
            .arg(identity)
            .arg("--")
            .arg(Self::bin())
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running palisade exec: {e}"));
        Self::parse(out, &format!("enrolled {identity} {args:?}"))
    }

    /// Run the probe enrolled as `identity`, switched by `palisade exec
    /// --user` to `user` once confined.
    pub fn enrolled_as_user(env: &TestEnv, identity: &str, user: &str, args: &[&str]) -> Outcome {
        let out = crate::gateway::exec_as_user(env, identity, user, &Self::bin(), args)
            .output()
            .unwrap_or_else(|e| panic!("running palisade exec: {e}"));
        Self::parse(out, &format!("enrolled {identity} as {user} {args:?}"))
    }

    /// Run the probe as an ordinary process (not enrolled).
    pub fn plain(args: &[&str]) -> Outcome {
        Self::plain_in(None, args)
    }

    pub fn plain_in(netns: Option<&str>, args: &[&str]) -> Outcome {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(Self::bin());
                c
            }
            None => Command::new(Self::bin()),
        };
        let out = cmd
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running probe: {e}"));
        Self::parse(out, &format!("unenrolled {args:?}"))
    }

    /// Run the probe inside an existing cgroup (for selector tests).
    pub fn in_cgroup(cgroup: &Path, args: &[&str]) -> Outcome {
        let out = Self::in_cgroup_cmd(cgroup, &Self::bin(), args);
        Self::parse(out, &format!("in {} {args:?}", cgroup.display()))
    }

    /// Run any program inside an existing cgroup and return its output.
    pub fn in_cgroup_cmd(cgroup: &Path, program: &Path, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(program);
        cmd.args(args);
        enter_cgroup(&mut cmd, cgroup);
        cmd.output()
            .unwrap_or_else(|e| panic!("running {} in cgroup: {e}", program.display()))
    }
}

/// Make `cmd` start inside `cgroup`: it moves itself there between fork
/// and exec, so it never runs anywhere else.
pub fn enter_cgroup(cmd: &mut Command, cgroup: &Path) {
    use std::os::unix::{ffi::OsStrExt, process::CommandExt};
    let procs = std::ffi::CString::new(cgroup.join("cgroup.procs").as_os_str().as_bytes())
        .unwrap_or_else(|e| panic!("cgroup path: {e}"));
    // SAFETY: between fork and exec only async-signal-safe calls: open,
    // write ("0" = the writing process), close.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if n != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Where `palisade-rpc` runs: enrolled as an identity with `palisade exec`,
/// inside a cgroup (selected by the policy), or as a plain process.
#[derive(Clone, Copy)]
pub enum RpcAs<'a> {
    Identity(&'a str),
    Cgroup(&'a Path),
    Unenrolled,
}

/// Run `palisade-rpc` (the decision API client, see its doc) against
/// `endpoint` and return its one-line JSON answer.
pub fn rpc_at(endpoint: &Path, who: RpcAs<'_>, args: &[&str]) -> serde_json::Value {
    let bin = Probe::bin().with_file_name("palisade-rpc");
    let mut full: Vec<&str> = vec![endpoint.to_str().unwrap_or_default()];
    full.extend_from_slice(args);
    let out = match who {
        RpcAs::Identity(id) => Command::new(palisade_bin())
            .arg("exec")
            .arg("--socket")
            .arg(endpoint)
            .arg("--identity")
            .arg(id)
            .arg("--")
            .arg(&bin)
            .args(&full)
            .output(),
        RpcAs::Cgroup(cgroup) => Ok(Probe::in_cgroup_cmd(cgroup, &bin, &full)),
        RpcAs::Unenrolled => Command::new(&bin).args(&full).output(),
    }
    .unwrap_or_else(|e| panic!("running palisade-rpc: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_else(|| {
        panic!(
            "palisade-rpc {args:?} printed nothing: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(line).unwrap_or_else(|e| panic!("palisade-rpc {args:?}: {line:?}: {e}"))
}

/// `rpc_at` on the test daemon's Unix socket.
pub fn rpc(env: &TestEnv, who: RpcAs<'_>, args: &[&str]) -> serde_json::Value {
    rpc_at(&env.socket, who, args)
}
