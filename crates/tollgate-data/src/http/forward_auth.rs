//! Forward auth: a proxy in front of a site asks before it serves each request — nginx's
//! `auth_request`, Traefik's ForwardAuth, Envoy's HTTP `ext_authz`. Route:
//! `/v1/forward-auth/{domain}` (any method; Envoy's `path_prefix` may append the original
//! path after it).
//!
//! Descriptors are built from the original request by a mapping the proxy sends, as the
//! query parameter `descriptor` (repeatable; one descriptor each), or, when the query is
//! the original request's (Envoy appends it), as `X-Tollgate-Descriptor` headers. A
//! descriptor is a comma-separated list of entries:
//!
//! | entry | key | value |
//! | --- | --- | --- |
//! | `remote_address` | `remote_address` | the client's address (see below) |
//! | `method` | `method` | `X-Forwarded-Method`, `X-Original-Method`, else this request's |
//! | `path` | `path` | `X-Forwarded-Uri`, `X-Original-URI`, else what follows the route, without its query |
//! | `host` | `host` | `X-Forwarded-Host`, else `Host` |
//! | `header:NAME` | `NAME` | that header (a descriptor whose header is absent is left out, as Envoy does) |
//! | `generic_key:VALUE` | `generic_key` | `VALUE` |
//!
//! With no mapping, one descriptor: `remote_address`. The client's address is the peer's,
//! unless the peer is a trusted proxy (`--trusted-proxies`, loopback by default): then the
//! right-most `X-Forwarded-For` address that is not itself a trusted proxy.
//!
//! Allowed: 200 with the `RateLimit-Policy` and `RateLimit` headers. Denied: 429 with
//! `Retry-After`, or `deny_status=403` for nginx, whose `auth_request` takes any other
//! answer than 2xx, 401 and 403 for an error (the recipe in `examples/nginx/` turns that 403
//! into a 429 with `Retry-After`).

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tollgate_core::{CheckRequest, Entry};

use super::connection::PeerAddr;
use super::problem::Problem;
use super::request_id::RequestId;
use crate::data_plane::DescriptorParts;
use crate::state::AppState;

/// Most descriptors and entries a mapping may name.
const MAX_DESCRIPTORS: usize = 8;
const MAX_ENTRIES: usize = 8;

/// One entry of a mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    RemoteAddress,
    Method,
    Path,
    Host,
    Header(String),
    GenericKey(String),
}

impl Source {
    fn parse(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        Ok(match spec.split_once(':') {
            None => match spec {
                "remote_address" => Source::RemoteAddress,
                "method" => Source::Method,
                "path" => Source::Path,
                "host" => Source::Host,
                other => {
                    return Err(format!(
                        "unknown entry '{other}': expected remote_address, method, path, host, header:NAME or generic_key:VALUE"
                    ));
                }
            },
            Some(("header", name)) if http::HeaderName::from_bytes(name.as_bytes()).is_ok() => {
                Source::Header(name.to_ascii_lowercase())
            }
            Some(("header", name)) => return Err(format!("'{name}' is not a header name")),
            Some(("generic_key", value)) => Source::GenericKey(value.to_owned()),
            Some((kind, _)) => {
                return Err(format!(
                    "unknown entry '{kind}:…': expected header:NAME or generic_key:VALUE"
                ));
            }
        })
    }
}

/// What the mapping asks and how to answer.
#[derive(Debug, Default)]
struct Mapping {
    descriptors: Vec<Vec<Source>>,
    hits: u64,
    deny_status: Option<StatusCode>,
}

