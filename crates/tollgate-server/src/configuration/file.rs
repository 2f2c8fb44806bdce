//! The TOML configuration file and the command line, layered by clap: a file's values
//! become the defaults of the arguments they name.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{CommandFactory, FromArgMatches, ValueHint};

use crate::cli::Cli;

/// Parses the command line (and the environment, and the `--config` file of the
/// subcommands that take one) into the [`Cli`]. A usage error, `--help` or `--version` is
/// a [`clap::Error`] inside the error, for `main` to print and exit with.
pub fn parse_command_line() -> anyhow::Result<Cli> {
    parse_from(std::env::args_os())
}

/// [`parse_command_line`] over given arguments.
pub fn parse_from(args: impl IntoIterator<Item = impl Into<OsString>>) -> anyhow::Result<Cli> {
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut command = Cli::command();
    if let Some((subcommand, path)) = config_path(&args) {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
        let file = ConfigFile::parse(&path, &text)?;
        let target = command
            .find_subcommand(&subcommand)
            .context("no such subcommand")?;
        let defaults = file.defaults_for(target)?;
        command = command.mut_subcommand(&subcommand, |mut c| {
            for (key, values) in defaults {
                let values: Vec<clap::builder::OsStr> =
                    values.into_iter().map(Into::into).collect();
                c = c.mut_arg(key, |a| a.default_values(values));
            }
            c
        });
    }
    let matches = command.try_get_matches_from(args)?;
    Ok(Cli::from_arg_matches(&matches)?)
}

/// The subcommand and the `--config` file named on the command line or in the
/// environment, found by a lenient first parse.
fn config_path(args: &[OsString]) -> Option<(String, PathBuf)> {
    let matches = Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(args)
        .ok()?;
    let (name, sub) = matches.subcommand()?;
    let path = sub.try_get_one::<PathBuf>("config").ok().flatten()?;
    Some((name.to_owned(), path.clone()))
}

/// A TOML configuration file: flat `key = value` lines, one per option.
struct ConfigFile {
    path: PathBuf,
    text: String,
    table: toml::Table,
}

impl ConfigFile {
    fn parse(path: &Path, text: &str) -> anyhow::Result<Self> {
        let table: toml::Table = toml::from_str(text)
            .with_context(|| format!("invalid configuration file {}", path.display()))?;
        let known = serve_keys();
        for key in table.keys() {
            if !known.iter().any(|k| k == key) {
                bail!(
                    "{}:{}: unknown key `{key}` (known keys: {})",
                    path.display(),
                    line_of(text, key),
                    known.join(", ")
                );
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            text: text.to_owned(),
            table,
        })
    }

    /// The file's values as defaults of `command`'s arguments, each checked by the
    /// argument's own parser; keys `command` does not take (serve's, for `migrate`) are
    /// left out. Paths are relative to the file.
    fn defaults_for(&self, command: &clap::Command) -> anyhow::Result<Vec<(String, Vec<String>)>> {
        let dir = self.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut defaults = Vec::new();
        for (key, value) in &self.table {
            let Some(arg) = command.get_arguments().find(|a| a.get_id() == key.as_str()) else {
                continue;
            };
            let at = || {
                format!(
                    "{}:{}: `{key}`",
                    self.path.display(),
                    line_of(&self.text, key)
                )
            };
            let Some(values) = scalars(value) else {
                bail!(
                    "{} must be a string, a number, a boolean or a list of them",
                    at()
                );
            };
            let is_path = matches!(
                arg.get_value_hint(),
                ValueHint::FilePath | ValueHint::DirPath | ValueHint::AnyPath
            );
            let values: Vec<String> = values
                .into_iter()
                .map(|v| match is_path && Path::new(&v).is_relative() {
                    true => dir.join(v).display().to_string(),
                    false => v,
                })
                .collect();
            if values.len() != 1 && !matches!(arg.get_action(), clap::ArgAction::Append) {
                bail!("{} takes one value, not a list", at());
            }
            for v in &values {
                check_value(arg, v).map_err(|why| anyhow::anyhow!("{}: {why}", at()))?;
            }
            defaults.push((key.clone(), values));
        }
        Ok(defaults)
    }
}

