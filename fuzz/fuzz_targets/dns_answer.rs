//! An upstream resolver's answer, as the proxy handles it once it matched
//! a query in flight (same id, same question): parsed, its CNAME chain
//! followed and judged name by name, inside addresses withheld, addresses
//! turned into the ranges the kernel learns, TTLs capped, and the answer
//! re-encoded for the agent. The upstream (or anyone who can spoof it) is
//! untrusted.
//!
//! Properties: the chain starts at the asked name, has no repeats and is
//! bounded; every learned address is an A/AAAA record of a name on the
//! chain; the answer the agent gets parses, carries its id, holds no
//! withheld address, and no record outlives the cap.
#![no_main]

use std::{collections::HashSet, net::IpAddr, time::Instant};

use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::RData,
};
use libfuzzer_sys::fuzz_target;
use palisade::dns::{
    Transport,
    events::Lookup,
    internal::internal_kind,
    judge::{NameVerdict, ranges_of},
    message::{self, Query},
};
use palisade_fuzz::dns_judges;

const TTL_CAP: u32 = 300;

fuzz_target!(|data: &[u8]| {
    let Ok(resp) = Message::from_vec(data) else {
        return;
    };
    // The upstream repeats the question (answers that do not are dropped).
    let Some(question) = resp.queries.first().cloned() else {
        return;
    };
    let qname = message::canonical(question.name());
    let mut asked = Message::new(resp.metadata.id, MessageType::Query, OpCode::Query);
    asked.add_query(question.clone());
    let query = Query {
        msg: asked,
        name: qname.clone(),
        qtype: question.query_type(),
    };
    let answer = match message::analyse(&resp, &qname) {
        Ok(a) => a,
        Err(_) => return,
    };
    assert_eq!(answer.chain.first(), Some(&qname));
    let unique: HashSet<&String> = answer.chain.iter().collect();
    assert_eq!(
        unique.len(),
        answer.chain.len(),
        "a name repeats on the chain"
    );
    assert!(answer.chain.len() <= 17, "chain of {}", answer.chain.len());
    for a in &answer.addrs {
        assert!(
            resp.answers.iter().any(|r| record_addr(&r.data) == Some(*a)
                && answer.chain.contains(&message::canonical(&r.name))),
            "{a} learned but no name on the chain has it"
        );
    }

    for judge in dns_judges().by_index.values() {
        let mut lookup = Lookup::new(&query, Some(judge), Transport::Udp);
        lookup.set_answer(&answer, resp.metadata.response_code);
        let verdict = judge.judge(&qname);
        let outside = answer
            .chain
            .iter()
            .skip(1)
            .find_map(|n| match judge.judge(n) {
                NameVerdict::Allow(_) => None,
                v => Some((n.clone(), v)),
            });
        if let Some((name, v)) = outside {
            lookup.refuse(v.reason(), Some(name));
        }
        let withheld: Vec<IpAddr> = answer
            .addrs
            .iter()
            .copied()
            .filter(|a| internal_kind(*a).is_some() && !judge.cidr_allows(*a))
            .collect();
        let mut resp = resp.clone();
        if !withheld.is_empty() {
            lookup.withhold(
                &withheld,
                "inside",
                withheld.len() == answer.addrs.len(),
                judge.audit,
            );
            message::strip_addrs(&mut resp, &withheld);
        }
        if let NameVerdict::Allow(rules) = &verdict {
            let ranges = ranges_of(rules, false, 1);
            assert!(ranges.iter().all(|r| r.lo <= r.hi));
            lookup.learned(&answer.addrs, TTL_CAP);
        }
        let ev = lookup.finish(Instant::now());
        serde_json::to_string(&ev).expect("a lookup record serialises");

        let mut client = query.msg.clone();
        client.metadata.id = 0x5a5a;
        let Ok(bytes) = message::finish(resp, &client, TTL_CAP) else {
            continue;
        };
        let back = Message::from_vec(&bytes).expect("the answer given to the agent parses");
        assert_eq!(back.metadata.id, client.metadata.id);
        assert_eq!(back.queries, client.queries, "the agent gets its own question back");
        for r in &back.answers {
            assert!(r.ttl <= TTL_CAP, "a record lives {} s", r.ttl);
            if let Some(a) = record_addr(&r.data) {
                assert!(!withheld.contains(&a), "withheld {a} reaches the agent");
            }
        }
        // What the agent sees on the chain, the proxy learned (or withheld).
        if let Ok(seen) = message::analyse(&back, &qname) {
            for a in seen.addrs {
                assert!(answer.addrs.contains(&a), "{a} reaches the agent unjudged");
            }
        }
    }
    let _ = message::error_response(&query.msg, ResponseCode::ServFail);
});

fn record_addr(d: &RData) -> Option<IpAddr> {
    match d {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    }
}
