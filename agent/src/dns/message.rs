//! DNS messages, read and written with hickory-proto: what a query asks,
//! what an answer says (the CNAME chain and its addresses), and the
//! answers the proxy makes itself.

use std::{collections::HashSet, net::IpAddr};

use hickory_proto::{
    op::{Edns, Header, Message, MessageType, OpCode, ResponseCode},
    rr::{DNSClass, Name, RData, RecordType},
    serialize::binary::BinDecodable,
};

/// Longest CNAME chain followed; a longer one is treated as malformed.
const MAX_CHAIN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("malformed DNS message: {0}")]
    Malformed(String),
    #[error("not a standard query (opcode {opcode}, response bit {response})")]
    NotAQuery { opcode: String, response: bool },
    #[error("a query must ask exactly one question, this one asks {0}")]
    QuestionCount(usize),
    #[error("encoding a DNS message: {0}")]
    Encode(String),
    /// A label holds a byte no host name has (a dot, a backslash, a space,
    /// a control byte…): its printed form would not be the name asked.
    #[error(
        "the name {0} is not a host name (a label holds a byte other than a letter, digit, '-', '_' or '*')"
    )]
    NotAHostName(String),
    /// A class other than IN, or a record type outside `ASKABLE`: each
    /// query's type and class fields would otherwise carry 32 bits of the
    /// process's choosing to the upstream.
    #[error(
        "{0}: the proxy asks only class IN and the record types A, AAAA, CNAME, HTTPS, SVCB, MX, TXT, SRV, NS, SOA, PTR and CAA"
    )]
    QuestionRefused(String),
}

/// Record types the proxy asks the upstream for.
const ASKABLE: &[RecordType] = &[
    RecordType::A,
    RecordType::AAAA,
    RecordType::CNAME,
    RecordType::HTTPS,
    RecordType::SVCB,
    RecordType::MX,
    RecordType::TXT,
    RecordType::SRV,
    RecordType::NS,
    RecordType::SOA,
    RecordType::PTR,
    RecordType::CAA,
];

impl MessageError {
    /// The reason a lookup record gives for refusing this query.
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::NotAHostName(_) => "not-a-host-name",
            Self::QuestionRefused(_) => "question-refused",
            _ => "malformed-query",
        }
    }

    /// The response code a client gets for this error.
    pub const fn rcode(&self) -> ResponseCode {
        match self {
            Self::NotAQuery { .. } => ResponseCode::NotImp,
            Self::Encode(_) => ResponseCode::ServFail,
            Self::NotAHostName(_) | Self::QuestionRefused(_) => ResponseCode::Refused,
            Self::Malformed(_) | Self::QuestionCount(_) => ResponseCode::FormErr,
        }
    }
}

/// A query the proxy will judge.
#[derive(Clone, Debug)]
pub struct Query {
    pub msg: Message,
    /// The question's name: lowercase, no trailing dot.
    pub name: String,
    pub qtype: RecordType,
}

/// Whether every label of `name` is made of host-name bytes. Policies
/// match the printed form of a name, and a label holding a dot (or any
/// byte printed escaped) prints as something else: `["evil.allowed",
/// "com"]` would print as `evil\.allowed.com` and match `*.allowed.com`.
fn is_host_name(name: &Name) -> bool {
    name.iter().all(|label| {
        label
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'*'))
    })
}

/// The name as policies compare it, when it is a host name.
fn host_name(name: &Name) -> Result<String, MessageError> {
    if is_host_name(name) {
        Ok(canonical(name))
    } else {
        Err(MessageError::NotAHostName(name.to_ascii()))
    }
}

/// A name as policies compare it: lowercase, without the trailing dot.
pub fn canonical(name: &Name) -> String {
    let mut s = name.to_ascii().to_ascii_lowercase();
    if s.ends_with('.') {
        s.pop();
    }
    s
}

pub fn parse_query(bytes: &[u8]) -> Result<Query, MessageError> {
    let msg = Message::from_vec(bytes).map_err(|e| MessageError::Malformed(e.to_string()))?;
    if msg.metadata.message_type != MessageType::Query || msg.metadata.op_code != OpCode::Query {
        return Err(MessageError::NotAQuery {
            opcode: format!("{:?}", msg.metadata.op_code),
            response: msg.metadata.message_type == MessageType::Response,
        });
    }
    if msg.queries.len() != 1 {
        return Err(MessageError::QuestionCount(msg.queries.len()));
    }
    let q = &msg.queries[0];
    let name = host_name(q.name())?;
    let qtype = q.query_type();
    if q.query_class() != DNSClass::IN || !ASKABLE.contains(&qtype) {
        return Err(MessageError::QuestionRefused(format!(
            "{name} {} {qtype}",
            q.query_class()
        )));
    }
    Ok(Query { msg, name, qtype })
}

