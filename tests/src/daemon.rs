//! The real daemon as a child process.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{TestEnv, palisade_bin, wait_for};

pub struct DaemonProc {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl DaemonProc {
    /// Start `palisade daemon` for `env` and wait until its API answers.
    pub fn start(env: &TestEnv) -> Self {
        Self::start_with(env, &[])
    }

    pub fn start_with(env: &TestEnv, extra_args: &[&str]) -> Self {
        Self::spawn(env, extra_args, None, false)
    }

    /// Start the daemon in a session of its own, so that it alone is in
    /// its autogroup (the kernel groups CPU shares by session).
    pub fn start_in_own_session(env: &TestEnv) -> Self {
        Self::spawn(env, &[], None, true)
    }

    /// Start the daemon inside `cgroup` (a directory with `cgroup.procs`,
    /// of any hierarchy: a memory cgroup of its own, say).
    pub fn start_in_cgroup(env: &TestEnv, cgroup: &std::path::Path) -> Self {
        Self::spawn(env, &[], Some(cgroup), false)
    }

    fn spawn(
        env: &TestEnv,
        extra_args: &[&str],
        cgroup: Option<&std::path::Path>,
        own_session: bool,
    ) -> Self {
        let log = env.dir.join(format!(
            "daemon-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let logfile = std::fs::File::create(&log).unwrap_or_else(|e| panic!("daemon log: {e}"));
        let mut cmd = Command::new(palisade_bin());
        cmd.arg("daemon")
            .arg("--config")
            .arg(&env.config)
            .args(extra_args)
            .env("PALISADE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(logfile);
        if let Some(cgroup) = cgroup {
            crate::probe::enter_cgroup(&mut cmd, cgroup);
        }
        if own_session {
            use std::os::unix::process::CommandExt;
            // SAFETY: setsid is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::setsid() < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting palisade daemon: {e}"));
        let mut d = Self {
            child: Some(child),
            log,
        };
        let up = wait_for(Duration::from_secs(20), || {
            if let Some(c) = d.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("daemon exited during start ({status}):\n{}", d.log_text());
            }
            let out = Command::new(palisade_bin())
                .args(["status", "--json", "--socket"])
                .arg(&env.socket)
                .output()
                .ok()?;
            out.status.success().then_some(())
        });
        if up.is_none() {
            panic!("daemon did not answer within 20 s:\n{}", d.log_text());
        }
        d
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL: no cleanup at all, as after a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Send a signal and wait for the daemon to exit; returns its exit code.
    pub fn signal_and_wait(&mut self, sig: nix::sys::signal::Signal) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        let status = wait_for(Duration::from_secs(10), || c.try_wait().ok().flatten());
        match status {
            Some(s) => s.code(),
            None => {
                let _ = c.kill();
                let _ = c.wait();
                panic!("daemon ignored {sig}:\n{}", self.log_text());
            }
        }
    }

    pub fn hup(&self) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGHUP,
            );
        }
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            if wait_for(Duration::from_secs(5), || c.try_wait().ok().flatten()).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "--- daemon log {} ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}
