//! Who is calling the admin API: authentication (API keys, JWT bearer tokens), the
//! brute-force guard, and the audit of failures. What a caller may then do is decided by
//! [`tollgate_control::ControlPlane`] from the [`Actor`] put into each request here.
//!
//! The guard is Tollgate's own engine on a private in-memory store: every peer address
//! gets `requests_per_second` (GCRA, burst of two seconds' worth), and a peer that
//! presented `failures_per_minute` bad credentials within a minute is answered 429 until
//! the window turns, before its credentials are even looked at.

use std::net::IpAddr;
use std::sync::Arc;
use tollgate_api::problem::types as problem_types;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use tollgate_control::jwt::TokenVerifier;
use tollgate_control::{Actor, AuthFailure, ControlPlane, Principal};
use tollgate_core::{
    CheckRequest, Descriptor, Entry, Limiter, LimiterConfig, MemoryStore, PolicySet, SystemClock,
};

use super::AdminState;
use tollgate_data::http::problem::Problem;

/// How the admin API authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AdminAuthMode {
    /// Every call needs an API key or a bearer token (the default).
    #[default]
    Required,
    /// No authentication: everyone is an admin. Refused unless the listener is loopback.
    None,
}

/// The guard's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardLimits {
    /// Admin requests per second from one address.
    pub requests_per_second: u32,
    /// Bad credentials per minute from one address before it is turned away.
    pub failures_per_minute: u32,
}

impl Default for GuardLimits {
    fn default() -> Self {
        Self {
            requests_per_second: 50,
            failures_per_minute: 10,
        }
    }
}

/// Authentication of the admin API.
pub struct AdminAccess {
    mode: AdminAuthMode,
    tokens: Option<TokenVerifier>,
    guard: Limiter,
}

impl std::fmt::Debug for AdminAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAccess")
            .field("mode", &self.mode)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

const GUARD_DOMAIN: &str = "tollgate_admin";

/// A refusal before the request reaches the API.
#[derive(Debug)]
enum Refusal {
    Unauthenticated { presented: bool },
    TooMany { retry_after_secs: u64 },
    Unavailable,
}

impl Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthenticated { presented } => {
                let detail = if presented {
                    "the API key or bearer token is not valid (unknown, revoked, expired or malformed)"
                } else {
                    "this endpoint needs an API key or a bearer token: Authorization: Bearer <key or token>"
                };
                let mut response = Problem::new(
                    StatusCode::UNAUTHORIZED,
                    problem_types::UNAUTHENTICATED,
                    "Unauthenticated",
                    detail,
                )
                .into_response();
                let challenge = if presented {
                    r#"Bearer realm="tollgate-admin", error="invalid_token""#
                } else {
                    r#"Bearer realm="tollgate-admin""#
                };
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
                response
            }
            Refusal::TooMany { retry_after_secs } => {
                let mut response = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    problem_types::TOO_MANY_REQUESTS,
                    "Too many requests",
                    format!(
                        "too many admin requests or failed authentications from this address; retry in {retry_after_secs}s"
                    ),
                )
                .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
                response
            }
            Refusal::Unavailable => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                problem_types::POLICY_STORE_UNAVAILABLE,
                "Policy store unavailable",
                "credentials cannot be checked: the policy database did not answer; retry later",
            )
            .into_response(),
        }
    }
}

