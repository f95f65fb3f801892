//! What the proxy has learned, in memory: per identity, each name and the
//! addresses its answers gave (oldest first, each with its expiry on the
//! boot clock), and the kernel entries that follow from it.
//!
//! The kernel value of a learned address is recomputed from every name
//! that resolved to it and from the *current* host rules of those names, so
//! a reload that changes or removes a rule changes what the address admits.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use agent_common::{LEARNED_RANGES, LearnedKey, LearnedRange, LearnedValue, NormAddr};

use super::judge::{IdentityJudge, Judges, NameVerdict, ranges_of};
use crate::policy::net::norm_of;

/// One learned address of one name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrEntry {
    pub addr: IpAddr,
    /// `CLOCK_BOOTTIME` nanoseconds after which it admits nothing new
    /// (TTL plus grace).
    pub expires_ns: u64,
    /// When it was (last) learned, in the table's own order: the identity's
    /// lowest is the first to go when it reaches its quota.
    pub seq: u64,
}

/// Everything one identity learned.
#[derive(Clone, Debug, Default)]
pub struct IdentLearned {
    pub identity: String,
    /// Name → its addresses, oldest first.
    pub names: HashMap<String, Vec<AddrEntry>>,
    by_addr: HashMap<IpAddr, BTreeSet<String>>,
    /// Every (name, address) by `seq`, oldest first (quota eviction).
    order: BTreeMap<u64, (String, IpAddr)>,
}

/// A change to make to the kernel's learned-address map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelWrite {
    Set(LearnedKey, LearnedValue),
    Delete(LearnedKey),
}

pub fn key_of(identity: u32, addr: IpAddr) -> LearnedKey {
    let n: NormAddr = norm_of(addr);
    LearnedKey {
        identity,
        is_v6: u32::from(n.is_v6),
        addr: n.bytes,
    }
}

#[derive(Clone, Debug, Default)]
pub struct LearnedTable {
    idents: HashMap<u32, IdentLearned>,
    /// Next `AddrEntry::seq`.
    next_seq: u64,
}

/// How much one identity may hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Addresses kept per name (the oldest of the name go first).
    pub per_name: usize,
    /// Distinct addresses the identity holds in the kernel map (its oldest
    /// entries go first, whatever their name).
    pub per_identity: usize,
}

impl LearnedTable {
    pub fn idents(&self) -> impl Iterator<Item = (u32, &IdentLearned)> {
        self.idents.iter().map(|(i, l)| (*i, l))
    }

