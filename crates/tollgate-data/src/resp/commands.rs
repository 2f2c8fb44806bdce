//! What each command does. Names are matched without regard to case, as Redis does;
//! replies follow Redis's own wording where a client may look at it (`NOAUTH`,
//! `WRONGPASS`, `NOPROTO`, "unknown command").

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tollgate_core::{CheckRequest, Entry};

use super::cell::{CellRelease, Throttle};
use super::crab::CrabThrottle;
use super::frame::{Out, Version};
use crate::data_plane::DescriptorParts;
use crate::http::request_id::RequestId;
use crate::state::AppState;

/// Where `CL.THROTTLE` keys live, apart from every policy's counters.
const CELL_NAMESPACE: &str = "resp:cl.throttle";

/// Where `THROTTLE` keys live: throttlecrab's TATs are not redis-cell's.
const CRAB_NAMESPACE: &str = "resp:throttle";

/// What the connection does after a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Read the next command.
    Continue,
    /// Write what is answered and close (`QUIT`, or a client that must authenticate and
    /// cannot).
    Close,
}

static CLIENT_IDS: AtomicU64 = AtomicU64::new(1);

/// One connection's state.
pub struct Session {
    /// The reply protocol (`HELLO 3` switches to RESP3).
    pub version: Version,
    authenticated: bool,
    name: Option<Vec<u8>>,
    id: u64,
    /// The redis-cell release `CL.THROTTLE` answers as.
    cell_release: CellRelease,
}

/// A command as `COMMAND` describes it, in Redis's own terms.
struct CommandInfo {
    name: &'static str,
    /// Negative: at least that many arguments, the name included.
    arity: i64,
    flags: &'static [&'static str],
    /// Positions of the first and last key, and the step between keys (0: none).
    keys: (i64, i64, i64),
}

const fn info(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
) -> CommandInfo {
    CommandInfo {
        name,
        arity,
        flags,
        keys,
    }
}

/// The commands `COMMAND` lists.
const COMMANDS: &[CommandInfo] = &[
    info("cl.throttle", -5, &["write", "fast"], (1, 1, 1)),
    info("throttle", -5, &["write", "fast"], (1, 1, 1)),
    info("tg.check", -6, &["write", "fast"], (0, 0, 0)),
    info("ping", -1, &["fast", "stale"], (0, 0, 0)),
    info("echo", 2, &["fast"], (0, 0, 0)),
    info(
        "hello",
        -1,
        &["noscript", "loading", "stale", "fast", "no_auth"],
        (0, 0, 0),
    ),
    info(
        "auth",
        -2,
        &["noscript", "loading", "stale", "fast", "no_auth"],
        (0, 0, 0),
    ),
    info("client", -2, &["noscript", "loading", "stale"], (0, 0, 0)),
    info("command", -1, &["loading", "stale"], (0, 0, 0)),
    info("select", 2, &["loading", "stale", "fast"], (0, 0, 0)),
    info(
        "quit",
        -1,
        &["noscript", "loading", "stale", "fast", "no_auth"],
        (0, 0, 0),
    ),
];

fn is(arg: &[u8], name: &str) -> bool {
    arg.eq_ignore_ascii_case(name.as_bytes())
}

impl Session {
    /// A new connection's session; `open`: no token is configured.
    pub fn new(open: bool, cell_release: CellRelease) -> Self {
        Self {
            version: Version::Resp2,
            authenticated: open,
            name: None,
            id: CLIENT_IDS.fetch_add(1, Ordering::Relaxed),
            cell_release,
        }
    }

    /// The redis-cell release this connection's `CL.THROTTLE` answers as.
    pub fn cell_release(&self) -> CellRelease {
        self.cell_release
    }

    /// Whether the client may run decisions (authenticated, or no token configured).
    pub fn authenticated(&self) -> bool {
        self.authenticated
    }

