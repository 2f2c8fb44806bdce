//! Descriptor matching, held to envoyproxy/ratelimit's semantics. Each `readme_example_N`
//! test loads a configuration shaped like example N of its README and checks the behaviour
//! the README describes.

use crate::support::{check, limiter, rule_names};

#[test]
fn readme_example_1_exact_values_each_get_their_own_limit() {
    let (l, _) = limiter(
        "domain: mongo_cps
descriptors:
  - key: database
    value: users
    rate_limit: {unit: second, requests_per_unit: 2}
  - key: database
    value: default
    rate_limit: {unit: second, requests_per_unit: 2}
",
    );
    for _ in 0..2 {
        assert!(check(&l, "mongo_cps", &[&[("database", "users")]]).allowed);
    }
    assert!(!check(&l, "mongo_cps", &[&[("database", "users")]]).allowed);
    assert!(
        check(&l, "mongo_cps", &[&[("database", "default")]]).allowed,
        "separate counter"
    );
    let other = check(&l, "mongo_cps", &[&[("database", "other")]]);
    assert!(other.allowed);
    assert_eq!(
        rule_names(&other),
        vec![None],
        "no key-only node: nothing matches"
    );
}

const MESSAGING: &str = "domain: messaging
descriptors:
  - key: message_type
    value: marketing
    descriptors:
      - key: to_number
        rate_limit: {unit: day, requests_per_unit: 2}
  - key: to_number
    rate_limit: {unit: day, requests_per_unit: 3}
";

#[test]
fn readme_example_2_nested_and_key_only_descriptors() {
    let (l, _) = limiter(MESSAGING);
    let marketing = [("message_type", "marketing"), ("to_number", "2061111111")];
    let number = [("to_number", "2061111111")];
    // Each distinct number gets its own marketing counter.
    for _ in 0..2 {
        assert!(check(&l, "messaging", &[&marketing]).allowed);
    }
    assert!(!check(&l, "messaging", &[&marketing]).allowed);
    assert!(
        check(
            &l,
            "messaging",
            &[&[("message_type", "marketing"), ("to_number", "2062222222")]]
        )
        .allowed
    );
    // The key-only rule counts every value separately too.
    let d = check(&l, "messaging", &[&number]);
    assert!(d.allowed);
    assert_eq!(d.statuses[0].remaining, 2);
}

#[test]
fn readme_example_2_several_descriptors_are_all_checked() {
    let (l, _) = limiter(MESSAGING);
    let marketing: &[(&str, &str)] = &[("message_type", "marketing"), ("to_number", "1")];
    let number: &[(&str, &str)] = &[("to_number", "1")];
    assert!(check(&l, "messaging", &[marketing, number]).allowed);
    assert!(check(&l, "messaging", &[marketing, number]).allowed);
    let third = check(&l, "messaging", &[marketing, number]);
    assert!(!third.allowed, "the marketing limit (2/day) is exhausted");
    assert!(!third.statuses[0].allowed);
    assert!(third.statuses[1].allowed);
    // The denied request consumed nothing from the per-number limit: 1 of 3 left.
    let alone = check(&l, "messaging", &[number]);
    assert!(alone.allowed);
    assert_eq!(alone.statuses[0].remaining, 0);
}

#[test]
fn readme_example_3_most_specific_value_wins() {
    let (l, _) = limiter(
        "domain: edge_proxy_per_ip
descriptors:
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 10}
  - key: remote_address
    value: 50.0.0.5
    rate_limit: {unit: second, requests_per_unit: 0}
",
    );
    let blocked = check(
        &l,
        "edge_proxy_per_ip",
        &[&[("remote_address", "50.0.0.5")]],
    );
    assert!(!blocked.allowed, "requests_per_unit: 0 always denies");
    assert_eq!(blocked.statuses[0].retry_after, None);
    let other = check(
        &l,
        "edge_proxy_per_ip",
        &[&[("remote_address", "50.0.0.1")]],
    );
    assert!(other.allowed);
    assert_eq!(other.statuses[0].remaining, 9);
    assert_eq!(
        rule_names(&other),
        vec![Some("edge_proxy_per_ip.remote_address".into())]
    );
}

