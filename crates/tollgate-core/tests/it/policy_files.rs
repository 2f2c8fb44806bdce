//! Loading policy files: envoy's format unchanged, Tollgate's extensions, precise errors.

use tollgate_core::{
    Algorithm, Consistency, OnStoreError, PolicyError, PolicyLimit, PolicySet, SECOND,
};

fn load(yaml: &str) -> Result<PolicySet, Vec<PolicyError>> {
    PolicySet::from_files([("policies/api.yaml", yaml)])
}

fn error(yaml: &str) -> PolicyError {
    let mut errors = load(yaml).expect_err("the file must be rejected");
    assert_eq!(errors.len(), 1);
    errors.remove(0)
}

#[test]
fn envoy_file_with_every_known_field_loads_unchanged() {
    let set = load(
        "domain: envoy
descriptors:
  - key: remote_address
    detailed_metric: true
    value_to_metric: true
    metadata: {owner: team-a}
    rate_limit:
      name: per_ip
      unit: SECOND
      requests_per_unit: 10
      quota_mode: true
  - key: path
    value: /login
    shadow_mode: true
    rate_limit:
      unit: minute
      requests_per_unit: 5
      replaces:
        - name: per_ip
  - key: ldap
    rate_limit:
      unlimited: true
",
    )
    .unwrap();
    let domain = set.domain("envoy").unwrap();
    let policies = domain.policies();
    assert_eq!(policies.len(), 3);
    assert_eq!(&*policies[0].name, "per_ip");
    assert_eq!(&*policies[1].name, "envoy.path_/login");
    assert!(policies[1].shadow_mode);
    assert_eq!(&*policies[1].replaces[0], "per_ip");
    assert_eq!(policies[2].limit, PolicyLimit::Unlimited);
    match &policies[0].limit {
        PolicyLimit::Limited {
            limit,
            requests_per_unit,
            ..
        } => {
            assert_eq!(limit.algorithm(), Algorithm::FixedWindow, "envoy's default");
            assert_eq!(*requests_per_unit, 10);
            assert_eq!(limit.period(), SECOND);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(policies[0].consistency, Consistency::Global);
    assert_eq!(policies[0].on_store_error, OnStoreError::Allow);
}

#[test]
fn tollgate_extensions_are_read() {
    let set = load(
        "domain: ext
descriptors:
  - key: user
    rate_limit:
      unit: minute
      requests_per_unit: 60
      algorithm: gcra
      burst: 10
      consistency: local
      on_store_error: deny
",
    )
    .unwrap();
    let p = &set.domain("ext").unwrap().policies()[0];
    let PolicyLimit::Limited { limit, .. } = &p.limit else {
        panic!()
    };
    assert_eq!(limit.algorithm(), Algorithm::Gcra);
    assert_eq!(limit.burst(), 10);
    assert_eq!(p.consistency, Consistency::Local);
    assert_eq!(p.on_store_error, OnStoreError::Deny);
}

#[test]
fn a_lease_size_is_read_for_leased_policies_and_checked() {
    let set = load(
        "domain: ext
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 600, consistency: leased, lease: 50}
",
    )
    .unwrap();
    let p = &set.domain("ext").unwrap().policies()[0];
    assert_eq!(p.lease, Some(50));
    for (rate_limit, expected) in [
        (
            "{unit: minute, requests_per_unit: 600, lease: 50}",
            "lease applies only to consistency: leased",
        ),
        (
            "{unit: minute, requests_per_unit: 600, consistency: leased, lease: 0}",
            "lease must be between 1 and the limit's burst (600), got 0",
        ),
        (
            "{unit: minute, requests_per_unit: 60, algorithm: gcra, burst: 5, consistency: leased, lease: 6}",
            "lease must be between 1 and the limit's burst (5), got 6",
        ),
    ] {
        let e = error(&format!(
            "domain: api\ndescriptors:\n  - key: user\n    rate_limit: {rate_limit}\n"
        ));
        assert!(e.message.contains(expected), "{e}");
        assert!(e.message.contains("rate_limit"), "names the block: {e}");
    }
}

#[test]
fn an_unknown_field_is_named_with_its_line() {
    let e = error(
        "domain: api
descriptors:
  - key: user
    rate_limit:
      unit: second
      requests_per_unt: 5
",
    );
    assert_eq!(e.file, "policies/api.yaml");
    assert_eq!(e.line, Some(6), "{e}");
    assert!(e.message.contains("descriptors[0].rate_limit"), "{e}");
    assert!(e.message.contains("requests_per_unt"), "{e}");
}

#[test]
fn an_invalid_unit_is_named_with_its_line() {
    let e = error(
        "domain: api
descriptors:
  - key: user
    rate_limit:
      unit: fortnight
      requests_per_unit: 5
",
    );
    assert_eq!(e.line, Some(5), "{e}");
    assert!(e.message.contains("descriptors[0].rate_limit.unit"), "{e}");
    assert!(
        e.message.contains("invalid rate limit unit 'fortnight'"),
        "{e}"
    );
    assert!(e.to_string().starts_with("policies/api.yaml:5:"), "{e}");
}

#[test]
fn a_missing_unit_is_an_error() {
    let e = error(
        "domain: api\ndescriptors:\n  - key: user\n    rate_limit:\n      requests_per_unit: 5\n",
    );
    assert!(e.message.contains("unit is required"), "{e}");
    assert!(e.line.is_some(), "{e}");
}

#[test]
fn unlimited_with_a_unit_is_an_error() {
    let e = error(
        "domain: api\ndescriptors:\n  - key: user\n    rate_limit: {unlimited: true, unit: second}\n",
    );
    assert!(e.message.contains("must not be set when unlimited"), "{e}");
}

#[test]
fn burst_without_gcra_is_an_error() {
    let e = error(
        "domain: api\ndescriptors:\n  - key: user\n    rate_limit: {unit: second, requests_per_unit: 1, burst: 5}\n",
    );
    assert!(
        e.message.contains("burst applies only to algorithm gcra"),
        "{e}"
    );
}

#[test]
fn an_invalid_algorithm_lists_the_valid_ones() {
    let e = error(
        "domain: api\ndescriptors:\n  - key: user\n    rate_limit: {unit: second, requests_per_unit: 1, algorithm: leaky}\n",
    );
    assert!(e.message.contains("invalid algorithm 'leaky'"), "{e}");
    assert!(e.message.contains("gcra"), "{e}");
}

#[test]
fn replacing_itself_is_an_error() {
    let e = error(
        "domain: api
descriptors:
  - key: user
    rate_limit: {unit: second, requests_per_unit: 1, name: a, replaces: [{name: a}]}
",
    );
    assert!(e.message.contains("must not name the policy itself"), "{e}");
}

#[test]
fn empty_key_and_empty_domain_are_errors() {
    let e = error("domain: api\ndescriptors:\n  - key: ''\n");
    assert!(
        e.message.contains("descriptors[0].key: must not be empty"),
        "{e}"
    );
    let e = error("domain: ''\n");
    assert!(e.message.contains("domain: must not be empty"), "{e}");
}

#[test]
fn duplicate_siblings_are_named() {
    let e = error(
        "domain: api
descriptors:
  - key: a
    descriptors:
      - key: b
        value: x
      - key: b
        value: x
",
    );
    assert!(e.message.contains("descriptors[0].descriptors[1]"), "{e}");
    assert!(
        e.message.contains("duplicate descriptor 'api.a.b_x'"),
        "{e}"
    );
}

#[test]
fn share_threshold_needs_a_wildcard() {
    let e =
        error("domain: api\ndescriptors:\n  - key: a\n    value: x\n    share_threshold: true\n");
    assert!(
        e.message
            .contains("share_threshold needs a value with a '*'"),
        "{e}"
    );
}

#[test]
fn negative_or_huge_requests_per_unit_are_rejected() {
    let e = error(
        "domain: api\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: -1}\n",
    );
    assert!(e.message.contains("requests_per_unit"), "{e}");
    let e = error(
        "domain: api\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: 99999999999}\n",
    );
    assert!(e.message.contains("requests_per_unit"), "{e}");
}

#[test]
fn malformed_yaml_reports_a_location() {
    let e = error("domain: api\ndescriptors:\n  - key: a\n   bad indent: [\n");
    assert!(e.line.is_some(), "{e}");
}

#[test]
fn one_domain_in_two_files_is_an_error_naming_both() {
    let errors = PolicySet::from_files([("a.yaml", "domain: api\n"), ("b.yaml", "domain: api\n")])
        .unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file, "b.yaml");
    assert!(
        errors[0].message.contains("already defined in a.yaml"),
        "{}",
        errors[0]
    );
}

