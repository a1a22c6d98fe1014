//! The shared options (`-C`, `--store`, `--json`, `--set`), each declared only on the
//! subcommands it applies to, so that a subcommand's `--help`, completions and man page
//! list what it takes and nothing else.
//!
//! They are also accepted before the subcommand (`mlbuild -C DIR build`, `mlbuild --json
//! history`), as they always were. Given there, `-C` and `--store` apply to the whole
//! invocation like `MLBUILD_STORE` does, whatever the subcommand; `--json` and `--set` are
//! refused for a subcommand that does not take them rather than silently ignored.
//!
//! Main functions: [`command`] (the clap command every parser and generator uses) and
//! [`parse`]. To scope a new subcommand, add its path to [`scope`]; one not listed there
//! takes all four options.

use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use crate::cli::Cli;

/// The help heading of the shared options, apart from a subcommand's own.
const HEADING: &str = "Global options";

/// Which shared options a subcommand takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope {
    /// `-C DIR`: paths and the workspace are found from this directory.
    pub dir: bool,
    /// `--store DIR`.
    pub store: bool,
    /// `--json`.
    pub json: bool,
    /// `--set KEY=VALUE`: the subcommand computes action keys from params.
    pub set: bool,
}

const ALL: Scope = Scope {
    dir: true,
    store: true,
    json: true,
    set: true,
};
const NONE: Scope = Scope {
    dir: false,
    store: false,
    json: false,
    set: false,
};
/// Commands that read the workspace and the store's history.
const STORE: Scope = Scope { set: false, ..ALL };
/// Commands that read the workspace (or files) but not the store.
const DIR: Scope = Scope {
    dir: true,
    json: true,
    ..NONE
};

/// The shared options of the subcommand at `path` (`"build"`, `"metrics diff"`).
pub fn scope(path: &str) -> Scope {
    match path {
        // They compute action keys, which `--set` changes.
        "build" | "status" | "why" | "audit" => ALL,
        "log" | "gc" | "fsck" | "stats" | "history" | "metrics show" | "metrics diff"
        | "params diff" | "params show" | "cache stats" | "exp show" => STORE,
        // Writes a file, so it prints no JSON.
        "metrics plot" => Scope {
            json: false,
            ..STORE
        },
        "query" | "graph" | "clean" | "key generate" | "verify" => DIR,
        // `--dir` is its own and is not resolved against `-C`; it has no workspace.
        "cache serve" => Scope { json: true, ..NONE },
        "rule" | "completions" | "man" => NONE,
        // Reads no workspace history, only the registry and the files it writes.
        "pull" => DIR,
        // Reads a build from the history; writes a workspace's BUILD.toml.
        "mlflow export" => STORE,
        "import dvc" => DIR,
        // Release channels: `promote` builds (so it takes `--set`); the others read or
        // append to channel logs.
        "promote" => ALL,
        "approve" | "rollback" | "rollout start" | "rollout advance" | "rollout abort"
        | "rollout status" | "channel list" | "channel show" | "channel history"
        | "channel verify" => STORE,
        // Writes YAML (or a file), so it prints no JSON.
        "channel render" => Scope {
            json: false,
            ..STORE
        },
        // A subcommand not listed yet keeps what every subcommand used to take.
        _ => ALL,
    }
}

fn directory_arg() -> Arg {
    Arg::new("directory")
        .short('C')
        .value_name("DIR")
        .value_parser(clap::value_parser!(PathBuf))
        .help("Run as if started in this directory")
        .help_heading(HEADING)
}

fn store_arg() -> Arg {
    Arg::new("store")
        .long("store")
        .value_name("DIR")
        .value_parser(clap::value_parser!(PathBuf))
        // Not clap's `env`: a value from the environment counts as typed, so every usage
        // line then showed `--store <DIR>` as if it were required. See `parse`.
        .help(
            "The store directory (default: `MLBUILD_STORE`, else `[workspace] store` in \
             MLBUILD.toml, else the user's cache directory)",
        )
        .help_heading(HEADING)
}

fn json_arg() -> Arg {
    Arg::new("json")
        .long("json")
        .action(ArgAction::SetTrue)
        .help("Print machine-readable JSON on stdout instead of text")
        .help_heading(HEADING)
}

fn set_arg() -> Arg {
    Arg::new("set")
        .long("set")
        .value_name("KEY=VALUE")
        .action(ArgAction::Append)
        .help(
            "Override a params-file key for this run, e.g. `--set train.lr=0.1` (repeatable; \
             the value is TOML: `0.1`, `'\"adam\"'`, `[1, 2]`). Only targets using the key change",
        )
        .help_heading(HEADING)
}

fn add(mut cmd: clap::Command, scope: Scope) -> clap::Command {
    if scope.dir {
        cmd = cmd.arg(directory_arg());
    }
    if scope.store {
        cmd = cmd.arg(store_arg());
    }
    if scope.json {
        cmd = cmd.arg(json_arg());
    }
    if scope.set {
        cmd = cmd.arg(set_arg());
    }
    cmd
}