/// Runs `value` through `arg`'s own parser, as if it had been given on the command line.
fn check_value(arg: &clap::Arg, value: &str) -> Result<(), String> {
    if matches!(
        arg.get_action(),
        clap::ArgAction::SetTrue | clap::ArgAction::SetFalse
    ) {
        return match value {
            "true" | "false" => Ok(()),
            _ => Err(format!("must be true or false, not '{value}'")),
        };
    }
    let long = arg.get_long().unwrap_or(arg.get_id().as_str());
    let probe = clap::Command::new("tollgate")
        .no_binary_name(true)
        .arg(arg.clone().required(false).env(None::<&str>));
    match probe.try_get_matches_from([format!("--{long}={value}")]) {
        Ok(_) => Ok(()),
        Err(e) => {
            let text = e.to_string();
            Err(text
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_owned())
        }
    }
}

/// The keys a configuration file may set: every option of `serve` but `config`.
fn serve_keys() -> Vec<String> {
    let command = Cli::command();
    let serve = command.find_subcommand("serve");
    serve
        .into_iter()
        .flat_map(|s| s.get_arguments())
        .map(|a| a.get_id().to_string())
        .filter(|id| id != "config" && id != "help")
        .collect()
}

/// The 1-based line where `key` is set (1 when it cannot be found).
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(1, |i| i + 1)
}

/// A TOML value as the strings a command line would carry.
fn scalars(value: &toml::Value) -> Option<Vec<String>> {
    match value {
        toml::Value::String(s) => Some(vec![s.clone()]),
        toml::Value::Integer(i) => Some(vec![i.to_string()]),
        toml::Value::Float(f) => Some(vec![f.to_string()]),
        toml::Value::Boolean(b) => Some(vec![b.to_string()]),
        toml::Value::Datetime(d) => Some(vec![d.to_string()]),
        toml::Value::Array(items) => items
            .iter()
            .map(|v| match v {
                toml::Value::Array(_) | toml::Value::Table(_) => None,
                v => scalars(v).map(|mut s| s.remove(0)),
            })
            .collect(),
        toml::Value::Table(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::StoreSettings;
    use crate::configuration::settings::serve;

    #[test]
    fn flags_win_over_the_file_and_paths_are_relative_to_it() {
        let dir = std::env::temp_dir().join(format!("tollgate-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("tollgate.toml");
        std::fs::write(
            &cfg,
            "http_addr = \"127.0.0.1:9000\"\ngrpc_addr = \"127.0.0.1:9002\"\npolicies = \"pol\"\nmax_keys = 5\nshadow_mode = true\n",
        )
        .unwrap();
        let s = serve(&[
            "--config",
            cfg.to_str().unwrap(),
            "--http-addr",
            "127.0.0.1:9001",
        ])
        .unwrap();
        assert_eq!(s.options.listen.http_addr.port(), 9001);
        assert_eq!(s.options.listen.grpc_addr.port(), 9002);
        assert_eq!(s.options.policies.policies, Some(dir.join("pol")));
        assert_eq!(s.store, StoreSettings::Memory { max_keys: 5 });
        assert!(s.options.limiter.shadow_mode);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_file_line_and_key() {
        let path = Path::new("/etc/tollgate.toml");
        let err = ConfigFile::parse(path, "# a comment\nhttp_adr = \"127.0.0.1:9000\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("/etc/tollgate.toml:2: unknown key `http_adr`"),
            "{err}"
        );
        assert!(err.contains("http_addr"), "lists the known keys: {err}");
        let err = ConfigFile::parse(path, "http_addr = [\"x\"\n")
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("invalid configuration file"),
            "{err:#}"
        );
    }
}
