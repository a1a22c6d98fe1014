//! Per-column statistics gathered in one streaming pass, and their deterministic JSON.
//!
//! `validate` writes them as `stats.json` and `drift` compares two datasets' worth, so the
//! accumulators are constant-memory: Welford's running mean and variance, exact min and
//! max, a [`Sketch`] (log-linear buckets, 0.78% relative error) for quantiles and histograms, and a
//! [`TopK`] (Misra-Gries, exact up to 1024 distinct values) for top values. `stats.json`
//! is a cached build output that audits compare byte for byte, so its keys are sorted,
//! floats are rounded to 12 significant digits (hiding last-bit differences between libm
//! implementations) and ties are broken by value. Main type: [`ColumnStats`].

pub mod sketch;
pub mod topk;

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

pub use sketch::Sketch;
pub use topk::TopK;

/// Quantiles reported for numeric columns, with their names.
pub const QUANTILES: [(&str, f64); 7] = [
    ("p01", 0.01),
    ("p05", 0.05),
    ("p25", 0.25),
    ("p50", 0.50),
    ("p75", 0.75),
    ("p95", 0.95),
    ("p99", 0.99),
];
/// Equal-width bins of the numeric histogram.
pub const HISTOGRAM_BINS: usize = 20;
/// Most top values listed per column.
pub const TOP_VALUES: usize = 20;

/// What a column's values are taken to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsKind {
    /// Numbers: mean, std, quantiles, histogram.
    Numeric,
    /// Labels: top values.
    Categorical,
    /// Text with no useful frequencies (a `unique` string column): counts only.
    Text,
    /// Unknown until the end (`drift` without a schema): both, decided by [`ColumnStats::is_numeric`].
    Infer,
}

/// Running mean and variance (Welford), exact min and max, and a quantile sketch.
#[derive(Clone, Debug, Default)]
pub struct Numeric {
    n: u64,
    mean: f64,
    m2: f64,
    pub sketch: Sketch,
}

impl Numeric {
    #[inline]
    fn add(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
        self.sketch.add(x);
    }

    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then_some(self.mean)
    }

    /// Sample standard deviation (divisor `n - 1`, as pandas and R report it).
    pub fn std(&self) -> Option<f64> {
        (self.n > 1).then(|| (self.m2 / (self.n - 1) as f64).sqrt())
    }
}

/// The statistics of one column.
#[derive(Clone, Debug)]
pub struct ColumnStats {
    /// The declared type name, or `inferred` when there was no schema.
    pub type_name: &'static str,
    kind: StatsKind,
    values: u64,
    invalid: u64,
    non_numeric: u64,
    pub numeric: Option<Numeric>,
    pub top: Option<TopK>,
}

impl ColumnStats {
    pub fn new(type_name: &'static str, kind: StatsKind) -> ColumnStats {
        let numeric = matches!(kind, StatsKind::Numeric | StatsKind::Infer).then(Numeric::default);
        let top = matches!(kind, StatsKind::Categorical | StatsKind::Infer).then(TopK::new);
        ColumnStats {
            type_name,
            kind,
            values: 0,
            invalid: 0,
            non_numeric: 0,
            numeric,
            top,
        }
    }

    /// A valid number of a numeric column.
    #[inline]
    pub fn add_number(&mut self, x: f64) {
        self.values += 1;
        if let Some(n) = &mut self.numeric {
            n.add(x);
        }
    }

    /// A valid value of a categorical or text column.
    #[inline]
    pub fn add_text(&mut self, v: &[u8]) {
        self.values += 1;
        if let Some(t) = &mut self.top {
            t.add(v);
        }
    }

    /// A valid value whose frequency the caller counts itself and reports later with
    /// [`ColumnStats::add_counted`] (cheaper than hashing every value of a small category).
    #[inline]
    pub fn add_uncounted(&mut self) {
        self.values += 1;
    }

    /// `n` occurrences of `v` already passed to [`ColumnStats::add_uncounted`].
    pub fn add_counted(&mut self, v: &[u8], n: u64) {
        if let Some(t) = &mut self.top {
            t.add_count(v, n);
        }
    }

    /// A non-null value that failed its type check: counted, not described.
    #[inline]
    pub fn add_invalid(&mut self) {
        self.values += 1;
        self.invalid += 1;
    }

    /// A value of a column of unknown type: counted both as text and, if it parses as a
    /// finite float, as a number.
    #[inline]
    pub fn add_raw(&mut self, v: &[u8]) {
        self.values += 1;
        if let Some(t) = &mut self.top {
            t.add(v);
        }
        match parse_f64(v) {
            Some(x) => {
                if let Some(n) = &mut self.numeric {
                    n.add(x);
                }
            }
            None => self.non_numeric += 1,
        }
    }