/// An error answer to bytes that may not even parse: the header is read
/// for the id when there is one; `None` when not even that (no answer).
pub fn error_for_bytes(bytes: &[u8], rcode: ResponseCode) -> Option<Vec<u8>> {
    let header = Header::from_bytes(bytes).ok()?;
    if header.metadata.message_type == MessageType::Response {
        return None; // never answer an answer
    }
    Message::error_msg(header.metadata.id, header.metadata.op_code, rcode)
        .to_vec()
        .ok()
}

/// The proxy's own answer to a query (NXDOMAIN, REFUSED, SERVFAIL…).
pub fn error_response(query: &Message, rcode: ResponseCode) -> Result<Vec<u8>, MessageError> {
    let mut msg = Message::error_msg(query.metadata.id, query.metadata.op_code, rcode);
    msg.metadata.recursion_desired = query.metadata.recursion_desired;
    msg.metadata.recursion_available = true;
    msg.add_queries(query.queries.iter().cloned());
    msg.to_vec()
        .map_err(|e| MessageError::Encode(e.to_string()))
}

/// What an upstream answer says about the queried name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// The queried name, then each CNAME target in order.
    pub chain: Vec<String>,
    /// A/AAAA records whose owner is in the chain.
    pub addrs: Vec<IpAddr>,
    /// Lowest TTL among the chain's records (`None` when there are none).
    pub min_ttl: Option<u32>,
}

/// Follow the CNAME chain from `qname` through the answer section and
/// collect the addresses of the names on it.
pub fn analyse(resp: &Message, qname: &str) -> Result<Answer, MessageError> {
    let mut out = Answer {
        chain: vec![qname.to_string()],
        ..Answer::default()
    };
    let mut on_chain: HashSet<String> = HashSet::from([qname.to_string()]);
    let mut current = qname.to_string();
    loop {
        let next = resp.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if canonical(&r.name) == current => {
                Some((host_name(&target.0), r.ttl))
            }
            _ => None,
        });
        let Some((target, ttl)) = next else { break };
        // A target that is not a host name could print as an allowed one.
        let target =
            target.map_err(|e| MessageError::Malformed(format!("CNAME from {current}: {e}")))?;
        if !on_chain.insert(target.clone()) || out.chain.len() > MAX_CHAIN {
            return Err(MessageError::Malformed(format!(
                "CNAME chain from {qname} loops or is longer than {MAX_CHAIN}"
            )));
        }
        out.min_ttl = Some(out.min_ttl.map_or(ttl, |t| t.min(ttl)));
        out.chain.push(target.clone());
        current = target;
    }
    for r in &resp.answers {
        let ip = match &r.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            _ => continue,
        };
        if on_chain.contains(&canonical(&r.name)) {
            out.min_ttl = Some(out.min_ttl.map_or(r.ttl, |t| t.min(r.ttl)));
            if !out.addrs.contains(&ip) {
                out.addrs.push(ip);
            }
        }
    }
    Ok(out)
}

/// Drop the A/AAAA records holding `addrs` from an answer (inside
/// addresses the identity may not learn: the process never sees them).
pub fn strip_addrs(resp: &mut Message, addrs: &[IpAddr]) {
    resp.answers.retain(|r| match &r.data {
        RData::A(a) => !addrs.contains(&IpAddr::V4(a.0)),
        RData::AAAA(a) => !addrs.contains(&IpAddr::V6(a.0)),
        _ => true,
    });
}

/// Largest UDP answer the proxy asks the upstream for (the DNS flag day
/// size: no fragmentation on common paths).
const UPSTREAM_UDP_PAYLOAD: u16 = 1232;

/// The query as the proxy sends it upstream: a fresh message holding only
/// what a lookup needs — the one question (class IN, an askable type), its
/// name in lowercase, recursion desired, and EDNS (when the process used
/// it) with a fixed payload size and its DO bit. Nothing else the process put in its query
/// travels on: records in the answer, authority or additional sections,
/// EDNS options, the case of the name's letters — each could carry data to
/// whoever runs the upstream or the zone's servers.
pub fn upstream_query(q: &Query) -> Result<Message, MessageError> {
    let asked = &q.msg.queries[0];
    let name = Name::from_ascii(format!("{}.", q.name))
        .map_err(|e| MessageError::Encode(format!("{}: {e}", q.name)))?;
    let mut question = hickory_proto::op::Query::query(name, asked.query_type());
    question.set_query_class(asked.query_class());
    let mut m = Message::new(q.msg.metadata.id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(question);
    if let Some(asked_edns) = &q.msg.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(UPSTREAM_UDP_PAYLOAD);
        edns.set_dnssec_ok(asked_edns.flags().dnssec_ok);
        m.set_edns(edns);
    }
    Ok(m)
}

