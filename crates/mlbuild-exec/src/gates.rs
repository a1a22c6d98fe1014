//! Checking a target's metric gates after its action succeeded or was reused.
//!
//! Gates run on every build, cache hit or not: they are cheap, and their outcome depends
//! on the baseline as well as on the outputs, so caching it with the action would hide a
//! new baseline. Metrics are read from the output blobs in the store, flattened to dotted
//! names, and kept so the build can record them in the history, with every gate's verdict
//! and the variant each sweep selection picked (for `mlbuild exp show`). Main types:
//! [`GateRunner`], [`GateResult`], [`GateError`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use miette::{Diagnostic, NamedSource, SourceSpan};
use mlbuild_store::{GateRecord, MetricValues, OutputFile, SelectionRecord, Store};
use mlbuild_workspace::{
    suggest, Baseline, Gate, SourceText, Span, Target, Threshold, Workspace, SELECTION_FILE,
};
use serde::Serialize;

use crate::events::Event;
use crate::ExecError;

/// The outcome of one gate of one target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GateResult {
    pub label: String,
    /// The expression as written in `BUILD.toml`.
    pub gate: String,
    pub metric: String,
    /// `>=`, `<=`, `>`, `<`, `==` or `!=`.
    pub op: String,
    /// The value compared against, after applying any baseline adjustment.
    pub threshold: f64,
    pub actual: f64,
    pub passed: bool,
    /// The baseline the threshold came from (`build:NAME` or `//path`), if any.
    pub baseline: Option<String>,
    /// The baseline metric's value before adjustment.
    pub baseline_value: Option<f64>,
}

/// A gate or metrics problem, pointing into the target's `BUILD.toml`.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
pub struct GateError {
    message: String,
    #[help]
    help: Option<String>,
    #[source_code]
    source_code: NamedSource<Arc<SourceText>>,
    #[label("{label}")]
    span: SourceSpan,
    label: String,
    /// Whether the workspace is at fault (a gate on a metric that does not exist, a
    /// missing baseline) rather than the action (a metrics file that is not JSON).
    pub(crate) input: bool,
}

impl GateError {
    fn new(target: &Target, span: Span, label: &str, message: String, input: bool) -> Box<Self> {
        Box::new(GateError {
            message,
            help: None,
            source_code: NamedSource::new(&target.source.name, Arc::clone(&target.source)),
            span: span.into(),
            label: label.to_owned(),
            input,
        })
    }

    fn help(mut self: Box<Self>, help: impl Into<String>) -> Box<Self> {
        self.help = Some(help.into());
        self
    }
}

/// A baseline's metrics, resolved once per build.
enum Resolved {
    /// A build in the history: metrics are looked up per target.
    Build { id: i64 },
    /// A metrics file: the same values for every target that names it.
    File(MetricValues),
}

/// Checks gates during one build and collects every target's metrics for the history.
pub struct GateRunner {
    ws_id: String,
    /// What `baseline = "channel:NAME"` compares against: read from the channels' logs
    /// by the caller before the build (the executor knows nothing of channels).
    channels: HashMap<String, Result<MetricValues, String>>,
    baselines: HashMap<Baseline, Result<Resolved, String>>,
    /// `(label, metrics)` of every target whose metrics were read, in completion order.
    pub recorded: Vec<(String, MetricValues)>,
    /// Every gate checked, for the history (`mlbuild exp show`).
    pub checked: Vec<GateRecord>,
    /// The variant each sweep selection of this build picked, for the history.
    pub selections: Vec<SelectionRecord>,
}

impl GateRunner {
    pub fn new(ws_id: &str) -> GateRunner {
        GateRunner {
            ws_id: ws_id.to_owned(),
            channels: HashMap::new(),
            baselines: HashMap::new(),
            recorded: Vec::new(),
            checked: Vec::new(),
            selections: Vec::new(),
        }
    }

    /// Sets the metrics `baseline = "channel:NAME"` compares against, by channel.
    pub fn with_channels(
        mut self,
        channels: HashMap<String, Result<MetricValues, String>>,
    ) -> Self {
        self.channels = channels;
        self
    }

