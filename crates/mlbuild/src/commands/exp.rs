//! `mlbuild exp show [TARGET]`: a target's experiments as a table: the variants of its
//! sweep in the latest build (params that differ, metrics, the one selected) and its recent
//! builds (params that differ, metrics, selected variant, gate verdicts).
//!
//! Everything shown is read from the build history (metrics, params, gate verdicts and
//! selections are recorded by every build), so it answers "what did we try and what won"
//! without rebuilding. `metrics plot` draws the same [`Experiment`]s. Output: text tables,
//! `--md`, `--csv` or `--json`. Main functions: [`run`], [`collect`].

use std::collections::{BTreeMap, BTreeSet};

use clap::{Args, Subcommand};
use mlbuild_exec::fmt_value;
use mlbuild_store::{GateRecord, MetricValues};
use serde::Serialize;

use crate::cli::Cli;
use crate::commands::print_json;
use crate::commands::stats::utc;
use crate::context::Context;
use crate::exit::{CmdResult, Code, Failure};
use crate::table::{self, Align};

#[derive(Debug, Args)]
pub struct ExpArgs {
    #[command(subcommand)]
    pub command: ExpCommand,
}

#[derive(Debug, Subcommand)]
pub enum ExpCommand {
    /// A table of a target's sweep variants and recent builds: params that differ,
    /// metrics, the selected variant and gate verdicts (every target with recorded
    /// metrics when no target is given).
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A target label (a swept target's plain label shows its variants).
    pub target: Option<String>,
    /// How many recent builds to list per target.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub builds: usize,
    /// Print Markdown tables (for pull-request comments).
    #[arg(long, conflicts_with = "csv")]
    pub md: bool,
    /// Print one CSV table: a row per variant and per build.
    #[arg(long)]
    pub csv: bool,
    /// Only these metrics (repeatable; default: every metric recorded).
    #[arg(long, value_name = "NAME")]
    pub metric: Vec<String>,
}

/// One target's experiments, as recorded in the history.
#[derive(Debug, Serialize)]
pub(crate) struct Experiment {
    pub label: String,
    /// The variants of its sweep in the latest build that recorded them (empty when the
    /// target is not swept), in label order.
    pub variants: Vec<VariantRow>,
    /// Its latest builds that recorded metrics for it, newest first.
    pub builds: Vec<BuildRow>,
}

#[derive(Debug, Serialize)]
pub(crate) struct VariantRow {
    pub label: String,
    pub invocation_id: i64,
    /// The params whose values differ among the variants, by dotted key.
    pub params: BTreeMap<String, serde_json::Value>,
    pub metrics: MetricValues,
    /// Whether the build's selection picked this variant.
    pub selected: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct BuildRow {
    pub invocation_id: i64,
    pub name: Option<String>,
    /// Unix seconds.
    pub started_at: i64,
    /// The params (of the selected variant, for a sweep) whose values differ among the
    /// builds listed, by dotted key.
    pub params: BTreeMap<String, serde_json::Value>,
    pub metrics: MetricValues,
    /// The variant the sweep's selection picked in this build.
    pub selected: Option<String>,
    /// The gates checked on the target in this build.
    pub gates: Vec<GateRecord>,
}

pub fn run(cli: &Cli, args: &ExpArgs) -> CmdResult {
    match &args.command {
        ExpCommand::Show(args) => show(cli, args),
    }
}

fn show(cli: &Cli, args: &ShowArgs) -> CmdResult {
    if cli.json && (args.md || args.csv) {
        return Err(Failure::bad_input(miette::miette!(
            "`--json` cannot be used with `--md` or `--csv`"
        )));
    }
    let ctx = Context::load(cli)?;
    let mut experiments = collect(&ctx, args.target.as_deref(), args.builds.max(1))?;
    if !args.metric.is_empty() {
        keep_metrics(&mut experiments, &args.metric)?;
    }
    if cli.json {
        print_json(&experiments);
    } else if args.csv {
        print!("{}", to_csv(&experiments)?);
    } else {
        for (i, exp) in experiments.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print!("{}", render(exp, args.md));
        }
    }
    Ok(Code::Ok)
}

/// The experiments of `target` (a label as typed), or of every target with recorded
/// metrics but sweep variants (which appear under their target), with up to `builds`
/// recent builds each.
pub(crate) fn collect(
    ctx: &Context,
    target: Option<&str>,
    builds: usize,
) -> Result<Vec<Experiment>, Failure> {
    let ws = ctx.ws.root.to_string_lossy().into_owned();
    let recorded = ctx.store.labels_with_metrics(&ws)?;
    let labels: Vec<String> = match target {
        Some(text) => {
            let label = ctx.resolve_one(text)?.to_string();
            let swept = recorded.iter().any(|l| is_variant_of(l, &label));
            if !swept && !recorded.contains(&label) {
                return Err(Failure::bad_input(miette::miette!(
                    help = "metrics are recorded by builds of targets that declare `metrics`; build the target first",
                    "no metrics recorded for `{label}` in this workspace"
                )));
            }
            vec![label]
        }
        None => recorded
            .iter()
            .filter(|l| !l.contains('['))
            .cloned()
            .collect(),
    };
    if labels.is_empty() {
        return Err(Failure::bad_input(miette::miette!(
            help = "metrics are recorded by builds of targets that declare `metrics`",
            "no metrics recorded in this workspace yet"
        )));
    }
    labels
        .into_iter()
        .map(|label| experiment(ctx, &ws, &recorded, label, builds))
        .collect()
}

/// Drops every metric but `only`; naming none that was recorded is an error.
fn keep_metrics(experiments: &mut [Experiment], only: &[String]) -> Result<(), Failure> {
    let mut found = false;
    for e in experiments {
        let rows = e.variants.iter_mut().map(|v| &mut v.metrics);
        for metrics in rows.chain(e.builds.iter_mut().map(|b| &mut b.metrics)) {
            metrics.retain(|name, _| only.contains(name));
            found |= !metrics.is_empty();
        }
    }
    if found {
        return Ok(());
    }
    Err(Failure::bad_input(miette::miette!(
        help = "`mlbuild exp show` without `--metric` lists the metrics recorded",
        "no recorded metric is named {}",
        only.iter()
            .map(|m| format!("`{m}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

fn is_variant_of(recorded: &str, label: &str) -> bool {
    recorded
        .strip_prefix(label)
        .is_some_and(|rest| rest.starts_with('['))
}

fn experiment(
    ctx: &Context,
    ws: &str,
    recorded: &[String],
    label: String,
    builds: usize,
) -> Result<Experiment, Failure> {
    let store = &ctx.store;
    let history = store.metrics_history(ws, &label, builds)?;
    let mut params_cache: BTreeMap<i64, mlbuild_store::BuildParams> = BTreeMap::new();
    let mut params_in =
        |id: i64, of: &str| -> Result<BTreeMap<String, serde_json::Value>, Failure> {
            if let std::collections::btree_map::Entry::Vacant(e) = params_cache.entry(id) {
                e.insert(store.params_of(id)?.unwrap_or_default());
            }
            Ok(params_cache[&id].get(of).map(flatten).unwrap_or_default())
        };

    // The variants: those that recorded metrics in the latest build that ran the sweep.
    let mut variants = Vec::new();
    let variant_labels: Vec<&String> = recorded
        .iter()
        .filter(|l| is_variant_of(l, &label))
        .collect();
    let mut latest_sweep = None;
    for v in &variant_labels {
        if let Some(record) = store.latest_metrics(ws, v, None)? {
            latest_sweep = latest_sweep.max(Some(record.invocation_id));
        }
    }
    if let Some(id) = latest_sweep {
        let selected = store.selection_of(id, &label)?;
        for v in variant_labels {
            if let Some(record) = store.metrics_of(id, v)? {
                variants.push(VariantRow {
                    params: params_in(id, v)?,
                    selected: selected.as_deref() == Some(v.as_str()),
                    label: v.clone(),
                    invocation_id: id,
                    metrics: record.values,
                });
            }
        }
    }
    keep_differing(variants.iter_mut().map(|v| &mut v.params));

    let mut rows = Vec::with_capacity(history.len());
    for record in history {
        let id = record.invocation_id;
        let selected = store.selection_of(id, &label)?;
        rows.push(BuildRow {
            invocation_id: id,
            name: store.invocation_name(id)?,
            started_at: record.started_at,
            params: params_in(id, selected.as_deref().unwrap_or(&label))?,
            metrics: record.values,
            selected,
            gates: store.gates_of(id, &label)?,
        });
    }
    keep_differing(rows.iter_mut().map(|b| &mut b.params));
    Ok(Experiment {
        label,
        variants,
        builds: rows,
    })
}

/// Params flattened to dotted keys (`{"train": {"lr": 0.1}}` is `train.lr`).
fn flatten(value: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
        match v.as_object() {
            Some(obj) if !obj.is_empty() => {
                for (k, child) in obj {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&path, child, out);
                }
            }
            _ if !prefix.is_empty() => {
                out.insert(prefix.to_owned(), v.clone());
            }
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    walk("", value, &mut out);
    out
}

/// Keeps in each row only the params whose values are not the same in every row (a key
/// missing from some rows differs).
fn keep_differing<'a>(rows: impl Iterator<Item = &'a mut BTreeMap<String, serde_json::Value>>) {
    let rows: Vec<_> = rows.collect();
    let keys: BTreeSet<String> = rows.iter().flat_map(|r| r.keys().cloned()).collect();
    let same: BTreeSet<String> = keys
        .into_iter()
        .filter(|k| {
            let first = rows.first().and_then(|r| r.get(k));
            first.is_some() && rows.iter().all(|r| r.get(k) == first)
        })
        .collect();
    for row in rows {
        row.retain(|k, _| !same.contains(k));
    }
}

fn show_param(v: Option<&serde_json::Value>) -> String {
    match v {
        None => "-".to_owned(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => mlbuild_digest::canonical_json(other),
    }
}

fn show_metric(v: Option<&f64>) -> String {
    v.map_or("-".to_owned(), |v| fmt_value(*v))
}

/// `pass (2)`, `FAIL: f1 >= 0.9` (the failed gates), or `-` when none was checked.
fn show_gates(gates: &[GateRecord]) -> String {
    if gates.is_empty() {
        return "-".to_owned();
    }
    let failed: Vec<&str> = gates
        .iter()
        .filter(|g| !g.passed)
        .map(|g| g.gate.as_str())
        .collect();
    if failed.is_empty() {
        format!("pass ({})", gates.len())
    } else {
        format!("FAIL: {}", failed.join("; "))
    }
}

fn union<'a, T: 'a>(maps: impl Iterator<Item = &'a BTreeMap<String, T>>) -> Vec<String> {
    let keys: BTreeSet<&String> = maps.flat_map(|m| m.keys()).collect();
    keys.into_iter().cloned().collect()
}

/// The variants table and the builds table of one experiment, as text or Markdown.
fn render(exp: &Experiment, md: bool) -> String {
    let draw = |header: &[&str], rows: &[Vec<String>], align: &[Align]| {
        if md {
            table::markdown_dyn(header, rows, align)
        } else {
            table::text_dyn(header, rows, align)
        }
    };
    let heading = |text: String| {
        if md {
            format!("### {}\n\n", table::md_escape(&text))
        } else {
            format!("{text}\n")
        }
    };
    let mut out = String::new();
    if let Some(first) = exp.variants.first() {
        let params = union(exp.variants.iter().map(|v| &v.params));
        let metrics = union(exp.variants.iter().map(|v| &v.metrics));
        let mut header = vec!["variant", "selected"];
        header.extend(params.iter().map(String::as_str));
        header.extend(metrics.iter().map(String::as_str));
        let rows: Vec<Vec<String>> = exp
            .variants
            .iter()
            .map(|v| {
                let mut row = vec![
                    v.label.clone(),
                    if v.selected { "*" } else { "" }.to_owned(),
                ];
                row.extend(params.iter().map(|p| show_param(v.params.get(p))));
                row.extend(metrics.iter().map(|m| show_metric(v.metrics.get(m))));
                row
            })
            .collect();
        let mut align = vec![Align::Left, Align::Left];
        align.extend(params.iter().map(|_| Align::Right));
        align.extend(metrics.iter().map(|_| Align::Right));
        out.push_str(&heading(format!(
            "{}: {} variants in build #{}",
            exp.label,
            exp.variants.len(),
            first.invocation_id
        )));
        out.push_str(&draw(&header, &rows, &align));
        out.push('\n');
    }
    let params = union(exp.builds.iter().map(|b| &b.params));
    let metrics = union(exp.builds.iter().map(|b| &b.metrics));
    let swept = exp.builds.iter().any(|b| b.selected.is_some());
    let mut header = vec!["build", "name", "started (UTC)"];
    if swept {
        header.push("selected");
    }
    header.extend(params.iter().map(String::as_str));
    header.extend(metrics.iter().map(String::as_str));
    header.push("gates");
    let rows: Vec<Vec<String>> = exp
        .builds
        .iter()
        .map(|b| {
            let mut row = vec![
                format!("#{}", b.invocation_id),
                b.name.clone().unwrap_or_else(|| "-".to_owned()),
                utc(b.started_at),
            ];
            if swept {
                row.push(b.selected.clone().unwrap_or_else(|| "-".to_owned()));
            }
            row.extend(params.iter().map(|p| show_param(b.params.get(p))));
            row.extend(metrics.iter().map(|m| show_metric(b.metrics.get(m))));
            row.push(show_gates(&b.gates));
            row
        })
        .collect();
    let mut align = vec![Align::Right, Align::Left, Align::Left];
    if swept {
        align.push(Align::Left);
    }
    align.extend(params.iter().map(|_| Align::Right));
    align.extend(metrics.iter().map(|_| Align::Right));
    align.push(Align::Left);
    out.push_str(&heading(format!(
        "{}: {} recent builds",
        exp.label,
        exp.builds.len()
    )));
    out.push_str(&draw(&header, &rows, &align));
    out
}

/// One CSV table for every experiment: a row per variant (`row` = `variant`) and per build
/// (`row` = `build`), a column per param and metric seen anywhere (`param:KEY`,
/// `metric:NAME`), empty where a row has none. Values are exact.
fn to_csv(experiments: &[Experiment]) -> Result<String, Failure> {
    let params = union(experiments.iter().flat_map(|e| {
        e.variants
            .iter()
            .map(|v| &v.params)
            .chain(e.builds.iter().map(|b| &b.params))
    }));
    let metrics = union(experiments.iter().flat_map(|e| {
        e.variants
            .iter()
            .map(|v| &v.metrics)
            .chain(e.builds.iter().map(|b| &b.metrics))
    }));
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = [
        "target",
        "row",
        "label",
        "build",
        "name",
        "started_at",
        "selected",
        "gates",
    ]
    .map(String::from)
    .to_vec();
    header.extend(params.iter().map(|p| format!("param:{p}")));
    header.extend(metrics.iter().map(|m| format!("metric:{m}")));
    let io = |e: csv::Error| Failure::store(miette::miette!("cannot write CSV: {e}"));
    w.write_record(&header).map_err(io)?;
    let param_cell =
        |v: Option<&serde_json::Value>| v.map(|v| show_param(Some(v))).unwrap_or_default();
    let metric_cell = |v: Option<&f64>| v.map(f64::to_string).unwrap_or_default();
    for e in experiments {
        for v in &e.variants {
            let mut row = vec![
                e.label.clone(),
                "variant".into(),
                v.label.clone(),
                v.invocation_id.to_string(),
                String::new(),
                String::new(),
                v.selected.to_string(),
                String::new(),
            ];
            row.extend(params.iter().map(|p| param_cell(v.params.get(p))));
            row.extend(metrics.iter().map(|m| metric_cell(v.metrics.get(m))));
            w.write_record(&row).map_err(io)?;
        }
        for b in &e.builds {
            let mut row = vec![
                e.label.clone(),
                "build".into(),
                e.label.clone(),
                b.invocation_id.to_string(),
                b.name.clone().unwrap_or_default(),
                utc(b.started_at),
                b.selected.clone().unwrap_or_default(),
                if b.gates.is_empty() {
                    String::new()
                } else {
                    show_gates(&b.gates)
                },
            ];
            row.extend(params.iter().map(|p| param_cell(b.params.get(p))));
            row.extend(metrics.iter().map(|m| metric_cell(b.metrics.get(m))));
            w.write_record(&row).map_err(io)?;
        }
    }
    let bytes = w.into_inner().map_err(|e| io(e.into_error().into()))?;
    Ok(String::from_utf8(bytes).expect("CSV of UTF-8 strings is UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_only_params_that_differ() {
        let mut rows = [
            flatten(&json!({"train": {"lr": 0.1, "epochs": 5}, "seed": 1})),
            flatten(&json!({"train": {"lr": 0.2, "epochs": 5}, "seed": 1, "extra": true})),
        ];
        keep_differing(rows.iter_mut());
        assert_eq!(
            rows[0],
            BTreeMap::from([("train.lr".to_owned(), json!(0.1))])
        );
        assert_eq!(
            rows[1],
            BTreeMap::from([
                ("extra".to_owned(), json!(true)),
                ("train.lr".to_owned(), json!(0.2))
            ])
        );
    }

    #[test]
    fn gate_verdicts() {
        let gate = |gate: &str, passed| GateRecord {
            label: "//m:t".into(),
            gate: gate.into(),
            metric: "f1".into(),
            op: ">=".into(),
            threshold: 0.5,
            actual: 0.6,
            passed,
        };
        assert_eq!(show_gates(&[]), "-");
        assert_eq!(show_gates(&[gate("a", true), gate("b", true)]), "pass (2)");
        assert_eq!(
            show_gates(&[gate("a", false), gate("b", true), gate("c", false)]),
            "FAIL: a; c"
        );
    }
}
