//! The dashboard, served by the admin listener under `/ui`: static assets embedded in the
//! binary (`crates/tollgate-admin/ui/`, plain ES modules and a vendored uPlot; no build
//! step), browser sign-in ([`session`]), and nothing else of its own: every view reads
//! and changes through the same REST and GraphQL API as any client, under the caller's
//! role.

pub mod session;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Extension, Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use tollgate_api::problem::types as problem_types;
use tollgate_control::Actor;
use tollgate_data::http::problem::Problem;

use super::{AdminState, Peer};
use session::SessionRef;

/// The dashboard's Content-Security-Policy: only this origin's scripts, styles and
/// connections; no inline code, no frames, no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file: its name under `/ui/assets/`, content type, bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!("../../ui/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every asset the dashboard loads (`index.html` is served at `/ui`).
const ASSETS: &[Asset] = &[
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("views/overview.js", JS),
    asset!("views/policies.js", JS),
    asset!("views/live.js", JS),
    asset!("views/usage.js", JS),
    asset!("views/keys.js", JS),
    asset!("views/audit.js", JS),
    asset!("vendor/uPlot.iife.min.js", JS),
    asset!("vendor/uPlot.min.css", "text/css; charset=utf-8"),
    asset!("vendor/uPlot.LICENSE", "text/plain; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

const INDEX: &[u8] = include_bytes!("../../ui/index.html");

/// The total size of the dashboard's files, for the size bar's test.
pub fn total_bytes() -> usize {
    INDEX.len() + ASSETS.iter().map(|a| a.bytes.len()).sum::<usize>()
}

fn with_headers(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
}

/// `GET /ui`: the page.
pub async fn index() -> Response {
    with_headers(
        StatusCode::OK,
        "text/html; charset=utf-8",
        Bytes::from_static(INDEX),
    )
}

/// `GET /ui/assets/{*file}`: one embedded file.
pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(a) => with_headers(StatusCode::OK, a.content_type, Bytes::from_static(a.bytes)),
        None => Problem::not_found(&format!("/ui/assets/{file}")).into_response(),
    }
}

/// The sign-in form's body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    /// An API key (`tg_...`) or a JWT.
    credential: String,
}

/// Who is signed in, as the dashboard needs it.
#[derive(Serialize)]
struct SessionView<'a> {
    name: &'a str,
    role: &'a str,
    /// The domains the caller may read (`["*"]`: all).
    domains: Vec<String>,
    /// Send in `X-CSRF-Token` with every change (absent without a session: no
    /// authentication at all, `--admin-auth none`).
    csrf: Option<&'a str>,
    /// When the session ends (RFC 3339).
    expires_at: Option<String>,
}

fn session_view(actor: &Actor, session: Option<&SessionRef>) -> Response {
    let domains = match &actor.scope {
        tollgate_control::Scope::All => vec!["*".to_owned()],
        tollgate_control::Scope::Domains(d) => d.iter().cloned().collect(),
    };
    let view = SessionView {
        name: &actor.name,
        role: actor.role.as_str(),
        domains,
        csrf: session.map(|s| s.csrf.as_str()),
        expires_at: session.map(|s| {
            tollgate_control::service::rfc3339(
                s.expires_at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64),
            )
        }),
    };
    axum::Json(view).into_response()
}

