//! `tollgate bench` against a real server: every protocol's decisions counted exactly
//! (a bounded number of requests over limits whose admissions are known), JSON output,
//! the server's CPU per decision, and an open loop that never outruns its rate.

use std::process::Command;

use serde_json::Value;

use crate::helpers::{TempDir, TestServer, binary};

const POLICIES: &str = "domain: bench
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 3}
";

fn bench(args: &[&str]) -> Value {
    let output = Command::new(binary())
        .arg("bench")
        .args(args)
        .args(["--json", "--duration", "60s"])
        .output()
        .expect("tollgate bench runs");
    assert!(
        output.status.success(),
        "bench {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

fn address(url: &str) -> &str {
    url.trim_start_matches("http://")
}

#[test]
fn every_protocols_decisions_are_counted_exactly() {
    let dir = TempDir::new("bench-cli");
    let server = TestServer::serve(
        Some(&dir.write("bench.yaml", POLICIES)),
        &["--resp-addr", "127.0.0.1:0"],
    );
    let pid = server.child.id().to_string();
    let resp = server.resp.clone().expect("RESP");
    // 4 distinct users per protocol, 3 per hour each: 12 of 60 admitted.
    for (protocol, target, user) in [
        ("http", address(&server.base), "h{key}"),
        ("grpc", address(&server.grpc), "g{key}"),
        ("resp", resp.as_str(), "r{key}"),
    ] {
        let descriptor = format!("user={user}");
        let v = bench(&[
            "--protocol",
            protocol,
            "--target",
            target,
            "-D",
            "bench",
            "-d",
            &descriptor,
            "--keys",
            "4",
            "--requests",
            "60",
            "-c",
            "3",
            "--server-pid",
            &pid,
        ]);
        assert_eq!(v["requests"], 60, "{protocol}: {v}");
        assert_eq!(v["errors"], 0, "{protocol}: {v}");
        assert_eq!(
            v["allowed"].as_u64().unwrap() + v["denied"].as_u64().unwrap(),
            60
        );
        // Each of the 4 users gets 3 or more of 60 requests (all but certainly).
        assert_eq!(v["allowed"], 12, "{protocol}: 3 for each of 4 users: {v}");
        assert!(v["server_cpu_us_per_decision"].as_f64().is_some(), "{v}");
        assert!(v["latency_us"]["p99"].as_u64() >= v["latency_us"]["p50"].as_u64());
    }
    // The decision log has a line per request that agrees with the totals: 3 admitted per
    // key, each answered after it was sent.
    let log = dir.0.join("decisions.log");
    let v = bench(&[
        "--target",
        address(&server.base),
        "-D",
        "bench",
        "-d",
        "user=l{key}",
        "--keys",
        "2",
        "--requests",
        "20",
        "-c",
        "2",
        "--decision-log",
        log.to_str().expect("utf-8 path"),
    ]);
    let text = std::fs::read_to_string(&log).expect("the decision log");
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 20, "{text}");
    let mut admitted = std::collections::HashMap::new();
    for line in &lines {
        let [sent, answered, key, verdict] = line[..] else {
            panic!("four fields: {line:?}")
        };
        let (sent, answered): (u64, u64) =
            (sent.parse().expect("ns"), answered.parse().expect("ns"));
        assert!(
            sent <= answered && sent > 1_700_000_000_000_000_000,
            "{line:?}"
        );
        assert!(matches!(verdict, "allowed" | "denied"), "{line:?}");
        if verdict == "allowed" {
            *admitted.entry(key).or_insert(0) += 1;
        }
    }
    assert_eq!(
        admitted.values().sum::<u64>(),
        v["allowed"].as_u64().expect("n")
    );
    assert!(admitted.values().all(|&n| n == 3), "{admitted:?}");
    // CL.THROTTLE pipelined: a burst of 5 for each of 3 keys.
    let v = bench(&[
        "--protocol",
        "resp",
        "--target",
        &resp,
        "--cell",
        "4,1,3600",
        "--keys",
        "3",
        "--requests",
        "96",
        "--pipeline",
        "16",
        "-c",
        "2",
    ]);
    assert_eq!(
        (v["allowed"].as_u64(), v["denied"].as_u64()),
        (Some(15), Some(81)),
        "{v}"
    );
    // gRPC checks 8 at a time over CheckStream: 3 per hour for each of 4 users.
    let v = bench(&[
        "--protocol",
        "grpc",
        "--target",
        address(&server.grpc),
        "-D",
        "bench",
        "-d",
        "user=s{key}",
        "--keys",
        "4",
        "--requests",
        "64",
        "--pipeline",
        "8",
        "-c",
        "2",
    ]);
    assert_eq!(
        (
            v["allowed"].as_u64(),
            v["denied"].as_u64(),
            v["errors"].as_u64()
        ),
        (Some(12), Some(52), Some(0)),
        "{v}"
    );
    // An open loop at 200/s for 1 s sends no more than its schedule, however fast the
    // server answers (fewer only when answers come late: not asserted, as timing is no
    // pass/fail matter).
    let output = Command::new(binary())
        .args([
            "bench",
            "--protocol",
            "http",
            "--target",
            address(&server.base),
            "-D",
            "bench",
        ])
        .args(["--rate", "200", "--duration", "1s", "--json", "-c", "2"])
        .output()
        .expect("runs");
    let v: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let sent = v["requests"].as_u64().expect("requests");
    assert!(
        (1..=201).contains(&sent),
        "open loop at 200/s for 1 s sent {sent}: {v}"
    );
    assert_eq!(v["loop"], "open");
    assert_eq!(v["errors"], 0, "{v}");
}

#[test]
fn a_server_that_is_not_there_is_an_error_naming_it() {
    let port = tollgate_testkit::free_port();
    let output = Command::new(binary())
        .args([
            "bench",
            "--protocol",
            "http",
            "--target",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--requests", "5", "-c", "1"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot connect") && stderr.contains("tollgate serve"),
        "{stderr}"
    );
}
