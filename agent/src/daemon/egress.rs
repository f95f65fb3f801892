//! Just-in-time egress: grant a temporary kernel allow rule where the policy
//! says `grantable`, or ask for approval where it says `require_approval`.
//! Grants end on their own in the kernel; the daemon also sweeps them for
//! the audit trail and withdraws those a new policy no longer allows.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use tracing::warn;

use super::{Caller, Daemon, DaemonError};
use crate::{
    audit::{AuditEvent, CallDetail, EventKind},
    decision::{
        approvals::{Ask, EgressAsk},
        grants::{Grant, boot_now_ns},
    },
    policy::{Cidr, Destination, GrantRule, Identity, PortRange, Protocol, net},
};

/// A `RequestEgress` request.
#[derive(Clone, Debug)]
pub struct EgressRequest {
    /// An access token the caller chose to present (optional).
    pub token: String,
    pub destination: String,
    pub ports: Vec<u32>,
    pub protocol: String,
    pub ttl: Option<Duration>,
    pub reason: String,
}

/// What happened to it.
pub struct EgressOutcome {
    pub granted: bool,
    pub expires_at: u64,
    pub approval_id: Option<String>,
    pub rule: String,
}

fn covers(rule: &GrantRule, cidr: &Cidr, ports: &[PortRange], protocol: Protocol) -> bool {
    let dest = matches!(&rule.destination, Destination::Cidr(c) if c.contains(cidr));
    let proto = rule.protocol == Protocol::Any || rule.protocol == protocol;
    let port_ok = ports
        .iter()
        .all(|p| rule.ports.iter().any(|r| r.lo <= p.lo && p.hi <= r.hi));
    dest && proto && port_ok
}

fn parse(req: &EgressRequest) -> Result<(Cidr, Vec<PortRange>, Protocol), DaemonError> {
    let bad = |m: String| DaemonError::InvalidArgument(m);
    let cidr: Cidr = req.destination.parse().map_err(|e: String| {
        bad(format!(
            "destination: {e} (host names cannot be granted; name an address or CIDR)"
        ))
    })?;
    let mut ports = Vec::new();
    for p in &req.ports {
        let p = u16::try_from(*p)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad(format!("port {p} is not 1-65535")))?;
        ports.push(PortRange { lo: p, hi: p });
    }
    if ports.is_empty() {
        ports.push(PortRange::ALL);
    }
    let protocol = match req.protocol.as_str() {
        "" | "any" => Protocol::Any,
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => return Err(bad(format!("protocol `{other}`: use tcp, udp or any"))),
    };
    Ok((cidr, net::coalesce(ports), protocol))
}

impl Daemon {
    pub fn request_egress(
        &self,
        caller: &Caller,
        req: EgressRequest,
    ) -> Result<EgressOutcome, DaemonError> {
        let (identity, index) = self.agent_identity(caller, "RequestEgress")?;
        if self.maps.killed(index)? {
            return Err(DaemonError::Revoked(identity));
        }
        self.presented_token(&req.token, &identity)
            .map_err(|e| self.refused_token(caller, &identity, "RequestEgress", e))?;
        let (cidr, ports, protocol) = parse(&req)?;
        let active = self.active();
        let ident: &Identity = active
            .policy
            .identity(&identity)
            .ok_or_else(|| DaemonError::UnknownIdentity(identity.clone()))?;
        let rule_id = |r: u32| {
            active
                .policy
                .rule(r)
                .map_or_else(|| r.to_string(), |i| i.id.clone())
        };
        let ttl_for = |rule: &GrantRule| -> Result<Duration, DaemonError> {
            let ttl = req.ttl.unwrap_or(rule.max_ttl);
            if ttl > rule.max_ttl {
                return Err(DaemonError::InvalidArgument(format!(
                    "ttl {} is longer than rule `{}` allows ({})",
                    humantime::format_duration(ttl),
                    rule_id(rule.rule),
                    humantime::format_duration(rule.max_ttl)
                )));
            }
            Ok(ttl.max(Duration::from_secs(1)))
        };
        if let Some(rule) = ident
            .grantable
            .iter()
            .find(|r| covers(r, &cidr, &ports, protocol))
        {
            let ttl = ttl_for(rule)?;
            let g = self.grant(
                &identity,
                index,
                cidr,
                ports,
                protocol,
                rule.rule,
                rule_id(rule.rule),
                ttl,
                &req.reason,
                "self",
            )?;
            return Ok(EgressOutcome {
                granted: true,
                expires_at: crate::tokens::unix(g.expires),
                approval_id: None,
                rule: g.rule_id,
            });
        }
        if let Some(rule) = ident
            .approval_egress
            .iter()
            .find(|r| covers(r, &cidr, &ports, protocol))
        {
            let ttl = ttl_for(rule)?;
            let (a, new) = self.decisions.approvals.request(Ask {
                identity: identity.clone(),
                tool: String::new(),
                action: String::new(),
                resource: String::new(),
                params_digest: String::new(),
                policy_version: active.policy.version.to_string(),
                rules: vec![rule_id(rule.rule)],
                egress: Some(EgressAsk {
                    destination: cidr,
                    ports,
                    protocol,
                    ttl,
                    rule: rule.rule,
                }),
            })?;
            if new {
                let mut ev =
                    AuditEvent::new(EventKind::Approval, "pending", "egress-approval-requested");
                ev.identity = Some(identity.clone());
                ev.pid = Some(caller.pid);
                ev.rule = Some(rule_id(rule.rule));
                ev.detail = (!req.reason.is_empty()).then(|| req.reason.clone());
                ev.policy_version = Some(active.policy.version.to_string());
                ev.call = Some(CallDetail {
                    approval_id: Some(a.id.clone()),
                    destination: Some(cidr.to_string()),
                    ..CallDetail::default()
                });
                self.audit.emit(ev);
                self.metrics
                    .set_pending_approvals(self.decisions.approvals.pending() as u64);
                self.announce(&a, None);
            }
            return Ok(EgressOutcome {
                granted: false,
                expires_at: 0,
                approval_id: Some(a.id),
                rule: rule_id(rule.rule),
            });
        }
        let mut ev = AuditEvent::new(EventKind::Grant, "deny", "not-grantable");
        ev.identity = Some(identity.clone());
        ev.pid = Some(caller.pid);
        ev.policy_version = Some(active.policy.version.to_string());
        ev.call = Some(CallDetail {
            destination: Some(cidr.to_string()),
            ..CallDetail::default()
        });
        self.audit.emit(ev);
        Err(DaemonError::PermissionDenied(format!(
            "no grantable or require_approval rule of `{identity}` covers {cidr} ports {}",
            ports
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )))
    }