    /// Answers one command (`args[0]` is its name) into `out`.
    pub async fn answer(
        &mut self,
        state: &Arc<AppState>,
        args: &[&[u8]],
        out: &mut Out<'_>,
    ) -> Next {
        let name = args[0];
        if is(name, "CL.THROTTLE") && self.authenticated {
            cl_throttle(state, &args[1..], self.cell_release, out).await;
            return Next::Continue;
        }
        if is(name, "QUIT") {
            out.simple("OK");
            return Next::Close;
        }
        if is(name, "AUTH") {
            self.auth(state, &args[1..], out);
            return Next::Continue;
        }
        if is(name, "HELLO") {
            self.hello(state, &args[1..], out);
            return Next::Continue;
        }
        if !self.authenticated {
            out.error("NOAUTH Authentication required.");
            return Next::Continue;
        }
        if is(name, "TG.CHECK") {
            tg_check(state, &args[1..], out).await;
        } else if is(name, "THROTTLE") {
            crab_throttle(state, &args[1..], out).await;
        } else if is(name, "PING") {
            match args.len() {
                1 => out.simple("PONG"),
                2 => out.bulk(args[1]),
                _ => wrong_arity(out, "ping"),
            }
        } else if is(name, "ECHO") {
            match args.len() {
                2 => out.bulk(args[1]),
                _ => wrong_arity(out, "echo"),
            }
        } else if is(name, "CLIENT") {
            self.client(&args[1..], out);
        } else if is(name, "COMMAND") {
            command(&args[1..], out);
        } else if is(name, "SELECT") {
            match args.get(1) {
                Some(db) if args.len() == 2 && *db == b"0" => out.simple("OK"),
                Some(_) if args.len() == 2 => out.error("ERR DB index is out of range"),
                _ => wrong_arity(out, "select"),
            }
        } else {
            unknown(args, out);
        }
        Next::Continue
    }

    fn auth(&mut self, state: &AppState, args: &[&[u8]], out: &mut Out<'_>) {
        let (user, password) = match args {
            [password] => (&b"default"[..], *password),
            [user, password] => (*user, *password),
            _ => return wrong_arity(out, "auth"),
        };
        match &state.data_token {
            None => out.error(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            ),
            Some(token) if user == b"default" && token.admits_secret(password) => {
                self.authenticated = true;
                out.simple("OK");
            }
            Some(_) => {
                metrics::counter!("tollgate_rejected_requests_total", "reason" => "unauthenticated")
                    .increment(1);
                out.error("WRONGPASS invalid username-password pair or user is disabled.");
            }
        }
    }

