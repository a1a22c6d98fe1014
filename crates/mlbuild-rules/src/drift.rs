//! The `drift` rule: compare a dataset's distribution with a reference dataset's, column by
//! column, and give a verdict.
//!
//! A model trained on last month's data silently degrades when this month's data shifts;
//! the build should say so before training or serving. Each dataset is read once in
//! constant memory ([`Sketch`] and [`TopK`] per column); numeric columns get PSI (over
//! `bins` bins cut at the reference's quantiles) and the KS statistic, categorical ones the
//! Jensen-Shannon distance. A column's status is `ok`, `warn` or `fail` by thresholds; the
//! verdict is the worst status. Main entry points: [`drift`] and [`run_cli`]
//! (`mlbuild rule drift`).

pub mod metrics;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::schema::{ColumnType, Format, Schema};
use crate::stats::{parse_f64, round, ColumnStats, Sketch, StatsKind, TopK};
use crate::validate::error::{DataError, DataErrorKind};
use crate::validate::reader::{self, Fields, RowPos, Visitor};
use crate::validate::{parse_args, parse_format, render_table, write_json, Outcome};
use metrics::Categorical;

/// Thresholds and binning of a drift check.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// PSI bins (default 10).
    pub bins: usize,
    /// PSI at or above which a numeric column warns (default 0.1).
    pub psi_warn: f64,
    /// PSI at or above which a numeric column fails (default 0.25).
    pub psi_fail: f64,
    /// JS distance at or above which a categorical column warns (default 0.1).
    pub js_warn: f64,
    /// JS distance at or above which a categorical column fails (default 0.2).
    pub js_fail: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            bins: 10,
            psi_warn: 0.1,
            psi_fail: 0.25,
            js_warn: 0.1,
            js_fail: 0.2,
        }
    }
}

/// A column's (or the whole check's) status, ordered from best to worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }

    fn by(value: f64, warn: f64, fail: f64) -> Status {
        if value >= fail {
            Status::Fail
        } else if value >= warn {
            Status::Warn
        } else {
            Status::Ok
        }
    }
}

/// What was compared in one column.
#[derive(Clone, Debug, PartialEq)]
pub enum Comparison {
    Numeric {
        psi: Option<metrics::Psi>,
        ks: Option<f64>,
        reference_mean: Option<f64>,
        data_mean: Option<f64>,
    },
    Categorical {
        js: Option<f64>,
        /// Up to 10 most frequent values of either side: (value, reference share, data share).
        top: Vec<(String, f64, f64)>,
    },
    /// Not compared (a `string` column, or the column is missing from one side).
    Skipped,
}

/// The drift of one column.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnDrift {
    pub name: String,
    pub status: Status,
    pub comparison: Comparison,
    /// Why the status is what it is, when it is not just the metric.
    pub note: Option<String>,
    pub reference_nulls: u64,
    pub data_nulls: u64,
}

/// The result of a drift check.
#[derive(Clone, Debug)]
pub struct DriftReport {
    pub verdict: Status,
    pub data_rows: u64,
    pub reference_rows: u64,
    pub thresholds: Thresholds,
    /// Sorted by name.
    pub columns: Vec<ColumnDrift>,
    /// Columns only one side has (without a schema they are not compared).
    pub only_in_data: Vec<String>,
    pub only_in_reference: Vec<String>,
}

/// How a column's values are collected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handling {
    Numeric,
    Categorical,
    Bool,
    Infer,
}

/// Collects per-column statistics of one dataset.
struct Collector<'s> {
    schema: Option<&'s Schema>,
    names: Vec<String>,
    handling: Vec<Handling>,
    stats: Vec<ColumnStats>,
}

impl<'s> Collector<'s> {
    fn new(schema: Option<&'s Schema>) -> Self {
        Collector {
            schema,
            names: Vec::new(),
            handling: Vec::new(),
            stats: Vec::new(),
        }
    }

    fn into_map(self) -> BTreeMap<String, ColumnStats> {
        self.names.into_iter().zip(self.stats).collect()
    }
}

