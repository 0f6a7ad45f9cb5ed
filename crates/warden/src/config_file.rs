//! `warden start --config FILE`: a YAML file whose keys are the flags of
//! `warden start` (`listen-addr: 0.0.0.0:3080`, `labels: [env=prod]`).
//! Every flag has a key because the keys *are* the flags: the file is
//! turned into arguments, added only for flags the command line (or the
//! environment) did not set, so flags override the file.

use anyhow::{bail, Context};
use clap::parser::ValueSource;
use clap::{ArgMatches, Command};
use std::ffi::OsString;

/// Keys that never come from a file: the file itself, and the one-shot
/// `--print-config`.
const NOT_IN_FILES: &[&str] = &["config", "print-config", "help", "version"];

/// `args` with the settings of `warden start --config FILE` added; other
/// command lines come back unchanged (and so do ones clap will reject, so
/// that clap's own error is what the user sees).
pub fn merge(cli: Command, args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let Ok(matches) = cli.clone().try_get_matches_from(&args) else {
        return Ok(args);
    };
    let Some(("start", start)) = matches.subcommand() else {
        return Ok(args);
    };
    let Some(path) = start.get_one::<std::path::PathBuf>("config") else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let extra = file_args(&start_command(cli), start, &text)
        .with_context(|| format!("in {}", path.display()))?;
    let mut args = args;
    // `start` takes no positional arguments: appended flags are its own.
    args.extend(extra);
    Ok(args)
}

fn start_command(mut cli: Command) -> Command {
    cli.build();
    cli.find_subcommand("start")
        .cloned()
        .expect("warden has a start subcommand")
}

/// The arguments the file's settings stand for, leaving out flags that
/// `given` already has from the command line or the environment.
fn file_args(start: &Command, given: &ArgMatches, text: &str) -> anyhow::Result<Vec<OsString>> {
    let doc: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| anyhow::anyhow!("not valid YAML: {e}"))?;
    let map = match doc {
        serde_norway::Value::Mapping(m) => m,
        serde_norway::Value::Null => return Ok(Vec::new()),
        _ => bail!("expected a mapping of flag names to values, e.g. 'listen-addr: 0.0.0.0:3080'"),
    };
    let keys = || {
        start
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|l| !NOT_IN_FILES.contains(l))
            .collect::<Vec<_>>()
    };
    let mut out = Vec::new();
    for (key, value) in map {
        let Some(key) = key.as_str().map(|k| k.replace('_', "-")) else {
            bail!("keys must be flag names, e.g. listen-addr");
        };
        let Some(arg) = start
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && !NOT_IN_FILES.contains(&key.as_str()))
        else {
            bail!(
                "unknown key {key:?}; the keys are the flags of 'warden start': {}",
                keys().join(", ")
            );
        };
        if matches!(
            given.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let flag = format!("--{key}");
        let takes_value = arg.get_action().takes_values();
        let scalar = |v: &serde_norway::Value| -> anyhow::Result<String> {
            Ok(match v {
                serde_norway::Value::String(s) => s.clone(),
                serde_norway::Value::Number(n) => n.to_string(),
                serde_norway::Value::Bool(b) => b.to_string(),
                _ => bail!("{key}: expected a string, number or list of them"),
            })
        };
        match (&value, takes_value) {
            (serde_norway::Value::Bool(true), false) => out.push(flag.into()),
            (serde_norway::Value::Bool(false), false) | (serde_norway::Value::Null, _) => {}
            (_, false) => bail!("{key}: expected true or false"),
            (serde_norway::Value::Sequence(items), true) => {
                for item in items {
                    out.push(OsString::from(&flag));
                    out.push(scalar(item)?.into());
                }
            }
            (v, true) => {
                out.push(OsString::from(&flag));
                out.push(scalar(v)?.into());
            }
        }
    }
    Ok(out)
}

/// The settings `warden start` runs with (defaults, file, environment and
/// flags combined), as a config file; secrets are not shown.
pub fn effective(cli: Command, args: &[OsString]) -> anyhow::Result<String> {
    let matches = cli.clone().try_get_matches_from(args)?;
    let Some(("start", given)) = matches.subcommand() else {
        bail!("--print-config belongs to 'warden start'");
    };
    let start = start_command(cli);
    let mut map = serde_norway::Mapping::new();
    for arg in start.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if NOT_IN_FILES.contains(&long) {
            continue;
        }
        let id = arg.get_id().as_str();
        let value = if !arg.get_action().takes_values() {
            serde_norway::Value::Bool(given.get_flag(id))
        } else {
            let values: Vec<String> = given
                .get_raw(id)
                .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            if long == "token" && !values.is_empty() {
                serde_norway::Value::String("<redacted>".into())
            } else if matches!(long, "backend" | "audit-log") && values.len() == 1 {
                serde_norway::Value::String(warden_store::postgres::redact_url(&values[0]))
            } else {
                match values.len() {
                    0 => serde_norway::Value::Null,
                    1 if !matches!(arg.get_action(), clap::ArgAction::Append) => {
                        serde_norway::Value::String(values[0].clone())
                    }
                    _ => serde_norway::Value::Sequence(
                        values
                            .into_iter()
                            .map(serde_norway::Value::String)
                            .collect(),
                    ),
                }
            }
        };
        map.insert(serde_norway::Value::String(long.to_string()), value);
    }
    Ok(serde_norway::to_string(&map)?)
}