    /// `HELLO [protover [AUTH user password] [SETNAME name]]`.
    fn hello(&mut self, state: &AppState, args: &[&[u8]], out: &mut Out<'_>) {
        let mut version = self.version;
        let mut rest = args;
        if let Some((protover, tail)) = rest.split_first() {
            version = match *protover {
                b"2" => Version::Resp2,
                b"3" => Version::Resp3,
                _ => {
                    if std::str::from_utf8(protover)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                        .is_none()
                    {
                        return out.error("ERR Protocol version is not an integer or out of range");
                    }
                    return out.error("NOPROTO unsupported protocol version");
                }
            };
            rest = tail;
        }
        let mut name = None;
        while let Some((option, tail)) = rest.split_first() {
            if is(option, "AUTH") && tail.len() >= 2 {
                let before = self.authenticated;
                let mut scratch = bytes::BytesMut::new();
                let mut quiet = Out {
                    buf: &mut scratch,
                    version,
                };
                self.auth(state, &tail[..2], &mut quiet);
                if !self.authenticated || (before && scratch.first() == Some(&b'-')) {
                    // The error AUTH would have answered.
                    out.buf.extend_from_slice(&scratch);
                    return;
                }
                rest = &tail[2..];
            } else if is(option, "SETNAME") && !tail.is_empty() {
                name = Some(tail[0].to_vec());
                rest = &tail[1..];
            } else {
                return out.error(&format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(option)
                ));
            }
        }
        if !self.authenticated {
            return out.error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        }
        if name.is_some() {
            self.name = name;
        }
        self.version = version;
        out.version = version;
        out.map(7);
        out.bulk(b"server");
        out.bulk(b"tollgate");
        out.bulk(b"version");
        out.bulk(env!("CARGO_PKG_VERSION").as_bytes());
        out.bulk(b"proto");
        out.integer(if version == Version::Resp3 { 3 } else { 2 });
        out.bulk(b"id");
        out.integer(self.id as i64);
        out.bulk(b"mode");
        out.bulk(b"standalone");
        out.bulk(b"role");
        out.bulk(b"master");
        out.bulk(b"modules");
        out.array(0);
    }

    fn client(&mut self, args: &[&[u8]], out: &mut Out<'_>) {
        let Some(sub) = args.first() else {
            return wrong_arity(out, "client");
        };
        if is(sub, "SETNAME") && args.len() == 2 {
            if args[1].iter().any(|&b| b == b' ' || !b.is_ascii_graphic()) {
                return out.error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
            self.name = (!args[1].is_empty()).then(|| args[1].to_vec());
            out.simple("OK");
        } else if is(sub, "GETNAME") && args.len() == 1 {
            match &self.name {
                Some(name) => out.bulk(name),
                None => out.null(),
            }
        } else if is(sub, "ID") && args.len() == 1 {
            out.integer(self.id as i64);
        } else if is(sub, "SETINFO") && args.len() == 3 {
            // Client libraries announce themselves (redis-py, go-redis); nothing to keep.
            out.simple("OK");
        } else {
            out.error(&format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(&sub[..sub.len().min(64)])
            ));
        }
    }
}

/// `COMMAND`, `COMMAND COUNT`, `COMMAND INFO name…`, `COMMAND DOCS` (none: an empty
/// reply, which `redis-cli` takes as "no hints").
fn command(args: &[&[u8]], out: &mut Out<'_>) {
    let entry = |out: &mut Out<'_>, c: &CommandInfo| {
        out.array(6);
        out.bulk(c.name.as_bytes());
        out.integer(c.arity);
        out.array(c.flags.len());
        for flag in c.flags {
            out.simple(flag);
        }
        out.integer(c.keys.0);
        out.integer(c.keys.1);
        out.integer(c.keys.2);
    };
    match args.first() {
        None => {
            out.array(COMMANDS.len());
            for c in COMMANDS {
                entry(out, c);
            }
        }
        Some(sub) if is(sub, "COUNT") => out.integer(COMMANDS.len() as i64),
        Some(sub) if is(sub, "DOCS") => out.map(0),
        Some(sub) if is(sub, "INFO") => {
            out.array(args.len() - 1);
            for name in &args[1..] {
                match COMMANDS.iter().find(|c| is(name, c.name)) {
                    Some(c) => entry(out, c),
                    None => out.null(),
                }
            }
        }
        Some(sub) => out.error(&format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(&sub[..sub.len().min(64)])
        )),
    }
}

fn wrong_arity(out: &mut Out<'_>, name: &str) {
    out.error(&format!(
        "ERR wrong number of arguments for '{name}' command"
    ));
}

/// Redis's answer to a command it does not have.
fn unknown(args: &[&[u8]], out: &mut Out<'_>) {
    let shown = |a: &[u8]| String::from_utf8_lossy(&a[..a.len().min(64)]).into_owned();
    let mut text = format!(
        "ERR unknown command '{}', with args beginning with: ",
        shown(args[0])
    );
    for arg in args.iter().skip(1).take(8) {
        text.push_str(&format!("'{}' ", shown(arg)));
    }
    out.error(&text);
}

