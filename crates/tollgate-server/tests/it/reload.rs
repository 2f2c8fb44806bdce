//! Policy hot reload: edits, atomic replacements and symlink swaps apply without a restart
//! and keep counters; invalid files are rejected and the old policies keep serving.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{TempDir, TestServer, body};

fn limit(n: u32) -> String {
    format!(
        "domain: shop\ndescriptors:\n  - key: user\n    rate_limit: {{name: per_user, unit: hour, requests_per_unit: {n}}}\n"
    )
}

async fn status(s: &TestServer, user: &str) -> Value {
    let v = s.check_json(&body("shop", &[&[("user", user)]], 1)).await;
    v["statuses"][0].clone()
}

/// Checks until the answer's limit is `expected`, as a user of its own (each check
/// consumes one request of that user).
async fn until_limit(s: &TestServer, expected: u64) -> Value {
    for _ in 0..200 {
        let st = status(s, "reload-probe").await;
        if st["limit"] == expected {
            return st;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the limit never became {expected}");
}

#[tokio::test]
async fn edits_apply_without_restart_and_keep_counters() {
    let dir = TempDir::new("reload-edit");
    let file = dir.write("shop.yaml", &limit(3));
    let s = TestServer::start(Some(&dir.0));
    assert_eq!(status(&s, "a").await["remaining"], 2);
    assert_eq!(status(&s, "a").await["remaining"], 1);

    // Atomic replacement (write elsewhere, rename over), as deploy tools do.
    let tmp = dir.write(".shop.yaml.tmp", &limit(10));
    std::fs::rename(&tmp, &file).unwrap();
    until_limit(&s, 10).await;
    // The two earlier requests still count: 10 - 2 - this one.
    assert_eq!(status(&s, "a").await["remaining"], 7);
    s.log_line("policies reloaded").await;

    // An in-place edit works too.
    std::fs::write(&file, limit(20)).unwrap();
    until_limit(&s, 20).await;
}

#[tokio::test]
async fn invalid_files_are_rejected_and_the_old_policies_keep_serving() {
    let dir = TempDir::new("reload-bad");
    let file = dir.write("shop.yaml", &limit(5));
    let s = TestServer::start(Some(&dir.0));
    assert_eq!(status(&s, "b").await["limit"], 5);
    std::fs::write(
        &file,
        "domain: shop\ndescriptors:\n  - key: user\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n",
    )
    .unwrap();
    let line = s.log_line("new policies rejected").await;
    assert!(line.contains("shop.yaml:4:"), "{line}");
    assert!(
        line.contains("invalid rate limit unit 'fortnight'"),
        "{line}"
    );
    let st = status(&s, "b").await;
    assert_eq!(st["limit"], 5, "the previous policies stay in force");
    assert_eq!(st["remaining"], 3);
    // Fixing the file applies it.
    std::fs::write(&file, limit(6)).unwrap();
    until_limit(&s, 6).await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_swapped_symlink_applies_the_new_directory() {
    let dir = TempDir::new("reload-symlink");
    std::fs::create_dir_all(dir.0.join("v1")).unwrap();
    std::fs::create_dir_all(dir.0.join("v2")).unwrap();
    std::fs::write(dir.0.join("v1/shop.yaml"), limit(4)).unwrap();
    std::fs::write(dir.0.join("v2/shop.yaml"), limit(8)).unwrap();
    let current = dir.0.join("current");
    std::os::unix::fs::symlink(dir.0.join("v1"), &current).unwrap();
    let s = TestServer::start(Some(&current));
    assert_eq!(status(&s, "c").await["limit"], 4);
    // Swap atomically: a new link renamed over the old one.
    let next = dir.0.join("current.next");
    std::os::unix::fs::symlink(dir.0.join("v2"), &next).unwrap();
    std::fs::rename(&next, &current).unwrap();
    until_limit(&s, 8).await;
}

#[tokio::test]
async fn swaps_under_load_fail_no_request() {
    let dir = TempDir::new("reload-load");
    let file = dir.write("shop.yaml", &limit(1_000_000));
    let s = TestServer::start(Some(&dir.0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    // 8 clients, at most 400 requests each, until the swaps are done.
    for c in 0..8 {
        let (url, stop) = (s.url("/v1/check"), stop.clone());
        load.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut sent, mut failed) = (0u32, 0u32);
            while sent < 400 && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let user = format!("load-{c}-{}", sent % 10);
                let r = client
                    .post(&url)
                    .json(&body("shop", &[&[("user", &user)]], 1))
                    .send()
                    .await;
                sent += 1;
                if !r.is_ok_and(|r| r.status() == 200) {
                    failed += 1;
                }
            }
            (sent, failed)
        }));
    }
    // Ten atomic replacements while the load runs, each applied before the next.
    for n in 0..10u64 {
        let tmp = dir.write(".next.yaml", &limit(2_000_000 + n as u32));
        std::fs::rename(&tmp, &file).unwrap();
        until_limit(&s, 2_000_000 + n).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut sent, mut failed) = (0, 0);
    for task in load {
        let (s, f) = task.await.unwrap();
        sent += s;
        failed += f;
    }
    assert!(sent > 0);
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed during the swaps"
    );
}