    pub fn kind(&self) -> StatsKind {
        self.kind
    }

    /// Non-null values seen (valid or not).
    pub fn values(&self) -> u64 {
        self.values
    }

    /// Non-null values that failed the type check.
    pub fn invalid(&self) -> u64 {
        self.invalid
    }

    /// Whether the column is numeric: declared so, or (inferred) every non-null value
    /// parsed as a finite float.
    pub fn is_numeric(&self) -> bool {
        match self.kind {
            StatsKind::Numeric => true,
            StatsKind::Infer => self.non_numeric == 0 && self.values > 0,
            StatsKind::Categorical | StatsKind::Text => false,
        }
    }

    /// The deterministic JSON of these statistics for a dataset of `rows` rows.
    pub fn to_json(&self, rows: u64) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), self.type_name.into());
        m.insert("count".into(), (self.values - self.invalid).into());
        m.insert("nulls".into(), rows.saturating_sub(self.values).into());
        m.insert("invalid".into(), self.invalid.into());
        let numeric = self.is_numeric();
        if let (true, Some(n)) = (numeric, &self.numeric) {
            m.insert("mean".into(), num(n.mean()));
            m.insert("std".into(), num(n.std()));
            let s = &n.sketch;
            m.insert("min".into(), num(s.min()));
            m.insert("max".into(), num(s.max()));
            let mut q = Map::new();
            for (name, p) in QUANTILES {
                q.insert(name.into(), num(s.quantile(p)));
            }
            m.insert("quantiles".into(), Value::Object(q));
            m.insert("histogram".into(), histogram(s));
        }
        if let (false, Some(t)) = (numeric, &self.top) {
            m.insert(
                "distinct".into(),
                t.distinct().map_or(Value::Null, Value::from),
            );
            m.insert("top_exact".into(), t.is_exact().into());
            let top: Vec<Value> = t
                .sorted()
                .into_iter()
                .take(TOP_VALUES)
                .map(|(v, c)| json!({"value": String::from_utf8_lossy(v), "count": c}))
                .collect();
            m.insert("top".into(), Value::Array(top));
        }
        Value::Object(m)
    }
}

/// Statistics of a whole dataset: row count and columns by name.
#[derive(Clone, Debug, Default)]
pub struct DatasetStats {
    pub rows: u64,
    pub columns: BTreeMap<String, ColumnStats>,
}

impl DatasetStats {
    /// The JSON written as `stats.json`.
    pub fn to_json(&self, format: &str) -> Value {
        let columns: Map<String, Value> = self
            .columns
            .iter()
            .map(|(k, c)| (k.clone(), c.to_json(self.rows)))
            .collect();
        json!({
            "format": format,
            "rows": self.rows,
            "columns": columns,
            "method": {
                "std": "sample (n - 1)",
                "quantiles": format!("log-linear sketch, 64 buckets per power of two, relative error {}", sketch::ALPHA),
                "quantile_rank": "floor(q * (n - 1))",
                "histogram": format!(
                    "{HISTOGRAM_BINS} equal-width bins from min to max; values placed by their sketch bucket"
                ),
                "top_values": format!("misra-gries, exact up to {} distinct values", topk::CAPACITY),
            },
        })
    }
}

/// Equal-width bins between min and max, filled from the sketch's buckets (each bucket's
/// count goes to the bin of its representative, so a value within 0.78% of a bin edge may be
/// counted in the neighbouring bin).
fn histogram(s: &Sketch) -> Value {
    if s.count() == 0 {
        return json!({"edges": [], "counts": []});
    }
    let (lo, hi) = (s.min().unwrap_or(0.0), s.max().unwrap_or(0.0));
    if lo == hi {
        return json!({"edges": [round(lo), round(hi)], "counts": [s.count()]});
    }
    let width = (hi - lo) / HISTOGRAM_BINS as f64;
    let mut counts = [0u64; HISTOGRAM_BINS];
    for b in s.buckets() {
        let v = b.value.clamp(lo, hi);
        let i = (((v - lo) / width) as usize).min(HISTOGRAM_BINS - 1);
        counts[i] += b.count;
    }
    let edges: Vec<Value> = (0..=HISTOGRAM_BINS)
        .map(|i| {
            if i == HISTOGRAM_BINS {
                round(hi).into()
            } else {
                round(lo + width * i as f64).into()
            }
        })
        .collect();
    json!({"edges": edges, "counts": counts.to_vec()})
}

/// Round to 12 significant digits, so outputs do not depend on the last bits of libm.
pub fn round(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return if x == 0.0 { 0.0 } else { x };
    }
    format!("{x:.11e}").parse().unwrap_or(x)
}

