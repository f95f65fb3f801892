//! `sink ADDR TCPPORTS UDPPORTS MILLIS`: the far end of a stream. Accepts
//! TCP connections and receives UDP datagrams on the given ports (comma
//! separated), and reports per port the bytes received and when the first
//! and last of them arrived (ns since the epoch). Prints `{"ready":true}`
//! once listening, the report when MILLIS are over.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, UdpSocket},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::json;

#[derive(Default, Clone, Copy)]
struct Seen {
    bytes: u64,
    first_ns: u128,
    last_ns: u128,
}

type Report = Arc<Mutex<BTreeMap<String, Seen>>>;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn note(report: &Report, key: &str, n: usize) {
    let mut r = report
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let s = r.entry(key.to_string()).or_default();
    let t = now_ns();
    if s.bytes == 0 {
        s.first_ns = t;
    }
    s.bytes += n as u64;
    s.last_ns = t;
}

fn ports(list: &str) -> Vec<u16> {
    list.split(',').filter_map(|p| p.parse().ok()).collect()
}

pub fn run(args: &[String]) -> Option<String> {
    let ip: IpAddr = args.first()?.parse().ok()?;
    let tcp = ports(args.get(1)?);
    let udp = ports(args.get(2)?);
    let millis: u64 = args.get(3)?.parse().ok()?;
    let report: Report = Arc::default();
    for port in tcp {
        let listener = TcpListener::bind(SocketAddr::new(ip, port)).ok()?;
        let report = report.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let report = report.clone();
                std::thread::spawn(move || {
                    let mut conn = conn;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        note(&report, &format!("tcp/{port}"), n);
                    }
                });
            }
        });
    }
    for port in udp {
        let sock = UdpSocket::bind(SocketAddr::new(ip, port)).ok()?;
        let report = report.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                note(&report, &format!("udp/{port}"), n);
            }
        });
    }
    println!("{}", json!({"ready": true}));
    let _ = std::io::stdout().flush();
    let deadline = Instant::now() + Duration::from_millis(millis);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = report
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let out: BTreeMap<&String, serde_json::Value> = r
        .iter()
        .map(|(k, s)| {
            (
                k,
                json!({"bytes": s.bytes, "first_ns": s.first_ns.to_string(), "last_ns": s.last_ns.to_string()}),
            )
        })
        .collect();
    Some(json!({"ok": true, "ports": out}).to_string())
}