/// `CL.THROTTLE key max_burst count period [quantity]`.
async fn cl_throttle(state: &AppState, args: &[&[u8]], release: CellRelease, out: &mut Out<'_>) {
    let throttle = match Throttle::parse(args) {
        Ok(t) => t,
        Err(message) => return out.error(&release.error(&message)),
    };
    let outcome = state
        .limiter
        .check_named(CELL_NAMESPACE, args[0], throttle.limit, throttle.quantity)
        .await;
    throttle_reply(state, &throttle, outcome, release, out);
}

/// `THROTTLE key max_burst count_per_period period [quantity]` (throttlecrab-server).
async fn crab_throttle(state: &AppState, args: &[&[u8]], out: &mut Out<'_>) {
    let stored = match CrabThrottle::parse(args) {
        Ok(CrabThrottle::Stored(stored)) => stored,
        Ok(CrabThrottle::Stateless(reply)) => {
            state.metrics.decision(None, reply[0] == 1, 0);
            return out.integers(&reply);
        }
        Err(message) => return out.error(&message),
    };
    let outcome = state
        .limiter
        .check_named(CRAB_NAMESPACE, args[0], stored.limit, stored.quantity)
        .await;
    crab_reply(state, &stored, outcome, out);
}

fn crab_reply(
    state: &AppState,
    stored: &super::crab::Stored,
    outcome: Result<tollgate_core::Outcome, tollgate_core::StoreError>,
    out: &mut Out<'_>,
) {
    named_reply(state, outcome, out, |o| {
        stored.reply(o, || state.limiter.clock().now())
    });
}

fn throttle_reply(
    state: &AppState,
    throttle: &Throttle,
    outcome: Result<tollgate_core::Outcome, tollgate_core::StoreError>,
    release: CellRelease,
    out: &mut Out<'_>,
) {
    named_reply(state, outcome, out, |o| throttle.reply(o, release));
}

/// Answers a named check (`CL.THROTTLE`, `THROTTLE`) with its five integers, counted as a
/// decision, or with the store's error.
fn named_reply(
    state: &AppState,
    outcome: Result<tollgate_core::Outcome, tollgate_core::StoreError>,
    out: &mut Out<'_>,
    reply: impl FnOnce(&tollgate_core::Outcome) -> [i64; 5],
) {
    match outcome {
        Ok(outcome) => {
            state.metrics.decision(None, outcome.allowed, 0);
            out.integers(&reply(&outcome));
        }
        Err(e) => {
            metrics::counter!("tollgate_store_fallback_decisions_total").increment(1);
            out.error(&format!("ERR {e}"));
        }
    }
}

/// Which pipelined commands are decided together ([`answer_together`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Together {
    /// `CL.THROTTLE`.
    Throttle,
    /// `THROTTLE`.
    Crab,
    /// `TG.CHECK`.
    Check,
}

impl Together {
    /// The kind of `name`, if commands of that name can be decided together.
    pub fn of(name: &[u8]) -> Option<Self> {
        if is(name, "CL.THROTTLE") {
            Some(Self::Throttle)
        } else if is(name, "THROTTLE") {
            Some(Self::Crab)
        } else if is(name, "TG.CHECK") {
            Some(Self::Check)
        } else {
            None
        }
    }
}