impl AdminAccess {
    /// Authentication in `mode`, with `tokens` if bearer tokens are accepted.
    pub fn new(
        mode: AdminAuthMode,
        tokens: Option<TokenVerifier>,
        limits: GuardLimits,
    ) -> Result<Self, String> {
        let rps = limits.requests_per_second.max(1);
        let policy = format!(
            "domain: {GUARD_DOMAIN}\ndescriptors:\n\
             \x20 - key: remote_address\n\
             \x20   rate_limit: {{unit: second, requests_per_unit: {rps}, algorithm: gcra, burst: {burst}}}\n\
             \x20 - key: auth_failure\n\
             \x20   rate_limit: {{unit: minute, requests_per_unit: {failures}}}\n",
            burst = rps.saturating_mul(2),
            failures = limits.failures_per_minute.max(1),
        );
        let policies = PolicySet::from_files([("admin guard", policy.as_str())]).map_err(|e| {
            e.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        let guard = Limiter::new(
            policies,
            Arc::new(MemoryStore::default()),
            Arc::new(SystemClock),
            LimiterConfig::default(),
        );
        Ok(Self {
            mode,
            tokens,
            guard,
        })
    }

    /// Runs one guard check (`consume`: take from the limit; otherwise only look).
    async fn guard(&self, key: &str, ip: &str, consume: bool) -> Result<(), Refusal> {
        let entries = [Entry { key, value: ip }];
        let descriptors = [Descriptor {
            entries: &entries,
            hits: None,
            limit_override: None,
        }];
        let request = CheckRequest {
            domain: GUARD_DOMAIN,
            descriptors: &descriptors,
            hits: 1,
        };
        let decision = if consume {
            self.guard.check(&request).await
        } else {
            self.guard.peek(&request).await
        };
        let Ok(decision) = decision else {
            return Ok(());
        };
        let Some(status) = decision.statuses.first() else {
            return Ok(());
        };
        // A look (cost 0) is always allowed: an exhausted allowance shows as nothing left.
        let refused = if consume {
            !decision.allowed
        } else {
            status.remaining == 0
        };
        if !refused {
            return Ok(());
        }
        metrics::counter!("tollgate_admin_throttled_total").increment(1);
        let wait = status.retry_after.unwrap_or(status.reset_after);
        Err(Refusal::TooMany {
            retry_after_secs: tollgate_core::ceil_units(wait, tollgate_core::SECOND).max(1),
        })
    }

    /// Who `credential` (a key or a token) names.
    pub async fn principal(
        &self,
        control: &ControlPlane,
        credential: &str,
    ) -> Result<Principal, AuthFailure> {
        if credential.starts_with(tollgate_control::keys::PREFIX) {
            control.authenticate_key(credential).await
        } else if credential.split('.').count() == 3 {
            match &self.tokens {
                Some(verifier) => verifier.verify(credential),
                None => Err(AuthFailure::TokensDisabled),
            }
        } else {
            Err(AuthFailure::Malformed(
                "neither an API key (tg_...) nor a JWT",
            ))
        }
    }

    /// Authenticates one call: `Ok(None)` when it carries no credentials and `optional` is
    /// set (a WebSocket that will authenticate in its first message).
    pub async fn authenticate(
        &self,
        control: &ControlPlane,
        headers: &HeaderMap,
        peer: IpAddr,
        via: &'static str,
        target: &str,
        optional: bool,
    ) -> Result<Option<Actor>, Response> {
        let ip = peer.to_string();
        self.guard("remote_address", &ip, true)
            .await
            .map_err(Refusal::into_response)?;
        if self.mode == AdminAuthMode::None {
            let mut actor = Actor::unauthenticated_admin(via);
            actor.remote = ip;
            return Ok(Some(actor));
        }
        let credential = match bearer(headers) {
            Ok(Some(c)) => c,
            Ok(None) if optional => return Ok(None),
            Ok(None) => {
                self.record(control, via, target, &ip, &AuthFailure::Missing)
                    .await;
                return Err(Refusal::Unauthenticated { presented: false }.into_response());
            }
            Err(failure) => {
                return Err(self.failed(control, via, target, &ip, failure).await);
            }
        };
        self.with_credential(control, credential, &ip, via, target)
            .await
            .map(Some)
    }

    /// Authenticates `credential` presented by `ip` (also the WebSocket path).
    pub async fn with_credential(
        &self,
        control: &ControlPlane,
        credential: &str,
        ip: &str,
        via: &'static str,
        target: &str,
    ) -> Result<Actor, Response> {
        // Locked out after too many failures: the credential is not even looked at.
        self.guard("auth_failure", ip, false)
            .await
            .map_err(Refusal::into_response)?;
        match self.principal(control, credential).await {
            Ok(principal) => Ok(principal.acting(via, ip)),
            Err(AuthFailure::Store(e)) => {
                tracing::error!(error = %e, "cannot check admin credentials");
                Err(Refusal::Unavailable.into_response())
            }
            Err(failure) => Err(self.failed(control, via, target, ip, failure).await),
        }
    }

    /// Authenticates a dashboard `credential` from `ip` for `path` (signing in, and each
    /// request of a session): the same guard, lockout and audit as any admin call.
    pub async fn dashboard_credential(
        &self,
        control: &ControlPlane,
        credential: &str,
        ip: &str,
        path: &str,
    ) -> Result<Actor, Response> {
        self.guard("remote_address", ip, true)
            .await
            .map_err(Refusal::into_response)?;
        self.with_credential(control, credential, ip, "ui", path)
            .await
    }

    /// Whether every call is authenticated (not `--admin-auth none`).
    pub fn required(&self) -> bool {
        self.mode == AdminAuthMode::Required
    }

    async fn failed(
        &self,
        control: &ControlPlane,
        via: &'static str,
        target: &str,
        ip: &str,
        failure: AuthFailure,
    ) -> Response {
        self.record(control, via, target, ip, &failure).await;
        // Counts towards the lockout; this answer is still a 401.
        let _ = self.guard("auth_failure", ip, true).await;
        Refusal::Unauthenticated { presented: true }.into_response()
    }

    async fn record(
        &self,
        control: &ControlPlane,
        via: &'static str,
        target: &str,
        ip: &str,
        failure: &AuthFailure,
    ) {
        // The failure's text names at most a key's public id, never a secret.
        let reason = failure.to_string();
        metrics::counter!("tollgate_admin_auth_failures_total").increment(1);
        tracing::warn!(
            remote = ip,
            via,
            target,
            reason,
            "admin authentication failed"
        );
        if let Err(e) = control.record_auth_failure(via, target, ip, &reason).await {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
}

/// The credential of `Authorization: Bearer <credential>`.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, AuthFailure> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| AuthFailure::Malformed("Authorization must be visible ASCII"))?;
    let (scheme, credential) = text.split_once(' ').ok_or(AuthFailure::Malformed(
        "Authorization must be 'Bearer <credential>'",
    ))?;
    if !scheme.eq_ignore_ascii_case("bearer") || credential.trim().is_empty() {
        return Err(AuthFailure::Malformed(
            "Authorization must be 'Bearer <credential>'",
        ));
    }
    Ok(Some(credential.trim()))
}

/// The interface a path belongs to (recorded as `via`).
fn via_of(method: &Method, path: &str) -> &'static str {
    if path.starts_with("/graphql") {
        "graphql"
    } else if method == Method::PUT && path.ends_with("/document") {
        "apply"
    } else {
        "rest"
    }
}

/// Whether a route is public: the OpenAPI document, the GraphiQL page and the
/// dashboard's files (none holds data; every call they lead to is authenticated), and the
/// dashboard's sign-in (which authenticates the credential it is given).
fn public(method: &Method, path: &str) -> bool {
    (method == Method::GET
        && (path == "/graphql"
            || path == "/v1/admin/openapi.json"
            || path == "/ui"
            || path == "/ui/"
            || path.starts_with("/ui/assets/")))
        || (method == Method::POST && path == "/ui/session")
}

/// Middleware: authenticates every non-public admin request and puts its [`Actor`] into
/// the request's extensions.
pub async fn authenticate(
    State(s): State<Arc<AdminState>>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    mut request: Request,
    next: Next,
) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    if public(&method, &path) {
        return next.run(request).await;
    }
    let optional = path == "/graphql/ws";
    if s.access.required()
        && !request.headers().contains_key(header::AUTHORIZATION)
        && let Some(id) = crate::ui::session_id(request.headers())
    {
        return with_session(&s, id.to_owned(), peer.ip(), request, next).await;
    }
    match s
        .access
        .authenticate(
            &s.control,
            request.headers(),
            peer.ip(),
            via_of(&method, &path),
            &path,
            optional,
        )
        .await
    {
        Ok(actor) => {
            if let Some(actor) = actor {
                request.extensions_mut().insert(actor);
            }
            next.run(request).await
        }
        Err(response) => response,
    }
}

/// A request authenticated by the dashboard's session cookie: the session must be live,
/// the request must pass [`crate::ui::check_session_request`], and the credential it was
/// opened with must still authenticate (a revoked key ends the session).
async fn with_session(
    s: &AdminState,
    id: String,
    peer: IpAddr,
    mut request: Request,
    next: Next,
) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let Some(session) = s.sessions.find(&id) else {
        return crate::ui::session_ended(s.secure_cookies);
    };
    if let Err(why) = crate::ui::check_session_request(&session, &method, &path, request.headers())
    {
        return crate::ui::forbidden(why);
    }
    match s
        .access
        .dashboard_credential(&s.control, &session.credential, &peer.to_string(), &path)
        .await
    {
        Ok(actor) => {
            request.extensions_mut().insert(actor);
            request.extensions_mut().insert(session);
            next.run(request).await
        }
        Err(response) => {
            if response.status() == StatusCode::UNAUTHORIZED {
                s.sessions.end(&session.key);
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_credentials_are_parsed_strictly() {
        let mut h = HeaderMap::new();
        assert!(matches!(bearer(&h), Ok(None)));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tg_x"),
        );
        assert_eq!(bearer(&h).unwrap(), Some("tg_x"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  a.b.c "),
        );
        assert_eq!(bearer(&h).unwrap(), Some("a.b.c"));
        for bad in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "tg_x"] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(bad));
            assert!(bearer(&h).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_name_their_interface_and_only_documents_are_public() {
        assert_eq!(via_of(&Method::POST, "/graphql"), "graphql");
        assert_eq!(
            via_of(&Method::PUT, "/v1/admin/domains/a/document"),
            "apply"
        );
        assert_eq!(via_of(&Method::GET, "/v1/admin/domains/a/document"), "rest");
        assert!(public(&Method::GET, "/graphql"));
        assert!(!public(&Method::POST, "/graphql"));
        assert!(public(&Method::GET, "/v1/admin/openapi.json"));
        assert!(!public(&Method::GET, "/v1/admin/domains"));
    }

    #[tokio::test]
    async fn the_guard_turns_away_a_peer_after_its_failures() {
        let access = AdminAccess::new(
            AdminAuthMode::Required,
            None,
            GuardLimits {
                requests_per_second: 1000,
                failures_per_minute: 3,
            },
        )
        .unwrap();
        for _ in 0..3 {
            access
                .guard("auth_failure", "10.0.0.1", false)
                .await
                .unwrap();
            access
                .guard("auth_failure", "10.0.0.1", true)
                .await
                .unwrap();
        }
        assert!(matches!(
            access.guard("auth_failure", "10.0.0.1", false).await,
            Err(Refusal::TooMany { .. })
        ));
        // Another address is not affected.
        access
            .guard("auth_failure", "10.0.0.2", false)
            .await
            .unwrap();
    }
}
