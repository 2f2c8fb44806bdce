//! The admin listener (default 127.0.0.1:8082): REST under `/v1/admin/` with its OpenAPI
//! document, GraphQL at `/graphql` (GraphiQL on GET, subscriptions over WebSocket at
//! `/graphql/ws`). Both are adapters over one [`ControlPlane`].

pub mod explain;
pub mod graphql;
pub mod reference;
pub mod rest;

use std::sync::Arc;
use std::time::Instant;

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse, GraphQLSubscription};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use tollgate_control::ControlPlane;
use utoipa::OpenApi;

use crate::http::AppState;
use crate::http::problem::Problem;
use crate::http::request_id::{REQUEST_ID, RequestId};
use graphql::AdminSchema;

/// Largest admin request body (policy files included).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Longest an admin request may take before it is answered with 503 (a stuck database
/// must not pile up requests). WebSocket subscriptions are exempt once upgraded.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What admin handlers share.
pub struct AdminState {
    /// The domain service.
    pub control: Arc<ControlPlane>,
    /// The data plane (for explain and live counters).
    pub app: Arc<AppState>,
    /// The GraphQL schema.
    pub schema: AdminSchema,
    /// The OpenAPI document, rendered once.
    pub openapi: String,
}

/// The OpenAPI 3.1 document of the REST admin API, generated from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(title = "Tollgate admin API", description = "Domains, policies and their history; dry runs and explanations. Errors are RFC 9457 problem details; writes take If-Match with the ETag a read returned."),
    paths(
        rest::list_domains, rest::create_domain, rest::get_domain, rest::update_domain,
        rest::delete_domain, rest::get_document, rest::put_document, rest::list_policies,
        rest::get_policy, rest::put_policy, rest::delete_policy, rest::history,
        rest::validate, explain_handler
    ),
    tags((name = "domains", description = "Namespaces of policies"),
         (name = "policies", description = "Rate-limit rules"),
         (name = "explain", description = "What a request would meet"))
)]
pub struct ApiDoc;

/// The OpenAPI document as JSON.
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

/// The admin router.
pub fn router(control: Arc<ControlPlane>, app: Arc<AppState>) -> Router {
    let schema = graphql::schema(control.clone(), app.clone());
    let state = Arc::new(AdminState {
        control,
        app,
        schema: schema.clone(),
        openapi: openapi_json(),
    });
    Router::new()
        .route("/v1/admin/openapi.json", get(rest::openapi))
        .route(
            "/v1/admin/domains",
            get(rest::list_domains).post(rest::create_domain),
        )
        .route(
            "/v1/admin/domains/{domain}",
            get(rest::get_domain)
                .put(rest::update_domain)
                .delete(rest::delete_domain),
        )
        .route(
            "/v1/admin/domains/{domain}/document",
            get(rest::get_document).put(rest::put_document),
        )
        .route(
            "/v1/admin/domains/{domain}/policies",
            get(rest::list_policies),
        )
        .route(
            "/v1/admin/domains/{domain}/policies/{policy}",
            get(rest::get_policy)
                .put(rest::put_policy)
                .delete(rest::delete_policy),
        )
        .route(
            "/v1/admin/domains/{domain}/policies/{policy}/history",
            get(rest::history),
        )
        .route("/v1/admin/validate", post(rest::validate))
        .route("/v1/admin/explain", post(explain_handler))
        .route("/graphql", get(graphiql).post(graphql_handler))
        .route_service("/graphql/ws", GraphQLSubscription::new(schema))
        .fallback(|uri: http::Uri| async move { Problem::not_found(uri.path()) })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(access_log))
        .with_state(state)
}

/// One log line per admin request, with its request id (echoed in `x-request-id`); a
/// deadline on each request; headers that keep browsers from sniffing, framing or caching
/// admin answers.
async fn access_log(request: Request, next: Next) -> Response {
    let id = RequestId::of(request.headers());
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let started = Instant::now();
    let mut response = match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Problem::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "urn:tollgate:problem:timeout",
            "Request timed out",
            format!(
                "the request took longer than {}s; retry later",
                REQUEST_TIMEOUT.as_secs()
            ),
        )
        .into_response(),
    };
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        headers.insert(name, http::HeaderValue::from_static(value));
    }
    let status = response.status().as_u16();
    tracing::info!(
        request_id = id.as_str(),
        %method,
        path,
        status,
        micros = started.elapsed().as_micros() as u64,
        "admin request"
    );
    response.headers_mut().insert(REQUEST_ID.clone(), id.0);
    response
}

/// What a request would meet now, without consuming anything.
#[utoipa::path(post, path = "/v1/admin/explain", tag = "explain", request_body = explain::ExplainRequest,
    responses((status = 200, description = "The policies matched and what is left of each", body = explain::Explanation),
              (status = 400, description = "Malformed request", body = rest::ProblemDoc, content_type = "application/problem+json")))]
async fn explain_handler(
    State(s): State<Arc<AdminState>>,
    body: Bytes,
) -> Result<Response, Problem> {
    let request: explain::ExplainRequest = rest::json_body(&body)?;
    let answer = explain::explain(&s.app.limiter, &request)
        .await
        .map_err(Problem::invalid_request)?;
    Ok(axum::Json(answer).into_response())
}

async fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .finish(),
    )
}

async fn graphql_handler(
    State(s): State<Arc<AdminState>>,
    request: GraphQLRequest,
) -> GraphQLResponse {
    s.schema.execute(request.into_inner()).await.into()
}

/// Serves the admin router on `listener` until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}
