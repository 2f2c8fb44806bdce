//! GraphQL at `/graphql`: the same [`ControlPlane`] calls as REST, shaped for dashboards
//! (one round trip for a nested view), plus live counters and a subscription to live
//! decisions. Depth and complexity are bounded so that no query can be made expensive.

use std::sync::Arc;

use async_graphql::futures_util::Stream;
use async_graphql::{Context, ErrorExtensions, Object, Schema, Subscription};
use tollgate_control::model::{
    ApiKey, AuditEvent, CreatedApiKey, Domain, DomainUpdate, NewApiKey, NewDomain, PageObject,
    Policy, PolicyChange, PolicySpec, graphql_error,
};
use tollgate_control::{Actor, ControlPlane, Precondition};

use super::explain::{DescriptorInput, ExplainRequest, Explanation, explain};
use tollgate_data::AppState;

/// Deepest query accepted.
pub const MAX_DEPTH: usize = 8;
/// Most expensive query accepted (each field costs 1; lists count their items' fields).
pub const MAX_COMPLEXITY: usize = 1_000;

/// The schema type.
pub type AdminSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Builds the schema over the service and the data plane's state.
pub fn schema(control: Arc<ControlPlane>, app: Arc<AppState>) -> AdminSchema {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .data(control)
        .data(app)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

fn control<'a>(ctx: &Context<'a>) -> &'a Arc<ControlPlane> {
    ctx.data_unchecked::<Arc<ControlPlane>>()
}

/// The caller, put into every request's data by the admin listener.
fn actor<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Actor> {
    ctx.data::<Actor>().map_err(|_| {
        async_graphql::Error::new("unauthenticated")
            .extend_with(|_, e| e.set("code", "UNAUTHENTICATED"))
    })
}

fn condition(if_revision: Option<i64>) -> Precondition {
    if_revision.map_or(Precondition::None, Precondition::Revision)
}

/// Reads.
pub struct QueryRoot;

#[Object]
impl QueryRoot {
    /// Domains (database and file), by name.
    async fn domains(
        &self,
        ctx: &Context<'_>,
        cursor: Option<String>,
        #[graphql(validator(minimum = 1, maximum = 500))] limit: Option<u32>,
    ) -> async_graphql::Result<PageObject<Domain>> {
        control(ctx)
            .list_domains(cursor.as_deref(), limit, actor(ctx)?)
            .await
            .map(Into::into)
            .map_err(graphql_error)
    }

    /// One domain.
    async fn domain(&self, ctx: &Context<'_>, name: String) -> async_graphql::Result<Domain> {
        control(ctx)
            .get_domain(&name, actor(ctx)?)
            .await
            .map_err(graphql_error)
    }

    /// A domain's policies, by name.
    async fn policies(
        &self,
        ctx: &Context<'_>,
        domain: String,
        cursor: Option<String>,
        #[graphql(validator(minimum = 1, maximum = 500))] limit: Option<u32>,
    ) -> async_graphql::Result<PageObject<Policy>> {
        control(ctx)
            .list_policies(&domain, cursor.as_deref(), limit, actor(ctx)?)
            .await
            .map(Into::into)
            .map_err(graphql_error)
    }

    /// One policy.
    async fn policy(
        &self,
        ctx: &Context<'_>,
        domain: String,
        name: String,
    ) -> async_graphql::Result<Policy> {
        control(ctx)
            .get_policy(&domain, &name, actor(ctx)?)
            .await
            .map_err(graphql_error)
    }

    /// A policy's changes, newest first.
    async fn history(
        &self,
        ctx: &Context<'_>,
        domain: String,
        policy: String,
        cursor: Option<String>,
        #[graphql(validator(minimum = 1, maximum = 500))] limit: Option<u32>,
    ) -> async_graphql::Result<PageObject<PolicyChange>> {
        control(ctx)
            .history(&domain, &policy, cursor.as_deref(), limit, actor(ctx)?)
            .await
            .map(Into::into)
            .map_err(graphql_error)
    }

