//! The `validate` rule: check a CSV or JSON Lines dataset against a [`Schema`] in one
//! streaming pass, and describe it.
//!
//! A pipeline should stop at bad data before it trains on it, and say exactly what is bad:
//! each failure names the column, the rule, how many rows break it and up to
//! [`SAMPLES`] of them (row, line, value). Memory is constant in the number of rows except
//! for `unique` columns, which keep a set of 16-byte (xxh3-128) hashes of the values seen.
//! Statistics ([`DatasetStats`]) are gathered in the same pass. Main entry points:
//! [`validate`] (library) and [`run_cli`] (`mlbuild rule validate`).

pub mod error;
pub mod reader;
mod seen;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::schema::{Allowed, Bound, Column, ColumnType, ExtraColumns, Format, Schema};
use crate::stats::{parse_f64, parse_i64, ColumnStats, DatasetStats, StatsKind};
use error::{DataError, DataErrorKind};
use reader::{Fields, RowPos, Visitor};
use seen::Seen;

/// Most sample rows kept per (column, rule).
pub const SAMPLES: usize = 5;
/// Longest sample value shown, in characters.
const SAMPLE_CHARS: usize = 100;

/// A rule a value, column or dataset can break; the name is the one in reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    MinRows,
    MaxRows,
    FieldCount,
    MissingColumn,
    ExtraColumn,
    Type,
    NotNull,
    Min,
    Max,
    Allowed,
    Regex,
    Unique,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::MinRows => "min_rows",
            Rule::MaxRows => "max_rows",
            Rule::FieldCount => "field_count",
            Rule::MissingColumn => "missing_column",
            Rule::ExtraColumn => "extra_column",
            Rule::Type => "type",
            Rule::NotNull => "not_null",
            Rule::Min => "min",
            Rule::Max => "max",
            Rule::Allowed => "allowed",
            Rule::Regex => "regex",
            Rule::Unique => "unique",
        }
    }
}

/// A sample of a failure: where, and the offending value (`None` for null).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub row: u64,
    pub line: u64,
    pub value: Option<String>,
}

/// One broken rule: how many rows break it and a few of them.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// `None` for dataset-level rules (`min_rows`, `max_rows`, `field_count`).
    pub column: Option<String>,
    pub rule: Rule,
    pub count: u64,
    pub message: String,
    pub samples: Vec<Sample>,
}

/// The result of validating a dataset.
#[derive(Clone, Debug)]
pub struct Report {
    pub format: Format,
    pub rows: u64,
    /// Sorted by column (dataset-level first), then rule.
    pub failures: Vec<Failure>,
    pub stats: DatasetStats,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The JSON written as `report.json`.
    pub fn to_json(&self) -> Value {
        let failures: Vec<Value> = self
            .failures
            .iter()
            .map(|f| {
                let samples: Vec<Value> = f
                    .samples
                    .iter()
                    .map(|s| json!({"row": s.row, "line": s.line, "value": s.value}))
                    .collect();
                json!({
                    "column": f.column,
                    "rule": f.rule.as_str(),
                    "count": f.count,
                    "message": f.message,
                    "samples": samples,
                })
            })
            .collect();
        json!({
            "verdict": if self.passed() { "pass" } else { "fail" },
            "format": self.format.as_str(),
            "rows": self.rows,
            "failures": failures,
        })
    }

    /// The human-readable failure table printed on stderr.
    pub fn table(&self) -> String {
        let mut rows: Vec<[String; 4]> = Vec::new();
        for f in &self.failures {
            let samples: Vec<String> = f
                .samples
                .iter()
                .map(|s| match &s.value {
                    Some(v) => format!("{}: {v:?}", s.row),
                    None => format!("{}: null", s.row),
                })
                .collect();
            let samples = if samples.is_empty() {
                f.message.clone()
            } else {
                format!("{} ({})", samples.join(", "), f.message)
            };
            rows.push([
                f.column.clone().unwrap_or_else(|| "(dataset)".into()),
                f.rule.as_str().into(),
                f.count.to_string(),
                samples,
            ]);
        }
        render_table(
            ["column", "rule", "rows", "samples (row: value)"],
            &rows,
            &[2],
        )
    }
}

