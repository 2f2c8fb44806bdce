//! The decision engine: request → matched policies → one atomic store batch → decision.

use std::sync::Arc;

use arc_swap::ArcSwap;
use smallvec::SmallVec;

use crate::algorithm::Outcome;
use crate::descriptor::{CheckRequest, LimitOverride, RequestError, RequestLimits};
use crate::key::{CounterKey, KeyHasher};
use crate::policy::{Domain, OnStoreError, Policy, PolicyLimit, PolicySet, Unit};
use crate::store::{CommitRule, LimitOp, MemoryStore, Store, StoreError, batch_admits};
use crate::time::{Clock, Nanos};

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

    /// `(requests_per_unit, unit)`, or `None` for an unlimited policy.
    pub fn rate(&self) -> Option<(u64, Unit)> {
        match self {
            Rule::Policy(p) => match &p.limit {
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
    pub reset_after: Nanos,
    /// When denied: nanoseconds until the same request could pass, if it ever can.
    pub retry_after: Option<Nanos>,
    /// A shadow-mode policy would have denied; the request was admitted anyway.
    pub shadow_denied: bool,
    /// The store failed and the policy's `on_store_error` decided instead.
    pub store_failed: bool,
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
            store_failed: false,
        }
    }
}

/// The answer to a [`CheckRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Admitted only if every enforced descriptor admits.
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
    /// How counters are charged: Tollgate's all-or-nothing (a denial consumes nothing) or
    /// envoyproxy/ratelimit's "every request counts".
    pub commit_rule: CommitRule,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self {
            request_limits: RequestLimits::default(),
            key_seed: [0x5a; 16],
            shadow_mode: false,
            commit_rule: CommitRule::AllOrNothing,
        }
    }
}

/// The rate limiter: policies (swappable at runtime), a counter store and a clock.
pub struct Limiter {
    policies: ArcSwap<PolicySet>,
    store: Arc<dyn Store>,
    /// Node-local counters for `on_store_error: local`.
    fallback: MemoryStore,
    clock: Arc<dyn Clock>,
    keys: KeyHasher,
    request_limits: RequestLimits,
    shadow_mode: bool,
    commit_rule: CommitRule,
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
            fallback: MemoryStore::default(),
            clock,
            keys: KeyHasher::new(config.key_seed),
            request_limits: config.request_limits,
            shadow_mode: config.shadow_mode,
            commit_rule: config.commit_rule,
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
        let rule = self.commit_rule;
        let result = match self.store.apply_now(&mut plan.ops, plan.now, rule) {
            Some(result) => result,
            None => self.store.apply(&mut plan.ops, plan.now, rule).await,
        };
        Ok(self.finish(&mut plan, result))
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
        for (i, descriptor) in request.descriptors.iter().enumerate() {
            let (limit, enforce, on_error) = match &plan.statuses[i].rule {
                None => (None, true, OnStoreError::default()),
                Some(Rule::Override(o)) => (Some(o.limit()), true, OnStoreError::default()),
                Some(Rule::Policy(p)) => match &p.limit {
                    PolicyLimit::Limited { limit, .. } => {
                        (Some(*limit), !p.shadow_mode, p.on_store_error)
                    }
                    PolicyLimit::Unlimited => (None, true, p.on_store_error),
                },
            };
            let mut op_index = None;
            if let (Some(limit), Some(key)) = (limit, plan.keys[i]) {
                op_index = Some(plan.ops.len());
                let cost = request.cost_of(descriptor);
                plan.ops
                    .push(LimitOp::new(key, limit, cost, enforce && !self.shadow_mode));
                plan.on_error.push(on_error);
            }
            plan.op_of.push(op_index);
        }
        Ok(())
    }

    fn finish(&self, plan: &mut Plan, result: Result<(), StoreError>) -> Decision {
        let store_error = result.err();
        if store_error.is_some() {
            self.answer_without_store(plan);
        }
        let admitted = batch_admits(&plan.ops);
        for (status, op_index) in plan.statuses.iter_mut().zip(&plan.op_of) {
            let Some(i) = *op_index else { continue };
            let op = &plan.ops[i];
            let Some(outcome) = op.outcome else { continue };
            status.store_failed = store_error.is_some();
            status.reset_after = outcome.reset_after;
            status.retry_after = outcome.retry_after;
            status.remaining = outcome.remaining;
            if outcome.allowed {
                status.allowed = true;
            } else if op.enforce {
                status.allowed = false;
            } else {
                status.allowed = true;
                status.shadow_denied = true;
            }
        }
        Decision {
            allowed: admitted,
            statuses: std::mem::take(&mut plan.statuses),
            domain: plan.domain.take(),
            store_error,
        }
    }

    /// Fills every op's outcome from its policy's `on_store_error` after a store failure.
    fn answer_without_store(&self, plan: &mut Plan) {
        let local: SmallVec<[usize; 4]> = (0..plan.ops.len())
            .filter(|&i| plan.on_error[i] == OnStoreError::Local)
            .collect();
        if !local.is_empty() {
            let mut ops: SmallVec<[LimitOp; 4]> = local.iter().map(|&i| plan.ops[i]).collect();
            self.fallback
                .apply_with(&mut ops, plan.now, self.commit_rule);
            for (op, &i) in ops.into_iter().zip(&local) {
                plan.ops[i].outcome = op.outcome;
            }
        }
        for (op, on_error) in plan.ops.iter_mut().zip(&plan.on_error) {
            let allowed = match on_error {
                OnStoreError::Allow => true,
                OnStoreError::Deny => false,
                OnStoreError::Local => continue,
            };
            op.outcome = Some(Outcome {
                allowed,
                remaining: 0,
                reset_after: 0,
                retry_after: None,
                state: Default::default(),
            });
        }
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
