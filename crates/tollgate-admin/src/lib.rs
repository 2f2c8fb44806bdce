//! The admin listener (default 127.0.0.1:8082): REST under `/v1/admin/` with its OpenAPI
//! document, GraphQL at `/graphql` (GraphiQL on GET, subscriptions over WebSocket at
//! `/graphql/ws`). Both are adapters over one [`ControlPlane`]. Every call but the
//! OpenAPI document and the GraphiQL page is authenticated ([`access`]); what the caller
//! may do is decided by the service.

pub mod access;
pub mod explain;
pub mod graphql;
mod openapi_rules;
pub mod overview;
pub mod policies;
pub mod reference;
pub mod reload;
pub mod rest;
pub mod sync;
pub mod ui;
pub mod usage;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tollgate_api::problem::types as problem_types;

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Extension, Request, State};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use tollgate_control::{Actor, ControlPlane};
use utoipa::OpenApi;

use access::AdminAccess;
use graphql::AdminSchema;
use tollgate_data::AppState;
use tollgate_data::http::problem::Problem;
use tollgate_data::http::request_id::{REQUEST_ID, RequestId};

/// Largest admin request body (policy files included).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Most bytes of headers an admin request may carry.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

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
    /// Authentication and the brute-force guard.
    pub access: AdminAccess,
    /// The dashboard's browser sessions.
    pub sessions: ui::session::Sessions,
    /// Whether session cookies are `Secure` (the listener has TLS).
    pub secure_cookies: bool,
    /// Each domain's recent decisions per second (the dashboard's overview).
    pub history: Arc<overview::RateHistory>,
}

/// The OpenAPI 3.1 document of the REST admin API, generated from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(title = "Tollgate admin API", description = "Domains, policies and their history; dry runs and explanations. Errors are RFC 9457 problem details; writes take If-Match with the ETag a read returned."),
    paths(
        rest::list_domains, rest::create_domain, rest::get_domain, rest::update_domain,
        rest::delete_domain, rest::get_document, rest::put_document, rest::list_policies,
        rest::get_policy, rest::put_policy, rest::delete_policy, rest::history,
        rest::validate, explain_handler, rest::list_keys, rest::create_key, rest::revoke_key,
        rest::audit_log, usage_handler, overview_handler
    ),
    modifiers(&BearerAuth, &AccessResponses),
    security(("bearer" = [])),
    tags((name = "domains", description = "Namespaces of policies"),
         (name = "policies", description = "Rate-limit rules"),
         (name = "explain", description = "What a request would meet"),
         (name = "usage", description = "Decisions and heavy hitters per policy"),
         (name = "overview", description = "Decisions per second and the node's health"),
         (name = "access", description = "API keys and the audit log (admins of every domain)"))
)]
pub struct ApiDoc;

/// Declares the bearer scheme (an API key `tg_...` or a JWT) every operation requires.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key (tg_...) or a JWT"))
                    .build(),
            ),
        );
    }
}

/// The answers of the authentication layer ([`access`]), which every operation can give
/// whatever it does: declared here once, added to each operation.
struct AccessResponses;

impl utoipa::Modify for AccessResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let problem = || {
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ProblemDoc")))
                .build()
        };
        let answers = [
            ("401", "No valid API key or token"),
            ("403", "The caller's role or domains do not allow it"),
            (
                "429",
                "Too many requests or failed authentications from this address",
            ),
        ];
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                for (status, description) in answers {
                    let response = ResponseBuilder::new()
                        .description(description)
                        .content("application/problem+json", problem())
                        .build();
                    operation
                        .responses
                        .responses
                        .insert(status.to_owned(), response.into());
                }
            }
        }
    }
}

