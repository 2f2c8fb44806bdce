//! The RESP listener with real clients: redis-cell's own module (built from its published
//! crate by `scripts/redis-cell`, loaded into a private `redis-server`) answering the same
//! scripted `CL.THROTTLE` sequences side by side, the `redis` crate, `redis-cli`, and
//! redis-py; pipelining, authentication, `TG.CHECK` against a domain's policies, and
//! keys shared by two nodes through Redis.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use redis::{AsyncCommands, Value as RedisValue};
use serde_json::Value;
use tollgate_testkit::RedisServer;

use crate::helpers::{TempDir, TestServer, body};

const POLICIES: &str = "domain: shop
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 2, algorithm: gcra}
";

/// `TG.CHECK`'s reply: allowed, and per descriptor (policy, limit, remaining, reset ms,
/// retry ms).
pub(crate) type CheckReply = (i64, Vec<(Option<String>, i64, i64, i64, i64)>);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// redis-cell's module, as `scripts/redis-cell` builds it.
fn redis_cell_module() -> PathBuf {
    let module = repo_root().join("target/redis-cell/libredis_cell.so");
    assert!(
        module.exists(),
        "{} is missing: run scripts/redis-cell (builds redis-cell from crates.io; scripts/test does)",
        module.display()
    );
    module
}

fn resp_server(policies: Option<&Path>, extra: &[&str]) -> TestServer {
    let mut flags = vec!["--resp-addr", "127.0.0.1:0"];
    flags.extend_from_slice(extra);
    TestServer::serve(policies, &flags)
}

fn resp_url(server: &TestServer) -> String {
    format!(
        "redis://{}",
        server.resp.as_deref().expect("--resp-addr is on")
    )
}

async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connected")
}

/// One reply as the comparison sees it: the integers, or the error's text.
fn shown(reply: redis::RedisResult<Vec<i64>>) -> String {
    match reply {
        Ok(values) => format!("{values:?}"),
        Err(e) => format!("error: {}", e.detail().unwrap_or_default()),
    }
}

