//! `tollgate bench`: a load generator for Tollgate's front ends (HTTP, gRPC, RESP), with
//! closed and open loops, an HDR histogram of latencies and the server's CPU per decision.
//!
//! HTTP and RESP requests are written as bytes prepared once per connection and answers
//! are framed with `httparse` and `redis-protocol`, not through a general client: a load
//! generator on the same two cores as the server must spend as little as it can per
//! request (what wrk and redis-benchmark do too). gRPC goes through `tollgate-client`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cli::{BenchArgs, BenchProtocol};

/// A value with `{key}` in it, cut around the placeholders.
#[derive(Debug, Clone)]
struct Template(Vec<Option<String>>);

impl Template {
    fn parse(text: &str) -> Self {
        let mut parts = Vec::new();
        for (i, piece) in text.split("{key}").enumerate() {
            if i > 0 {
                parts.push(None);
            }
            if !piece.is_empty() {
                parts.push(Some(piece.to_owned()));
            }
        }
        Self(parts)
    }

    fn render(&self, key: u64, out: &mut String) {
        for part in &self.0 {
            match part {
                Some(text) => out.push_str(text),
                None => out.push_str(itoa::Buffer::new().format(key)),
            }
        }
    }
}

/// What every request asks: descriptors of (key, value template) entries.
#[derive(Debug, Clone)]
struct Workload {
    domain: String,
    descriptors: Vec<Vec<(String, Template)>>,
    keys: u64,
    /// `CL.THROTTLE` parameters instead of `TG.CHECK`.
    cell: Option<[u64; 3]>,
    token: Option<String>,
}

