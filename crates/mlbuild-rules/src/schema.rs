//! The dataset schema of the `validate` and `drift` rules: a TOML file of columns and rules.
//!
//! Users write schemas by hand, so every mistake (an unknown type or key, `min > max`, a
//! regex that does not compile, a rule that does not apply to the column's type) is a
//! [`DataError`] pointing at the offending TOML with file, line and column. Main type:
//! [`Schema`]; the format is documented in `docs/data-validation.md`.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use crate::validate::error::{DataError, DataErrorKind};

/// A column's declared type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// A 64-bit signed integer in decimal (`-12`, `+7`, `0`).
    Int,
    /// A finite 64-bit float (`1.5`, `-2e-3`, `7`); `NaN` and infinities are not valid.
    Float,
    /// Any UTF-8 text.
    String,
    /// `true` / `false` (any case) or `1` / `0`.
    Bool,
    /// UTF-8 text from a small set of values; compared by distribution in `drift`.
    Category,
}

impl ColumnType {
    pub const NAMES: [&'static str; 5] = ["int", "float", "string", "bool", "category"];

    fn parse(name: &str) -> Option<ColumnType> {
        Some(match name {
            "int" => ColumnType::Int,
            "float" => ColumnType::Float,
            "string" => ColumnType::String,
            "bool" => ColumnType::Bool,
            "category" => ColumnType::Category,
            _ => return None,
        })
    }

    /// The name used in schemas and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Int => "int",
            ColumnType::Float => "float",
            ColumnType::String => "string",
            ColumnType::Bool => "bool",
            ColumnType::Category => "category",
        }
    }

    /// Whether values are numbers (so `min`/`max`, quantiles and PSI apply).
    pub fn is_numeric(self) -> bool {
        matches!(self, ColumnType::Int | ColumnType::Float)
    }
}

/// The file format of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values with a header row (RFC 4180 quoting).
    Csv,
    /// One JSON object per line.
    JsonLines,
}

impl Format {
    /// Parse a format name as written in a schema or on the command line.
    pub fn parse(name: &str) -> Option<Format> {
        match name {
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" | "jsonlines" => Some(Format::JsonLines),
            _ => None,
        }
    }

    /// The format implied by a file name's extension, if it names one.
    pub fn from_path(path: &std::path::Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" => Some(Format::JsonLines),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::JsonLines => "jsonl",
        }
    }
}

/// A numeric bound (`min` / `max`), kept as written so integer columns compare exactly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    Int(i64),
    Float(f64),
}

impl Bound {
    pub fn as_f64(self) -> f64 {
        match self {
            Bound::Int(i) => i as f64,
            Bound::Float(f) => f,
        }
    }
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bound::Int(i) => write!(f, "{i}"),
            Bound::Float(x) => write!(f, "{x}"),
        }
    }
}

/// The values a column may take (`allowed`).
#[derive(Clone, Debug, PartialEq)]
pub enum Allowed {
    /// For `string` and `category` columns.
    Text(Vec<String>),
    /// For `int` columns.
    Int(Vec<i64>),
}

/// One declared column and its rules.
#[derive(Clone, Debug)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    /// Whether null (an empty CSV field, a `null_values` text, JSON `null` or a missing
    /// key) is allowed. Default: false.
    pub nullable: bool,
    pub min: Option<Bound>,
    pub max: Option<Bound>,
    pub allowed: Option<Allowed>,
    pub unique: bool,
    /// The pattern as written; it must match the whole value.
    pub regex: Option<String>,
}

/// What to do with data columns the schema does not declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtraColumns {
    /// Report each as an `extra_column` failure (the default: a new column usually means
    /// an upstream change someone should look at).
    Error,
    /// Ignore them.
    Allow,
}

/// A parsed, checked schema.
#[derive(Clone, Debug)]
pub struct Schema {
    /// The format the schema insists on, if any (`[dataset] format`).
    pub format: Option<Format>,
    /// The CSV field delimiter (default `,`).
    pub delimiter: u8,
    pub min_rows: Option<u64>,
    pub max_rows: Option<u64>,
    pub extra_columns: ExtraColumns,
    /// CSV field texts that mean null (default: only the empty field).
    pub null_values: Vec<String>,
    /// Declared columns, sorted by name.
    pub columns: Vec<Column>,
}

impl Schema {
    /// A schema for `columns` with every other setting at its default (for tests and for
    /// callers that build schemas in code).
    pub fn with_columns(columns: Vec<Column>) -> Schema {
        Schema {
            format: None,
            delimiter: b',',
            min_rows: None,
            max_rows: None,
            extra_columns: ExtraColumns::Error,
            null_values: vec![String::new()],
            columns,
        }
    }

