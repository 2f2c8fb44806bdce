//! How a [`Decision`] looks on the wire: the JSON answer and the rate-limit headers.
//!
//! Written by hand into one buffer each (numbers with `itoa`, strings escaped by
//! `serde_json`): this is the hottest code of the HTTP path, and a derived serializer plus
//! `format!` for the headers cost about a third of the handler's instructions.

use axum::body::Bytes;
use http::{HeaderName, HeaderValue, header};
use tollgate_core::{Decision, DescriptorStatus, Nanos, Span, ceil_units};

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

const MS: Nanos = 1_000_000;
const S: Nanos = 1_000_000_000;

/// The 200 answer for a decision, for hyper and axum.
pub fn decision(decision: &Decision) -> http::Response<Bytes> {
    let mut body = Vec::with_capacity(32 + 256 * decision.statuses.len());
    json(&mut body, decision);
    let mut response = http::Response::new(Bytes::from(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let size = 48 * decision.statuses.len();
    let (mut policy, mut current) = (Vec::with_capacity(size), Vec::with_capacity(size));
    policy_value(&mut policy, decision);
    current_value(&mut current, decision);
    for (name, value) in [(&RATELIMIT_POLICY, policy), (&RATELIMIT, current)] {
        if !value.is_empty()
            && let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(value))
        {
            headers.insert(name.clone(), v);
        }
    }
    if let Some(seconds) = retry_after_seconds(decision) {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// The same answer's header lines (`name: value\r\n`), appended to `out`, for the
/// listener's own HTTP/1.1 loop: [`decision`]'s headers without a header map.
pub(crate) fn decision_head(out: &mut Vec<u8>, decision: &Decision) {
    out.extend_from_slice(b"content-type: application/json\r\n");
    for (name, value) in [
        (
            &RATELIMIT_POLICY,
            policy_value as fn(&mut Vec<u8>, &Decision),
        ),
        (&RATELIMIT, current_value),
    ] {
        let start = out.len();
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        let value_start = out.len();
        value(out, decision);
        if out.len() == value_start {
            out.truncate(start);
        } else {
            out.extend_from_slice(b"\r\n");
        }
    }
    if let Some(seconds) = retry_after_seconds(decision) {
        out.extend_from_slice(b"retry-after: ");
        out.extend_from_slice(itoa::Buffer::new().format(seconds).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// The answer's body, appended to `out`.
pub(crate) fn decision_body(out: &mut Vec<u8>, decision: &Decision) {
    json(out, decision);
}

fn number(out: &mut Vec<u8>, n: Option<u64>) {
    match n {
        Some(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
}

fn boolean(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

fn string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        // Writing into a Vec cannot fail; escaping is serde_json's.
        Some(s) => {
            let _ = serde_json::to_writer(&mut *out, s);
        }
        None => out.extend_from_slice(b"null"),
    }
}

/// `{"allowed":..,"statuses":[{..},..]}`; field order and nulls are part of the contract.
fn json(out: &mut Vec<u8>, d: &Decision) {
    out.extend_from_slice(b"{\"allowed\":");
    boolean(out, d.allowed);
    out.extend_from_slice(b",\"statuses\":[");
    for (i, s) in d.statuses.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        status(out, s);
    }
    out.extend_from_slice(b"]}");
}

fn status(out: &mut Vec<u8>, s: &DescriptorStatus) {
    let rate = s.rule.as_ref().and_then(|r| r.rate());
    let limited = s.rule.as_ref().is_some_and(|r| r.is_limited());
    out.extend_from_slice(b"{\"allowed\":");
    boolean(out, s.allowed);
    out.extend_from_slice(b",\"policy\":");
    string(out, s.rule.as_ref().map(|r| r.name()));
    out.extend_from_slice(b",\"limit\":");
    number(out, s.rule.as_ref().and_then(|r| r.quota()));
    // A concurrency limit has a maximum (`limit`) and no rate.
    out.extend_from_slice(b",\"requests_per_unit\":");
    number(out, rate.map(|(n, _)| n));
    out.extend_from_slice(b",\"unit\":");
    string(out, rate.map(|(_, u)| u.as_str()));
    out.extend_from_slice(b",\"remaining\":");
    number(out, limited.then_some(s.remaining));
    out.extend_from_slice(b",\"reset_after_ms\":");
    number(
        out,
        Some(if limited {
            ceil_units(s.reset_after, MS)
        } else {
            0
        }),
    );
    out.extend_from_slice(b",\"retry_after_ms\":");
    number(out, s.retry_after.map(|r| ceil_units(r, MS)));
    out.extend_from_slice(b",\"unlimited\":");
    boolean(out, s.rule.is_some() && !limited);
    out.extend_from_slice(b",\"shadow_denied\":");
    boolean(out, s.shadow_denied);
    out.extend_from_slice(b",\"quota_mode\":");
    boolean(out, s.quota_mode);
    out.extend_from_slice(b",\"store_failed\":");
    boolean(out, s.store_failed);
    out.push(b'}');
}

/// Appends `name` as a structured-field string: printable ASCII, `"` and `\` escaped, any
/// other character replaced by `?` (policy names come from configuration, not callers).
fn sf_string(out: &mut Vec<u8>, name: &str) {
    out.push(b'"');
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                out.push(b'\\');
                out.push(c as u8);
            }
            ' '..='~' => out.push(c as u8),
            _ => out.push(b'?'),
        }
    }
    out.push(b'"');
}

/// The rate-limited descriptors' rules with their quotas and windows in seconds: a
/// calendar quota's current window, else the policy's unit. A concurrency limit, no rate,
/// is left out (the fields describe quotas over time).
fn limited(decision: &Decision) -> impl Iterator<Item = (&DescriptorStatus, &str, u64, u64)> {
    decision.statuses.iter().filter_map(|s| {
        let rule = s.rule.as_ref()?;
        let (Some((_, unit)), Some(quota)) = (rule.rate(), rule.quota()) else {
            return None;
        };
        let window = s.window.map_or(unit.seconds(), |w| ceil_units(w, S));
        Some((s, rule.name(), quota, window))
    })
}

/// The `RateLimit-Policy` value: one list member per limited descriptor (may be empty).
pub(crate) fn policy_value(out: &mut Vec<u8>, decision: &Decision) {
    sf_list(out, decision, |_, quota, window| {
        [(b"q", quota), (b"w", window)]
    });
}

/// The `RateLimit` value: what remains of each limited descriptor, and when it resets.
pub(crate) fn current_value(out: &mut Vec<u8>, decision: &Decision) {
    sf_list(out, decision, |s, _, _| {
        [(b"r", s.remaining), (b"t", ceil_units(s.reset_after, S))]
    });
}

/// Appends a structured-field list with one member per limited descriptor: its policy name
/// and the two parameters `params` picks from (status, quota, window in seconds).
fn sf_list(
    out: &mut Vec<u8>,
    decision: &Decision,
    params: impl Fn(&DescriptorStatus, u64, u64) -> [(&'static [u8; 1], u64); 2],
) {
    let mut n = itoa::Buffer::new();
    for (i, (s, name, quota, window)) in limited(decision).enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        sf_string(out, name);
        for (key, value) in params(s, quota, window) {
            out.push(b';');
            out.extend_from_slice(key);
            out.push(b'=');
            out.extend_from_slice(n.format(value).as_bytes());
        }
    }
}

/// Seconds until a denied request may pass: the longest wait among the descriptors that
/// denied it; `None` when allowed or when it can never pass.
fn retry_after_seconds(decision: &Decision) -> Option<u64> {
    if decision.allowed {
        return None;
    }
    let mut longest: Span = 0;
    for s in decision.statuses.iter().filter(|s| !s.allowed) {
        longest = longest.max(s.retry_after?);
    }
    Some(ceil_units(longest, S).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sf_strings_are_escaped_and_ascii() {
        let mut s = Vec::new();
        sf_string(&mut s, "a\"b\\c é");
        assert_eq!(s, b"\"a\\\"b\\\\c ?\"");
    }

    #[test]
    fn json_escapes_policy_names_and_parses() {
        let d = Decision {
            allowed: true,
            statuses: Default::default(),
            domain: None,
            store_error: None,
        };
        let mut out = Vec::new();
        json(&mut out, &d);
        assert_eq!(out, b"{\"allowed\":true,\"statuses\":[]}");
        let mut out = Vec::new();
        string(&mut out, Some("we\"ird\n"));
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, "we\"ird\n");
    }

    /// The hand-written renderer and `tollgate-api`'s [`CheckResponse`] agree byte for
    /// byte: every answer `check::answer` gives parses into the wire type (which refuses
    /// unknown fields) and serializes back to the same bytes, for each kind of status
    /// (limited, unlimited, no match, shadow mode, allowed and denied).
    ///
    /// [`CheckResponse`]: tollgate_api::CheckResponse
    #[test]
    fn the_renderer_and_the_wire_type_agree() {
        use std::sync::Arc;

        use tollgate_core::{Limiter, LimiterConfig, ManualClock, MemoryStore, PolicySet};

        use crate::http::check::{CheckHeaders, answer};
        use crate::metrics::Metrics;
        use crate::state::AppState;

        let example = include_str!("../../../../examples/policies/api.yaml");
        let policies = PolicySet::from_files([("api.yaml", example)]).unwrap();
        let clock = Arc::new(ManualClock::new(1_700_000_000 * S));
        let limiter = Limiter::new(
            policies,
            Arc::new(MemoryStore::default()),
            clock,
            LimiterConfig::default(),
        );
        let metrics = Metrics::install().expect("the only recorder of this test binary");
        let state = AppState::new(Arc::new(limiter), metrics);
        let descriptors = r#"[{"entries":[{"key":"remote_address","value":"10.0.0.1"}]},
            {"entries":[{"key":"path","value":"/login"},{"key":"user","value":"u\"1"}]},
            {"entries":[{"key":"path","value":"/healthz"}]},
            {"entries":[{"key":"nothing","value":"matches"}]},
            {"entries":[{"key":"api_key","value":"k"}]},
            {"entries":[{"key":"path","value":"/search/x"}]}]"#;
        let mut decided = std::collections::BTreeSet::new();
        for hits in [1, 1, 1, 1, 1, 3, 50] {
            let body = format!(r#"{{"domain":"api","descriptors":{descriptors},"hits":{hits}}}"#);
            let headers = CheckHeaders::default();
            // The in-memory store never waits: one poll answers.
            let mut check = std::pin::pin!(answer(&state, headers, Ok(body.as_bytes())));
            let waker = std::task::Waker::noop();
            let std::task::Poll::Ready(response) = check
                .as_mut()
                .poll(&mut std::task::Context::from_waker(waker))
            else {
                panic!("the in-memory store waited");
            };
            assert_eq!(response.status(), 200);
            let body = response.into_body();
            let parsed: tollgate_api::CheckResponse = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
            assert_eq!(serde_json::to_vec(&parsed).unwrap(), body.to_vec());
            assert_eq!(parsed.statuses.len(), 6);
            decided.insert(parsed.allowed);
        }
        assert_eq!(
            decided.len(),
            2,
            "both allowed and denied answers were rendered"
        );
    }
}
