//! Measures the in-memory store's resident memory per live counter.
//!
//! Run: `cargo run --release -p tollgate-core --example memory_per_key [KEYS]`
//! Reads RSS from /proc/self/statm (Linux) before and after filling the store.

use tollgate_core::{CounterKey, Limit, LimitOp, MemoryStore, MemoryStoreConfig, SECOND};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    let keys: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let store = MemoryStore::new(MemoryStoreConfig {
        max_keys: usize::MAX / 2,
        ..MemoryStoreConfig::default()
    });
    let limit = Limit::gcra(100, SECOND, 100).expect("valid limit");
    let now = 1_700_000_000 * SECOND;
    let before = rss_bytes();
    for i in 0..keys {
        let mut ops = [LimitOp::new(
            CounterKey(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            limit,
            1,
            true,
        )];
        store.apply_sync(&mut ops, now);
    }
    let after = rss_bytes();
    assert_eq!(store.len() as u64, keys);
    let per_key = (after - before) as f64 / keys as f64;
    println!("live counters: {keys}");
    println!(
        "RSS growth:    {:.1} MiB",
        (after - before) as f64 / (1 << 20) as f64
    );
    println!(
        "per counter:   {per_key:.1} bytes (fixed size: keys are 8-byte fingerprints, not strings)"
    );
}