/// A table for stderr: columns two spaces apart, no trailing spaces; the columns in
/// `right` (counts) are right-aligned.
pub(crate) fn render_table<const N: usize>(
    header: [&str; N],
    rows: &[[String; N]],
    right: &[usize],
) -> String {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::NOTHING);
    table.set_header(header.to_vec());
    table.add_rows(rows.iter().map(|r| r.to_vec()));
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if i + 1 == N { 0 } else { 2 }));
        if right.contains(&i) {
            column.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    format!("{}\n", table.trim_fmt())
}

/// Validate the dataset at `data` against `schema`. The format is `format` if given, else
/// the schema's `[dataset] format`, else the file's extension.
pub fn validate(schema: &Schema, data: &Path, format: Option<Format>) -> Result<Report, DataError> {
    let format = reader::detect_format(data, format.or(schema.format))?;
    let mut v = Validator::new(schema, format)?;
    let rows = reader::read(data, format, schema.delimiter, &schema.null_values, &mut v)?;
    Ok(v.finish(schema, format, rows))
}

#[derive(Clone, Debug, Default)]
struct Tally {
    count: u64,
    samples: Vec<Sample>,
}

impl Tally {
    #[cold]
    fn hit(&mut self, pos: RowPos, value: Option<&[u8]>) {
        self.count += 1;
        if self.samples.len() < SAMPLES {
            self.samples.push(Sample {
                row: pos.row,
                line: pos.line,
                value: value.map(sample_text),
            });
        }
    }
}

fn sample_text(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(v);
    if s.chars().count() > SAMPLE_CHARS {
        let mut t: String = s.chars().take(SAMPLE_CHARS).collect();
        t.push('…');
        t
    } else {
        s.into_owned()
    }
}

const VALUE_RULES: [Rule; 7] = [
    Rule::Type,
    Rule::NotNull,
    Rule::Min,
    Rule::Max,
    Rule::Allowed,
    Rule::Regex,
    Rule::Unique,
];

fn rule_index(r: Rule) -> usize {
    VALUE_RULES.iter().position(|x| *x == r).unwrap_or(0)
}

/// One declared column's compiled rules, tallies and statistics.
struct Check {
    col: Column,
    present: bool,
    /// Allowed text values and their index in `counts`.
    allowed_text: Option<HashMap<Box<[u8]>, usize, foldhash::fast::FixedState>>,
    /// Occurrences of each allowed value (or of `false` / `true`), reported to the stats
    /// at the end: counting by index is cheaper than a top-values lookup per row.
    counts: Vec<u64>,
    allowed_int: Option<HashSet<i64, foldhash::fast::FixedState>>,
    regex: Option<regex::bytes::Regex>,
    seen: Option<Seen>,
    tallies: [Tally; VALUE_RULES.len()],
    stats: ColumnStats,
}

impl Check {
    fn new(col: &Column) -> Result<Check, DataError> {
        let regex = match &col.regex {
            None => None,
            Some(r) => Some(
                regex::bytes::Regex::new(&crate::schema::anchored(r)).map_err(|e| {
                    DataError::new(DataErrorKind::Schema, format!("invalid regex: {e}"))
                })?,
            ),
        };
        let kind = match col.ty {
            ColumnType::Int | ColumnType::Float => StatsKind::Numeric,
            ColumnType::String if col.unique => StatsKind::Text,
            ColumnType::String | ColumnType::Bool | ColumnType::Category => StatsKind::Categorical,
        };
        Ok(Check {
            allowed_text: match &col.allowed {
                Some(Allowed::Text(v)) => Some(
                    v.iter()
                        .enumerate()
                        .map(|(i, s)| (s.as_bytes().into(), i))
                        .collect(),
                ),
                _ => None,
            },
            counts: match (&col.allowed, col.ty) {
                (Some(Allowed::Text(v)), _) => vec![0; v.len()],
                (_, ColumnType::Bool) => vec![0; 2],
                _ => Vec::new(),
            },
            allowed_int: match &col.allowed {
                Some(Allowed::Int(v)) => Some(v.iter().copied().collect()),
                _ => None,
            },
            regex,
            seen: col.unique.then(Seen::default),
            tallies: Default::default(),
            stats: ColumnStats::new(col.ty.as_str(), kind),
            present: false,
            col: col.clone(),
        })
    }

    #[inline]
    fn fail(&mut self, rule: Rule, pos: RowPos, value: Option<&[u8]>) {
        self.tallies[rule_index(rule)].hit(pos, value);
    }

