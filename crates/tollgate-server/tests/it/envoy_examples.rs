//! envoyproxy/ratelimit's README examples 1–11, end to end: one policy file per example
//! (in its format), the real binary, and a generated RLS client over gRPC.

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, DescriptorStatus};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use tonic::transport::Channel;

use crate::helpers::{TempDir, TestServer, body};

const EXAMPLES: [(&str, &str); 13] = [
    (
        "example1.yaml",
        "domain: mongo_cps
descriptors:
  - key: database
    value: users
    rate_limit: {unit: hour, requests_per_unit: 2}
  - key: database
    value: default
    rate_limit: {unit: hour, requests_per_unit: 2}
",
    ),
    (
        "example2.yaml",
        "domain: messaging
descriptors:
  - key: message_type
    value: marketing
    descriptors:
      - key: to_number
        rate_limit: {unit: day, requests_per_unit: 2}
  - key: to_number
    rate_limit: {unit: day, requests_per_unit: 3}
",
    ),
    (
        "example3.yaml",
        "domain: edge_proxy_per_ip
descriptors:
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 10}
  - key: remote_address
    value: 50.0.0.5
    rate_limit: {unit: second, requests_per_unit: 0}
",
    ),
    (
        "example4a.yaml",
        "domain: example4_flat
descriptors:
  - key: key
    value: value
    rate_limit: {requests_per_unit: 300, unit: second}
",
    ),
    (
        "example4b.yaml",
        "domain: example4_nested
descriptors:
  - key: key
    value: value
    descriptors:
      - key: subkey
        rate_limit: {requests_per_unit: 300, unit: second}
",
    ),
    (
        "example5.yaml",
        "domain: internal
descriptors:
  - key: ldap
    rate_limit: {unlimited: true}
  - key: azure
    rate_limit: {unit: hour, requests_per_unit: 1}
",
    ),
    (
        "example6.yaml",
        "domain: example6
descriptors:
  - key: service
    descriptors:
      - key: user
        value: user-a
        rate_limit: {requests_per_unit: 1, unit: hour}
        shadow_mode: true
      - key: user
        value: user-b
        rate_limit: {requests_per_unit: 1, unit: hour}
",
    ),
    (
        "example7.yaml",
        "domain: example7
descriptors:
  - key: key_1
    value: value_1
    descriptors:
      - key: user
        value: bkthomps
        rate_limit: {name: specific_limit, requests_per_unit: 1, unit: hour}
  - key: key_2
    value: value_2
    descriptors:
      - key: user
        value: bkthomps
        rate_limit:
          replaces: [{name: specific_limit}]
          requests_per_unit: 3
          unit: hour
",
    ),
    (
        "example8.yaml",
        "domain: example8
descriptors:
  - key: key1
    detailed_metric: true
    rate_limit: {unit: hour, requests_per_unit: 10}
  - key: key1
    value: value1
    rate_limit: {unit: hour, requests_per_unit: 20}
",
    ),
    (
        "example9.yaml",
        "domain: example9
descriptors:
  - key: key1
    value: value*
    rate_limit: {unit: hour, requests_per_unit: 1}
",
    ),
    (
        "example10.yaml",
        "domain: example10
descriptors:
  - key: path
    value: /api/*/users
    rate_limit: {unit: hour, requests_per_unit: 5}
",
    ),
    (
        "example11.yaml",
        "domain: example11
descriptors:
  - key: path
    value: /files/*
    share_threshold: true
    rate_limit: {unit: hour, requests_per_unit: 2}
",
    ),
    (
        // Today's format: descriptor-level `quota_mode` (upstream's PR #1045) next to
        // `detailed_metric` and `metadata`, loaded unchanged.
        "quota.yaml",
        "domain: quota_tiers
descriptors:
  - key: plan
    value: free
    quota_mode: true
    detailed_metric: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: pool
    quota_mode: true
    metadata: {tier: shared}
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 10}
",
    ),
];

struct Rls(RateLimitServiceClient<Channel>);

impl Rls {
    /// Asks for one request made of `descriptors` (each a list of key/value entries).
    async fn ask(
        &mut self,
        domain: &str,
        descriptors: &[&[(&str, &str)]],
    ) -> (i32, Vec<DescriptorStatus>) {
        let descriptors = descriptors
            .iter()
            .map(|d| RateLimitDescriptor {
                entries: d
                    .iter()
                    .map(|(k, v)| Entry {
                        key: (*k).into(),
                        value: (*v).into(),
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        let request = RateLimitRequest {
            domain: domain.into(),
            descriptors,
            hits_addend: 0,
        };
        let r = self
            .0
            .should_rate_limit(request)
            .await
            .expect("ShouldRateLimit")
            .into_inner();
        (r.overall_code, r.statuses)
    }

    async fn ok(&mut self, domain: &str, descriptors: &[&[(&str, &str)]]) -> bool {
        self.ask(domain, descriptors).await.0 == Code::Ok as i32
    }

    /// The name of the limit that decided the first descriptor, if any.
    async fn limit_name(&mut self, domain: &str, descriptor: &[(&str, &str)]) -> Option<String> {
        let (_, statuses) = self.ask(domain, &[descriptor]).await;
        statuses[0].current_limit.as_ref().map(|l| l.name.clone())
    }
}

async fn start() -> (TestServer, TempDir, Rls) {
    let dir = TempDir::new("envoy-examples");
    for (name, text) in EXAMPLES {
        dir.write(name, text);
    }
    let s = TestServer::start(Some(&dir.0));
    let client = RateLimitServiceClient::connect(s.grpc.clone())
        .await
        .expect("connect");
    (s, dir, Rls(client))
}

#[tokio::test]
async fn examples_1_to_4_values_nesting_specificity_depth() {
    let (_s, _dir, mut rls) = start().await;
    // 1: each exact value has its own limit.
    assert!(rls.ok("mongo_cps", &[&[("database", "users")]]).await);
    assert!(rls.ok("mongo_cps", &[&[("database", "users")]]).await);
    assert!(!rls.ok("mongo_cps", &[&[("database", "users")]]).await);
    assert!(rls.ok("mongo_cps", &[&[("database", "default")]]).await);
    // 2: nested marketing limit per number, and a key-only limit per number; all checked.
    let marketing: &[(&str, &str)] = &[("message_type", "marketing"), ("to_number", "2061111111")];
    let number: &[(&str, &str)] = &[("to_number", "2061111111")];
    assert!(rls.ok("messaging", &[marketing, number]).await);
    assert!(rls.ok("messaging", &[marketing, number]).await);
    let (code, statuses) = rls.ask("messaging", &[marketing, number]).await;
    assert_eq!(code, Code::OverLimit as i32);
    assert_eq!(
        (statuses[0].code, statuses[1].code),
        (Code::OverLimit as i32, Code::Ok as i32)
    );
    assert!(
        rls.ok(
            "messaging",
            &[&[("message_type", "marketing"), ("to_number", "2062222222")]]
        )
        .await
    );
    // 3: the most specific value wins; 0 requests per unit always denies.
    assert!(
        !rls.ok("edge_proxy_per_ip", &[&[("remote_address", "50.0.0.5")]])
            .await
    );
    assert!(
        rls.ok("edge_proxy_per_ip", &[&[("remote_address", "50.0.0.1")]])
            .await
    );
    // 4: the request's depth must equal the tree's.
    let two: &[(&str, &str)] = &[("key", "value"), ("subkey", "subvalue")];
    assert_eq!(rls.limit_name("example4_flat", two).await, None);
    assert_eq!(
        rls.limit_name("example4_nested", two).await.as_deref(),
        Some("example4_nested.key_value.subkey")
    );
}

#[tokio::test]
async fn examples_5_to_8_unlimited_shadow_replaces_detailed_metric() {
    let (_s, _dir, mut rls) = start().await;
    // 5: unlimited answers OK with the largest remaining count, every time.
    for _ in 0..5 {
        let (code, statuses) = rls.ask("internal", &[&[("ldap", "x")]]).await;
        assert_eq!(
            (code, statuses[0].limit_remaining),
            (Code::Ok as i32, u32::MAX)
        );
    }
    assert!(rls.ok("internal", &[&[("azure", "x")]]).await);
    assert!(!rls.ok("internal", &[&[("azure", "x")]]).await);
    // 6: shadow mode never denies; the other user is limited.
    let a: &[(&str, &str)] = &[("service", "auth-service"), ("user", "user-a")];
    let b: &[(&str, &str)] = &[("service", "auth-service"), ("user", "user-b")];
    for _ in 0..3 {
        assert!(rls.ok("example6", &[a]).await);
    }
    assert!(rls.ok("example6", &[b]).await);
    assert!(!rls.ok("example6", &[b]).await);
    // 7: together, only the replacing limit (3) applies; the replaced one (1) is untouched.
    let one: &[(&str, &str)] = &[("key_1", "value_1"), ("user", "bkthomps")];
    let two: &[(&str, &str)] = &[("key_2", "value_2"), ("user", "bkthomps")];
    for _ in 0..3 {
        assert!(rls.ok("example7", &[one, two]).await);
    }
    assert!(!rls.ok("example7", &[one, two]).await);
    assert!(rls.ok("example7", &[one]).await);
    assert!(!rls.ok("example7", &[one]).await);
    // 8: detailed_metric loads and matching is unchanged.
    assert_eq!(
        rls.limit_name("example8", &[("key1", "other")])
            .await
            .as_deref(),
        Some("example8.key1")
    );
    assert_eq!(
        rls.limit_name("example8", &[("key1", "value1")])
            .await
            .as_deref(),
        Some("example8.key1_value1")
    );
}

#[tokio::test]
async fn examples_9_to_11_wildcards_and_share_threshold() {
    let (_s, _dir, mut rls) = start().await;
    // 9: trailing wildcard, one counter per value.
    assert!(rls.ok("example9", &[&[("key1", "value_1")]]).await);
    assert!(rls.ok("example9", &[&[("key1", "value_2")]]).await);
    assert!(!rls.ok("example9", &[&[("key1", "value_1")]]).await);
    assert_eq!(rls.limit_name("example9", &[("key1", "other")]).await, None);
    // 10: a wildcard inside the value.
    assert!(
        rls.limit_name("example10", &[("path", "/api/v2/users")])
            .await
            .is_some()
    );
    assert_eq!(
        rls.limit_name("example10", &[("path", "/api/v2/groups")])
            .await,
        None
    );
    // 11: share_threshold: every matching value shares one counter.
    assert!(rls.ok("example11", &[&[("path", "/files/a")]]).await);
    assert!(rls.ok("example11", &[&[("path", "/files/b")]]).await);
    assert!(!rls.ok("example11", &[&[("path", "/files/c")]]).await);
}

#[tokio::test]
async fn quota_mode_descriptors_are_over_only_together() {
    let (s, _dir, mut rls) = start().await;
    let request: &[&[(&str, &str)]] = &[&[("plan", "free")], &[("pool", "p")], &[("user", "u")]];
    let codes = |statuses: &[DescriptorStatus]| statuses.iter().map(|s| s.code).collect::<Vec<_>>();
    let (ok, over) = (Code::Ok as i32, Code::OverLimit as i32);
    let (code, statuses) = rls.ask("quota_tiers", request).await;
    assert_eq!((code, codes(&statuses)), (ok, vec![ok, ok, ok]));
    // The plan's quota is over, the pool's is not: OK overall, each status its own code.
    let (code, statuses) = rls.ask("quota_tiers", request).await;
    assert_eq!((code, codes(&statuses)), (ok, vec![over, ok, ok]));
    // Every quota-mode descriptor over: OVER_LIMIT, though the regular one is not.
    let (code, statuses) = rls.ask("quota_tiers", request).await;
    assert_eq!((code, codes(&statuses)), (over, vec![over, over, ok]));
    // The denied request took nothing from the regular limit: 2 admitted requests and
    // this one leave 7 of its 10.
    let (_, statuses) = rls.ask("quota_tiers", &[&[("user", "u")]]).await;
    assert_eq!(statuses[0].limit_remaining, 7);
    // The HTTP answer says which statuses are in quota mode.
    let v = s
        .check_json(&body(
            "quota_tiers",
            &[&[("plan", "free")], &[("user", "u")]],
            1,
        ))
        .await;
    assert_eq!(v["statuses"][0]["quota_mode"], true, "{v}");
    assert_eq!(v["statuses"][1]["quota_mode"], false, "{v}");
    assert_eq!(v["allowed"], false, "{v}");
}
