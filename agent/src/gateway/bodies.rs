//! Response bodies on their way to the agent: counted for the audit record
//! (which is written when the body ends, so streams are recorded with their
//! real size), and scrubbed of the service's secret.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::{
    budget::Reserved,
    http::{Body, BoxError},
    spelled,
};

/// How a body ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    Complete,
    /// The upstream failed mid-stream.
    Failed(String),
    /// The agent went away before the end.
    Aborted,
}

type Done = Box<dyn FnOnce(u64, End) + Send>;

/// Counts data bytes and reports once, at the end (or when dropped).
pub struct Counted {
    inner: Body,
    bytes: u64,
    done: Option<Done>,
}

impl Counted {
    pub fn new(inner: Body, done: impl FnOnce(u64, End) + Send + 'static) -> Self {
        Self {
            inner,
            bytes: 0,
            done: Some(Box::new(done)),
        }
    }

    fn finish(&mut self, end: End) {
        if let Some(done) = self.done.take() {
            done(self.bytes, end);
        }
    }
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                this.finish(End::Failed(e.to_string()));
                Poll::Ready(Some(Err(e)))
            }
            None => {
                this.finish(End::Complete);
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let end = if self.inner.is_end_stream() {
            End::Complete
        } else {
            End::Aborted
        };
        self.finish(end);
    }
}

/// An answer read whole, given to the agent a slice at a time, that keeps
/// its place in a memory budget until its last slice has been taken.
/// (Handed to hyper whole, it would sit in hyper's write buffer while the
/// body, and its place, were gone at once; a slice at a time, hyper asks
/// for the next only when it has written the last.)
pub struct Held {
    rest: Bytes,
    reserved: Option<Reserved>,
}

/// What `Held` gives hyper at a time.
const HELD_SLICE: usize = 64 * 1024;

impl Held {
    pub fn new(data: Bytes, reserved: Reserved) -> Self {
        Self {
            rest: data,
            reserved: Some(reserved),
        }
    }
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.rest.is_empty() {
            self.reserved = None;
            return Poll::Ready(None);
        }
        let n = self.rest.len().min(HELD_SLICE);
        let slice = self.rest.split_to(n);
        if self.rest.is_empty() {
            self.reserved = None;
        }
        Poll::Ready(Some(Ok(Frame::data(slice))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
}

/// A body read whole, within a size limit.
pub enum Collected {
    Whole(Bytes),
    TooLarge,
    Failed(String),
}

/// Read `body` to its end, refusing more than `max` bytes. (A plain loop
/// with a boxed future rather than `Limited`, whose error conversion trips
/// the compiler's `Send` analysis inside the layers.)
pub fn collect(mut body: Body, max: usize) -> Pin<Box<dyn Future<Output = Collected> + Send>> {
    use http_body_util::BodyExt;
    Box::pin(async move {
        let mut buf = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Ok(d) = f.into_data() {
                        if buf.len() + d.len() > max {
                            return Collected::TooLarge;
                        }
                        buf.extend_from_slice(&d);
                    }
                }
                Err(e) => return Collected::Failed(e.to_string()),
            }
        }
        Collected::Whole(buf.freeze())
    })
}

/// What a secret becomes in a response.
pub const REDACTED: &[u8] = b"[redacted by palisade]";

/// Replaces every occurrence of a secret in a byte stream, across chunk
/// boundaries (it holds back a fixed tail, `spelled::reach` of the
/// secret's length).
pub struct Scrub {
    inner: Body,
    secret: Bytes,
    carry: Vec<u8>,
    /// When what is carried goes out if nothing more arrives, and the
    /// timer for that (made when the stream first waits).
    due_at: Option<tokio::time::Instant>,
    due: Option<Pin<Box<tokio::time::Sleep>>>,
    /// What the upstream sent that is not scrubbed yet, a slice at a time.
    pending: Bytes,
    /// Between slices the task yields, so a large answer the agent had
    /// echoed, however costly to scrub, takes its turn with other
    /// connections instead of holding a runtime worker.
    pause: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// Trailers waiting behind the held-back bytes.
    trailers: Option<Frame<Bytes>>,
    finished: bool,
}

/// Bytes of a stream scrubbed before the task yields.
const SLICE: usize = 8 * 1024;
/// The longest a held-back byte waits for more of the stream.
pub const HOLD_AT_MOST: std::time::Duration = std::time::Duration::from_millis(200);

