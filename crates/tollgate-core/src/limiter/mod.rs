//! The decision engine: request → matched policies → one atomic store batch → decision.

mod batch;
mod holds;
mod named;
mod shared;
mod usage;

pub use holds::{HoldError, Reservation, hold_ttl_from_millis};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use smallvec::SmallVec;

use crate::descriptor::{CheckRequest, LimitOverride, RequestError, RequestLimits};
use crate::key::{CounterKey, KeyHasher};
use crate::lease::LeaseTable;
use crate::policy::{Consistency, Domain, OnStoreError, Policy, PolicyLimit, PolicySet, Unit};
use crate::store::{
    CommitRule, LimitOp, MemoryStore, MemoryStoreConfig, Store, StoreError, batch_admits,
};
use crate::time::{Clock, Nanos, SECOND, Span};

/// What decided one descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// A policy of the domain.
    Policy(Arc<Policy>),
    /// A limit the caller sent with the descriptor.
    Override(LimitOverride),
}

impl Rule {
    /// The name reported to callers.
    pub fn name(&self) -> &str {
        match self {
            Rule::Policy(p) => &p.name,
            Rule::Override(_) => "override",
        }
    }

    /// `(requests_per_unit, unit)` of a rule that is a rate; `None` for an unlimited
    /// policy and for a concurrency limit, which caps what is in flight, not a rate.
    pub fn rate(&self) -> Option<(u64, Unit)> {
        match self {
            Rule::Policy(p) => match &p.limit {
                PolicyLimit::Limited { limit, .. }
                    if limit.algorithm() == crate::Algorithm::Concurrency =>
                {
                    None
                }
                PolicyLimit::Limited {
                    unit,
                    requests_per_unit,
                    ..
                } => Some((*requests_per_unit, *unit)),
                PolicyLimit::Unlimited => None,
            },
            Rule::Override(o) => Some((u64::from(o.requests_per_unit), o.unit)),
        }
    }

    /// Whether the rule limits anything (false for an `unlimited` policy).
    pub fn is_limited(&self) -> bool {
        !matches!(self, Rule::Policy(p) if p.limit == PolicyLimit::Unlimited)
    }

    /// The most requests admitted at once (the quota advertised in rate-limit headers).
    pub fn quota(&self) -> Option<u64> {
        match self {
            Rule::Policy(p) => match &p.limit {
                PolicyLimit::Limited { limit, .. } => Some(limit.burst()),
                PolicyLimit::Unlimited => None,
            },
            Rule::Override(o) => Some(u64::from(o.requests_per_unit)),
        }
    }
}

/// The answer for one descriptor of a request, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorStatus {
    /// Whether this descriptor admits the request (always true in shadow mode).
    pub allowed: bool,
    /// What decided it; `None` when no policy matched (or its policy was replaced).
    pub rule: Option<Rule>,
    /// Requests left after this decision; `u64::MAX` when unlimited or unmatched.
    pub remaining: u64,
    /// Nanoseconds until the counter is full again.
    pub reset_after: Span,
    /// When denied: nanoseconds until the same request could pass, if it ever can.
    pub retry_after: Option<Span>,
    /// A shadow-mode policy would have denied; the request was admitted anyway.
    pub shadow_denied: bool,
    /// The limit is in quota mode (`quota_mode`, or the global setting): over it, this
    /// status says so (`allowed: false`) while the request is denied only if every
    /// quota-mode status of the request is over too.
    pub quota_mode: bool,
    /// The store failed and the policy's `on_store_error` decided instead.
    pub store_failed: bool,
    /// For a calendar quota, the length of its current window in nanoseconds (a month of
    /// 28 to 31 days, a day of 23 to 25 hours across a DST change); `None` otherwise, where
    /// the window is the policy's unit.
    pub window: Option<Span>,
}

impl DescriptorStatus {
    fn unmatched() -> Self {
        Self {
            allowed: true,
            rule: None,
            remaining: u64::MAX,
            reset_after: 0,
            retry_after: None,
            shadow_denied: false,
            quota_mode: false,
            store_failed: false,
            window: None,
        }
    }
}

/// The answer to a [`CheckRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Admitted only if every enforced descriptor admits (quota-mode descriptors: at
    /// least one of them).
    pub allowed: bool,
    /// One status per request descriptor, in order.
    pub statuses: SmallVec<[DescriptorStatus; 2]>,
    /// The domain's name when it is configured (`None`: unknown domain, nothing matched).
    pub domain: Option<Arc<str>>,
    /// The store error that fallbacks answered, if any.
    pub store_error: Option<StoreError>,
}

