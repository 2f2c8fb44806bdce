//! What the HTTP and gRPC data planes share: laying decoded descriptors out for the core,
//! and recording each decision.

use tollgate_core::{CheckRequest, Decision, Descriptor, Entry, LimitOverride, RequestError};

use crate::http::request_id::RequestId;
use crate::state::AppState;

/// One decoded descriptor, apart from its entries.
#[derive(Debug, Clone, Copy)]
pub struct DescriptorParts {
    /// How many entries it has.
    pub entries: usize,
    /// Its own cost, if it has one.
    pub hits: Option<u64>,
    /// Its caller-supplied limit, if any.
    pub limit_override: Option<LimitOverride>,
}

/// Cuts `entries` (every descriptor's entries, in order) into the core's descriptors.
pub fn descriptors<'a>(
    entries: &'a [Entry<'a>],
    parts: impl IntoIterator<Item = DescriptorParts>,
) -> Vec<Descriptor<'a>> {
    let mut offset = 0;
    parts
        .into_iter()
        .map(|p| {
            let d = Descriptor {
                entries: &entries[offset..offset + p.entries],
                hits: p.hits,
                limit_override: p.limit_override,
            };
            offset += p.entries;
            d
        })
        .collect()
}

/// `value` of the field `field` as an amount of a hold (an estimate, slots, what was
/// used): from `min` to the largest count a counter keeps, or a message naming the field.
pub fn hold_amount(field: &str, value: u64, min: u64) -> Result<u64, String> {
    use tollgate_core::algorithm::domain::MAX_COUNT;
    if (min..=MAX_COUNT).contains(&value) {
        return Ok(value);
    }
    Err(if min == 0 {
        format!("{field} must be at most {MAX_COUNT}, got {value}")
    } else {
        format!("{field} must be between {min} and {MAX_COUNT}, got {value}")
    })
}

/// Why an id names no hold: the same answer for every such id, whatever it is.
pub fn unknown_hold(id: &str) -> String {
    format!(
        "no reservation or lease '{}' is held: never made, expired, or settled more than 2 minutes ago",
        id.chars().take(64).collect::<String>()
    )
}

/// Why a hold cannot be settled or extended another way.
pub fn already_settled(id: tollgate_core::HoldId, how: tollgate_core::Settled) -> String {
    match how {
        tollgate_core::Settled::Committed { actual } => {
            format!("the hold {id} was already committed at {actual}")
        }
        tollgate_core::Settled::Released => format!("the hold {id} was already released"),
    }
}

/// Lets one store-error line through per second.
static STORE_ERROR_LOG: LogThrottle = LogThrottle::new();

/// At most one log line per second; counts the ones it held back.
struct LogThrottle {
    last_second: std::sync::atomic::AtomicU64,
    held_back: std::sync::atomic::AtomicU64,
}

impl LogThrottle {
    const fn new() -> Self {
        Self {
            last_second: std::sync::atomic::AtomicU64::new(0),
            held_back: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when this line may be written.
    fn admit(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_second.load(Relaxed);
        if second != last
            && self
                .last_second
                .compare_exchange(last, second, Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.held_back.swap(0, Relaxed));
        }
        self.held_back.fetch_add(1, Relaxed);
        None
    }
}

/// Counts a decision, logs it at debug level and shows it to live watchers. Descriptor
/// values may be personal data (user ids, addresses), so they are never logged.
pub fn record(state: &AppState, id: &RequestId, request: &CheckRequest<'_>, decision: &Decision) {
    let domain = request.domain;
    state.decisions.publish(request, decision);
    if let Some(usage) = &state.usage {
        usage.record(id.as_str(), request, decision);
    }
    if let Some(e) = &decision.store_error {
        metrics::counter!("tollgate_store_fallback_decisions_total").increment(1);
        // During an outage every request fails the same way: one line per second, with
        // how many were not logged, instead of a line per request.
        if let Some(suppressed) = STORE_ERROR_LOG.admit() {
            tracing::warn!(request_id = id.as_str(), error = %e, suppressed, "store failed; policies' on_store_error decided");
        }
    }
    let shadow = decision.statuses.iter().filter(|s| s.shadow_denied).count() as u64;
    state
        .metrics
        .decision(decision.domain.as_deref(), decision.allowed, shadow);
    tracing::debug!(
        request_id = id.as_str(),
        domain,
        allowed = decision.allowed,
        descriptors = decision.statuses.len(),
        shadow_denials = shadow,
        "decision"
    );
}

/// Decides the checks of a batch or a pipeline together ([`tollgate_core::Limiter::check_many`]),
/// each recorded as a single check is, under `id` (or a fresh id each when `None`). The
/// answers line up with `requests`: `None` (a check refused before it could be asked) stays
/// `None`.
pub async fn decide_many(
    state: &AppState,
    id: Option<&RequestId>,
    requests: &[Option<CheckRequest<'_>>],
) -> Vec<Option<Result<Decision, RequestError>>> {
    let asked: Vec<CheckRequest<'_>> = requests.iter().flatten().copied().collect();
    let answers = state.limiter.check_many(&asked).await;
    let mut answered = asked.iter().zip(answers);
    requests
        .iter()
        .map(|request| {
            request.as_ref()?;
            let (request, answer) = answered.next()?;
            if let Ok(decision) = &answer {
                match id {
                    Some(id) => record(state, id, request, decision),
                    None => record(state, &RequestId::generate(), request, decision),
                }
            }
            Some(answer)
        })
        .collect()
}
