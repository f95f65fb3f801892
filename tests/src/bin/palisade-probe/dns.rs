//! `palisade-probe dns …`: one DNS exchange, the way an agent's resolver
//! does it, with what it saw: the response code, the addresses, and where
//! the answer said it came from (`from`, and `peer` from getpeername()).

use std::{
    io::{self, Read, Write},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    str::FromStr,
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(3);

pub fn run(args: &[String]) -> Option<String> {
    let (mode, rest) = args.split_first()?;
    let server: IpAddr = rest.first()?.parse().ok()?;
    let to = SocketAddr::new(server, 53);
    let out = match mode.as_str() {
        "udp" | "udp-connect" | "tcp" => {
            let name = rest.get(1)?;
            let qtype = match rest.get(2) {
                Some(t) => RecordType::from_str(t).ok()?,
                None => RecordType::A,
            };
            let mut q = Message::new(0x5a5a, MessageType::Query, OpCode::Query);
            q.metadata.recursion_desired = true;
            q.add_query(Query::query(Name::from_str(name).ok()?, qtype));
            let bytes = q.to_vec().ok()?;
            match exchange(mode, to, &bytes) {
                Ok((answer, from, peer)) => describe(&answer, from, peer),
                Err(e) => io_error(&e),
            }
        }
        "raw-udp" | "raw-tcp" => {
            let bytes = match rest.get(1)?.as_str() {
                "big" => vec![0xab; 65_000],
                hex => decode_hex(hex)?,
            };
            let mode = if mode == "raw-udp" { "udp" } else { "tcp" };
            match exchange(mode, to, &bytes) {
                Ok((answer, from, _)) => match Message::from_vec(&answer) {
                    Ok(m) => json!({"ok": true, "answered": true, "from": from.to_string(),
                                    "rcode": rcode(m.metadata.response_code)}),
                    Err(e) => json!({"ok": true, "answered": true, "unparsable": e.to_string()}),
                },
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::UnexpectedEof
                            | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    json!({"ok": true, "answered": false, "error": e.to_string()})
                }
                Err(e) => io_error(&e),
            }
        }
        // `flood SERVER SUFFIX COUNT`: ask n0.SUFFIX … n{COUNT-1}.SUFFIX
        // one after the other; count the outcomes.
        "flood" => {
            let suffix = rest.get(1)?;
            let count: u32 = rest.get(2)?.parse().ok()?;
            let (mut noerror, mut other, mut failed) = (0u32, 0u32, 0u32);
            for i in 0..count {
                let bytes = query_bytes(&format!("n{i}.{suffix}"), i as u16)?;
                match exchange("udp", to, &bytes) {
                    Ok((answer, _, _)) => match Message::from_vec(&answer) {
                        Ok(m) if m.metadata.response_code == ResponseCode::NoError => noerror += 1,
                        _ => other += 1,
                    },
                    Err(_) => failed += 1,
                }
            }
            json!({"ok": failed == 0, "noerror": noerror, "other": other, "failed": failed})
        }
        // `spray SERVER SUFFIX COUNT`: send x0.SUFFIX … without waiting
        // (a reader counts answers meanwhile), then count what came back
        // within a second.
        "spray" => {
            let suffix = rest.get(1)?;
            let count: u32 = rest.get(2)?.parse().ok()?;
            let sock = UdpSocket::bind("0.0.0.0:0").ok()?;
            sock.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
            let reader = {
                let sock = sock.try_clone().ok()?;
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65_535];
                    let (mut answered, mut servfail) = (0u32, 0u32);
                    while let Ok((n, _)) = sock.recv_from(&mut buf) {
                        answered += 1;
                        if Message::from_vec(&buf[..n])
                            .is_ok_and(|m| m.metadata.response_code == ResponseCode::ServFail)
                        {
                            servfail += 1;
                        }
                    }
                    (answered, servfail)
                })
            };
            for i in 0..count {
                let bytes = query_bytes(&format!("x{i}.{suffix}"), i as u16)?;
                if let Err(e) = sock.send_to(&bytes, to) {
                    return Some(io_error(&e).to_string());
                }
                // Paced so that the receiving socket's buffer never drops one.
                std::thread::sleep(Duration::from_micros(200));
            }
            let (answered, servfail) = reader.join().ok()?;
            json!({"ok": true, "sent": count, "answered": answered, "servfail": servfail})
        }
        _ => return None,
    };
    Some(out.to_string())
}

fn query_bytes(name: &str, id: u16) -> Option<Vec<u8>> {
    let mut q = Message::new(id, MessageType::Query, OpCode::Query);
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_str(name).ok()?, RecordType::A));
    q.to_vec().ok()
}

type Exchanged = (Vec<u8>, SocketAddr, Option<SocketAddr>);

fn exchange(mode: &str, to: SocketAddr, bytes: &[u8]) -> io::Result<Exchanged> {
    match mode {
        "udp" | "udp-connect" => {
            let sock = match to {
                SocketAddr::V4(_) => UdpSocket::bind("0.0.0.0:0")?,
                SocketAddr::V6(_) => UdpSocket::bind("[::]:0")?,
            };
            sock.set_read_timeout(Some(TIMEOUT))?;
            let peer = if mode == "udp-connect" {
                sock.connect(to)?;
                sock.send(bytes)?;
                Some(sock.peer_addr()?)
            } else {
                sock.send_to(bytes, to)?;
                None
            };
            let mut buf = vec![0u8; 65_535];
            let (n, from) = sock.recv_from(&mut buf)?;
            buf.truncate(n);
            Ok((buf, from, peer))
        }
        _ => {
            let mut stream = TcpStream::connect_timeout(&to, TIMEOUT)?;
            stream.set_read_timeout(Some(TIMEOUT))?;
            let peer = stream.peer_addr()?;
            let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
            let mut framed = len.to_be_bytes().to_vec();
            framed.extend_from_slice(bytes);
            stream.write_all(&framed)?;
            let mut len = [0u8; 2];
            stream.read_exact(&mut len)?;
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut buf)?;
            Ok((buf, peer, Some(peer)))
        }
    }
}

fn rcode(r: ResponseCode) -> String {
    match r {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => u16::from(other).to_string(),
    }
}

fn describe(answer: &[u8], from: SocketAddr, peer: Option<SocketAddr>) -> Value {
    match Message::from_vec(answer) {
        Ok(m) => {
            let addrs: Vec<String> = m
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(a.0.to_string()),
                    RData::AAAA(a) => Some(a.0.to_string()),
                    _ => None,
                })
                .collect();
            let ttls: Vec<u32> = m.answers.iter().map(|r| r.ttl).collect();
            json!({
                "ok": m.metadata.response_code == ResponseCode::NoError,
                "rcode": rcode(m.metadata.response_code),
                "id": m.metadata.id,
                "addrs": addrs,
                "ttls": ttls,
                "from": from.to_string(),
                "peer": peer.map(|p| p.to_string()),
            })
        }
        Err(e) => json!({"ok": false, "error": format!("unparsable answer: {e}")}),
    }
}

fn io_error(e: &io::Error) -> Value {
    json!({"ok": false, "errno": e.raw_os_error().unwrap_or(-1), "error": e.to_string()})
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