/// Options of a [`Limiter`].
#[derive(Debug, Clone)]
pub struct LimiterConfig {
    /// Bounds on request size.
    pub request_limits: RequestLimits,
    /// Seed of counter keys (16 random bytes; nodes sharing a store share it).
    pub key_seed: [u8; 16],
    /// Global shadow mode: every policy is evaluated and counted, none ever denies
    /// (envoyproxy/ratelimit's `SHADOW_MODE`).
    pub shadow_mode: bool,
    /// Global quota mode: every limit is in quota mode (envoyproxy/ratelimit's
    /// `QUOTA_MODE`): the request is denied only when every limited descriptor is over
    /// (and none is unmatched).
    pub quota_mode: bool,
    /// How counters are charged: Tollgate's all-or-nothing (a denial consumes nothing) or
    /// envoyproxy/ratelimit's "every request counts".
    pub commit_rule: CommitRule,
    /// How many nodes share the store: `on_store_error: local` enforces `limit / nodes`.
    pub nodes: u64,
    /// `consistency: leased` takes `burst / lease_divisor` tokens per round trip.
    pub lease_divisor: u64,
    /// Longest time a leased token may wait to be spent.
    pub lease_ttl: Nanos,
    /// Most counters this node keeps for `consistency: local` and `on_store_error: local`.
    pub local_max_keys: usize,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self {
            request_limits: RequestLimits::default(),
            key_seed: [0x5a; 16],
            shadow_mode: false,
            quota_mode: false,
            commit_rule: CommitRule::AllOrNothing,
            nodes: 1,
            lease_divisor: 10,
            lease_ttl: SECOND,
            local_max_keys: MemoryStoreConfig::default().max_keys,
        }
    }
}

/// The rate limiter: policies (swappable at runtime), a counter store and a clock.
pub struct Limiter {
    policies: ArcSwap<PolicySet>,
    store: Arc<dyn Store>,
    /// This node's counters: `consistency: local` and `on_store_error: local`.
    local: MemoryStore,
    /// Tokens leased from a shared store.
    leases: LeaseTable,
    /// Unspent leased tokens handed back to the store so far, by either path: the next
    /// full fetch of an expired lease, or [`Limiter::return_expired_leases`].
    lease_tokens_returned: AtomicU64,
    clock: Arc<dyn Clock>,
    keys: KeyHasher,
    request_limits: RequestLimits,
    shadow_mode: bool,
    quota_mode: bool,
    commit_rule: CommitRule,
    nodes: u64,
    lease_divisor: u64,
    lease_ttl: Nanos,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("store", &self.store.kind())
            .finish_non_exhaustive()
    }
}

/// A request resolved to store ops, waiting for the store. Sized for the common case of
/// one or two descriptors without touching the heap.
#[derive(Default)]
struct Plan {
    statuses: SmallVec<[DescriptorStatus; 2]>,
    /// For each status: its counter key while planning, then the index of its op.
    keys: SmallVec<[Option<CounterKey>; 2]>,
    op_of: SmallVec<[Option<usize>; 2]>,
    ops: SmallVec<[LimitOp; 2]>,
    on_error: SmallVec<[OnStoreError; 2]>,
    consistency: SmallVec<[Consistency; 2]>,
    /// Per op: the policy's tokens per lease, if it sets one.
    lease: SmallVec<[Option<u64>; 2]>,
    /// Per op: the store failed and `on_store_error` answered.
    failed: SmallVec<[bool; 2]>,
    /// Per op: a shadow-mode limit (its own `shadow_mode`, or the global one), which never
    /// denies. A quota-mode op may also run unenforced, when its group is satisfied
    /// elsewhere; it still reports its own verdict.
    shadow: SmallVec<[bool; 2]>,
    store_error: Option<StoreError>,
    domain: Option<Arc<str>>,
    now: Nanos,
}

