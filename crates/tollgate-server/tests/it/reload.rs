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
    let v: Value = s
        .check(&body("shop", &[&[("user", user)]], 1))
        .await
        .json()
        .await
        .expect("a JSON answer");
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