#[test]
fn errors_of_every_file_are_reported() {
    let errors = PolicySet::from_files([("a.yaml", "domain: ''\n"), ("b.yaml", "nodomain: 1\n")])
        .unwrap_err();
    assert_eq!(errors.len(), 2);
}

#[test]
fn limits_outside_the_exact_domain_are_refused_with_file_line_and_field() {
    // A thousand years deep loads (and decides exactly); two million does not.
    assert!(
        load("domain: api\ndescriptors:\n  - key: k\n    rate_limit: {unit: year, requests_per_unit: 1, algorithm: gcra, burst: 1000}\n")
            .is_ok()
    );
    let e = error(
        "domain: api
descriptors:
  - key: ok
    rate_limit: {unit: minute, requests_per_unit: 5}
  - key: deep
    rate_limit:
      unit: year
      requests_per_unit: 1
      algorithm: gcra
      burst: 2000000
",
    );
    assert!(e.to_string().starts_with("policies/api.yaml:5:"), "{e}");
    assert!(e.message.contains("descriptors[1].rate_limit"), "{e}");
    assert!(e.message.contains("burst of 2000000"), "{e}");
    assert!(e.message.contains("at most 1000000 years"), "{e}");

    let e = error(
        "domain: api\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1, algorithm: gcra, burst: 5000000000}\n",
    );
    assert_eq!(e.line, Some(3), "{e}");
    assert!(
        e.message.contains("burst must be at most 4294967295"),
        "{e}"
    );
}