impl Limiter {
    /// A limiter over `store` with `policies`.
    pub fn new(
        policies: PolicySet,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: LimiterConfig,
    ) -> Self {
        Self {
            policies: ArcSwap::from_pointee(policies),
            store,
            local: MemoryStore::new(MemoryStoreConfig {
                max_keys: config.local_max_keys,
                ..MemoryStoreConfig::default()
            }),
            leases: LeaseTable::default(),
            lease_tokens_returned: AtomicU64::new(0),
            clock,
            keys: KeyHasher::new(config.key_seed),
            request_limits: config.request_limits,
            shadow_mode: config.shadow_mode,
            quota_mode: config.quota_mode,
            commit_rule: config.commit_rule,
            nodes: config.nodes.max(1),
            lease_divisor: config.lease_divisor.max(1),
            lease_ttl: config.lease_ttl.max(1),
        }
    }

    /// Swaps in a new policy set. Counters of limits that did not change are kept, because
    /// counter keys depend on the descriptor, not on the policy version.
    pub fn replace_policies(&self, policies: PolicySet) {
        self.policies.store(Arc::new(policies));
    }

    /// The policies in force.
    pub fn policies(&self) -> Arc<PolicySet> {
        self.policies.load_full()
    }

    /// The counter store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Decides `request`. Fails only on a malformed request; store failures are answered by
    /// each policy's `on_store_error`.
    pub async fn check(&self, request: &CheckRequest<'_>) -> Result<Decision, RequestError> {
        let mut plan = Plan::default();
        self.plan(request, &mut plan)?;
        if self.store.is_shared() {
            self.decide_shared(&mut plan).await;
        } else {
            // One store for everything: every consistency is simply exact.
            let rule = self.commit_rule;
            let result = match self.store.apply_now(&mut plan.ops, plan.now, rule) {
                Some(result) => result,
                None => self.store.apply(&mut plan.ops, plan.now, rule).await,
            };
            self.store_answered(&mut plan, result);
        }
        Ok(self.finish(&mut plan))
    }

    /// Takes the store's answer to all of `plan`'s ops at once: on a failure every op is
    /// answered by its policy's `on_store_error`, and on a shared store whatever a `local`
    /// fallback took is given back if the request is then denied (all or nothing).
    fn store_answered(&self, plan: &mut Plan, result: Result<(), StoreError>) {
        let Err(e) = result else { return };
        let all: SmallVec<[usize; 4]> = (0..plan.ops.len()).collect();
        let taken = self.answer_without_store(plan, &all, e);
        if self.store.is_shared()
            && self.commit_rule == CommitRule::AllOrNothing
            && !batch_admits(&plan.ops)
        {
            self.local.refund(&taken, plan.now);
        }
    }

    /// [`Limiter::check`] without waiting, for a store that answers at once (in memory):
    /// `None`, with nothing done, when the store is shared or would have to be waited for.
    /// Lets a caller in a synchronous context (a tower layer's `call`) skip building a
    /// future.
    pub fn check_now(&self, request: &CheckRequest<'_>) -> Option<Result<Decision, RequestError>> {
        if self.store.is_shared() {
            return None;
        }
        let mut plan = Plan::default();
        if let Err(e) = self.plan(request, &mut plan) {
            return Some(Err(e));
        }
        let result = self
            .store
            .apply_now(&mut plan.ops, plan.now, self.commit_rule)?;
        self.store_answered(&mut plan, result);
        Some(Ok(self.finish(&mut plan)))
    }

    /// What `request` would see now, without consuming anything: each matched policy and
    /// its counter's remaining allowance (every op at cost 0). Leased counters are read
    /// from the shared store, so tokens other nodes hold in leases count as spent.
    pub async fn peek(&self, request: &CheckRequest<'_>) -> Result<Decision, RequestError> {
        let mut plan = Plan::default();
        self.plan(request, &mut plan)?;
        for op in plan.ops.iter_mut() {
            op.cost = 0;
        }
        self.apply_where_read(&mut plan, self.commit_rule).await;
        Ok(self.finish(&mut plan))
    }

