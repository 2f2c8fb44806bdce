//! One HTTP/1.1 connection of the data listener.
//!
//! hyper can hold any HTTP/1.1 conversation, and on the data plane it was the largest cost
//! left in user space: about 1.5 µs of CPU per request, where the decision takes 0.3 µs and
//! the kernel's loopback round trip about 3.4 µs (`scripts/bench-http`, perf). So the
//! conversation a rate limiter lives on, keep-alive `POST /v1/check` requests with a
//! `Content-Length` body (and reservations with their commits, which come as often), is
//! answered here straight from the read buffer: httparse reads
//! the head, [`check::evaluate`] decides, and every answer to what one read brought goes
//! out in one write (pipelined requests too). In callgrind this halved the instructions
//! per check (about 29 500 to 14 000–15 000).
//!
//! The first request of any other shape (another path or method, HTTP/1.0, a chunked body,
//! `Expect`, `Upgrade`, a body over the limit, a head that is malformed or over
//! [`MAX_OWN_HEAD`]) hands the connection, with the bytes already read, to hyper, which
//! serves it from there on with the data listener's settings and service
//! ([`super::hyper_side::dispatch`]). Parsing is httparse's; only the framing of this one
//! shape is done here.

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use bytes::{Buf, BytesMut};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Sleep;
use tollgate_core::Decision;

use super::check::{self, CheckHeaders, Outcome};
use super::holds::{self, Held};
use super::hyper_side::HEADER_READ_TIMEOUT;
use super::request_id::{REQUEST_ID, RequestId};
use super::{MAX_BODY_BYTES, render};
use crate::listener::Connection;
use crate::state::AppState;

/// The address of the connection's peer, in each request's extensions on the hyper side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// What a connection runs over: a TCP stream, with TLS or without (or, in tests and fuzzing,
/// an in-memory pipe).
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for T {}

/// Largest request head answered here; longer ones go to hyper, which allows 64 KiB.
pub const MAX_OWN_HEAD: usize = 16 * 1024;
/// Most header fields in a request answered here; more go to hyper.
const MAX_OWN_HEADERS: usize = 32;
/// Room kept free in the read buffer before each read.
const READ_ROOM: usize = 4 * 1024;

/// A data-listener connection: answered here until a request needs hyper.
pub struct DataConnection {
    served: Pin<Box<dyn Future<Output = io::Result<()>> + Send>>,
    stopping: Arc<AtomicBool>,
}

impl DataConnection {
    /// Serves `io`: checks here, anything else through `dispatch` on hyper (with `http`'s
    /// settings) once the first such request arrives. A client gets at least
    /// [`HEADER_READ_TIMEOUT`] (at most twice that) to send each request head, the first
    /// included.
    pub fn new(
        io: impl Transport,
        peer: Option<SocketAddr>,
        state: Arc<AppState>,
        router: Router,
        http: http1::Builder,
    ) -> Self {
        let stopping = Arc::new(AtomicBool::new(false));
        let served = Box::pin(serve(io, peer, state, router, http, stopping.clone()));
        Self { served, stopping }
    }
}

impl Future for DataConnection {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.served.as_mut().poll(cx)
    }
}

impl Connection for DataConnection {
    type Error = io::Error;

    fn graceful_shutdown(self: Pin<&mut Self>) {
        // Seen on the next poll, which the accept loop makes right after this call.
        self.stopping.store(true, Ordering::Relaxed);
    }
}

/// What this loop answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnRoute<'b> {
    /// `POST /v1/check`.
    Check,
    /// `POST /v1/reservations`.
    Reserve,
    /// `POST /v1/reservations/{id}/commit`, with the id (32 hex digits).
    Commit(&'b str),
}

impl<'b> OwnRoute<'b> {
    fn of(path: &'b str) -> Option<Self> {
        match path {
            "/v1/check" => Some(Self::Check),
            "/v1/reservations" => Some(Self::Reserve),
            _ => {
                let id = path
                    .strip_prefix("/v1/reservations/")?
                    .strip_suffix("/commit")?;
                (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then_some(Self::Commit(id))
            }
        }
    }
}

/// A request this loop answers, once `head + body` bytes are in.
#[derive(Debug)]
struct OwnCheck<'b> {
    /// What it asks.
    route: OwnRoute<'b>,
    /// Length of the request head.
    head: usize,
    /// Length of the body (`Content-Length`).
    body: usize,
    /// Whether the client asked to close the connection after the answer.
    close: bool,
    /// The headers a check reads.
    headers: CheckHeaders<'b>,
}

