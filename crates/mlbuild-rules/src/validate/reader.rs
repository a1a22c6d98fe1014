//! Streaming readers for CSV and JSON Lines that hand each row to a [`Visitor`].
//!
//! Validation and drift must run in constant memory at disk speed, so rows are never
//! collected: CSV records are read into one reused `ByteRecord` and fields are handed out
//! as byte slices (no per-field allocation); JSON Lines are parsed one line at a time.
//! Both formats look the same to the visitor: columns get a slot number when first seen,
//! and a row is a lookup from slot to `Option<&[u8]>` (`None` is null).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::schema::Format;
use crate::validate::error::DataError;

/// Where a row is: its 1-based number among data rows and the file line it starts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowPos {
    pub row: u64,
    pub line: u64,
}

/// Receives a dataset's columns and rows.
pub(crate) trait Visitor {
    /// Column `name` appears: for CSV once per header field (`pos` is `None`), for JSON
    /// Lines the first time a row has the key. Returns the slot its values go to, or `None`
    /// to ignore the column.
    fn column(&mut self, name: &str, pos: Option<RowPos>) -> Option<usize>;
    /// All header columns have been announced (CSV only).
    fn header_done(&mut self) {}
    /// One row.
    fn row(&mut self, pos: RowPos, fields: &Fields<'_>);
    /// An estimate of the total row count, from the file size and the first rows' size,
    /// given once early on (so hash sets can be sized once instead of growing).
    fn expect_rows(&mut self, _rows: u64) {}
    /// A CSV row whose number of fields differs from the header's.
    fn ragged(&mut self, _pos: RowPos, _expected: usize, _got: usize) {}
}

/// The texts that mean null in CSV: the empty field and any `null_values`.
pub(crate) struct Nulls {
    empty: bool,
    others: Vec<Vec<u8>>,
}

impl Nulls {
    fn new(values: &[String]) -> Nulls {
        Nulls {
            empty: values.iter().any(String::is_empty),
            others: values
                .iter()
                .filter(|v| !v.is_empty())
                .map(|v| v.as_bytes().to_vec())
                .collect(),
        }
    }

    #[inline]
    fn is_null(&self, b: &[u8]) -> bool {
        if b.is_empty() {
            return self.empty;
        }
        !self.others.is_empty() && self.others.iter().any(|o| o == b)
    }
}

/// One row's values by slot.
pub(crate) enum Fields<'a> {
    Csv {
        record: &'a csv::ByteRecord,
        /// Field index of each slot (`usize::MAX`: no such field).
        slot_field: &'a [usize],
        nulls: &'a Nulls,
    },
    Json {
        values: &'a [Vec<u8>],
        present: &'a [bool],
    },
}

impl Fields<'_> {
    /// The value in `slot`, or `None` for null (also for a missing field or key).
    #[inline]
    pub fn get(&self, slot: usize) -> Option<&[u8]> {
        match self {
            Fields::Csv {
                record,
                slot_field,
                nulls,
            } => {
                let b = record.get(*slot_field.get(slot)?)?;
                (!nulls.is_null(b)).then_some(b)
            }
            Fields::Json { values, present } => {
                if *present.get(slot)? {
                    Some(&values[slot])
                } else {
                    None
                }
            }
        }
    }
}

/// The format of `path`: `explicit` if given, else from its extension.
pub fn detect_format(path: &Path, explicit: Option<Format>) -> Result<Format, DataError> {
    explicit.or_else(|| Format::from_path(path)).ok_or_else(|| {
        DataError::new(
            crate::validate::error::DataErrorKind::Usage,
            format!(
                "cannot tell the format of `{}` from its extension",
                path.display()
            ),
        )
        .with_help("name it `.csv`, `.jsonl` or `.ndjson`, or pass `--format csv|jsonl`")
    })
}

/// Read the dataset at `path`, calling `v` for its columns and rows; returns the row count.
pub(crate) fn read<V: Visitor>(
    path: &Path,
    format: Format,
    delimiter: u8,
    null_values: &[String],
    v: &mut V,
) -> Result<u64, DataError> {
    let file = File::open(path).map_err(|e| DataError::io("open", path, &e))?;
    match format {
        Format::Csv => read_csv(path, file, delimiter, &Nulls::new(null_values), v),
        Format::JsonLines => read_jsonl(path, file, v),
    }
}

/// Rows after which the total is estimated.
const ESTIMATE_AFTER: u64 = 4096;

fn estimate(file_len: u64, rows: u64, bytes: u64) -> u64 {
    if bytes == 0 {
        return rows;
    }
    (file_len as f64 / bytes as f64 * rows as f64).ceil() as u64
}