impl Visitor for Collector<'_> {
    fn column(&mut self, name: &str, _pos: Option<RowPos>) -> Option<usize> {
        let (handling, stats) = match self.schema {
            None => (
                Handling::Infer,
                ColumnStats::new("inferred", StatsKind::Infer),
            ),
            Some(schema) => {
                let col = schema.column(name)?;
                let kind = match col.ty {
                    ColumnType::Int | ColumnType::Float => (Handling::Numeric, StatsKind::Numeric),
                    ColumnType::Category => (Handling::Categorical, StatsKind::Categorical),
                    ColumnType::Bool => (Handling::Bool, StatsKind::Categorical),
                    ColumnType::String => return None,
                };
                (kind.0, ColumnStats::new(col.ty.as_str(), kind.1))
            }
        };
        self.names.push(name.to_owned());
        self.handling.push(handling);
        self.stats.push(stats);
        Some(self.names.len() - 1)
    }

    fn row(&mut self, _pos: RowPos, fields: &Fields<'_>) {
        for (slot, (h, s)) in self.handling.iter().zip(&mut self.stats).enumerate() {
            let Some(v) = fields.get(slot) else { continue };
            match h {
                Handling::Infer => s.add_raw(v),
                Handling::Numeric => match parse_f64(v) {
                    Some(x) => s.add_number(x),
                    None => s.add_invalid(),
                },
                Handling::Categorical => s.add_text(v),
                Handling::Bool => match v {
                    b"1" => s.add_text(b"true"),
                    b"0" => s.add_text(b"false"),
                    _ if v.eq_ignore_ascii_case(b"true") => s.add_text(b"true"),
                    _ if v.eq_ignore_ascii_case(b"false") => s.add_text(b"false"),
                    _ => s.add_invalid(),
                },
            }
        }
    }
}

fn collect(
    path: &Path,
    format: Format,
    schema: Option<&Schema>,
) -> Result<(u64, BTreeMap<String, ColumnStats>), DataError> {
    let mut c = Collector::new(schema);
    let (delimiter, nulls) = match schema {
        Some(s) => (s.delimiter, s.null_values.clone()),
        None => (b',', vec![String::new()]),
    };
    let rows = reader::read(path, format, delimiter, &nulls, &mut c)?;
    Ok((rows, c.into_map()))
}

/// Compare the dataset at `data` with the one at `reference`. With a schema, its columns
/// are compared (by declared type; `string` columns are skipped); without, the columns
/// both datasets share, numeric if every non-null value of both parses as a float.
pub fn drift(
    data: (&Path, Format),
    reference: (&Path, Format),
    schema: Option<&Schema>,
    t: Thresholds,
) -> Result<DriftReport, DataError> {
    let (data_rows, cur) = collect(data.0, data.1, schema)?;
    let (reference_rows, base) = collect(reference.0, reference.1, schema)?;
    let mut columns = Vec::new();
    let names: Vec<String> = match schema {
        Some(s) => s
            .columns
            .iter()
            .filter(|c| c.ty != ColumnType::String)
            .map(|c| c.name.clone())
            .collect(),
        None => cur
            .keys()
            .filter(|k| base.contains_key(*k))
            .cloned()
            .collect(),
    };
    for name in &names {
        let (c, b) = (cur.get(name), base.get(name));
        let nulls = |s: Option<&ColumnStats>, rows: u64| s.map_or(rows, |s| rows - s.values());
        let mut col = ColumnDrift {
            name: name.clone(),
            status: Status::Ok,
            comparison: Comparison::Skipped,
            note: None,
            reference_nulls: nulls(b, reference_rows),
            data_nulls: nulls(c, data_rows),
        };
        match (c, b) {
            (Some(c), Some(b)) => compare(&mut col, c, b, &t),
            (None, _) => {
                col.status = Status::Fail;
                col.note = Some("column missing from the data".into());
            }
            (_, None) => {
                col.status = Status::Fail;
                col.note = Some("column missing from the reference".into());
            }
        }
        columns.push(col);
    }
    columns.sort_by(|a, b| a.name.cmp(&b.name));
    let only = |a: &BTreeMap<String, ColumnStats>, b: &BTreeMap<String, ColumnStats>| {
        a.keys()
            .filter(|k| !b.contains_key(*k) && !names.contains(k))
            .cloned()
            .collect::<Vec<_>>()
    };
    Ok(DriftReport {
        verdict: columns.iter().map(|c| c.status).max().unwrap_or(Status::Ok),
        data_rows,
        reference_rows,
        thresholds: t,
        only_in_data: if schema.is_none() {
            only(&cur, &base)
        } else {
            Vec::new()
        },
        only_in_reference: if schema.is_none() {
            only(&base, &cur)
        } else {
            Vec::new()
        },
        columns,
    })
}