    #[inline]
    fn check(&mut self, pos: RowPos, value: Option<&[u8]>) {
        let Some(v) = value else {
            if !self.col.nullable {
                self.fail(Rule::NotNull, pos, None);
            }
            return;
        };
        let type_ok = match self.col.ty {
            ColumnType::Int => match parse_i64(v) {
                Some(i) => {
                    self.check_int(pos, v, i);
                    self.stats.add_number(i as f64);
                    true
                }
                None => false,
            },
            ColumnType::Float => match parse_f64(v) {
                Some(x) => {
                    self.check_float(pos, v, x);
                    self.stats.add_number(x);
                    true
                }
                None => false,
            },
            ColumnType::Bool => match parse_bool(v) {
                Some(b) => {
                    self.counts[usize::from(b)] += 1;
                    self.stats.add_uncounted();
                    true
                }
                None => false,
            },
            ColumnType::String | ColumnType::Category => {
                // An allowed value is known-good UTF-8: skip the validation.
                match self.allowed_text.as_ref().map(|a| a.get(v)) {
                    Some(Some(&i)) => {
                        self.counts[i] += 1;
                        self.stats.add_uncounted();
                        true
                    }
                    Some(None) if std::str::from_utf8(v).is_ok() => {
                        self.fail(Rule::Allowed, pos, Some(v));
                        self.stats.add_text(v);
                        true
                    }
                    None if std::str::from_utf8(v).is_ok() => {
                        self.stats.add_text(v);
                        true
                    }
                    _ => false,
                }
            }
        };
        if !type_ok {
            self.stats.add_invalid();
            self.fail(Rule::Type, pos, Some(v));
            return;
        }
        if let Some(re) = &self.regex {
            if !re.is_match(v) {
                self.fail(Rule::Regex, pos, Some(v));
            }
        }
        if let Some(seen) = &mut self.seen {
            if !seen.insert(xxhash_rust::xxh3::xxh3_128(v)) {
                self.fail(Rule::Unique, pos, Some(v));
            }
        }
    }

    #[inline]
    fn check_int(&mut self, pos: RowPos, v: &[u8], i: i64) {
        let below = |b: Bound| match b {
            Bound::Int(m) => i < m,
            Bound::Float(m) => (i as f64) < m,
        };
        let above = |b: Bound| match b {
            Bound::Int(m) => i > m,
            Bound::Float(m) => (i as f64) > m,
        };
        if self.col.min.is_some_and(below) {
            self.fail(Rule::Min, pos, Some(v));
        }
        if self.col.max.is_some_and(above) {
            self.fail(Rule::Max, pos, Some(v));
        }
        if let Some(allowed) = &self.allowed_int {
            if !allowed.contains(&i) {
                self.fail(Rule::Allowed, pos, Some(v));
            }
        }
    }

    #[inline]
    fn check_float(&mut self, pos: RowPos, v: &[u8], x: f64) {
        if self.col.min.is_some_and(|m| x < m.as_f64()) {
            self.fail(Rule::Min, pos, Some(v));
        }
        if self.col.max.is_some_and(|m| x > m.as_f64()) {
            self.fail(Rule::Max, pos, Some(v));
        }
    }

    fn message(&self, rule: Rule) -> String {
        let c = &self.col;
        match rule {
            Rule::Type => format!("not a valid `{}`", c.ty.as_str()),
            Rule::NotNull => "null in a column that is not `nullable`".into(),
            Rule::Min => format!(
                "below `min` {}",
                c.min.map_or(String::new(), |b| b.to_string())
            ),
            Rule::Max => format!(
                "above `max` {}",
                c.max.map_or(String::new(), |b| b.to_string())
            ),
            Rule::Allowed => "not one of the `allowed` values".into(),
            Rule::Regex => format!("does not match `{}`", c.regex.as_deref().unwrap_or("")),
            Rule::Unique => "repeats an earlier value of a `unique` column".into(),
            _ => String::new(),
        }
    }
}

/// `true`/`false` in any case, or `1`/`0`.
#[inline]
fn parse_bool(v: &[u8]) -> Option<bool> {
    match v {
        b"1" => Some(true),
        b"0" => Some(false),
        _ if v.eq_ignore_ascii_case(b"true") => Some(true),
        _ if v.eq_ignore_ascii_case(b"false") => Some(false),
        _ => None,
    }
}

