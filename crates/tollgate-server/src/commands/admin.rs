//! `tollgate policy apply | get | list | delete`: clients of a running server's admin API,
//! so that scripts and GitOps pipelines push policy files the way operators click.

use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::Value;
use tollgate_control::PolicyDocument;
use tollgate_control::document;

use tollgate_client::AdminClient;

use crate::cli::{AdminArgs, ApplyArgs, DeleteArgs, GetArgs, ListArgs};
use tollgate_admin::rest::segment;

fn admin(args: &AdminArgs) -> anyhow::Result<AdminClient> {
    Ok(AdminClient::new(
        &args.admin,
        args.key.as_deref(),
        args.ca_file.as_deref(),
    )?)
}

/// A document in canonical form (policies sorted by name, every limit named), as YAML,
/// so that two documents meaning the same thing print the same.
fn canonical(document: &PolicyDocument) -> String {
    let mut policies = document::flatten(document);
    policies.sort_by(|a, b| a.0.cmp(&b.0));
    document::assemble(
        &document.domain,
        policies.iter().map(|(n, s)| (n.as_str(), s)),
    )
    .ok()
    .and_then(|d| yaml_serde::to_string(&d).ok())
    .unwrap_or_default()
}

/// `tollgate policy apply`.
pub async fn apply(args: &ApplyArgs) -> anyhow::Result<ExitCode> {
    let admin = admin(&args.admin)?;
    let mut files = Vec::new();
    for path in &args.paths {
        files.extend(tollgate_admin::policies::read_files(path)?);
    }
    // Every file must be valid before anything is pushed.
    let mut parsed = Vec::new();
    let mut invalid = false;
    for (name, text) in &files {
        match document::parse_document(name, text) {
            Ok(d) => parsed.push((name, text, d)),
            Err(e) => {
                eprintln!("{e}");
                invalid = true;
            }
        }
    }
    if invalid {
        return Ok(ExitCode::from(1));
    }
    for (name, text, new) in parsed {
        let path = format!("/v1/admin/domains/{}/document", segment(&new.domain));
        let (status, body) = admin.send(admin.http().get(admin.url(&path))).await?;
        let current = match status {
            200 => serde_json::from_value::<PolicyDocument>(body)
                .context("the admin API returned a document this client cannot read")?,
            404 => PolicyDocument {
                domain: new.domain.clone(),
                descriptors: Vec::new(),
            },
            _ => bail!("{name}: {}", admin.refusal(status, &body)),
        };
        let (old_text, new_text) = (canonical(&current), canonical(&new));
        if old_text == new_text && status == 200 {
            println!("{name}: domain '{}' unchanged", new.domain);
            continue;
        }
        let diff = similar::TextDiff::from_lines(&old_text, &new_text);
        println!(
            "{}",
            diff.unified_diff()
                .context_radius(3)
                .header(&format!("{} (server)", new.domain), name)
        );
        if args.dry_run {
            continue;
        }
        let report = admin
            .ok(admin
                .http()
                .put(admin.url(&path))
                .header("content-type", "application/yaml")
                .body(text.clone()))
            .await
            .with_context(|| format!("{name}: not applied"))?;
        let list = |k: &str| {
            report[k]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        };
        println!(
            "{name}: applied to domain '{}' at revision {} (created: [{}], updated: [{}], deleted: [{}])",
            new.domain,
            report["revision"],
            list("created"),
            list("updated"),
            list("deleted")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `tollgate policy get`.
pub async fn get(args: &GetArgs) -> anyhow::Result<ExitCode> {
    let admin = admin(&args.admin)?;
    match &args.policy {
        None => {
            let path = format!("/v1/admin/domains/{}/document", segment(&args.domain));
            let body = admin.ok(admin.http().get(admin.url(&path))).await?;
            let document: PolicyDocument = serde_json::from_value(body)?;
            print!("{}", canonical(&document));
        }
        Some(policy) => {
            let path = format!(
                "/v1/admin/domains/{}/policies/{}",
                segment(&args.domain),
                segment(policy)
            );
            let body = admin.ok(admin.http().get(admin.url(&path))).await?;
            println!("{}", serde_json::to_string_pretty(&body)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Every item of a paged listing.
async fn all_pages(admin: &AdminClient, path: &str) -> anyhow::Result<Vec<Value>> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => admin.url(&format!("{path}?limit=500&cursor={c}")),
            None => admin.url(&format!("{path}?limit=500")),
        };
        let page = admin.ok(admin.http().get(url)).await?;
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok(items),
        }
    }
}

/// `tollgate policy list`.
pub async fn list(args: &ListArgs) -> anyhow::Result<ExitCode> {
    let admin = admin(&args.admin)?;
    match &args.domain {
        None => {
            for d in all_pages(&admin, "/v1/admin/domains").await? {
                let source = match d["file"].as_str() {
                    Some(f) => format!("file {f}"),
                    None => format!(
                        "database, {} policies, revision {}",
                        d["policy_count"], d["revision"]
                    ),
                };
                println!("{}\t{source}", d["name"].as_str().unwrap_or("?"));
            }
        }
        Some(domain) => {
            let path = format!("/v1/admin/domains/{}/policies", segment(domain));
            for p in all_pages(&admin, &path).await? {
                let descriptor: Vec<String> = p["descriptor"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| match e["value"].as_str() {
                        Some(v) => format!("{}={v}", e["key"].as_str().unwrap_or("?")),
                        None => e["key"].as_str().unwrap_or("?").to_owned(),
                    })
                    .collect();
                let limit = &p["rate_limit"];
                let rule = if limit["unlimited"].as_bool() == Some(true) {
                    "unlimited".to_owned()
                } else {
                    format!(
                        "{}/{}",
                        limit["requests_per_unit"].as_u64().unwrap_or(0),
                        limit["unit"].as_str().unwrap_or("?")
                    )
                };
                println!(
                    "{}\t{}\t{rule}\trevision {}",
                    p["name"].as_str().unwrap_or("?"),
                    descriptor.join(","),
                    p["revision"]
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `tollgate policy delete`.
pub async fn delete(args: &DeleteArgs) -> anyhow::Result<ExitCode> {
    let admin = admin(&args.admin)?;
    let path = match &args.policy {
        Some(policy) => format!(
            "/v1/admin/domains/{}/policies/{}",
            segment(&args.domain),
            segment(policy)
        ),
        None => format!("/v1/admin/domains/{}?cascade=true", segment(&args.domain)),
    };
    admin.ok(admin.http().delete(admin.url(&path))).await?;
    match &args.policy {
        Some(p) => println!("deleted policy '{p}' of domain '{}'", args.domain),
        None => println!("deleted domain '{}' and its policies", args.domain),
    }
    Ok(ExitCode::SUCCESS)
}
