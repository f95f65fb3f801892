//! Pending approvals. An approval is bound to exactly one call: identity,
//! tool, action, resource, the digest of the parameters and the policy
//! version. Approved, it yields a single-use override token; the request
//! that matches it is allowed once. Identical pending requests share one
//! approval rather than flooding the approvers.
//!
//! Every change is journaled (`state`) before it takes effect, so pending
//! and approved approvals survive a restart, and a consumed one stays
//! consumed. Each identity may have at most `max_pending` approvals
//! pending: past that its new requests are refused, and no other identity
//! is affected.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, SystemTime},
};

use crate::{
    state::{
        ApprovalRecord, Log, Record, StateError,
        record::{
            EgressRecord, from_ms, ports_from_record, ports_to_record, protocol_from_name, wall_ms,
        },
    },
    tokens::{random_id, unix},
};

/// Pending approvals per identity unless configured.
pub const DEFAULT_MAX_PENDING: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Pending,
    Approved,
    Rejected,
    Expired,
    Consumed,
}

/// A just-in-time egress request waiting for approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressAsk {
    pub destination: crate::policy::Cidr,
    pub ports: Vec<crate::policy::PortRange>,
    pub protocol: crate::policy::Protocol,
    pub ttl: Duration,
    pub rule: u32,
}

#[derive(Clone, Debug)]
pub struct Approval {
    pub id: String,
    pub state: State,
    pub identity: String,
    pub tool: String,
    pub action: String,
    pub resource: String,
    pub params_digest: String,
    pub policy_version: String,
    pub rules: Vec<String>,
    pub created: SystemTime,
    pub expires: SystemTime,
    pub approver: String,
    pub reason: String,
    /// Set once approved (tool approvals).
    pub override_token: Option<String>,
    pub egress: Option<EgressAsk>,
}

impl Approval {
    pub fn kind(&self) -> &'static str {
        if self.egress.is_some() {
            "egress"
        } else {
            "tool"
        }
    }
}

/// What a new approval is for.
pub struct Ask {
    pub identity: String,
    pub tool: String,
    pub action: String,
    pub resource: String,
    pub params_digest: String,
    pub policy_version: String,
    pub rules: Vec<String>,
    pub egress: Option<EgressAsk>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApprovalError {
    #[error("no approval `{0}`")]
    NotFound(String),
    #[error("approval `{id}` is {state:?}, not pending")]
    NotPending { id: String, state: State },
    #[error("approval `{id}` does not match this call: {what} differs")]
    Mismatch { id: String, what: &'static str },
    #[error("approval `{0}` was already used")]
    Used(String),
    #[error(
        "`{identity}` already has {max} approvals pending, the most it may have; wait for them to be resolved or to expire"
    )]
    Quota { identity: String, max: usize },
    #[error("the approval cannot be recorded: {0}")]
    State(String),
}

impl From<StateError> for ApprovalError {
    fn from(e: StateError) -> Self {
        Self::State(e.to_string())
    }
}

impl State {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
            Self::Consumed => "consumed",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "pending" => Self::Pending,
            "approved" => Self::Approved,
            "rejected" => Self::Rejected,
            "expired" => Self::Expired,
            "consumed" => Self::Consumed,
            _ => return None,
        })
    }
}

impl Approval {
    pub fn to_record(&self) -> ApprovalRecord {
        ApprovalRecord {
            id: self.id.clone(),
            state: self.state.name().to_string(),
            identity: self.identity.clone(),
            tool: self.tool.clone(),
            action: self.action.clone(),
            resource: self.resource.clone(),
            params_digest: self.params_digest.clone(),
            policy_version: self.policy_version.clone(),
            rules: self.rules.clone(),
            created_ms: wall_ms(self.created),
            expires_ms: wall_ms(self.expires),
            approver: self.approver.clone(),
            reason: self.reason.clone(),
            override_token: self.override_token.clone(),
            egress: self.egress.as_ref().map(|e| EgressRecord {
                destination: e.destination.to_string(),
                ports: ports_to_record(&e.ports),
                protocol: e.protocol.name().to_string(),
                ttl_ms: e.ttl.as_millis() as u64,
                rule: e.rule,
            }),
        }
    }