fn num(x: Option<f64>) -> Value {
    x.map_or(Value::Null, |x| Value::from(round(x)))
}

/// Parse a finite float from bytes (no surrounding spaces), as `float` columns accept.
#[inline]
pub fn parse_f64(b: &[u8]) -> Option<f64> {
    // Every valid float is ASCII, so checking for ASCII is all the UTF-8 validation needed.
    if b.is_empty() || !b.is_ascii() {
        return None;
    }
    // SAFETY: ASCII was checked just above.
    let s = unsafe { std::str::from_utf8_unchecked(b) };
    let x: f64 = s.parse().ok()?;
    x.is_finite().then_some(x)
}

/// Parse a decimal i64 from bytes: optional sign, then digits only.
#[inline]
pub fn parse_i64(b: &[u8]) -> Option<i64> {
    let (neg, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        let d = d.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        // Accumulate negatively so that i64::MIN parses.
        v = v.checked_mul(10)?.checked_sub(i64::from(d))?;
    }
    if neg {
        Some(v)
    } else {
        v.checked_neg()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_stats_of_a_known_dataset() {
        let mut c = ColumnStats::new("float", StatsKind::Numeric);
        let data = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        for x in data {
            c.add_number(x);
        }
        c.add_invalid();
        let j = c.to_json(10);
        assert_eq!(j["count"], 8);
        assert_eq!(j["nulls"], 1);
        assert_eq!(j["invalid"], 1);
        assert_eq!(j["mean"], 5.0);
        // Sample variance: sum of squared deviations 32 over n - 1 = 7.
        let std = j["std"].as_f64().unwrap();
        assert!((std - (32.0f64 / 7.0).sqrt()).abs() < 1e-10, "{std}");
        assert_eq!(j["min"], 2.0);
        assert_eq!(j["max"], 9.0);
        // p50 is the value at rank floor(0.5 * 7) = 3, which is 4.
        let p50 = j["quantiles"]["p50"].as_f64().unwrap();
        assert!((p50 - 4.0).abs() <= 0.04, "{p50}");
        let p99 = j["quantiles"]["p99"].as_f64().unwrap();
        assert!((p99 - 7.0).abs() <= 0.07, "{p99}");
        let counts: Vec<u64> = j["histogram"]["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(counts.len(), HISTOGRAM_BINS);
        assert_eq!(counts.iter().sum::<u64>(), 8);
        assert_eq!(counts[0], 1); // 2.0
        assert_eq!(counts[HISTOGRAM_BINS - 1], 1); // 9.0
        assert_eq!(
            j["histogram"]["edges"].as_array().unwrap().len(),
            HISTOGRAM_BINS + 1
        );
    }

    #[test]
    fn categorical_stats_list_top_values() {
        let mut c = ColumnStats::new("category", StatsKind::Categorical);
        for v in ["US", "DE", "US", "FR", "US", "DE"] {
            c.add_text(v.as_bytes());
        }
        let j = c.to_json(6);
        assert_eq!(j["distinct"], 3);
        assert_eq!(j["top_exact"], true);
        assert_eq!(
            j["top"],
            json!([{"value":"US","count":3},{"value":"DE","count":2},{"value":"FR","count":1}])
        );
        assert!(j.get("mean").is_none());
    }

    #[test]
    fn inferred_columns_become_numeric_only_if_every_value_parses() {
        let mut a = ColumnStats::new("inferred", StatsKind::Infer);
        let mut b = ColumnStats::new("inferred", StatsKind::Infer);
        for v in ["1", "2.5", "-3e2"] {
            a.add_raw(v.as_bytes());
            b.add_raw(v.as_bytes());
        }
        b.add_raw(b"n/a");
        assert!(a.is_numeric());
        assert!(!b.is_numeric());
        assert!(a.to_json(3).get("mean").is_some());
        assert!(b.to_json(4).get("top").is_some());
    }

    #[test]
    fn parsers_accept_exactly_the_documented_forms() {
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"+12"), Some(12));
        for bad in ["", "-", "1.0", " 1", "1e3", "0x10"] {
            assert_eq!(parse_i64(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(parse_f64(b"1e3"), Some(1000.0));
        assert_eq!(parse_f64(b"-.5"), Some(-0.5));
        for bad in ["", "nan", "inf", "1,5", " 1", "é"] {
            assert_eq!(parse_f64(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn rounding_keeps_twelve_significant_digits() {
        assert_eq!(round(0.1 + 0.2), 0.3);
        assert_eq!(round(1.0 / 3.0), 0.333333333333);
        assert_eq!(round(-0.0), 0.0);
    }
}