/// `POST /ui/session`: exchanges a credential for a session cookie. Failures are
/// audited and count towards the brute-force guard like any other admin call's.
pub async fn sign_in(
    State(s): State<Arc<AdminState>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // JSON only: a cross-site form cannot send it without a preflight, so no one can sign
    // a browser in to their own account behind its back.
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Problem::unsupported_media_type().into_response();
    }
    let form: SignIn = match super::rest::json_body(&body) {
        Ok(form) => form,
        Err(problem) => return problem.into_response(),
    };
    let ip = peer.ip().to_string();
    let actor = match s
        .access
        .dashboard_credential(&s.control, form.credential.trim(), &ip, "/ui/session")
        .await
    {
        Ok(actor) => actor,
        Err(refusal) => return refusal,
    };
    let (id, session) = match s.sessions.start(form.credential.trim()) {
        Ok(started) => started,
        Err(e) => {
            tracing::error!(error = %e, "no randomness for a session id");
            return Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                problem_types::INTERNAL,
                "Internal error",
                "cannot start a session",
            )
            .into_response();
        }
    };
    tracing::info!(principal = actor.name, remote = ip, "dashboard sign-in");
    let mut response = session_view(&actor, Some(&session));
    if let Ok(cookie) = HeaderValue::from_str(&session::set_cookie(&id, s.secure_cookies)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// `GET /ui/session`: who this browser is signed in as.
pub async fn current(
    Extension(actor): Extension<Actor>,
    session: Option<Extension<SessionRef>>,
) -> Response {
    session_view(&actor, session.as_ref().map(|Extension(s)| s))
}

/// `DELETE /ui/session`: signs out (the CSRF token is required, like every change).
pub async fn sign_out(
    State(s): State<Arc<AdminState>>,
    session: Option<Extension<SessionRef>>,
) -> Response {
    if let Some(Extension(session)) = session {
        s.sessions.end(&session.key);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(cookie) = HeaderValue::from_str(&session::clear_cookie(s.secure_cookies)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// What a request authenticated by a session cookie must also show: the CSRF token on
/// any change, the same origin on a WebSocket. `Err` says why not (answer it with
/// [`forbidden`]).
pub fn check_session_request(
    session: &SessionRef,
    method: &http::Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<(), &'static str> {
    let safe = matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    );
    if path == "/graphql/ws" {
        // Browsers send cookies on cross-site WebSocket handshakes (no preflight, no
        // CORS): the origin must be this listener's own.
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let same = match (origin, host) {
            (Some(origin), Some(host)) => origin
                .split_once("://")
                .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host)),
            _ => false,
        };
        if !same {
            return Err(
                "a dashboard session's WebSocket must come from the dashboard's own origin",
            );
        }
        return Ok(());
    }
    if safe {
        return Ok(());
    }
    let presented = headers
        .get(session::CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if session.csrf_matches(presented) {
        Ok(())
    } else {
        Err("a change through a dashboard session needs the session's CSRF token in X-CSRF-Token")
    }
}

/// The 403 for a session request that [`check_session_request`] refused.
pub fn forbidden(detail: &str) -> Response {
    Problem::new(
        StatusCode::FORBIDDEN,
        problem_types::CSRF,
        "Cross-site request refused",
        detail,
    )
    .into_response()
}

/// The session cookie's id in `headers`, if any.
pub fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| session::cookie(v, session::COOKIE))
        .filter(|id| !id.is_empty())
}

/// Answer for a cookie that names no live session: 401, and the browser forgets it.
pub fn session_ended(secure: bool) -> Response {
    let mut response = Problem::new(
        StatusCode::UNAUTHORIZED,
        problem_types::UNAUTHENTICATED,
        "Unauthenticated",
        "the dashboard session has ended (signed out, expired, or this node restarted); sign in again",
    )
    .into_response();
    if let Ok(cookie) = HeaderValue::from_str(&session::clear_cookie(secure)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dashboard_stays_within_its_weight() {
        assert!(total_bytes() <= 300 * 1024, "{} bytes", total_bytes());
    }

    #[test]
    fn every_asset_the_page_names_is_embedded() {
        let index = std::str::from_utf8(INDEX).expect("UTF-8");
        for part in index.split("/ui/assets/").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            assert!(ASSETS.iter().any(|a| a.name == name), "{name} not embedded");
        }
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(a.bytes).expect("UTF-8");
            for import in text.split("from \"").skip(1) {
                let target = import.split('"').next().unwrap_or_default();
                let base = a.name.rsplit_once('/').map_or("", |(d, _)| d);
                let resolved = resolve(base, target);
                assert!(
                    ASSETS.iter().any(|x| x.name == resolved),
                    "{} imports {target} ({resolved}), not embedded",
                    a.name
                );
            }
        }
    }

    fn resolve(base: &str, target: &str) -> String {
        let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
        for piece in target.split('/') {
            match piece {
                "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        parts.join("/")
    }

    #[test]
    fn changes_need_the_csrf_token_and_websockets_the_same_origin() {
        let session = SessionRef {
            key: [0; 32],
            credential: "k".into(),
            csrf: "t0ken".into(),
            expires_at: std::time::SystemTime::now(),
        };
        let mut h = HeaderMap::new();
        assert!(
            check_session_request(&session, &http::Method::GET, "/v1/admin/domains", &h).is_ok()
        );
        assert!(
            check_session_request(&session, &http::Method::PUT, "/v1/admin/domains/a", &h).is_err()
        );
        h.insert(session::CSRF_HEADER, HeaderValue::from_static("t0ken"));
        assert!(
            check_session_request(&session, &http::Method::PUT, "/v1/admin/domains/a", &h).is_ok()
        );
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8082"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(check_session_request(&session, &http::Method::GET, "/graphql/ws", &h).is_err());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8082"),
        );
        assert!(check_session_request(&session, &http::Method::GET, "/graphql/ws", &h).is_ok());
    }
}