fn compare(col: &mut ColumnDrift, c: &ColumnStats, b: &ColumnStats, t: &Thresholds) {
    let numeric = (c.is_numeric() && b.is_numeric()) || c.kind() == StatsKind::Numeric;
    if numeric {
        let empty = Sketch::new();
        let (cs, bs) = (
            sketch_of(c).unwrap_or(&empty),
            sketch_of(b).unwrap_or(&empty),
        );
        let psi = metrics::psi(bs, cs, t.bins);
        let ks = metrics::ks(bs, cs);
        col.status = match &psi {
            Some(p) => Status::by(p.value, t.psi_warn, t.psi_fail),
            None => empty_sides(col, cs.count(), bs.count()),
        };
        col.comparison = Comparison::Numeric {
            psi,
            ks,
            reference_mean: b.numeric.as_ref().and_then(|n| n.mean()),
            data_mean: c.numeric.as_ref().and_then(|n| n.mean()),
        };
        return;
    }
    let empty = TopK::new();
    let (ct, bt) = (
        c.top.as_ref().unwrap_or(&empty),
        b.top.as_ref().unwrap_or(&empty),
    );
    let (cd, bd) = (Categorical::from_topk(ct), Categorical::from_topk(bt));
    let js = metrics::js_distance(&bd, &cd);
    col.status = match js {
        Some(js) => Status::by(js, t.js_warn, t.js_fail),
        None => empty_sides(col, ct.total(), bt.total()),
    };
    // The most frequent values of either side, by combined share.
    let share = |d: &Categorical<'_>, k: &[u8]| {
        d.counts
            .get(k)
            .map_or(0.0, |&n| n as f64 / d.total.max(1) as f64)
    };
    let mut keys: Vec<&[u8]> = cd.counts.keys().chain(bd.counts.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    let mut top: Vec<(String, f64, f64)> = keys
        .into_iter()
        .map(|k| {
            (
                String::from_utf8_lossy(k).into_owned(),
                share(&bd, k),
                share(&cd, k),
            )
        })
        .collect();
    top.sort_by(|a, b| {
        (b.1 + b.2)
            .total_cmp(&(a.1 + a.2))
            .then_with(|| a.0.cmp(&b.0))
    });
    top.truncate(10);
    col.comparison = Comparison::Categorical { js, top };
}

fn sketch_of(s: &ColumnStats) -> Option<&Sketch> {
    s.numeric.as_ref().map(|n| &n.sketch)
}

/// The status of a column with no values on at least one side.
fn empty_sides(col: &mut ColumnDrift, data: u64, reference: u64) -> Status {
    match (data, reference) {
        (0, 0) => {
            col.note = Some("no values on either side".into());
            Status::Ok
        }
        (0, _) => {
            col.note = Some("no values in the data".into());
            Status::Fail
        }
        _ => {
            col.note = Some("no values in the reference".into());
            Status::Fail
        }
    }
}

fn opt(x: Option<f64>) -> Value {
    x.map_or(Value::Null, |x| Value::from(round(x)))
}

impl DriftReport {
    /// The JSON written as `drift.json`.
    pub fn to_json(&self) -> Value {
        let mut columns = Map::new();
        for c in &self.columns {
            let mut m = Map::new();
            m.insert("status".into(), c.status.as_str().into());
            m.insert("note".into(), c.note.clone().into());
            m.insert(
                "nulls".into(),
                json!({"reference": c.reference_nulls, "data": c.data_nulls}),
            );
            match &c.comparison {
                Comparison::Numeric {
                    psi,
                    ks,
                    reference_mean,
                    data_mean,
                } => {
                    m.insert("kind".into(), "numeric".into());
                    m.insert("psi".into(), opt(psi.as_ref().map(|p| p.value)));
                    m.insert("ks".into(), opt(*ks));
                    m.insert(
                        "mean".into(),
                        json!({"reference": opt(*reference_mean), "data": opt(*data_mean)}),
                    );
                    if let Some(p) = psi {
                        let r = |v: &[f64]| v.iter().map(|x| round(*x)).collect::<Vec<_>>();
                        m.insert(
                            "bins".into(),
                            json!({"edges": r(&p.edges), "reference": r(&p.reference), "data": r(&p.data)}),
                        );
                    }
                }
                Comparison::Categorical { js, top } => {
                    m.insert("kind".into(), "categorical".into());
                    m.insert("js".into(), opt(*js));
                    let top: Vec<Value> = top
                        .iter()
                        .map(|(v, r, d)| json!({"value": v, "reference": round(*r), "data": round(*d)}))
                        .collect();
                    m.insert("top".into(), Value::Array(top));
                }
                Comparison::Skipped => {
                    m.insert("kind".into(), "skipped".into());
                }
            }
            columns.insert(c.name.clone(), Value::Object(m));
        }
        let t = &self.thresholds;
        json!({
            "verdict": self.verdict.as_str(),
            "rows": {"data": self.data_rows, "reference": self.reference_rows},
            "thresholds": {
                "bins": t.bins, "psi_warn": t.psi_warn, "psi_fail": t.psi_fail,
                "js_warn": t.js_warn, "js_fail": t.js_fail,
            },
            "columns": columns,
            "only_in_data": self.only_in_data,
            "only_in_reference": self.only_in_reference,
            "method": {
                "psi": format!(
                    "bins cut at the reference's quantiles; empty bins count as {}",
                    metrics::PSI_EPSILON
                ),
                "ks": "two-sample KS statistic on the sketch's log-linear bucket grid (64 buckets per power of two)",
                "js": "Jensen-Shannon distance, base 2",
            },
        })
    }

