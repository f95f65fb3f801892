//! What one identity was seen doing, aggregated while the trail streams by.
//! Memory grows with the number of distinct destinations, names and tool
//! calls, never with the number of records.
//!
//! Only what happened counts: connections and lookups the kernel or the
//! proxy allowed (in audit mode: would have refused, and let through), and
//! tool calls that were allowed. What was refused did not happen and is
//! only counted, so that a blocked exfiltration attempt never becomes an
//! allow rule. Whatever an elevation allowed is counted apart: break-glass
//! is not a standing need.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use super::records::Record;
use crate::policy::Protocol;

/// How often something was seen, and when (unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub count: u64,
    pub first: i64,
    pub last: i64,
}

impl Seen {
    pub fn at(t: i64) -> Self {
        Self {
            count: 1,
            first: t,
            last: t,
        }
    }

    pub fn add(&mut self, t: i64) {
        self.count += 1;
        self.first = self.first.min(t);
        self.last = self.last.max(t);
    }

    pub fn merge(&mut self, o: &Seen) {
        self.count += o.count;
        self.first = self.first.min(o.first);
        self.last = self.last.max(o.last);
    }
}

fn bump<K: Ord>(map: &mut BTreeMap<K, Seen>, k: K, t: i64) {
    map.entry(k).and_modify(|s| s.add(t)).or_insert(Seen::at(t));
}

/// One destination as the kernel saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    pub ip: IpAddr,
    pub port: u16,
    pub proto: Protocol,
}

/// A name the identity looked up and got an answer for.
#[derive(Clone, Debug)]
pub struct Lookup {
    pub seen: Seen,
    /// Names on the CNAME chain of its answers.
    pub cnames: BTreeSet<String>,
}

/// A parameter of a tool call.
#[derive(Clone, Copy, Debug)]
pub struct ParamSeen {
    /// Calls that sent it.
    pub calls: u64,
    /// Calls in which it was a number.
    pub numeric: u64,
    pub min: f64,
    pub max: f64,
    /// Every numeric value was whole.
    pub whole: bool,
}

/// Resources kept per tool call before they are summarised.
pub const MAX_RESOURCES: usize = 256;

/// Calls of one `tool.action`.
#[derive(Clone, Debug)]
pub struct CallSeen {
    pub seen: Seen,
    pub resources: BTreeSet<String>,
    /// More distinct resources than `MAX_RESOURCES` were seen.
    pub resources_overflow: bool,
    pub params: BTreeMap<String, ParamSeen>,
}

impl CallSeen {
    fn new(t: i64) -> Self {
        Self {
            seen: Seen::at(t),
            resources: BTreeSet::new(),
            resources_overflow: false,
            params: BTreeMap::new(),
        }
    }

    fn add(&mut self, call: &super::records::CallPart<'_>) {
        if !call.resource.is_empty() && !self.resources.contains(call.resource.as_ref()) {
            if self.resources.len() < MAX_RESOURCES {
                self.resources.insert(call.resource.to_string());
            } else {
                self.resources_overflow = true;
            }
        }
        for name in &call.params {
            let p = self.params.entry(name.to_string()).or_insert(ParamSeen {
                calls: 0,
                numeric: 0,
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
                whole: true,
            });
            p.calls += 1;
            if let Some(v) = call.numbers.get(name.as_ref()) {
                p.numeric += 1;
                p.min = p.min.min(*v);
                p.max = p.max.max(*v);
                p.whole &= v.fract() == 0.0;
            }
        }
    }
}

/// What was seen but did not happen, or happened only by break-glass.
#[derive(Clone, Copy, Debug, Default)]
pub struct NotCounted {
    pub denied_connections: u64,
    pub refused_lookups: u64,
    pub denied_calls: u64,
    pub elevated: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Evidence {
    pub identity: String,
    pub flows: BTreeMap<Flow, Seen>,
    pub lookups: BTreeMap<String, Lookup>,
    /// Address → the queried names whose answers held it, with the first
    /// time each answered with it.
    pub answers: HashMap<IpAddr, Vec<(String, i64)>>,
    /// Allowed calls, by (tool, action).
    pub calls: BTreeMap<(String, String), CallSeen>,
    /// Calls made with an approval (override token), by (tool, action).
    pub approved: BTreeMap<(String, String), CallSeen>,
    pub not_counted: NotCounted,
    /// Enrolled with `palisade exec` at least once.
    pub exec_enrolled: bool,
    pub records: u64,
}

fn happened(verdict: &str) -> bool {
    matches!(verdict, "allow" | "audit")
}

fn protocol(name: Option<&str>) -> Option<Protocol> {
    match name {
        Some("tcp") => Some(Protocol::Tcp),
        Some("udp") => Some(Protocol::Udp),
        _ => None,
    }
}

impl Evidence {
    pub fn new(identity: &str) -> Self {
        Self {
            identity: identity.to_string(),
            ..Self::default()
        }
    }

    /// Take one record of this identity into account.
    pub fn add(&mut self, r: &Record<'_>, t: i64) {
        self.records += 1;
        match r.kind.as_ref() {
            "network" => self.network(r, t),
            "dns" => self.dns(r, t),
            "decision" => self.decision(r, t),
            "enrolment" if r.reason == "exec" => self.exec_enrolled = true,
            _ => {}
        }
    }