    /// Write a grant into the kernel and record it.
    #[expect(clippy::too_many_arguments, reason = "a grant has that many parts")]
    pub(super) fn grant(
        &self,
        identity: &str,
        index: u32,
        cidr: Cidr,
        ports: Vec<PortRange>,
        protocol: Protocol,
        rule: u32,
        rule_id: String,
        ttl: Duration,
        reason: &str,
        by: &str,
    ) -> Result<Grant, DaemonError> {
        let g = Grant {
            identity: identity.to_string(),
            index,
            cidr,
            ports,
            protocol,
            rule,
            rule_id,
            expires: SystemTime::now() + ttl,
            expires_ns: boot_now_ns() + ttl.as_nanos() as u64,
        };
        self.decisions.grants.add(&self.maps, g.clone())?;
        let mut ev = AuditEvent::new(
            EventKind::Grant,
            "granted",
            if by == "self" {
                "grantable"
            } else {
                "approved"
            },
        );
        ev.identity = Some(identity.to_string());
        ev.rule = Some(g.rule_id.clone());
        ev.detail = (!reason.is_empty()).then(|| reason.to_string());
        ev.policy_version = Some(self.active().policy.version.to_string());
        ev.call = Some(CallDetail {
            destination: Some(format!(
                "{} {} {}",
                g.cidr,
                g.protocol.name(),
                g.ports
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )),
            expires: Some(humantime::format_rfc3339_seconds(g.expires).to_string()),
            approver: (by != "self").then(|| by.to_string()),
            ..CallDetail::default()
        });
        self.audit.emit(ev);
        Ok(g)
    }

    /// Drop expired grants (and, after a reload, grants the policy no longer
    /// covers), recording each.
    pub(super) fn sweep_grants(&self, revalidate: bool) {
        let active = self.active();
        self.remove_grants(
            |g| {
                // Elevations are re-judged by `refresh_elevations`.
                !revalidate
                    || g.is_elevation()
                    || active.policy.identity(&g.identity).is_some_and(|i| {
                        i.grantable
                            .iter()
                            .chain(&i.approval_egress)
                            .any(|r| covers(r, &g.cidr, &g.ports, g.protocol))
                    })
            },
            "policy-no-longer-allows",
        );
    }

    /// Withdraw every grant of a revoked identity.
    pub(super) fn withdraw_grants_of(&self, identity: &str) {
        self.remove_grants(|g| g.identity != identity, "revoked");
    }

    /// Remove the grants `keep` rejects (and expired ones) from the kernel,
    /// recording each: `expired` at the end of its TTL, else `withdrawn`
    /// with `why`.
    fn remove_grants(&self, keep: impl Fn(&Grant) -> bool, why: &str) {
        let version = self.active().policy.version.to_string();
        match self.decisions.grants.retain(&self.maps, keep) {
            Ok(removed) => {
                let now = SystemTime::now();
                // An elevation's grants end with it: its own record says so.
                for g in removed.into_iter().filter(|g| !g.is_elevation()) {
                    let expired = g.expires <= now;
                    let mut ev = AuditEvent::new(
                        EventKind::Grant,
                        if expired { "expired" } else { "withdrawn" },
                        if expired { "ttl" } else { why },
                    );
                    ev.identity = Some(g.identity.clone());
                    ev.rule = Some(g.rule_id.clone());
                    ev.policy_version = Some(version.clone());
                    ev.call = Some(CallDetail {
                        destination: Some(g.cidr.to_string()),
                        expires: Some(humantime::format_rfc3339_seconds(g.expires).to_string()),
                        ..CallDetail::default()
                    });
                    self.audit.emit(ev);
                }
            }
            Err(e) => warn!(error = %e, "removing grants"),
        }
    }

    /// Periodic upkeep of decision state: expired grants, used token ids.
    pub(super) fn spawn_decision_upkeep(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(d) = weak.upgrade() else { break };
                d.sweep_grants(false);
                d.sweep_elevations();
                d.prune_tokens();
                d.metrics
                    .set_pending_approvals(d.decisions.approvals.pending() as u64);
            }
        });
    }
}
