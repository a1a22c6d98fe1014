//! One handler per subcommand, dispatched by an exhaustive match.

pub(crate) mod audit;
mod build;
pub(crate) mod cache;
pub(crate) mod channel;
mod clean;
pub(crate) mod completions;
pub(crate) mod exp;
mod fsck;
mod gc;
mod graph;
pub(crate) mod history;
pub(crate) mod import_dvc;
pub(crate) mod key;
mod log;
pub(crate) mod man;
mod metrics;
pub(crate) mod mlflow;
pub(crate) mod params;
pub(crate) mod plot;
pub(crate) mod promote;
pub(crate) mod pull;
pub(crate) mod push;
mod query;
pub(crate) mod release;
pub(crate) mod rollout;
mod rule;
mod stats;
mod status;
pub(crate) mod verify;
mod why;

pub(crate) use stats::utc;

use crate::cli::{Cli, Command};
use crate::exit::{CmdResult, Failure};

pub fn run(cli: Cli) -> CmdResult {
    match &cli.command {
        Command::Build(args) => build::run(&cli, args),
        Command::Status(args) => status::run(&cli, args),
        Command::Why(args) => why::run(&cli, args),
        Command::Query(args) => query::run(&cli, args),
        Command::Graph(args) => graph::run(&cli, args),
        Command::Log(args) => log::run(&cli, args),
        Command::Clean => clean::run(&cli),
        Command::Gc(args) => gc::run(&cli, args),
        Command::Fsck(args) => fsck::run(&cli, args),
        Command::Cache(args) => cache::run(&cli, args),
        Command::Metrics(args) => metrics::run(&cli, args),
        Command::Stats(args) => stats::run(&cli, args),
        Command::History(args) => history::run(&cli, args),
        Command::Params(args) => params::run(&cli, args),
        Command::Exp(args) => exp::run(&cli, args),
        Command::Rule(args) => {
            // Run by builds with fixed arguments; its output is the action's log.
            refuse_json(&cli, "rule")?;
            rule::run(args)
        }
        Command::Key(args) => key::run(&cli, args),
        Command::Verify(args) => verify::run(&cli, args),
        Command::Audit(args) => audit::run(&cli, args),
        Command::Promote(args) => promote::run_promote(&cli, args),
        Command::Approve(args) => promote::run_approve(&cli, args),
        Command::Rollback(args) => rollout::run_rollback(&cli, args),
        Command::Channel(args) => channel::run(&cli, args),
        Command::Rollout(args) => rollout::run(&cli, args),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
        Command::Push(args) => push::run(&cli, args),
        Command::Pull(args) => pull::run(&cli, args),
        Command::Mlflow(args) => mlflow::run(&cli, args),
        Command::Import(args) => import_dvc::run(&cli, args),
    }
}

/// For a command without a JSON form: a usage error when `--json` is given, rather than
/// text where a script expects JSON.
pub(crate) fn refuse_json(cli: &Cli, command: &str) -> Result<(), Failure> {
    if cli.json {
        return Err(Failure::bad_input(miette::miette!(
            "`mlbuild {command}` has no JSON output: `--json` cannot be used with it"
        )));
    }
    Ok(())
}

/// Prints a value as pretty JSON on stdout.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("plain data serializes")
    );
}
