//! `tollgate check`: one decision from a running server, printed for people.

use std::process::ExitCode;

use tollgate_api::{CheckRequest, CheckResponse, DescriptorRequest, EntryRequest};
use tollgate_client::CheckClient;

use crate::cli::CheckArgs;

/// Parses `k=v,k2=v2` into a descriptor.
fn parse_descriptor(text: &str) -> anyhow::Result<DescriptorRequest<'_>> {
    let entries = super::descriptor_pairs(text)?
        .into_iter()
        .map(|(key, value)| EntryRequest {
            key: key.into(),
            value: value.into(),
        })
        .collect();
    Ok(DescriptorRequest {
        entries,
        hits: None,
        limit: None,
    })
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
    let body = CheckRequest {
        domain: args.domain.as_str().into(),
        descriptors,
        hits: Some(args.hits),
    };
    let client = CheckClient::new(&args.server, args.token.as_deref(), args.ca_file.as_deref())?;
    let (answer, headers) = client.check(&body).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print_summary(args, &answer, &headers);
    }
    Ok(answer.allowed)
}

fn print_summary(args: &CheckArgs, answer: &CheckResponse, headers: &reqwest::header::HeaderMap) {
    println!(
        "{} (domain {}, hits {})",
        if answer.allowed { "ALLOWED" } else { "DENIED" },
        args.domain,
        args.hits
    );
    for (descriptor, s) in args.descriptors.iter().zip(&answer.statuses) {
        let verdict = if s.allowed { "ok" } else { "over limit" };
        let mut line = format!("  {descriptor}: {verdict}");
        match &s.policy {
            None => line.push_str(", no policy matched"),
            Some(policy) => {
                line.push_str(&format!(", policy {policy}"));
                if s.unlimited {
                    line.push_str(", unlimited");
                }
                if let (Some(rpu), Some(unit)) = (s.requests_per_unit, &s.unit) {
                    line.push_str(&format!(", {rpu}/{unit}"));
                } else if let (false, Some(max)) = (s.unlimited, s.limit) {
                    line.push_str(&format!(", at most {max} in flight"));
                }
                if let Some(r) = s.remaining {
                    line.push_str(&format!(", {r} left"));
                }
                if s.reset_after_ms > 0 {
                    line.push_str(&format!(
                        ", full again in {:.3}s",
                        s.reset_after_ms as f64 / 1000.0
                    ));
                }
                if let Some(ms) = s.retry_after_ms {
                    line.push_str(&format!(", retry in {:.3}s", ms as f64 / 1000.0));
                }
                if s.shadow_denied {
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
        assert_eq!(d.entries[1].key, "user");
        assert_eq!(d.entries[1].value, "42");
        assert!(parse_descriptor("novalue").is_err());
        assert!(parse_descriptor("=x").is_err());
    }
}