    /// Reads the metrics of `target` (whose action produced `outputs`), checks its gates
    /// and reports each result as an event. `Err` when a gate failed or cannot be checked;
    /// targets without metrics cost nothing.
    pub fn check(
        &mut self,
        ws: &Workspace,
        store: &Store,
        target: &Target,
        outputs: &BTreeMap<String, OutputFile>,
        events: &dyn Fn(Event),
    ) -> Result<(), ExecError> {
        if target.select.is_some() {
            self.note_selection(store, target, outputs);
        }
        if target.metrics.is_empty() {
            return Ok(());
        }
        let label = target.label.to_string();
        let metrics = read_metrics(store, target, outputs)?;
        self.recorded.push((label.clone(), metrics.clone()));
        let mut results = Vec::with_capacity(target.gates.len());
        for gate in &target.gates {
            let Some(&actual) = metrics.get(&gate.metric) else {
                return Err(missing_metric(target, gate, &metrics).into());
            };
            let (threshold, baseline_value) = match &gate.threshold {
                Threshold::Number(n) => (*n, None),
                Threshold::Baseline { metric, adjust } => {
                    let base = self.baseline_value(ws, store, target, gate, metric)?;
                    (adjust.map_or(base, |a| a.apply(base)), Some(base))
                }
            };
            let result = GateResult {
                label: label.clone(),
                gate: gate.text.clone(),
                metric: gate.metric.clone(),
                op: gate.op.as_str().to_owned(),
                threshold,
                actual,
                passed: gate.op.holds(actual, threshold),
                baseline: baseline_value.and(target.baseline.as_ref().map(ToString::to_string)),
                baseline_value,
            };
            events(Event::GateChecked(result.clone()));
            self.checked.push(GateRecord {
                label: result.label.clone(),
                gate: result.gate.clone(),
                metric: result.metric.clone(),
                op: result.op.clone(),
                threshold: result.threshold,
                actual: result.actual,
                passed: result.passed,
            });
            results.push(result);
        }
        let failed: Vec<&GateResult> = results.iter().filter(|r| !r.passed).collect();
        if failed.is_empty() {
            return Ok(());
        }
        Err(ExecError::GatesFailed {
            label,
            failed: failed.len(),
            total: results.len(),
            table: gate_table(&failed),
        })
    }

    /// Notes the variant a selection picked, from the `selection.json` it wrote (read from
    /// the store, cache hits included). Only the history misses a selection that cannot be
    /// read: the build itself does not depend on it.
    fn note_selection(
        &mut self,
        store: &Store,
        target: &Target,
        outputs: &BTreeMap<String, OutputFile>,
    ) {
        let selected = outputs
            .get(SELECTION_FILE)
            .and_then(|out| std::fs::read(store.blob_path(&out.digest)).ok())
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .and_then(|doc| doc.get("selected")?.as_str().map(str::to_owned));
        if let Some(selected) = selected {
            self.selections.push(SelectionRecord {
                label: target.label.to_string(),
                selected,
            });
        }
    }

    fn baseline_value(
        &mut self,
        ws: &Workspace,
        store: &Store,
        target: &Target,
        gate: &Gate,
        metric: &str,
    ) -> Result<f64, ExecError> {
        let baseline = target
            .baseline
            .as_ref()
            .expect("gates refer to a baseline only when the target has one");
        let baseline_span = target.spans.baseline.clone().unwrap_or_default();
        let resolved = self
            .baselines
            .entry(baseline.clone())
            .or_insert_with(|| resolve(ws, store, &self.ws_id, &self.channels, baseline));
        let label = target.label.to_string();
        let values = match resolved {
            Err(message) => {
                let help = match baseline {
                    Baseline::Build(name) => format!("name a build with `mlbuild build --name {name} ...`; `mlbuild log` and `mlbuild stats` show earlier builds"),
                    Baseline::File(_) => "the file must be a JSON object whose numeric leaves are metrics".to_owned(),
                    Baseline::Channel(name) => format!("promote a model to it first: `mlbuild promote TARGET --to {name}`; `mlbuild channel list` shows the channels"),
                };
                return Err(GateError::new(
                    target,
                    baseline_span,
                    "baseline",
                    message.clone(),
                    true,
                )
                .help(help)
                .into());
            }
            Ok(Resolved::File(values)) => values.clone(),
            Ok(Resolved::Build { id }) => match store.metrics_of(*id, &label)? {
                Some(record) => record.values,
                None => return Err(GateError::new(
                    target,
                    baseline_span,
                    "baseline",
                    format!(
                        "baseline `{baseline}` (build #{id}) recorded no metrics for `{label}`"
                    ),
                    true,
                )
                .help("choose a build that built this target with its `metrics`, or a metrics file")
                .into()),
            },
        };
        match values.get(metric) {
            Some(v) => Ok(*v),
            None => {
                let mut help = format!(
                    "the baseline has {}",
                    names(values.keys().map(String::as_str))
                );
                if let Some(s) = suggest(metric, values.keys().map(String::as_str)) {
                    help = format!("did you mean `baseline.{s}`? {help}");
                }
                Err(GateError::new(
                    target,
                    gate.baseline_span.clone().unwrap_or(baseline_span),
                    "not in the baseline",
                    format!("baseline `{baseline}` of `{label}` has no metric `{metric}`"),
                    true,
                )
                .help(help)
                .into())
            }
        }
    }
}

