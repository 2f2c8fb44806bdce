//! `tollgate check`: one decision from a running server, printed for people.

use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::cli::CheckArgs;

/// Parses `k=v,k2=v2` into JSON entries.
fn parse_descriptor(text: &str) -> anyhow::Result<Value> {
    let mut entries = Vec::new();
    for pair in text.split(',') {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("descriptor '{text}': '{pair}' is not key=value");
        };
        if key.is_empty() {
            bail!("descriptor '{text}': empty key in '{pair}'");
        }
        entries.push(json!({"key": key, "value": value}));
    }
    Ok(json!({ "entries": entries }))
}

/// Runs the command. Exit status: 0 allowed, 1 denied, 2 error.
pub async fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    match ask(args).await {
        Ok(allowed) => Ok(if allowed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(2))
        }
    }
}

async fn ask(args: &CheckArgs) -> anyhow::Result<bool> {
    let descriptors = args
        .descriptors
        .iter()
        .map(|d| parse_descriptor(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let body = json!({"domain": args.domain, "descriptors": descriptors, "hits": args.hits});
    let url = format!("{}/v1/check", args.server.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(super::admin::tls_client(args.ca_file.as_deref())?)
        .build()
        .context("cannot build the HTTP client")?;
    let mut request = client.post(&url).json(&body);
    if let Some(token) = &args.token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .context("the token must be visible ASCII")?;
        value.set_sensitive(true);
        request = request.header(reqwest::header::AUTHORIZATION, value);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {url} (is `tollgate serve` running?)"))?;
    let status = response.status();
    let headers = response.headers().clone();
    let answer: Value = response
        .json()
        .await
        .with_context(|| format!("{url} answered {status} without JSON"))?;
    if !status.is_success() {
        let detail = answer
            .get("detail")
            .and_then(Value::as_str)
            .unwrap_or("no detail");
        bail!("{url} answered {status}: {detail}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print_summary(args, &answer, &headers);
    }
    Ok(answer
        .get("allowed")
        .and_then(Value::as_bool)
        .unwrap_or(false))
}

fn print_summary(args: &CheckArgs, answer: &Value, headers: &reqwest::header::HeaderMap) {
    let allowed = answer
        .get("allowed")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    println!(
        "{} (domain {}, hits {})",
        if allowed { "ALLOWED" } else { "DENIED" },
        args.domain,
        args.hits
    );
    let empty = Vec::new();
    let statuses = answer
        .get("statuses")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    for (descriptor, s) in args.descriptors.iter().zip(statuses) {
        let field = |k: &str| s.get(k).filter(|v| !v.is_null());
        let verdict = if field("allowed").and_then(Value::as_bool).unwrap_or(false) {
            "ok"
        } else {
            "over limit"
        };
        let mut line = format!("  {descriptor}: {verdict}");
        match field("policy").and_then(Value::as_str) {
            None => line.push_str(", no policy matched"),
            Some(policy) => {
                line.push_str(&format!(", policy {policy}"));
                if field("unlimited").and_then(Value::as_bool).unwrap_or(false) {
                    line.push_str(", unlimited");
                }
                if let (Some(rpu), Some(unit)) = (
                    field("requests_per_unit"),
                    field("unit").and_then(Value::as_str),
                ) {
                    line.push_str(&format!(", {rpu}/{unit}"));
                }
                if let Some(r) = field("remaining") {
                    line.push_str(&format!(", {r} left"));
                }
                if let Some(ms) = field("reset_after_ms")
                    .and_then(Value::as_u64)
                    .filter(|&ms| ms > 0)
                {
                    line.push_str(&format!(", full again in {:.3}s", ms as f64 / 1000.0));
                }
                if let Some(ms) = field("retry_after_ms").and_then(Value::as_u64) {
                    line.push_str(&format!(", retry in {:.3}s", ms as f64 / 1000.0));
                }
                if field("shadow_denied")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                {
                    line.push_str(" (shadow mode: would deny)");
                }
            }
        }
        println!("{line}");
    }
    for name in ["ratelimit-policy", "ratelimit", "retry-after"] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            println!("  {name}: {v}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_parse_from_pairs() {
        let d = parse_descriptor("path=/login,user=42").unwrap();
        assert_eq!(d["entries"][1]["key"], "user");
        assert_eq!(d["entries"][1]["value"], "42");
        assert!(parse_descriptor("novalue").is_err());
        assert!(parse_descriptor("=x").is_err());
    }
}