    /// `None` for a record this daemon cannot read back faithfully.
    pub fn from_record(r: ApprovalRecord) -> Option<Self> {
        let egress = match r.egress {
            None => None,
            Some(e) => Some(EgressAsk {
                destination: e.destination.parse().ok()?,
                ports: ports_from_record(&e.ports),
                protocol: protocol_from_name(&e.protocol)?,
                ttl: Duration::from_millis(e.ttl_ms),
                rule: e.rule,
            }),
        };
        Some(Self {
            id: r.id,
            state: State::from_name(&r.state)?,
            identity: r.identity,
            tool: r.tool,
            action: r.action,
            resource: r.resource,
            params_digest: r.params_digest,
            policy_version: r.policy_version,
            rules: r.rules,
            created: from_ms(r.created_ms),
            expires: from_ms(r.expires_ms),
            approver: r.approver,
            reason: r.reason,
            override_token: r.override_token,
            egress,
        })
    }
}

pub struct Approvals {
    ttl: Duration,
    /// Resolved approvals are kept this long for `ListApprovals --all`.
    keep: Duration,
    max_pending: usize,
    map: Mutex<HashMap<String, Approval>>,
    /// Approvals a held gateway request is waiting on, with how many
    /// requests wait on each: a reload leaves those to the request's own
    /// judging again (`withdraw_stale`).
    held: Mutex<HashMap<String, usize>>,
    log: Log,
}

/// A held request waiting on an approval (`Approvals::hold`); the hold
/// ends when this is dropped.
pub struct Hold<'a> {
    approvals: &'a Approvals,
    id: String,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let mut held = self.approvals.held_lock();
        if let Some(n) = held.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.id);
            }
        }
    }
}

impl Approvals {
    pub fn new(ttl: Duration) -> Self {
        Self::restore(ttl, DEFAULT_MAX_PENDING, Log::default(), Vec::new())
    }

    /// Approvals as journaled, recording changes to `log`.
    pub fn restore(ttl: Duration, max_pending: usize, log: Log, restored: Vec<Approval>) -> Self {
        Self {
            ttl,
            keep: Duration::from_secs(3600),
            max_pending: max_pending.max(1),
            map: Mutex::new(restored.into_iter().map(|a| (a.id.clone(), a)).collect()),
            held: Mutex::new(HashMap::new()),
            log,
        }
    }

    /// Every approval still kept, as journal records.
    pub fn snapshot(&self) -> Vec<Record> {
        let mut map = self.lock();
        Self::sweep(&mut map, SystemTime::now(), self.keep);
        map.values()
            .map(|a| Record::Approval(a.to_record()))
            .collect()
    }

    /// Journal `a` while the map is locked; wait for the disk after.
    fn record(&self, a: &Approval) -> Result<crate::state::Seq, StateError> {
        self.log.append(|| Record::Approval(a.to_record()))
    }

    /// Journal `a`'s new state while `map` is still held (so the journal
    /// keeps the order of changes), then wait for it outside the lock.
    fn journaled(
        &self,
        map: std::sync::MutexGuard<'_, HashMap<String, Approval>>,
        a: Approval,
    ) -> Result<Approval, ApprovalError> {
        let seq = self.record(&a)?;
        drop(map);
        self.log.durable(seq)?;
        Ok(a)
    }