fn read_csv<V: Visitor>(
    path: &Path,
    file: File,
    delimiter: u8,
    nulls: &Nulls,
    v: &mut V,
) -> Result<u64, DataError> {
    let file_len = file.metadata().map_or(0, |m| m.len());
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(256 * 1024)
        .from_reader(file);
    let csv_err = |e: csv::Error| DataError::data(path, format!("malformed CSV: {e}"));
    let mut record = csv::ByteRecord::new();
    if !rdr.read_byte_record(&mut record).map_err(csv_err)? {
        return Err(
            DataError::data(path, "the file is empty: expected a header row")
                .with_help("the first line of a CSV dataset names its columns"),
        );
    }
    let mut slot_field: Vec<usize> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, raw) in record.iter().enumerate() {
        let raw = if i == 0 {
            raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
        } else {
            raw
        };
        let name = String::from_utf8_lossy(raw).into_owned();
        if let Some(first) = seen.insert(name.clone(), i) {
            return Err(DataError::data(
                path,
                format!(
                    "the header names column `{name}` twice (fields {} and {})",
                    first + 1,
                    i + 1
                ),
            ));
        }
        if let Some(slot) = v.column(&name, None) {
            if slot_field.len() <= slot {
                slot_field.resize(slot + 1, usize::MAX);
            }
            slot_field[slot] = i;
        }
    }
    v.header_done();
    let width = record.len();
    let mut rows = 0u64;
    while rdr.read_byte_record(&mut record).map_err(csv_err)? {
        // A blank line is read as one empty field; it is not a row.
        if record.len() == 1 && record[0].is_empty() && width != 1 {
            continue;
        }
        rows += 1;
        let pos = RowPos {
            row: rows,
            line: record.position().map_or(0, csv::Position::line),
        };
        if rows == ESTIMATE_AFTER {
            let bytes = record.position().map_or(0, csv::Position::byte);
            v.expect_rows(estimate(file_len, rows, bytes));
        }
        if record.len() != width {
            v.ragged(pos, width, record.len());
        }
        v.row(
            pos,
            &Fields::Csv {
                record: &record,
                slot_field: &slot_field,
                nulls,
            },
        );
    }
    Ok(rows)
}

fn read_jsonl<V: Visitor>(path: &Path, file: File, v: &mut V) -> Result<u64, DataError> {
    let file_len = file.metadata().map_or(0, |m| m.len());
    let mut input = BufReader::with_capacity(256 * 1024, file);
    let mut bytes = 0u64;
    let mut line = Vec::new();
    let mut slots: HashMap<String, Option<usize>> = HashMap::new();
    let mut values: Vec<Vec<u8>> = Vec::new();
    let mut present: Vec<bool> = Vec::new();
    let (mut rows, mut line_no) = (0u64, 0u64);
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|e| DataError::io("read", path, &e))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        bytes += n as u64;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        rows += 1;
        let pos = RowPos {
            row: rows,
            line: line_no,
        };
        if rows == ESTIMATE_AFTER {
            v.expect_rows(estimate(file_len, rows, bytes));
        }
        let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&line)
            .map_err(|e| {
                DataError::data(path, format!("line {line_no}: not a JSON object: {e}"))
                    .with_help("JSON Lines holds one JSON object per line")
            })?;
        present.iter_mut().for_each(|p| *p = false);
        for (key, value) in obj {
            let slot = match slots.get(&key) {
                Some(s) => *s,
                None => {
                    let s = v.column(&key, Some(pos));
                    slots.insert(key, s);
                    s
                }
            };
            let Some(slot) = slot else { continue };
            if values.len() <= slot {
                values.resize(slot + 1, Vec::new());
                present.resize(slot + 1, false);
            }
            let buf = &mut values[slot];
            buf.clear();
            present[slot] = true;
            match value {
                serde_json::Value::Null => present[slot] = false,
                serde_json::Value::String(s) => buf.extend_from_slice(s.as_bytes()),
                serde_json::Value::Bool(b) => {
                    buf.extend_from_slice(if b { b"true" } else { b"false" })
                }
                serde_json::Value::Number(n) => buf.extend_from_slice(n.to_string().as_bytes()),
                nested => {
                    // Arrays and objects are kept as their JSON text; no type but `string`
                    // accepts them.
                    buf.extend_from_slice(nested.to_string().as_bytes());
                }
            }
        }
        v.row(
            pos,
            &Fields::Json {
                values: &values,
                present: &present,
            },
        );
    }
    Ok(rows)
}