#[test]
fn readme_example_4_depth_must_equal_tree_level() {
    let (flat, _) = limiter(
        "domain: example4
descriptors:
  - key: key
    value: value
    rate_limit: {requests_per_unit: 300, unit: second}
",
    );
    let two = [("key", "value"), ("subkey", "subvalue")];
    assert_eq!(rule_names(&check(&flat, "example4", &[&two])), vec![None]);

    let (nested, _) = limiter(
        "domain: example4
descriptors:
  - key: key
    value: value
    descriptors:
      - key: subkey
        rate_limit: {requests_per_unit: 300, unit: second}
",
    );
    assert_eq!(
        rule_names(&check(&nested, "example4", &[&two])),
        vec![Some("example4.key_value.subkey".into())]
    );
    // A shorter descriptor lands on a node without a limit: no match.
    assert_eq!(
        rule_names(&check(&nested, "example4", &[&[("key", "value")]])),
        vec![None]
    );
}

#[test]
fn readme_example_5_unlimited_matches_but_never_limits() {
    let (l, _) = limiter(
        "domain: internal
descriptors:
  - key: ldap
    rate_limit: {unlimited: true}
  - key: azure
    rate_limit: {unit: minute, requests_per_unit: 1}
",
    );
    for _ in 0..100 {
        let d = check(&l, "internal", &[&[("ldap", "x")]]);
        assert!(d.allowed);
        assert_eq!(d.statuses[0].remaining, u64::MAX);
        assert_eq!(rule_names(&d), vec![Some("internal.ldap".into())]);
    }
    assert!(check(&l, "internal", &[&[("azure", "x")]]).allowed);
    assert!(!check(&l, "internal", &[&[("azure", "x")]]).allowed);
}

#[test]
fn readme_example_6_shadow_mode_never_denies_but_counts() {
    let (l, _) = limiter(
        "domain: example6
descriptors:
  - key: service
    descriptors:
      - key: user
        value: user-a
        rate_limit: {requests_per_unit: 2, unit: second}
        shadow_mode: true
      - key: user
        value: user-b
        rate_limit: {requests_per_unit: 2, unit: second}
",
    );
    let a = [("service", "auth-service"), ("user", "user-a")];
    let b = [("service", "auth-service"), ("user", "user-b")];
    for i in 0..5 {
        let d = check(&l, "example6", &[&a]);
        assert!(d.allowed && d.statuses[0].allowed);
        assert_eq!(d.statuses[0].shadow_denied, i >= 2, "request {i}");
    }
    assert!(check(&l, "example6", &[&b]).allowed);
    assert!(check(&l, "example6", &[&b]).allowed);
    assert!(!check(&l, "example6", &[&b]).allowed);
}

#[test]
fn readme_example_7_replaces_drops_the_named_limit() {
    let (l, _) = limiter(
        "domain: example7
descriptors:
  - key: key_1
    value: value_1
    descriptors:
      - key: user
        value: bkthomps
        rate_limit:
          name: specific_limit
          requests_per_unit: 5
          unit: second
  - key: key_2
    value: value_2
    descriptors:
      - key: user
        value: bkthomps
        rate_limit:
          replaces:
            - name: specific_limit
          requests_per_unit: 10
          unit: second
",
    );
    let one: &[(&str, &str)] = &[("key_1", "value_1"), ("user", "bkthomps")];
    let two: &[(&str, &str)] = &[("key_2", "value_2"), ("user", "bkthomps")];
    // Both together: only the replacing 10/s applies, and the 5/s counter is untouched.
    for i in 0..10 {
        let d = check(&l, "example7", &[one, two]);
        assert!(d.allowed, "request {i}");
        assert_eq!(rule_names(&d)[0], None, "replaced");
    }
    assert!(!check(&l, "example7", &[one, two]).allowed);
    for i in 0..5 {
        assert!(
            check(&l, "example7", &[one]).allowed,
            "5/s untouched, request {i}"
        );
    }
    assert!(!check(&l, "example7", &[one]).allowed);
}

#[test]
fn readme_example_8_detailed_metric_is_accepted_and_matching_unchanged() {
    let (l, _) = limiter(
        "domain: example8
descriptors:
  - key: key1
    detailed_metric: true
    rate_limit: {unit: minute, requests_per_unit: 10}
  - key: key1
    value: value1
    rate_limit: {unit: minute, requests_per_unit: 20}
",
    );
    assert_eq!(
        check(&l, "example8", &[&[("key1", "unspecified")]]).statuses[0].remaining,
        9
    );
    assert_eq!(
        check(&l, "example8", &[&[("key1", "value1")]]).statuses[0].remaining,
        19
    );
}

