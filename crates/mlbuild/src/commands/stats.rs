//! `mlbuild stats`: per-target pipeline statistics over a window of build history.
//!
//! Answers "which stage is slow, flaky or never cached" from what every build already
//! records (one row per target run), without re-running anything. Main function: [`run`].

use std::collections::BTreeSet;

use mlbuild_store::TargetStats;
use serde::Serialize;

use crate::cli::{Cli, StatsArgs};
use crate::commands::print_json;
use crate::context::Context;
use crate::exit::{CmdResult, Code};
use crate::report::secs;
use crate::table::{self, Align::Left, Align::Right};

/// Sums over every listed target.
#[derive(Debug, PartialEq, Serialize)]
struct Totals {
    targets: usize,
    runs: u64,
    executed: u64,
    cached: u64,
    failed: u64,
    cache_hit_rate: f64,
    success_rate: f64,
}

#[derive(Serialize)]
struct Report {
    /// Unix seconds: the start of the window.
    since: i64,
    targets: Vec<TargetStats>,
    totals: Totals,
}

pub fn run(cli: &Cli, args: &StatsArgs) -> CmdResult {
    let ctx = Context::load(cli)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let since = now.saturating_sub(args.since.as_secs().min(i64::MAX as u64) as i64);
    let ws = ctx.ws.root.to_string_lossy().into_owned();
    let mut stats = ctx.store.target_stats(&ws, since)?;
    if !args.targets.is_empty() {
        let wanted: BTreeSet<String> = ctx
            .resolve(&args.targets)?
            .iter()
            .map(ToString::to_string)
            .collect();
        // Sweep variants (`//m:t[lr=0.1]`) count as their target.
        stats.retain(|s| wanted.contains(s.label.split('[').next().unwrap_or(&s.label)));
    }
    let totals = totals(&stats);
    if cli.json {
        print_json(&Report {
            since,
            targets: stats,
            totals,
        });
        return Ok(Code::Ok);
    }
    if stats.is_empty() {
        eprintln!("no builds recorded since {}", utc(since));
        return Ok(Code::Ok);
    }
    println!("builds since {}", utc(since));
    print!("{}", render(&stats, &totals));
    Ok(Code::Ok)
}

/// The text table: one row per target and the total. The median is over executed runs
/// only: a cache hit costs next to nothing, so counting hits made a mostly cached
/// target's median `0ms`; how often it hits is the hit rate's job.
fn render(stats: &[TargetStats], totals: &Totals) -> String {
    let rows: Vec<[String; 7]> = stats
        .iter()
        .map(|s| {
            [
                s.label.clone(),
                s.runs.to_string(),
                s.executed.to_string(),
                s.median_executed_ms.map_or("-".to_owned(), secs),
                percent(s.cache_hit_rate),
                percent(s.success_rate),
                s.last_failure.as_ref().map_or("-".to_owned(), |f| {
                    format!("{} (build #{})", utc(f.at), f.invocation_id)
                }),
            ]
        })
        .chain(std::iter::once([
            format!("total ({} targets)", totals.targets),
            totals.runs.to_string(),
            totals.executed.to_string(),
            "-".to_owned(),
            percent(totals.cache_hit_rate),
            percent(totals.success_rate),
            String::new(),
        ]))
        .collect();
    table::text(
        &[
            "target",
            "runs",
            "executed",
            "median",
            "hit rate",
            "success",
            "last failure",
        ],
        &rows,
        &[Left, Right, Right, Right, Right, Right, Left],
    )
}

fn totals(stats: &[TargetStats]) -> Totals {
    let sum = |f: fn(&TargetStats) -> u64| stats.iter().map(f).sum::<u64>();
    let (runs, executed, cached, failed) = (
        sum(|s| s.runs),
        sum(|s| s.executed),
        sum(|s| s.cached),
        sum(|s| s.failed),
    );
    let rate = |n: u64| {
        if runs == 0 {
            0.0
        } else {
            n as f64 / runs as f64
        }
    };
    Totals {
        targets: stats.len(),
        runs,
        executed,
        cached,
        failed,
        cache_hit_rate: rate(cached),
        success_rate: rate(runs - failed),
    }
}

fn percent(rate: f64) -> String {
    format!("{:.0}%", rate * 100.0)
}

/// `2026-11-22 08:03:26Z` from Unix seconds (UTC, so output does not depend on the host).
/// Clamped to 1970..=9999, the years an RFC 3339 timestamp can show.
pub(crate) fn utc(secs: i64) -> String {
    const LAST: u64 = 253_402_300_799; // 9999-12-31 23:59:59
    let secs = u64::try_from(secs).unwrap_or(0).min(LAST);
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .replacen('T', " ", 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlbuild_store::LastFailure;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(utc(1_795_334_606), "2026-11-22 08:03:26Z");
        assert_eq!(utc(-1), "1970-01-01 00:00:00Z");
        assert_eq!(utc(i64::MAX), "9999-12-31 23:59:59Z");
    }

    #[test]
    fn the_median_is_over_executed_runs() {
        // Three cache hits of 0ms and two executed runs: the all-runs median is 0ms.
        let hits = TargetStats {
            label: "//m:train".into(),
            runs: 5,
            executed: 2,
            cached: 3,
            failed: 0,
            median_ms: 0,
            median_executed_ms: Some(1500),
            cache_hit_rate: 0.6,
            success_rate: 1.0,
            last_failure: None,
        };
        let never_ran = TargetStats {
            label: "//m:eval".into(),
            runs: 2,
            executed: 0,
            cached: 1,
            failed: 1,
            median_ms: 3,
            median_executed_ms: None,
            cache_hit_rate: 0.5,
            success_rate: 0.5,
            last_failure: Some(LastFailure {
                invocation_id: 7,
                at: 1_795_334_606,
            }),
        };
        let stats = [never_ran, hits];
        assert_eq!(
            render(&stats, &totals(&stats)),
            "target             runs  executed  median  hit rate  success  last failure\n\
             //m:eval              2         0       -       50%      50%  2026-11-22 08:03:26Z (build #7)\n\
             //m:train             5         2   1.50s       60%     100%  -\n\
             total (2 targets)     7         2       -       57%      86%\n"
        );
    }

    #[test]
    fn totals_sum_targets() {
        let s = |runs, cached, failed| TargetStats {
            label: String::new(),
            runs,
            executed: runs - cached - failed,
            cached,
            failed,
            median_ms: 0,
            median_executed_ms: None,
            cache_hit_rate: 0.0,
            success_rate: 0.0,
            last_failure: None,
        };
        let t = totals(&[s(4, 2, 1), s(4, 2, 0)]);
        assert_eq!((t.targets, t.runs, t.cached, t.failed), (2, 8, 4, 1));
        assert_eq!(t.cache_hit_rate, 0.5);
        assert_eq!(t.success_rate, 7.0 / 8.0);
        assert_eq!(totals(&[]).success_rate, 0.0);
    }
}
