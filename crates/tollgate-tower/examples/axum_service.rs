//! An axum service with Tollgate inside it: 5 requests per minute per API key and 20 per
//! minute per client address, decided in this process (or by a running Tollgate when
//! `TOLLGATE_URL` is set, failing open).
//!
//! ```sh
//! cargo run -p tollgate-tower --example axum_service            # embedded, in memory
//! TOLLGATE_REDIS=redis://127.0.0.1:6379 cargo run -p tollgate-tower --example axum_service
//! TOLLGATE_URL=http://127.0.0.1:8080 cargo run -p tollgate-tower --example axum_service
//! curl -i -H 'x-api-key: k1' http://127.0.0.1:3000/hello   # the sixth in a minute gets 429
//! ```

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use tollgate_tower::{FailMode, RateLimitLayer, Source, embedded};

const POLICIES: &str = "domain: example
descriptors:
  - key: api_key
    rate_limit: {unit: minute, requests_per_unit: 5}
  - key: remote_address
    rate_limit: {unit: minute, requests_per_unit: 20}
";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let layer = match (
        std::env::var("TOLLGATE_URL"),
        std::env::var("TOLLGATE_REDIS"),
    ) {
        (Ok(url), _) => {
            let client = tollgate_client::CheckClient::new(&url, None, None)?;
            RateLimitLayer::remote_http(client, "example").fail(FailMode::Open)
        }
        (_, Ok(redis)) => {
            let policies = embedded::policies([("example.yaml", POLICIES)])?;
            RateLimitLayer::embedded(embedded::redis(policies, &redis).await?, "example")
        }
        _ => {
            let policies = embedded::policies([("example.yaml", POLICIES)])?;
            RateLimitLayer::embedded(embedded::memory(policies), "example")
        }
    };
    let app = Router::new()
        .route("/hello", get(|| async { "hello\n" }))
        .layer(
            layer
                .descriptor([("api_key", Source::header("x-api-key"))])
                .descriptor([("remote_address", Source::PeerAddress)]),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
