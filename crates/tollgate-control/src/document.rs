//! Policies ⇄ policy documents. A domain stored as rows of [`Policy`] becomes the descriptor
//! tree of an envoyproxy/ratelimit policy file, and back. Every policy the store accepts is
//! checked by the core's own file parser ([`tollgate_core::policy::parse_policy_file`]), so
//! a policy means exactly what the same lines in a file would mean: there is one validator.

use serde::{Deserialize, Serialize};
use tollgate_core::PolicyError;

use crate::model::{
    AlgorithmName, ConsistencyName, MAX_DESCRIPTION_LEN, MAX_DESCRIPTOR_ENTRIES, MAX_ENTRY_LEN,
    MAX_NAME_LEN, MAX_REPLACES, MatchEntry, OnStoreErrorName, PeriodName, PolicySpec,
    RateLimitSpec, UnitName,
};

/// A policy file's contents: a domain and its descriptor tree. Read leniently (fields
/// envoyproxy/ratelimit knows but Tollgate ignores are skipped): the core's parser has
/// already judged the text by the time it is read into this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDocument {
    /// The domain.
    pub domain: String,
    /// The tree's first level.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub descriptors: Vec<DocumentNode>,
}

/// One node of a descriptor tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentNode {
    /// Entry key.
    pub key: String,
    /// Entry value (absent: any value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The limit at this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<DocumentLimit>,
    /// Evaluate, never deny.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow_mode: bool,
    /// Quota mode (envoyproxy/ratelimit's `quota_mode`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quota_mode: bool,
    /// Values matching this node's `*` pattern share one counter.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub share_threshold: bool,
    /// The next level.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub descriptors: Vec<DocumentNode>,
}

/// A `rate_limit` block as written in a file (names kept as text: files may spell units
/// in upper case, as envoyproxy/ratelimit allows).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DocumentLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    requests_per_unit: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    unlimited: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    replaces: Vec<Replace>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    burst: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    consistency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    on_store_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    anchor_day: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_in_flight: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    share_threshold: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Replace {
    name: String,
}

pub use tollgate_api::FieldError;

/// Why a set of policies cannot form one domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policies '{first}' and '{second}' match the same descriptor")]
pub struct SameDescriptor {
    /// The policy already there.
    pub first: String,
    /// The one that collides with it.
    pub second: String,
}

/// The name rule for domains created through the admin API: what fits in a URL path
/// segment and a log line without quoting. Domains from files keep envoy's freedom.
pub fn check_domain_name(name: &str) -> Result<(), FieldError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            "name",
            format!(
                "must be 1 to {MAX_NAME_LEN} characters of letters, digits, '_', '.', ':' or '-', starting with a letter or digit"
            ),
        ))
    }
}