/// What the start of the read buffer holds.
enum Head<'b> {
    /// A check answered here.
    Check(OwnCheck<'b>),
    /// Not a whole head yet.
    Partial,
    /// A request for hyper.
    Other,
}

/// Reads the request head at the start of `buf`.
fn head(buf: &[u8]) -> Head<'_> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_OWN_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    let head = match request.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_OWN_HEAD => return Head::Partial,
        // Too long, too many fields or malformed: hyper answers those (431, 400).
        _ => return Head::Other,
    };
    let route = match request.path.and_then(OwnRoute::of) {
        Some(route) => route,
        None => return Head::Other,
    };
    if head > MAX_OWN_HEAD || request.version != Some(1) || request.method != Some("POST") {
        return Head::Other;
    }
    let mut headers = CheckHeaders::default();
    let (mut body, mut close) = (None, false);
    for field in request.headers.iter() {
        let name = field.name.as_bytes();
        let value = field.value;
        if name.eq_ignore_ascii_case(b"content-length") {
            match (body, content_length(value)) {
                (None, Some(n)) if n <= MAX_BODY_BYTES => body = Some(n),
                // Repeated, unparsable or over the limit: hyper's rules and answers apply.
                _ => return Head::Other,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            return Head::Other;
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= value
                .split(|&b| b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"));
        } else if name.eq_ignore_ascii_case(b"content-type") {
            headers.content_type.get_or_insert(value);
        } else if name.eq_ignore_ascii_case(b"authorization") {
            headers.authorization.get_or_insert(value);
        } else if name.eq_ignore_ascii_case(b"x-request-id") {
            headers.request_id.get_or_insert(value);
        } else if name.eq_ignore_ascii_case(b"traceparent") {
            headers.trace.traceparent.get_or_insert(value);
        } else if name.eq_ignore_ascii_case(b"tracestate") {
            headers.trace.tracestate.get_or_insert(value);
        }
    }
    Head::Check(OwnCheck {
        route,
        head,
        body: body.unwrap_or(0),
        close,
        headers,
    })
}

/// A `Content-Length` value: decimal digits only.
fn content_length(value: &[u8]) -> Option<usize> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0usize, |n, &d| n * 10 + usize::from(d - b'0')),
    )
}

/// Appends `response` as HTTP/1.1: status line, its headers, then [`end_head`].
fn write_response(out: &mut Vec<u8>, response: &http::Response<Bytes>, close: bool) {
    let status = response.status();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in response.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    end_head(out, response.body(), close);
}

/// Appends the 200 answer to a decision, as [`render::decision`] and [`check::answer`]
/// would make it, without building a header map. `body` is scratch room.
fn write_decision(
    out: &mut Vec<u8>,
    body: &mut Vec<u8>,
    decision: &Decision,
    id: &RequestId,
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    render::decision_head(out, decision);
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\r\n");
    body.clear();
    render::decision_body(body, decision);
    end_head(out, body, close);
}

/// Appends a 200 JSON answer whose body `write` appends.
fn out_json(
    out: &mut Vec<u8>,
    body: &mut Vec<u8>,
    id: &RequestId,
    close: bool,
    write: impl FnOnce(&mut Vec<u8>),
) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-request-id: ");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\r\n");
    body.clear();
    write(body);
    end_head(out, body, close);
}

/// Appends the 200 answer to a reservation, as [`write_decision`] does for a check.
fn write_held(out: &mut Vec<u8>, body: &mut Vec<u8>, held: &Held, id: &RequestId, close: bool) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    render::decision_head(out, &held.decision);
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\r\n");
    body.clear();
    held.body(body);
    end_head(out, body, close);
}