async fn throttle(conn: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> String {
    let mut cmd = redis::cmd("CL.THROTTLE");
    for a in args {
        cmd.arg(*a);
    }
    shown(cmd.query_async(conn).await)
}

#[tokio::test]
async fn cl_throttle_answers_as_redis_cell_does_on_scripted_sequences() {
    let module = redis_cell_module();
    let redis = RedisServer::start_with(&["--loadmodule", &module.display().to_string()]);
    let tollgate = resp_server(None, &[]);
    let mut cell = connect(&redis.url()).await;
    let mut ours = connect(&resp_url(&tollgate)).await;
    // Each sequence runs on a key of its own, well inside one emission interval (the
    // answers' times are whole seconds, truncated, on both sides).
    let sequences: Vec<(&str, Vec<Vec<&str>>)> = vec![
        // redis-cell's README: 15 burst, 30 per minute, 20 calls (16 pass).
        ("readme", vec![vec!["15", "30", "60"]; 20]),
        // Quantities: several at once, a peek, one past the burst, one that fits.
        (
            "quantities",
            [
                ["4", "2", "10", "1"],
                ["4", "2", "10", "3"],
                ["4", "2", "10", "3"],
                ["4", "2", "10", "0"],
                ["4", "2", "10", "9"],
                ["4", "2", "10", "1"],
                ["4", "2", "10", "5"],
            ]
            .iter()
            .map(|c| c.to_vec())
            .collect(),
        ),
        // A peek at a fresh key, then a burst of 1.
        (
            "peek",
            vec![
                vec!["0", "1", "1", "0"],
                vec!["0", "1", "1"],
                vec!["0", "1", "1"],
                vec!["0", "1", "1", "0"],
            ],
        ),
        // Year-scale: one a year with 50 in reserve (a bucket 51 years deep).
        (
            "yearly",
            vec![
                vec!["50", "1", "31536000", "20"],
                vec!["50", "1", "31536000", "31"],
                vec!["50", "1", "31536000", "1"],
                vec!["50", "1", "31536000"],
            ],
        ),
        // A day's quota in hours, a large burst, and a quantity of a hundred.
        ("daily", vec![vec!["999", "24", "86400", "100"]; 12]),
        // Parameters changed between calls keep the key's state, as in redis-cell.
        (
            "changed",
            vec![
                vec!["5", "1", "60", "3"],
                vec!["2", "1", "60"],
                vec!["9", "10", "60", "4"],
            ],
        ),
        // Errors: arity and integers, worded as redis-cell words them.
        (
            "errors",
            vec![
                vec!["1", "2"],
                vec!["x", "1", "60"],
                vec!["1", "1", "sixty"],
                vec!["1", "1", "60", "1", "extra"],
            ],
        ),
    ];
    for (key, calls) in sequences {
        for (i, args) in calls.iter().enumerate() {
            let mut full = vec![key];
            full.extend(args.iter().copied());
            let expected = throttle(&mut cell, &full).await;
            let got = throttle(&mut ours, &full).await;
            assert_eq!(
                got,
                expected,
                "{key} call {i}: CL.THROTTLE {}",
                full.join(" ")
            );
        }
    }
}

/// `--resp-cell-release 0.4` answers as redis-cell's releases since 0.4.0: a wait of an
/// hour less the moment between two calls is its seconds rounded up (3600), where the
/// crate's module (0.2.2), run alongside, truncates them (3599); errors carry the later
/// releases' `Store error:` words.
#[tokio::test]
async fn cl_throttle_answers_as_redis_cells_later_releases_when_asked() {
    let module = redis_cell_module();
    let redis = RedisServer::start_with(&["--loadmodule", &module.display().to_string()]);
    let tollgate = resp_server(None, &["--resp-cell-release", "0.4"]);
    let mut cell = connect(&redis.url()).await;
    let mut ours = connect(&resp_url(&tollgate)).await;
    // One an hour, no burst beyond it.
    let args = ["hourly", "0", "1", "3600"];
    let start = std::time::Instant::now();
    assert_eq!(throttle(&mut ours, &args).await, "[0, 1, 0, -1, 3600]");
    assert_eq!(throttle(&mut cell, &args).await, "[0, 1, 0, -1, 3600]");
    let ours_denied = throttle(&mut ours, &args).await;
    let cell_denied = throttle(&mut cell, &args).await;
    let elapsed = start.elapsed();
    if elapsed < std::time::Duration::from_millis(999) {
        assert_eq!(ours_denied, "[1, 1, 0, 3600, 3600]", "rounded up");
        assert_eq!(cell_denied, "[1, 1, 0, 3599, 3599]", "the crate truncates");
    } else {
        // A machine slow enough to take a second between calls: only bounds hold.
        let waits: Vec<i64> = serde_json::from_str(&ours_denied).expect("five integers");
        let floor = 3600 - elapsed.as_secs() as i64 - 1;
        assert!(
            waits[3] >= floor && waits[3] <= 3600 && waits[4] == waits[3],
            "{ours_denied} after {elapsed:?}"
        );
    }
    let usage = throttle(&mut ours, &["hourly", "0", "1"]).await;
    assert!(
        usage.contains("Store error: Usage: cl.throttle <key>"),
        "0.4's words: {usage}"
    );
    let zero = throttle(&mut ours, &["zero", "1", "0", "60"]).await;
    assert!(
        zero.contains("Store error: Zero rates are not supported"),
        "0.4's words: {zero}"
    );
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order_in_one_read() {
    let tollgate = resp_server(None, &[]);
    let mut conn = connect(&resp_url(&tollgate)).await;
    let mut pipe = redis::pipe();
    for i in 0..300 {
        pipe.cmd("CL.THROTTLE")
            .arg("pipelined")
            .arg(99)
            .arg(1)
            .arg(3600);
        pipe.cmd("ECHO").arg(format!("n{i}"));
    }
    let replies: Vec<RedisValue> = pipe.query_async(&mut conn).await.expect("pipeline");
    assert_eq!(replies.len(), 600);
    for (i, pair) in replies.chunks(2).enumerate() {
        let throttled: Vec<i64> = redis::from_redis_value(pair[0].clone()).expect("five integers");
        let echoed: String = redis::from_redis_value(pair[1].clone()).expect("echo");
        assert_eq!(echoed, format!("n{i}"), "answers in order");
        if i < 100 {
            assert_eq!(
                throttled[..3],
                [0, 100, 99 - i as i64],
                "call {i} of the burst"
            );
        } else {
            assert_eq!(throttled[..3], [1, 100, 0], "call {i} past the burst");
        }
    }
}

/// Writes `bytes` on a fresh connection and reads until `expect` replies' worth of bytes
/// arrived (or the server closed).
fn raw(addr: &str, bytes: &[u8]) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(bytes).expect("write");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half close");
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn bad_input_gets_redis_errors_and_the_connection_lives_on() {
    let tollgate = resp_server(None, &[]);
    let addr = tollgate.resp.clone().expect("resp");
    // An unknown command, an oversized argument, then a PING: three answers, in order.
    let long = "x".repeat(5000);
    let request = format!(
        "*2\r\n$7\r\nFLUSHDB\r\n$5\r\nASYNC\r\n*2\r\n$4\r\nPING\r\n${}\r\n{long}\r\nPING\r\n",
        long.len()
    );
    let answer = raw(&addr, request.as_bytes());
    assert_eq!(
        answer,
        "-ERR unknown command 'FLUSHDB', with args beginning with: 'ASYNC' \r\n\
         -ERR a command takes at most 64 arguments of at most 4096 bytes each\r\n\
         +PONG\r\n"
    );
    // Not RESP: one error, then the connection closes (what followed cannot be framed).
    // Redis's own words for it.
    assert_eq!(
        raw(&addr, b"*1\r\n:12\r\nPING\r\n"),
        "-ERR Protocol error: expected '$', got ':'\r\n"
    );
    // QUIT answers OK and closes; nothing after it is answered.
    assert_eq!(raw(&addr, b"QUIT\r\nPING\r\n"), "+OK\r\n");
    // What redis-cell computes nonsense for is refused by name.
    let mut conn = connect(&resp_url(&tollgate)).await;
    assert!(
        throttle(&mut conn, &["k", "1", "0", "60"])
            .await
            .contains("Zero rates are not supported")
    );
    assert!(
        throttle(&mut conn, &["k", "1", "1", "60", "-2"])
            .await
            .contains("quantity must not be negative")
    );
}

#[tokio::test]
async fn redis_cli_and_redis_py_speak_to_it_in_resp2_and_resp3() {
    let tollgate = resp_server(None, &[]);
    let addr = tollgate.resp.clone().expect("resp");
    let (host, port) = addr.split_once(':').expect("host:port");
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-h", host, "-p", port])
            .args(args)
            .output()
            .expect("redis-cli (Debian: apt install redis-tools)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(cli(&["PING"]), "PONG\n");
    assert_eq!(
        cli(&["CL.THROTTLE", "cli", "15", "30", "60"]),
        "0\n16\n15\n-1\n2\n"
    );
    // throttlecrab's README example on a fresh key: allowed, limit 10, 9 left, the TAT
    // kept 5.4 s, no retry.
    assert_eq!(
        cli(&["THROTTLE", "user:123", "10", "100", "60"]),
        "1\n10\n9\n5\n0\n"
    );
    assert_eq!(
        cli(&["COMMAND", "COUNT"]).trim().parse::<i64>().ok(),
        Some(11)
    );
    let hello = cli(&["-3", "HELLO", "3"]);
    assert!(
        hello.contains("server tollgate") && hello.contains("proto 3"),
        "{hello}"
    );
    assert!(cli(&["NOSUCH"]).contains("unknown command 'NOSUCH'"));

    let python = repo_root().join("target/py-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/python-tools (redis-py from PyPI; scripts/test does)",
        python.display()
    );
    let script = r#"
import json, sys, redis
host, port = sys.argv[1], int(sys.argv[2])
out = {}
for protocol in (2, 3):
    r = redis.Redis(host=host, port=port, protocol=protocol, client_name="py", decode_responses=True)
    out[protocol] = {
        "ping": r.ping(),
        "name": r.client_getname(),
        "throttle": [r.execute_command("CL.THROTTLE", f"py{protocol}", 1, 1, 60) for _ in range(3)],
    }
    pipe = r.pipeline(transaction=False)
    for _ in range(5):
        pipe.execute_command("CL.THROTTLE", f"pypipe{protocol}", 2, 1, 60)
    out[protocol]["pipeline"] = pipe.execute()
    out[protocol]["crab"] = [r.execute_command("THROTTLE", f"crab{protocol}", 2, 1, 60) for _ in range(3)]
print(json.dumps(out))
"#;
    let out = Command::new(&python)
        .args(["-c", script, host, port])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    for protocol in ["2", "3"] {
        let p = &v[protocol];
        assert_eq!(p["ping"], true, "{v}");
        assert_eq!(p["name"], "py", "{v}");
        let limited: Vec<i64> = (0..3)
            .map(|i| p["throttle"][i][0].as_i64().unwrap_or(-1))
            .collect();
        assert_eq!(
            limited,
            [0, 0, 1],
            "burst of 2 then limited over RESP{protocol}: {v}"
        );
        let piped: Vec<i64> = (0..5)
            .map(|i| p["pipeline"][i][2].as_i64().unwrap_or(-1))
            .collect();
        assert_eq!(
            piped,
            [2, 1, 0, 0, 0],
            "remaining along the pipeline over RESP{protocol}: {v}"
        );
        let allowed: Vec<i64> = (0..3)
            .map(|i| p["crab"][i][0].as_i64().unwrap_or(-1))
            .collect();
        assert_eq!(
            allowed,
            [1, 1, 0],
            "THROTTLE's burst of 2 over RESP{protocol}: {v}"
        );
    }
}

#[tokio::test]
async fn the_data_plane_token_is_asked_for_with_auth_and_hello() {
    let dir = TempDir::new("resp-token");
    let token = dir.write("token", "a-data-plane-token-of-some-length");
    let tollgate = resp_server(
        None,
        &[
            "--data-auth",
            "token",
            "--data-token-file",
            &token.display().to_string(),
        ],
    );
    let addr = tollgate.resp.clone().expect("resp");
    let answer = raw(
        &addr,
        b"CL.THROTTLE k 1 1 60\r\nPING\r\nAUTH wrong-token\r\nAUTH someone a-data-plane-token-of-some-length\r\n\
          AUTH a-data-plane-token-of-some-length\r\nPING\r\n",
    );
    assert_eq!(
        answer,
        "-NOAUTH Authentication required.\r\n-NOAUTH Authentication required.\r\n\
         -WRONGPASS invalid username-password pair or user is disabled.\r\n\
         -WRONGPASS invalid username-password pair or user is disabled.\r\n+OK\r\n+PONG\r\n"
    );
    // HELLO with AUTH, as RESP3 clients connect.
    let answer = raw(
        &addr,
        b"HELLO 3 AUTH default a-data-plane-token-of-some-length SETNAME t\r\nCLIENT GETNAME\r\n",
    );
    assert!(answer.starts_with("%7\r\n"), "{answer}");
    assert!(answer.ends_with("$1\r\nt\r\n"), "{answer}");
    // The redis crate with the password in its URL.
    let url = format!("redis://:a-data-plane-token-of-some-length@{addr}");
    let mut conn = connect(&url).await;
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .expect("ping");
    assert_eq!(pong, "PONG");
    // Without it, a command is refused.
    let mut anonymous = connect(&format!("redis://{addr}")).await;
    let refused: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut anonymous).await;
    assert_eq!(refused.expect_err("refused").code(), Some("NOAUTH"));
}

#[tokio::test]
async fn tg_check_applies_a_domains_policies_and_shares_counters_with_http() {
    let dir = TempDir::new("resp-check");
    let policies = dir.write("shop.yaml", POLICIES);
    let tollgate = resp_server(Some(&policies), &[]);
    let mut conn = connect(&resp_url(&tollgate)).await;
    let check = |user: &'static str| {
        let mut cmd = redis::cmd("TG.CHECK");
        cmd.arg("shop")
            .arg(1)
            .arg("DESCRIPTOR")
            .arg(1)
            .arg("user")
            .arg(user);
        cmd
    };
    let first: RedisValue = check("alice").query_async(&mut conn).await.expect("check");
    let (allowed, statuses): CheckReply =
        redis::from_redis_value(first).expect("decision and statuses");
    assert_eq!(allowed, 1);
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].0.as_deref(), Some("shop.user"));
    assert_eq!((statuses[0].1, statuses[0].2, statuses[0].4), (2, 1, -1));
    // The second passes over HTTP: one counter for both front ends.
    let v: Value = tollgate
        .check(&body("shop", &[&[("user", "alice")]], 1))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(v["allowed"], true, "{v}");
    let third: CheckReply = check("alice").query_async(&mut conn).await.expect("check");
    assert_eq!(third.0, 0, "the third of 2 per minute is denied");
    assert!(third.1[0].4 > 0, "a retry time: {third:?}");
    // An unknown domain matches nothing and passes; a bad request names what is wrong.
    let unknown: CheckReply = redis::cmd("TG.CHECK")
        .arg("nowhere")
        .arg(1)
        .arg("DESCRIPTOR")
        .arg(1)
        .arg("k")
        .arg("v")
        .query_async(&mut conn)
        .await
        .expect("check");
    assert_eq!(unknown, (1, vec![(None, -1, -1, 0, -1)]));
    for (args, says) in [
        (
            vec!["shop", "one", "DESCRIPTOR", "1", "user", "a"],
            "hits must be a whole number",
        ),
        (
            vec!["shop", "1", "user", "a"],
            "descriptor 0: expected DESCRIPTOR",
        ),
        (
            vec!["shop", "1", "DESCRIPTOR", "2", "user", "a"],
            "descriptor 0: 2 entries need 4 arguments",
        ),
        (vec!["shop", "1"], "at least one descriptor"),
    ] {
        let mut cmd = redis::cmd("TG.CHECK");
        for a in &args {
            cmd.arg(*a);
        }
        let err: redis::RedisResult<RedisValue> = cmd.query_async(&mut conn).await;
        let err = err.expect_err("refused");
        assert!(
            err.detail().unwrap_or_default().contains(says),
            "{args:?}: {err}"
        );
    }
}