impl Workload {
    fn of(args: &BenchArgs) -> anyhow::Result<Self> {
        let mut descriptors = Vec::new();
        for text in &args.descriptors {
            let entries = super::descriptor_pairs(text)?
                .into_iter()
                .map(|(key, value)| (key.to_owned(), Template::parse(value)))
                .collect();
            descriptors.push(entries);
        }
        let cell = match &args.cell {
            None => None,
            Some(text) => {
                let numbers: Vec<u64> = text
                    .split(',')
                    .map(|n| n.trim().parse())
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("--cell '{text}': expected BURST,COUNT,PERIOD"))?;
                let [burst, count, period] = numbers[..] else {
                    bail!("--cell '{text}': expected BURST,COUNT,PERIOD");
                };
                Some([burst, count, period])
            }
        };
        Ok(Self {
            domain: args.domain.clone(),
            descriptors,
            keys: args.keys.max(1),
            cell,
            token: args.token.clone(),
        })
    }

    /// The JSON body of `POST /v1/check` for `key`.
    fn json(&self, key: u64, out: &mut String) {
        let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
        out.push_str("{\"domain\":");
        out.push_str(&quoted(&self.domain));
        out.push_str(",\"descriptors\":[");
        let mut value = String::new();
        for (i, d) in self.descriptors.iter().enumerate() {
            out.push_str(if i == 0 {
                "{\"entries\":["
            } else {
                ",{\"entries\":["
            });
            for (j, (k, v)) in d.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                value.clear();
                v.render(key, &mut value);
                out.push_str("{\"key\":");
                out.push_str(&quoted(k));
                out.push_str(",\"value\":");
                out.push_str(&quoted(&value));
                out.push('}');
            }
            out.push_str("]}");
        }
        out.push_str("]}");
    }

    /// One HTTP/1.1 request for `key`, appended to `out`.
    fn http(&self, host: &str, key: u64, out: &mut Vec<u8>) {
        let mut body = String::with_capacity(128);
        self.json(key, &mut body);
        out.extend_from_slice(b"POST /v1/check HTTP/1.1\r\nhost: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\ncontent-type: application/json\r\n");
        if let Some(token) = &self.token {
            out.extend_from_slice(b"authorization: Bearer ");
            out.extend_from_slice(token.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body.as_bytes());
    }

    /// One RESP command for `key`, appended to `out`.
    fn resp(&self, key: u64, out: &mut Vec<u8>) {
        let mut args: Vec<String> = Vec::with_capacity(16);
        match self.cell {
            Some([burst, count, period]) => {
                args.push("CL.THROTTLE".into());
                args.push(format!("k{key}"));
                args.extend([burst, count, period].map(|n| n.to_string()));
            }
            None => {
                args.extend(["TG.CHECK".into(), self.domain.clone(), "1".into()]);
                for d in &self.descriptors {
                    args.push("DESCRIPTOR".into());
                    args.push(d.len().to_string());
                    for (k, v) in d {
                        args.push(k.clone());
                        let mut value = String::new();
                        v.render(key, &mut value);
                        args.push(value);
                    }
                }
            }
        }
        out.push(b'*');
        out.extend_from_slice(args.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        for a in &args {
            out.push(b'$');
            out.extend_from_slice(a.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    fn check(&self, key: u64) -> tollgate_api::CheckRequest<'static> {
        tollgate_api::CheckRequest {
            domain: self.domain.clone().into(),
            descriptors: self
                .descriptors
                .iter()
                .map(|d| tollgate_api::DescriptorRequest {
                    entries: d
                        .iter()
                        .map(|(k, v)| {
                            let mut value = String::new();
                            v.render(key, &mut value);
                            tollgate_api::EntryRequest {
                                key: k.clone().into(),
                                value: value.into(),
                            }
                        })
                        .collect(),
                    hits: None,
                    limit: None,
                })
                .collect(),
            hits: None,
        }
    }
}

/// One connection to the server.
enum Conn {
    Http {
        stream: TcpStream,
        host: String,
        buf: Vec<u8>,
    },
    Resp {
        stream: TcpStream,
        buf: Vec<u8>,
    },
    /// Boxed: a gRPC client (two service clients over one channel) is several times the
    /// size of a socket and a buffer.
    Grpc(Box<tollgate_client::GrpcCheckClient>),
}

/// How a batch of answers came out.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    allowed: u64,
    denied: u64,
    errors: u64,
}

impl Conn {
    async fn open(
        protocol: BenchProtocol,
        target: &str,
        token: Option<&str>,
    ) -> anyhow::Result<Self> {
        let address = target
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        Ok(match protocol {
            BenchProtocol::Http => {
                let stream = TcpStream::connect(&address).await.with_context(|| {
                    format!("cannot connect to {address} (is `tollgate serve` running?)")
                })?;
                stream.set_nodelay(true)?;
                Self::Http {
                    stream,
                    host: address,
                    buf: Vec::with_capacity(16 * 1024),
                }
            }
            BenchProtocol::Resp => {
                let mut stream = TcpStream::connect(&address).await.with_context(|| {
                    format!(
                        "cannot connect to {address} (is `tollgate serve --resp-addr` running?)"
                    )
                })?;
                stream.set_nodelay(true)?;
                let mut buf = Vec::with_capacity(16 * 1024);
                if let Some(token) = token {
                    let auth = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{token}\r\n", token.len());
                    stream.write_all(auth.as_bytes()).await?;
                    let replies = read_resp(&mut stream, &mut buf, 1).await?;
                    if replies[0] != Reply::Ok {
                        bail!("{address} refused the token");
                    }
                }
                Self::Resp { stream, buf }
            }
            BenchProtocol::Grpc => Self::Grpc(Box::new(
                tollgate_client::GrpcCheckClient::connect(&format!("http://{address}"), token)
                    .await?,
            )),
        })
    }

    /// Sends `keys.len()` requests (pipelined on RESP) and reads their answers: one
    /// verdict per key (`None`: an error answer), appended to `verdicts`.
    async fn round(
        &mut self,
        work: &Workload,
        keys: &[u64],
        out: &mut Vec<u8>,
        verdicts: &mut Vec<Option<bool>>,
    ) -> anyhow::Result<()> {
        match self {
            Self::Http { stream, host, buf } => {
                out.clear();
                work.http(host, keys[0], out);
                stream.write_all(out).await?;
                verdicts.push(read_http(stream, buf).await?);
            }
            Self::Resp { stream, buf } => {
                out.clear();
                for &key in keys {
                    work.resp(key, out);
                }
                stream.write_all(out).await?;
                for reply in read_resp(stream, buf, keys.len()).await? {
                    verdicts.push(match reply {
                        Reply::Decision(allowed) => Some(allowed),
                        _ => None,
                    });
                }
            }
            Self::Grpc(client) if keys.len() == 1 => {
                let answer = client.check(&work.check(keys[0])).await;
                verdicts.push(answer.ok().map(|a| a.allowed));
            }
            Self::Grpc(client) => {
                let checks: Vec<_> = keys.iter().map(|&key| work.check(key)).collect();
                match client.check_stream(&checks).await {
                    Ok(answers) => {
                        verdicts.extend(answers.into_iter().map(|a| a.ok().map(|a| a.allowed)))
                    }
                    Err(_) => verdicts.extend(keys.iter().map(|_| None)),
                }
            }
        }
        Ok(())
    }
}

fn count(tally: &mut Tally, allowed: Option<bool>) {
    match allowed {
        Some(true) => tally.allowed += 1,
        Some(false) => tally.denied += 1,
        None => tally.errors += 1,
    }
}

/// Reads one HTTP/1.1 answer: `Some(allowed)` for a 200, `None` for any other status.
async fn read_http(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<Option<bool>> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 24];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) = response.parse(buf)? {
            let length = (response.headers.iter())
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .context("an answer without content-length")?;
            let code = response.code;
            if buf.len() >= head + length {
                let body = &buf[head..head + length];
                let allowed = (code == Some(200)).then(|| body.starts_with(b"{\"allowed\":true"));
                buf.drain(..head + length);
                return Ok(allowed);
            }
        }
        if stream.read_buf(buf).await? == 0 {
            bail!("the server closed the connection");
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Ok,
    Decision(bool),
    Other,
}

/// Reads `n` RESP replies: a `CL.THROTTLE` or `TG.CHECK` answer's verdict, `+OK`, or
/// anything else (an error).
async fn read_resp(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    n: usize,
) -> anyhow::Result<Vec<Reply>> {
    use redis_protocol::resp2::decode::decode_range;
    use redis_protocol::resp2::types::RangeFrame;
    let mut replies = Vec::with_capacity(n);
    while replies.len() < n {
        let mut used = 0;
        while replies.len() < n {
            match decode_range(&buf[used..]).map_err(|e| anyhow::anyhow!("not RESP: {e:?}"))? {
                Some((frame, len)) => {
                    let base = used;
                    used += len;
                    let integer = |f: &RangeFrame| match f {
                        RangeFrame::Integer(i) => Some(*i),
                        _ => None,
                    };
                    replies.push(match &frame {
                        RangeFrame::SimpleString(r) if &buf[base + r.0..base + r.1] == b"OK" => {
                            Reply::Ok
                        }
                        // CL.THROTTLE: [limited, ...]; TG.CHECK: [allowed, [statuses]].
                        RangeFrame::Array(items) if items.len() == 5 => {
                            integer(&items[0]).map_or(Reply::Other, |i| Reply::Decision(i == 0))
                        }
                        RangeFrame::Array(items) if items.len() == 2 => {
                            integer(&items[0]).map_or(Reply::Other, |i| Reply::Decision(i == 1))
                        }
                        _ => Reply::Other,
                    });
                }
                None => break,
            }
        }
        buf.drain(..used);
        if replies.len() < n && stream.read_buf(buf).await? == 0 {
            bail!("the server closed the connection");
        }
    }
    Ok(replies)
}

/// What every connection shares.
struct Shared {
    work: Workload,
    protocol: BenchProtocol,
    target: String,
    start: Instant,
    deadline: Instant,
    /// Requests left to send.
    budget: AtomicU64,
    /// Answers so far (for the progress bar).
    answered: AtomicU64,
    pipeline: usize,
    /// Open loop: nanoseconds between one connection's sends.
    interval_ns: Option<u64>,
    connections: usize,
    /// Keep a [`Decision`] per request (`--decision-log`).
    log: bool,
}

/// One request as the client saw it, for `--decision-log`.
struct Decision {
    /// When it was written, in nanoseconds since the run started.
    sent: u64,
    /// When its answer (or the failure) came, in nanoseconds since the run started.
    answered: u64,
    key: u64,
    /// `None`: no decision (an error answer, a failed connection).
    verdict: Option<bool>,
}

/// Failures kept per connection for the report: a server that is down for a while fails
/// every request, and the first few say why.
const FAILURES_KEPT: usize = 5;

struct Outcome {
    latency: Histogram<u64>,
    tally: Tally,
    failures: Vec<String>,
    log: Vec<Decision>,
}

async fn connection(shared: Arc<Shared>, index: usize) -> Outcome {
    let mut latency =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds are valid");
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    let mut log = Vec::new();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (index as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    // A server that is not there at the start is an error at once; one that goes away
    // later (a restart) is reconnected to until the run ends, each request meanwhile an error.
    let conn = match Conn::open(
        shared.protocol,
        &shared.target,
        shared.work.token.as_deref(),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            failures.push(format!("{e:#}"));
            return Outcome {
                latency,
                tally,
                failures,
                log,
            };
        }
    };
    let mut conn = Some(conn);
    let mut out = Vec::with_capacity(4096);
    let mut keys = Vec::with_capacity(shared.pipeline);
    let mut verdicts = Vec::with_capacity(shared.pipeline);
    // Open loop: this connection's k-th send is due at start + (k·connections + index)·interval.
    let mut sent_rounds: u64 = 0;
    loop {
        let want = shared.pipeline as u64;
        let taken = shared
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                (left > 0).then(|| left.saturating_sub(want))
            })
            .map_or(0, |left| left.min(want));
        if taken == 0 || Instant::now() >= shared.deadline {
            break;
        }
        let due = match shared.interval_ns {
            Some(interval) => {
                let due = shared.start
                    + Duration::from_nanos(
                        interval
                            .saturating_mul(sent_rounds * shared.connections as u64 + index as u64),
                    );
                if due >= shared.deadline {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                due
            }
            None => Instant::now(),
        };
        keys.clear();
        for _ in 0..taken {
            // xorshift: a key per request, spread over --keys.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            keys.push(rng % shared.work.keys);
        }
        if conn.is_none() {
            match Conn::open(
                shared.protocol,
                &shared.target,
                shared.work.token.as_deref(),
            )
            .await
            {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    if failures.len() < FAILURES_KEPT {
                        failures.push(format!("{e:#}"));
                    }
                    if shared.interval_ns.is_none() {
                        // Closed loop: do not spin on a refused connection.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }
        let sent = shared.start.elapsed();
        verdicts.clear();
        let result = match conn.as_mut() {
            Some(c) => c.round(&shared.work, &keys, &mut out, &mut verdicts).await,
            None => Err(anyhow::anyhow!("not connected")),
        };
        let answered = shared.start.elapsed();
        match result {
            Ok(()) => {
                let micros = u64::try_from(due.elapsed().as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                let _ = latency.record_n(micros, taken);
                for &verdict in &verdicts {
                    count(&mut tally, verdict);
                }
            }
            Err(e) => {
                tally.errors += taken;
                if conn.is_some() && failures.len() < FAILURES_KEPT {
                    failures.push(format!("{e:#}"));
                }
                conn = None;
                verdicts.clear();
            }
        }
        if shared.log {
            let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            for (i, &key) in keys.iter().enumerate() {
                log.push(Decision {
                    sent: nanos(sent),
                    answered: nanos(answered),
                    key,
                    verdict: verdicts.get(i).copied().flatten(),
                });
            }
        }
        sent_rounds += 1;
        shared.answered.fetch_add(taken, Ordering::Relaxed);
    }
    Outcome {
        latency,
        tally,
        failures,
        log,
    }
}

/// Appends one line per decision: `SENT ANSWERED KEY VERDICT`, times in Unix nanoseconds.
fn write_decisions(
    file: &mut impl std::io::Write,
    unix_start: Duration,
    decisions: &[Decision],
) -> anyhow::Result<()> {
    let base = u64::try_from(unix_start.as_nanos()).unwrap_or(u64::MAX);
    for d in decisions {
        let verdict = match d.verdict {
            Some(true) => "allowed",
            Some(false) => "denied",
            None => "error",
        };
        writeln!(
            file,
            "{} {} {} {verdict}",
            base.saturating_add(d.sent),
            base.saturating_add(d.answered),
            d.key
        )
        .context("--decision-log: cannot write")?;
    }
    Ok(())
}

/// A process's CPU time so far (user + system, all threads), from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| {
        format!("cannot read /proc/{pid}/stat (is --server-pid a running process?)")
    })?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15, the 12th and 13th after the name.
    let total = ticks(11) + ticks(12);
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse::<u64>().ok())
        .unwrap_or(100);
    Ok(Duration::from_nanos(
        total.saturating_mul(1_000_000_000 / hz.max(1)),
    ))
}

