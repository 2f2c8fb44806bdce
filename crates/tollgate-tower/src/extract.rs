//! Where a descriptor entry's value comes from in a request ([`Source`]), and what a
//! closure gets to look at ([`RequestView`]).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Extensions, HeaderMap, HeaderName, Method, Uri};

/// The parts of a request a [`Source`] reads.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions (connection info, claims an authentication layer put there).
    pub extensions: &'a Extensions,
}

impl<'a> RequestView<'a> {
    /// A view of `request`.
    pub fn of<B>(request: &'a http::Request<B>) -> Self {
        Self {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
        }
    }

    /// The connection's peer: axum's `ConnectInfo<SocketAddr>` (serve with
    /// `into_make_service_with_connect_info`), tonic's `TcpConnectInfo`, or a plain
    /// `SocketAddr` extension.
    pub fn peer(&self) -> Option<SocketAddr> {
        if let Some(info) = self
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
        {
            return Some(info.0);
        }
        if let Some(info) = self
            .extensions
            .get::<tonic::transport::server::TcpConnectInfo>()
        {
            return info.remote_addr();
        }
        self.extensions.get::<SocketAddr>().copied()
    }
}

/// Claims of an authenticated caller, put in the request's extensions by the
/// authentication layer that ran before (this layer verifies nothing itself).
#[derive(Debug, Clone, Default)]
pub struct Claims(pub serde_json::Map<String, serde_json::Value>);

/// A closure that reads an entry's value from a request.
pub type ValueFn = dyn Fn(&RequestView<'_>) -> Option<String> + Send + Sync;

/// Where one descriptor entry's value comes from. A descriptor with an entry whose
/// source finds nothing is left out of the check, as Envoy leaves out a descriptor whose
/// action does not apply.
#[derive(Clone)]
pub enum Source {
    /// The connection's peer address (its IP, without the port).
    PeerAddress,
    /// A header's value (the first, when it repeats; not sent when it is not visible
    /// ASCII).
    Header(HeaderName),
    /// The request path.
    Path,
    /// The method.
    Method,
    /// A claim of [`Claims`] (a string, or a number or boolean as text).
    Claim(String),
    /// Always this value (envoyproxy/ratelimit's `generic_key`).
    Constant(String),
    /// Whatever the closure returns.
    Fn(Arc<ValueFn>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PeerAddress => f.write_str("PeerAddress"),
            Self::Header(h) => write!(f, "Header({h})"),
            Self::Path => f.write_str("Path"),
            Self::Method => f.write_str("Method"),
            Self::Claim(c) => write!(f, "Claim({c})"),
            Self::Constant(c) => write!(f, "Constant({c})"),
            Self::Fn(_) => f.write_str("Fn(..)"),
        }
    }
}

impl Source {
    /// A header, by name (`x-api-key`).
    ///
    /// # Panics
    /// When `name` is not a valid header name: a programming error, found at start-up.
    pub fn header(name: &'static str) -> Self {
        Self::Header(HeaderName::from_static(name))
    }

    /// A claim, by name (`sub`).
    pub fn claim(name: impl Into<String>) -> Self {
        Self::Claim(name.into())
    }

    /// A fixed value.
    pub fn constant(value: impl Into<String>) -> Self {
        Self::Constant(value.into())
    }

    /// A closure.
    pub fn from_fn(f: impl Fn(&RequestView<'_>) -> Option<String> + Send + Sync + 'static) -> Self {
        Self::Fn(Arc::new(f))
    }

    /// The value in `request`, borrowed from it where it can be; `None` when there is
    /// none.
    pub(crate) fn read<'a>(&'a self, request: &RequestView<'a>) -> Option<Cow<'a, str>> {
        match self {
            Self::PeerAddress => request.peer().map(|peer| Cow::Owned(peer.ip().to_string())),
            Self::Header(name) => request
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(Cow::Borrowed),
            Self::Path => Some(Cow::Borrowed(request.uri.path())),
            Self::Method => Some(Cow::Borrowed(request.method.as_str())),
            Self::Claim(name) => {
                let claims = request.extensions.get::<Claims>()?;
                match claims.0.get(name)? {
                    serde_json::Value::String(s) => Some(Cow::Borrowed(s.as_str())),
                    v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => {
                        Some(Cow::Owned(v.to_string()))
                    }
                    _ => None,
                }
            }
            Self::Constant(value) => Some(Cow::Borrowed(value.as_str())),
            Self::Fn(f) => f(request).map(Cow::Owned),
        }
    }
}
