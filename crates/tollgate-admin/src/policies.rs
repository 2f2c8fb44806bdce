//! Reading policy files from disk into a [`PolicySet`]: a file, or every `*.yaml`/`*.yml`
//! file of a directory (hidden files skipped, sorted by name for stable error output).

use std::path::{Path, PathBuf};

use anyhow::Context;
use tollgate_core::{PolicyError, PolicySet};

/// The example policies built into the binary, served when no `--policies` is given.
pub const BUILTIN_NAME: &str = "<built-in examples/policies/api.yaml>";
/// Contents of the built-in example.
pub const BUILTIN: &str = include_str!("../../../examples/policies/api.yaml");

/// Whether a directory entry is a policy file: `*.yaml` or `*.yml`, not hidden, not a
/// directory (symlinks are followed).
pub fn is_policy_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .is_none_or(|n| n.to_string_lossy().starts_with('.'));
    let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
    yaml && !hidden && !path.is_dir()
}

/// Policy files found under `path`, as `(display name, contents)`.
pub fn read_files(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read policies at {}", path.display()))?;
    let files: Vec<PathBuf> = if meta.is_dir() {
        let mut files = Vec::new();
        for entry in
            std::fs::read_dir(path).with_context(|| format!("cannot list {}", path.display()))?
        {
            let entry = entry.with_context(|| format!("cannot list {}", path.display()))?;
            let p = entry.path();
            if is_policy_file(&p) {
                files.push(p);
            }
        }
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            Ok((p.display().to_string(), text))
        })
        .collect()
}

/// The policy files `serve` starts from: those at `path`, or the built-in examples.
pub fn read_sources(path: Option<&Path>) -> anyhow::Result<Vec<(String, String)>> {
    match path {
        Some(p) => read_files(p),
        None => Ok(vec![(BUILTIN_NAME.to_owned(), BUILTIN.to_owned())]),
    }
}

/// Parses files read by [`read_files`].
pub fn build(files: &[(String, String)]) -> Result<PolicySet, Vec<PolicyError>> {
    PolicySet::from_files(files.iter().map(|(n, t)| (n.as_str(), t.as_str())))
}

/// Loads the policies `serve` should start with: from `path`, or the built-in examples.
pub fn load(path: Option<&Path>) -> anyhow::Result<PolicySet> {
    let files = read_sources(path)?;
    build(&files).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        anyhow::anyhow!("invalid policies:\n{}", list.join("\n"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_example_is_valid() {
        let set = load(None).unwrap();
        assert!(set.domain("api").is_some());
    }

    #[test]
    fn a_directory_loads_yaml_files_only() {
        let dir = std::env::temp_dir().join(format!("tollgate-pol-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.yaml"), "domain: a\n").unwrap();
        std::fs::write(dir.join("b.yml"), "domain: b\n").unwrap();
        std::fs::write(dir.join(".hidden.yaml"), "not: valid\n").unwrap();
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let set = load(Some(&dir)).unwrap();
        assert_eq!(set.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