/// Appends `content-length`, `date`, `connection: close` when this answer is the last,
/// the blank line and `body`.
fn end_head(out: &mut Vec<u8>, body: &[u8], close: bool) {
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\ndate: ");
    date::append(out);
    if close {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// The connection's loop: answer what was read, write, read more; see the module docs.
async fn serve(
    mut io: impl Transport,
    peer: Option<SocketAddr>,
    state: Arc<AppState>,
    router: Router,
    http: http1::Builder,
    stopping: Arc<AtomicBool>,
) -> io::Result<()> {
    let mut input = BytesMut::with_capacity(2 * READ_ROOM);
    let mut output = Vec::with_capacity(1024);
    let mut scratch = Vec::with_capacity(512);
    let mut clock = HeadClock::new(HEADER_READ_TIMEOUT);
    loop {
        // Answer every whole request read so far.
        let mut close = false;
        let mut handover = false;
        let mut waiting_for_head = true;
        while !input.is_empty() {
            let request = match head(&input) {
                Head::Check(request) => request,
                Head::Partial => break,
                Head::Other => {
                    handover = true;
                    break;
                }
            };
            let end = request.head + request.body;
            if input.len() < end {
                input.reserve(end - input.len());
                waiting_for_head = false;
                break;
            }
            let body = &input[request.head..end];
            close = request.close || stopping.load(Ordering::Relaxed);
            let refused = match request.route {
                OwnRoute::Check => {
                    let (id, outcome) = check::evaluate(&state, request.headers, Ok(body)).await;
                    match outcome {
                        Outcome::Decided(decision) => {
                            write_decision(&mut output, &mut scratch, &decision, &id, close);
                            None
                        }
                        Outcome::Refused(response) => Some((response, id)),
                    }
                }
                OwnRoute::Reserve => {
                    let id = RequestId::from_header(request.headers.request_id);
                    let route = holds::HoldRoute::Reserve;
                    match holds::hold_answer(&state, request.headers, &id, body, route).await {
                        Ok(held) => {
                            write_held(&mut output, &mut scratch, &held, &id, close);
                            None
                        }
                        Err(response) => Some((response, id)),
                    }
                }
                OwnRoute::Commit(hold) => {
                    let id = RequestId::from_header(request.headers.request_id);
                    match holds::commit_answer(&state, request.headers, hold, body).await {
                        Ok(settled) => {
                            out_json(&mut output, &mut scratch, &id, close, |b| settled.body(b));
                            None
                        }
                        Err(response) => Some((response, id)),
                    }
                }
            };
            if let Some((mut response, id)) = refused {
                response
                    .headers_mut()
                    .insert(REQUEST_ID.clone(), id.header_value());
                write_response(&mut output, &response, close);
            }
            input.advance(end);
            clock.progress();
            if close {
                break;
            }
        }
        if !output.is_empty() {
            io.write_all(&output).await?;
            output.clear();
        }
        if close {
            return io.shutdown().await;
        }
        if handover {
            return hand_over(io, peer, input, state, router, http, stopping).await;
        }
        // Wait for more: a new request (unless stopping), or the rest of one.
        input.reserve(READ_ROOM);
        let read = poll_fn(|cx| {
            if input.is_empty() && stopping.load(Ordering::Relaxed) {
                return Poll::Ready(Ok(None));
            }
            if clock.expired(cx, waiting_for_head) {
                return Poll::Ready(Ok(None));
            }
            tokio_util::io::poll_read_buf(Pin::new(&mut io), cx, &mut input).map_ok(Some)
        })
        .await?;
        match read {
            // The client closed, timed out on a head, or the listener is stopping.
            None | Some(0) => return Ok(()),
            Some(_) => {}
        }
    }
}

/// Serves the rest of the connection on hyper, starting with `read`, the bytes already
/// read and not answered.
async fn hand_over(
    io: impl Transport,
    peer: Option<SocketAddr>,
    read: BytesMut,
    state: Arc<AppState>,
    router: Router,
    http: http1::Builder,
    stopping: Arc<AtomicBool>,
) -> io::Result<()> {
    let service = service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        if let Some(peer) = peer {
            // Forward auth reads the client's address from here.
            request.extensions_mut().insert(PeerAddr(peer));
        }
        super::hyper_side::dispatch(state.clone(), router.clone(), request)
    });
    let connection = http.serve_connection(TokioIo::new(Replayed { read, io }), service);
    let mut connection = std::pin::pin!(connection);
    let mut told = false;
    poll_fn(|cx| {
        if !told && stopping.load(Ordering::Relaxed) {
            told = true;
            connection.as_mut().graceful_shutdown();
        }
        connection.as_mut().poll(cx)
    })
    .await
    .map_err(io::Error::other)
}

/// A stream whose first bytes were already read: they are read again, then the stream.
struct Replayed<S> {
    read: BytesMut,
    io: S,
}