/// Runs the command: 0 when every request was answered, 1 when some failed.
pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    if args.connections == 0 || args.pipeline == 0 || args.threads == 0 {
        bail!("--connections, --pipeline and --threads must be at least 1");
    }
    if args.pipeline > 1 && args.protocol == BenchProtocol::Http {
        bail!("--pipeline applies to --protocol resp and grpc only");
    }
    if args.cell.is_some() && args.protocol != BenchProtocol::Resp {
        bail!("--cell applies to --protocol resp only");
    }
    if args.rate == Some(0) {
        bail!("--rate must be at least 1 request per second");
    }
    let work = Workload::of(args)?;
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(bench(args, work))
}

async fn bench(args: &BenchArgs, work: Workload) -> anyhow::Result<ExitCode> {
    let target = args.target.clone().unwrap_or_else(|| {
        match args.protocol {
            BenchProtocol::Http => "127.0.0.1:8080",
            BenchProtocol::Grpc => "127.0.0.1:8081",
            BenchProtocol::Resp => "127.0.0.1:6380",
        }
        .to_owned()
    });
    let cpu_before = args.server_pid.map(cpu_time).transpose()?;
    let start = Instant::now();
    let unix_start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    let shared = Arc::new(Shared {
        work,
        protocol: args.protocol,
        target,
        start,
        deadline: start + args.duration,
        budget: AtomicU64::new(args.requests),
        answered: AtomicU64::new(0),
        pipeline: args.pipeline,
        interval_ns: args.rate.map(|r| 1_000_000_000 / r.max(1)),
        connections: args.connections,
        log: args.decision_log.is_some(),
    });
    let progress = if std::io::stderr().is_terminal() && !args.json {
        let bar = indicatif::ProgressBar::new(args.duration.as_millis() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {elapsed}/{duration} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    let tasks: Vec<_> = (0..args.connections)
        .map(|i| tokio::spawn(connection(shared.clone(), i)))
        .collect();
    if let Some(bar) = &progress {
        let shared = shared.clone();
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let elapsed = shared.start.elapsed();
                let answered = shared.answered.load(Ordering::Relaxed);
                bar.set_position(elapsed.as_millis() as u64);
                bar.set_message(format!(
                    "{answered} answers, {:.0}/s",
                    answered as f64 / elapsed.as_secs_f64().max(1e-9)
                ));
            }
        });
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    let mut log = args
        .decision_log
        .as_ref()
        .map(|path| {
            std::fs::File::create(path)
                .map(std::io::BufWriter::new)
                .with_context(|| format!("--decision-log: cannot create {}", path.display()))
        })
        .transpose()?;
    for task in tasks {
        let outcome = task.await.context("a connection's task failed")?;
        if let Some(file) = log.as_mut() {
            write_decisions(file, unix_start, &outcome.log)?;
        }
        latency.add(&outcome.latency)?;
        tally.allowed += outcome.tally.allowed;
        tally.denied += outcome.tally.denied;
        tally.errors += outcome.tally.errors;
        failures.extend(outcome.failures);
    }
    if let Some(mut file) = log {
        std::io::Write::flush(&mut file).context("--decision-log: cannot write")?;
    }
    let elapsed = start.elapsed();
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let cpu = match (args.server_pid, cpu_before) {
        (Some(pid), Some(before)) => Some(cpu_time(pid)?.saturating_sub(before)),
        _ => None,
    };
    let answered = tally.allowed + tally.denied;
    let per_second = answered as f64 / elapsed.as_secs_f64();
    let cpu_us = cpu.map(|c| c.as_secs_f64() * 1e6 / answered.max(1) as f64);
    let q = |p: f64| latency.value_at_quantile(p);
    let result = json!({
        "protocol": format!("{:?}", args.protocol).to_lowercase(),
        "loop": if args.rate.is_some() { "open" } else { "closed" },
        "rate": args.rate,
        "connections": args.connections,
        "pipeline": args.pipeline,
        "keys": shared.work.keys,
        "seconds": elapsed.as_secs_f64(),
        "requests": answered + tally.errors,
        "allowed": tally.allowed,
        "denied": tally.denied,
        "errors": tally.errors,
        "decisions_per_second": per_second,
        "latency_us": {
            "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999),
            "max": latency.max(), "mean": latency.mean(),
        },
        "server_cpu_us_per_decision": cpu_us,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!(
            "{} {} loop, {} connections{}: {answered} decisions in {:.2} s = {per_second:.0}/s ({} allowed, {} denied, {} errors)",
            result["protocol"].as_str().unwrap_or_default(),
            result["loop"].as_str().unwrap_or_default(),
            args.connections,
            if args.pipeline > 1 {
                format!(", pipeline {}", args.pipeline)
            } else {
                String::new()
            },
            elapsed.as_secs_f64(),
            tally.allowed,
            tally.denied,
            tally.errors,
        );
        println!(
            "latency µs: p50 {} p90 {} p99 {} p99.9 {} max {}{}",
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            latency.max(),
            if args.rate.is_some() {
                " (from each request's due time)"
            } else {
                ""
            }
        );
        if let Some(us) = cpu_us {
            println!("server CPU: {us:.2} µs per decision");
        }
    }
    for failure in failures.iter().take(5) {
        eprintln!("error: {failure}");
    }
    Ok(if tally.errors == 0 && failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
