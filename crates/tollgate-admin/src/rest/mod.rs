//! REST under `/v1/admin/`: thin handlers over [`ControlPlane`]. Each turns HTTP into a
//! service call (path, query, body, `If-Match`) and the result back into JSON, an `ETag`,
//! or an RFC 9457 problem.

mod keys;

pub use keys::*;

use std::sync::Arc;
use tollgate_api::problem::types as problem_types;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tollgate_control::model::{
    ApiKey, AuditEvent, CreatedApiKey, Domain, DomainUpdate, NewApiKey, NewDomain, Page, Policy,
    PolicyChange, PolicySpec,
};
use tollgate_control::{Actor, ApplyReport, ControlError, ErrorClass, Precondition};
use utoipa::{IntoParams, ToSchema};

use super::AdminState;
use tollgate_data::http::problem::Problem;

/// The body of every error (RFC 9457 problem details).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ProblemDoc {
    /// A URI naming the kind of problem.
    #[schema(rename = "type")]
    kind: String,
    /// A short summary of the kind.
    title: String,
    /// The HTTP status.
    status: u16,
    /// What exactly is wrong.
    detail: String,
    /// For validation failures: each field and what is wrong with it.
    errors: Option<Vec<tollgate_control::FieldError>>,
}

/// Paging of a listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Where to continue: a `next_cursor` from the previous page.
    #[param(pattern = "^([0-9a-f]{2}){1,256}$")]
    cursor: Option<String>,
    /// Items per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

/// Paging of a history (newest first).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Where to continue: a `next_cursor` from the previous page.
    #[param(pattern = "^[0-9]{1,18}$")]
    cursor: Option<String>,
    /// Items per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

/// `If-Match`: only if the resource is at this ETag (`*`: at any).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IfMatch {
    /// An ETag this API returned, or `*`. Any other entity tag, or none (an empty list,
    /// RFC 9110 §5.6.1), matches nothing (412); a value that is not one entity tag is
    /// malformed (400).
    #[param(
        rename = "If-Match",
        required = false,
        pattern = r#"^(\*|(W/)?"[\x21\x23-\x7e]*"|)$"#
    )]
    if_match: String,
}

/// `If-None-Match: *`: only create, never replace.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IfNoneMatch {
    /// `*`.
    #[param(rename = "If-None-Match", required = false, pattern = r"^\*$")]
    if_none_match: String,
}

/// Deleting a domain.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteDomainQuery {
    /// Also delete its policies (each deletion is recorded in the policy's history).
    #[serde(default)]
    cascade: bool,
}

/// A policy to check without saving it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    /// The domain it would join.
    #[schema(min_length = 1)]
    domain: String,
    /// Its name.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"
    )]
    name: String,
    /// The policy.
    policy: PolicySpec,
}

/// The verdict of a dry run that passed.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ValidateResponse {
    /// Always true: a policy that would not save gets a problem instead.
    valid: bool,
}

/// Maps a service error to its problem, by its class (the one classification GraphQL's
/// codes come from too).
pub fn problem(e: &ControlError) -> Problem {
    let (status, kind, title) = match e.class() {
        ErrorClass::Invalid => (
            StatusCode::BAD_REQUEST,
            problem_types::INVALID_REQUEST,
            "Invalid request",
        ),
        ErrorClass::Forbidden => (StatusCode::FORBIDDEN, problem_types::FORBIDDEN, "Forbidden"),
        ErrorClass::NotFound => (StatusCode::NOT_FOUND, problem_types::NOT_FOUND, "Not found"),
        ErrorClass::Conflict => (StatusCode::CONFLICT, problem_types::CONFLICT, "Conflict"),
        ErrorClass::Stale => (
            StatusCode::PRECONDITION_FAILED,
            problem_types::STALE,
            "Precondition failed",
        ),
        ErrorClass::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            problem_types::POLICY_STORE_UNAVAILABLE,
            "Policy store unavailable",
        ),
        ErrorClass::Internal => (
            StatusCode::INTERNAL_SERVER_ERROR,
            problem_types::INTERNAL,
            "Internal error",
        ),
    };
    let detail = match e {
        ControlError::NotFound(what) => format!("{what} does not exist"),
        ControlError::PreconditionFailed { .. } => {
            format!("{e}; read it again and retry with its current ETag")
        }
        _ => e.public_message(),
    };
    let mut p = Problem::new(status, kind, title, detail);
    p.errors = e.field_errors().to_vec();
    p
}

