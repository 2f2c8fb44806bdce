//! API keys and the audit log over REST (admins of every domain).

use super::*;

/// Filters of the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this action (`policy.put`, `key.create`, `authenticate`, ...).
    #[param(max_length = 64)]
    action: Option<String>,
    /// Where to continue: a `next_cursor` from the previous page.
    #[param(pattern = "^[0-9]{1,18}$")]
    cursor: Option<String>,
    /// Items per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

/// Paging of the key listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KeyPageQuery {
    /// Where to continue: a `next_cursor` from the previous page.
    #[param(pattern = "^([0-9a-f]{2}){1,256}$")]
    cursor: Option<String>,
    /// Items per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

/// Lists API keys (never their secrets), revoked ones included.
#[utoipa::path(get, path = "/v1/admin/keys", tag = "access", params(KeyPageQuery),
    responses((status = 200, description = "One page of keys, by id", body = Page<ApiKey>),
              (status = 400, description = "Bad paging", body = ProblemDoc, content_type = "application/problem+json")))]
pub async fn list_keys(
    State(s): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    uri: Uri,
) -> Reply {
    let q: KeyPageQuery = query(&uri)?;
    let page = s
        .control
        .list_keys(q.cursor.as_deref(), q.limit, &actor)
        .await
        .map_err(|e| problem(&e))?;
    Ok(Json(page).into_response())
}

/// Creates an API key. The answer is the only time the key is shown.
#[utoipa::path(post, path = "/v1/admin/keys", tag = "access", request_body = NewApiKey,
    responses((status = 201, description = "Created: store `key` now", body = CreatedApiKey),
              (status = 400, description = "Invalid", body = ProblemDoc, content_type = "application/problem+json")))]
pub async fn create_key(
    State(s): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    body: Bytes,
) -> Reply {
    let new: NewApiKey = json_body(&body)?;
    let created = s
        .control
        .create_key(&new, &actor)
        .await
        .map_err(|e| problem(&e))?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Revokes an API key, on every node at once.
#[utoipa::path(delete, path = "/v1/admin/keys/{id}", tag = "access",
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 200, description = "Revoked", body = ApiKey),
              (status = 400, description = "Bad path", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 404, description = "No such key", body = ProblemDoc, content_type = "application/problem+json"),
              (status = 409, description = "Already revoked, or the key authenticating this request", body = ProblemDoc, content_type = "application/problem+json")))]
pub async fn revoke_key(
    State(s): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    p: Result<Path<String>, PathRejection>,
) -> Reply {
    let id = path(p)?;
    let key = s
        .control
        .revoke_key(&id, &actor)
        .await
        .map_err(|e| problem(&e))?;
    Ok(Json(key).into_response())
}

/// The audit log, newest first: admin mutations and failed authentications.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "access", params(AuditQuery),
    responses((status = 200, description = "One page of events", body = Page<AuditEvent>),
              (status = 400, description = "Bad paging", body = ProblemDoc, content_type = "application/problem+json")))]
pub async fn audit_log(
    State(s): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    uri: Uri,
) -> Reply {
    let q: AuditQuery = query(&uri)?;
    let page = s
        .control
        .audit_log(q.action.as_deref(), q.cursor.as_deref(), q.limit, &actor)
        .await
        .map_err(|e| problem(&e))?;
    Ok(Json(page).into_response())
}
