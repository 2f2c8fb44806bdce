//! The data listener's HTTP/1.1 on raw connections: pipelining, heads cut across writes,
//! `Connection: close`, and the move to hyper at the first request of another shape, with
//! the bytes already read kept.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{POLICIES, TempDir, TestServer};

fn server() -> (TestServer, TempDir) {
    let dir = TempDir::new("http1");
    let file = dir.write("shop.yaml", POLICIES);
    (TestServer::start(Some(&file)), dir)
}

async fn connect(s: &TestServer) -> TcpStream {
    let addr = s.base.trim_start_matches("http://");
    TcpStream::connect(addr).await.expect("connect")
}

/// A check for `user`, as raw HTTP/1.1, with `extra` header lines.
fn check(user: &str, id: &str, extra: &str) -> String {
    let body = format!(
        r#"{{"domain":"shop","descriptors":[{{"entries":[{{"key":"user","value":"{user}"}}]}}]}}"#
    );
    format!(
        "POST /v1/check HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\nx-request-id: {id}\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// One answer as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

/// Reads `n` answers (framed by `content-length`), skipping `100 Continue`.
async fn read_answers(stream: &mut TcpStream, n: usize) -> Vec<Answer> {
    let mut buf = Vec::new();
    let mut answers = Vec::new();
    let read = async {
        while answers.len() < n {
            let mut fields = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut fields);
            if let Ok(httparse::Status::Complete(head)) = response.parse(&buf) {
                let status = response.code.expect("status");
                let headers: Vec<(String, String)> = response
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .map_or(0, |(_, v)| v.parse().expect("content-length"));
                if status == 100 {
                    buf.drain(..head);
                    continue;
                }
                if buf.len() >= head + length {
                    let body = buf[head..head + length].to_vec();
                    buf.drain(..head + length);
                    answers.push(Answer {
                        status,
                        headers,
                        body,
                    });
                    continue;
                }
            }
            let mut chunk = [0u8; 4096];
            let got = stream.read(&mut chunk).await.expect("read");
            assert!(got > 0, "connection closed after {} answers", answers.len());
            buf.extend_from_slice(&chunk[..got]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("answers within 10 s");
    assert!(buf.is_empty(), "unexpected bytes after the answers");
    answers
}

/// Whether the server closes the connection (reads end) within 10 s.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await {
        Ok(Ok(_)) => rest.is_empty(),
        Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Err(_) => false,
    }
}

#[tokio::test]
async fn pipelined_checks_are_answered_in_order() {
    let (s, _dir) = server();
    let mut stream = connect(&s).await;
    let requests: String = (0..4)
        .map(|i| check("pipelined", &format!("p-{i}"), ""))
        .collect();
    stream.write_all(requests.as_bytes()).await.unwrap();
    let answers = read_answers(&mut stream, 4).await;
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a.status, 200);
        assert_eq!(a.header("x-request-id"), Some(format!("p-{i}").as_str()));
        assert_eq!(a.header("content-type"), Some("application/json"));
        assert!(a.header("date").is_some_and(|d| d.ends_with(" GMT")));
        let v = a.json();
        // A limit of 3 an hour: three pass, in the order they were sent.
        assert_eq!(v["allowed"], i < 3, "{v}");
        assert_eq!(v["statuses"][0]["remaining"], 2u64.saturating_sub(i as u64));
    }
    // Hourly windows are aligned to the clock: t is what is left of this hour.
    let current = answers[0].header("ratelimit").expect("RateLimit");
    assert!(current.starts_with("\"per_user\";r=2;t="), "{current}");
    assert!(answers[2].header("retry-after").is_none());
    assert!(answers[3].header("retry-after").is_some());
}