    /// Applies every op of `plan` under `rule` where checks and peeks read its counter:
    /// this node's memory for `local` ops on a shared store, the store for the rest
    /// (leased counters included, so what other nodes hold counts). Store failures are
    /// answered by each policy's `on_store_error`.
    async fn apply_where_read(&self, plan: &mut Plan, rule: CommitRule) {
        let now = plan.now;
        let shared = self.store.is_shared();
        let (local, stored): (SmallVec<[usize; 4]>, SmallVec<[usize; 4]>) =
            (0..plan.ops.len()).partition(|&i| shared && plan.consistency[i] == Consistency::Local);
        if !local.is_empty() {
            let mut ops: SmallVec<[LimitOp; 4]> = local.iter().map(|&i| plan.ops[i]).collect();
            self.local.apply_with(&mut ops, now, rule);
            for (op, &i) in ops.into_iter().zip(&local) {
                plan.ops[i].outcome = op.outcome;
            }
        }
        if !stored.is_empty() {
            let mut ops: SmallVec<[LimitOp; 4]> = stored.iter().map(|&i| plan.ops[i]).collect();
            match self.store.apply(&mut ops, now, rule).await {
                Ok(()) => {
                    for (op, &i) in ops.into_iter().zip(&stored) {
                        plan.ops[i].outcome = op.outcome;
                    }
                }
                Err(e) => {
                    self.answer_without_store(plan, &stored, e);
                }
            }
        }
    }

    fn plan(&self, request: &CheckRequest<'_>, plan: &mut Plan) -> Result<(), RequestError> {
        request.validate(&self.request_limits)?;
        let policies = self.policies.load();
        let domain: Option<&Domain> = policies.domain(request.domain);
        plan.domain = domain.map(|d| d.name().clone());
        plan.now = self.clock.now();
        // Match every descriptor first: `replaces` needs to see all matches.
        for descriptor in request.descriptors {
            let mut status = DescriptorStatus::unmatched();
            let mut key = None;
            if let Some(limit_override) = descriptor.limit_override {
                key = Some(Domain::override_key(
                    request.domain,
                    descriptor.entries,
                    &self.keys,
                ));
                status.rule = Some(Rule::Override(limit_override));
            } else if let Some(d) = domain
                && let Some(m) = d.find(descriptor.entries)
            {
                if let PolicyLimit::Limited { limit, .. } = &m.policy.limit {
                    let tag = limit.algorithm().tag();
                    key = Some(d.counter_key(&m, descriptor.entries, tag, &self.keys));
                }
                status.rule = Some(Rule::Policy(m.policy.clone()));
            }
            plan.statuses.push(status);
            plan.keys.push(key);
        }
        drop_replaced(&mut plan.statuses);
        // Shared stores keep a domain's counters together by it (Redis Cluster hash tags).
        let group = if self.store.is_shared() {
            self.keys.group(request.domain)
        } else {
            0
        };
        for (i, descriptor) in request.descriptors.iter().enumerate() {
            let (limit, enforce, quota, on_error, consistency, lease) = match &plan.statuses[i].rule
            {
                None => (
                    None,
                    true,
                    false,
                    OnStoreError::default(),
                    Consistency::default(),
                    None,
                ),
                Some(Rule::Override(o)) => (
                    Some(o.limit()),
                    true,
                    self.quota_mode,
                    OnStoreError::default(),
                    Consistency::default(),
                    None,
                ),
                Some(Rule::Policy(p)) => match &p.limit {
                    PolicyLimit::Limited {
                        limit, calendar, ..
                    } => (
                        Some(match calendar {
                            Some(calendar) => {
                                let window = calendar.window_at(plan.now);
                                limit.in_window(window.start, window.end)
                            }
                            None => *limit,
                        }),
                        !p.shadow_mode,
                        p.quota_mode || self.quota_mode,
                        p.on_store_error,
                        p.consistency,
                        p.lease,
                    ),
                    PolicyLimit::Unlimited => {
                        (None, true, false, p.on_store_error, p.consistency, None)
                    }
                },
            };
            let mut op_index = None;
            if let (Some(limit), Some(key)) = (limit, plan.keys[i]) {
                op_index = Some(plan.ops.len());
                let cost = request.cost_of(descriptor);
                let mut op = LimitOp::new(key, limit, cost, enforce && !self.shadow_mode);
                op.group = group;
                op.quota = quota;
                plan.statuses[i].quota_mode = quota;
                plan.ops.push(op);
                plan.shadow.push(!op.enforce);
                plan.on_error.push(on_error);
                plan.consistency.push(consistency);
                plan.lease.push(lease);
                plan.failed.push(false);
            }
            plan.op_of.push(op_index);
        }
        // envoyproxy/ratelimit counts a descriptor without a limit (unmatched, or replaced)
        // as a quota-mode descriptor that passed when quota mode is global: the group is
        // then satisfied and its ops decide nothing.
        if self.quota_mode {
            let unlimited = |s: &DescriptorStatus| matches!(&s.rule, Some(Rule::Policy(p)) if p.limit == PolicyLimit::Unlimited);
            let unmatched = (plan.statuses.iter().zip(&plan.op_of))
                .any(|(s, op)| op.is_none() && !unlimited(s));
            if unmatched {
                for op in plan.ops.iter_mut().filter(|op| op.quota) {
                    op.enforce = false;
                }
            }
        }
        Ok(())
    }

