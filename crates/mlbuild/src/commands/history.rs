//! `mlbuild history`: the workspace's recent builds, newest first.
//!
//! Build ids and names are what `params diff`, `metrics diff --against` and baselines
//! take, and every build records its outcome; this lists them without reading any
//! target's run. Main type: [`HistoryArgs`].

use clap::Args;
use mlbuild_store::BuildListing;
use serde::Serialize;

use crate::cli::Cli;
use crate::commands::print_json;
use crate::commands::stats::utc;
use crate::context::Context;
use crate::exit::{CmdResult, Code};
use crate::table::{self, Align::Left, Align::Right};

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// How many builds to list, newest first.
    #[arg(long, short = 'n', default_value_t = 20, value_name = "N")]
    pub limit: usize,
}

/// One build in `--json` output.
#[derive(Debug, PartialEq, Serialize)]
struct Entry<'a> {
    id: i64,
    name: Option<&'a str>,
    /// UTC, ISO 8601 (`2026-11-22T08:03:26Z`).
    started_at: String,
    duration_ms: u64,
    executed: u64,
    cached: u64,
    failed: u64,
    success: bool,
    /// The command line that ran it (`mlbuild audit` builds too).
    command: &'a str,
}

impl<'a> Entry<'a> {
    fn of(build: &'a BuildListing) -> Entry<'a> {
        Entry {
            id: build.id,
            name: build.name.as_deref(),
            started_at: iso8601(build.started_at),
            duration_ms: build.duration_ms,
            executed: build.executed,
            cached: build.cached,
            failed: build.failed,
            success: build.success,
            command: &build.command,
        }
    }
}

pub fn run(cli: &Cli, args: &HistoryArgs) -> CmdResult {
    let ctx = Context::load(cli)?;
    let builds = ctx
        .store
        .list_builds(&ctx.ws.root.to_string_lossy(), args.limit)?;
    if cli.json {
        print_json(&builds.iter().map(Entry::of).collect::<Vec<_>>());
        return Ok(Code::Ok);
    }
    if builds.is_empty() {
        eprintln!("no builds recorded in this workspace yet");
        return Ok(Code::Ok);
    }
    let rows: Vec<[String; 9]> = builds
        .iter()
        .map(|b| {
            [
                b.id.to_string(),
                b.name.clone().unwrap_or_else(|| "-".to_owned()),
                iso8601(b.started_at),
                duration(b.duration_ms),
                b.executed.to_string(),
                b.cached.to_string(),
                b.failed.to_string(),
                if b.success { "ok" } else { "FAILED" }.to_owned(),
                short_command(&b.command),
            ]
        })
        .collect();
    print!(
        "{}",
        table::text(
            &[
                "id", "name", "started", "duration", "executed", "cached", "failed", "result",
                "command",
            ],
            &rows,
            &[Right, Left, Left, Right, Right, Right, Right, Left, Left],
        )
    );
    Ok(Code::Ok)
}

/// `2026-11-22T08:03:26Z` from Unix seconds.
fn iso8601(secs: i64) -> String {
    utc(secs).replacen(' ', "T", 1)
}

/// `850ms`, `1.50s`, `2m05s`, `1h02m`.
fn duration(ms: u64) -> String {
    let secs = ms / 1000;
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.2}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// The recorded command line with the program as its file name: `mlbuild build //...`
/// rather than the path the binary was started by.
fn short_command(command: &str) -> String {
    let (program, rest) = command.split_once(' ').unwrap_or((command, ""));
    let program = program.rsplit('/').next().unwrap_or(program);
    format!("{program} {rest}").trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_durations_and_commands() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_795_334_606), "2026-11-22T08:03:26Z");
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(1_500), "1.50s");
        assert_eq!(duration(125_000), "2m05s");
        assert_eq!(duration(3_725_000), "1h02m");
        assert_eq!(
            short_command("/x/target/debug/mlbuild -C ws build //a:b"),
            "mlbuild -C ws build //a:b"
        );
        assert_eq!(short_command("mlbuild"), "mlbuild");
    }
}
