//! Policy files: envoyproxy/ratelimit's YAML format, loaded unchanged, plus Tollgate's
//! extensions inside `rate_limit` (`algorithm`, `burst`, `consistency`, `on_store_error`,
//! `lease`, and for `algorithm: quota` its `period`, `time_zone` and `anchor_day`).
//!
//! A descriptor's `metadata` is kept (see `metadata.rs`). Fields envoyproxy/ratelimit knows
//! but Tollgate has no use for (`detailed_metric`, `value_to_metric`, and `quota_mode`
//! inside `rate_limit`, where upstream accepts the key but never reads it) are accepted and
//! ignored; any other field is an error, so that a typo such as `requests_per_unt` cannot
//! silently drop a limit.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, IgnoredAny};
use serde::{Deserialize, Deserializer};

use super::{Consistency, Domain, OnStoreError, Policy, PolicyLimit, Unit};
use crate::algorithm::{Algorithm, Limit};
use crate::calendar::{Calendar, CalendarError, CalendarPeriod};

/// Deepest descriptor tree accepted: envoy descriptors are a handful of levels deep, and the
/// bound keeps matching and key building cheap.
pub const MAX_DEPTH: usize = 32;

/// A problem in a policy file, located as precisely as the format allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file (as named by whoever loaded it).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong, starting with the field path (e.g. `descriptors[0].rate_limit.unit`).
    pub message: String,
}

impl PolicyError {
    pub(crate) fn whole_file(file: &str, message: String) -> Self {
        Self {
            file: file.to_owned(),
            line: None,
            column: None,
            message,
        }
    }