    fn network(&mut self, r: &Record<'_>, t: i64) {
        let (Some(ip), Some(port), Some(proto)) = (
            r.dst_ip.as_deref().and_then(|s| s.parse::<IpAddr>().ok()),
            r.dst_port,
            protocol(r.protocol.as_deref()),
        ) else {
            return;
        };
        if !happened(&r.verdict) {
            self.not_counted.denied_connections += 1;
        } else if r.elevation.is_some() {
            self.not_counted.elevated += 1;
        } else {
            bump(&mut self.flows, Flow { ip, port, proto }, t);
        }
    }

    fn dns(&mut self, r: &Record<'_>, t: i64) {
        let Some(d) = &r.dns else { return };
        if !happened(&r.verdict) {
            self.not_counted.refused_lookups += 1;
            return;
        }
        let name = d.query.trim_end_matches('.').to_ascii_lowercase();
        let l = self.lookups.entry(name.clone()).or_insert(Lookup {
            seen: Seen {
                count: 0,
                first: t,
                last: t,
            },
            cnames: BTreeSet::new(),
        });
        l.seen.add(t);
        for c in &d.cnames {
            l.cnames
                .insert(c.trim_end_matches('.').to_ascii_lowercase());
        }
        for a in &d.answer {
            let Ok(ip) = a.parse::<IpAddr>() else {
                continue;
            };
            let names = self.answers.entry(ip).or_default();
            match names.iter_mut().find(|(n, _)| *n == name) {
                Some((_, first)) => *first = (*first).min(t),
                None => names.push((name.clone(), t)),
            }
        }
    }

    fn decision(&mut self, r: &Record<'_>, t: i64) {
        let Some(call) = &r.call else { return };
        if call.tool.is_empty() {
            return;
        }
        if !happened(&r.verdict) {
            self.not_counted.denied_calls += 1;
            return;
        }
        if r.elevation.is_some() {
            self.not_counted.elevated += 1;
            return;
        }
        let into = if r.reason == "approved-override" {
            &mut self.approved
        } else {
            &mut self.calls
        };
        into.entry((call.tool.to_string(), call.action.to_string()))
            .and_modify(|c| c.seen.add(t))
            .or_insert_with(|| CallSeen::new(t))
            .add(call);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(e: &mut Evidence, line: &str) {
        let r: Record<'_> = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let t = super::super::records::unix_seconds(&r.time).unwrap_or(0);
        e.add(&r, t);
    }

    #[test]
    fn only_what_happened_counts() {
        let mut e = Evidence::new("a");
        let net = |v: &str, port: u16| {
            format!(
                r#"{{"time":"2026-01-01T00:00:0{}Z","kind":"network","identity":"a","verdict":"{v}","reason":"default-deny","dst_ip":"10.0.0.1","dst_port":{port},"protocol":"tcp"}}"#,
                port % 10
            )
        };
        add(&mut e, &net("audit", 443));
        add(&mut e, &net("audit", 443));
        add(&mut e, &net("deny", 22));
        add(
            &mut e,
            r#"{"time":"2026-01-01T00:00:05Z","kind":"network","identity":"a","verdict":"allow","reason":"elevation","dst_ip":"10.0.0.9","dst_port":5432,"protocol":"tcp","elevation":"elv-1"}"#,
        );
        assert_eq!(e.flows.len(), 1);
        let (flow, seen) = e.flows.iter().next().unwrap_or_else(|| panic!("a flow"));
        assert_eq!((flow.port, seen.count), (443, 2));
        assert_eq!(e.not_counted.denied_connections, 1);
        assert_eq!(e.not_counted.elevated, 1);

        add(
            &mut e,
            r#"{"time":"2026-01-01T00:00:01Z","kind":"dns","identity":"a","verdict":"audit","reason":"no-host-rule","dns":{"query":"API.test.","qtype":"A","cnames":["edge.test"],"answer":["10.0.0.1"]}}"#,
        );
        add(
            &mut e,
            r#"{"time":"2026-01-01T00:00:02Z","kind":"dns","identity":"a","verdict":"audit","reason":"no-host-rule","dns":{"query":"api.test","qtype":"A","answer":["10.0.0.1"]}}"#,
        );
        let l = &e.lookups["api.test"];
        assert_eq!(l.seen.count, 2);
        assert!(l.cnames.contains("edge.test"));
        assert_eq!(
            e.answers[&"10.0.0.1"
                .parse::<IpAddr>()
                .unwrap_or_else(|e| panic!("{e}"))],
            vec![(
                "api.test".to_string(),
                super::super::records::unix_seconds("2026-01-01T00:00:01Z").unwrap_or(0)
            )]
        );

        for (v, reason, amount) in [
            ("audit", "no-matching-rule", 120),
            ("allow", "allowed", 4200),
            ("deny", "no-matching-rule", 9000),
            ("allow", "approved-override", 7000),
        ] {
            add(
                &mut e,
                &format!(
                    r#"{{"time":"2026-01-01T00:00:03Z","kind":"decision","identity":"a","verdict":"{v}","reason":"{reason}","call":{{"tool":"stripe","action":"pay","params":["amount","currency"],"numbers":{{"amount":{amount}}}}}}}"#
                ),
            );
        }
        let c = &e.calls[&("stripe".to_string(), "pay".to_string())];
        assert_eq!(c.seen.count, 2);
        let amount = c.params["amount"];
        assert_eq!((amount.min, amount.max, amount.numeric), (120.0, 4200.0, 2));
        assert_eq!(c.params["currency"].numeric, 0);
        assert_eq!(e.approved.len(), 1);
        assert_eq!(e.not_counted.denied_calls, 1);
    }
}