impl Scrub {
    pub fn new(inner: Body, secret: Bytes) -> Self {
        Self {
            inner,
            secret,
            carry: Vec::new(),
            due_at: None,
            due: None,
            pending: Bytes::new(),
            pause: None,
            trailers: None,
            finished: false,
        }
    }

    /// Bytes held back: room for the secret in any spelling servers write,
    /// so one that a chunk boundary cuts is still whole when the next
    /// chunk comes.
    fn hold(&self) -> usize {
        spelled::reach(self.secret.len())
    }

    /// Scrub `data` (after what was carried); returns what may be sent.
    /// The last `hold` bytes are held back whatever they are: holding only
    /// what could begin the secret would tell an agent that makes the
    /// upstream echo its guesses, by when each guess reaches it, which
    /// guesses begin the secret.
    fn feed(&mut self, chunk: &[u8]) -> Bytes {
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(chunk);
        let upto = data.len().saturating_sub(self.hold());
        let (out, used, _) = spelled::replace_upto(&data, &self.secret, REDACTED, upto);
        self.carry = data[used..].to_vec();
        if self.carry.is_empty() {
            (self.due_at, self.due) = (None, None);
        } else {
            // Counted from the last arrival, not the first held byte: an
            // upstream that writes the secret a few bytes at a time, with
            // pauses shorter than the hold, must not have it released
            // half-written.
            let at = tokio::time::Instant::now() + HOLD_AT_MOST;
            self.due_at = Some(at);
            if let Some(due) = self.due.as_mut() {
                due.as_mut().reset(at);
            }
        }
        Bytes::from(out)
    }

    /// What was held back, scrubbed: once nothing more will come, or once
    /// the stream has paused for `HOLD_AT_MOST` (a stream that pauses is
    /// not stalled; when that happens depends only on when bytes came).
    fn rest(&mut self) -> Bytes {
        (self.due_at, self.due) = (None, None);
        let data = std::mem::take(&mut self.carry);
        Bytes::from(spelled::replace(&data, &self.secret, REDACTED).0)
    }
}

/// Scrub a whole buffer at once: `None` if the secret is not in it, in any
/// spelling.
pub fn scrub_all(data: &[u8], secret: &[u8]) -> Option<Vec<u8>> {
    let (out, found) = spelled::replace(data, secret, REDACTED);
    found.then_some(out)
}

/// Scrub the secret from header values, and drop any header whose name
/// holds it (names are lower case, so the secret is compared lower-cased).
/// Used for response headers and trailers alike.
pub fn scrub_headers(headers: &mut hyper::HeaderMap, secret: &[u8]) {
    let lower = secret.to_ascii_lowercase();
    let named: Vec<hyper::header::HeaderName> = headers
        .keys()
        .filter(|n| spelled::replace(n.as_str().as_bytes(), &lower, b"").1)
        .cloned()
        .collect();
    for n in named {
        headers.remove(n);
    }
    for v in headers.values_mut() {
        if let Some(clean) = scrub_all(v.as_bytes(), secret) {
            *v = hyper::header::HeaderValue::from_bytes(&clean).unwrap_or_else(|_| {
                hyper::header::HeaderValue::from_static("[redacted by palisade]")
            });
        }
    }
}

/// A trailers frame with the secret scrubbed (HTTP/2 carries trailers to
/// the agent; they are response headers like any other).
fn scrub_trailers(frame: Frame<Bytes>, secret: &[u8]) -> Frame<Bytes> {
    match frame.into_trailers() {
        Ok(mut t) => {
            scrub_headers(&mut t, secret);
            Frame::trailers(t)
        }
        Err(frame) => frame,
    }
}