    fn from_yaml(file: &str, err: &yaml_serde::Error) -> Self {
        let text = err.to_string();
        // The YAML library appends " at line L column C"; we print the location up front.
        let message = match text.rfind(" at line ") {
            Some(at) if err.location().is_some() => text[..at].to_owned(),
            _ => text,
        };
        // Our own field errors read "field: ..." after the mapping's path; join them into one
        // path ("descriptors[0].rate_limit.unit: ...").
        let message = match message.split_once(": ").and_then(|(path, rest)| {
            let (field, detail) = rest.split_once(": ")?;
            field
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.')
                .then(|| format!("{path}.{field}: {detail}"))
        }) {
            Some(joined) => joined,
            None => message,
        };
        let location = err.location();
        Self {
            file: file.to_owned(),
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
            message,
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{}:{}: {}", self.file, l, c, self.message),
            (Some(l), None) => write!(f, "{}:{}: {}", self.file, l, self.message),
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for PolicyError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    domain: String,
    #[serde(default)]
    descriptors: Vec<RawDescriptor>,
    #[serde(default, rename = "metadata")]
    _metadata: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDescriptor {
    key: KeyName,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    descriptors: Vec<RawDescriptor>,
    #[serde(default)]
    shadow_mode: bool,
    #[serde(default)]
    quota_mode: bool,
    #[serde(default)]
    share_threshold: bool,
    #[serde(default, rename = "detailed_metric")]
    _detailed_metric: Option<IgnoredAny>,
    #[serde(default, rename = "value_to_metric")]
    _value_to_metric: Option<IgnoredAny>,
    #[serde(default, deserialize_with = "super::metadata::metadata_map")]
    metadata: Option<super::Metadata>,
}

/// The fields of a `rate_limit` block as written; checked together by [`RawRateLimit`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitFields {
    #[serde(default)]
    unit: Option<UnitName>,
    #[serde(default)]
    requests_per_unit: Option<u32>,
    #[serde(default)]
    unlimited: bool,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    replaces: Vec<Replace>,
    #[serde(default)]
    share_threshold: bool,
    #[serde(default)]
    algorithm: Option<AlgorithmName>,
    #[serde(default)]
    burst: Option<u64>,
    #[serde(default)]
    consistency: Option<ConsistencyName>,
    #[serde(default)]
    on_store_error: Option<OnStoreErrorName>,
    #[serde(default)]
    lease: Option<u64>,
    #[serde(default)]
    period: Option<PeriodName>,
    #[serde(default)]
    time_zone: Option<String>,
    #[serde(default)]
    anchor_day: Option<u8>,
    #[serde(default)]
    max_in_flight: Option<u32>,
    #[serde(default, rename = "quota_mode")]
    _quota_mode: Option<IgnoredAny>,
    #[serde(default, rename = "metadata")]
    _metadata: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Replace {
    name: ReplaceName,
}

/// A checked `rate_limit` block.
#[derive(Deserialize)]
#[serde(try_from = "RateLimitFields")]
struct RawRateLimit {
    limit: PolicyLimit,
    name: Option<String>,
    replaces: Vec<String>,
    share_threshold: bool,
    consistency: Consistency,
    on_store_error: OnStoreError,
    lease: Option<u64>,
}

impl TryFrom<RateLimitFields> for RawRateLimit {
    type Error = String;

    fn try_from(f: RateLimitFields) -> Result<Self, String> {
        // The YAML library locates this error at the enclosing descriptor; name the block.
        // Errors that name a field of the block already start with `rate_limit.`.
        Self::check(f).map_err(|e| {
            if e.starts_with("rate_limit.") {
                e
            } else {
                format!("rate_limit: {e}")
            }
        })
    }
}

impl RawRateLimit {
    fn check(f: RateLimitFields) -> Result<Self, String> {
        if let Some(own) = &f.name
            && f.replaces.iter().any(|r| &r.name.0 == own)
        {
            return Err(format!(
                "replaces must not name the policy itself ('{own}')"
            ));
        }
        let limit = if f.unlimited {
            if let Some(unit) = f.unit {
                return Err(format!(
                    "unit '{}' must not be set when unlimited is true",
                    unit.0
                ));
            }
            if f.algorithm.is_some() || f.burst.is_some() || f.period.is_some() {
                return Err(
                    "algorithm, burst and period must not be set when unlimited is true".into(),
                );
            }
            PolicyLimit::Unlimited
        } else {
            let requests = u64::from(f.requests_per_unit.or(f.max_in_flight).unwrap_or(0));
            let algorithm = f.algorithm.map_or(Algorithm::FixedWindow, |a| a.0);
            if f.burst.is_some() && algorithm != Algorithm::Gcra {
                return Err(format!(
                    "burst applies only to algorithm gcra, not {}",
                    algorithm.as_str()
                ));
            }
            if algorithm != Algorithm::Quota
                && (f.period.is_some() || f.time_zone.is_some() || f.anchor_day.is_some())
            {
                return Err(format!(
                    "period, time_zone and anchor_day apply only to algorithm quota, not {}",
                    algorithm.as_str()
                ));
            }
            if algorithm != Algorithm::Concurrency && f.max_in_flight.is_some() {
                return Err(format!(
                    "max_in_flight applies only to algorithm concurrency, not {}",
                    algorithm.as_str()
                ));
            }
            let (unit, calendar) = if algorithm == Algorithm::Concurrency {
                if f.unit.is_some() || f.requests_per_unit.is_some() {
                    return Err(
                        "a concurrency limit counts slots held, not requests per unit: \
                                set max_in_flight instead of unit and requests_per_unit"
                            .into(),
                    );
                }
                if f.consistency
                    .as_ref()
                    .is_some_and(|c| c.0 != Consistency::Global)
                {
                    return Err("a concurrency limit's slots are held in the store that \
                                every node shares: consistency must be global"
                        .into());
                }
                (Unit::Second, None)
            } else if algorithm == Algorithm::Quota {
                if f.unit.is_some() {
                    return Err(
                        "a quota counts in calendar windows: set period (day, week, \
                                month or year) instead of unit"
                            .into(),
                    );
                }
                let period = f
                    .period
                    .ok_or("period is required for algorithm quota (day, week, month or year)")?
                    .0;
                let calendar = Calendar::new(period, f.time_zone.as_deref(), f.anchor_day)
                    .map_err(|e| match e {
                        CalendarError::UnknownZone(_) => format!("rate_limit.time_zone: {e}"),
                        CalendarError::AnchorOutOfRange(_) | CalendarError::AnchorNeedsMonth(_) => {
                            format!("rate_limit.anchor_day: {e}")
                        }
                    })?;
                (Unit::of_period(period), Some(Arc::new(calendar)))
            } else {
                let unit = f
                    .unit
                    .ok_or("unit is required (second, minute, hour, day, week, month or year)")?
                    .0;
                (unit, None)
            };
            let limit = match algorithm {
                Algorithm::FixedWindow => Limit::fixed_window(requests, unit.nanos()),
                Algorithm::SlidingWindow => Limit::sliding_window(requests, unit.nanos()),
                Algorithm::Gcra => Limit::gcra(requests, unit.nanos(), f.burst.unwrap_or(requests)),
                Algorithm::Quota => Limit::quota(requests, unit.nanos()),
                Algorithm::Concurrency => {
                    let max = f.max_in_flight.ok_or(
                        "max_in_flight is required for algorithm concurrency (slots held at once)",
                    )?;
                    Limit::concurrency(u64::from(max))
                }
            }
            .map_err(|e| e.to_string())?;
            PolicyLimit::Limited {
                limit,
                unit,
                requests_per_unit: requests,
                calendar,
            }
        };
        let consistency = f.consistency.map_or_else(Consistency::default, |c| c.0);
        if let Some(lease) = f.lease {
            if consistency != Consistency::Leased {
                return Err("lease applies only to consistency: leased".into());
            }
            let burst = match &limit {
                PolicyLimit::Limited { limit, .. } => limit.burst(),
                PolicyLimit::Unlimited => 0,
            };
            if lease == 0 || lease > burst {
                return Err(format!(
                    "lease must be between 1 and the limit's burst ({burst}), got {lease}"
                ));
            }
        }
        Ok(Self {
            limit,
            name: f.name.filter(|n| !n.is_empty()),
            replaces: f.replaces.into_iter().map(|r| r.name.0).collect(),
            share_threshold: f.share_threshold,
            consistency,
            on_store_error: f.on_store_error.map_or_else(OnStoreError::default, |o| o.0),
            lease: f.lease,
        })
    }
}

/// Declares a string field that must not be empty. The YAML library reports the path of the
/// enclosing mapping, so the message names the field itself.
macro_rules! non_empty {
    ($wrapper:ident, $field:literal) => {
        struct $wrapper(String);

        impl<'de> Deserialize<'de> for $wrapper {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                if s.is_empty() {
                    return Err(de::Error::custom(concat!($field, ": must not be empty")));
                }
                Ok($wrapper(s))
            }
        }
    };
}

non_empty!(KeyName, "key");
non_empty!(ReplaceName, "name");

/// Declares a field holding one of a fixed set of names, matched case-insensitively.
macro_rules! named_enum {
    ($wrapper:ident, $ty:ty, $field:literal, $what:literal, [$first:literal => $fv:expr $(, $name:literal => $value:expr)* $(,)?]) => {
        struct $wrapper($ty);

        impl<'de> Deserialize<'de> for $wrapper {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                if s.eq_ignore_ascii_case($first) { return Ok($wrapper($fv)); }
                $(if s.eq_ignore_ascii_case($name) { return Ok($wrapper($value)); })*
                Err(de::Error::custom(format!(
                    concat!($field, ": invalid ", $what, " '{}' (expected one of: ", $first, $(", ", $name,)* ")"),
                    s
                )))
            }
        }
    };
}

named_enum!(AlgorithmName, Algorithm, "algorithm", "algorithm", [
    "fixed_window" => Algorithm::FixedWindow,
    "gcra" => Algorithm::Gcra,
    "sliding_window" => Algorithm::SlidingWindow,
    "quota" => Algorithm::Quota,
    "concurrency" => Algorithm::Concurrency,
]);
named_enum!(PeriodName, CalendarPeriod, "period", "quota period", [
    "day" => CalendarPeriod::Day,
    "week" => CalendarPeriod::Week,
    "month" => CalendarPeriod::Month,
    "year" => CalendarPeriod::Year,
]);
named_enum!(ConsistencyName, Consistency, "consistency", "consistency", [
    "local" => Consistency::Local,
    "global" => Consistency::Global,
    "leased" => Consistency::Leased,
]);
named_enum!(OnStoreErrorName, OnStoreError, "on_store_error", "on_store_error", [
    "allow" => OnStoreError::Allow,
    "deny" => OnStoreError::Deny,
    "local" => OnStoreError::Local,
]);
named_enum!(UnitName, Unit, "unit", "rate limit unit", [
    "second" => Unit::Second,
    "minute" => Unit::Minute,
    "hour" => Unit::Hour,
    "day" => Unit::Day,
    "week" => Unit::Week,
    "month" => Unit::Month,
    "year" => Unit::Year,
]);

/// Parses one policy file (one domain). `file` only names the file in errors.
pub fn parse_policy_file(file: &str, text: &str) -> Result<Domain, PolicyError> {
    let raw: RawFile = yaml_serde::from_str(text).map_err(|e| PolicyError::from_yaml(file, &e))?;
    if raw.domain.is_empty() {
        return Err(PolicyError::whole_file(
            file,
            "domain: must not be empty".into(),
        ));
    }
    let mut domain = Domain::new(raw.domain.as_str().into(), file.into());
    let mut builder = Builder {
        file,
        domain: &mut domain,
    };
    builder.add_level(None, &raw.domain, "descriptors", &raw.descriptors, 1)?;
    Ok(domain)
}

struct Builder<'a> {
    file: &'a str,
    domain: &'a mut Domain,
}