/// The name rule for policies: printable text (policy names from files are envoy's full
/// keys, such as `api.path_/login`).
pub fn check_policy_name(name: &str) -> Result<(), FieldError> {
    if name.is_empty() || name.chars().count() > 2 * MAX_NAME_LEN {
        return Err(FieldError::new(
            "name",
            format!("must be 1 to {} characters long", 2 * MAX_NAME_LEN),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(FieldError::new(
            "name",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Checks one policy on its own: bounds, then the core's rules for its `rate_limit`.
pub fn check_policy(domain: &str, name: &str, spec: &PolicySpec) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    if let Err(e) = check_policy_name(name) {
        errors.push(e);
    }
    if spec.descriptor.is_empty() || spec.descriptor.len() > MAX_DESCRIPTOR_ENTRIES {
        errors.push(FieldError::new(
            "descriptor",
            format!("must have 1 to {MAX_DESCRIPTOR_ENTRIES} entries"),
        ));
    }
    for (i, entry) in spec.descriptor.iter().enumerate() {
        let bad =
            |s: &str| s.is_empty() || s.len() > MAX_ENTRY_LEN || s.chars().any(char::is_control);
        if bad(&entry.key) {
            errors.push(FieldError::new(
                format!("descriptor[{i}].key"),
                format!("must be 1 to {MAX_ENTRY_LEN} characters without control characters"),
            ));
        }
        if entry.value.as_deref().is_some_and(bad) {
            errors.push(FieldError::new(
                format!("descriptor[{i}].value"),
                format!("must be 1 to {MAX_ENTRY_LEN} bytes without control characters, or absent"),
            ));
        }
    }
    if spec.description.chars().count() > MAX_DESCRIPTION_LEN || spec.description.contains('\0') {
        errors.push(FieldError::new(
            "description",
            format!("must be at most {MAX_DESCRIPTION_LEN} characters, without NUL"),
        ));
    }
    let limit = &spec.rate_limit;
    if limit.replaces.len() > MAX_REPLACES {
        errors.push(FieldError::new(
            "rate_limit.replaces",
            format!("must name at most {MAX_REPLACES} policies"),
        ));
    }
    for (i, r) in limit.replaces.iter().enumerate() {
        if let Err(e) = check_policy_name(r) {
            errors.push(FieldError::new(
                format!("rate_limit.replaces[{i}]"),
                e.message,
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // The rest is the core's: parse a one-policy document exactly as a file would be.
    let document = PolicyDocument {
        domain: domain.to_owned(),
        descriptors: vec![branch(name, spec)],
    };
    match to_core_domain("policy", &document) {
        Ok(_) => Ok(()),
        Err(e) => Err(vec![locate(&e)]),
    }
}

/// Turns an error of the core's parser on a one-policy document into a field error of the
/// request. Paths in the document (`descriptors[0].descriptors[0].rate_limit`) are mapped
/// to the request's shape (`rate_limit`, `share_threshold`).
fn locate(e: &PolicyError) -> FieldError {
    let mut message = e.message.as_str();
    while let Some(rest) = message
        .strip_prefix("descriptors[0]")
        .map(|r| r.strip_prefix('.').unwrap_or(r))
    {
        message = rest;
    }
    let field = if message.contains("share_threshold") {
        "share_threshold"
    } else {
        "rate_limit"
    };
    // "rate_limit.burst: …", "rate_limit: burst applies …", ": share_threshold needs …"
    let message = message
        .trim_start_matches(':')
        .trim_start_matches("rate_limit")
        .trim_start_matches(':')
        .trim();
    let (field, message) = match message.split_once(": ") {
        Some((sub, rest))
            if field == "rate_limit" && sub.starts_with('.') && !sub.contains(' ') =>
        {
            (format!("rate_limit{sub}"), rest.to_owned())
        }
        _ => {
            let message = message.trim_start_matches("rate_limit: ");
            // "burst must be at least 1": the core names the field first; so does the
            // error, so that a form can show it at that field.
            let named = message
                .split(' ')
                .next()
                .filter(|word| field == "rate_limit" && RATE_LIMIT_FIELDS.contains(word));
            match named {
                Some(word) => (format!("rate_limit.{word}"), message.to_owned()),
                None => (field.to_owned(), message.to_owned()),
            }
        }
    };
    FieldError::new(field, message)
}

/// The fields of a `rate_limit` ([`crate::model::RateLimitSpec`]).
const RATE_LIMIT_FIELDS: &[&str] = &[
    "unit",
    "requests_per_unit",
    "unlimited",
    "algorithm",
    "burst",
    "consistency",
    "on_store_error",
    "lease",
    "period",
    "time_zone",
    "anchor_day",
    "max_in_flight",
    "replaces",
];

/// The chain of nodes for one policy: one node per descriptor entry, the limit on the last.
fn branch(name: &str, spec: &PolicySpec) -> DocumentNode {
    let mut nodes = spec.descriptor.iter().rev();
    let last = nodes.next();
    let mut node = DocumentNode {
        key: last.map(|e| e.key.clone()).unwrap_or_default(),
        value: last.and_then(|e| e.value.clone()),
        rate_limit: Some(document_limit(name, &spec.rate_limit)),
        shadow_mode: spec.shadow_mode,
        quota_mode: spec.quota_mode,
        share_threshold: spec.share_threshold,
        descriptors: Vec::new(),
    };
    for entry in nodes {
        node = DocumentNode {
            key: entry.key.clone(),
            value: entry.value.clone(),
            rate_limit: None,
            shadow_mode: false,
            quota_mode: false,
            share_threshold: false,
            descriptors: vec![node],
        };
    }
    node
}

fn text<T: Serialize>(value: T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn document_limit(name: &str, spec: &RateLimitSpec) -> DocumentLimit {
    DocumentLimit {
        unit: spec.unit.map(text),
        requests_per_unit: spec.requests_per_unit,
        unlimited: spec.unlimited,
        name: Some(name.to_owned()),
        replaces: spec
            .replaces
            .iter()
            .map(|n| Replace { name: n.clone() })
            .collect(),
        algorithm: spec.algorithm.map(text),
        burst: spec.burst,
        consistency: spec.consistency.map(text),
        on_store_error: spec.on_store_error.map(text),
        lease: spec.lease,
        period: spec.period.map(text),
        time_zone: spec.time_zone.clone(),
        anchor_day: spec.anchor_day,
        max_in_flight: spec.max_in_flight,
        share_threshold: false,
    }
}

fn named<T: for<'de> Deserialize<'de>>(s: &Option<String>) -> Option<T> {
    s.as_ref().and_then(|s| {
        serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase())).ok()
    })
}

fn spec_limit(limit: &DocumentLimit) -> RateLimitSpec {
    RateLimitSpec {
        unit: named::<UnitName>(&limit.unit),
        requests_per_unit: limit.requests_per_unit,
        unlimited: limit.unlimited,
        algorithm: named::<AlgorithmName>(&limit.algorithm),
        burst: limit.burst,
        consistency: named::<ConsistencyName>(&limit.consistency),
        on_store_error: named::<OnStoreErrorName>(&limit.on_store_error),
        lease: limit.lease,
        period: named::<PeriodName>(&limit.period),
        time_zone: limit.time_zone.clone(),
        anchor_day: limit.anchor_day,
        max_in_flight: limit.max_in_flight,
        replaces: limit.replaces.iter().map(|r| r.name.clone()).collect(),
    }
}

/// Builds a domain's descriptor tree from its policies (in the given order). Fails when
/// two policies end on the same node.
pub fn assemble<'a>(
    domain: &str,
    policies: impl IntoIterator<Item = (&'a str, &'a PolicySpec)>,
) -> Result<PolicyDocument, SameDescriptor> {
    let mut document = PolicyDocument {
        domain: domain.to_owned(),
        descriptors: Vec::new(),
    };
    for (name, spec) in policies {
        let mut level = &mut document.descriptors;
        let entries = &spec.descriptor;
        for (depth, entry) in entries.iter().enumerate() {
            let at = match level
                .iter()
                .position(|n| n.key == entry.key && n.value == entry.value)
            {
                Some(at) => at,
                None => {
                    level.push(DocumentNode {
                        key: entry.key.clone(),
                        value: entry.value.clone(),
                        rate_limit: None,
                        shadow_mode: false,
                        quota_mode: false,
                        share_threshold: false,
                        descriptors: Vec::new(),
                    });
                    level.len() - 1
                }
            };
            let node = &mut level[at];
            if depth + 1 == entries.len() {
                if let Some(existing) = &node.rate_limit {
                    return Err(SameDescriptor {
                        first: existing.name.clone().unwrap_or_default(),
                        second: name.to_owned(),
                    });
                }
                node.rate_limit = Some(document_limit(name, &spec.rate_limit));
                node.shadow_mode = spec.shadow_mode;
                node.quota_mode = spec.quota_mode;
                node.share_threshold = spec.share_threshold;
            }
            level = &mut node.descriptors;
        }
    }
    Ok(document)
}

/// Every limited node of a document as a named policy. Nodes without a `rate_limit.name`
/// are named by their envoy full key (`domain.key_value.key`), the name decisions report
/// for them anyway.
pub fn flatten(document: &PolicyDocument) -> Vec<(String, PolicySpec)> {
    fn walk(
        nodes: &[DocumentNode],
        parent_key: &str,
        path: &mut Vec<MatchEntry>,
        out: &mut Vec<(String, PolicySpec)>,
    ) {
        for node in nodes {
            let value = node.value.clone().filter(|v| !v.is_empty());
            let full_key = match &value {
                Some(v) => format!("{parent_key}.{}_{v}", node.key),
                None => format!("{parent_key}.{}", node.key),
            };
            path.push(MatchEntry {
                key: node.key.clone(),
                value,
            });
            if let Some(limit) = &node.rate_limit {
                let name = limit
                    .name
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| full_key.clone());
                out.push((
                    name,
                    PolicySpec {
                        descriptor: path.clone(),
                        rate_limit: spec_limit(limit),
                        shadow_mode: node.shadow_mode,
                        quota_mode: node.quota_mode,
                        share_threshold: node.share_threshold || limit.share_threshold,
                        description: String::new(),
                    },
                ));
            }
            walk(&node.descriptors, &full_key, path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(
        &document.descriptors,
        &document.domain,
        &mut Vec::new(),
        &mut out,
    );
    out
}

/// Parses a policy file's text: the core judges it (errors with file, line and field),
/// then it is read as a [`PolicyDocument`].
pub fn parse_document(source: &str, text: &str) -> Result<PolicyDocument, PolicyError> {
    tollgate_core::policy::parse_policy_file(source, text)?;
    yaml_serde::from_str(text).map_err(|e| PolicyError {
        file: source.to_owned(),
        line: None,
        column: None,
        message: e.to_string(),
    })
}

/// The document as the core's domain, named `source` in errors.
pub fn to_core_domain(
    source: &str,
    document: &PolicyDocument,
) -> Result<tollgate_core::policy::Domain, PolicyError> {
    // JSON is YAML: the core's file parser reads it as is.
    let text = document_text(document);
    tollgate_core::policy::parse_policy_file(source, &text)
}

/// The document as text the core's file parser reads (JSON, which is YAML).
pub fn document_text(document: &PolicyDocument) -> String {
    serde_json::to_string(document).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(entries: &[(&str, Option<&str>)], unit: UnitName, rpu: u32) -> PolicySpec {
        PolicySpec {
            descriptor: entries
                .iter()
                .map(|(k, v)| MatchEntry {
                    key: (*k).to_owned(),
                    value: v.map(str::to_owned),
                })
                .collect(),
            rate_limit: RateLimitSpec {
                unit: Some(unit),
                requests_per_unit: Some(rpu),
                ..RateLimitSpec::default()
            },
            shadow_mode: false,
            quota_mode: false,
            share_threshold: false,
            description: String::new(),
        }
    }

    #[test]
    fn policies_become_one_tree_and_back() {
        let a = spec(&[("user", None)], UnitName::Minute, 100);
        let b = spec(
            &[("user", None), ("path", Some("/login"))],
            UnitName::Second,
            5,
        );
        let document = assemble("api", [("per-user", &a), ("login", &b)]).unwrap();
        assert_eq!(document.descriptors.len(), 1, "one shared 'user' node");
        assert_eq!(document.descriptors[0].descriptors.len(), 1);
        let domain = to_core_domain("t", &document).unwrap();
        let names: Vec<&str> = domain.policies().iter().map(|p| &*p.name).collect();
        assert_eq!(names, ["per-user", "login"]);
        let flat = flatten(&document);
        assert_eq!(
            flat,
            vec![("per-user".to_owned(), a), ("login".to_owned(), b)]
        );
    }

    #[test]
    fn two_policies_on_one_descriptor_collide() {
        let a = spec(&[("user", None)], UnitName::Minute, 100);
        let err = assemble("api", [("a", &a), ("b", &a)]).unwrap_err();
        assert_eq!((err.first.as_str(), err.second.as_str()), ("a", "b"));
    }

    #[test]
    fn a_concurrency_limit_round_trips_and_needs_its_maximum() {
        let mut s = spec(&[("stream_of", None)], UnitName::Second, 1);
        s.rate_limit.unit = None;
        s.rate_limit.requests_per_unit = None;
        s.rate_limit.algorithm = Some(AlgorithmName::Concurrency);
        s.rate_limit.max_in_flight = Some(4);
        check_policy("llm", "streams", &s).expect("a valid concurrency limit");
        let back = flatten(&assemble("llm", [("streams", &s)]).expect("one policy"));
        assert_eq!(back[0].1.rate_limit, s.rate_limit);
        let mut bad = s.clone();
        bad.rate_limit.max_in_flight = None;
        let errors = check_policy("llm", "streams", &bad).unwrap_err();
        assert!(
            errors[0].message.contains("max_in_flight is required"),
            "{errors:?}"
        );
        let mut bad = s;
        bad.rate_limit.consistency = Some(ConsistencyName::Leased);
        let errors = check_policy("llm", "streams", &bad).unwrap_err();
        assert!(
            errors[0].message.contains("consistency must be global"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_calendar_quota_round_trips_and_its_zone_is_checked_at_the_field() {
        let mut s = spec(&[("org", None)], UnitName::Month, 1_000);
        s.rate_limit.unit = None;
        s.rate_limit.algorithm = Some(AlgorithmName::Quota);
        s.rate_limit.period = Some(PeriodName::Month);
        s.rate_limit.time_zone = Some("Europe/Berlin".into());
        s.rate_limit.anchor_day = Some(15);
        check_policy("billing", "monthly", &s).expect("a valid quota");
        let doc = assemble("billing", [("monthly", &s)]).expect("one policy");
        let back = flatten(&doc);
        assert_eq!(
            back[0].1.rate_limit, s.rate_limit,
            "every quota field survives"
        );

        let mut bad = s.clone();
        bad.rate_limit.time_zone = Some("Europe/Atlantis".into());
        let errors = check_policy("billing", "monthly", &bad).unwrap_err();
        assert_eq!(errors[0].field, "rate_limit.time_zone", "{errors:?}");
        assert!(
            errors[0]
                .message
                .contains("unknown time zone 'Europe/Atlantis'")
        );

        let mut bad = s.clone();
        bad.rate_limit.anchor_day = Some(40);
        let errors = check_policy("billing", "monthly", &bad).unwrap_err();
        assert_eq!(errors[0].field, "rate_limit.anchor_day", "{errors:?}");

        let mut bad = s;
        bad.rate_limit.period = None;
        let errors = check_policy("billing", "monthly", &bad).unwrap_err();
        assert!(
            errors[0].message.contains("period is required"),
            "{errors:?}"
        );
    }

    #[test]
    fn the_core_rules_are_reported_on_the_request_fields() {
        let mut s = spec(&[("user", None)], UnitName::Minute, 100);
        s.rate_limit.burst = Some(10);
        let errors = check_policy("api", "p", &s).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "rate_limit.burst", "{errors:?}");
        assert!(
            errors[0]
                .message
                .contains("burst applies only to algorithm gcra"),
            "{errors:?}"
        );

        // Outside the exact domain: a gcra bucket two million years deep.
        let mut s = spec(&[("user", None)], UnitName::Year, 1);
        s.rate_limit.algorithm = Some(AlgorithmName::Gcra);
        s.rate_limit.burst = Some(2_000_000);
        let errors = check_policy("api", "p", &s).unwrap_err();
        assert_eq!(errors[0].field, "rate_limit", "{errors:?}");
        assert!(
            errors[0].message.contains("at most 1000000 years"),
            "{errors:?}"
        );

        let mut s = spec(&[("user", None)], UnitName::Minute, 100);
        s.rate_limit.unit = None;
        let errors = check_policy("api", "p", &s).unwrap_err();
        assert!(errors[0].message.contains("unit is required"), "{errors:?}");

        let mut s = spec(&[("ip", Some("10.0.0.1"))], UnitName::Minute, 1);
        s.share_threshold = true;
        let errors = check_policy("api", "p", &s).unwrap_err();
        assert_eq!(errors[0].field, "share_threshold", "{errors:?}");
    }

    #[test]
    fn bounds_are_checked_with_field_paths() {
        let mut s = spec(&[("", None), ("k", Some(""))], UnitName::Minute, 1);
        s.rate_limit.replaces = vec!["x\u{1}".into()];
        let errors = check_policy("api", "", &s).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "descriptor[0].key",
                "descriptor[1].value",
                "rate_limit.replaces[0]"
            ]
        );
        let s = spec(&[], UnitName::Minute, 1);
        assert_eq!(
            check_policy("api", "p", &s).unwrap_err()[0].field,
            "descriptor"
        );
    }

    #[test]
    fn envoy_files_flatten_with_their_full_keys_as_names() {
        let text = "domain: mongo_cps\ndescriptors:\n  - key: database\n    value: users\n    rate_limit:\n      unit: SECOND\n      requests_per_unit: 500\n    descriptors:\n      - key: x\n        rate_limit: {unit: minute, requests_per_unit: 1, name: named}\n";
        let document = parse_document("f.yaml", text).unwrap();
        let flat = flatten(&document);
        assert_eq!(flat[0].0, "mongo_cps.database_users");
        assert_eq!(flat[0].1.rate_limit.unit, Some(UnitName::Second));
        assert_eq!(flat[1].0, "named");
        assert_eq!(flat[1].1.descriptor.len(), 2);
        let again = assemble("mongo_cps", flat.iter().map(|(n, s)| (n.as_str(), s))).unwrap();
        to_core_domain("again", &again).unwrap();
    }

    #[test]
    fn domain_names_are_url_and_log_safe() {
        assert!(check_domain_name("api.v2:edge-1_x").is_ok());
        for bad in ["", "-x", "a b", "a/b", "é", &"x".repeat(MAX_NAME_LEN + 1)] {
            assert!(check_domain_name(bad).is_err(), "{bad:?}");
        }
    }
}