impl<S: Transport> AsyncRead for Replayed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.read.len().min(buf.remaining());
        buf.put_slice(&self.read[..n]);
        self.read.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: Transport> AsyncWrite for Replayed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The deadline for request heads, without a timer operation per request: one timer per
/// connection fires every `timeout`; a connection that completed no request since the last
/// firing and is still waiting for a head is closed. A head thus gets between one and two
/// timeouts; hyper gives exactly one, at the price of a timer per request.
struct HeadClock {
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    /// Whether the timer holds this task's waker since its last reset; polling it again
    /// would only register the same waker again.
    armed: bool,
    requests: u64,
    requests_at_last_firing: u64,
}

impl HeadClock {
    fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            timer: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
            requests: 0,
            requests_at_last_firing: 0,
        }
    }

    /// One more request answered.
    fn progress(&mut self) {
        self.requests += 1;
    }

    /// Whether the connection should close now; otherwise the timer is armed in `cx`.
    /// The connection is served by one task, so the waker registered once stays right.
    fn expired(&mut self, cx: &mut Context<'_>, waiting_for_head: bool) -> bool {
        loop {
            if self.armed && !self.timer.is_elapsed() {
                return false;
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                self.armed = true;
                return false;
            }
            if waiting_for_head && self.requests == self.requests_at_last_firing {
                return true;
            }
            self.requests_at_last_firing = self.requests;
            let next = tokio::time::Instant::now() + self.timeout;
            self.timer.as_mut().reset(next);
            self.armed = false;
        }
    }
}

