//! One query, from the bytes an identity sent to the bytes it gets back:
//! parse, judge the name, ask upstream, judge every name on the CNAME
//! chain, write the addresses into the identity's learned map, and only
//! then release the answer. Anything that cannot be done in time or
//! correctly ends in a refusal or no answer at all, never in an open door.

use std::{net::IpAddr, sync::Arc, sync::atomic::Ordering, time::Instant};

use hickory_proto::op::ResponseCode;
use tracing::{debug, warn};

use super::{
    DnsService,
    events::Lookup,
    internal::internal_kind,
    judge::{IdentityJudge, NameVerdict},
    message::{self, Answer, Query},
    persist::boot_now_ns,
    settings::Forbidden,
};

/// How the query arrived (the answer goes back the same way, and so does
/// the upstream query).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

impl DnsService {
    /// Answer one query sent to identity `index`'s proxy address. `None`:
    /// send nothing (fail closed).
    pub async fn handle(&self, index: u32, bytes: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let started = Instant::now();
        self.stats.queries.fetch_add(1, Ordering::Relaxed);
        let judges = self.judges.load_full();
        let judge = judges.by_index.get(&index).cloned();
        let query = match message::parse_query(bytes) {
            Ok(q) => q,
            Err(e) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                debug!(identity = index, error = %e, len = bytes.len(), "malformed DNS query");
                let mut ev = Lookup::malformed(judge.as_deref(), transport, &e.to_string());
                ev.reason = e.reason().into();
                ev.policy_version = Some(judges.policy_version.clone());
                self.emit(ev.finish(started));
                return message::error_for_bytes(bytes, e.rcode());
            }
        };
        let mut lookup = Lookup::new(&query, judge.as_deref(), transport);
        lookup.policy_version = Some(judges.policy_version.clone());
        let Some(judge) = judge else {
            // The identity lost its host rules between steering and now.
            lookup.refuse("no-host-rule", None);
            return self.forbidden(&query, lookup);
        };
        let verdict = judge.judge(&query.name);
        lookup.rule = verdict.rule().and_then(|r| judges.rule_id(r));
        let allowed = matches!(verdict, NameVerdict::Allow(_));
        if !allowed {
            if !judge.audit {
                lookup.refuse(verdict.reason(), None);
                return self.forbidden(&query, lookup);
            }
            lookup.would_refuse(verdict.reason(), None);
        }

        // The identity's queries in flight are capped: beyond its quota its
        // own oldest is cancelled, never another identity's.
        let mut ticket = self
            .inflight
            .admit(index, self.settings.max_inflight_per_identity);
        let exchange = async {
            let up = self
                .upstream
                .as_ref()
                .map_err(|e| ("upstream-failed", e.clone()))?;
            let asked =
                message::upstream_query(&query).map_err(|e| ("encode-failed", e.to_string()))?;
            match transport {
                Transport::Udp => up.exchange_udp(&asked).await,
                Transport::Tcp => up.exchange_tcp(&asked).await,
            }
            .map_err(|e| {
                warn!(upstream = %up.addr, error = %e, query = %query.name, "upstream failed");
                ("upstream-failed", e.to_string())
            })
        };
        let resp = tokio::select! {
            r = exchange => r,
            _ = &mut ticket.cancelled => Err((
                "inflight-evicted",
                format!(
                    "cancelled: more than {} queries of this identity were waiting on the upstream",
                    self.settings.max_inflight_per_identity
                ),
            )),
        };
        drop(ticket);
        let mut resp = match resp {
            Ok(r) => r,
            Err((reason, e)) => {
                self.stats.upstream_failures.fetch_add(1, Ordering::Relaxed);
                lookup.fail(reason, &e);
                return self.answer_error(&query, ResponseCode::ServFail, lookup);
            }
        };
        let mut answer = match message::analyse(&resp, &query.name) {
            Ok(a) => a,
            Err(e) => {
                lookup.fail("malformed-answer", &e.to_string());
                return self.answer_error(&query, ResponseCode::ServFail, lookup);
            }
        };
        lookup.set_answer(&answer, resp.metadata.response_code);

        // Every name on the chain must be allowed too: a CNAME into a zone
        // the identity may not reach is refused.
        if let Some((name, v)) = chain_outside(&judge, &answer) {
            if let NameVerdict::Deny(_) = v {
                // The addresses of a denied name stay denied for this
                // identity (a learned deny beats allows).
                self.learn(&judge, &name, &answer.addrs, self.ttl_of(&answer))
                    .await
                    .ok();
            }
            let reason = match v {
                NameVerdict::Deny(_) => "cname-deny-host-rule",
                _ => "cname-outside-policy",
            };
            lookup.rule = v.rule().and_then(|r| judges.rule_id(r));
            if !judge.audit {
                lookup.refuse(reason, Some(name));
                return self.forbidden(&query, lookup);
            }
            lookup.would_refuse(reason, Some(name));
        }

        // Inside addresses are learned only where a cidr rule of the
        // identity (or dns.learn_internal) vouches for them; outside audit
        // mode the process does not even see them.
        let withheld = self.inside_unvouched(&judge, &answer.addrs);
        if allowed && !withheld.is_empty() {
            self.stats
                .withheld
                .fetch_add(withheld.len() as u64, Ordering::Relaxed);
            let kinds = describe(&withheld);
            let left = answer.addrs.len() - withheld.len();
            lookup.withhold(&withheld, &kinds, left == 0, judge.audit);
            if !judge.audit {
                answer.addrs.retain(|a| !withheld.contains(a));
                message::strip_addrs(&mut resp, &withheld);
            }
        }