fn parse_mapping(query: Option<&str>, headers: &HeaderMap) -> Result<Mapping, String> {
    let mut mapping = Mapping {
        hits: 1,
        ..Mapping::default()
    };
    let mut specs: Vec<(String, String)> = Vec::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "descriptor" => specs.push(("descriptor".into(), value.into_owned())),
            "hits" => {
                mapping.hits = value
                    .parse::<u64>()
                    .ok()
                    .filter(|&h| h > 0)
                    .ok_or_else(|| {
                        format!("hits must be a positive whole number, got '{value}'")
                    })?;
            }
            "deny_status" => {
                mapping.deny_status = Some(match value.as_ref() {
                    "429" => StatusCode::TOO_MANY_REQUESTS,
                    "403" => StatusCode::FORBIDDEN,
                    other => return Err(format!("deny_status must be 429 or 403, got '{other}'")),
                });
            }
            // The original request's own parameters (Envoy appends them): not ours.
            _ => {}
        }
    }
    if specs.is_empty() {
        for value in headers.get_all("x-tollgate-descriptor") {
            let value = value
                .to_str()
                .map_err(|_| "X-Tollgate-Descriptor is not visible ASCII".to_owned())?;
            specs.push(("X-Tollgate-Descriptor".into(), value.to_owned()));
        }
    }
    for (i, (origin, spec)) in specs.iter().enumerate() {
        if i == MAX_DESCRIPTORS {
            return Err(format!("at most {MAX_DESCRIPTORS} descriptors"));
        }
        let entries = spec
            .split(',')
            .map(Source::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{origin} {i} ('{spec}'): {e}"))?;
        if entries.len() > MAX_ENTRIES {
            return Err(format!("{origin} {i}: at most {MAX_ENTRIES} entries"));
        }
        mapping.descriptors.push(entries);
    }
    if mapping.descriptors.is_empty() {
        mapping.descriptors.push(vec![Source::RemoteAddress]);
    }
    Ok(mapping)
}

/// The client's address: the peer's, or, from a trusted proxy, the right-most
/// `X-Forwarded-For` address that is not a trusted proxy itself.
fn client_address(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = peer?;
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        // `[v6]:port` and `v4:port` appear in the wild; plain addresses are the norm.
        let bare = hop.trim_start_matches('[').split(']').next().unwrap_or(hop);
        let Ok(ip) = bare.parse::<IpAddr>().or_else(|_| {
            bare.rsplit_once(':')
                .map_or(Err(()), |(a, _)| a.parse().map_err(|_| ()))
        }) else {
            // Garbage in the chain: stop at what is known.
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    Some(client)
}

fn header<'a>(headers: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| headers.get(*n).and_then(|v| v.to_str().ok()))
}

/// `/v1/forward-auth/{domain}` and `/v1/forward-auth/{domain}/{*rest}`.
pub(crate) async fn forward_auth(
    State(state): State<Arc<AppState>>,
    Path(params): Path<Vec<(String, String)>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    answer(&state, &params, request)
        .await
        .map(axum::body::Body::from)
}

async fn answer(
    state: &AppState,
    params: &[(String, String)],
    request: axum::extract::Request,
) -> http::Response<Bytes> {
    let (parts, _) = request.into_parts();
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
    let query = uri.query().map(str::to_owned);
    let peer = parts.extensions.get::<PeerAddr>().copied();
    if let Err(refused) = super::check::authorize(
        state,
        headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
    ) {
        return refused;
    }
    let domain = params
        .iter()
        .find(|(k, _)| k == "domain")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    let rest = params
        .iter()
        .find(|(k, _)| k == "rest")
        .map(|(_, v)| v.as_str());
    let mapping = match parse_mapping(query.as_deref(), &headers) {
        Ok(m) => m,
        Err(e) => return Problem::invalid_request(e).to_response(),
    };
    let client = client_address(peer.map(|p| p.0.ip()), &headers, &state.trusted_proxies)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let path = header(&headers, &["x-forwarded-uri", "x-original-uri"])
        .map(str::to_owned)
        .unwrap_or_else(|| match rest {
            Some(rest) => format!("/{rest}"),
            None => uri.path().to_owned(),
        });
    let path = path.split('?').next().unwrap_or_default().to_owned();
    let method = header(&headers, &["x-forwarded-method", "x-original-method"])
        .map(str::to_owned)
        .unwrap_or_else(|| method.as_str().to_owned());
    let host = header(&headers, &["x-forwarded-host", "host"])
        .unwrap_or_default()
        .to_owned();

    // Every value the descriptors point into, kept alive for the check.
    let mut values: Vec<(String, String)> = Vec::new();
    let mut lengths = Vec::new();
    'descriptors: for sources in &mapping.descriptors {
        let start = values.len();
        for source in sources {
            let entry = match source {
                Source::RemoteAddress => ("remote_address".to_owned(), client.clone()),
                Source::Method => ("method".to_owned(), method.clone()),
                Source::Path => ("path".to_owned(), path.clone()),
                Source::Host => ("host".to_owned(), host.clone()),
                Source::GenericKey(v) => ("generic_key".to_owned(), v.clone()),
                Source::Header(name) => {
                    match headers.get(name.as_str()).and_then(|v| v.to_str().ok()) {
                        Some(v) => (name.clone(), v.to_owned()),
                        None => {
                            values.truncate(start);
                            continue 'descriptors;
                        }
                    }
                }
            };
            values.push(entry);
        }
        lengths.push(values.len() - start);
    }
    let entries: Vec<Entry<'_>> = values
        .iter()
        .map(|(k, v)| Entry { key: k, value: v })
        .collect();
    let descriptors = crate::data_plane::descriptors(
        &entries,
        lengths.into_iter().map(|entries| DescriptorParts {
            entries,
            hits: None,
            limit_override: None,
        }),
    );
    let id = RequestId::from_header(
        headers
            .get(&super::request_id::REQUEST_ID)
            .map(HeaderValue::as_bytes),
    );
    if descriptors.is_empty() {
        // Every descriptor named a header the request does not carry: nothing to limit.
        return allowed_empty(&id);
    }
    let request = CheckRequest {
        domain,
        descriptors: &descriptors,
        hits: mapping.hits,
    };
    let span = crate::trace::decision(
        "forward_auth",
        &id,
        crate::trace::TraceHeaders::of(&headers),
    );
    let decision =
        match tracing::Instrument::instrument(state.limiter.check(&request), span.clone()).await {
            Ok(d) => d,
            Err(e) => {
                return Problem::invalid_request(format!(
                    "forward auth for domain '{domain}': {e}"
                ))
                .to_response();
            }
        };
    span.in_scope(|| crate::data_plane::record(state, &id, &request, &decision));
    crate::trace::decided(&span, domain, decision.allowed);
    let mut response = super::render::decision(&decision);
    let status = if decision.allowed {
        StatusCode::OK
    } else {
        mapping.deny_status.unwrap_or(StatusCode::TOO_MANY_REQUESTS)
    };
    *response.status_mut() = status;
    if !decision.allowed && !response.headers().contains_key(header::RETRY_AFTER) {
        // Denied for good (a cost over the limit): say when trying again is no use.
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("3600"));
    }
    response
        .headers_mut()
        .insert(&super::request_id::REQUEST_ID, id.header_value());
    response
}

