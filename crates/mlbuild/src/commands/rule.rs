//! `mlbuild rule <kind> ARGS...`: the entry point of built-in kinds.
//!
//! A `validate`, `drift` or `package` target becomes an ordinary action whose command is
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
        other => Err(Failure::bad_input(miette::miette!(
            "unknown built-in rule `{other}`"
        ))),
    }
    .map(|()| Code::Ok)
}
