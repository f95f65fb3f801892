//! Least privilege from evidence: the audit trail says what each agent
//! actually did; discovery turns that into the smallest policy that allows
//! it (`palisade policy suggest`), the test matrix that keeps it that small
//! (`--tests`), and the list of what a policy grants but nobody used
//! (`palisade policy unused`).
//!
//! * `records` — the trail, streamed record by record in chain order
//! * `evidence` — what one identity did, aggregated
//! * `suggest` — evidence to rules
//! * `render` — rules to a reviewed YAML policy
//! * `check` — the merged policy allows every observed event
//! * `cases` — the least-privilege test suite
//! * `unused` — rules, roles and permissions that decided nothing
//!
//! Nothing here holds the trail in memory: a million-record trail takes as
//! long as `palisade audit verify` on it, in a bounded footprint
//! (docs/benchmarks.md).

pub mod cases;
pub mod check;
pub mod evidence;
pub mod records;
pub mod render;
pub mod suggest;
pub mod unused;

use std::path::PathBuf;

use prost_types::{Struct, value::Kind};

use crate::policy::{Policy, PolicyErrors};

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("identity `{0}` is not in the current policy")]
    UnknownIdentity(String),
    /// The generated policy did not validate or does not allow what it
    /// must: a bug in the generator, never printed as a suggestion.
    #[error("the suggested policy is wrong ({0}); please report this")]
    Internal(String),
}

/// The numeric parameters of a call, as the decision engine sees them
/// (whole numbers as integers), for the audit record.
pub fn numeric_params(params: &Struct) -> std::collections::BTreeMap<String, serde_json::Number> {
    params
        .fields
        .iter()
        .filter_map(|(k, v)| match v.kind {
            Some(Kind::NumberValue(n)) if n.is_finite() => {
                let num = if n.fract() == 0.0 && n.abs() < 9.0e15 {
                    serde_json::Number::from(n as i64)
                } else {
                    serde_json::Number::from_f64(n)?
                };
                Some((k.clone(), num))
            }
            _ => None,
        })
        .collect()
}

/// What `policy suggest` produces.
pub struct Suggested {
    pub policy: String,
    /// The `policy test` suite, when asked for.
    pub suite: Option<String>,
    pub suggestion: suggest::Suggestion,
    pub span: records::Span,
}

/// Read the trail for `identity` and suggest its policy.
pub fn suggest_from_trail(
    paths: &[PathBuf],
    identity: &str,
    since: Option<i64>,
    current: Option<&Policy>,
    tests: Option<Option<&str>>,
) -> Result<Suggested, DiscoveryError> {
    if let Some(p) = current
        && p.identity(identity).is_none()
    {
        return Err(DiscoveryError::UnknownIdentity(identity.to_string()));
    }
    let mut e = evidence::Evidence::new(identity);
    let window = records::Window {
        since,
        identity: Some(identity.to_string()),
    };
    let span = records::walk(paths, &window, |r, t| e.add(r, t))?;
    let opts = suggest::Options { identity, current };
    let mut s = suggest::suggest(&e, &opts);
    let mut text = render::policy(&s, &span);
    let fragment = load_generated(&text)?;
    let gaps = check::check(&e, &opts, &fragment);
    if let Some(g) = gaps.iter().find(|g| g.denied_by.is_none()) {
        return Err(DiscoveryError::Internal(format!(
            "it does not allow {}",
            g.what
        )));
    }
    if !gaps.is_empty() {
        for g in &gaps {
            s.notes.push(format!(
                "{} stay denied by rule `{}` of the current policy",
                g.what,
                g.denied_by.as_deref().unwrap_or("?")
            ));
        }
        text = render::policy(&s, &span);
    }
    let suite = tests.map(|path| cases::suite(&s, current, &fragment, &span, path));
    Ok(Suggested {
        policy: text,
        suite,
        suggestion: s,
        span,
    })
}

/// The generated text must validate with no lint at all (what `policy
/// check --strict` asks).
fn load_generated(text: &str) -> Result<Policy, DiscoveryError> {
    let show = |e: PolicyErrors| {
        e.diagnostics
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    };
    let loaded = crate::policy::load_str("suggested.yaml", text)
        .map_err(|e| DiscoveryError::Internal(show(e)))?;
    if let Some(w) = loaded.warnings.first() {
        // The only lint a suggestion may carry is the missing selector,
        // which only the operator can supply.
        if !w.message.contains("has no selector") || loaded.warnings.len() > 1 {
            return Err(DiscoveryError::Internal(w.to_string()));
        }
    }
    Ok(loaded.policy)
}

/// Read the trail and report what `policy` grants that decided nothing.
pub fn unused_from_trail(
    paths: &[PathBuf],
    policy: &Policy,
    since: Option<i64>,
) -> Result<unused::Report, DiscoveryError> {
    let mut tally = unused::Tally::new(policy);
    let window = records::Window {
        since,
        identity: None,
    };
    let span = records::walk(paths, &window, |r, t| tally.add(r, t))?;
    Ok(tally.report(&span))
}

#[cfg(test)]
mod tests;