/// Answers pipelined commands of one [`Together`] kind (each `commands[i][0]` its name)
/// with one call to the limiter, so that a shared store sees one round trip for them all;
/// each gets the reply it would get alone, in order. The session must be authenticated.
pub async fn answer_together(
    state: &AppState,
    kind: Together,
    commands: &[smallvec::SmallVec<[&[u8]; 8]>],
    cell_release: CellRelease,
    out: &mut Out<'_>,
) {
    match kind {
        Together::Throttle => {
            let parsed: Vec<Result<Throttle, String>> =
                commands.iter().map(|c| Throttle::parse(&c[1..])).collect();
            let checks: Vec<(&[u8], tollgate_core::Limit, u64)> = (commands.iter().zip(&parsed))
                .filter_map(|(c, p)| p.as_ref().ok().map(|t| (c[1], t.limit, t.quantity)))
                .collect();
            let mut outcomes = state
                .limiter
                .check_named_many(CELL_NAMESPACE, &checks)
                .await
                .into_iter();
            for p in &parsed {
                match p {
                    Ok(throttle) => {
                        let outcome = outcomes
                            .next()
                            .unwrap_or(Err(tollgate_core::StoreError::Unsupported("not decided")));
                        throttle_reply(state, throttle, outcome, cell_release, out);
                    }
                    Err(message) => out.error(&cell_release.error(message)),
                }
            }
        }
        Together::Crab => {
            let parsed: Vec<Result<CrabThrottle, String>> = commands
                .iter()
                .map(|c| CrabThrottle::parse(&c[1..]))
                .collect();
            let checks: Vec<(&[u8], tollgate_core::Limit, u64)> = (commands.iter().zip(&parsed))
                .filter_map(|(c, p)| match p {
                    Ok(CrabThrottle::Stored(s)) => Some((c[1], s.limit, s.quantity)),
                    _ => None,
                })
                .collect();
            let mut outcomes = state
                .limiter
                .check_named_many(CRAB_NAMESPACE, &checks)
                .await
                .into_iter();
            for p in &parsed {
                match p {
                    Ok(CrabThrottle::Stored(stored)) => {
                        let outcome = outcomes
                            .next()
                            .unwrap_or(Err(tollgate_core::StoreError::Unsupported("not decided")));
                        crab_reply(state, stored, outcome, out);
                    }
                    Ok(CrabThrottle::Stateless(reply)) => {
                        state.metrics.decision(None, reply[0] == 1, 0);
                        out.integers(reply);
                    }
                    Err(message) => out.error(message),
                }
            }
        }
        Together::Check => {
            let parsed: Vec<Result<ParsedCheck<'_>, String>> =
                commands.iter().map(|c| parse_check(&c[1..])).collect();
            let descriptors: Vec<Option<Vec<tollgate_core::Descriptor<'_>>>> = parsed
                .iter()
                .map(|p| {
                    p.as_ref()
                        .ok()
                        .map(|(_, _, entries, lengths)| laid_out(entries, lengths))
                })
                .collect();
            let requests: Vec<Option<CheckRequest<'_>>> = (parsed.iter().zip(&descriptors))
                .map(|(p, d)| match (p, d) {
                    (Ok((domain, hits, _, _)), Some(descriptors)) => Some(CheckRequest {
                        domain,
                        descriptors,
                        hits: *hits,
                    }),
                    _ => None,
                })
                .collect();
            let answers = crate::data_plane::decide_many(state, None, &requests).await;
            for (p, answer) in parsed.iter().zip(answers) {
                match (p, answer) {
                    (Err(message), _) => out.error(&format!("ERR {message}")),
                    (Ok(_), Some(Ok(decision))) => check_reply(&decision, out),
                    (Ok(_), Some(Err(e))) => out.error(&format!("ERR {e}")),
                    (Ok(_), None) => out.error("ERR not decided"),
                }
            }
        }
    }
}

