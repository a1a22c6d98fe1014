//! `mlbuild metrics show|diff`: the metrics targets recorded in the build history.
//!
//! Every build records the metrics of each target that declares `metrics` (cache hits
//! included), so "the previous build" and "the build named release" always have values
//! to compare. A diff lists what changed unless `--all`. Output is a text table, Markdown
//! (`--md`, for pull-request comments) or JSON (`--json`). Main functions: [`run`],
//! [`diff_rows`].

use std::collections::BTreeSet;

use mlbuild_exec::fmt_value;
use mlbuild_store::{MetricValues, MetricsRecord};
use serde::Serialize;

use crate::cli::{Cli, MetricsArgs, MetricsCommand, MetricsDiffArgs, MetricsShowArgs};
use crate::commands::print_json;
use crate::commands::stats::utc;
use crate::context::Context;
use crate::exit::{CmdResult, Code, Failure};
use crate::table::{self, md_escape, Align::Left, Align::Right};

pub fn run(cli: &Cli, args: &MetricsArgs) -> CmdResult {
    let md = match &args.command {
        MetricsCommand::Show(a) => a.md,
        MetricsCommand::Diff(a) => a.md,
        MetricsCommand::Plot(a) => return super::plot::run(cli, a),
    };
    if md && cli.json {
        return Err(Failure::bad_input(miette::miette!(
            "`--md` and `--json` cannot be used together"
        )));
    }
    let ctx = Context::load(cli)?;
    match &args.command {
        MetricsCommand::Show(a) => show(cli, &ctx, a),
        MetricsCommand::Diff(a) => diff(cli, &ctx, a),
        MetricsCommand::Plot(a) => super::plot::run(cli, a),
    }
}

fn ws_id(ctx: &Context) -> String {
    ctx.ws.root.to_string_lossy().into_owned()
}

/// A label as recorded in the history: resolved against the current package, keeping a
/// sweep variant suffix such as `[lr=0.05]` as written.
fn history_label(ctx: &Context, text: &str) -> Result<String, Failure> {
    let (base, variant) = match text.find('[') {
        Some(i) if text.ends_with(']') => text.split_at(i),
        _ => (text, ""),
    };
    Ok(format!("{}{variant}", ctx.resolve_one(base)?))
}

fn no_metrics(label: &str) -> Failure {
    Failure::bad_input(miette::miette!(
        help = "metrics are recorded by builds of targets that declare `metrics = [\"metrics.json\"]`; build the target first",
        "no metrics recorded for `{label}` in this workspace"
    ))
}

fn show(cli: &Cli, ctx: &Context, args: &MetricsShowArgs) -> CmdResult {
    let label = history_label(ctx, &args.label)?;
    let Some(record) = ctx.store.latest_metrics(&ws_id(ctx), &label, None)? else {
        return Err(no_metrics(&label));
    };
    if cli.json {
        print_json(&record);
        return Ok(Code::Ok);
    }
    let rows: Vec<[String; 2]> = record
        .values
        .iter()
        .map(|(k, v)| [k.clone(), fmt_value(*v)])
        .collect();
    let title = format!(
        "{label} (build #{}, {})",
        record.invocation_id,
        utc(record.started_at)
    );
    let (header, align) = (["metric", "value"], [Left, Right]);
    if args.md {
        println!("**{}**\n", md_escape(&title));
        print!("{}", table::markdown(&header, &rows, &align));
    } else {
        println!("{title}");
        print!("{}", table::text(&header, &rows, &align));
    }
    Ok(Code::Ok)
}

/// One metric in a diff; `None` where one side does not have it.
#[derive(Debug, PartialEq, Serialize)]
pub struct DiffRow {
    pub metric: String,
    pub old: Option<f64>,
    pub new: Option<f64>,
    pub delta: Option<f64>,
}

#[derive(Serialize)]
struct BuildRef {
    invocation_id: i64,
    started_at: i64,
}

#[derive(Serialize)]
struct LabelDiff {
    label: String,
    old: Option<BuildRef>,
    new: BuildRef,
    metrics: Vec<DiffRow>,
}

impl DiffRow {
    /// Whether the metric differs between the builds, or is on one side only.
    pub fn changed(&self) -> bool {
        self.old != self.new
    }
}

/// Rows for every metric on either side, sorted by name.
pub fn diff_rows(old: Option<&MetricValues>, new: &MetricValues) -> Vec<DiffRow> {
    let empty = MetricValues::new();
    let old = old.unwrap_or(&empty);
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    names
        .into_iter()
        .map(|name| {
            let (o, n) = (old.get(name).copied(), new.get(name).copied());
            DiffRow {
                metric: name.clone(),
                old: o,
                new: n,
                delta: o.zip(n).map(|(o, n)| n - o),
            }
        })
        .collect()
}

