//! What the admin API enforces, or offers, that utoipa cannot derive from the types, added
//! to the generated OpenAPI document: conditional requirements (OpenAPI 3.1's JSON Schema
//! `if`/`then`), and links from each create operation to the operations that use what it
//! returns, so that clients and stateful testers can follow them.
//!
//! What no schema can state stays in the server's checks alone, and is listed with its
//! reason in `schemathesis.toml`: a lease at most the burst, a GCRA bucket at most a
//! million years deep, an expiry in the future, a policy file's YAML.

use serde_json::{Value, json};

/// Adds the rules and links to `doc`, the document utoipa generated.
pub(crate) fn add(doc: &mut Value) {
    if let Some(spec) = doc.pointer_mut("/components/schemas/RateLimitSpec") {
        // The time zones are the bundled database's: a schema can list them all.
        if let Some(zone) = spec.pointer_mut("/properties/time_zone") {
            let names = tollgate_core::calendar::zone_names();
            zone["enum"] = json!(names.iter().map(Some).chain([None]).collect::<Vec<_>>());
        }
        let quota =
            json!({"required": ["algorithm"], "properties": {"algorithm": {"const": "quota"}}});
        let concurrency = json!({"required": ["algorithm"], "properties": {"algorithm": {"const": "concurrency"}}});
        spec["allOf"] = json!([
            {
                "description": "unlimited: true takes no unit, algorithm, burst or period; otherwise algorithm quota requires period (and no unit), algorithm concurrency max_in_flight (and no unit or requests_per_unit, consistency global only), any other algorithm unit",
                "if": {"required": ["unlimited"], "properties": {"unlimited": {"const": true}}},
                "then": {"properties": {
                    "unit": {"type": "null"},
                    "algorithm": {"type": "null"},
                    "burst": {"type": "null"},
                    "period": {"type": "null"}
                }},
                "else": {
                    "if": quota,
                    "then": {
                        "required": ["period"],
                        "properties": {"period": {"not": {"type": "null"}}, "unit": {"type": "null"}}
                    },
                    "else": {
                        "if": concurrency,
                        "then": {
                            "required": ["max_in_flight"],
                            "properties": {
                                "max_in_flight": {"not": {"type": "null"}},
                                "unit": {"type": "null"},
                                "requests_per_unit": {"type": "null"},
                                "consistency": {"enum": ["global", null]}
                            }
                        },
                        "else": {"required": ["unit"], "properties": {"unit": {"not": {"type": "null"}}}}
                    }
                }
            },
            {
                "description": "max_in_flight applies only to algorithm concurrency",
                "if": {"not": concurrency},
                "then": {"properties": {"max_in_flight": {"type": "null"}}}
            },
            {
                "description": "period, time_zone and anchor_day apply only to algorithm quota",
                "if": {"not": quota},
                "then": {"properties": {
                    "period": {"type": "null"},
                    "time_zone": {"type": "null"},
                    "anchor_day": {"type": "null"}
                }}
            },
            {
                "description": "anchor_day applies only to period month",
                "if": {"not": {"required": ["period"], "properties": {"period": {"const": "month"}}}},
                "then": {"properties": {"anchor_day": {"type": "null"}}}
            },
            {
                "description": "burst applies only to algorithm gcra",
                "if": {"not": {"required": ["algorithm"], "properties": {"algorithm": {"const": "gcra"}}}},
                "then": {"properties": {"burst": {"type": "null"}}}
            },
            {
                "description": "lease applies only to consistency leased",
                "if": {"not": {"required": ["consistency"], "properties": {"consistency": {"const": "leased"}}}},
                "then": {"properties": {"lease": {"type": "null"}}}
            }
        ]);
    }
    let domain = json!({"domain": "$response.body#/name"});
    let policy = json!({"domain": "$request.path.domain", "policy": "$request.path.policy"});
    let key = json!({"id": "$response.body#/info/id"});
    let links = [
        (
            "/v1/admin/domains",
            "post",
            &["201"][..],
            vec![
                ("GetDomain", "get_domain", &domain),
                ("UpdateDomain", "update_domain", &domain),
                ("DeleteDomain", "delete_domain", &domain),
                ("GetDocument", "get_document", &domain),
                ("PutDocument", "put_document", &domain),
                ("ListPolicies", "list_policies", &domain),
                ("PutPolicy", "put_policy", &domain),
            ],
        ),
        (
            "/v1/admin/domains/{domain}/policies/{policy}",
            "put",
            &["200", "201"][..],
            vec![
                ("GetPolicy", "get_policy", &policy),
                ("DeletePolicy", "delete_policy", &policy),
                ("PolicyHistory", "history", &policy),
            ],
        ),
        (
            "/v1/admin/keys",
            "post",
            &["201"][..],
            vec![("RevokeKey", "revoke_key", &key)],
        ),
    ];
    for (path, method, statuses, targets) in links {
        for status in statuses {
            let pointer = format!(
                "/paths/{}/{method}/responses/{status}",
                path.replace('~', "~0").replace('/', "~1")
            );
            if let Some(response) = doc.pointer_mut(&pointer) {
                let map: serde_json::Map<String, Value> = targets
                    .iter()
                    .map(|(name, operation, parameters)| {
                        (
                            (*name).to_owned(),
                            json!({"operationId": operation, "parameters": parameters}),
                        )
                    })
                    .collect();
                response["links"] = Value::Object(map);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    #[test]
    fn every_link_names_an_operation_of_the_document() {
        let doc: Value = serde_json::from_str(&crate::openapi_json()).unwrap();
        let mut operations = std::collections::BTreeSet::new();
        let mut links = Vec::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                operations.insert(operation["operationId"].as_str().unwrap().to_owned());
                for response in operation["responses"].as_object().unwrap().values() {
                    if let Some(l) = response.get("links").and_then(Value::as_object) {
                        links.extend(
                            l.values()
                                .map(|v| v["operationId"].as_str().unwrap().to_owned()),
                        );
                    }
                }
            }
        }
        assert!(links.len() >= 11, "{links:?}");
        for link in links {
            assert!(
                operations.contains(&link),
                "link to unknown operation {link}"
            );
        }
        assert!(
            doc.pointer("/components/schemas/RateLimitSpec/allOf/0/if")
                .is_some()
        );
    }
}