    fn held_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Mark approval `id` as waited on by a held request until the returned
    /// hold is dropped.
    pub fn hold(&self, id: &str) -> Hold<'_> {
        *self.held_lock().entry(id.to_string()).or_default() += 1;
        Hold {
            approvals: self,
            id: id.to_string(),
        }
    }

    /// Is a held request waiting on approval `id`?
    pub fn is_held(&self, id: &str) -> bool {
        self.held_lock().contains_key(id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Approval>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Expire what is due and forget what is old.
    fn sweep(map: &mut HashMap<String, Approval>, now: SystemTime, keep: Duration) {
        for a in map.values_mut() {
            if matches!(a.state, State::Pending | State::Approved) && a.expires <= now {
                a.state = State::Expired;
                a.override_token = None;
            }
        }
        map.retain(|_, a| {
            matches!(a.state, State::Pending | State::Approved) || a.expires + keep > now
        });
    }

    /// A pending approval for `ask`, reusing an identical pending one.
    /// Returns the approval and whether it is new; refused when the
    /// identity already has `max_pending` approvals pending.
    pub fn request(&self, ask: Ask) -> Result<(Approval, bool), ApprovalError> {
        self.request_reusing(ask, &[State::Pending])
    }

    /// `request` for a tool call: an identical approval already given and
    /// not yet used comes first, so a call sent again after its approval
    /// (the agent stopped waiting, or its connection dropped) spends that
    /// approval, once, instead of opening another for a person to decide.
    pub fn request_call(&self, ask: Ask) -> Result<(Approval, bool), ApprovalError> {
        self.request_reusing(ask, &[State::Approved, State::Pending])
    }

    /// `request`, reusing an identical approval in one of `states` (the
    /// first state found wins).
    fn request_reusing(
        &self,
        ask: Ask,
        states: &[State],
    ) -> Result<(Approval, bool), ApprovalError> {
        let now = SystemTime::now();
        let mut map = self.lock();
        Self::sweep(&mut map, now, self.keep);
        let same = |a: &Approval| {
            a.identity == ask.identity
                && a.tool == ask.tool
                && a.action == ask.action
                && a.resource == ask.resource
                && a.params_digest == ask.params_digest
                && a.policy_version == ask.policy_version
                && a.egress == ask.egress
        };
        for state in states {
            if let Some(existing) = map.values().find(|a| a.state == *state && same(a)) {
                return Ok((existing.clone(), false));
            }
        }
        let pending = map
            .values()
            .filter(|a| a.state == State::Pending && a.identity == ask.identity)
            .count();
        if pending >= self.max_pending {
            return Err(ApprovalError::Quota {
                identity: ask.identity,
                max: self.max_pending,
            });
        }
        let a = Approval {
            id: format!("apr-{}", &random_id()[..20]),
            state: State::Pending,
            identity: ask.identity,
            tool: ask.tool,
            action: ask.action,
            resource: ask.resource,
            params_digest: ask.params_digest,
            policy_version: ask.policy_version,
            rules: ask.rules,
            created: now,
            expires: now + self.ttl,
            approver: String::new(),
            reason: String::new(),
            override_token: None,
            egress: ask.egress,
        };
        let seq = self.record(&a)?;
        map.insert(a.id.clone(), a.clone());
        drop(map);
        self.log.durable(seq)?;
        Ok((a, true))
    }

    pub fn get(&self, id: &str) -> Option<Approval> {
        let mut map = self.lock();
        Self::sweep(&mut map, SystemTime::now(), self.keep);
        map.get(id).cloned()
    }

    pub fn list(&self, all: bool) -> Vec<Approval> {
        let mut map = self.lock();
        Self::sweep(&mut map, SystemTime::now(), self.keep);
        let mut v: Vec<Approval> = map
            .values()
            .filter(|a| all || a.state == State::Pending)
            .cloned()
            .collect();
        v.sort_by_key(|a| a.created);
        v
    }

    pub fn pending(&self) -> usize {
        self.list(false).len()
    }

    /// Approve (with the override token to hand out) or reject.
    pub fn resolve(
        &self,
        id: &str,
        approve: bool,
        approver: &str,
        reason: &str,
        override_token: Option<String>,
    ) -> Result<Approval, ApprovalError> {
        let mut map = self.lock();
        Self::sweep(&mut map, SystemTime::now(), self.keep);
        let a = map
            .get_mut(id)
            .ok_or_else(|| ApprovalError::NotFound(id.to_string()))?;
        if a.state != State::Pending {
            return Err(ApprovalError::NotPending {
                id: id.to_string(),
                state: a.state,
            });
        }
        a.state = if approve {
            State::Approved
        } else {
            State::Rejected
        };
        a.approver = approver.to_string();
        a.reason = reason.to_string();
        a.override_token = if approve { override_token } else { None };
        let a = a.clone();
        self.journaled(map, a)
    }

    /// End an approval that can no longer release anything (the request it
    /// was for was refused under a newer policy): pending or approved, it
    /// expires now, so nobody is asked to decide what would change nothing,
    /// and `approve` says so. Returns it when it was ended here.
    pub fn withdraw(&self, id: &str) -> Result<Option<Approval>, ApprovalError> {
        let now = SystemTime::now();
        let mut map = self.lock();
        let Some(a) = map
            .get_mut(id)
            .filter(|a| matches!(a.state, State::Pending | State::Approved))
        else {
            return Ok(None);
        };
        a.state = State::Expired;
        a.expires = now;
        a.override_token = None;
        let a = a.clone();
        self.journaled(map, a).map(Some)
    }

    /// After a reload to policy `version`: end the pending and approved
    /// approvals that `spent_by_version` says can only be spent under the
    /// version they were asked under (`consume` requires it) and that were
    /// asked under another, so no operator is asked to decide what can
    /// release nothing and the agent waiting on one learns at once. Those a
    /// held request waits on are left to that request, which judges its
    /// call again under the new policy. Returns what was ended.
    pub fn withdraw_stale(
        &self,
        version: &str,
        spent_by_version: impl Fn(&Approval) -> bool,
    ) -> Result<Vec<Approval>, ApprovalError> {
        let held: std::collections::HashSet<String> = self.held_lock().keys().cloned().collect();
        let now = SystemTime::now();
        let mut map = self.lock();
        Self::sweep(&mut map, now, self.keep);
        let mut ended = Vec::new();
        let mut last = None;
        for a in map.values_mut() {
            if !matches!(a.state, State::Pending | State::Approved)
                || a.policy_version == version
                || held.contains(&a.id)
                || !spent_by_version(a)
            {
                continue;
            }
            a.state = State::Expired;
            a.expires = now;
            a.override_token = None;
            last = Some(self.record(a)?);
            ended.push(a.clone());
        }
        drop(map);
        if let Some(seq) = last {
            self.log.durable(seq)?;
        }
        Ok(ended)
    }

    /// Use an approved approval for a call; it matches exactly or not at all.
    pub fn consume(&self, id: &str, call: &Ask) -> Result<Approval, ApprovalError> {
        let mut map = self.lock();
        Self::sweep(&mut map, SystemTime::now(), self.keep);
        let a = map
            .get_mut(id)
            .ok_or_else(|| ApprovalError::NotFound(id.to_string()))?;
        match a.state {
            State::Approved => {}
            State::Consumed => return Err(ApprovalError::Used(id.to_string())),
            state => {
                return Err(ApprovalError::NotPending {
                    id: id.to_string(),
                    state,
                });
            }
        }
        let checks: [(&'static str, bool); 6] = [
            ("identity", a.identity == call.identity),
            ("tool", a.tool == call.tool),
            ("action", a.action == call.action),
            ("resource", a.resource == call.resource),
            ("parameters", a.params_digest == call.params_digest),
            ("policy version", a.policy_version == call.policy_version),
        ];
        if let Some((what, _)) = checks.iter().find(|(_, ok)| !ok) {
            return Err(ApprovalError::Mismatch {
                id: id.to_string(),
                what,
            });
        }
        a.state = State::Consumed;
        a.override_token = None;
        let a = a.clone();
        self.journaled(map, a)
    }

    /// Seconds until the approval expires (for override token lifetimes).
    pub fn remaining(&self, a: &Approval) -> Duration {
        a.expires
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_secs(1))
    }
}

/// Unix seconds, for the API.
pub fn secs(t: SystemTime) -> i64 {
    unix(t) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(digest: &str) -> Ask {
        Ask {
            identity: "finance-agent".into(),
            tool: "stripe".into(),
            action: "create_payment".into(),
            resource: String::new(),
            params_digest: digest.into(),
            policy_version: "v1".into(),
            rules: vec!["large-payments".into()],
            egress: None,
        }
    }

    #[test]
    fn approve_once_for_exactly_that_call() {
        let s = Approvals::new(Duration::from_secs(60));
        let (a, new) = s.request(ask("d1")).unwrap();
        assert!(new);
        let (again, new) = s.request(ask("d1")).unwrap();
        assert!(!new, "an identical pending request reuses the approval");
        assert_eq!(again.id, a.id);
        assert_eq!(
            s.consume(&a.id, &ask("d1")).unwrap_err(),
            ApprovalError::NotPending {
                id: a.id.clone(),
                state: State::Pending
            }
        );
        s.resolve(&a.id, true, "uid 0 (root)", "ok", Some("tok".into()))
            .unwrap();
        assert!(matches!(
            s.resolve(&a.id, false, "x", "", None),
            Err(ApprovalError::NotPending { .. })
        ));
        assert_eq!(
            s.consume(&a.id, &ask("d2")).unwrap_err(),
            ApprovalError::Mismatch {
                id: a.id.clone(),
                what: "parameters"
            }
        );
        assert_eq!(s.consume(&a.id, &ask("d1")).unwrap().state, State::Consumed);
        assert_eq!(
            s.consume(&a.id, &ask("d1")).unwrap_err(),
            ApprovalError::Used(a.id.clone())
        );
    }

    #[test]
    fn pending_approvals_expire() {
        let s = Approvals::new(Duration::from_millis(10));
        let (a, _) = s.request(ask("d")).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(s.get(&a.id).map(|a| a.state), Some(State::Expired));
        assert!(s.resolve(&a.id, true, "x", "", None).is_err());
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn pending_quota_is_per_identity() {
        let s = Approvals::restore(Duration::from_secs(60), 2, Log::default(), Vec::new());
        s.request(ask("d1")).unwrap();
        s.request(ask("d2")).unwrap();
        // The same call again reuses its approval, quota or not.
        assert!(!s.request(ask("d2")).unwrap().1);
        assert_eq!(
            s.request(ask("d3")).unwrap_err(),
            ApprovalError::Quota {
                identity: "finance-agent".into(),
                max: 2
            }
        );
        let other = Ask {
            identity: "support".into(),
            ..ask("d3")
        };
        assert!(
            s.request(other).unwrap().1,
            "another identity is unaffected"
        );
        // Resolving one frees a place.
        let first = s.list(false)[0].id.clone();
        s.resolve(&first, false, "op", "", None).unwrap();
        assert!(s.request(ask("d3")).unwrap().1);
    }

    #[test]
    fn a_call_asked_again_gets_its_given_approval_until_it_is_spent() {
        let s = Approvals::new(Duration::from_secs(60));
        let (a, new) = s.request_call(ask("d1")).unwrap();
        assert!(new);
        s.resolve(&a.id, true, "op", "", Some("tok".into()))
            .unwrap();
        // Approved and unused: the same call gets it back, not a new one.
        let (again, new) = s.request_call(ask("d1")).unwrap();
        assert!(!new);
        assert_eq!(
            (again.id.as_str(), again.state),
            (a.id.as_str(), State::Approved)
        );
        // Other calls, and other kinds of request, do not.
        assert!(s.request_call(ask("d2")).unwrap().1);
        assert!(s.request(ask("d1")).unwrap().1);
        s.consume(&a.id, &ask("d1")).unwrap();
        let (fresh, new) = s.request_call(ask("d1")).unwrap();
        assert!(!new, "the pending one opened by `request` above");
        assert_ne!(fresh.id, a.id);
    }

    #[test]
    fn a_withdrawn_approval_cannot_be_decided_or_spent() {
        let s = Approvals::new(Duration::from_secs(60));
        let (a, _) = s.request_call(ask("d1")).unwrap();
        assert!(s.withdraw(&a.id).unwrap().is_some());
        assert!(s.withdraw(&a.id).unwrap().is_none(), "withdrawn twice");
        assert!(matches!(
            s.resolve(&a.id, true, "op", "", None),
            Err(ApprovalError::NotPending {
                state: State::Expired,
                ..
            })
        ));
        assert!(s.list(false).is_empty());
        let (b, _) = s.request_call(ask("d2")).unwrap();
        s.resolve(&b.id, true, "op", "", Some("tok".into()))
            .unwrap();
        assert!(s.withdraw(&b.id).unwrap().is_some());
        assert!(s.consume(&b.id, &ask("d2")).is_err());
    }

    #[test]
    fn a_new_policy_withdraws_what_the_old_one_asked_except_held_requests() {
        let s = Approvals::new(Duration::from_secs(60));
        let (pending, _) = s.request_call(ask("d1")).unwrap();
        let (approved, _) = s.request_call(ask("d2")).unwrap();
        s.resolve(&approved.id, true, "op", "", Some("tok".into()))
            .unwrap();
        let (held, _) = s.request_call(ask("d3")).unwrap();
        let (other_kind, _) = s.request_call(ask("d4")).unwrap();
        let hold = s.hold(&held.id);
        let none = s.withdraw_stale("v1", |_| true).unwrap();
        assert!(none.is_empty(), "the same version withdraws nothing");
        let ended = s.withdraw_stale("v2", |a| a.id != other_kind.id).unwrap();
        let mut ids: Vec<&str> = ended.iter().map(|a| a.id.as_str()).collect();
        ids.sort_unstable();
        let mut want = vec![pending.id.as_str(), approved.id.as_str()];
        want.sort_unstable();
        assert_eq!(ids, want);
        assert_eq!(s.get(&held.id).unwrap().state, State::Pending);
        assert_eq!(s.get(&other_kind.id).unwrap().state, State::Pending);
        assert!(s.consume(&approved.id, &ask("d2")).is_err());
        // Once nothing waits on it, it goes with the next change.
        drop(hold);
        let ended = s.withdraw_stale("v3", |a| a.id != other_kind.id).unwrap();
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].id, held.id);
    }

    #[test]
    fn records_round_trip() {
        let s = Approvals::new(Duration::from_secs(60));
        let (a, _) = s.request(ask("d1")).unwrap();
        let a = s
            .resolve(&a.id, true, "uid 0", "ok", Some("tok".into()))
            .unwrap();
        let back = Approval::from_record(a.to_record()).unwrap();
        assert_eq!(back.state, State::Approved);
        assert_eq!(back.override_token.as_deref(), Some("tok"));
        assert_eq!(back.params_digest, a.params_digest);
        assert_eq!(unix(back.expires), unix(a.expires));
    }
}