    /// Read and parse the schema file at `path`; errors name it as `path` was given.
    pub fn load(path: &std::path::Path) -> Result<Schema, DataError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| DataError::io("read schema", path, &e))?;
        Schema::parse(&path.display().to_string(), &text)
    }

    /// Parse schema TOML `text`; `name` is the file name errors show.
    pub fn parse(name: &str, text: &str) -> Result<Schema, DataError> {
        let err_at = |message: String, span: Range<usize>, label: &str| {
            DataError::new(DataErrorKind::Schema, message)
                .with_label(label)
                .at(name, text, span)
        };
        let raw: RawSchema = toml::from_str(text).map_err(|e| {
            let message = e.message().trim_end().trim_end_matches('.').to_owned();
            let label = if message.starts_with("unknown field") {
                "unknown key"
            } else if message.starts_with("invalid type") {
                "wrong type"
            } else if message.starts_with("missing field") {
                "missing key"
            } else {
                "here"
            };
            err_at(message, e.span().unwrap_or(0..0), label)
        })?;

        let mut schema = Schema::with_columns(Vec::new());
        if let Some(ds) = raw.dataset {
            if let Some(f) = ds.format {
                schema.format = Some(Format::parse(f.get_ref()).ok_or_else(|| {
                    err_at(
                        format!("unknown dataset format `{}`", f.get_ref()),
                        f.span(),
                        "unknown format",
                    )
                    .with_help("expected `csv` or `jsonl`")
                })?);
            }
            if let Some(d) = ds.delimiter {
                let bytes = d.get_ref().as_bytes();
                if bytes.len() != 1 || bytes[0] == b'"' || bytes[0] == b'\n' {
                    return Err(err_at(
                        "`delimiter` must be one ASCII character other than `\"` and newline"
                            .into(),
                        d.span(),
                        "bad delimiter",
                    ));
                }
                schema.delimiter = bytes[0];
            }
            let count = |v: Option<Spanned<i64>>, key: &str| -> Result<Option<u64>, DataError> {
                match v {
                    None => Ok(None),
                    Some(v) => u64::try_from(*v.get_ref()).map(Some).map_err(|_| {
                        err_at(
                            format!("`{key}` must not be negative"),
                            v.span(),
                            "negative",
                        )
                    }),
                }
            };
            let max_span = ds.max_rows.as_ref().map(Spanned::span);
            schema.min_rows = count(ds.min_rows, "min_rows")?;
            schema.max_rows = count(ds.max_rows, "max_rows")?;
            if let (Some(lo), Some(hi), Some(span)) = (schema.min_rows, schema.max_rows, max_span) {
                if lo > hi {
                    return Err(err_at(
                        format!("`max_rows` ({hi}) is below `min_rows` ({lo})"),
                        span,
                        "below `min_rows`",
                    ));
                }
            }
            if let Some(x) = ds.extra_columns {
                schema.extra_columns = match x.get_ref().as_str() {
                    "error" => ExtraColumns::Error,
                    "allow" => ExtraColumns::Allow,
                    other => {
                        return Err(err_at(
                            format!("unknown `extra_columns` policy `{other}`"),
                            x.span(),
                            "unknown policy",
                        )
                        .with_help("expected `error` or `allow`"))
                    }
                };
            }
            if let Some(nv) = ds.null_values {
                schema.null_values = nv;
            }
        }

        for (name_s, col) in raw.columns {
            let col_span = name_s.span();
            let col_name = name_s.into_inner();
            schema
                .columns
                .push(check_column(col_name, col_span, col.into_inner(), &err_at)?);
        }
        Ok(schema)
    }

    /// The declared column called `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