impl HttpBody for Scrub {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(p) = this.pause.as_mut() {
                ready!(p.as_mut().poll(cx));
                this.pause = None;
            }
            if !this.pending.is_empty() {
                let piece = this.pending.split_to(this.pending.len().min(SLICE));
                let out = this.feed(&piece);
                if !this.pending.is_empty() {
                    this.pause = Some(Box::pin(tokio::task::yield_now()));
                }
                if !out.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                continue;
            }
            if let Some(t) = this.trailers.take() {
                return Poll::Ready(Some(Ok(t)));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            let polled = Pin::new(&mut this.inner).poll_frame(cx);
            if polled.is_pending() {
                // Nothing more yet: what is held goes out when it is due.
                if let Some(at) = this.due_at {
                    let due = this
                        .due
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                    ready!(due.as_mut().poll(cx));
                    return Poll::Ready(Some(Ok(Frame::data(this.rest()))));
                }
                return Poll::Pending;
            }
            match ready!(polled) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.pending = data,
                    // Trailers: scrubbed; what was held back goes first.
                    Err(frame) => {
                        let frame = scrub_trailers(frame, &this.secret);
                        if this.carry.is_empty() {
                            return Poll::Ready(Some(Ok(frame)));
                        }
                        this.trailers = Some(frame);
                        return Poll::Ready(Some(Ok(Frame::data(this.rest()))));
                    }
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    this.finished = true;
                    if this.carry.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(this.rest()))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.carry.is_empty()
            && self.pending.is_empty()
            && self.trailers.is_none()
            && self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn chunked(parts: &[&str]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from(p.to_string()))))
            .collect();
        http_body_util::StreamBody::new(tokio_stream::iter(frames)).boxed_unsync()
    }

    #[tokio::test]
    async fn secrets_are_scrubbed_across_chunks() {
        let body = chunked(&["abc sk_li", "ve_123", "45 and sk_live_12345", "!sk_live_1"]);
        let out = Scrub::new(body, Bytes::from_static(b"sk_live_12345"))
            .collect()
            .await
            .unwrap()
            .to_bytes();
        let r = std::str::from_utf8(REDACTED).unwrap();
        assert_eq!(
            String::from_utf8(out.to_vec()).unwrap(),
            format!("abc {r} and {r}!sk_live_1")
        );
        assert_eq!(scrub_all(b"no secret", b"sk"), None);
    }

    #[test]
    fn a_fixed_tail_is_held_back_whatever_it_holds() {
        let secret = Bytes::from_static(b"sk_live_12345");
        let hold = spelled::reach(13);
        let mut s = Scrub::new(chunked(&[]), secret.clone());
        assert_eq!(s.feed(&[b'a'; 300]).len(), 300 - hold);
        // Whether an echoed guess begins the secret changes nothing in
        // what goes out, or when.
        let filler = vec![b'.'; hold];
        for (guess, other) in [
            ("sk_li", "zz_li"),
            ("s", "q"),
            ("sk_live_1234", "sk_live_1239"),
        ] {
            let mut a = Scrub::new(chunked(&[]), secret.clone());
            let mut b = Scrub::new(chunked(&[]), secret.clone());
            let (fa, fb) = (
                a.feed(format!("log: {guess}").as_bytes()),
                b.feed(format!("log: {other}").as_bytes()),
            );
            assert_eq!((fa.len(), fb.len()), (0, 0));
            let (fa, fb) = (a.feed(&filler), b.feed(&filler));
            assert_eq!(fa.len(), fb.len(), "{guess} / {other}");
            assert_eq!(a.rest().len(), b.rest().len());
        }
        // A secret cut by a chunk boundary is still found.
        let mut s = Scrub::new(chunked(&[]), secret);
        let mut out = s.feed(b"x sk_li").to_vec();
        out.extend_from_slice(&s.feed(b"ve_12345 y"));
        out.extend_from_slice(&s.rest());
        assert_eq!(out, [b"x ", REDACTED, b" y"].concat());
    }

    #[tokio::test]
    async fn a_large_chunk_is_scrubbed_a_slice_at_a_time() {
        let big = format!("{}sk_live_12345{}", "a".repeat(20_000), "b".repeat(20_000));
        let body = chunked(&[big.as_str()]);
        let mut s = Scrub::new(body, Bytes::from_static(b"sk_live_12345"));
        let mut out = Vec::new();
        let mut frames = 0;
        while let Some(f) = s.frame().await {
            let data = f.unwrap().into_data().unwrap();
            assert!(data.len() <= SLICE + REDACTED.len(), "{}", data.len());
            out.extend_from_slice(&data);
            frames += 1;
        }
        assert!(frames >= 5, "{frames}");
        let want = format!(
            "{}{}{}",
            "a".repeat(20_000),
            std::str::from_utf8(REDACTED).unwrap(),
            "b".repeat(20_000)
        );
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    #[tokio::test]
    async fn what_is_held_goes_out_when_the_stream_pauses() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx))
            .boxed_unsync();
        let mut s = Scrub::new(body, Bytes::from_static(b"sk_live_12345"));
        tx.send(Ok(Frame::data(Bytes::from_static(b"data: sk_li\n\n"))))
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let frame = tokio::time::timeout(std::time::Duration::from_secs(5), s.frame())
            .await
            .expect("the held bytes went out before the stream ended")
            .unwrap()
            .unwrap();
        assert_eq!(
            frame.into_data().unwrap(),
            Bytes::from_static(b"data: sk_li\n\n")
        );
        assert!(started.elapsed() >= HOLD_AT_MOST - std::time::Duration::from_millis(20));
        drop(tx);
        assert!(s.frame().await.is_none());
    }

    #[tokio::test]
    async fn a_secret_written_a_few_bytes_at_a_time_is_never_released_half_written() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(64);
        let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx))
            .boxed_unsync();
        let secret = "sk_live_1234567890abcdef";
        let writer = tokio::spawn(async move {
            let text = format!("auth: {secret}\n");
            for piece in text.as_bytes().chunks(4) {
                tx.send(Ok(Frame::data(Bytes::copy_from_slice(piece))))
                    .await
                    .unwrap();
                // Shorter than the hold, but the whole secret takes longer.
                tokio::time::sleep(std::time::Duration::from_millis(60)).await;
            }
        });
        let out = Scrub::new(body, Bytes::from_static(secret.as_bytes()))
            .collect()
            .await
            .unwrap()
            .to_bytes();
        writer.await.unwrap();
        assert_eq!(
            String::from_utf8(out.to_vec()).unwrap(),
            format!("auth: {}\n", std::str::from_utf8(REDACTED).unwrap())
        );
    }

    #[tokio::test]
    async fn trailers_and_header_names_are_scrubbed() {
        let mut t = hyper::HeaderMap::new();
        t.insert("x-auth", "Bearer sk_live_12345".parse().unwrap());
        t.insert("sk_live_12345-x", "1".parse().unwrap());
        t.insert("grpc-status", "0".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from("ok sk_li"))),
            Ok(Frame::trailers(t)),
        ];
        let body = http_body_util::StreamBody::new(tokio_stream::iter(frames)).boxed_unsync();
        let out = Scrub::new(body, Bytes::from_static(b"sk_live_12345"))
            .collect()
            .await
            .unwrap();
        let t = out.trailers().cloned().unwrap();
        assert_eq!(t["x-auth"], "Bearer [redacted by palisade]");
        assert_eq!(t["grpc-status"], "0");
        assert_eq!(
            t.len(),
            2,
            "the header named after the secret is dropped: {t:?}"
        );
        assert_eq!(out.to_bytes(), Bytes::from("ok sk_li"));
        // A secret with capitals still names a (lower-case) header.
        let mut h = hyper::HeaderMap::new();
        h.insert("ab-sk_live_x", "1".parse().unwrap());
        scrub_headers(&mut h, b"SK_Live_X");
        assert!(h.is_empty());
    }

    #[tokio::test]
    async fn a_held_answer_keeps_its_place_until_its_last_slice_is_taken() {
        let budget = std::sync::Arc::new(super::super::budget::BodyBudget::default());
        let place = budget.reserve("a", 100, 100, 100).unwrap();
        let mut held = Held::new(Bytes::from(vec![b'x'; 3 * HELD_SLICE]), place);
        assert!(budget.reserve("a", 1, 100, 100).is_none(), "taken");
        let first = held.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first.len(), HELD_SLICE);
        assert!(budget.reserve("a", 1, 100, 100).is_none(), "still held");
        let _ = held.frame().await;
        let _ = held.frame().await;
        assert!(held.is_end_stream());
        assert!(budget.reserve("a", 100, 100, 100).is_some(), "given back");
        assert!(held.frame().await.is_none());
    }

    #[tokio::test]
    async fn counted_reports_once() {
        let (tx, rx) = std::sync::mpsc::channel();
        let body = Counted::new(chunked(&["ab", "cde"]), move |n, end| {
            tx.send((n, end)).unwrap();
        });
        let _ = body.collect().await.unwrap();
        assert_eq!(rx.recv().unwrap(), (5, End::Complete));
        assert!(rx.try_recv().is_err());
    }
}
