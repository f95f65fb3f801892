//! `PushPolicy`: an operator sends policy files; the whole resulting policy
//! is validated in memory first, and only a valid policy is written to the
//! configured location and applied. A rejected push changes nothing.

use std::{collections::BTreeMap, path::PathBuf};

use super::{Caller, Daemon, DaemonError, Reloaded, reload::Trigger};
use crate::{
    audit::{AuditEvent, EventKind},
    policy,
};

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && [".yaml", ".yml", ".json"].iter().any(|e| name.ends_with(e))
}

impl Daemon {
    pub async fn push_policy(
        &self,
        caller: &Caller,
        files: BTreeMap<String, String>,
    ) -> Result<Reloaded, DaemonError> {
        let operator = self.operator(caller, "pushing a policy")?;
        if files.is_empty() {
            return Err(DaemonError::InvalidArgument("no files in the push".into()));
        }
        if let Some(bad) = files.keys().find(|n| !valid_name(n)) {
            return Err(DaemonError::InvalidArgument(format!(
                "file name `{bad}`: use letters, digits, `.`, `_`, `-`, ending in .yaml, .yml or .json"
            )));
        }
        let path = self.config.policy_path().to_path_buf();
        // What the policy will be once the push is written. Errors name the
        // files as the operator sent them.
        let mut candidate: BTreeMap<PathBuf, String> = BTreeMap::new();
        let targets: Vec<(PathBuf, &String)> = if path.is_dir() {
            for f in policy::policy_files(&path).map_err(DaemonError::Policy)? {
                let text = std::fs::read_to_string(&f)
                    .map_err(|e| DaemonError::Config(format!("{}: {e}", f.display())))?;
                candidate.insert(f, text);
            }
            for (n, t) in &files {
                candidate.insert(path.join(n), t.clone());
            }
            files.iter().map(|(n, t)| (path.join(n), t)).collect()
        } else {
            if files.len() != 1 {
                return Err(DaemonError::InvalidArgument(format!(
                    "the policy is the single file {}: push exactly one file",
                    path.display()
                )));
            }
            for (n, t) in &files {
                candidate.insert(PathBuf::from(n), t.clone());
            }
            files.values().map(|t| (path.clone(), t)).collect()
        };
        if let Err(errors) = policy::load_sources(candidate.into_iter().collect()) {
            let mut ev = AuditEvent::new(EventKind::Policy, "rejected", "push");
            ev.detail = Some(format!("pushed by {operator}: {errors}"));
            ev.policy_version = Some(self.active().policy.version.to_string());
            self.audit.emit(ev);
            return Err(DaemonError::Policy(errors));
        }
        for (p, t) in &targets {
            let tmp = p.with_file_name(format!(
                ".{}.push",
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ));
            std::fs::write(&tmp, t)
                .and_then(|()| std::fs::rename(&tmp, p))
                .map_err(|e| {
                    DaemonError::Config(format!(
                        "writing {}: {e} (is the policy location read-only, e.g. a ConfigMap?)",
                        p.display()
                    ))
                })?;
        }
        self.reload_from(Trigger::Api).await
    }
}