fn check_column(
    name: String,
    name_span: Range<usize>,
    raw: RawColumn,
    err_at: &dyn Fn(String, Range<usize>, &str) -> DataError,
) -> Result<Column, DataError> {
    let Some(ty_s) = raw.ty else {
        return Err(err_at(
            format!("column `{name}` has no `type`"),
            name_span,
            "missing `type`",
        )
        .with_help(format!(
            "add `type = \"...\"`, one of: {}",
            ColumnType::NAMES.join(", ")
        )));
    };
    let ty = ColumnType::parse(ty_s.get_ref()).ok_or_else(|| {
        let suggestion = closest(ty_s.get_ref(), &ColumnType::NAMES);
        let mut help = format!("expected one of: {}", ColumnType::NAMES.join(", "));
        if let Some(s) = suggestion {
            help = format!("did you mean `{s}`? ({help})");
        }
        err_at(
            format!(
                "unknown column type `{}` for column `{name}`",
                ty_s.get_ref()
            ),
            ty_s.span(),
            "unknown type",
        )
        .with_help(help)
    })?;
    let not_for = |key: &str, span: Range<usize>, applies: &str| {
        err_at(
            format!(
                "`{key}` does not apply to column `{name}` of type `{}`",
                ty.as_str()
            ),
            span,
            "not for this type",
        )
        .with_help(format!("`{key}` applies to {applies} columns"))
    };

    let bound = |v: Option<Spanned<toml::Value>>, key: &str| -> Result<_, DataError> {
        let Some(v) = v else { return Ok(None) };
        if !ty.is_numeric() {
            return Err(not_for(key, v.span(), "`int` and `float`"));
        }
        let b = match v.get_ref() {
            toml::Value::Integer(i) => Bound::Int(*i),
            toml::Value::Float(f) if f.is_finite() => Bound::Float(*f),
            _ => {
                return Err(err_at(
                    format!("`{key}` of column `{name}` must be a finite number"),
                    v.span(),
                    "not a number",
                ))
            }
        };
        Ok(Some((b, v.span())))
    };
    let min = bound(raw.min, "min")?;
    let max = bound(raw.max, "max")?;
    if let (Some((lo, _)), Some((hi, hi_span))) = (&min, &max) {
        if lo.as_f64() > hi.as_f64() {
            return Err(err_at(
                format!("`max` ({hi}) of column `{name}` is below its `min` ({lo})"),
                hi_span.clone(),
                "below `min`",
            ));
        }
    }

    let allowed = match raw.allowed {
        None => None,
        Some(list) => {
            let list_span = list.span();
            let items = list.into_inner();
            if items.is_empty() {
                return Err(err_at(
                    format!("`allowed` of column `{name}` is empty: no value could pass"),
                    list_span,
                    "empty",
                ));
            }
            match ty {
                ColumnType::String | ColumnType::Category => {
                    let mut out = Vec::with_capacity(items.len());
                    for item in items {
                        match item.get_ref() {
                            toml::Value::String(s) => out.push(s.clone()),
                            _ => {
                                return Err(err_at(
                                    format!("`allowed` values of column `{name}` must be strings"),
                                    item.span(),
                                    "not a string",
                                ))
                            }
                        }
                    }
                    Some(Allowed::Text(out))
                }
                ColumnType::Int => {
                    let mut out = Vec::with_capacity(items.len());
                    for item in items {
                        match item.get_ref() {
                            toml::Value::Integer(i) => out.push(*i),
                            _ => {
                                return Err(err_at(
                                    format!("`allowed` values of column `{name}` must be integers"),
                                    item.span(),
                                    "not an integer",
                                ))
                            }
                        }
                    }
                    Some(Allowed::Int(out))
                }
                ColumnType::Float | ColumnType::Bool => {
                    return Err(not_for(
                        "allowed",
                        list_span,
                        "`string`, `category` and `int`",
                    ))
                }
            }
        }
    };

    let regex = match raw.regex {
        None => None,
        Some(r) => {
            if let Err(e) = regex::bytes::Regex::new(&anchored(r.get_ref())) {
                return Err(err_at(
                    format!("invalid `regex` for column `{name}`"),
                    r.span(),
                    "does not compile",
                )
                .with_help(regex_error_text(&e)));
            }
            Some(r.into_inner())
        }
    };

    Ok(Column {
        name,
        ty,
        nullable: raw.nullable.unwrap_or(false),
        min: min.map(|(b, _)| b),
        max: max.map(|(b, _)| b),
        allowed,
        unique: raw.unique.unwrap_or(false),
        regex,
    })
}

/// A pattern wrapped so it must match the whole value, as users expect of a column rule.
pub(crate) fn anchored(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

/// The regex crate's message (the last line of its multi-line, caret-drawing text).
fn regex_error_text(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(s) => s
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or(s)
            .trim()
            .to_owned(),
        other => other.to_string(),
    }
}