/// The core's descriptors over a parsed `TG.CHECK`'s entries.
fn laid_out<'a>(entries: &'a [Entry<'a>], lengths: &[usize]) -> Vec<tollgate_core::Descriptor<'a>> {
    crate::data_plane::descriptors(
        entries,
        lengths.iter().map(|&entries| DescriptorParts {
            entries,
            hits: None,
            limit_override: None,
        }),
    )
}

/// `TG.CHECK domain hits DESCRIPTOR n key value … [DESCRIPTOR n key value …]…`: a
/// domain's policies, as `POST /v1/check` applies them. The reply: `allowed` (1/0) and
/// one array per descriptor: policy name (null when none matched), limit (-1: none),
/// remaining (-1: unlimited), reset after ms, retry after ms (-1: allowed or never).
async fn tg_check(state: &AppState, args: &[&[u8]], out: &mut Out<'_>) {
    let (domain, hits, entries, lengths) = match parse_check(args) {
        Ok(parsed) => parsed,
        Err(message) => return out.error(&format!("ERR {message}")),
    };
    let descriptors = laid_out(&entries, &lengths);
    let request = CheckRequest {
        domain,
        descriptors: &descriptors,
        hits,
    };
    let decision = match state.limiter.check(&request).await {
        Ok(decision) => decision,
        Err(e) => return out.error(&format!("ERR {e}")),
    };
    crate::data_plane::record(state, &RequestId::generate(), &request, &decision);
    check_reply(&decision, out);
}

fn check_reply(decision: &tollgate_core::Decision, out: &mut Out<'_>) {
    out.array(2);
    out.integer(i64::from(decision.allowed));
    out.array(decision.statuses.len());
    for status in &decision.statuses {
        let limited = status.rule.as_ref().is_some_and(|r| r.is_limited());
        out.array(5);
        match &status.rule {
            Some(rule) => out.bulk(rule.name().as_bytes()),
            None => out.null(),
        }
        out.integer(
            status
                .rule
                .as_ref()
                .and_then(|r| r.quota())
                .map_or(-1, clamp),
        );
        out.integer(if limited { clamp(status.remaining) } else { -1 });
        out.integer(if limited {
            ms_up(status.reset_after)
        } else {
            0
        });
        out.integer(status.retry_after.map_or(-1, ms_up));
    }
}

type ParsedCheck<'a> = (
    &'a str,
    u64,
    smallvec::SmallVec<[Entry<'a>; 8]>,
    smallvec::SmallVec<[usize; 4]>,
);

fn parse_check<'a>(args: &[&'a [u8]]) -> Result<ParsedCheck<'a>, String> {
    const USAGE: &str =
        "usage: TG.CHECK <domain> <hits> DESCRIPTOR <entries> <key> <value> ... [DESCRIPTOR ...]";
    let text = |what: &str, arg: &'a [u8]| {
        std::str::from_utf8(arg).map_err(|_| format!("{what} is not UTF-8"))
    };
    let [domain, hits, rest @ ..] = args else {
        return Err(USAGE.into());
    };
    let domain = text("the domain", domain)?;
    let hits = std::str::from_utf8(hits)
        .ok()
        .and_then(|h| h.parse::<u64>().ok())
        .ok_or_else(|| {
            format!(
                "hits must be a whole number, got '{}'",
                String::from_utf8_lossy(hits)
            )
        })?;
    let mut entries = smallvec::SmallVec::new();
    let mut lengths = smallvec::SmallVec::new();
    let mut rest = rest;
    if rest.is_empty() {
        return Err(format!("at least one descriptor is needed; {USAGE}"));
    }
    while !rest.is_empty() {
        let index = lengths.len();
        let [keyword, count, tail @ ..] = rest else {
            return Err(format!("descriptor {index}: {USAGE}"));
        };
        if !is(keyword, "DESCRIPTOR") {
            return Err(format!(
                "descriptor {index}: expected DESCRIPTOR, got '{}'",
                String::from_utf8_lossy(&keyword[..keyword.len().min(64)])
            ));
        }
        let n = std::str::from_utf8(count)
            .ok()
            .and_then(|c| c.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                format!("descriptor {index}: the number of entries must be a positive whole number")
            })?;
        if tail.len() < 2 * n {
            return Err(format!(
                "descriptor {index}: {n} entries need {} arguments, got {}",
                2 * n,
                tail.len()
            ));
        }
        for pair in tail[..2 * n].chunks_exact(2) {
            entries.push(Entry {
                key: text(&format!("descriptor {index}: a key"), pair[0])?,
                value: text(&format!("descriptor {index}: a value"), pair[1])?,
            });
        }
        lengths.push(n);
        rest = &tail[2 * n..];
    }
    Ok((domain, hits, entries, lengths))
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn ms_up(ns: u128) -> i64 {
    clamp(ns.div_ceil(1_000_000).min(u128::from(u64::MAX)) as u64)
}