/// The upstream answer as the client gets it: its own id and question
/// back (the upstream was asked the reduced form), and no record living
/// longer (TTL) than the addresses stay learned.
pub fn finish(mut resp: Message, client: &Message, ttl_cap: u32) -> Result<Vec<u8>, MessageError> {
    resp.metadata.id = client.metadata.id;
    resp.queries.clone_from(&client.queries);
    for r in &mut resp.answers {
        r.ttl = r.ttl.min(ttl_cap);
    }
    resp.to_vec()
        .map_err(|e| MessageError::Encode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::{
        net::{Ipv4Addr, Ipv6Addr},
        str::FromStr,
    };

    use hickory_proto::{
        op::Query as Question,
        rr::{
            Record,
            rdata::{A, AAAA, CNAME},
        },
    };

    use super::*;

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn query(qname: &str) -> Vec<u8> {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.add_query(Question::query(name(qname), RecordType::A));
        m.to_vec().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parses_and_canonicalises_the_question() {
        let q = parse_query(&query("WWW.Example.COM.")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.name, "www.example.com");
        assert_eq!(q.qtype, RecordType::A);
        assert_eq!(q.msg.metadata.id, 0x1234);
    }

    /// A query whose label holds a dot (or any byte printed escaped) is
    /// refused: its printed form is another name, one a policy might allow.
    #[test]
    fn names_with_bytes_no_host_name_has_are_refused() {
        for labels in [
            &[&b"evil.allowed"[..], b"com"][..],
            &[b"a\\", b"allowed", b"com"],
            &[b"a b", b"com"],
            &[b"a\x00", b"com"],
            &[b"caf\xc3\xa9", b"com"],
        ] {
            let n = Name::from_labels(labels.iter().copied()).unwrap_or_else(|e| panic!("{e}"));
            let mut m = Message::new(7, MessageType::Query, OpCode::Query);
            m.add_query(Question::query(n.clone(), RecordType::A));
            let bytes = m.to_vec().unwrap_or_else(|e| panic!("{e}"));
            match parse_query(&bytes) {
                Err(e @ MessageError::NotAHostName(_)) => {
                    assert_eq!(e.rcode(), ResponseCode::Refused);
                }
                other => panic!("{n:?}: {other:?}"),
            }
        }
        for ok in ["_dmarc.example.com", "*.example.com", "xn--caf-dma.example"] {
            assert!(parse_query(&query(ok)).is_ok(), "{ok}");
        }
    }

    #[test]
    fn a_cname_to_a_name_no_host_has_is_malformed() {
        let q = name("www.example.com.");
        let mut resp = Message::new(1, MessageType::Response, OpCode::Query);
        let target =
            Name::from_labels([&b"x.allowed"[..], b"com"]).unwrap_or_else(|e| panic!("{e}"));
        resp.add_answer(Record::from_rdata(q, 60, RData::CNAME(CNAME(target))));
        let err = analyse(&resp, "www.example.com").unwrap_err();
        assert!(matches!(err, MessageError::Malformed(_)), "{err}");
    }

    /// The type and class fields are not free-form: only class IN and the
    /// askable types go upstream.
    #[test]
    fn odd_classes_and_types_are_refused() {
        for (class, qtype) in [
            (DNSClass::CH, RecordType::TXT),
            (DNSClass::IN, RecordType::Unknown(0x5345)),
            (DNSClass::IN, RecordType::NULL),
            (DNSClass::Unknown(0x4352), RecordType::A),
        ] {
            let mut question = Question::query(name("allowed.example.com."), qtype);
            question.set_query_class(class);
            let mut m = Message::new(9, MessageType::Query, OpCode::Query);
            m.add_query(question);
            let err = parse_query(&m.to_vec().unwrap_or_else(|e| panic!("{e}"))).unwrap_err();
            assert!(
                matches!(err, MessageError::QuestionRefused(_)),
                "{class:?} {qtype:?}: {err}"
            );
            assert_eq!(err.rcode(), ResponseCode::Refused);
        }
        for qtype in [
            RecordType::A,
            RecordType::AAAA,
            RecordType::HTTPS,
            RecordType::TXT,
        ] {
            assert!(
                parse_query(&query_of("allowed.example.com.", qtype)).is_ok(),
                "{qtype:?}"
            );
        }
    }

    fn query_of(qname: &str, qtype: RecordType) -> Vec<u8> {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.add_query(Question::query(name(qname), qtype));
        m.to_vec().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn garbage_never_panics() {
        assert!(parse_query(&[]).is_err());
        assert!(parse_query(&[0xff; 11]).is_err());
        assert!(error_for_bytes(&[1], ResponseCode::FormErr).is_none());
        let mut bytes = query("a.b");
        bytes.truncate(bytes.len() - 3);
        let err = parse_query(&bytes).unwrap_err();
        assert_eq!(err.rcode(), ResponseCode::FormErr);
        let answer = error_for_bytes(&bytes, ResponseCode::FormErr)
            .unwrap_or_else(|| panic!("header is intact"));
        let m = Message::from_vec(&answer).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        // Pseudo-random bytes of every length up to 600.
        let mut x: u32 = 1;
        for len in 0..600 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = parse_query(&buf);
            let _ = error_for_bytes(&buf, ResponseCode::FormErr);
        }
    }

    #[test]
    fn follows_cname_chains_and_takes_the_lowest_ttl() {
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.add_answer(Record::from_rdata(
            name("www.example.com."),
            300,
            RData::CNAME(CNAME(name("edge.cdn.net."))),
        ));
        m.add_answer(Record::from_rdata(
            name("edge.cdn.net."),
            60,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 7))),
        ));
        m.add_answer(Record::from_rdata(
            name("EDGE.cdn.net."),
            90,
            RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)),
        ));
        m.add_answer(Record::from_rdata(
            name("unrelated.org."),
            5,
            RData::A(A(Ipv4Addr::new(198, 51, 100, 1))),
        ));
        let a = analyse(&m, "www.example.com").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.chain, vec!["www.example.com", "edge.cdn.net"]);
        assert_eq!(
            a.addrs,
            vec![
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            ]
        );
        assert_eq!(a.min_ttl, Some(60));
        let client =
            Message::from_vec(&query("WWW.example.COM.")).unwrap_or_else(|e| panic!("{e}"));
        let bytes = finish(m, &client, 30).unwrap_or_else(|e| panic!("{e}"));
        let back = Message::from_vec(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.metadata.id, 0x1234);
        assert_eq!(
            back.queries, client.queries,
            "the client's own question, case and all"
        );
        assert!(back.answers.iter().all(|r| r.ttl <= 30));
    }

    /// What a process adds to an allowed query — records in other
    /// sections, EDNS options, letter case — never reaches the upstream.
    #[test]
    fn the_upstream_is_asked_only_the_question() {
        let mut m = Message::new(0x77, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Question::query(
            name("Allowed.Example.COM."),
            RecordType::AAAA,
        ));
        let smuggled = Record::from_rdata(
            name("secret-data.evil.test."),
            60,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
        );
        m.add_answer(smuggled.clone());
        m.add_authority(smuggled.clone());
        m.add_additional(smuggled);
        let mut edns = Edns::new();
        edns.set_max_payload(65000);
        edns.set_dnssec_ok(true);
        edns.options_mut()
            .insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(
                65001,
                b"secret-payload".to_vec(),
            ));
        m.set_edns(edns);
        let q = parse_query(&m.to_vec().unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
        let up = upstream_query(&q).unwrap_or_else(|e| panic!("{e}"));
        let wire = up.to_vec().unwrap_or_else(|e| panic!("{e}"));
        let back = Message::from_vec(&wire).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.queries.len(), 1);
        assert_eq!(back.queries[0].name().to_ascii(), "allowed.example.com.");
        assert_eq!(back.queries[0].query_type(), RecordType::AAAA);
        assert!(
            back.answers.is_empty() && back.authorities.is_empty() && back.additionals.is_empty()
        );
        let e = back.edns.unwrap_or_else(|| panic!("EDNS kept"));
        assert_eq!(e.max_payload(), UPSTREAM_UDP_PAYLOAD);
        assert!(e.flags().dnssec_ok);
        assert!(e.options().as_ref().is_empty(), "{:?}", e.options());
        assert!(back.metadata.recursion_desired);
        let text = String::from_utf8_lossy(&wire);
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn cname_loops_are_malformed() {
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.add_answer(Record::from_rdata(
            name("a.x."),
            5,
            RData::CNAME(CNAME(name("b.x."))),
        ));
        m.add_answer(Record::from_rdata(
            name("b.x."),
            5,
            RData::CNAME(CNAME(name("a.x."))),
        ));
        assert!(analyse(&m, "a.x").is_err());
    }
}