fn allowed_empty(id: &RequestId) -> http::Response<Bytes> {
    let mut response =
        http::Response::new(Bytes::from_static(b"{\"allowed\":true,\"statuses\":[]}"));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert(&super::request_id::REQUEST_ID, id.header_value());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn mappings_come_from_the_query_else_the_header_else_the_default() {
        let m = parse_mapping(Some("descriptor=remote_address&descriptor=path,header:X-Api-Key&hits=2&deny_status=403&q=x"), &HeaderMap::new()).unwrap();
        assert_eq!(
            m.descriptors,
            vec![
                vec![Source::RemoteAddress],
                vec![Source::Path, Source::Header("x-api-key".into())]
            ]
        );
        assert_eq!((m.hits, m.deny_status), (2, Some(StatusCode::FORBIDDEN)));
        let m = parse_mapping(
            Some("q=original"),
            &headers(&[("x-tollgate-descriptor", "method,generic_key:api")]),
        )
        .unwrap();
        assert_eq!(
            m.descriptors,
            vec![vec![Source::Method, Source::GenericKey("api".into())]]
        );
        let m = parse_mapping(None, &HeaderMap::new()).unwrap();
        assert_eq!(m.descriptors, vec![vec![Source::RemoteAddress]]);
        let e = parse_mapping(Some("descriptor=path,cookie"), &HeaderMap::new()).unwrap_err();
        assert!(
            e.contains("descriptor 0") && e.contains("unknown entry 'cookie'"),
            "{e}"
        );
        assert!(
            parse_mapping(Some("deny_status=500"), &HeaderMap::new())
                .unwrap_err()
                .contains("deny_status")
        );
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_forwarded_address() {
        let trusted: Vec<ipnet::IpNet> = vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let xff = headers(&[
            ("x-forwarded-for", "203.0.113.9, 198.51.100.7"),
            ("x-forwarded-for", "10.1.1.1"),
        ]);
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            client_address(Some(loopback), &xff, &trusted),
            Some("198.51.100.7".parse().unwrap())
        );
        // A peer that is not a proxy we trust speaks for itself, whatever it claims.
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            client_address(Some(stranger), &xff, &trusted),
            Some(stranger)
        );
        // No header: the proxy itself.
        assert_eq!(
            client_address(Some(loopback), &HeaderMap::new(), &trusted),
            Some(loopback)
        );
        let ported = headers(&[("x-forwarded-for", "[2001:db8::1]:443")]);
        assert_eq!(
            client_address(Some(loopback), &ported, &trusted),
            Some("2001:db8::1".parse().unwrap())
        );
    }
}
