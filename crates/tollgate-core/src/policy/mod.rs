//! The policy model: domains, descriptor trees and the limits on their nodes.
//!
//! A [`PolicySet`] is immutable once built; a reload builds a new one and swaps it in whole
//! (see [`crate::Limiter::replace_policies`]), so the decision path reads policies without
//! locks and never sees half a change.

mod file;
mod glob;
mod metadata;
mod tree;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

pub use file::{PolicyError, parse_policy_file};
pub use metadata::{Metadata, MetadataValue, merge_metadata};
pub use tree::Match;

use crate::algorithm::Limit;
use crate::calendar::{Calendar, CalendarPeriod};
use crate::time::{Nanos, SECOND};
use tree::Level;

/// The unit of `requests_per_unit`, as in envoyproxy/ratelimit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// One second.
    Second,
    /// 60 seconds.
    Minute,
    /// 3 600 seconds.
    Hour,
    /// 86 400 seconds (windows start at midnight UTC).
    Day,
    /// 7 days (windows aligned to the UNIX epoch, a Thursday, as envoyproxy/ratelimit does).
    Week,
    /// 30 days (envoyproxy/ratelimit's divider; calendar months belong to quotas).
    Month,
    /// 365 days.
    Year,
}

impl Unit {
    /// Every unit, in increasing length.
    pub const ALL: [Unit; 7] = [
        Unit::Second,
        Unit::Minute,
        Unit::Hour,
        Unit::Day,
        Unit::Week,
        Unit::Month,
        Unit::Year,
    ];

    /// The unit's length in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            Unit::Week => 604_800,
            Unit::Month => 2_592_000,
            Unit::Year => 31_536_000,
        }
    }

    /// The unit's length in nanoseconds.
    pub fn nanos(self) -> Nanos {
        self.seconds() * SECOND
    }

    /// The lower-case name used in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
            Unit::Year => "year",
        }
    }

    /// The unit a calendar period is reported as (gRPC's `current_limit`, headers).
    pub fn of_period(period: CalendarPeriod) -> Unit {
        match period {
            CalendarPeriod::Day => Unit::Day,
            CalendarPeriod::Week => Unit::Week,
            CalendarPeriod::Month => Unit::Month,
            CalendarPeriod::Year => Unit::Year,
        }
    }

    /// Parses a unit name, case-insensitively (envoyproxy/ratelimit accepts `SECOND` too).
    pub fn parse(name: &str) -> Option<Unit> {
        Unit::ALL
            .into_iter()
            .find(|u| u.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a policy's counters live: the CAP choice, made per policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Counters in this node's memory only: always available, N nodes admit up to N×.
    Local,
    /// One atomic operation per decision in the shared store: exact across nodes.
    #[default]
    Global,
    /// Blocks of tokens leased from the shared store and spent locally.
    Leased,
}

/// What a policy does when its store cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnStoreError {
    /// Fail open: admit (envoyproxy/ratelimit's behaviour with Envoy's default filter).
    #[default]
    Allow,
    /// Fail closed: deny.
    Deny,
    /// Fall back to a node-local counter.
    Local,
}

/// What a matched node limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyLimit {
    /// A real limit.
    Limited {
        /// The decision rule.
        limit: Limit,
        /// The configured unit (reported back to callers).
        unit: Unit,
        /// The configured `requests_per_unit`.
        requests_per_unit: u64,
        /// `algorithm: quota`: the calendar that gives each decision its window.
        calendar: Option<Arc<Calendar>>,
    },
    /// Matched, counted in metrics, never limited (`unlimited: true`).
    Unlimited,
}

/// One rate-limit rule: the `rate_limit` block of a descriptor-tree node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The name reported to callers: `rate_limit.name` if set, else [`Policy::full_key`].
    pub name: Arc<str>,
    /// `rate_limit.name`, the only name `replaces` can refer to.
    pub explicit_name: Option<Arc<str>>,
    /// The node's path, envoy style: `domain.key_value.subkey`.
    pub full_key: Arc<str>,
    /// The limit.
    pub limit: PolicyLimit,
    /// Evaluate and count, but never deny.
    pub shadow_mode: bool,
    /// envoyproxy/ratelimit's `quota_mode`: over its limit, this descriptor reports
    /// `OVER_LIMIT` but denies the request only if every quota-mode descriptor of the
    /// request is over too.
    pub quota_mode: bool,
    /// Names of policies this one replaces when both match one request.
    pub replaces: Box<[Arc<str>]>,
    /// Where the counters live.
    pub consistency: Consistency,
    /// Behaviour when the store fails.
    pub on_store_error: OnStoreError,
    /// With `consistency: leased`: tokens per lease (default: a tenth of the burst).
    pub lease: Option<u64>,
    /// The descriptor's `metadata`, returned in gRPC dynamic metadata when enabled.
    pub metadata: Option<Arc<Metadata>>,
}

/// All policies of one domain, as a descriptor tree.
#[derive(Debug)]
pub struct Domain {
    name: Arc<str>,
    source: Arc<str>,
    policies: Vec<Arc<Policy>>,
    nodes: Vec<tree::Node>,
    root: Level,
}

impl Domain {
    /// The domain's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Where the domain came from (a file path, for file-sourced domains).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every policy of the domain, in file order.
    pub fn policies(&self) -> &[Arc<Policy>] {
        &self.policies
    }
}

/// Every domain Tollgate knows, keyed by name. Immutable.
#[derive(Debug, Default)]
pub struct PolicySet {
    domains: HashMap<Box<str>, Domain, foldhash::fast::FixedState>,
}

impl PolicySet {
    /// An empty set: every request matches nothing and is allowed.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Builds a set from policy files given as `(name, contents)`, one domain per file.
    ///
    /// Collects the errors of every file rather than stopping at the first.
    pub fn from_files<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, Vec<PolicyError>> {
        let mut set = Self::default();
        let mut errors = Vec::new();
        for (name, text) in files {
            match parse_policy_file(name, text) {
                Ok(domain) => {
                    if let Some(existing) = set.domains.get(&*domain.name) {
                        errors.push(PolicyError::whole_file(
                            name,
                            format!(
                                "domain '{}' is already defined in {}",
                                domain.name, existing.source
                            ),
                        ));
                    } else {
                        set.domains.insert(domain.name.as_ref().into(), domain);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }

    /// The domain called `name`.
    pub fn domain(&self, name: &str) -> Option<&Domain> {
        self.domains.get(name)
    }

    /// All domains, in no particular order.
    pub fn domains(&self) -> impl Iterator<Item = &Domain> {
        self.domains.values()
    }

    /// How many domains.
    pub fn len(&self) -> usize {
        self.domains.len()
    }

    /// Whether there are no domains.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }
}
