//! One isolated Palisade installation per test.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use palisade::identity::CgroupFs;

static SEQ: AtomicU32 = AtomicU32::new(0);

pub struct TestEnv {
    pub name: String,
    pub dir: PathBuf,
    pub cgroup_root: PathBuf,
    /// The cgroup the programs attach to (this test's subtree).
    pub attach: PathBuf,
    pub bpffs: PathBuf,
    pub socket: PathBuf,
    pub audit: PathBuf,
    pub policy: PathBuf,
    pub config: PathBuf,
    /// The daemon's decision state journal.
    pub state: PathBuf,
}

impl TestEnv {
    /// The CLI against this installation's socket, as an operator (root,
    /// not enrolled).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(crate::palisade_bin())
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .unwrap_or_else(|e| panic!("palisade {args:?}: {e}"))
    }

    /// `cli`, which must succeed; its standard output.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "palisade {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Fresh directories and cgroup for test `name`, with `policy` written.
    pub fn new(name: &str, policy: &str) -> Self {
        let unique = format!(
            "palisade-test-{}{name}-{}-{}",
            crate::run_tag(),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(&unique);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let cgroups = CgroupFs::discover().unwrap_or_else(|e| panic!("cgroup v2: {e}"));
        let attach = cgroups.root().join(&unique);
        fs::create_dir_all(&attach)
            .unwrap_or_else(|e| panic!("creating {}: {e}", attach.display()));
        let env = Self {
            name: name.to_string(),
            socket: dir.join("palisade.sock"),
            audit: dir.join("audit.jsonl"),
            policy: dir.join("policy.yaml"),
            config: dir.join("config.yaml"),
            state: dir.join("state.journal"),
            bpffs: PathBuf::from("/sys/fs/bpf").join(&unique),
            cgroup_root: cgroups.root().to_path_buf(),
            attach,
            dir,
        };
        env.write_policy(policy);
        env.write_config("");
        env
    }

    pub fn write_policy(&self, text: &str) {
        write_atomic(&self.policy, text);
    }

    /// The same installation spread over directories as on a host: policy
    /// and config in `etc/`, the socket in `run/`, state and the signing
    /// key in `lib/`, the trail in `log/` (rewritten there).
    pub fn laid_out_like_a_host(mut self) -> Self {
        let policy = fs::read_to_string(&self.policy).unwrap_or_default();
        for sub in ["etc", "run", "lib", "log"] {
            fs::create_dir_all(self.dir.join(sub))
                .unwrap_or_else(|e| panic!("creating {sub}: {e}"));
        }
        self.policy = self.dir.join("etc/policy.yaml");
        self.config = self.dir.join("etc/config.yaml");
        self.socket = self.dir.join("run/palisade.sock");
        self.state = self.dir.join("lib/state.journal");
        self.audit = self.dir.join("log/audit.jsonl");
        self.write_policy(&policy);
        self.write_config("");
        self
    }

    /// Write the daemon config; `extra` is appended YAML.
    pub fn write_config(&self, extra: &str) {
        self.write_config_with("", extra);
    }

    /// Same, with `audit_extra` added under `audit:` (indented two spaces,
    /// e.g. `"  rotate_bytes: 4096\n"`). Metrics listen on a free loopback
    /// port (see `metrics_address`).
    pub fn write_config_with(&self, audit_extra: &str, extra: &str) {
        self.write_config_sections(audit_extra, "", extra);
    }

    /// The daemon's programs attached at the cgroup v2 root, as in a real
    /// deployment (`palisade exec` cgroups still under this test's subtree),
    /// for tests where an agent leaves for the root. Unenrolled processes of
    /// the host pass the programs untouched meanwhile.
    pub fn write_config_at_root(&self, extra: &str) {
        self.write_config_cgroup(
            &format!(
                "cgroup:\n  attach: {}\n  managed: {}\n",
                self.cgroup_root.display(),
                self.attach.join("palisade").display()
            ),
            "",
            "",
            extra,
        );
    }

    /// Same, with `tokens_extra` added under `tokens:` (indented two spaces).
    pub fn write_config_sections(&self, audit_extra: &str, tokens_extra: &str, extra: &str) {
        self.write_config_cgroup(
            &format!("cgroup:\n  attach: {}\n", self.attach.display()),
            audit_extra,
            tokens_extra,
            extra,
        );
    }

    fn write_config_cgroup(
        &self,
        cgroup: &str,
        audit_extra: &str,
        tokens_extra: &str,
        extra: &str,
    ) {
        // The L7 gateway listens on fixed loopback ports; tests that do not
        // configure it keep it off, so concurrent daemons never compete.
        let gateway = if extra.contains("gateway:") {
            ""
        } else {
            "gateway:\n  enabled: false\n"
        };
        // The signing key beside the state, as in /var/lib/palisade.
        let key = self.state.with_file_name("keys.yaml");
        let text = format!(
            "policy: {}\nsocket: {}\nbpffs: {}\naudit:\n  file: {}\n{audit_extra}{cgroup}resync_seconds: 1\nmetrics:\n  listen: 127.0.0.1:0\ntokens:\n  key_file: {}\n{tokens_extra}state:\n  file: {}\n{gateway}{extra}",
            self.policy.display(),
            self.socket.display(),
            self.bpffs.display(),
            self.audit.display(),
            key.display(),
            self.state.display(),
        );
        write_atomic(&self.config, &text);
    }

    /// `palisade status --json` of the running daemon.
    pub fn status(&self) -> serde_json::Value {
        let out = std::process::Command::new(crate::palisade_bin())
            .args(["status", "--json", "--socket"])
            .arg(&self.socket)
            .output()
            .unwrap_or_else(|e| panic!("palisade status: {e}"));
        assert!(
            out.status.success(),
            "palisade status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status JSON: {e}"))
    }

    /// Where the running daemon serves `/metrics`.
    pub fn metrics_address(&self) -> String {
        self.status()["health"]["metrics_address"]
            .as_str()
            .unwrap_or_else(|| panic!("metrics are not enabled: {}", self.status()))
            .to_string()
    }

    /// A cgroup path inside this test's subtree (created).
    pub fn make_cgroup(&self, rel: &str) -> PathBuf {
        let p = self.attach.join(rel);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("creating cgroup {}: {e}", p.display()));
        p
    }

    /// Path of a cgroup below the v2 root, as selectors write it.
    pub fn selector_path(&self, rel: &str) -> String {
        let attach_rel = self
            .attach
            .strip_prefix(&self.cgroup_root)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        format!("/{attach_rel}/{rel}")
    }

    /// The trail's complete lines so far. The daemon may be writing while
    /// this reads: a last line without its newline is a record still being
    /// written, left for the next read.
    pub fn audit_lines(&self) -> Vec<String> {
        let text = fs::read_to_string(&self.audit).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Every audit record written so far; every complete line must parse.
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        self.audit_lines()
            .iter()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad audit line {l:?}: {e}"))
            })
            .collect()
    }

    /// Wait (up to 15 s) until `n` processes of `identity` were enrolled by
    /// `palisade exec` (which asks the daemon): tests that then freeze,
    /// stop or restart the daemon, or act at once, know the agents run.
    pub fn wait_enrolments(&self, identity: &str, n: usize) {
        let enrolled = crate::wait_for(std::time::Duration::from_secs(15), || {
            let seen = self
                .audit_events()
                .iter()
                .filter(|e| e["kind"] == "enrolment" && e["identity"] == identity)
                .count();
            (seen >= n).then_some(())
        });
        assert!(
            enrolled.is_some(),
            "{n} enrolment(s) of `{identity}` not recorded within 15 s"
        );
        // The record comes just before the daemon's answer: until each
        // `palisade exec` of this installation has read it and become its
        // agent, a test must not freeze or stop the daemon.
        let socket = self.socket.to_string_lossy().into_owned();
        let palisade =
            fs::canonicalize(crate::palisade_bin()).unwrap_or_else(|_| crate::palisade_bin());
        let launched = crate::wait_for(std::time::Duration::from_secs(15), || {
            let waiting = fs::read_dir("/proc")
                .map(|d| {
                    d.filter_map(Result::ok)
                        .filter(|e| {
                            fs::read_link(e.path().join("exe")).is_ok_and(|x| x == palisade)
                        })
                        .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
                        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                        .filter(|c| c.contains(" exec ") && c.contains(&socket))
                        .count()
                })
                .unwrap_or(0);
            (waiting == 0).then_some(())
        });
        assert!(
            launched.is_some(),
            "a `palisade exec` of `{identity}` still waits for the daemon after 15 s"
        );
    }

    /// Wait (up to 5 s) until an audit record satisfies `pred`.
    pub fn wait_audit(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.wait_audit_for(std::time::Duration::from_secs(5), what, pred)
    }

    /// Wait up to `timeout` until an audit record satisfies `pred`.
    pub fn wait_audit_for(
        &self,
        timeout: std::time::Duration,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        crate::wait_for(timeout, || {
            self.audit_events().into_iter().find(|e| pred(e))
        })
        .unwrap_or_else(|| {
            panic!(
                "no audit event {what} in {}:\n{}",
                self.audit.display(),
                fs::read_to_string(&self.audit).unwrap_or_default()
            )
        })
    }
}

fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
    fs::rename(&tmp, path).unwrap_or_else(|e| panic!("renaming to {}: {e}", path.display()));
}

/// Remove a cgroup tree, deepest first, after moving stray processes out.
pub fn remove_cgroup_tree(root: &Path, top: &Path) {
    let mut dirs = Vec::new();
    let mut stack = vec![top.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = fs::read_dir(&d) {
            for e in entries.filter_map(Result::ok) {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        dirs.push(d);
    }
    for d in dirs.iter().rev() {
        if let Ok(procs) = fs::read_to_string(d.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = fs::write(root.join("cgroup.procs"), pid);
            }
        }
        let _ = fs::remove_dir(d);
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let _ = palisade::bpf::uninstall(&self.bpffs);
        remove_cgroup_tree(&self.cgroup_root, &self.attach);
        if std::env::var_os("PALISADE_KEEP_TEST_DIRS").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
