//! `tollgate policy validate PATH...`: every error, with file, line and field.

use std::process::ExitCode;

use crate::cli::ValidateArgs;
use tollgate_admin::policies;

/// Validates every path; prints one line per valid file and one per error.
pub fn run(args: &ValidateArgs) -> ExitCode {
    let mut files = Vec::new();
    let mut failed = false;
    for path in &args.paths {
        match policies::read_files(path) {
            Ok(found) if found.is_empty() => {
                eprintln!("error: {}: no *.yaml or *.yml files", path.display());
                failed = true;
            }
            Ok(found) => files.extend(found),
            Err(e) => {
                eprintln!("error: {e:#}");
                failed = true;
            }
        }
    }
    match policies::build(&files) {
        Ok(set) => {
            for (name, _) in &files {
                if let Some(domain) = set.domains().find(|d| d.source() == name) {
                    println!(
                        "ok: {name} (domain '{}', {} policies)",
                        domain.name(),
                        domain.policies().len()
                    );
                }
            }
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