        let ttl = self.ttl_of(&answer);
        if allowed && !answer.addrs.is_empty() {
            match self.learn(&judge, &query.name, &answer.addrs, ttl).await {
                Ok(()) => lookup.learned(&answer.addrs, ttl),
                Err(reason) => {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    warn!(identity = %judge.name, query = %query.name, reason, "answer dropped: learned addresses not in the kernel in time");
                    lookup.drop_answer(reason);
                    self.emit(lookup.finish(started));
                    return None;
                }
            }
        }
        match message::finish(resp, &query.msg, ttl) {
            Ok(bytes) => {
                self.stats.answered.fetch_add(1, Ordering::Relaxed);
                self.emit_lookup(lookup, started);
                Some(bytes)
            }
            Err(e) => {
                lookup.fail("encode-failed", &e.to_string());
                self.answer_error(&query, ResponseCode::ServFail, lookup)
            }
        }
    }

    /// The TTL learned addresses get: the chain's lowest, clamped.
    fn ttl_of(&self, answer: &Answer) -> u32 {
        answer
            .min_ttl
            .unwrap_or(self.settings.ttl_min)
            .clamp(self.settings.ttl_min, self.settings.ttl_max)
    }

    /// Write what `name` resolved to into the identity's learned map, on
    /// the blocking pool, within the configured bound. `Err` names why not.
    async fn learn(
        &self,
        judge: &Arc<IdentityJudge>,
        name: &str,
        addrs: &[IpAddr],
        ttl: u32,
    ) -> Result<(), &'static str> {
        let expires_ns =
            boot_now_ns() + (u64::from(ttl) + u64::from(self.settings.grace)) * 1_000_000_000;
        let limits = self.limits(&self.judges.load());
        // Fast path: an uncontended table means a few map syscalls, done
        // here (microseconds). Only a table held by a sweep or a reload
        // sends the write to the blocking pool, under the time bound.
        if let Ok(mut t) = self.table.try_lock() {
            let writes = t.learn(judge, name, addrs, expires_ns, limits);
            let result = self.maps.write(&writes);
            drop(t);
            return match result {
                Ok(()) => {
                    self.dirty.store(true, Ordering::Relaxed);
                    Ok(())
                }
                Err(e) => {
                    warn!(error = %e, "writing learned addresses");
                    Err("learn-failed")
                }
            };
        }
        let (table, maps, judge) = (self.table.clone(), self.maps.clone(), judge.clone());
        let (name, addrs) = (name.to_string(), addrs.to_vec());
        let write = tokio::task::spawn_blocking(move || {
            // The table lock is held across the kernel write so that two
            // answers for one address land in the order they were merged.
            let mut t = crate::bpf::lock(&table);
            let writes = t.learn(&judge, &name, &addrs, expires_ns, limits);
            maps.write(&writes)
        });
        match tokio::time::timeout(self.settings.update_timeout(), write).await {
            Ok(Ok(Ok(()))) => {
                self.dirty.store(true, Ordering::Relaxed);
                Ok(())
            }
            Ok(Ok(Err(e))) => {
                warn!(error = %e, "writing learned addresses");
                Err("learn-failed")
            }
            Ok(Err(_)) => Err("learn-failed"),
            Err(_) => Err("learn-timeout"),
        }
    }

    fn forbidden(&self, query: &Query, lookup: Lookup) -> Option<Vec<u8>> {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        let rcode = match self.settings.forbidden {
            Forbidden::Nxdomain => ResponseCode::NXDomain,
            Forbidden::Refused => ResponseCode::Refused,
        };
        self.answer_error(query, rcode, lookup)
    }

    fn answer_error(
        &self,
        query: &Query,
        rcode: ResponseCode,
        mut lookup: Lookup,
    ) -> Option<Vec<u8>> {
        lookup.detail_mut().rcode = Some(super::events::rcode_name(rcode));
        self.emit(lookup.finish(Instant::now()));
        message::error_response(&query.msg, rcode).ok()
    }

    /// Inside addresses among `addrs` that neither a cidr allow rule of
    /// the identity nor `dns.learn_internal` covers.
    fn inside_unvouched(&self, judge: &IdentityJudge, addrs: &[IpAddr]) -> Vec<IpAddr> {
        addrs
            .iter()
            .copied()
            .filter(|a| internal_kind(*a).is_some())
            .filter(|a| {
                let n = crate::policy::net::norm_of(*a);
                !judge.cidr_allows(*a) && !self.internal_ok.iter().any(|c| c.contains_addr(&n))
            })
            .collect()
    }

    fn emit_lookup(&self, lookup: Lookup, started: Instant) {
        if self.settings.audit_allowed || lookup.notable() {
            self.emit(lookup.finish(started));
        }
    }
}

/// `10.0.0.5 private, 169.254.169.254 metadata`.
fn describe(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(|a| format!("{a} {}", internal_kind(*a).unwrap_or("inside")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first name after the queried one that the identity may not reach.
fn chain_outside(judge: &IdentityJudge, answer: &Answer) -> Option<(String, NameVerdict)> {
    answer
        .chain
        .iter()
        .skip(1)
        .find_map(|name| match judge.judge(name) {
            NameVerdict::Allow(_) => None,
            v => Some((name.clone(), v)),
        })
}
