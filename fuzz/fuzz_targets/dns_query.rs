//! A DNS query as an enrolled process sends it to the proxy (the UDP
//! payload, or a TCP message after its length prefix): parsed, judged by
//! every example identity with host rules, recorded, answered with an
//! error, or forwarded.
//!
//! Properties: every answer the proxy makes parses and is a response to
//! the query's id; a question forwarded upstream comes back the same after
//! encoding (or legitimate answers would be dropped as mismatched); the
//! name the policy judges is the name that is asked (parsing it back gives
//! the same labels).
#![no_main]

use std::time::Instant;

use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::Name,
};
use libfuzzer_sys::fuzz_target;
use palisade::dns::{
    Transport,
    events::Lookup,
    message::{self, MessageError},
};
use palisade_fuzz::dns_judges;

fuzz_target!(|data: &[u8]| {
    let query = match message::parse_query(data) {
        Ok(q) => q,
        Err(e) => return malformed(data, &e),
    };
    // The judged name is the asked name.
    assert!(!query.name.ends_with('.'), "{:?}", query.name);
    assert_eq!(query.name, query.name.to_ascii_lowercase());
    let asked = query.msg.queries[0].name();
    // Read back by the escaping rules of presentation format (hickory's
    // parser refuses some names it prints, such as a `*` inside a label).
    assert_eq!(
        unescaped_labels(&query.name),
        labels(asked),
        "judged {:?} but {asked:?} is asked",
        query.name
    );

    for judge in dns_judges().by_index.values() {
        let verdict = judge.judge(&query.name);
        let mut lookup = Lookup::new(&query, Some(judge), Transport::Udp);
        lookup.refuse(verdict.reason(), None);
        let ev = lookup.finish(Instant::now());
        serde_json::to_string(&ev).expect("a lookup record serialises");
        let _ = ev.human();
    }

    // The proxy's own refusal.
    if let Ok(bytes) = message::error_response(&query.msg, ResponseCode::Refused) {
        let m = Message::from_vec(&bytes).expect("the proxy's refusal parses");
        assert_eq!(m.metadata.id, query.msg.metadata.id);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    }

    // The question as forwarded upstream (fresh id), and as it comes back.
    let mut up = query.msg.clone();
    up.metadata.id = up.metadata.id.wrapping_add(1);
    if let Ok(bytes) = up.to_vec() {
        let back = Message::from_vec(&bytes).expect("the forwarded query parses");
        assert_eq!(
            back.queries.first(),
            query.msg.queries.first(),
            "the forwarded question changes on the wire"
        );
    }
});

fn labels(n: &Name) -> Vec<Vec<u8>> {
    n.iter().map(<[u8]>::to_ascii_lowercase).collect()
}

/// The labels of a name in presentation format: `.` separates labels,
/// `\DDD` is a byte, `\X` is X.
fn unescaped_labels(name: &str) -> Vec<Vec<u8>> {
    let b = name.as_bytes();
    let (mut out, mut label, mut i) = (Vec::new(), Vec::new(), 0);
    while i < b.len() {
        match b[i] {
            b'\\' if i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) => {
                let n = (b[i + 1] - b'0') as u16 * 100 + (b[i + 2] - b'0') as u16 * 10 + (b[i + 3] - b'0') as u16;
                label.push(n as u8);
                i += 4;
            }
            b'\\' if i + 1 < b.len() => {
                label.push(b[i + 1]);
                i += 2;
            }
            b'.' => {
                out.push(std::mem::take(&mut label));
                i += 1;
            }
            c => {
                label.push(c);
                i += 1;
            }
        }
    }
    if !label.is_empty() || out.is_empty() && !b.is_empty() {
        out.push(label);
    }
    out.into_iter().map(|l| l.to_ascii_lowercase()).collect()
}

fn malformed(data: &[u8], e: &MessageError) {
    let ev = Lookup::malformed(None, Transport::Tcp, &e.to_string()).finish(Instant::now());
    serde_json::to_string(&ev).expect("a lookup record serialises");
    if let Some(answer) = message::error_for_bytes(data, e.rcode()) {
        let m = Message::from_vec(&answer).expect("the proxy's error answer parses");
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert_eq!(m.metadata.response_code, e.rcode());
        assert_eq!(&m.metadata.id.to_be_bytes()[..], &data[..2]);
    }
}
