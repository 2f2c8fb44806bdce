//! `tollgate policy validate` and `tollgate check`.

use std::process::Command;

use crate::helpers::{POLICIES, TempDir, TestServer, binary};

#[test]
fn validate_accepts_good_files_and_directories() {
    let dir = TempDir::new("validate-ok");
    dir.write("shop.yaml", POLICIES);
    dir.write("other.yml", "domain: other\n");
    let out = Command::new(binary())
        .args(["policy", "validate"])
        .arg(&dir.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("shop.yaml (domain 'shop', 5 policies)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("other.yml (domain 'other', 0 policies)"),
        "{stdout}"
    );
}

#[test]
fn validate_reports_every_error_with_location() {
    let dir = TempDir::new("validate-bad");
    let a = dir.write("a.yaml", "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unt: 1}\n");
    let b = dir.write("b.yaml", "domain: b\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1, burst: 2}\n");
    let out = Command::new(binary())
        .args(["policy", "validate"])
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:4:", a.display())) && stderr.contains("requests_per_unt"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{}:3:5: descriptors[0].rate_limit: burst applies only",
            b.display()
        )),
        "{stderr}"
    );
    let out = Command::new(binary())
        .args(["policy", "validate", "/nonexistent/tollgate.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/tollgate.yaml"));
}

#[test]
fn check_prints_the_decision_and_exits_by_it() {
    let dir = TempDir::new("cli-check");
    let file = dir.write("shop.yaml", POLICIES);
    let s = TestServer::start(Some(&file));
    let run = || {
        Command::new(binary())
            .args([
                "check",
                "--server",
                &s.base,
                "-D",
                "shop",
                "-d",
                "user=dave",
                "--hits",
                "2",
            ])
            .output()
            .unwrap()
    };
    let out = run();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("ALLOWED (domain shop, hits 2)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("user=dave: ok, policy per_user, 3/hour, 1 left"),
        "{stdout}"
    );
    let out = run();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("DENIED"), "{stdout}");
    assert!(stdout.contains("retry-after:"), "{stdout}");
    let out = Command::new(binary())
        .args([
            "check",
            "--server",
            "http://127.0.0.1:1",
            "-D",
            "shop",
            "-d",
            "user=x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is `tollgate serve` running?"));
}

#[test]
fn every_example_policy_file_is_valid() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let out = Command::new(binary())
        .args(["policy", "validate"])
        .arg(format!("{root}/policies"))
        .arg(format!("{root}/envoy/ratelimit.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_spin_before_sleep_past_a_millisecond_is_refused_by_name() {
    let out = Command::new(binary())
        .args(["serve", "--park-spin-us", "1001"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--park-spin-us") && stderr.contains("1001"),
        "{stderr}"
    );
}