/// Adds the shared options to every leaf subcommand below `cmd` by its [`scope`].
fn scope_subcommands(mut cmd: clap::Command, path: &str) -> clap::Command {
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in names {
        let sub_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path} {name}")
        };
        cmd = cmd.mut_subcommand(&name, |sub| {
            if sub.has_subcommands() {
                scope_subcommands(sub, &sub_path)
            } else {
                add(sub, scope(&sub_path))
            }
        });
    }
    cmd
}

/// The `mlbuild` command: clap's derived definition with the shared options added where
/// they apply. Parsing, completions and the man page all use this one.
pub fn command() -> clap::Command {
    scope_subcommands(add(Cli::command(), ALL), "")
}

/// Parses the command line (exiting with clap's usage error, code 2, on bad input), taking
/// `--store` from [`crate::cli::STORE_ENV`] when not given.
pub fn parse() -> Cli {
    let mut cmd = command();
    let matches = cmd.get_matches_mut();
    match from_matches(&matches) {
        Ok(mut cli) => {
            if cli.store.is_none() {
                cli.store = crate::cli::env_path(crate::cli::STORE_ENV);
            }
            cli
        }
        Err(message) => cmd
            .error(clap::error::ErrorKind::ArgumentConflict, message)
            .exit(),
    }
}

/// The [`Cli`] of parsed `matches`: the derived part, then the shared options given before
/// the subcommand, overridden or extended by those given after it.
fn from_matches(matches: &ArgMatches) -> Result<Cli, String> {
    let top = Shared::of(matches);
    let mut cli = Cli::from_arg_matches(matches).map_err(|e| e.to_string())?;
    let (path, leaf) = leaf(matches);
    let taken = scope(&path);
    if top.json && !taken.json {
        return Err(format!("`--json` does not apply to `mlbuild {path}`"));
    }
    if !top.set.is_empty() && !taken.set {
        return Err(format!(
            "`--set` does not apply to `mlbuild {path}`: it computes no action keys"
        ));
    }
    let own = Shared::of(leaf);
    cli.directory = own.directory.or(top.directory);
    cli.store = own.store.or(top.store);
    cli.json = own.json || top.json;
    cli.set = top.set.into_iter().chain(own.set).collect();
    Ok(cli)
}

/// The deepest subcommand's path (`"metrics diff"`) and matches.
fn leaf(matches: &ArgMatches) -> (String, &ArgMatches) {
    let mut path = Vec::new();
    let mut at = matches;
    while let Some((name, sub)) = at.subcommand() {
        path.push(name);
        at = sub;
    }
    (path.join(" "), at)
}

/// The shared options found in one level's matches (absent ones are unset).
#[derive(Default)]
struct Shared {
    directory: Option<PathBuf>,
    store: Option<PathBuf>,
    json: bool,
    set: Vec<String>,
}

impl Shared {
    fn of(m: &ArgMatches) -> Shared {
        // `try_get_*`: a level without the option errors instead of having it unset.
        Shared {
            directory: m
                .try_get_one::<PathBuf>("directory")
                .ok()
                .flatten()
                .cloned(),
            store: m.try_get_one::<PathBuf>("store").ok().flatten().cloned(),
            json: m.try_get_one::<bool>("json").ok().flatten().copied() == Some(true),
            set: m
                .try_get_many::<String>("set")
                .ok()
                .flatten()
                .map(|v| v.cloned().collect())
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        let matches = command()
            .try_get_matches_from(std::iter::once("mlbuild").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        from_matches(&matches)
    }

    #[test]
    fn well_formed() {
        command().debug_assert();
    }

    #[test]
    fn before_and_after_the_subcommand() {
        let cli = parse(&["-C", "a", "--set", "x=1", "build", "//:t", "--set", "y=2"]).unwrap();
        assert_eq!(cli.directory, Some(PathBuf::from("a")));
        assert_eq!(cli.set, ["x=1", "y=2"]);
        let cli = parse(&["-C", "a", "history", "-C", "b", "--json"]).unwrap();
        assert_eq!(cli.directory, Some(PathBuf::from("b")));
        assert!(cli.json);
        let cli = parse(&["--json", "metrics", "diff", "--store", "s"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.store, Some(PathBuf::from("s")));
    }

    #[test]
    fn only_where_they_apply() {
        // After the subcommand, clap refuses what it does not declare.
        assert!(parse(&["cache", "serve", "--dir", "d", "--set", "a=1"]).is_err());
        assert!(parse(&["history", "--set", "a=1"]).is_err());
        assert!(parse(&["query", "targets", "//...", "--store", "s"]).is_err());
        // Before it, `--json` and `--set` are refused with a message of ours...
        let err = parse(&["--set", "a=1", "history"]).err().unwrap();
        assert!(
            err.contains("`--set` does not apply to `mlbuild history`"),
            "{err}"
        );
        let err = parse(&["--json", "metrics", "plot", "--out", "x.svg"])
            .err()
            .unwrap();
        assert!(err.contains("`mlbuild metrics plot`"), "{err}");
        // ...while `-C` and `--store` there apply to any subcommand, like `MLBUILD_STORE`.
        assert!(parse(&[
            "-C",
            "a",
            "--store",
            "s",
            "key",
            "generate",
            "--private-key",
            "k"
        ])
        .is_ok());
    }
}
