//! A client of a running Tollgate: [`CheckClient`] asks the data plane for decisions
//! (`POST /v1/check`, `POST /v1/checks`), [`GrpcCheckClient`] asks over gRPC (Envoy's RLS),
//! [`AdminClient`] calls the admin API. Both speak `tollgate-api`'s
//! types and turn problem details into [`ClientError`]s that say what to do.

mod grpc;

use std::path::{Path, PathBuf};

pub use grpc::{GrpcCheckClient, check_response, rls_request};

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::Value;
use tollgate_api::{CheckRequest, CheckResponse, ProblemDetails};

/// Why a call did not get an answer it could use.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A credential that cannot be sent as a header.
    #[error("the {what} must be visible ASCII")]
    Credential {
        /// Which credential.
        what: &'static str,
    },
    /// The CA file could not be used.
    #[error("{message} ({})", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
    /// The server could not be reached.
    #[error("cannot reach {url} ({hint}): {source}")]
    Unreachable {
        /// Where.
        url: String,
        /// What to check.
        hint: &'static str,
        /// Why.
        source: reqwest::Error,
    },
    /// The server answered with an error.
    #[error("{url} answered {status}: {detail}")]
    Refused {
        /// Where.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The problem's detail, its field errors, and what to do.
        detail: String,
    },
    /// The answer was not what the API promises.
    #[error("{url} answered {status} with an unreadable body: {message}")]
    Unreadable {
        /// Where.
        url: String,
        /// The HTTP status.
        status: u16,
        /// Why.
        message: String,
    },
}

/// TLS for `https://` URLs: the CA file's certificates, else the public web roots.
pub fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, ClientError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let ca_error = |path: &Path, message: String| ClientError::CaFile {
        path: path.to_path_buf(),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| ca_error(path, format!("cannot read CA certificates: {e}")))?;
            for cert in certs {
                let cert = cert.map_err(|e| ca_error(path, format!("invalid certificate: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| ca_error(path, format!("unusable CA certificate: {e}")))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Build(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// An HTTP client that sends `Bearer <token>` (never logged: the header is sensitive).
fn http_client(
    token: Option<&str>,
    what: &'static str,
    ca_file: Option<&Path>,
) -> Result<reqwest::Client, ClientError> {
    let mut headers = HeaderMap::new();
    if let Some(token) = token {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| ClientError::Credential { what })?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .use_preconfigured_tls(tls_config(ca_file)?)
        .build()
        .map_err(|e| ClientError::Build(e.to_string()))
}

/// A problem's detail and field errors, one per line.
fn describe(problem: &ProblemDetails) -> String {
    let mut out = problem.detail.clone();
    for e in &problem.errors {
        out.push_str(&format!("\n  {}: {}", e.field, e.message));
    }
    out
}

/// Checks on a server's data plane (`POST /v1/check`).
pub struct CheckClient {
    url: String,
    client: reqwest::Client,
}

impl CheckClient {
    /// A client of the HTTP listener at `base` (`http://127.0.0.1:8080`), sending the
    /// data-plane `token` when the server requires one.
    pub fn new(
        base: &str,
        token: Option<&str>,
        ca_file: Option<&Path>,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            url: format!("{}/v1/check", base.trim_end_matches('/')),
            client: http_client(token, "token", ca_file)?,
        })
    }

    /// One decision, with the answer's headers (`RateLimit-Policy`, `RateLimit`,
    /// `Retry-After`).
    pub async fn check(
        &self,
        request: &CheckRequest<'_>,
    ) -> Result<(CheckResponse, HeaderMap), ClientError> {
        self.post(&self.url, request).await
    }

    /// Many independent checks in one request (`POST /v1/checks`): one answer per check, in
    /// order, a malformed check refused in its place.
    pub async fn check_many(
        &self,
        checks: &[CheckRequest<'_>],
    ) -> Result<Vec<tollgate_api::BatchResult>, ClientError> {
        let body = tollgate_api::BatchRequest {
            checks: checks.to_vec(),
        };
        let (answer, _): (tollgate_api::BatchResponse, _) =
            self.post(&format!("{}s", self.url), &body).await?;
        Ok(answer.results)
    }

    /// POSTs `body` as JSON to `url` and reads a 2xx answer as `T`, with its headers; a
    /// problem becomes [`ClientError::Refused`].
    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        body: &impl serde::Serialize,
    ) -> Result<(T, HeaderMap), ClientError> {
        let response = (self.client.post(url).json(body).send().await).map_err(|source| {
            ClientError::Unreachable {
                url: url.to_owned(),
                hint: "is `tollgate serve` running?",
                source,
            }
        })?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let unreadable = |message: String| ClientError::Unreadable {
            url: url.to_owned(),
            status,
            message,
        };
        let bytes = response
            .bytes()
            .await
            .map_err(|e| unreadable(e.to_string()))?;
        if !(200..300).contains(&status) {
            let detail = serde_json::from_slice::<ProblemDetails>(&bytes)
                .map_or_else(|_| "no detail".to_owned(), |p| describe(&p));
            return Err(ClientError::Refused {
                url: url.to_owned(),
                status,
                detail,
            });
        }
        let answer = serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
        Ok((answer, headers))
    }
}

/// Calls to a server's admin API (REST under `/v1/admin/`).
pub struct AdminClient {
    base: String,
    client: reqwest::Client,
}

impl AdminClient {
    /// A client of the admin listener at `base`, authenticating with `key` (an API key or a
    /// JWT).
    pub fn new(base: &str, key: Option<&str>, ca_file: Option<&Path>) -> Result<Self, ClientError> {
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            client: http_client(key, "admin key", ca_file)?,
        })
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request builder on the client (authentication included).
    pub fn http(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends `request`: its status and its JSON body (`Null` when empty, the text when not
    /// JSON).
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Value), ClientError> {
        let url = self.base.clone();
        let response = request
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: url.clone(),
                hint: "is `tollgate serve` running? set --admin",
                source,
            })?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| ClientError::Unreadable {
            url,
            status,
            message: e.to_string(),
        })?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, body))
    }

    /// Sends `request` and expects a 2xx: a problem becomes [`ClientError::Refused`] with
    /// its detail, its field errors and, for 401, how to get a key.
    pub async fn ok(&self, request: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let (status, body) = self.send(request).await?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        Err(self.refusal(status, &body))
    }

    /// The error for an answer that is not a success: the problem's detail, its field
    /// errors and, for 401, how to get a key.
    pub fn refusal(&self, status: u16, body: &Value) -> ClientError {
        let mut detail = match serde_json::from_value::<ProblemDetails>(body.clone()) {
            Ok(problem) => describe(&problem),
            Err(_) => body.to_string(),
        };
        if status == 401 {
            detail.push_str(
                "\n  set TOLLGATE_ADMIN_KEY to an API key (create one with `tollgate keys create --role admin`)",
            );
        }
        ClientError::Refused {
            url: self.base.clone(),
            status,
            detail,
        }
    }
}