    /// Live counters: what a request with these descriptors would meet now (nothing is
    /// consumed).
    async fn counters(
        &self,
        ctx: &Context<'_>,
        domain: String,
        #[graphql(validator(min_items = 1, max_items = 16))] descriptors: Vec<DescriptorInput>,
        hits: Option<u32>,
    ) -> async_graphql::Result<Explanation> {
        actor(ctx)?.require_read(&domain).map_err(graphql_error)?;
        let app = ctx.data_unchecked::<Arc<AppState>>();
        let request = ExplainRequest {
            domain,
            descriptors,
            hits,
        };
        explain(&app.limiter, &request).await.map_err(|e| {
            async_graphql::Error::new(e).extend_with(|_, ext| ext.set("code", "BAD_USER_INPUT"))
        })
    }

    /// Each policy's decisions and heavy hitters over the latest complete interval on
    /// this node, for the domains the caller may read.
    async fn usage(
        &self,
        ctx: &Context<'_>,
        domain: Option<String>,
    ) -> async_graphql::Result<super::usage::UsageView> {
        let app = ctx.data_unchecked::<Arc<AppState>>();
        super::usage::usage(app, domain.as_deref(), actor(ctx)?).map_err(graphql_error)
    }

    /// API keys (never their secrets), by id. Admins of every domain only.
    async fn keys(
        &self,
        ctx: &Context<'_>,
        cursor: Option<String>,
        #[graphql(validator(minimum = 1, maximum = 500))] limit: Option<u32>,
    ) -> async_graphql::Result<PageObject<ApiKey>> {
        control(ctx)
            .list_keys(cursor.as_deref(), limit, actor(ctx)?)
            .await
            .map(Into::into)
            .map_err(graphql_error)
    }

    /// The audit log, newest first. Admins of every domain only.
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        action: Option<String>,
        cursor: Option<String>,
        #[graphql(validator(minimum = 1, maximum = 500))] limit: Option<u32>,
    ) -> async_graphql::Result<PageObject<AuditEvent>> {
        control(ctx)
            .audit_log(action.as_deref(), cursor.as_deref(), limit, actor(ctx)?)
            .await
            .map(Into::into)
            .map_err(graphql_error)
    }
}

/// Writes: the same operations as REST, with `ifRevision` in place of `If-Match`.
pub struct MutationRoot;

#[Object]
impl MutationRoot {
    /// Creates a domain.
    async fn create_domain(
        &self,
        ctx: &Context<'_>,
        input: NewDomain,
    ) -> async_graphql::Result<Domain> {
        control(ctx)
            .create_domain(&input, actor(ctx)?)
            .await
            .map_err(graphql_error)
    }

    /// Changes a domain's description.
    async fn update_domain(
        &self,
        ctx: &Context<'_>,
        name: String,
        input: DomainUpdate,
        if_revision: Option<i64>,
    ) -> async_graphql::Result<Domain> {
        control(ctx)
            .update_domain(&name, &input, condition(if_revision), actor(ctx)?)
            .await
            .map_err(graphql_error)
    }

    /// Deletes a domain (with `cascade`, its policies too). True when deleted.
    async fn delete_domain(
        &self,
        ctx: &Context<'_>,
        name: String,
        if_revision: Option<i64>,
        #[graphql(default)] cascade: bool,
    ) -> async_graphql::Result<bool> {
        control(ctx)
            .delete_domain(&name, condition(if_revision), cascade, actor(ctx)?)
            .await
            .map(|()| true)
            .map_err(graphql_error)
    }

    /// Creates or replaces a policy.
    async fn put_policy(
        &self,
        ctx: &Context<'_>,
        domain: String,
        name: String,
        input: PolicySpec,
        if_revision: Option<i64>,
    ) -> async_graphql::Result<Policy> {
        control(ctx)
            .put_policy(&domain, &name, &input, condition(if_revision), actor(ctx)?)
            .await
            .map(|w| w.value)
            .map_err(graphql_error)
    }

