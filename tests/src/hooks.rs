//! HTTP receivers for approval notifications (Slack, Teams, webhooks):
//! each records every request (path, headers, body) and answers with the
//! next status of its script (the last one repeats), or holds requests
//! open until released (a receiver that hangs).

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

#[derive(Clone, Debug)]
pub struct Hit {
    pub method: String,
    pub target: String,
    /// Lowercase names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Hit {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

pub struct HookServer {
    pub addr: SocketAddr,
    pub hits: Arc<Mutex<Vec<Hit>>>,
    /// Requests read and not answered (hanging receivers).
    pub held: Arc<AtomicUsize>,
    release: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HookServer {
    /// Answer with `statuses` in turn (the last repeats); an empty script
    /// holds every request open until `release` or drop.
    pub fn start(ip: &str, statuses: &[u16]) -> Self {
        let listener = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let held: Arc<AtomicUsize> = Arc::default();
        let release: Arc<AtomicBool> = Arc::default();
        let stop: Arc<AtomicBool> = Arc::default();
        let script = statuses.to_vec();
        let (h, he, r, s) = (hits.clone(), held.clone(), release.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0usize;
            while !s.load(Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let status = if script.is_empty() {
                    None
                } else {
                    Some(script[n.min(script.len() - 1)])
                };
                n += 1;
                let (h, he, r, s) = (h.clone(), he.clone(), r.clone(), s.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, status, &h, &he, &r, &s);
                });
            }
        });
        Self {
            addr,
            hits,
            held,
            release,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Let held requests go (they are answered 200).
    pub fn release(&self) {
        self.release.store(true, Ordering::Relaxed);
    }
}

impl Drop for HookServer {
    fn drop(&mut self) {
        self.release.store(true, Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    stream: TcpStream,
    status: Option<u16>,
    hits: &Mutex<Vec<Hit>>,
    held: &AtomicUsize,
    release: &AtomicBool,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    if first.is_empty() {
        return Ok(());
    }
    let mut parts = first.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    hits.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Hit {
            method,
            target,
            headers,
            body,
        });
    let code = match status {
        Some(c) => c,
        None => {
            held.fetch_add(1, Ordering::Relaxed);
            while !release.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            held.fetch_sub(1, Ordering::Relaxed);
            200
        }
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {code} X\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    )?;
    stream.flush()
}