#[tokio::test]
async fn another_request_moves_the_connection_to_hyper_with_the_bytes_after_it() {
    let (s, _dir) = server();
    let mut stream = connect(&s).await;
    // One write: a check, a health check, a check. The second request goes to hyper,
    // which must also get the third from what was already read.
    let batch = format!(
        "{}GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n{}",
        check("moved", "m-1", ""),
        check("moved", "m-2", "")
    );
    stream.write_all(batch.as_bytes()).await.unwrap();
    let answers = read_answers(&mut stream, 3).await;
    assert_eq!(
        answers.iter().map(|a| a.status).collect::<Vec<_>>(),
        [200, 200, 200]
    );
    assert_eq!(answers[0].header("x-request-id"), Some("m-1"));
    assert_eq!(answers[0].json()["statuses"][0]["remaining"], 2);
    assert!(answers[1].header("x-request-id").is_none());
    assert_eq!(answers[2].header("x-request-id"), Some("m-2"));
    assert_eq!(answers[2].json()["statuses"][0]["remaining"], 1);
    // hyper goes on serving the connection.
    stream
        .write_all(check("moved", "m-3", "").as_bytes())
        .await
        .unwrap();
    let last = read_answers(&mut stream, 1).await;
    assert_eq!(last[0].json()["statuses"][0]["remaining"], 0);
}

#[tokio::test]
async fn both_ways_of_answering_a_check_give_the_same_answer() {
    let (s, _dir) = server();
    // The first answered here; the second by hyper (after a request only hyper serves).
    let mut own = connect(&s).await;
    own.write_all(check("same-a", "s-1", "").as_bytes())
        .await
        .unwrap();
    let own = read_answers(&mut own, 1).await.remove(0);
    let mut hyper = connect(&s).await;
    let batch = format!(
        "GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n{}",
        check("same-b", "s-1", "")
    );
    hyper.write_all(batch.as_bytes()).await.unwrap();
    let hyper = read_answers(&mut hyper, 2).await.remove(1);
    assert_eq!(own.status, hyper.status);
    assert_eq!(timeless(own.json()), timeless(hyper.json()));
    assert_eq!(untimed_headers(&own), untimed_headers(&hyper));
    // A denial too, with its Retry-After.
    let mut own = connect(&s).await;
    let mut hyper = connect(&s).await;
    let three: String = (0..4).map(|_| check("same-c", "d", "")).collect();
    own.write_all(three.as_bytes()).await.unwrap();
    let own = read_answers(&mut own, 4).await.remove(3);
    let three: String = (0..4).map(|_| check("same-d", "d", "")).collect();
    let batch = format!("GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n{three}");
    hyper.write_all(batch.as_bytes()).await.unwrap();
    let hyper = read_answers(&mut hyper, 5).await.remove(4);
    assert_eq!(own.json()["allowed"], false);
    assert_eq!(timeless(own.json()), timeless(hyper.json()));
    assert_eq!(untimed_headers(&own), untimed_headers(&hyper));
    assert!(own.header("retry-after").is_some() && hyper.header("retry-after").is_some());
}

/// An answer's JSON without the times, which move between two requests.
fn timeless(mut v: Value) -> Value {
    for status in v["statuses"].as_array_mut().expect("statuses") {
        let status = status.as_object_mut().expect("status");
        status.remove("reset_after_ms");
        status.remove("retry_after_ms");
    }
    v
}

/// An answer's headers, sorted, with the times cut off (`date`, `retry-after`, and the
/// `t=` of `RateLimit`).
fn untimed_headers(a: &Answer) -> Vec<(String, String)> {
    let mut headers: Vec<_> = a
        .headers
        .iter()
        .filter(|(n, _)| n != "date" && n != "retry-after")
        .map(|(n, v)| match v.split_once(";t=") {
            Some((kept, _)) if n == "ratelimit" => (n.clone(), kept.to_owned()),
            _ => (n.clone(), v.clone()),
        })
        .collect();
    headers.sort();
    headers
}