/// The OpenAPI document as JSON: utoipa's, plus the rules and links it cannot derive
/// (`openapi_rules`).
pub fn openapi_json() -> String {
    let Ok(mut doc) = serde_json::to_value(ApiDoc::openapi()) else {
        return String::new();
    };
    openapi_rules::add(&mut doc);
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// The admin router.
/// `cors_origins` may call it from browsers (none by default: no CORS headers at all);
/// `tls`: the listener has TLS (the dashboard's session cookies are then `Secure`). Call
/// it inside a tokio runtime: it starts the overview's sampler there.
pub fn router(
    control: Arc<ControlPlane>,
    app: Arc<AppState>,
    access: AdminAccess,
    cors_origins: &[http::HeaderValue],
    tls: bool,
) -> Router {
    let schema = graphql::schema(control.clone(), app.clone());
    let history = Arc::new(overview::RateHistory::default());
    history.spawn_sampler(app.clone());
    let state = Arc::new(AdminState {
        control,
        app,
        schema,
        openapi: openapi_json(),
        access,
        sessions: ui::session::Sessions::default(),
        secure_cookies: tls,
        history,
    });
    Router::new()
        .route("/ui", get(ui::index))
        .route("/ui/", get(ui::index))
        .route("/ui/assets/{*file}", get(ui::asset))
        .route(
            "/ui/session",
            get(ui::current).post(ui::sign_in).delete(ui::sign_out),
        )
        .route("/v1/admin/overview", get(overview_handler))
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
        .route(
            "/v1/admin/keys",
            get(rest::list_keys).post(rest::create_key),
        )
        .route(
            "/v1/admin/keys/{id}",
            axum::routing::delete(rest::revoke_key),
        )
        .route("/v1/admin/audit", get(rest::audit_log))
        .route("/v1/admin/usage", get(usage_handler))
        .route("/graphql", get(graphiql).post(graphql_handler))
        .route("/graphql/ws", get(graphql_ws))
        .fallback(|uri: http::Uri| async move { Problem::not_found(uri.path()) })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            access::authenticate,
        ))
        .layer(cors(cors_origins))
        .layer(middleware::from_fn(access_log))
        .with_state(state)
}

/// CORS for the listed origins: outside authentication, so that preflight requests
/// (which carry no credentials) are answered; an empty list adds nothing.
fn cors(
    origins: &[http::HeaderValue],
) -> tower::util::Either<tower_http::cors::CorsLayer, tower::layer::util::Identity> {
    use http::{Method, header};
    if origins.is_empty() {
        return tower::util::Either::Right(tower::layer::util::Identity::new());
    }
    tower::util::Either::Left(
        tower_http::cors::CorsLayer::new()
            .allow_origin(tower_http::cors::AllowOrigin::list(origins.iter().cloned()))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_MATCH,
                header::IF_NONE_MATCH,
            ])
            .expose_headers([header::ETAG, header::LOCATION, REQUEST_ID.clone()])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// The peer's address, as handlers see it (`ConnectInfo<Peer>`), with or without TLS.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, AdminListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, AdminListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// The admin listener's sockets: plain TCP, or TLS with each handshake in its own task so
/// that a slow client delays no one else's.
pub struct AdminListener {
    tcp: tokio::net::TcpListener,
    tls: Option<Arc<tollgate_data::tls::ReloadingTls>>,
    handshakes: tokio::task::JoinSet<Option<(tollgate_data::tls::MaybeTls, SocketAddr)>>,
}

impl AdminListener {
    /// Wraps `tcp`, with TLS when `tls` is set.
    pub fn new(
        tcp: tokio::net::TcpListener,
        tls: Option<Arc<tollgate_data::tls::ReloadingTls>>,
    ) -> Self {
        Self {
            tcp,
            tls,
            handshakes: tokio::task::JoinSet::new(),
        }
    }
}

impl axum::serve::Listener for AdminListener {
    type Io = tollgate_data::tls::MaybeTls;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, peer)) => match &self.tls {
                        None => return (tokio_util::either::Either::Left(stream), peer),
                        Some(tls) => {
                            let tls = tls.clone();
                            self.handshakes.spawn(async move {
                                match tls.accept(stream).await {
                                    Ok(io) => Some((io, peer)),
                                    Err(e) => {
                                        tracing::debug!(%peer, error = %e, "admin TLS handshake failed");
                                        None
                                    }
                                }
                            });
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(ready)) = done {
                        return ready;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// One log line per admin request, with its request id (echoed in `x-request-id`); a
/// deadline on each request; headers that keep browsers from sniffing, framing or caching
/// admin answers.
async fn access_log(request: Request, next: Next) -> Response {
    let id = RequestId::of(request.headers());
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let started = Instant::now();
    let head: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    let answer = async {
        if head > MAX_HEADER_BYTES {
            return Problem::new(
                http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                problem_types::HEADERS_TOO_LARGE,
                "Request headers too large",
                format!("the request's headers must total at most {MAX_HEADER_BYTES} bytes"),
            )
            .into_response();
        }
        next.run(request).await
    };
    let mut response = match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
        Ok(response) => response,
        Err(_) => Problem::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            problem_types::TIMEOUT,
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
    response
        .headers_mut()
        .insert(REQUEST_ID.clone(), id.header_value());
    response
}

/// What a request would meet now, without consuming anything.
#[utoipa::path(post, path = "/v1/admin/explain", tag = "explain", request_body = explain::ExplainRequest,
    responses((status = 200, description = "The policies matched and what is left of each", body = explain::Explanation),
              (status = 400, description = "Malformed request", body = rest::ProblemDoc, content_type = "application/problem+json")))]