#[tokio::test]
async fn cl_throttle_keys_are_shared_by_nodes_through_redis() {
    let redis = RedisServer::start();
    let nodes: Vec<TestServer> = (0..2)
        .map(|_| resp_server(None, &["--store", &redis.url(), "--store-timeout", "2s"]))
        .collect();
    let mut conns = Vec::new();
    for node in &nodes {
        conns.push(connect(&resp_url(node)).await);
    }
    // A burst of 10 over a day: alternate nodes; exactly 10 pass, whichever node asks.
    let mut admitted = 0;
    for i in 0..30 {
        let reply: Vec<i64> = redis::cmd("CL.THROTTLE")
            .arg("shared")
            .arg(9)
            .arg(10)
            .arg(86_400)
            .query_async(&mut conns[i % 2])
            .await
            .expect("five integers");
        admitted += usize::from(reply[0] == 0);
    }
    assert_eq!(admitted, 10);
    // The key lives in Redis under Tollgate's prefix, apart from any policy's counters.
    let mut direct = connect(&redis.url()).await;
    let keys: Vec<String> = direct.keys("*").await.expect("keys");
    assert!(!keys.is_empty(), "the counter is in Redis");
    assert!(
        keys.iter().all(|k| !k.contains("shared")),
        "keys are fingerprints: {keys:?}"
    );
}