/// The [`Visitor`] that checks rows against the schema.
struct Validator {
    format: Format,
    checks: Vec<Check>,
    /// Slot of each check is its index; extra columns get slots after them.
    extra: Vec<(String, Tally)>,
    extra_policy: ExtraColumns,
    ragged: Tally,
    ragged_expected: usize,
}

impl Validator {
    fn new(schema: &Schema, format: Format) -> Result<Validator, DataError> {
        Ok(Validator {
            format,
            checks: schema
                .columns
                .iter()
                .map(Check::new)
                .collect::<Result<_, _>>()?,
            extra: Vec::new(),
            extra_policy: schema.extra_columns,
            ragged: Tally::default(),
            ragged_expected: 0,
        })
    }

    fn finish(self, schema: &Schema, format: Format, rows: u64) -> Report {
        let mut failures = Vec::new();
        let dataset = |rule, count, message: String| Failure {
            column: None,
            rule,
            count,
            message,
            samples: Vec::new(),
        };
        if let Some(min) = schema.min_rows.filter(|m| rows < *m) {
            failures.push(dataset(
                Rule::MinRows,
                rows,
                format!("{rows} rows, fewer than `min_rows` {min}"),
            ));
        }
        if let Some(max) = schema.max_rows.filter(|m| rows > *m) {
            failures.push(dataset(
                Rule::MaxRows,
                rows,
                format!("{rows} rows, more than `max_rows` {max}"),
            ));
        }
        if self.ragged.count > 0 {
            failures.push(Failure {
                samples: self.ragged.samples.clone(),
                ..dataset(
                    Rule::FieldCount,
                    self.ragged.count,
                    format!(
                        "rows whose number of fields differs from the header's {}",
                        self.ragged_expected
                    ),
                )
            });
        }
        let mut stats = DatasetStats {
            rows,
            ..Default::default()
        };
        for (name, tally) in self.extra {
            failures.push(Failure {
                column: Some(name),
                rule: Rule::ExtraColumn,
                count: tally.count,
                message: "rows with a value in a column the schema does not declare".into(),
                samples: tally.samples,
            });
        }
        for check in self.checks {
            let name = check.col.name.clone();
            if !check.present && format == Format::Csv {
                failures.push(Failure {
                    column: Some(name),
                    rule: Rule::MissingColumn,
                    count: rows,
                    message: "declared column is not in the header".into(),
                    samples: Vec::new(),
                });
                continue;
            }
            for (i, tally) in check.tallies.iter().enumerate() {
                if tally.count > 0 {
                    failures.push(Failure {
                        column: Some(name.clone()),
                        rule: VALUE_RULES[i],
                        count: tally.count,
                        message: check.message(VALUE_RULES[i]),
                        samples: tally.samples.clone(),
                    });
                }
            }
            let mut column_stats = check.stats;
            match &check.col.allowed {
                Some(Allowed::Text(values)) => {
                    for (v, n) in values.iter().zip(&check.counts) {
                        column_stats.add_counted(v.as_bytes(), *n);
                    }
                }
                _ if check.col.ty == ColumnType::Bool => {
                    column_stats.add_counted(b"false", check.counts[0]);
                    column_stats.add_counted(b"true", check.counts[1]);
                }
                _ => {}
            }
            stats.columns.insert(name, column_stats);
        }
        failures.sort_by(|a, b| a.column.cmp(&b.column).then(a.rule.cmp(&b.rule)));
        Report {
            format: self.format,
            rows,
            failures,
            stats,
        }
    }
}

impl Visitor for Validator {
    fn column(&mut self, name: &str, pos: Option<RowPos>) -> Option<usize> {
        if let Some(i) = self.checks.iter().position(|c| c.col.name == name) {
            self.checks[i].present = true;
            return Some(i);
        }
        let _ = pos;
        match self.extra_policy {
            ExtraColumns::Allow => None,
            ExtraColumns::Error => {
                self.extra.push((name.to_owned(), Tally::default()));
                Some(self.checks.len() + self.extra.len() - 1)
            }
        }
    }

    #[inline]
    fn row(&mut self, pos: RowPos, fields: &Fields<'_>) {
        for (slot, check) in self.checks.iter_mut().enumerate() {
            if check.present {
                check.check(pos, fields.get(slot));
            }
        }
        let base = self.checks.len();
        for (i, (_, tally)) in self.extra.iter_mut().enumerate() {
            if let Some(v) = fields.get(base + i) {
                tally.hit(pos, Some(v));
            }
        }
    }