async fn explain_handler(
    State(s): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    body: Bytes,
) -> Result<Response, Problem> {
    let request: explain::ExplainRequest = rest::json_body(&body)?;
    actor
        .require_read(&request.domain)
        .map_err(|e| rest::problem(&e))?;
    let answer = explain::explain(&s.app.limiter, &request)
        .await
        .map_err(Problem::invalid_request)?;
    Ok(axum::Json(answer).into_response())
}

/// Each policy's decisions and heavy hitters over the latest complete interval on this
/// node (`--usage` or `--events`; `enabled: false` otherwise), for the domains the caller
/// may read.
#[utoipa::path(get, path = "/v1/admin/usage", tag = "usage", params(usage::UsageQuery),
    responses((status = 200, description = "Usage per policy", body = usage::UsageView),
              (status = 400, description = "Bad query", body = rest::ProblemDoc, content_type = "application/problem+json")))]
async fn usage_handler(
    State(s): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    uri: http::Uri,
) -> Result<Response, Problem> {
    let q: usage::UsageQuery = rest::query(&uri)?;
    let view = usage::usage(&s.app, q.domain.as_deref(), &actor).map_err(|e| rest::problem(&e))?;
    Ok(axum::Json(view).into_response())
}

/// Each readable domain's decisions per second over the last five minutes on this node,
/// and the health of its store and event broker.
#[utoipa::path(get, path = "/v1/admin/overview", tag = "overview",
    responses((status = 200, description = "Rates and health", body = overview::Overview)))]
async fn overview_handler(
    State(s): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
) -> Response {
    axum::Json(overview::overview(&s.app, &s.history, &actor)).into_response()
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
    Extension(actor): Extension<Actor>,
    request: GraphQLRequest,
) -> GraphQLResponse {
    s.schema
        .execute(request.into_inner().data(actor))
        .await
        .into()
}

/// GraphQL subscriptions over WebSocket. Browsers cannot set headers on a WebSocket, so a
/// connection without `Authorization` must authenticate in its first message
/// (`connection_init` with `{"Authorization": "Bearer ..."}`); until then it runs nothing.
async fn graphql_ws(
    State(s): State<Arc<AdminState>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    actor: Option<Extension<Actor>>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    let schema = s.schema.clone();
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |stream| {
            GraphQLWebSocket::new(stream, schema, protocol)
                .on_connection_init(move |payload| async move {
                    let actor = match actor {
                        Some(Extension(actor)) => actor,
                        None => {
                            let credential = payload
                                .get("Authorization")
                                .or_else(|| payload.get("authorization"))
                                .and_then(|v| v.as_str())
                                .and_then(|v| v.strip_prefix("Bearer "))
                                .ok_or_else(|| {
                                    async_graphql::Error::new(
                                        "unauthenticated: send {\"Authorization\": \"Bearer <key or token>\"} in connection_init",
                                    )
                                })?;
                            s.access
                                .with_credential(
                                    &s.control,
                                    credential.trim(),
                                    &peer.ip().to_string(),
                                    "graphql",
                                    "/graphql/ws",
                                )
                                .await
                                .map_err(|_| {
                                    async_graphql::Error::new(
                                        "unauthenticated: the API key or bearer token is not valid",
                                    )
                                })?
                        }
                    };
                    let mut data = async_graphql::Data::default();
                    data.insert(actor);
                    Ok(data)
                })
                .serve()
        })
}

/// Serves the admin router on `listener` until `stop` turns true.
pub async fn serve(
    listener: AdminListener,
    router: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<Peer>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stop.wait_for(|s| *s).await;
    })
    .await
}