    /// The per-column table printed on stderr.
    pub fn table(&self) -> String {
        let mut rows: Vec<[String; 4]> = Vec::new();
        for c in &self.columns {
            let f = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.4}"));
            let metric = match &c.comparison {
                Comparison::Numeric { psi, ks, .. } => {
                    format!("psi {} ks {}", f(psi.as_ref().map(|p| p.value)), f(*ks))
                }
                Comparison::Categorical { js, .. } => format!("js {}", f(*js)),
                Comparison::Skipped => "-".into(),
            };
            rows.push([
                c.name.clone(),
                c.status.as_str().into(),
                metric,
                c.note.clone().unwrap_or_default(),
            ]);
        }
        render_table(["column", "status", "metric", "note"], &rows, &[])
    }
}

/// `mlbuild rule drift`: compare a dataset with a reference dataset and write
/// `<out>/drift.json`.
///
/// Exit codes (the action's): 0 verdict `ok` or `warn` (warnings are printed), 1 `fail`,
/// 2 bad input (schema error, unreadable or malformed file, bad arguments).
#[derive(Debug, clap::Parser)]
#[command(name = "mlbuild rule drift", no_binary_name = true)]
pub struct DriftArgs {
    /// The dataset to check (`.csv`, `.jsonl` or `.ndjson`).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// The reference dataset it is compared with.
    #[arg(long, value_name = "FILE")]
    pub reference: PathBuf,
    /// A schema TOML naming the columns to compare and their types (optional).
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,
    /// The output directory; `drift.json` is written there.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The format of both files, overriding the schema and the extensions.
    #[arg(long, value_parser = parse_format)]
    pub format: Option<Format>,
    /// PSI bins, cut at the reference's quantiles.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(2..=1000))]
    pub bins: u16,
    /// PSI at or above which a numeric column warns.
    #[arg(long, default_value_t = 0.1)]
    pub psi_warn: f64,
    /// PSI at or above which a numeric column fails.
    #[arg(long, default_value_t = 0.25)]
    pub psi_fail: f64,
    /// Jensen-Shannon distance at or above which a categorical column warns.
    #[arg(long, default_value_t = 0.1)]
    pub js_warn: f64,
    /// Jensen-Shannon distance at or above which a categorical column fails.
    #[arg(long, default_value_t = 0.2)]
    pub js_fail: f64,
}

/// The entry point of `mlbuild rule drift ARGS...`; see [`DriftArgs`].
pub fn run_cli(args: &[String]) -> Result<Outcome, DataError> {
    let Some(args) = parse_args::<DriftArgs>(args)? else {
        return Ok(Outcome::Passed);
    };
    let usage = |m: String| DataError::new(DataErrorKind::Usage, m);
    for (name, warn, fail) in [
        ("psi", args.psi_warn, args.psi_fail),
        ("js", args.js_warn, args.js_fail),
    ] {
        if !(warn.is_finite() && fail.is_finite() && warn >= 0.0 && warn <= fail) {
            return Err(usage(format!(
                "`--{name}-warn` ({warn}) and `--{name}-fail` ({fail}) must be numbers with 0 <= warn <= fail"
            )));
        }
    }
    let schema = args.schema.as_deref().map(Schema::load).transpose()?;
    let fmt = args.format.or(schema.as_ref().and_then(|s| s.format));
    let data_format = reader::detect_format(&args.data, fmt)?;
    let reference_format = reader::detect_format(&args.reference, fmt)?;
    let t = Thresholds {
        bins: usize::from(args.bins),
        psi_warn: args.psi_warn,
        psi_fail: args.psi_fail,
        js_warn: args.js_warn,
        js_fail: args.js_fail,
    };
    let report = drift(
        (&args.data, data_format),
        (&args.reference, reference_format),
        schema.as_ref(),
        t,
    )?;
    write_json(&args.out, "drift.json", &report.to_json())?;
    eprint!("{}", report.table());
    let counts: HashMap<Status, usize> = report.columns.iter().fold(HashMap::new(), |mut m, c| {
        *m.entry(c.status).or_default() += 1;
        m
    });
    let n = |s| counts.get(&s).copied().unwrap_or(0);
    let summary = format!(
        "`{}` vs reference `{}`: {} column(s) compared, {} warn, {} fail",
        args.data.display(),
        args.reference.display(),
        report.columns.len(),
        n(Status::Warn),
        n(Status::Fail)
    );
    match report.verdict {
        Status::Ok => {
            eprintln!("drift ok: {summary}");
            Ok(Outcome::Passed)
        }
        Status::Warn => {
            eprintln!("warning: drift: {summary}");
            Ok(Outcome::Passed)
        }
        Status::Fail => Ok(Outcome::Failed(format!("drift: {summary}"))),
    }
}