    /// Addresses held, all identities.
    pub fn len(&self) -> usize {
        self.idents.values().map(|l| l.by_addr.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Record that `name` resolved to `addrs` for the identity of `judge`,
    /// until `expires_ns`, within `limits` (the identity's own oldest
    /// entries make room). Returns the kernel writes that make it so.
    pub fn learn(
        &mut self,
        judge: &IdentityJudge,
        name: &str,
        addrs: &[IpAddr],
        expires_ns: u64,
        limits: Limits,
    ) -> Vec<KernelWrite> {
        let state = self.idents.entry(judge.index).or_default();
        if state.identity != judge.name {
            // A new identity on a reused index: nothing of the old one holds.
            *state = IdentLearned {
                identity: judge.name.clone(),
                ..IdentLearned::default()
            };
        }
        let entries = state.names.entry(name.to_string()).or_default();
        let mut affected: Vec<IpAddr> = Vec::with_capacity(addrs.len());
        for addr in addrs {
            self.next_seq += 1;
            let mut entry = AddrEntry {
                addr: *addr,
                expires_ns,
                seq: self.next_seq,
            };
            if let Some(pos) = entries.iter().position(|e| e.addr == *addr) {
                let old = entries.remove(pos);
                entry.expires_ns = entry.expires_ns.max(old.expires_ns);
                state.order.remove(&old.seq);
            }
            state
                .order
                .insert(entry.seq, (name.to_string(), entry.addr));
            entries.push(entry);
            affected.push(*addr);
        }
        while entries.len() > limits.per_name.max(1) {
            let evicted = entries.remove(0);
            state.order.remove(&evicted.seq);
            affected.push(evicted.addr);
        }
        let kept: Vec<IpAddr> = entries.iter().map(|e| e.addr).collect();
        for addr in &affected {
            if kept.contains(addr) {
                state
                    .by_addr
                    .entry(*addr)
                    .or_default()
                    .insert(name.to_string());
            } else {
                state.forget(*addr, name);
            }
        }
        // The identity's quota: its own oldest entries make room, never
        // another identity's.
        while state.by_addr.len() > limits.per_identity.max(1) {
            let Some((_, (old_name, old_addr))) = state.order.pop_first() else {
                break;
            };
            if let Some(list) = state.names.get_mut(&old_name) {
                list.retain(|e| e.addr != old_addr);
                if list.is_empty() {
                    state.names.remove(&old_name);
                }
            }
            state.forget(old_addr, &old_name);
            affected.push(old_addr);
        }
        state.writes_for(judge, &affected)
    }

    /// Distinct addresses `index` holds.
    pub fn held_by(&self, index: u32) -> usize {
        self.idents.get(&index).map_or(0, |s| s.by_addr.len())
    }

    /// Forget entries that expired (their kernel ranges already stopped
    /// admitting); returns the writes that tidy the kernel map.
    pub fn sweep(&mut self, now_ns: u64, judges: &Judges) -> Vec<KernelWrite> {
        let mut writes = Vec::new();
        for (index, state) in &mut self.idents {
            let mut affected = Vec::new();
            let order = &mut state.order;
            state.names.retain(|name, entries| {
                entries.retain(|e| {
                    let live = e.expires_ns > now_ns;
                    if !live {
                        affected.push((e.addr, name.clone()));
                        order.remove(&e.seq);
                    }
                    live
                });
                !entries.is_empty()
            });
            if affected.is_empty() {
                continue;
            }
            for (addr, name) in &affected {
                state.forget(*addr, name);
            }
            let addrs: Vec<IpAddr> = affected.iter().map(|(a, _)| *a).collect();
            match judges.by_index.get(index) {
                Some(judge) => writes.extend(state.writes_for(judge, &addrs)),
                None => writes.extend(
                    addrs
                        .iter()
                        .map(|a| KernelWrite::Delete(key_of(*index, *a))),
                ),
            }
        }
        self.idents.retain(|_, s| !s.names.is_empty());
        writes
    }

    /// After a policy change: drop what identities without host rules (or
    /// with a new owner of their index) learned, and recompute every other
    /// entry against the new rules. Returns every entry the kernel should
    /// hold; the caller deletes the rest.
    pub fn rejudge(&mut self, judges: &Judges) -> Vec<(LearnedKey, LearnedValue)> {
        self.idents.retain(|index, state| {
            judges
                .by_index
                .get(index)
                .is_some_and(|j| j.name == state.identity)
        });
        let mut out = Vec::new();
        for (index, state) in &self.idents {
            let Some(judge) = judges.by_index.get(index) else {
                continue;
            };
            let addrs: Vec<IpAddr> = state.by_addr.keys().copied().collect();
            for w in state.writes_for(judge, &addrs) {
                if let KernelWrite::Set(k, v) = w {
                    out.push((k, v));
                }
            }
        }
        out
    }

    /// Put back what a previous daemon learned (see `persist`). Entries
    /// are ordered by expiry: the soonest to expire counts as the oldest.
    pub fn restore(&mut self, index: u32, identity: &str, names: Vec<(String, Vec<AddrEntry>)>) {
        let state = self.idents.entry(index).or_insert_with(|| IdentLearned {
            identity: identity.to_string(),
            ..IdentLearned::default()
        });
        let mut all: Vec<(u64, String, IpAddr)> = Vec::new();
        for (name, entries) in names {
            for e in &entries {
                state
                    .by_addr
                    .entry(e.addr)
                    .or_default()
                    .insert(name.clone());
                all.push((e.expires_ns, name.clone(), e.addr));
            }
            state.names.insert(name, entries);
        }
        all.sort();
        for (_, name, addr) in all {
            self.next_seq += 1;
            if let Some(e) = state
                .names
                .get_mut(&name)
                .and_then(|es| es.iter_mut().find(|e| e.addr == addr))
            {
                e.seq = self.next_seq;
            }
            state.order.insert(self.next_seq, (name, addr));
        }
    }
}

impl IdentLearned {
    fn forget(&mut self, addr: IpAddr, name: &str) {
        if let Some(names) = self.by_addr.get_mut(&addr) {
            names.remove(name);
            if names.is_empty() {
                self.by_addr.remove(&addr);
            }
        }
    }

    /// The kernel value of each address: every range of every name that
    /// resolved to it, as the current rules say; deny ranges first, then
    /// the longest-lived, at most `LEARNED_RANGES`.
    fn writes_for(&self, judge: &IdentityJudge, addrs: &[IpAddr]) -> Vec<KernelWrite> {
        let mut writes = Vec::with_capacity(addrs.len());
        let mut seen: BTreeSet<IpAddr> = BTreeSet::new();
        for addr in addrs {
            if !seen.insert(*addr) {
                continue;
            }
            let key = key_of(judge.index, *addr);
            let mut ranges: Vec<LearnedRange> = Vec::new();
            for name in self.by_addr.get(addr).into_iter().flatten() {
                let Some(entry) = self
                    .names
                    .get(name)
                    .and_then(|es| es.iter().find(|e| e.addr == *addr))
                else {
                    continue;
                };
                match judge.judge(name) {
                    NameVerdict::Allow(rules) => {
                        ranges.extend(ranges_of(&rules, false, entry.expires_ns));
                    }
                    NameVerdict::Deny(rule) => {
                        ranges.extend(ranges_of(&[rule], true, entry.expires_ns));
                    }
                    NameVerdict::NoRule => {}
                }
            }
            writes.push(match merge(ranges) {
                Some(value) => KernelWrite::Set(key, value),
                None => KernelWrite::Delete(key),
            });
        }
        writes
    }
}

/// Merge duplicate ranges (keeping the latest expiry) into a kernel value.
fn merge(mut ranges: Vec<LearnedRange>) -> Option<LearnedValue> {
    if ranges.is_empty() {
        return None;
    }
    ranges.sort_by(|a, b| {
        (b.deny, a.lo, a.hi, a.proto, a.rule, b.expires_ns).cmp(&(
            a.deny,
            b.lo,
            b.hi,
            b.proto,
            b.rule,
            a.expires_ns,
        ))
    });
    ranges.dedup_by(|later, first| {
        (later.deny, later.lo, later.hi, later.proto, later.rule)
            == (first.deny, first.lo, first.hi, first.proto, first.rule)
    });
    // Deny ranges first (they must not be cut), then the longest-lived.
    ranges.sort_by_key(|r| std::cmp::Reverse((r.deny, r.expires_ns)));
    ranges.truncate(LEARNED_RANGES);
    let mut value = LearnedValue {
        len: ranges.len() as u32,
        ..LearnedValue::default()
    };
    value.ranges[..ranges.len()].copy_from_slice(&ranges);
    Some(value)
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, sync::Arc};

    use super::*;
    use crate::policy::{HostPattern, HostRule, PortRange, Protocol};

    fn rule(n: u32, pattern: &str, port: u16) -> HostRule {
        HostRule {
            rule: n,
            pattern: HostPattern::parse(pattern).unwrap_or_else(|e| panic!("{e}")),
            ports: vec![PortRange { lo: port, hi: port }],
            protocol: Protocol::Tcp,
        }
    }

    fn judge(index: u32, allow: Vec<HostRule>, deny: Vec<HostRule>) -> IdentityJudge {
        IdentityJudge {
            index,
            name: format!("ident-{index}"),
            audit: false,
            allow,
            deny,
            cidr_allow: vec![],
        }
    }

    fn lim(per_name: usize) -> Limits {
        Limits {
            per_name,
            per_identity: 1 << 20,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn set(w: &KernelWrite) -> (&LearnedKey, &LearnedValue) {
        match w {
            KernelWrite::Set(k, v) => (k, v),
            KernelWrite::Delete(k) => panic!("expected a set, got delete of {k:?}"),
        }
    }

    #[test]
    fn learning_writes_the_rules_ports_for_that_identity_only() {
        let j = judge(3, vec![rule(0, "api.example.com", 443)], vec![]);
        let mut t = LearnedTable::default();
        let w = t.learn(&j, "api.example.com", &[ip(1)], 1000, lim(4));
        assert_eq!(w.len(), 1);
        let (k, v) = set(&w[0]);
        assert_eq!(k.identity, 3);
        assert_eq!(&k.addr[..4], &[192, 0, 2, 1]);
        assert_eq!(v.len, 1);
        assert_eq!((v.ranges[0].lo, v.ranges[0].expires_ns), (443, 1000));
    }

    #[test]
    fn the_oldest_address_of_a_name_is_evicted_beyond_the_cap() {
        let j = judge(1, vec![rule(0, "*.example.com", 443)], vec![]);
        let mut t = LearnedTable::default();
        t.learn(&j, "a.example.com", &[ip(1), ip(2)], 1000, lim(2));
        let w = t.learn(&j, "a.example.com", &[ip(3)], 2000, lim(2));
        assert!(w.contains(&KernelWrite::Delete(key_of(1, ip(1)))), "{w:?}");
        assert!(matches!(&w[0], KernelWrite::Set(k, _) if *k == key_of(1, ip(3))));
        // Refreshing keeps an address and moves it to the young end.
        let w = t.learn(&j, "a.example.com", &[ip(2)], 3000, lim(2));
        assert_eq!(w.len(), 1);
        assert_eq!(set(&w[0]).1.ranges[0].expires_ns, 3000);
    }

    #[test]
    fn a_shared_address_keeps_both_names_and_a_deny_comes_first() {
        let j = judge(
            1,
            vec![rule(0, "*.cdn.net", 443)],
            vec![rule(1, "bad.cdn.net", 0)],
        );
        let mut t = LearnedTable::default();
        t.learn(&j, "good.cdn.net", &[ip(9)], 1000, lim(8));
        let w = t.learn(&j, "bad.cdn.net", &[ip(9)], 500, lim(8));
        let (_, v) = set(&w[0]);
        assert_eq!(v.len, 2);
        assert_eq!(v.ranges[0].deny, 1);
        assert_eq!(v.ranges[1].deny, 0);
    }

    #[test]
    fn rejudge_follows_the_new_rules_and_drops_identities_without_them() {
        let j = judge(1, vec![rule(0, "api.example.com", 443)], vec![]);
        let mut t = LearnedTable::default();
        t.learn(&j, "api.example.com", &[ip(1)], 1000, lim(8));
        let mut judges = Judges::default();
        let moved = judge(1, vec![rule(5, "api.example.com", 8443)], vec![]);
        judges.by_index.insert(1, Arc::new(moved));
        let all = t.rejudge(&judges);
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].1.ranges[0].lo, all[0].1.ranges[0].rule), (8443, 5));
        // The rule is gone: the address no longer admits anything.
        judges
            .by_index
            .insert(1, Arc::new(judge(1, vec![], vec![rule(9, "x.y", 1)])));
        assert!(t.rejudge(&judges).is_empty());
        // The identity is gone: its state too.
        judges.by_index.clear();
        t.rejudge(&judges);
        assert!(t.is_empty());
    }