#[tokio::test]
async fn a_check_cut_across_writes_is_answered() {
    let (s, _dir) = server();
    let mut stream = connect(&s).await;
    let raw = check("slow", "cut-1", "");
    let (a, rest) = raw.split_at(30);
    let (b, c) = rest.split_at(rest.len() - 10);
    for part in [a, b, c] {
        stream.write_all(part.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = read_answers(&mut stream, 1).await.remove(0);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-request-id"), Some("cut-1"));
    assert_eq!(answer.json()["allowed"], true);
}

#[tokio::test]
async fn connection_close_is_honoured() {
    let (s, _dir) = server();
    let mut stream = connect(&s).await;
    let batch = format!(
        "{}{}",
        check("closing", "c-1", "connection: close\r\n"),
        check("closing", "c-2", "")
    );
    stream.write_all(batch.as_bytes()).await.unwrap();
    let answer = read_answers(&mut stream, 1).await.remove(0);
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(
        closed(&mut stream).await,
        "the request after close is not answered"
    );
    // Only the first request was counted.
    let v = s
        .check_json(&crate::helpers::body("shop", &[&[("user", "closing")]], 1))
        .await;
    assert_eq!(v["statuses"][0]["remaining"], 1);
}

#[tokio::test]
async fn expect_continue_chunked_bodies_and_http_1_0_are_served_by_hyper() {
    let (s, _dir) = server();
    let body = r#"{"domain":"shop","descriptors":[{"entries":[{"key":"user","value":"hyper"}]}]}"#;
    // Expect: 100-continue: the body follows the interim answer.
    let mut stream = connect(&s).await;
    let head = format!(
        "POST /v1/check HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).await.unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(body.as_bytes()).await.unwrap();
    let answer = read_answers(&mut stream, 1).await.remove(0);
    assert_eq!(answer.json()["statuses"][0]["remaining"], 2);
    // A chunked body.
    let chunked = format!(
        "POST /v1/check HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let mut stream = connect(&s).await;
    stream.write_all(chunked.as_bytes()).await.unwrap();
    let answer = read_answers(&mut stream, 1).await.remove(0);
    assert_eq!(answer.json()["statuses"][0]["remaining"], 1);
    // HTTP/1.0: answered, then closed.
    let old = format!(
        "POST /v1/check HTTP/1.0\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = connect(&s).await;
    stream.write_all(old.as_bytes()).await.unwrap();
    let answer = read_answers(&mut stream, 1).await.remove(0);
    assert_eq!(answer.json()["statuses"][0]["remaining"], 0);
    assert!(closed(&mut stream).await);
}

#[tokio::test]
async fn malformed_and_oversized_heads_get_hypers_answers() {
    let (s, _dir) = server();
    let mut stream = connect(&s).await;
    stream
        .write_all(b"POST /v1/check HTTP/1.1\r\nbad header\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answers(&mut stream, 1).await.remove(0);
    assert_eq!(answer.status, 400);
    assert!(closed(&mut stream).await);
    // Over this loop's own head limit but within hyper's: still answered.
    let mut stream = connect(&s).await;
    let big = format!("x-padding: {}\r\n", "a".repeat(20 * 1024));
    stream
        .write_all(check("padded", "big-1", &big).as_bytes())
        .await
        .unwrap();
    let answer = read_answers(&mut stream, 1).await.remove(0);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-request-id"), Some("big-1"));
    // Over hyper's: 431.
    let mut stream = connect(&s).await;
    let huge = format!("x-padding: {}\r\n", "a".repeat(70 * 1024));
    stream
        .write_all(check("padded", "big-2", &huge).as_bytes())
        .await
        .unwrap();
    let answer = read_answers(&mut stream, 1).await.remove(0);
    assert_eq!(answer.status, 431);
}

#[tokio::test]
async fn a_problem_answered_here_keeps_the_connection() {
    let (s, _dir) = server();
    let mut stream = connect(&s).await;
    let bad =
        "POST /v1/check HTTP/1.1\r\nhost: t\r\nx-request-id: bad-1\r\ncontent-length: 1\r\n\r\n{";
    let batch = format!("{bad}{}", check("after-bad", "ok-1", ""));
    stream.write_all(batch.as_bytes()).await.unwrap();
    let answers = read_answers(&mut stream, 2).await;
    assert_eq!(answers[0].status, 400);
    assert_eq!(
        answers[0].header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(answers[0].header("x-request-id"), Some("bad-1"));
    assert_eq!(answers[1].status, 200);
    assert_eq!(answers[1].header("x-request-id"), Some("ok-1"));
}

#[tokio::test]
async fn idle_connections_of_both_kinds_close_at_shutdown() {
    let (mut s, _dir) = server();
    let mut own = connect(&s).await;
    own.write_all(check("stop", "own", "").as_bytes())
        .await
        .unwrap();
    read_answers(&mut own, 1).await;
    let mut moved = connect(&s).await;
    moved
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    read_answers(&mut moved, 1).await;
    // Both idle on keep-alive: SIGTERM closes them at once instead of waiting out the
    // drain (terminate() allows less time than the drain would take).
    let status = s.terminate();
    assert!(status.success(), "{status}");
    assert!(closed(&mut own).await);
    assert!(closed(&mut moved).await);
    let logs = s.logs.lock().unwrap().join("\n");
    assert!(!logs.contains("connections still open"), "{logs}");
}

/// A raw check with `body` and `extra` header lines.
fn raw_check(body: &str, id: &str, extra: &str) -> String {
    format!(
        "POST /v1/check HTTP/1.1\r\nhost: test\r\nx-request-id: {id}\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The last answer to `requests` sent on a fresh connection answered by the own loop, and
/// on one that hyper serves (a `GET /healthz` first moves it there), with `{who}` in the
/// requests replaced by a name of each path's own so that they never share counters (as
/// long as `{who}`, so that `content-length` stays right).
async fn both_framings(s: &TestServer, requests: &[String]) -> (Answer, Answer) {
    let send = |who: &'static str, prefix: &'static str| {
        let text: String = prefix.to_owned()
            + &requests
                .iter()
                .map(|r| r.replace("{who}", who))
                .collect::<String>();
        let n = requests.len() + usize::from(!prefix.is_empty());
        async move {
            let mut stream = connect(s).await;
            stream.write_all(text.as_bytes()).await.expect("write");
            read_answers(&mut stream, n).await.pop().expect("an answer")
        }
    };
    let own = send("own__", "").await;
    let hyper = send("hyper", "GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n").await;
    (own, hyper)
}

/// The same answer, times and the caller-specific names aside.
fn assert_same(case: &str, own: &Answer, hyper: &Answer) {
    assert_eq!(own.status, hyper.status, "{case}: status");
    assert_eq!(
        untimed_headers(own),
        untimed_headers(hyper),
        "{case}: headers"
    );
    let text = |a: &Answer| {
        String::from_utf8_lossy(&a.body)
            .replace("own", "who")
            .replace("hyper", "who")
    };
    match (
        serde_json::from_str::<Value>(&text(own)),
        serde_json::from_str::<Value>(&text(hyper)),
    ) {
        (Ok(a), Ok(b)) if a.get("statuses").is_some() => {
            assert_eq!(timeless(a), timeless(b), "{case}: body")
        }
        _ => assert_eq!(text(own), text(hyper), "{case}: body"),
    }
}

#[tokio::test]
async fn every_request_shape_gets_the_same_answer_from_both_framings() {
    let (s, _dir) = server();
    let one = |entries: &str| format!(r#"{{"domain":"shop","descriptors":[{entries}]}}"#);
    let user = r#"{"entries":[{"key":"user","value":"{who}-1"}]}"#;
    let json = "content-type: application/json\r\n";
    let big = format!(
        r#"{{"domain":"shop","descriptors":[],"pad":"{}"}}"#,
        "x".repeat(70_000)
    );
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("allowed", vec![raw_check(&one(user), "a-1", json)]),
        ("denied", (0..4).map(|_| raw_check(&one(user).replace("-1", "-2"), "d-1", json)).collect()),
        (
            "several descriptors",
            vec![raw_check(
                &one(&format!(
                    r#"{user},{{"entries":[{{"key":"plan","value":"{{who}}"}}]}},{{"entries":[{{"key":"nothing","value":"x"}}]}}"#
                ))
                .replace("-1", "-3"),
                "m-1",
                json,
            )],
        ),
        (
            "shadow mode",
            (0..2)
                .map(|_| raw_check(&one(r#"{"entries":[{"key":"trial","value":"{who}"}]}"#), "s-1", json))
                .collect(),
        ),
        ("unlimited", vec![raw_check(&one(r#"{"entries":[{"key":"internal","value":"{who}"}]}"#), "u-1", json)]),
        ("400 malformed", vec![raw_check(r#"{"domain":"shop","descriptors":[{"entries":[{"key":7}]}]}"#, "b-1", json)]),
        ("400 invalid", vec![raw_check(r#"{"domain":"","descriptors":[]}"#, "i-1", json)]),
        ("413 too large", vec![raw_check(&big, "l-1", json)]),
        ("415", vec![raw_check(&one(user), "t-1", "content-type: text/plain\r\n")]),
    ];
    // What each case must be, so that two equal wrong answers cannot pass: the status,
    // and for decisions whether the request passed.
    let expected = [
        (200, Some(true)),
        (200, Some(false)),
        (200, Some(true)),
        (200, Some(true)),
        (200, Some(true)),
        (400, None),
        (400, None),
        (413, None),
        (415, None),
    ];
    for ((case, requests), (status, allowed)) in cases.iter().zip(expected) {
        let (own, hyper) = both_framings(&s, requests).await;
        assert_eq!(own.status, status, "{case}");
        if let Some(allowed) = allowed {
            assert_eq!(own.json()["allowed"], allowed, "{case}: {:?}", own.json());
        }
        match *case {
            "shadow mode" => assert_eq!(own.json()["statuses"][0]["shadow_denied"], true),
            "unlimited" => assert_eq!(own.json()["statuses"][0]["unlimited"], true),
            "several descriptors" => assert_eq!(own.json()["statuses"][2]["policy"], Value::Null),
            _ => {}
        }
        assert_same(case, &own, &hyper);
    }

    // The data-plane token: missing and wrong get the same 401.
    let dir = TempDir::new("http1-token");
    let token = dir.write("token", "a-data-plane-token-of-some-length");
    let file = dir.write("shop.yaml", POLICIES);
    let guarded = TestServer::serve(
        Some(&file),
        &[
            "--data-auth",
            "token",
            "--data-token-file",
            &token.display().to_string(),
        ],
    );
    for (case, extra) in [
        ("401 missing token", json.to_owned()),
        (
            "401 wrong token",
            format!("{json}authorization: Bearer not-the-token-at-all\r\n"),
        ),
    ] {
        let (own, hyper) = both_framings(&guarded, &[raw_check(&one(user), "k-1", &extra)]).await;
        assert_eq!(own.status, 401, "{case}");
        assert_same(case, &own, &hyper);
    }
}

#[tokio::test]
async fn a_store_failure_gets_the_same_answer_from_both_framings() {
    use std::net::SocketAddr;

    let redis = tollgate_testkit::RedisServer::start();
    let proxy =
        tollgate_testkit::FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], redis.port())));
    let dir = TempDir::new("http1-store");
    let file = dir.write(
        "shop.yaml",
        "domain: shop\ndescriptors:\n  - key: user\n    rate_limit: {unit: hour, requests_per_unit: 3, on_store_error: allow}\n",
    );
    let s = TestServer::serve(
        Some(&file),
        &["--store", &format!("redis://{}", proxy.addr())],
    );
    proxy.set_down(true);
    let body = r#"{"domain":"shop","descriptors":[{"entries":[{"key":"user","value":"{who}"}]}]}"#;
    let request = raw_check(body, "f-1", "content-type: application/json\r\n");
    let (own, hyper) = both_framings(&s, &[request]).await;
    assert_eq!(
        own.json()["statuses"][0]["store_failed"],
        true,
        "{:?}",
        own.json()
    );
    assert_same("store failure", &own, &hyper);
}