/// The `Date` header's value, formatted once a second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }

    /// Appends the current date in HTTP's format (`Sun, 06 Nov 1994 08:49:37 GMT`).
    pub fn append(out: &mut Vec<u8>) {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        CACHED.with_borrow_mut(|(cached_second, text)| {
            if *cached_second != second {
                *cached_second = second;
                *text = httpdate::fmt_http_date(now);
            }
            out.extend_from_slice(text.as_bytes());
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_head(raw: &[u8]) -> (usize, usize, bool, CheckHeaders<'_>) {
        match head(raw) {
            Head::Check(r) => (r.head, r.body, r.close, r.headers),
            Head::Partial => panic!("partial: {}", String::from_utf8_lossy(raw)),
            Head::Other => panic!("other: {}", String::from_utf8_lossy(raw)),
        }
    }

    #[test]
    fn a_plain_check_is_answered_here() {
        let raw = b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 12\r\nX-Request-Id: r-1\r\nX-Request-Id: r-2\r\nAuthorization: Bearer t\r\n\r\n{\"domain\":1}";
        let (head, body, close, headers) = check_head(raw);
        assert_eq!(head + body, raw.len());
        assert_eq!(body, 12);
        assert!(!close);
        assert_eq!(headers.content_type, Some(&b"application/json"[..]));
        assert_eq!(
            headers.request_id,
            Some(&b"r-1"[..]),
            "the first value counts"
        );
        assert_eq!(headers.authorization, Some(&b"Bearer t"[..]));
        let (_, body, close, _) =
            check_head(b"POST /v1/check HTTP/1.1\r\nconnection: keep-alive, Close\r\n\r\n");
        assert_eq!(body, 0);
        assert!(close);
    }

    #[test]
    fn heads_cut_short_wait_for_more() {
        let raw = b"POST /v1/check HTTP/1.1\r\nContent-Length: 2\r\n\r\n";
        for end in 0..raw.len() {
            assert!(matches!(head(&raw[..end]), Head::Partial), "{end}");
        }
        let long = [
            b"POST /v1/check HTTP/1.1\r\nx: ".as_slice(),
            &[b'a'; MAX_OWN_HEAD],
        ]
        .concat();
        assert!(matches!(head(&long), Head::Other));
    }

    #[test]
    fn every_other_shape_goes_to_hyper() {
        for raw in [
            &b"GET /v1/check HTTP/1.1\r\n\r\n"[..],
            b"POST /healthz HTTP/1.1\r\n\r\n",
            b"POST /v1/check?x=1 HTTP/1.1\r\n\r\n",
            b"POST /v1/check HTTP/1.0\r\n\r\n",
            b"POST /v1/check HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /v1/check HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
            b"POST /v1/check HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
            b"POST /v1/check HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
            b"POST /v1/check HTTP/1.1\r\nContent-Length: +2\r\n\r\n",
            b"POST /v1/check HTTP/1.1\r\nContent-Length: 65537\r\n\r\n",
            b"POST /v1/check HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST /v1/check HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert!(
                matches!(head(raw), Head::Other),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        let many: Vec<u8> = [
            b"POST /v1/check HTTP/1.1\r\n".as_slice(),
            &b"x: y\r\n".repeat(MAX_OWN_HEADERS + 1),
            b"\r\n",
        ]
        .concat();
        assert!(matches!(head(&many), Head::Other));
    }

    #[test]
    fn content_lengths_are_plain_decimals() {
        assert_eq!(content_length(b"0"), Some(0));
        assert_eq!(content_length(b"65536"), Some(65536));
        for bad in [
            &b""[..],
            b" 1",
            b"1 ",
            b"-1",
            b"0x10",
            b"12345678901234567890",
        ] {
            assert_eq!(
                content_length(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn responses_are_framed_with_length_date_and_close() {
        let mut response = http::Response::new(Bytes::from_static(b"{}"));
        *response.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
        response.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        let mut out = Vec::new();
        write_response(&mut out, &response, true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: 2\r\ndate: "), "{text}");
        assert!(
            text.ends_with(" GMT\r\nconnection: close\r\n\r\n{}"),
            "{text}"
        );
        let mut fields = [httparse::EMPTY_HEADER; 8];
        let mut parsed = httparse::Response::new(&mut fields);
        assert_eq!(
            parsed.parse(text.as_bytes()).unwrap(),
            httparse::Status::Complete(text.len() - 2)
        );
    }

    /// Whether `clock` says the connection should close, polled once.
    async fn expired(clock: &mut HeadClock, waiting_for_head: bool) -> bool {
        poll_fn(|cx| Poll::Ready(clock.expired(cx, waiting_for_head))).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_waiting_too_long_for_a_head_is_closed() {
        let timeout = Duration::from_secs(10);
        let mut clock = HeadClock::new(timeout);
        assert!(!expired(&mut clock, true).await);
        tokio::time::advance(timeout - Duration::from_millis(1)).await;
        assert!(!expired(&mut clock, true).await);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(
            expired(&mut clock, true).await,
            "no request for a whole timeout"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn answered_requests_and_bodies_in_flight_keep_a_connection() {
        let timeout = Duration::from_secs(10);
        let mut clock = HeadClock::new(timeout);
        assert!(!expired(&mut clock, true).await);
        tokio::time::advance(timeout / 2).await;
        clock.progress();
        tokio::time::advance(timeout / 2).await;
        assert!(!expired(&mut clock, true).await, "a request was answered");
        // A body still arriving is never cut short, however long it takes.
        tokio::time::advance(timeout).await;
        assert!(!expired(&mut clock, false).await);
        // Once the body is in, the next head gets a timeout of its own.
        tokio::time::advance(timeout).await;
        assert!(expired(&mut clock, true).await);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_get_a_verdict_within_the_limits(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            if let Head::Check(OwnCheck { head: h, body, .. }) = head(&raw) {
                proptest::prop_assert!(h <= raw.len() && h <= MAX_OWN_HEAD);
                proptest::prop_assert!(body <= MAX_BODY_BYTES);
            }
        }

        #[test]
        fn a_check_cut_anywhere_waits_for_the_rest(user in "[a-z0-9]{1,40}", id in "[!-~]{1,60}", cut in 0usize..400) {
            let body = format!(r#"{{"domain":"shop","descriptors":[{{"entries":[{{"key":"user","value":"{user}"}}]}}]}}"#);
            let raw = format!(
                "POST /v1/check HTTP/1.1\r\nhost: x\r\nx-request-id: {id}\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let raw = raw.as_bytes();
            let Head::Check(OwnCheck { head: h, body: b, headers, .. }) = head(raw) else {
                return Err(proptest::test_runner::TestCaseError::fail("a whole check"));
            };
            proptest::prop_assert_eq!(h + b, raw.len());
            proptest::prop_assert_eq!(headers.request_id, Some(id.as_bytes()));
            let cut = cut.min(raw.len());
            match head(&raw[..cut]) {
                Head::Partial => proptest::prop_assert!(cut < h),
                Head::Check(OwnCheck { head: h2, body: b2, .. }) => proptest::prop_assert!(cut >= h && h2 == h && b2 == b),
                Head::Other => return Err(proptest::test_runner::TestCaseError::fail("cut became other")),
            }
        }
    }
}