/// A JSON body, decoded strictly, with the failing field's path in the error.
pub fn json_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, Problem> {
    if body.is_empty() {
        return Err(Problem::invalid_body("the request needs a JSON body"));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            Problem::invalid_body(format!("invalid JSON body: {inner}"))
        } else {
            Problem::invalid_body(format!("invalid JSON body at {path}: {inner}"))
        }
    })
}

pub(crate) fn query<T: DeserializeOwned>(uri: &Uri) -> Result<T, Problem> {
    Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| Problem::invalid_request(format!("invalid query string: {}", e.body_text())))
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, Problem> {
    p.map(|p| p.0)
        .map_err(|e| Problem::invalid_request(format!("invalid path: {}", e.body_text())))
}

/// `If-Match` / `If-None-Match` as a precondition.
fn precondition(headers: &HeaderMap) -> Result<Precondition, Problem> {
    let text = |name: &header::HeaderName| -> Result<Option<String>, Problem> {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map(|s| s.trim().to_owned())
                    .map_err(|_| Problem::invalid_request(format!("{name} must be visible ASCII")))
            })
            .transpose()
    };
    if let Some(m) = text(&header::IF_MATCH)? {
        if m == "*" {
            return Ok(Precondition::Exists);
        }
        if m.is_empty() {
            // An empty list of entity tags: none can match.
            return Ok(Precondition::Revision(-1));
        }
        // One entity tag (RFC 9110 §8.8.3: `[W/]"<etagc>*"`), or the header is malformed.
        let opaque = m
            .strip_prefix("W/")
            .unwrap_or(&m)
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .filter(|t| t.bytes().all(|b| b == 0x21 || (0x23..=0x7e).contains(&b)))
            .ok_or_else(|| {
                Problem::invalid_request(format!(
                    "If-Match must be * or one entity tag such as \"42\" (an ETag this API returned), got '{m}'"
                ))
            })?;
        // A well-formed tag this API never issued matches nothing: the condition is false
        // and the answer is 412 (RFC 9110 §13.1.1), as for any stale tag.
        let revision = opaque.parse::<i64>().unwrap_or(-1);
        return Ok(Precondition::Revision(revision));
    }
    if let Some(m) = text(&header::IF_NONE_MATCH)? {
        if m == "*" {
            return Ok(Precondition::Absent);
        }
        return Err(Problem::invalid_request(
            "If-None-Match is only supported as * (create, never replace)",
        ));
    }
    Ok(Precondition::None)
}

fn etag(revision: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{revision}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

fn with_etag<T: serde::Serialize>(status: StatusCode, revision: i64, body: &T) -> Response {
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert(header::ETAG, etag(revision));
    response
}

fn location(response: &mut Response, path: &str) {
    if let Ok(v) = HeaderValue::from_str(path) {
        response.headers_mut().insert(header::LOCATION, v);
    }
}

/// Percent-encodes a path segment (names may hold any printable character).
pub fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

type Reply = Result<Response, Problem>;

/// Lists domains: database ones and those policy files define.
#[utoipa::path(get, path = "/v1/admin/domains", tag = "domains", params(PageQuery),
    responses((status = 200, description = "One page of domains, by name", body = Page<Domain>),
              (status = 400, description = "Bad paging", body = ProblemDoc, content_type = "application/problem+json")))]
pub async fn list_domains(
    State(s): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    uri: Uri,
) -> Reply {
    let q: PageQuery = query(&uri)?;
    let page = s
        .control
        .list_domains(q.cursor.as_deref(), q.limit, &actor)
        .await
        .map_err(|e| problem(&e))?;
    Ok(Json(page).into_response())
}

/// Creates a domain.
#[utoipa::path(post, path = "/v1/admin/domains", tag = "domains", request_body = NewDomain,
    responses((status = 201, description = "Created", body = Domain,
                 headers(("ETag" = String, description = "The domain's revision"), ("Location" = String, description = "Where it lives"))),
              (status = 400, description = "Invalid", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 409, description = "Exists already, or a policy file defines it", body = ProblemDoc, content_type = "application/problem+json")))]