    fn expect_rows(&mut self, rows: u64) {
        // Reserving once avoids rehashing a set of millions of entries as it doubles; the
        // estimate is from the file size, so this is memory the set would reach anyway.
        let rows = usize::try_from(rows).unwrap_or(usize::MAX);
        for c in &mut self.checks {
            if let Some(seen) = &mut c.seen {
                seen.reserve(rows);
            }
        }
    }

    fn ragged(&mut self, pos: RowPos, expected: usize, got: usize) {
        self.ragged_expected = expected;
        self.ragged
            .hit(pos, Some(format!("{got} fields").as_bytes()));
    }
}

/// What a data rule concluded (bad input is an `Err` instead).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The check passed (possibly with warnings, already printed).
    Passed,
    /// The check failed; the one-line summary for the error message (details were
    /// printed on stderr and written to the output directory).
    Failed(String),
}

/// `mlbuild rule validate`: check a dataset against a schema and write
/// `<out>/report.json` and `<out>/stats.json`.
///
/// Exit codes (the action's): 0 the data is valid, 1 it is not (a table of failures is
/// printed on stderr), 2 bad input (schema error, unreadable or malformed file, bad
/// arguments).
#[derive(Debug, clap::Parser)]
#[command(name = "mlbuild rule validate", no_binary_name = true)]
pub struct ValidateArgs {
    /// The schema TOML file.
    #[arg(long, value_name = "FILE")]
    pub schema: PathBuf,
    /// The dataset (`.csv`, `.jsonl` or `.ndjson`).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// The output directory; `report.json` and `stats.json` are written there.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The dataset's format, overriding the schema's `[dataset] format` and the extension.
    #[arg(long, value_parser = parse_format)]
    pub format: Option<Format>,
}

pub(crate) fn parse_format(s: &str) -> Result<Format, String> {
    Format::parse(s).ok_or_else(|| format!("unknown format `{s}` (expected `csv` or `jsonl`)"))
}

/// Parse `args` with clap; `--help` prints and counts as a pass.
pub(crate) fn parse_args<T: clap::Parser>(args: &[String]) -> Result<Option<T>, DataError> {
    match T::try_parse_from(args) {
        Ok(a) => Ok(Some(a)),
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            print!("{}", e.render());
            Ok(None)
        }
        Err(e) => Err(DataError::new(
            DataErrorKind::Usage,
            e.render()
                .to_string()
                .trim_start_matches("error: ")
                .trim_end()
                .to_owned(),
        )),
    }
}

/// Write `value` as pretty JSON with sorted keys and a final newline.
pub(crate) fn write_json(dir: &Path, name: &str, value: &Value) -> Result<(), DataError> {
    std::fs::create_dir_all(dir).map_err(|e| DataError::io("create directory", dir, &e))?;
    let path = dir.join(name);
    let mut text = serde_json::to_string_pretty(&sort_keys(value.clone()))
        .map_err(|e| DataError::new(DataErrorKind::Io, format!("cannot encode {name}: {e}")))?;
    text.push('\n');
    std::fs::write(&path, text).map_err(|e| DataError::io("write", &path, &e))
}

/// Rebuild objects with keys in sorted order, whatever map serde_json was built with.
fn sort_keys(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sort_keys(v)))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

/// The entry point of `mlbuild rule validate ARGS...`; see [`ValidateArgs`].
pub fn run_cli(args: &[String]) -> Result<Outcome, DataError> {
    let Some(args) = parse_args::<ValidateArgs>(args)? else {
        return Ok(Outcome::Passed);
    };
    let schema = Schema::load(&args.schema)?;
    let report = validate(&schema, &args.data, args.format)?;
    write_json(&args.out, "report.json", &report.to_json())?;
    write_json(
        &args.out,
        "stats.json",
        &report.stats.to_json(report.format.as_str()),
    )?;
    let data = args.data.display();
    if report.passed() {
        eprintln!("`{data}`: {} rows, all rules pass", report.rows);
        return Ok(Outcome::Passed);
    }
    eprint!("{}", report.table());
    let columns: HashSet<_> = report.failures.iter().map(|f| &f.column).collect();
    Ok(Outcome::Failed(format!(
        "`{data}` does not match schema `{}`: {} rule(s) broken in {} column(s) of {} rows",
        args.schema.display(),
        report.failures.len(),
        columns.len(),
        report.rows
    )))
}