    #[test]
    fn an_identity_over_its_quota_loses_its_own_oldest_entries_only() {
        let a = judge(1, vec![rule(0, "*.flood.test", 443)], vec![]);
        let b = judge(2, vec![rule(1, "api.test", 443)], vec![]);
        let mut t = LearnedTable::default();
        let quota = Limits {
            per_name: 8,
            per_identity: 3,
        };
        t.learn(&b, "api.test", &[ip(200)], 9000, quota);
        for i in 1..=5u8 {
            let w = t.learn(&a, &format!("n{i}.flood.test"), &[ip(i)], 1000, quota);
            if i > 3 {
                // The oldest of identity 1 goes, nothing of identity 2.
                let gone = key_of(1, ip(i - 3));
                assert!(w.contains(&KernelWrite::Delete(gone)), "{w:?}");
                assert!(
                    !w.iter()
                        .any(|x| matches!(x, KernelWrite::Delete(k) if k.identity == 2)),
                    "{w:?}"
                );
            }
        }
        assert_eq!(t.held_by(1), 3);
        assert_eq!(t.held_by(2), 1);
        assert!(!t.idents[&1].names.contains_key("n1.flood.test"));
        // Asking again for an old name makes it the youngest.
        t.learn(&a, "n3.flood.test", &[ip(3)], 2000, quota);
        let w = t.learn(&a, "n6.flood.test", &[ip(6)], 2000, quota);
        assert!(w.contains(&KernelWrite::Delete(key_of(1, ip(4)))), "{w:?}");
        assert_eq!(t.held_by(1), 3);
    }

    #[test]
    fn sweep_forgets_expired_entries() {
        let j = Arc::new(judge(1, vec![rule(0, "*.example.com", 443)], vec![]));
        let mut t = LearnedTable::default();
        t.learn(&j, "a.example.com", &[ip(1)], 1000, lim(8));
        t.learn(&j, "b.example.com", &[ip(2)], 5000, lim(8));
        let mut judges = Judges::default();
        judges.by_index.insert(1, j);
        let w = t.sweep(2000, &judges);
        assert_eq!(w, vec![KernelWrite::Delete(key_of(1, ip(1)))]);
        assert_eq!(t.len(), 1);
    }
}
