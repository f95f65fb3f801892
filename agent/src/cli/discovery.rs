//! `palisade policy suggest | unused`: least privilege from the audit trail.

use std::{path::PathBuf, process::ExitCode, time::SystemTime};

use anyhow::Context as _;

use crate::discovery;

#[derive(clap::Args, Debug)]
pub struct SuggestArgs {
    /// Trail files, in any order (e.g. /var/log/palisade/audit.jsonl*).
    #[arg(long = "trail", value_name = "FILE", required = true, num_args = 1..)]
    pub trail: Vec<PathBuf>,
    /// The identity whose behaviour to turn into rules.
    #[arg(long)]
    pub identity: String,
    /// Only records from this long ago until now (e.g. 24h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// The policy in force: what it already allows is not repeated, its
    /// selectors are kept, and its deny rules are taken into account.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Print the least-privilege test suite (`palisade policy test`)
    /// instead of the policy.
    #[arg(long)]
    pub tests: bool,
    /// With --tests: the `policy:` the suite names (relative to the suite).
    #[arg(long, requires = "tests")]
    pub suite_policy: Option<String>,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct UnusedArgs {
    #[arg(long)]
    pub policy: PathBuf,
    /// Trail files, in any order.
    #[arg(long = "trail", value_name = "FILE", required = true, num_args = 1..)]
    pub trail: Vec<PathBuf>,
    /// Only records from this long ago until now (e.g. 24h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `--since 24h` as unix seconds.
fn since(text: Option<&str>) -> anyhow::Result<Option<i64>> {
    let Some(t) = text else { return Ok(None) };
    let d = humantime::parse_duration(t)
        .with_context(|| format!("--since `{t}`: give a duration such as 30m, 24h or 7d"))?;
    let cut = SystemTime::now()
        .checked_sub(d)
        .and_then(|c| c.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |c| c.as_secs() as i64);
    Ok(Some(cut))
}

pub fn suggest(a: &SuggestArgs) -> anyhow::Result<ExitCode> {
    let current = a
        .policy
        .as_deref()
        .map(super::policy::load_or_print)
        .transpose()?;
    let out = discovery::suggest_from_trail(
        &a.trail,
        &a.identity,
        since(a.since.as_deref())?,
        current.as_ref(),
        a.tests.then_some(a.suite_policy.as_deref()),
    )?;
    let text = out.suite.unwrap_or(out.policy);
    match &a.out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{text}"),
    }
    if out.span.unreadable > 0 {
        eprintln!(
            "palisade: {} lines of the trail were not audit records (run `palisade audit verify`)",
            out.span.unreadable
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn unused(a: &UnusedArgs) -> anyhow::Result<ExitCode> {
    let policy = super::policy::load_or_print(&a.policy)?;
    let report = discovery::unused_from_trail(&a.trail, &policy, since(a.since.as_deref())?)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", discovery::unused::human(&report));
    }
    Ok(ExitCode::SUCCESS)
}
