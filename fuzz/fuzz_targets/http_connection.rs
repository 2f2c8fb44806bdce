//! The data listener's HTTP/1.1 loop on any bytes, cut into writes of any size: it never
//! panics, and what it sends back is a run of whole HTTP/1.1 responses, whether it
//! answered the requests itself or handed the connection to hyper.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_data::http::connection::DataConnection;
use tollgate_data::http::hyper_side::hyper_settings;

thread_local! {
    /// One runtime for all runs. Its clock is paused: timeouts elapse as soon as everything
    /// waits, so the slow-client paths run too.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
}

fuzz_target!(|data: &[u8]| {
    // The first byte sets the size of the writes the rest is cut into.
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let output = RUNTIME.with(|runtime| {
        runtime.block_on(async {
            let state = common::state();
            let router = tollgate_data::http::router(state.clone());
            let (client, server) = tokio::io::duplex(16 * 1024);
            let connection = DataConnection::new(server, None, state, router, hyper_settings());
            let served = tokio::spawn(connection);
            let (mut from_server, mut to_server) = tokio::io::split(client);
            let write = async move {
                for chunk in input.chunks(usize::from(cut).max(1)) {
                    if to_server.write_all(chunk).await.is_err() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                let _ = to_server.shutdown().await;
            };
            let read = async move {
                let mut output = Vec::new();
                let _ = from_server.read_to_end(&mut output).await;
                output
            };
            let ((), output) = tokio::join!(write, read);
            // A panic in the connection surfaces here.
            let _ = served
                .await
                .expect("the connection task ended without panicking");
            output
        })
    });
    let mut rest = &output[..];
    while !rest.is_empty() {
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut fields);
        let head = match response.parse(rest) {
            Ok(httparse::Status::Complete(head)) => head,
            other => panic!(
                "not a whole response ({other:?}): {:?}",
                String::from_utf8_lossy(rest)
            ),
        };
        let status = response.code.expect("status");
        let length = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .map(|h| {
                std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.parse::<usize>().ok())
                    .expect("a numeric content-length")
            });
        let length = match (status, length) {
            (100..=199, _) => 0,
            (_, Some(n)) => n,
            (_, None) => panic!(
                "an answer without content-length: {:?}",
                String::from_utf8_lossy(rest)
            ),
        };
        assert!(rest.len() >= head + length, "a body cut short");
        rest = &rest[head + length..];
    }
});