#[tokio::test]
async fn tls_with_client_certificates_is_served_to_redis_cli() {
    let dir = TempDir::new("resp-tls");
    let ca = tollgate_testkit::TestCa::new("Tollgate test CA");
    let server = ca.server("tollgate-1");
    let client = ca.client("worker-1");
    let file = |name: &str, text: &str| dir.write(name, text).display().to_string();
    let (cert, key, ca_file) = (
        file("server.pem", &server.cert_pem),
        file("server.key", &server.key_pem),
        file("ca.pem", &ca.cert_pem),
    );
    let (client_cert, client_key) = (
        file("client.pem", &client.cert_pem),
        file("client.key", &client.key_pem),
    );
    let tollgate = resp_server(
        None,
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca_file,
            "--data-auth",
            "mtls",
        ],
    );
    let addr = tollgate.resp.clone().expect("resp");
    let (host, port) = addr.split_once(':').expect("host:port");
    let cli = |extra: &[&str], args: &[&str]| {
        Command::new("redis-cli")
            .args([
                "-h",
                host,
                "-p",
                port,
                "--tls",
                "--cacert",
                &ca_file,
                "--sni",
                "localhost",
            ])
            .args(extra)
            .args(args)
            .output()
            .expect("redis-cli")
    };
    let out = cli(
        &["--cert", &client_cert, "--key", &client_key],
        &["CL.THROTTLE", "tls", "1", "1", "60"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "0\n2\n1\n-1\n60\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without a client certificate the handshake fails: no answer at all.
    let out = cli(&[], &["PING"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("PONG"),
        "{out:?}"
    );
    // Plain RESP to the TLS listener gets nowhere either.
    let answer = raw(&addr, b"PING\r\n");
    assert!(!answer.contains("PONG"), "{answer}");
}

#[tokio::test]
async fn throttle_answers_as_throttlecrab_and_is_shared_by_nodes_through_redis() {
    let redis = RedisServer::start();
    let nodes: Vec<TestServer> = (0..2)
        .map(|_| resp_server(None, &["--store", &redis.url(), "--store-timeout", "2s"]))
        .collect();
    let mut conns = Vec::new();
    for node in &nodes {
        conns.push(connect(&resp_url(node)).await);
    }
    // max_burst 10 at 10 a day (one per 8,640 s): alternate nodes; exactly 10 pass,
    // counting down from 9, then a denial says to retry in one emission interval.
    let mut replies = Vec::new();
    for i in 0..30 {
        let reply: Vec<i64> = redis::cmd("THROTTLE")
            .arg("crab")
            .arg(10)
            .arg(10)
            .arg(86_400)
            .query_async(&mut conns[i % 2])
            .await
            .expect("five integers");
        replies.push(reply);
    }
    for (i, reply) in replies.iter().enumerate().take(10) {
        assert_eq!(reply[..3], [1, 10, 9 - i as i64], "call {i}: {replies:?}");
        assert_eq!(reply[4], 0, "no retry when allowed: {reply:?}");
    }
    for reply in &replies[10..] {
        assert_eq!(reply[..3], [0, 10, 0], "{replies:?}");
        assert!(
            (8_630..=8_640).contains(&reply[4]),
            "retry after one emission interval: {reply:?}"
        );
    }
    // Pipelined, on a node's connection: decided together, answered in order.
    let mut pipe = redis::pipe();
    for _ in 0..5 {
        pipe.cmd("THROTTLE").arg("piped").arg(2).arg(1).arg(60);
    }
    let piped: Vec<Vec<i64>> = pipe.query_async(&mut conns[0]).await.expect("pipeline");
    let shape: Vec<[i64; 2]> = piped.iter().map(|r| [r[0], r[2]]).collect();
    assert_eq!(shape, [[1, 1], [1, 0], [0, 0], [0, 0], [0, 0]], "{piped:?}");
    // CL.THROTTLE keys of the same name are apart from THROTTLE's.
    assert_eq!(
        throttle(&mut conns[1], &["crab", "0", "1", "60"]).await,
        "[0, 1, 0, -1, 60]"
    );
    // throttlecrab's errors, word for word.
    let mut bad = redis::cmd("THROTTLE");
    bad.arg("k").arg(0).arg(1).arg(1);
    let err = shown(bad.query_async(&mut conns[0]).await);
    assert!(
        err.contains("Rate limit check failed: invalid rate limit parameters"),
        "{err}"
    );
    let mut bad = redis::cmd("THROTTLE");
    bad.arg("k").arg(1);
    let err = shown(bad.query_async(&mut conns[0]).await);
    assert!(
        err.contains("wrong number of arguments for 'throttle' command"),
        "{err}"
    );
}
