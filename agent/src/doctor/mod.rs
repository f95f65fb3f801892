//! `palisade doctor`: does this host have what Palisade needs? Each check
//! says what it found, and when something is missing, how to fix it.
//!
//! What is fatal and what is a warning follows one rule: **fatal** when
//! enforcement would have a hole or not exist (no cgroup v2, no BTF, no
//! bpffs or tracefs that could be mounted, a cgroup socket hook or the cgroup-creation tracepoint that will
//! not load, missing capabilities); **warning** when a documented fallback
//! keeps the guarantee (BPF LSM refused → the seccomp filter of
//! `palisade exec` refuses packet sockets). The daemon runs the host checks
//! before it touches the kernel and refuses to start on any fatal one; its
//! real program load is the program check.

mod guards;
mod host;
mod programs;

use std::fmt;

use serde::Serialize;

use crate::config::Config;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    const fn tag(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Stable name (`kernel`, `btf`, `cgroup2`, `hook:connect4`…).
    pub name: String,
    pub level: Level,
    /// What was found.
    pub detail: String,
    /// How to fix it, for warnings and failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            level: Level::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            level: Level::Warn,
            fix: Some(fix.into()),
            ..Self::ok(name, detail)
        }
    }

    fn fail(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            level: Level::Fail,
            ..Self::warn(name, detail, fix)
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn ready(&self) -> bool {
        self.checks.iter().all(|c| c.level != Level::Fail)
    }

    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.level == Level::Fail)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.level == Level::Warn)
    }

    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for c in &self.checks {
            writeln!(f, "{:<4}  {:<width$}  {}", c.level.tag(), c.name, c.detail)?;
            if let Some(fix) = &c.fix {
                writeln!(f, "{:<4}  {:<width$}  fix: {fix}", "", "")?;
            }
        }
        let fails = self.failures().count();
        let warns = self.warnings().count();
        if fails == 0 {
            write!(f, "\nready: Palisade can enforce on this host")?;
            if warns > 0 {
                write!(f, " ({warns} warning{})", if warns == 1 { "" } else { "s" })?;
            }
            writeln!(f)
        } else {
            writeln!(
                f,
                "\nNOT READY: {fails} problem{} to fix before the daemon can start",
                if fails == 1 { "" } else { "s" }
            )
        }
    }
}

/// Every check, including loading each eBPF program for real (into a
/// throw-away object: nothing is pinned, attached programs are detached
/// again, enforcement in place is not touched). Like the daemon, it first
/// mounts the kernel filesystems the host lacks, so it reports what the
/// daemon would meet.
pub fn run(config: &Config) -> Report {
    let mut report = Report {
        checks: host::checks(config, &crate::mounts::ensure_all(&config.bpffs)),
    };
    // Loading programs needs the basics; without them the result would
    // only repeat the failures above.
    let basics = ["btf", "capabilities", "cgroup2"];
    if basics
        .iter()
        .all(|n| report.get(n).is_none_or(|c| c.level != Level::Fail))
    {
        report.checks.extend(programs::checks());
    }
    report
}

/// The host checks the daemon runs before it starts, after mounting what
/// it can.
pub fn preflight(config: &Config) -> Report {
    Report {
        checks: host::checks(config, &crate::mounts::ensure_all(&config.bpffs)),
    }
}
