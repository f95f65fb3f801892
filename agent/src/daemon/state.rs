//! Decision state at start: read the journal, restore tokens, approvals,
//! budgets and grants from it, fail closed for whatever a damaged journal
//! may have lost, and say so in the log, the audit trail and `health`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tracing::{info, warn};

use super::{Daemon, DaemonError};
use crate::{
    audit::{AuditEvent, CallDetail, EventKind},
    config::Config,
    decision::{
        DecisionState,
        approvals::{Approval, Approvals},
        budgets::Budgets,
        grants::Grants,
    },
    state::{self, ApprovalRecord, Found, GrantRecord, Journal, Log, record::now_ms},
    tokens::{Durable, TokenSettings, Tokens},
};

/// What start still has to do with the restored state once the daemon
/// exists: begin the journal and report.
pub(super) struct Restoring {
    journal: Arc<Journal>,
    found: Found,
    /// Approvals dropped because the journal was damaged or unreadable.
    dropped: Vec<ApprovalRecord>,
    /// Journaled grants by identity (names for what the kernel still holds).
    pub grants: HashMap<String, Vec<GrantRecord>>,
    counts: String,
}

/// Tokens (the key file is created on first start), approvals, budgets and
/// grants, restored from the state journal. Damage is added to `warnings`.
pub(super) fn decision_state(
    config: &Config,
    warnings: &mut Vec<String>,
) -> Result<(DecisionState, Restoring), DaemonError> {
    let d = |text: &str, default: u64| Config::duration(text, Duration::from_secs(default));
    let opened = state::open(&config.state).map_err(|e| DaemonError::State(e.to_string()))?;
    let mut snapshot = opened.snapshot;
    let mut dropped = Vec::new();
    if let Found::Damaged {
        kept_aside, lines, ..
    } = &opened.found
    {
        dropped = snapshot.fail_closed(now_ms());
        let first = lines.first().map(ToString::to_string).unwrap_or_default();
        let text = format!(
            "state journal {} was damaged ({} bad line(s), first: {first}); kept as {}; started fail-closed: budgets count as spent, tokens issued before this start are refused, {} pending or approved approval(s) dropped",
            opened.journal.path().display(),
            lines.len(),
            kept_aside.display(),
            dropped.len()
        );
        warn!("{text}");
        warnings.push(text);
    }
    let log = Log::new(opened.journal.clone());
    let counts = format!(
        "{} budget level(s), {} used token id(s), {} approval(s), {} identities with grants",
        snapshot.budgets.len(),
        snapshot.used.values().map(HashMap::len).sum::<usize>(),
        snapshot.approvals.len(),
        snapshot.grants.len()
    );
    let tokens = Tokens::load_with(
        TokenSettings {
            key_file: config.tokens.key_file.clone(),
            issuer: config.tokens.issuer.clone(),
            audience: config.tokens.audience.clone(),
            ttl: d(&config.tokens.ttl, 900),
            max_ttl: d(&config.tokens.max_ttl, 3600),
        },
        Some(Durable {
            log: log.clone(),
            replay_since: opened.journal.replay_since(),
            used: std::mem::take(&mut snapshot.used),
            revoked: std::mem::take(&mut snapshot.revoked),
            quota: config.tokens.replay_per_identity,
        }),
    )?;
    let mut approvals = Vec::new();
    for (_, r) in snapshot.approvals.drain() {
        match Approval::from_record(r.clone()) {
            Some(a) => approvals.push(a),
            // A record this daemon cannot read back is not honoured.
            None => dropped.push(r),
        }
    }
    let decisions = DecisionState {
        tokens,
        approvals: Approvals::restore(
            d(&config.approvals.ttl, 3600),
            config.approvals.max_pending_per_identity,
            log.clone(),
            approvals,
        ),
        budgets: Budgets::restore(
            log.clone(),
            std::mem::take(&mut snapshot.budgets),
            snapshot.budget_floor_ms,
        ),
        grants: Grants::new(log),
        override_ttl: d(&config.approvals.override_ttl, 600),
    };
    Ok((
        decisions,
        Restoring {
            journal: opened.journal,
            found: opened.found,
            dropped,
            grants: std::mem::take(&mut snapshot.grants),
            counts,
        },
    ))
}

impl Daemon {
    /// Write the restored state as a fresh journal, start journaling, and
    /// record what was restored or lost.
    pub(super) fn begin_state(self: &Arc<Self>, r: Restoring) -> Result<(), DaemonError> {
        let weak = Arc::downgrade(self);
        r.journal
            .begin(Box::new(move || {
                weak.upgrade().map(|d| d.decisions.snapshot())
            }))
            .map_err(|e| DaemonError::State(e.to_string()))?;
        self.state_journal.get_or_init(|| r.journal.clone());
        let file = r.journal.path().display().to_string();
        let ev = match &r.found {
            Found::Nothing => {
                info!(file, "no decision state journal yet: starting one");
                let mut ev = AuditEvent::new(EventKind::Daemon, "state-new", "no-journal");
                ev.detail = Some(format!(
                    "{file}: tokens issued before this start are refused"
                ));
                ev
            }
            Found::Clean { records } => {
                info!(file, records, restored = %r.counts, "decision state restored");
                let mut ev = AuditEvent::new(EventKind::Daemon, "state-restored", "journal");
                ev.detail = Some(format!("{file}: {records} record(s); {}", r.counts));
                ev
            }
            Found::Damaged {
                kept_aside,
                lines,
                records,
            } => {
                let mut ev = AuditEvent::new(EventKind::Daemon, "state-damaged", "fail-closed");
                let bad: Vec<String> = lines.iter().take(5).map(ToString::to_string).collect();
                ev.detail = Some(format!(
                    "{file}: {} bad line(s) ({}); {records} good record(s) read; damaged file kept as {}; budgets count as spent from now, tokens issued before now are refused, pending and approved approvals dropped",
                    lines.len(),
                    bad.join("; "),
                    kept_aside.display()
                ));
                ev
            }
        };
        self.audit.emit(ev);
        for a in &r.dropped {
            let mut ev = AuditEvent::new(EventKind::Approval, "dropped", "state-lost");
            ev.identity = Some(a.identity.clone());
            ev.policy_version = Some(a.policy_version.clone());
            ev.rule = a.rules.first().cloned();
            ev.detail = Some(format!(
                "{} approval dropped at start: the state journal was damaged; the agent must ask again",
                a.state
            ));
            ev.call = Some(CallDetail {
                tool: a.tool.clone(),
                action: a.action.clone(),
                resource: a.resource.clone(),
                params_digest: (!a.params_digest.is_empty()).then(|| a.params_digest.clone()),
                approval_id: Some(a.id.clone()),
                ..CallDetail::default()
            });
            self.audit.emit(ev);
        }
        self.metrics
            .set_pending_approvals(self.decisions.approvals.pending() as u64);
        Ok(())
    }

    /// Sync the journal (clean shutdown).
    pub(super) fn close_state(&self) {
        if let Some(j) = self.state_journal.get() {
            j.close();
        }
    }
}
