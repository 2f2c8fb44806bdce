//! `Limiter::check_many` against its reference: the same checks made one at a time.

use proptest::prelude::*;
use tollgate_core::{CheckRequest, Descriptor, Entry, RequestError, SECOND};

use crate::support::{limiter, now_or_never};

const POLICIES: &str = "domain: api
descriptors:
  - key: user
    rate_limit: {unit: second, requests_per_unit: 5}
  - key: burst
    rate_limit: {unit: minute, requests_per_unit: 60, algorithm: gcra, burst: 4}
  - key: smooth
    rate_limit: {unit: minute, requests_per_unit: 6, algorithm: sliding_window}
  - key: free
    rate_limit: {unlimited: true}
";

/// One check: descriptors as `(key index, value)`, a cost, and whether its domain is
/// known.
type Check = (Vec<(usize, u8)>, u64, bool);

const KEYS: [&str; 5] = ["user", "burst", "smooth", "free", "unknown"];

fn with_requests<T>(checks: &[Check], f: impl FnOnce(&[CheckRequest<'_>]) -> T) -> T {
    let values: Vec<Vec<String>> = checks
        .iter()
        .map(|(d, _, _)| d.iter().map(|(_, v)| v.to_string()).collect())
        .collect();
    let entries: Vec<Vec<Entry<'_>>> = checks
        .iter()
        .zip(&values)
        .flat_map(|((d, _, _), vs)| {
            d.iter().zip(vs).map(|(&(k, _), value)| {
                vec![Entry {
                    key: KEYS[k],
                    value,
                }]
            })
        })
        .collect();
    let mut at = 0;
    let descriptors: Vec<Vec<Descriptor<'_>>> = checks
        .iter()
        .map(|(d, _, _)| {
            let out = entries[at..at + d.len()]
                .iter()
                .map(|e| Descriptor {
                    entries: e,
                    hits: None,
                    limit_override: None,
                })
                .collect();
            at += d.len();
            out
        })
        .collect();
    let requests: Vec<CheckRequest<'_>> = checks
        .iter()
        .zip(&descriptors)
        .map(|((_, hits, known), descriptors)| CheckRequest {
            domain: if *known { "api" } else { "elsewhere" },
            descriptors,
            hits: *hits,
        })
        .collect();
    f(&requests)
}

fn checks() -> impl Strategy<Value = Vec<(u64, Vec<Check>)>> {
    let descriptor = (0..KEYS.len(), 0u8..3);
    // An empty descriptor list is malformed: it must get its own error.
    let check = (
        prop::collection::vec(descriptor, 0..3),
        0u64..4,
        prop::bool::weighted(0.9),
    );
    let gap = prop_oneof![0u64..1_000, 0u64..2 * SECOND];
    prop::collection::vec((gap, prop::collection::vec(check, 1..20)), 1..8)
}

proptest! {
    #[test]
    fn many_checks_decide_as_one_after_another(rounds in checks()) {
        let (one_by_one, clock_a) = limiter(POLICIES);
        let (together, clock_b) = limiter(POLICIES);
        for (gap, round) in &rounds {
            clock_a.advance(*gap);
            clock_b.advance(*gap);
            let expected: Vec<Result<_, RequestError>> = with_requests(round, |requests| {
                requests.iter().map(|r| now_or_never(one_by_one.check(r))).collect()
            });
            let got = with_requests(round, |requests| now_or_never(together.check_many(requests)));
            prop_assert_eq!(got.len(), round.len());
            for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
                prop_assert_eq!(e, g, "check {} of {:?}", i, round);
            }
        }
    }
}

#[test]
fn a_malformed_check_is_refused_alone() {
    let (l, _) = limiter(POLICIES);
    let round: Vec<Check> = vec![
        (vec![(0, 1)], 1, true),
        (vec![], 1, true),
        (vec![(0, 1)], 1, true),
    ];
    let got = with_requests(&round, |requests| now_or_never(l.check_many(requests)));
    assert!(got[0].as_ref().is_ok_and(|d| d.allowed));
    assert!(got[1].is_err(), "no descriptors: {:?}", got[1]);
    let second = got[2].as_ref().expect("the third check is decided");
    assert_eq!(
        second.statuses[0].remaining, 3,
        "both valid checks were counted"
    );
}