pub async fn create_domain(
    State(s): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    body: Bytes,
) -> Reply {
    let new: NewDomain = json_body(&body)?;
    let domain = s
        .control
        .create_domain(&new, &actor)
        .await
        .map_err(|e| problem(&e))?;
    let mut response = with_etag(StatusCode::CREATED, domain.revision, &domain);
    location(
        &mut response,
        &format!("/v1/admin/domains/{}", segment(&domain.name)),
    );
    Ok(response)
}

/// One domain.
#[utoipa::path(get, path = "/v1/admin/domains/{domain}", tag = "domains",
    params(("domain" = String, Path, description = "The domain's name")),
    responses((status = 200, description = "The domain", body = Domain, headers(("ETag" = String, description = "The domain's revision"))),
              (status = 400, description = "Bad path", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 404, description = "No such domain", body = ProblemDoc, content_type = "application/problem+json")))]
pub async fn get_domain(
    State(s): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    p: Result<Path<String>, PathRejection>,
) -> Reply {
    let name = path(p)?;
    let domain = s
        .control
        .get_domain(&name, &actor)
        .await
        .map_err(|e| problem(&e))?;
    Ok(with_etag(StatusCode::OK, domain.revision, &domain))
}

/// Changes a domain's description.
#[utoipa::path(put, path = "/v1/admin/domains/{domain}", tag = "domains", request_body = DomainUpdate,
    params(("domain" = String, Path, description = "The domain's name"),
           IfMatch),
    responses((status = 200, description = "Changed", body = Domain, headers(("ETag" = String, description = "The domain's new revision"))),
              (status = 400, description = "Invalid", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 404, description = "No such domain", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 409, description = "A policy file defines it", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 412, description = "Changed since that ETag", body = ProblemDoc, content_type = "application/problem+json")))]
pub async fn update_domain(
    State(s): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    p: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let name = path(p)?;
    let condition = precondition(&headers)?;
    let update: DomainUpdate = json_body(&body)?;
    let domain = s
        .control
        .update_domain(&name, &update, condition, &actor)
        .await
        .map_err(|e| problem(&e))?;
    Ok(with_etag(StatusCode::OK, domain.revision, &domain))
}

/// Deletes a domain (with `cascade=true`, also its policies).
#[utoipa::path(delete, path = "/v1/admin/domains/{domain}", tag = "domains",
    params(("domain" = String, Path, description = "The domain's name"), DeleteDomainQuery, IfMatch),
    responses((status = 204, description = "Deleted"),
              (status = 400, description = "Bad request", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 404, description = "No such domain", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 409, description = "Has policies (and no cascade), or a policy file defines it", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 412, description = "Changed since that ETag", body = ProblemDoc, content_type = "application/problem+json")))]
pub async fn delete_domain(
    State(s): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    p: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    uri: Uri,
) -> Reply {
    let name = path(p)?;
    let condition = precondition(&headers)?;
    let q: DeleteDomainQuery = query(&uri)?;
    s.control
        .delete_domain(&name, condition, q.cascade, &actor)
        .await
        .map_err(|e| problem(&e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Lists a domain's policies.
#[utoipa::path(get, path = "/v1/admin/domains/{domain}/policies", tag = "policies",
    params(("domain" = String, Path, description = "The domain's name"), PageQuery),
    responses((status = 200, description = "One page of policies, by name", body = Page<Policy>),
              (status = 400, description = "Bad paging", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 404, description = "No such domain", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 409, description = "A policy file defines the domain", body = ProblemDoc, content_type = "application/problem+json")))]
pub async fn list_policies(
    State(s): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    p: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Reply {
    let domain = path(p)?;
    let q: PageQuery = query(&uri)?;
    let page = s
        .control
        .list_policies(&domain, q.cursor.as_deref(), q.limit, &actor)
        .await
        .map_err(|e| problem(&e))?;
    Ok(Json(page).into_response())
}

/// One policy.
#[utoipa::path(get, path = "/v1/admin/domains/{domain}/policies/{policy}", tag = "policies",
    params(("domain" = String, Path, description = "The domain's name"), ("policy" = String, Path, description = "The policy's name")),
    responses((status = 200, description = "The policy", body = Policy, headers(("ETag" = String, description = "The policy's revision"))),
              (status = 400, description = "Bad path", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 404, description = "No such domain or policy", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 409, description = "A policy file defines the domain", body = ProblemDoc, content_type = "application/problem+json")))]