#[test]
fn readme_example_9_trailing_wildcard() {
    let (l, _) = limiter(
        "domain: example9
descriptors:
  - key: key1
    value: value*
    rate_limit: {unit: minute, requests_per_unit: 1}
",
    );
    assert!(check(&l, "example9", &[&[("key1", "value_1")]]).allowed);
    assert!(
        check(&l, "example9", &[&[("key1", "value_2")]]).allowed,
        "each value has its own counter"
    );
    assert!(!check(&l, "example9", &[&[("key1", "value_1")]]).allowed);
    assert_eq!(
        rule_names(&check(&l, "example9", &[&[("key1", "other")]])),
        vec![None]
    );
}

#[test]
fn readme_example_10_wildcard_anywhere_in_the_value() {
    let (l, _) = limiter(
        "domain: example10
descriptors:
  - key: path
    value: /api/*/users
    rate_limit: {unit: minute, requests_per_unit: 5}
  - key: path
    value: /api/*
    rate_limit: {unit: minute, requests_per_unit: 7}
",
    );
    let d = check(&l, "example10", &[&[("path", "/api/v1/users")]]);
    assert_eq!(
        rule_names(&d),
        vec![Some("example10.path_/api/*/users".into())]
    );
    let d = check(&l, "example10", &[&[("path", "/api/v1/groups")]]);
    assert_eq!(rule_names(&d), vec![Some("example10.path_/api/*".into())]);
}

#[test]
fn readme_example_11_share_threshold_shares_one_counter_across_values() {
    let (l, _) = limiter(
        "domain: example11
descriptors:
  - key: path
    value: /files/*
    share_threshold: true
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: user
    value: u*
    rate_limit: {unit: minute, requests_per_unit: 2}
",
    );
    assert!(check(&l, "example11", &[&[("path", "/files/a")]]).allowed);
    assert!(check(&l, "example11", &[&[("path", "/files/b")]]).allowed);
    assert!(
        !check(&l, "example11", &[&[("path", "/files/c")]]).allowed,
        "one shared counter"
    );
    // Without share_threshold every value keeps its own counter.
    for user in ["u1", "u2", "u3"] {
        assert!(check(&l, "example11", &[&[("user", user)]]).allowed);
    }
}

#[test]
fn exact_value_beats_wildcard_beats_key_only() {
    let (l, _) = limiter(
        "domain: order
descriptors:
  - key: k
    rate_limit: {unit: minute, requests_per_unit: 1, name: any}
  - key: k
    value: a*
    rate_limit: {unit: minute, requests_per_unit: 1, name: wild}
  - key: k
    value: abc
    rate_limit: {unit: minute, requests_per_unit: 1, name: exact}
",
    );
    let names = rule_names(&check(
        &l,
        "order",
        &[&[("k", "abc")], &[("k", "abd")], &[("k", "zzz")]],
    ));
    assert_eq!(
        names,
        vec![
            Some("exact".into()),
            Some("wild".into()),
            Some("any".into())
        ]
    );
}

#[test]
fn matching_does_not_backtrack_to_the_key_only_node() {
    // envoy picks (k=v) at level 1 and then finds no child; it does not retry with (k).
    let (l, _) = limiter(
        "domain: nb
descriptors:
  - key: k
    value: v
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: k
    descriptors:
      - key: sub
        rate_limit: {unit: minute, requests_per_unit: 1}
",
    );
    assert_eq!(
        rule_names(&check(&l, "nb", &[&[("k", "v"), ("sub", "x")]])),
        vec![None]
    );
    assert_eq!(
        rule_names(&check(&l, "nb", &[&[("k", "w"), ("sub", "x")]])),
        vec![Some("nb.k.sub".into())]
    );
}

#[test]
fn unknown_domain_allows_everything() {
    let (l, _) = limiter(MESSAGING);
    let d = check(&l, "nope", &[&[("to_number", "1")]]);
    assert!(d.allowed);
    assert_eq!(d.domain, None);
    assert_eq!(rule_names(&d), vec![None]);
}

#[test]
fn descriptors_and_domains_are_case_sensitive() {
    let (l, _) = limiter(MESSAGING);
    assert_eq!(
        rule_names(&check(&l, "Messaging", &[&[("to_number", "1")]])),
        vec![None]
    );
    assert_eq!(
        rule_names(&check(&l, "messaging", &[&[("To_Number", "1")]])),
        vec![None]
    );
}
