//! [`SpaceSaving`] against an exact count of every value, on Zipf-distributed streams (a
//! few values take most of the hits, as with real clients): its stated bounds hold for
//! single summaries and for summaries merged from disjoint parts of the stream.

use std::collections::HashMap;

use proptest::prelude::*;
use tollgate_core::heavy_hitters::SpaceSaving;

/// A Zipf(`s`) sampler over ranks `1..=n` by inverse CDF.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).collect();
        let sum: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let cdf = weights
            .iter()
            .map(|w| {
                acc += w / sum;
                acc
            })
            .collect();
        Self { cdf }
    }

    /// The rank of a uniform draw `u` in `[0, 1)`.
    fn rank(&self, u: f64) -> u64 {
        self.cdf.partition_point(|&c| c <= u) as u64 + 1
    }
}

fn stream(draws: &[u32], n: usize, s: f64) -> Vec<(u64, u64)> {
    let zipf = Zipf::new(n, s);
    draws
        .iter()
        .map(|&d| {
            let u = f64::from(d) / (f64::from(u32::MAX) + 1.0);
            // Weights as `hits`: mostly 1, sometimes more.
            (zipf.rank(u), u64::from(d % 7 == 0) * 4 + 1)
        })
        .collect()
}

fn summarise(items: &[(u64, u64)], capacity: usize) -> SpaceSaving {
    let mut s = SpaceSaving::new(capacity);
    for &(key, weight) in items {
        s.offer(key, weight, || format!("user={key}"));
    }
    s
}

fn exact(items: &[(u64, u64)]) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for &(key, weight) in items {
        *counts.entry(format!("user={key}")).or_insert(0) += weight;
    }
    counts
}

/// The guarantees of the module's documentation, checked against the exact counts.
fn assert_bounds(s: &SpaceSaving, truth: &HashMap<String, u64>) {
    let total: u64 = truth.values().sum();
    assert_eq!(s.total(), total);
    let bound = total / s.capacity() as u64;
    assert!(
        s.error_bound() <= bound,
        "min counter {} > N/m {bound}",
        s.error_bound()
    );
    let summary = s.top(usize::MAX);
    for h in &summary {
        let t = truth.get(&h.value).copied().unwrap_or(0);
        assert!(h.count >= t, "{} under-counted: {} < {t}", h.value, h.count);
        assert!(
            h.count - h.error <= t,
            "{} error too small: {} - {} > {t}",
            h.value,
            h.count,
            h.error
        );
        assert!(
            h.error <= bound,
            "{} error {} > N/m {bound}",
            h.value,
            h.error
        );
    }
    for (value, &t) in truth {
        if t > bound {
            assert!(
                summary.iter().any(|h| &h.value == value),
                "{value} ({t} > {bound}) missing"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_summary_keeps_its_bounds_on_a_zipf_stream(
        draws in prop::collection::vec(any::<u32>(), 1..4000),
        capacity in 1usize..64,
        n in 10usize..5000,
        s in 0.6f64..1.6,
    ) {
        let items = stream(&draws, n, s);
        assert_bounds(&summarise(&items, capacity), &exact(&items));
    }

    #[test]
    fn merged_summaries_keep_the_bounds_of_the_whole_stream(
        draws in prop::collection::vec(any::<u32>(), 1..4000),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 1..4),
        capacity in 1usize..64,
        n in 10usize..5000,
    ) {
        let items = stream(&draws, n, 1.1);
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(items.len())).collect();
        at.sort_unstable();
        let mut merged = SpaceSaving::new(capacity);
        let mut start = 0;
        for end in at.into_iter().chain([items.len()]) {
            merged.merge(&summarise(&items[start..end], capacity));
            start = end;
        }
        assert_bounds(&merged, &exact(&items));
    }
}

/// A million hits from 100,000 users, Zipf(1.1): the ten heaviest are found and ranked as
/// they truly are, each count within N/m of the truth.
#[test]
fn the_top_ten_of_a_million_skewed_hits_are_the_true_top_ten() {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let draws: Vec<u32> = (0..1_000_000)
        .map(|_| {
            // xorshift64*: reproducible without a dependency.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
        })
        .collect();
    let items = stream(&draws, 100_000, 1.1);
    let truth = exact(&items);
    let s = summarise(&items, 256);
    assert_bounds(&s, &truth);
    let mut true_top: Vec<(&String, &u64)> = truth.iter().collect();
    true_top.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let found: Vec<String> = s.top(10).into_iter().map(|h| h.value).collect();
    let expected: Vec<String> = true_top
        .iter()
        .take(10)
        .map(|(v, _)| (*v).clone())
        .collect();
    assert_eq!(found, expected);
    assert!(s.error_bound() <= s.total() / 256);
}
