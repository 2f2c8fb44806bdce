//! `POST /v1/check`: any body gets a decision (200) or a problem (4xx) with a request id,
//! never a panic or a 5xx.
#![no_main]

#[path = "common.rs"]
mod common;

use http::header;
use libfuzzer_sys::fuzz_target;
use tollgate_data::http::check::{CheckHeaders, answer};

fuzz_target!(|data: &[u8]| {
    let state = common::state();
    let headers = CheckHeaders {
        content_type: Some(b"application/json"),
        ..CheckHeaders::default()
    };
    let response = common::run(answer(&state, headers, Ok(data)));
    let status = response.status().as_u16();
    assert!(
        status == 200 || (400..500).contains(&status),
        "status {status}"
    );
    assert!(response.headers().contains_key("x-request-id"));
    if status != 200 {
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
});