    fn finish(&self, plan: &mut Plan) -> Decision {
        let admitted = batch_admits(&plan.ops);
        for (status, op_index) in plan.statuses.iter_mut().zip(&plan.op_of) {
            let Some(i) = *op_index else { continue };
            let op = &plan.ops[i];
            let Some(outcome) = op.outcome else { continue };
            status.store_failed = plan.failed[i];
            if op.limit.algorithm() == crate::Algorithm::Quota {
                status.window = Some(Span::from(op.limit.period()));
            }
            status.reset_after = outcome.reset_after;
            status.retry_after = outcome.retry_after;
            status.remaining = outcome.remaining;
            if outcome.allowed {
                status.allowed = true;
            } else if plan.shadow[i] {
                status.allowed = true;
                status.shadow_denied = true;
            } else {
                // Enforced, or a quota-mode limit: each status reports its own verdict.
                status.allowed = false;
            }
        }
        Decision {
            allowed: admitted,
            statuses: std::mem::take(&mut plan.statuses),
            domain: plan.domain.take(),
            store_error: plan.store_error.take(),
        }
    }

    /// Drops this node's expired local counters; the server calls it with its other
    /// housekeeping.
    pub fn sweep(&self, now: Nanos) -> usize {
        self.local.sweep(now)
    }

    /// Hands the unspent tokens of expired leases back to the shared store, so that other
    /// nodes can use them; returns how many tokens went back. The server calls it every few
    /// seconds. A failed hand-back only loses those tokens for the rest of their window.
    pub async fn return_expired_leases(&self) -> u64 {
        let now = self.clock.now();
        self.hand_back(self.leases.drain_expired(now), now).await
    }

    /// Hands every lease's unspent tokens back to the shared store, spent or not, and
    /// forgets the leases: the server calls it when it stops, so a restart does not strand
    /// what it held (the rest of the tokens' window, for every other node).
    pub async fn return_all_leases(&self) -> u64 {
        let now = self.clock.now();
        self.hand_back(self.leases.drain_all(now), now).await
    }

    async fn hand_back(&self, leases: Vec<crate::lease::ExpiredLease>, now: Nanos) -> u64 {
        let mut returned = 0;
        for lease in leases {
            let mut op = LimitOp::new(lease.key, lease.limit, 0, true);
            op.group = lease.group;
            if self.store.lease(&op, lease.unused, 0, now).await.is_ok() {
                returned += lease.unused;
            }
        }
        self.lease_tokens_returned
            .fetch_add(returned, Ordering::Relaxed);
        returned
    }

    /// Unspent leased tokens this limiter has handed back to the shared store since it
    /// started, on an expired lease's next fetch or by [`Limiter::return_expired_leases`]
    /// (`tollgate_lease_tokens_returned_total`).
    pub fn lease_tokens_returned(&self) -> u64 {
        self.lease_tokens_returned.load(Ordering::Relaxed)
    }
}

/// envoyproxy/ratelimit's `replaces`: a matched policy named in another matched policy's
/// `replaces` list is dropped from the request, and its counter is left alone.
fn drop_replaced(statuses: &mut [DescriptorStatus]) {
    let replaces = |s: &DescriptorStatus| match &s.rule {
        Some(Rule::Policy(p)) => !p.replaces.is_empty(),
        _ => false,
    };
    if !statuses.iter().any(replaces) {
        return;
    }
    let replaced: Vec<Arc<str>> = statuses
        .iter()
        .filter_map(|s| match &s.rule {
            Some(Rule::Policy(p)) => Some(p.replaces.iter().cloned()),
            _ => None,
        })
        .flatten()
        .collect();
    for status in statuses.iter_mut() {
        if let Some(Rule::Policy(p)) = &status.rule
            && p.explicit_name
                .as_ref()
                .is_some_and(|name| replaced.contains(name))
        {
            *status = DescriptorStatus::unmatched();
        }
    }
}