impl Builder<'_> {
    fn error(&self, path: &str, message: impl fmt::Display) -> PolicyError {
        PolicyError::whole_file(self.file, format!("{path}: {message}"))
    }

    fn add_level(
        &mut self,
        parent: Option<u32>,
        parent_key: &str,
        path: &str,
        descriptors: &[RawDescriptor],
        depth: usize,
    ) -> Result<(), PolicyError> {
        if depth > MAX_DEPTH && !descriptors.is_empty() {
            return Err(self.error(
                path,
                format_args!("descriptor trees may be at most {MAX_DEPTH} levels deep"),
            ));
        }
        for (i, d) in descriptors.iter().enumerate() {
            let here = format!("{path}[{i}]");
            let value = d.value.as_deref().filter(|v| !v.is_empty());
            let key_part = match value {
                Some(v) => format!("{}_{}", d.key.0, v),
                None => d.key.0.clone(),
            };
            let full_key = format!("{parent_key}.{key_part}");
            let share =
                d.share_threshold || d.rate_limit.as_ref().is_some_and(|r| r.share_threshold);
            let share_pattern = match (share, value) {
                (false, _) => None,
                (true, Some(v)) if v.contains('*') => Some(v.into()),
                (true, _) => {
                    return Err(
                        self.error(&here, "share_threshold needs a value with a '*' wildcard")
                    );
                }
            };
            let policy = d.rate_limit.as_ref().map(|r| {
                let full: Arc<str> = full_key.as_str().into();
                let explicit: Option<Arc<str>> = r.name.as_deref().map(Into::into);
                Policy {
                    name: explicit.clone().unwrap_or_else(|| full.clone()),
                    explicit_name: explicit,
                    full_key: full,
                    limit: r.limit.clone(),
                    shadow_mode: d.shadow_mode,
                    quota_mode: d.quota_mode,
                    replaces: r.replaces.iter().map(|s| Arc::from(s.as_str())).collect(),
                    consistency: r.consistency,
                    on_store_error: r.on_store_error,
                    lease: r.lease,
                    metadata: d.metadata.clone().map(Arc::new),
                }
            });
            let index = self
                .domain
                .add_node(parent, &d.key.0, value, policy, share_pattern)
                .map_err(|_| {
                    self.error(&here, format_args!("duplicate descriptor '{full_key}'"))
                })?;
            self.add_level(
                Some(index),
                &full_key,
                &format!("{here}.descriptors"),
                &d.descriptors,
                depth + 1,
            )?;
        }
        Ok(())
    }
}
