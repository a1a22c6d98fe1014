//! `mlbuild rule <kind> ARGS...`: the entry point of built-in kinds.
//!
//! A `validate`, `drift`, `package` or `python_env` target becomes an ordinary action whose command is
//! the mlbuild binary itself running this subcommand, so built-in kinds get the same
//! sandbox, cache, logs, remote sharing and audits as any user command. Each rule parses
//! its own arguments; its exit code is the action's: 0 passed, 1 the check failed, 2 bad
//! input (a schema error, a missing file).

use crate::cli::RuleArgs;
use crate::exit::{CmdResult, Code, Failure};

pub fn run(args: &RuleArgs) -> CmdResult {
    match args.kind.as_str() {
        "package" => mlbuild_rules::package::run(&args.args).map_err(|e| Failure {
            code: if e.is_bad_input() {
                Code::BadInput
            } else {
                Code::BuildFailed
            },
            report: e.into(),
        }),
        "python_env" => mlbuild_rules::python_env::run_cli(&args.args).map_err(|e| Failure {
            code: if e.is_bad_input() {
                Code::BadInput
            } else {
                Code::BuildFailed
            },
            report: e.into(),
        }),
        "validate" => return data_rule(mlbuild_rules::validate::run_cli(&args.args)),
        "drift" => return data_rule(mlbuild_rules::drift::run_cli(&args.args)),
        other => Err(Failure::bad_input(miette::miette!(
            "unknown built-in rule `{other}`"
        ))),
    }
    .map(|()| Code::Ok)
}

/// Exit codes of the data rules (`validate`, `drift`): 0 passed, 1 the data failed the
/// check (details already on stderr and in the output directory), 2 bad input.
///
/// A failed check is one plain `error:` line under the table, not a report box: the build
/// shows the end of this stderr inside its own failure box, where a nested box wrapped the
/// data's path across lines (and the executor could no longer shorten it to the
/// workspace-relative path).
fn data_rule(
    r: Result<mlbuild_rules::validate::Outcome, mlbuild_rules::validate::error::DataError>,
) -> CmdResult {
    match r {
        Ok(mlbuild_rules::validate::Outcome::Passed) => Ok(Code::Ok),
        Ok(mlbuild_rules::validate::Outcome::Failed(summary)) => {
            eprintln!("error: {summary}");
            Ok(Code::BuildFailed)
        }
        Err(e) => Err(Failure::bad_input(e)),
    }
}
