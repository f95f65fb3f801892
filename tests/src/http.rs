//! Plain HTTP on loopback for tests: a GET for scraping `/metrics`, and a
//! tiny OTLP/HTTP collector that records what it receives.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

/// `GET path` → (status, body).
pub fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{e}"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut raw = String::new();
    s.read_to_string(&mut raw)
        .unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    )
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n.min(rest.len())]);
        body = rest.get(n + 2..).unwrap_or("");
    }
    out
}

/// A Prometheus text exposition, parsed.
pub struct Scrape(pub String);

impl Scrape {
    pub fn fetch(addr: &str) -> Self {
        let (status, body) = get(addr, "/metrics");
        assert_eq!(status, 200, "GET /metrics: {body}");
        Self(body)
    }

    /// The value of a sample, written as the exposition writes it
    /// (`name{a="x",b="y"}`).
    pub fn value(&self, sample: &str) -> Option<f64> {
        self.0.lines().find_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            (name == sample).then(|| v.parse().ok()).flatten()
        })
    }

    #[track_caller]
    pub fn expect(&self, sample: &str, want: f64) {
        assert_eq!(
            self.value(sample),
            Some(want),
            "{sample}: expected {want}; scrape:\n{}",
            self.0
        );
    }

    /// Metric families announced with `# TYPE`.
    pub fn families(&self) -> Vec<String> {
        self.0
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect()
    }
}

/// One log record an OTLP collector received.
#[derive(Clone, Debug)]
pub struct Received {
    pub seq: u64,
    /// The body: the sealed audit line.
    pub line: String,
}

/// An OTLP/HTTP JSON logs receiver on 127.0.0.1 that can be stopped and
/// started again on the same port.
pub struct Collector {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub requests: Arc<Mutex<u64>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Collector {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let mut c = Self {
            addr,
            received: Arc::default(),
            requests: Arc::default(),
            stop: Arc::default(),
            thread: None,
        };
        c.serve(listener);
        c
    }

    /// Stop accepting: the port refuses connections until `restart`.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn restart(&mut self) {
        let listener =
            TcpListener::bind(self.addr).unwrap_or_else(|e| panic!("rebind {}: {e}", self.addr));
        self.stop.store(false, Ordering::Relaxed);
        self.serve(listener);
    }

    pub fn seqs(&self) -> Vec<u64> {
        self.received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|r| r.seq)
            .collect()
    }

    fn serve(&mut self, listener: TcpListener) {
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{e}"));
        let (stop, received, requests) = (
            self.stop.clone(),
            self.received.clone(),
            self.requests.clone(),
        );
        self.thread = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = handle(stream, &received, &requests);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }));
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop();
    }
}

fn handle(
    stream: TcpStream,
    received: &Mutex<Vec<Received>>,
    requests: &Mutex<u64>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut length = 0usize;
    let mut first = String::new();
    reader.read_line(&mut first)?;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    if first.is_empty() {
        return Ok(()); // connected and closed without a request
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    assert!(
        first.starts_with("POST /v1/logs "),
        "collector got {first:?}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("collector: body is not JSON: {e}"));
    let mut got = Vec::new();
    for rl in doc["resourceLogs"].as_array().into_iter().flatten() {
        for sl in rl["scopeLogs"].as_array().into_iter().flatten() {
            for rec in sl["logRecords"].as_array().into_iter().flatten() {
                let seq = rec["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["key"] == "palisade.seq")
                    .and_then(|a| a["value"]["intValue"].as_str())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("log record without palisade.seq: {rec}"));
                let line = rec["body"]["stringValue"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                got.push(Received { seq, line });
            }
        }
    }
    received
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .extend(got);
    *requests
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
    let mut stream = stream;
    stream.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )?;
    stream.flush()
}