fn resolve(
    ws: &Workspace,
    store: &Store,
    ws_id: &str,
    channels: &HashMap<String, Result<MetricValues, String>>,
    baseline: &Baseline,
) -> Result<Resolved, String> {
    match baseline {
        Baseline::Channel(name) => match channels.get(name) {
            Some(Ok(values)) => Ok(Resolved::File(values.clone())),
            Some(Err(why)) => Err(why.clone()),
            None => Err(format!("channel `{name}` was not read for this build")),
        },
        Baseline::Build(name) => match store.find_invocation(ws_id, name) {
            Ok(Some(record)) => Ok(Resolved::Build { id: record.id }),
            Ok(None) => Err(format!(
                "baseline build `{name}` not found in this workspace's history"
            )),
            Err(e) => Err(format!("cannot read the build history: {e}")),
        },
        Baseline::File(path) => {
            let abs = ws.root.join(path);
            let bytes = std::fs::read(&abs)
                .map_err(|e| format!("cannot read baseline file `{path}`: {e}"))?;
            parse_metrics(&bytes)
                .map(Resolved::File)
                .map_err(|e| format!("baseline file `{path}` is not a metrics file: {e}"))
        }
    }
}

/// Reads and merges the target's metrics files from its outputs.
fn read_metrics(
    store: &Store,
    target: &Target,
    outputs: &BTreeMap<String, OutputFile>,
) -> Result<MetricValues, ExecError> {
    let mut all = MetricValues::new();
    for (file, span) in target.metrics.iter().zip(&target.spans.metrics) {
        let fail = |message: String| -> ExecError {
            GateError::new(target, span.clone(), "this metrics file", message, false).into()
        };
        let Some(out) = outputs.get(file) else {
            return Err(fail(format!(
                "`{}` did not create its metrics file `{file}`",
                target.label
            )));
        };
        let bytes = std::fs::read(store.blob_path(&out.digest)).map_err(|e| {
            fail(format!(
                "cannot read metrics file `{file}` of `{}`: {e}",
                target.label
            ))
        })?;
        let values = parse_metrics(&bytes).map_err(|e| {
            fail(format!(
                "metrics file `{file}` of `{}` is not a JSON object of metrics: {e}",
                target.label
            ))
        })?;
        for (name, value) in values {
            if all.insert(name.clone(), value).is_some() {
                return Err(fail(format!(
                    "metric `{name}` of `{}` appears in more than one metrics file",
                    target.label
                )));
            }
        }
    }
    Ok(all)
}

pub use mlbuild_store::parse_metrics;