    /// Deletes a policy. True when deleted.
    async fn delete_policy(
        &self,
        ctx: &Context<'_>,
        domain: String,
        name: String,
        if_revision: Option<i64>,
    ) -> async_graphql::Result<bool> {
        control(ctx)
            .delete_policy(&domain, &name, condition(if_revision), actor(ctx)?)
            .await
            .map(|()| true)
            .map_err(graphql_error)
    }

    /// Checks a policy as `putPolicy` would, without saving it; errors explain why not.
    async fn validate_policy(
        &self,
        ctx: &Context<'_>,
        domain: String,
        name: String,
        input: PolicySpec,
    ) -> async_graphql::Result<bool> {
        control(ctx)
            .validate_policy(&domain, &name, &input, actor(ctx)?)
            .await
            .map(|()| true)
            .map_err(graphql_error)
    }

    /// Creates an API key; the answer is the only time the key is shown.
    async fn create_key(
        &self,
        ctx: &Context<'_>,
        input: NewApiKey,
    ) -> async_graphql::Result<CreatedApiKey> {
        control(ctx)
            .create_key(&input, actor(ctx)?)
            .await
            .map_err(graphql_error)
    }

    /// Revokes an API key, on every node at once.
    async fn revoke_key(&self, ctx: &Context<'_>, id: String) -> async_graphql::Result<ApiKey> {
        control(ctx)
            .revoke_key(&id, actor(ctx)?)
            .await
            .map_err(graphql_error)
    }
}

/// One decision, as watchers see it (GraphQL's shape of the data plane's
/// [`tollgate_data::decisions::DecisionEvent`]).
#[derive(Debug, Clone, async_graphql::SimpleObject)]
pub struct DecisionEvent {
    /// The domain asked about.
    pub domain: String,
    /// The overall decision.
    pub allowed: bool,
    /// When (RFC 3339).
    pub at: String,
    /// One per descriptor, in request order.
    pub descriptors: Vec<DescriptorEvent>,
}

/// One descriptor of a [`DecisionEvent`].
#[derive(Debug, Clone, async_graphql::SimpleObject)]
pub struct DescriptorEvent {
    /// The entries as `key=value`.
    pub entries: Vec<String>,
    /// Whether this descriptor's limit admitted the request.
    pub allowed: bool,
    /// The policy that matched, if any.
    pub policy: Option<String>,
    /// What is left of the limit.
    pub remaining: u64,
    /// A shadow-mode policy that would have denied this descriptor (it was admitted).
    pub shadow_denied: bool,
}

impl From<&tollgate_data::decisions::DecisionEvent> for DecisionEvent {
    fn from(e: &tollgate_data::decisions::DecisionEvent) -> Self {
        Self {
            domain: e.domain.clone(),
            allowed: e.allowed,
            at: e.at.clone(),
            descriptors: e
                .descriptors
                .iter()
                .map(|d| DescriptorEvent {
                    entries: d.entries.clone(),
                    allowed: d.allowed,
                    policy: d.policy.clone(),
                    remaining: d.remaining,
                    shadow_denied: d.shadow_denied,
                })
                .collect(),
        }
    }
}

/// Streams.
pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// Every decision this node makes for `domain`, as it happens. A watcher that falls
    /// more than 1 024 events behind skips the oldest.
    async fn decisions(
        &self,
        ctx: &Context<'_>,
        domain: String,
    ) -> async_graphql::Result<impl Stream<Item = DecisionEvent> + use<>> {
        actor(ctx)?.require_read(&domain).map_err(graphql_error)?;
        let app = ctx.data_unchecked::<Arc<AppState>>().clone();
        let watch = app.decisions.watch();
        Ok(async_graphql::futures_util::stream::unfold(
            watch,
            move |mut watch| {
                let domain = domain.clone();
                async move {
                    loop {
                        match watch.events.recv().await {
                            Ok(event) if event.domain == domain => {
                                return Some((DecisionEvent::from(&*event), watch));
                            }
                            Ok(_) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                                tracing::debug!(skipped = n, "decision watcher fell behind");
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                        }
                    }
                }
            },
        ))
    }
}