pub async fn get_policy(
    State(s): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Reply {
    let (domain, name) = path(p)?;
    let policy = s
        .control
        .get_policy(&domain, &name, &actor)
        .await
        .map_err(|e| problem(&e))?;
    Ok(with_etag(StatusCode::OK, policy.revision, &policy))
}

/// Creates or replaces a policy. `If-None-Match: *` only creates; `If-Match` only replaces
/// the revision it names.
#[utoipa::path(put, path = "/v1/admin/domains/{domain}/policies/{policy}", tag = "policies", request_body = PolicySpec,
    params(("domain" = String, Path, description = "The domain's name"), ("policy" = String, Path, description = "The policy's name", max_length = 256, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"),
           IfMatch, IfNoneMatch),
    responses((status = 200, description = "Replaced", body = Policy, headers(("ETag" = String, description = "The policy's new revision"))),
              (status = 201, description = "Created", body = Policy,
                 headers(("ETag" = String, description = "The policy's revision"), ("Location" = String, description = "Where it lives"))),
              (status = 400, description = "Invalid, field by field", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 404, description = "No such domain", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 409, description = "Exists (with If-None-Match), collides with another policy, or a policy file defines the domain", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 412, description = "Changed since that ETag", body = ProblemDoc, content_type = "application/problem+json")))]
pub async fn put_policy(
    State(s): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    p: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let (domain, name) = path(p)?;
    let condition = precondition(&headers)?;
    let spec: PolicySpec = json_body(&body)?;
    let written = s
        .control
        .put_policy(&domain, &name, &spec, condition, &actor)
        .await
        .map_err(|e| problem(&e))?;
    let status = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = with_etag(status, written.value.revision, &written.value);
    if written.created {
        location(
            &mut response,
            &format!(
                "/v1/admin/domains/{}/policies/{}",
                segment(&domain),
                segment(&name)
            ),
        );
    }
    Ok(response)
}

/// Deletes a policy.
#[utoipa::path(delete, path = "/v1/admin/domains/{domain}/policies/{policy}", tag = "policies",
    params(("domain" = String, Path, description = "The domain's name"), ("policy" = String, Path, description = "The policy's name"),
           IfMatch),
    responses((status = 204, description = "Deleted"),
              (status = 400, description = "Bad request", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 404, description = "No such domain or policy", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 409, description = "A policy file defines the domain", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 412, description = "Changed since that ETag", body = ProblemDoc, content_type = "application/problem+json")))]
pub async fn delete_policy(
    State(s): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    p: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Reply {
    let (domain, name) = path(p)?;
    let condition = precondition(&headers)?;
    s.control
        .delete_policy(&domain, &name, condition, &actor)
        .await
        .map_err(|e| problem(&e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A policy's change history, newest first.
#[utoipa::path(get, path = "/v1/admin/domains/{domain}/policies/{policy}/history", tag = "policies",
    params(("domain" = String, Path, description = "The domain's name"), ("policy" = String, Path, description = "The policy's name"), HistoryQuery),
    responses((status = 200, description = "One page of changes", body = Page<PolicyChange>),
              (status = 400, description = "Bad request", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 404, description = "No such domain, or no history for that policy", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 409, description = "A policy file defines the domain", body = ProblemDoc, content_type = "application/problem+json")))]
pub async fn history(
    State(s): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    p: Result<Path<(String, String)>, PathRejection>,
    uri: Uri,
) -> Reply {
    let (domain, name) = path(p)?;
    let q: HistoryQuery = query(&uri)?;
    let page = s
        .control
        .history(&domain, &name, q.cursor.as_deref(), q.limit, &actor)
        .await
        .map_err(|e| problem(&e))?;
    Ok(Json(page).into_response())
}

/// A database domain as a policy file (envoyproxy/ratelimit's format, as JSON).
#[utoipa::path(get, path = "/v1/admin/domains/{domain}/document", tag = "domains",
    params(("domain" = String, Path, description = "The domain's name")),
    responses((status = 200, description = "The domain's policies as one descriptor tree", body = Object),
              (status = 400, description = "Bad path", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 404, description = "No such domain", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 409, description = "A policy file defines the domain", body = ProblemDoc, content_type = "application/problem+json")))]
pub async fn get_document(
    State(s): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    p: Result<Path<String>, PathRejection>,
) -> Reply {
    let domain = path(p)?;
    let document = s
        .control
        .document(&domain, &actor)
        .await
        .map_err(|e| problem(&e))?;
    Ok(Json(document).into_response())
}