fn missing_metric(target: &Target, gate: &Gate, metrics: &MetricValues) -> Box<GateError> {
    let files = target
        .metrics
        .iter()
        .map(|f| format!("`{f}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut help = format!("{files} has {}", names(metrics.keys().map(String::as_str)));
    if let Some(s) = suggest(&gate.metric, metrics.keys().map(String::as_str)) {
        help = format!("did you mean `{s}`? {help}");
    }
    GateError::new(
        target,
        gate.metric_span.clone(),
        "no such metric",
        format!(
            "gate `{}` of `{}`: metric `{}` is not in {files}",
            gate.text, target.label, gate.metric
        ),
        true,
    )
    .help(help)
}

/// `metrics `a`, `b` and 3 more` for help lines.
fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let all: Vec<&str> = names.collect();
    if all.is_empty() {
        return "no numeric metrics".to_owned();
    }
    let shown: Vec<String> = all.iter().take(8).map(|n| format!("`{n}`")).collect();
    let more = all.len().saturating_sub(8);
    let mut text = format!("metrics {}", shown.join(", "));
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

/// Significant digits of a formatted metric value, the precision of C's `%g`.
const SIGNIFICANT_DIGITS: i32 = 6;

/// A number as people write it: `50`, `0.9`, `0.89` (not `0.8900000000000001`), `8.9e-5`
/// (not `8.900000000000574e-5`). Six significant digits with trailing zeros dropped, so a
/// difference of two metrics does not print its floating-point noise; scientific notation
/// below 1e-4 and from 1e15, where positional notation would be all zeros.
pub fn fmt_value(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v == 0.0 {
        return "0".to_owned();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    // Rounding to significant digits first decides the exponent: 9.9999996 is `10`.
    let sci = format!("{v:.*e}", (SIGNIFICANT_DIGITS - 1) as usize);
    let (mantissa, exp) = sci.split_once('e').expect("`{:e}` writes an exponent");
    let exp: i32 = exp.parse().expect("`{:e}` writes an integer exponent");
    if !(-4..15).contains(&exp) {
        return format!("{}e{exp}", trim_zeros(mantissa));
    }
    let decimals = (SIGNIFICANT_DIGITS - 1 - exp).max(0) as usize;
    trim_zeros(&format!("{v:.decimals$}")).to_owned()
}

/// `0.8900` -> `0.89`, `2.000` -> `2`; integers are left alone.
fn trim_zeros(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

/// How a gate's threshold reads in a table: `0.9`, or `0.89 (baseline 0.9 - 0.01)`.
pub fn fmt_threshold(r: &GateResult) -> String {
    match r.baseline_value {
        Some(base) if base != r.threshold => {
            format!("{} (baseline {})", fmt_value(r.threshold), fmt_value(base))
        }
        Some(_) => format!("{} (baseline)", fmt_value(r.threshold)),
        None => fmt_value(r.threshold),
    }
}

/// A plain-text table of gate results: target, metric, op, threshold, actual, result.
pub fn gate_table(results: &[&GateResult]) -> String {
    let header = ["target", "metric", "op", "threshold", "actual", "result"];
    let rows: Vec<[String; 6]> = results
        .iter()
        .map(|r| {
            [
                r.label.clone(),
                r.metric.clone(),
                r.op.clone(),
                fmt_threshold(r),
                fmt_value(r.actual),
                if r.passed { "pass" } else { "FAIL" }.to_owned(),
            ]
        })
        .collect();
    // The same look as the command tables (`mlbuild metrics`): no borders, columns two
    // spaces apart, no trailing spaces.
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::NOTHING);
    table.set_header(header.to_vec());
    table.add_rows(rows);
    let last = header.len() - 1;
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if i == last { 0 } else { 2 }));
    }
    table.trim_fmt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_flattened_numeric_leaves() {
        let m = parse_metrics(
            br#"{"f1": 0.9, "eval": {"auc": 0.95, "n": 10, "name": "x", "ok": true},
                "hist": [1, 2], "none": null}"#,
        )
        .unwrap();
        let expected: MetricValues = [("f1", 0.9), ("eval.auc", 0.95), ("eval.n", 10.0)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(m, expected);
        assert!(parse_metrics(b"[1, 2]")
            .unwrap_err()
            .contains("not an object"));
        assert!(parse_metrics(b"{").is_err());
    }

    #[test]
    fn values_format_like_people_write_them() {
        for (value, text) in [
            (50.0, "50"),
            (0.9, "0.9"),
            (0.9 - 0.01, "0.89"),
            (-3.5, "-3.5"),
            (0.0, "0"),
            (-0.0, "0"),
            (1e-7, "1e-7"),
            // Differences of metrics carry floating-point noise in their last digits.
            (8.900000000000574e-5, "8.9e-5"),
            (-8.900000000000574e-5, "-8.9e-5"),
            (0.85 - 0.8, "0.05"),
            (0.1 + 0.2, "0.3"),
            // Six significant digits, wherever the decimal point is.
            (0.000123456789, "0.000123457"),
            (1.23456789, "1.23457"),
            (123456.789, "123457"),
            (1234567.5, "1234568"),
            // Rounding can carry into the next power of ten.
            (9.9999996, "10"),
            (0.000099999996, "0.0001"),
            (1e15, "1e15"),
            (-2.5e20, "-2.5e20"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "inf"),
        ] {
            assert_eq!(fmt_value(value), text, "{value:e}");
        }
    }

    #[test]
    fn table_aligns_columns() {
        let r = |metric: &str, passed, baseline_value| GateResult {
            label: "//m:t".into(),
            gate: String::new(),
            metric: metric.into(),
            op: ">=".into(),
            threshold: 0.89,
            actual: 0.85,
            passed,
            baseline: None,
            baseline_value,
        };
        let (a, b) = (r("f1", false, Some(0.9)), r("accuracy", true, None));
        assert_eq!(
            gate_table(&[&a, &b]),
            "target  metric    op  threshold            actual  result\n\
             //m:t   f1        >=  0.89 (baseline 0.9)  0.85    FAIL\n\
             //m:t   accuracy  >=  0.89                 0.85    pass"
        );
    }
}