/// The closest candidate to `wanted`, if it is close enough to suggest (edit distance).
fn closest<'a>(wanted: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(wanted, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchema {
    dataset: Option<RawDataset>,
    #[serde(default)]
    columns: BTreeMap<Spanned<String>, Spanned<RawColumn>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataset {
    format: Option<Spanned<String>>,
    delimiter: Option<Spanned<String>>,
    min_rows: Option<Spanned<i64>>,
    max_rows: Option<Spanned<i64>>,
    extra_columns: Option<Spanned<String>>,
    null_values: Option<Vec<String>>,
    #[allow(dead_code)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    #[serde(rename = "type")]
    ty: Option<Spanned<String>>,
    nullable: Option<bool>,
    min: Option<Spanned<toml::Value>>,
    max: Option<Spanned<toml::Value>>,
    allowed: Option<Spanned<Vec<Spanned<toml::Value>>>>,
    unique: Option<bool>,
    regex: Option<Spanned<String>>,
    #[allow(dead_code)]
    description: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> DataError {
        Schema::parse("s.toml", text).expect_err("schema should be rejected")
    }

    #[test]
    fn parses_every_rule() {
        let s = Schema::parse(
            "s.toml",
            r#"
[dataset]
format = "csv"
delimiter = ";"
min_rows = 1
max_rows = 10
extra_columns = "allow"
null_values = ["", "NA"]

[columns.amount]
type = "float"
min = 0
max = 1e6

[columns.id]
type = "int"
unique = true
allowed = [1, 2, 3]

[columns.country]
type = "category"
nullable = true
allowed = ["US", "DE"]
regex = "[A-Z]{2}"
"#,
        )
        .unwrap();
        assert_eq!(s.format, Some(Format::Csv));
        assert_eq!(s.delimiter, b';');
        assert_eq!((s.min_rows, s.max_rows), (Some(1), Some(10)));
        assert_eq!(s.extra_columns, ExtraColumns::Allow);
        assert_eq!(s.null_values, vec!["".to_owned(), "NA".to_owned()]);
        let names: Vec<_> = s.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["amount", "country", "id"]);
        let amount = s.column("amount").unwrap();
        assert_eq!(amount.ty, ColumnType::Float);
        assert!(!amount.nullable);
        assert_eq!(amount.min, Some(Bound::Int(0)));
        assert_eq!(amount.max, Some(Bound::Float(1e6)));
        let id = s.column("id").unwrap();
        assert!(id.unique);
        assert_eq!(id.allowed, Some(Allowed::Int(vec![1, 2, 3])));
        let c = s.column("country").unwrap();
        assert!(c.nullable);
        assert_eq!(c.regex.as_deref(), Some("[A-Z]{2}"));
    }

    #[test]
    fn unknown_type_points_at_its_line() {
        let e = err("[columns.a]\ntype = \"float\"\n\n[columns.b]\ntype = \"flaot\"\n");
        assert_eq!(e.kind(), DataErrorKind::Schema);
        assert!(e.message().contains("unknown column type `flaot`"), "{e}");
        assert_eq!(e.line_col(), Some((5, 8)));
        assert!(e.help_text().unwrap().contains("did you mean `float`?"));
        let text = e.render_plain();
        assert!(text.contains("s.toml:5:8"), "{text}");
    }

    #[test]
    fn unknown_key_points_at_the_key() {
        let e = err("[columns.a]\ntype = \"int\"\nnulable = true\n");
        assert!(e.message().starts_with("unknown field `nulable`"), "{e}");
        assert_eq!(e.line_col(), Some((3, 1)));
        let e = err("[dataset]\nrows = 3\n");
        assert_eq!(e.line_col(), Some((2, 1)));
    }

    #[test]
    fn bad_regex_is_reported_with_the_reason() {
        let e = err("[columns.a]\ntype = \"string\"\nregex = \"[a-z\"\n");
        assert!(
            e.message().contains("invalid `regex` for column `a`"),
            "{e}"
        );
        assert_eq!(e.line_col(), Some((3, 9)));
        assert!(
            e.help_text().unwrap().contains("unclosed"),
            "{:?}",
            e.help_text()
        );
    }

    #[test]
    fn min_above_max_is_rejected() {
        let e = err("[columns.a]\ntype = \"float\"\nmin = 5\nmax = 1.5\n");
        assert!(e.message().contains("below its `min`"), "{e}");
        assert_eq!(e.line_col(), Some((4, 7)));
        let e = err("[dataset]\nmin_rows = 5\nmax_rows = 2\n");
        assert_eq!(e.line_col(), Some((3, 12)));
    }

    #[test]
    fn rules_that_do_not_fit_the_type_are_rejected() {
        let cases = [
            ("[columns.a]\ntype = \"string\"\nmin = 1\n", 3),
            ("[columns.a]\ntype = \"float\"\nallowed = [1.0]\n", 3),
            ("[columns.a]\ntype = \"category\"\nallowed = [1]\n", 3),
            ("[columns.a]\ntype = \"int\"\nallowed = []\n", 3),
            ("[columns.a]\ntype = \"int\"\nmax = \"x\"\n", 3),
            ("[columns.a]\nnullable = true\n", 1),
            ("[dataset]\nformat = \"parquet\"\n", 2),
            ("[dataset]\nextra_columns = \"warn\"\n", 2),
            ("[dataset]\nmin_rows = -1\n", 2),
            ("[dataset]\ndelimiter = \"ab\"\n", 2),
            ("[columns.a\n", 1),
        ];
        for (text, line) in cases {
            let e = err(text);
            assert_eq!(e.line_col().map(|l| l.0), Some(line), "{text}: {e}");
        }
    }
}