/// Replaces a domain's policies with a policy file's (YAML or JSON text), creating the
/// domain if needed; unchanged policies are left alone.
#[utoipa::path(put, path = "/v1/admin/domains/{domain}/document", tag = "domains",
    request_body(content = String, description = "A policy file (YAML or JSON); its `domain` must match the path", content_type = "application/yaml"),
    params(("domain" = String, Path, description = "The domain's name")),
    responses((status = 200, description = "What changed", body = ApplyReport),
              (status = 400, description = "The file is invalid (line and field named)", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 409, description = "Two policies on one descriptor, or a policy file defines the domain", body = ProblemDoc, content_type = "application/problem+json")))]
pub async fn put_document(
    State(s): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    p: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Reply {
    let domain = path(p)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| Problem::invalid_body("the policy file must be UTF-8 text"))?;
    let document = tollgate_control::document::parse_document("request body", text)
        .map_err(|e| Problem::invalid_body(format!("invalid policy file: {e}")))?;
    if document.domain != domain {
        return Err(Problem::invalid_request(format!(
            "the file defines domain '{}', but the path names '{domain}'",
            document.domain
        )));
    }
    let report = s
        .control
        .apply_document(&document, &actor)
        .await
        .map_err(|e| problem(&e))?;
    Ok(Json(report).into_response())
}

/// Checks a policy as saving it would, without saving it: the same answers as the `PUT`
/// (400 field by field, 404, 409), but nothing is written.
#[utoipa::path(post, path = "/v1/admin/validate", tag = "policies", request_body = ValidateRequest,
    responses((status = 200, description = "Saving it would succeed now", body = ValidateResponse),
              (status = 400, description = "Invalid, field by field", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 404, description = "No such domain", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 409, description = "Collides with another policy, or a policy file defines the domain", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 503, description = "Policy store unavailable", body = ProblemDoc, content_type = "application/problem+json")))]
pub async fn validate(
    State(s): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    body: Bytes,
) -> Reply {
    let request: ValidateRequest = json_body(&body)?;
    s.control
        .validate_policy(&request.domain, &request.name, &request.policy, &actor)
        .await
        .map_err(|e| problem(&e))?;
    Ok(Json(ValidateResponse { valid: true }).into_response())
}

/// The OpenAPI document of this API.
pub async fn openapi(State(s): State<Arc<AdminState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        s.openapi.clone(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preconditions_come_from_if_match_and_if_none_match() {
        let mut h = HeaderMap::new();
        assert_eq!(precondition(&h).unwrap(), Precondition::None);
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"42\""));
        assert_eq!(precondition(&h).unwrap(), Precondition::Revision(42));
        h.insert(header::IF_MATCH, HeaderValue::from_static("W/\"7\""));
        assert_eq!(precondition(&h).unwrap(), Precondition::Revision(7));
        h.insert(header::IF_MATCH, HeaderValue::from_static("*"));
        assert_eq!(precondition(&h).unwrap(), Precondition::Exists);
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"abc\""));
        assert_eq!(
            precondition(&h).unwrap(),
            Precondition::Revision(-1),
            "a tag this API never issued matches nothing"
        );
        h.insert(header::IF_MATCH, HeaderValue::from_static(""));
        assert_eq!(
            precondition(&h).unwrap(),
            Precondition::Revision(-1),
            "an empty list"
        );
        for malformed in ["42", "\"42", "\"4\"2\"", "\"1\", \"2\"", "W/42"] {
            h.insert(header::IF_MATCH, HeaderValue::from_str(malformed).unwrap());
            let err = precondition(&h).unwrap_err();
            assert_eq!(err.status, 400, "{malformed:?}");
        }
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert_eq!(precondition(&h).unwrap(), Precondition::Absent);
    }

    #[test]
    fn names_are_percent_encoded_in_locations() {
        assert_eq!(segment("api.path_/login x"), "api.path_%2Flogin%20x");
    }

    #[test]
    fn bodies_name_the_failing_field() {
        let err = json_body::<NewDomain>(&Bytes::from_static(br#"{"name": 5}"#)).unwrap_err();
        assert!(err.detail.contains("at name"), "{}", err.detail);
        let err =
            json_body::<NewDomain>(&Bytes::from_static(br#"{"name":"a","x":1}"#)).unwrap_err();
        assert!(err.detail.contains("unknown field `x`"), "{}", err.detail);
    }
}
