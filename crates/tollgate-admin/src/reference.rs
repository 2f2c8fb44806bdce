//! The admin API reference (`docs/admin-api.md`), rendered from the OpenAPI document so
//! that the two cannot disagree. A unit test keeps the committed files current.

use serde_json::Value;

fn schema_name(schema: &Value) -> String {
    if let Some(r) = schema["$ref"].as_str() {
        return format!("`{}`", r.rsplit('/').next().unwrap_or(r));
    }
    if let Some(items) = schema.get("items") {
        return format!("array of {}", schema_name(items));
    }
    match &schema["type"] {
        Value::String(t) => format!("`{t}`"),
        Value::Array(ts) => {
            let names: Vec<&str> = ts.iter().filter_map(Value::as_str).collect();
            format!("`{}`", names.join(" | "))
        }
        _ => "object".to_owned(),
    }
}

/// The reference as Markdown.
pub fn markdown(openapi: &str) -> String {
    let doc: Value = serde_json::from_str(openapi).unwrap_or(Value::Null);
    let mut out = String::new();
    out.push_str("# Admin API reference\n\n");
    out.push_str(
        "Generated from the OpenAPI document (`GET /v1/admin/openapi.json`, committed as \
         [admin-api.openapi.json](admin-api.openapi.json)); do not edit by hand: \
         `TOLLGATE_BLESS=1 cargo test -p tollgate-admin admin_reference` rewrites both.\n\n",
    );
    if let Some(d) = doc["info"]["description"].as_str() {
        out.push_str(d);
        out.push_str("\n\n");
    }
    out.push_str("GraphQL (`POST /graphql`, GraphiQL on `GET /graphql`, subscriptions over WebSocket at `/graphql/ws`) offers the same operations; its schema is introspectable.\n");
    out.push_str("\nEvery operation but `GET /v1/admin/openapi.json` and the GraphiQL page needs `Authorization: Bearer <API key or JWT>` (a WebSocket may send it in `connection_init` instead): 401 without valid credentials, 403 outside the caller's role or domains, 429 after too many requests or failed authentications from one address. Roles, scopes and token rules: [design/authn-authz.md](design/authn-authz.md).\n");
    let Some(paths) = doc["paths"].as_object() else {
        return out;
    };
    for (path, item) in paths {
        let Some(methods) = item.as_object() else {
            continue;
        };
        for (method, op) in methods {
            out.push_str(&format!("\n## `{} {path}`\n\n", method.to_uppercase()));
            if let Some(s) = op["summary"].as_str() {
                out.push_str(s);
                out.push_str("\n\n");
            }
            if let Some(d) = op["description"].as_str() {
                out.push_str(d);
                out.push_str("\n\n");
            }
            if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
                out.push_str("| parameter | in | required | type | description |\n| --- | --- | --- | --- | --- |\n");
                for p in params {
                    let mut ty = schema_name(&p["schema"]);
                    if let Some(pattern) = p["schema"]["pattern"].as_str() {
                        ty.push_str(&format!(", pattern `{pattern}`"));
                    }
                    // A `|` inside a cell would end it.
                    let ty = ty.replace('|', "\\|");
                    out.push_str(&format!(
                        "| `{}` | {} | {} | {ty} | {} |\n",
                        p["name"].as_str().unwrap_or("?"),
                        p["in"].as_str().unwrap_or("?"),
                        if p["required"].as_bool() == Some(true) {
                            "yes"
                        } else {
                            "no"
                        },
                        p["description"].as_str().unwrap_or("").replace('\n', " ")
                    ));
                }
                out.push('\n');
            }
            if let Some(content) = op["requestBody"]["content"].as_object() {
                for (media, body) in content {
                    out.push_str(&format!(
                        "Request body ({media}): {}\n\n",
                        schema_name(&body["schema"])
                    ));
                }
            }
            if let Some(responses) = op["responses"].as_object() {
                out.push_str("| status | meaning | body |\n| --- | --- | --- |\n");
                for (status, r) in responses {
                    let body = r["content"]
                        .as_object()
                        .and_then(|c| c.iter().next())
                        .map(|(media, b)| format!("{} ({media})", schema_name(&b["schema"])))
                        .unwrap_or_default();
                    out.push_str(&format!(
                        "| {status} | {} | {body} |\n",
                        r["description"].as_str().unwrap_or("")
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    #[test]
    fn admin_reference_is_current() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs");
        let json = super::super::openapi_json() + "\n";
        let markdown = super::markdown(&json);
        let files = [
            (docs.join("admin-api.openapi.json"), json),
            (docs.join("admin-api.md"), markdown),
        ];
        if std::env::var_os("TOLLGATE_BLESS").is_some() {
            for (path, text) in &files {
                std::fs::write(path, text).unwrap();
            }
        }
        for (path, text) in &files {
            let committed = std::fs::read_to_string(path).unwrap_or_default();
            assert!(
                committed == *text,
                "{} is out of date: run `TOLLGATE_BLESS=1 cargo test -p tollgate-admin admin_reference`",
                path.display()
            );
        }
    }
}