fn diff(cli: &Cli, ctx: &Context, args: &MetricsDiffArgs) -> CmdResult {
    let ws = ws_id(ctx);
    let labels = match &args.label {
        Some(text) => vec![history_label(ctx, text)?],
        None => ctx.store.labels_with_metrics(&ws)?,
    };
    if labels.is_empty() {
        return Err(Failure::bad_input(miette::miette!(
            help = "metrics are recorded by builds of targets that declare `metrics`",
            "no metrics recorded in this workspace yet"
        )));
    }
    let against = match &args.against {
        Some(name) => match ctx.store.find_invocation(&ws, name)? {
            Some(record) => Some(record.id),
            None => {
                return Err(Failure::bad_input(miette::miette!(
                    help = "name builds with `mlbuild build --name NAME`, or pass a build id",
                    "no build named `{name}` in this workspace's history"
                )))
            }
        },
        None => None,
    };
    let mut diffs = Vec::new();
    for label in &labels {
        let Some(new) = ctx.store.latest_metrics(&ws, label, None)? else {
            return Err(no_metrics(label));
        };
        let old: Option<MetricsRecord> = match against {
            Some(id) => {
                let old = ctx.store.metrics_of(id, label)?;
                if old.is_none() && args.label.is_some() {
                    return Err(Failure::bad_input(miette::miette!(
                        "build `{}` recorded no metrics for `{label}`",
                        args.against.as_deref().unwrap_or_default()
                    )));
                }
                old
            }
            None => ctx
                .store
                .latest_metrics(&ws, label, Some(new.invocation_id))?,
        };
        diffs.push(LabelDiff {
            label: label.clone(),
            metrics: diff_rows(old.as_ref().map(|o| &o.values), &new.values),
            old: old.map(|o| BuildRef {
                invocation_id: o.invocation_id,
                started_at: o.started_at,
            }),
            new: BuildRef {
                invocation_id: new.invocation_id,
                started_at: new.started_at,
            },
        });
    }
    let compared = diffs.len();
    if !args.all {
        for d in &mut diffs {
            d.metrics.retain(DiffRow::changed);
        }
        diffs.retain(|d| !d.metrics.is_empty());
    }
    if cli.json {
        print_json(&diffs);
        return Ok(Code::Ok);
    }
    if diffs.is_empty() {
        match &args.label {
            Some(_) => println!("no metric of `{}` changed (`--all` lists them)", labels[0]),
            None => println!(
                "no metric changed in {} (`--all` lists them)",
                targets(compared)
            ),
        }
        return Ok(Code::Ok);
    }
    for (i, d) in diffs.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let old = match &d.old {
            Some(o) => format!("build #{}", o.invocation_id),
            None => match &args.against {
                Some(name) => format!("no metrics in build `{name}`"),
                None => "no earlier build".to_owned(),
            },
        };
        let title = format!("{}: {old} -> build #{}", d.label, d.new.invocation_id);
        let cell = |v: Option<f64>| v.map_or("-".to_owned(), fmt_value);
        let rows: Vec<[String; 4]> = d
            .metrics
            .iter()
            .map(|r| {
                [
                    r.metric.clone(),
                    cell(r.old),
                    cell(r.new),
                    r.delta.map_or("-".to_owned(), signed),
                ]
            })
            .collect();
        let header = ["metric", "old", "new", "delta"];
        let align = [Left, Right, Right, Right];
        if args.md {
            println!("**{}**\n", md_escape(&title));
            print!("{}", table::markdown(&header, &rows, &align));
        } else {
            println!("{title}");
            print!("{}", table::text(&header, &rows, &align));
        }
    }
    let unchanged = compared - diffs.len();
    if unchanged > 0 {
        println!(
            "\n{} with no changed metric (`--all` lists them)",
            targets(unchanged)
        );
    }
    Ok(Code::Ok)
}

/// `1 target`, `3 targets`.
fn targets(n: usize) -> String {
    if n == 1 {
        "1 target".to_owned()
    } else {
        format!("{n} targets")
    }
}

/// `+0.02`, `-1`, `0`.
fn signed(v: f64) -> String {
    if v > 0.0 {
        format!("+{}", fmt_value(v))
    } else {
        fmt_value(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, f64)]) -> MetricValues {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn diff_covers_both_sides() {
        let old = values(&[("f1", 0.8), ("gone", 1.0)]);
        let new = values(&[("f1", 0.9), ("added", 2.0)]);
        let rows = diff_rows(Some(&old), &new);
        let names: Vec<&str> = rows.iter().map(|r| r.metric.as_str()).collect();
        assert_eq!(names, ["added", "f1", "gone"]);
        assert_eq!(rows[0].old, None);
        assert_eq!(rows[0].delta, None);
        assert!((rows[1].delta.unwrap() - 0.1).abs() < 1e-12);
        assert_eq!(rows[2].new, None);
        assert_eq!(diff_rows(None, &new).len(), 2);
        let changed: Vec<bool> = rows.iter().map(DiffRow::changed).collect();
        assert_eq!(changed, [true, true, true]);
        assert!(!diff_rows(Some(&new), &new).iter().any(DiffRow::changed));
    }

    #[test]
    fn deltas_carry_their_sign() {
        assert_eq!(signed(0.5), "+0.5");
        assert_eq!(signed(-2.0), "-2");
        assert_eq!(signed(0.0), "0");
    }
}
