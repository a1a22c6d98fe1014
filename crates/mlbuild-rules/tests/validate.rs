//! `validate`: every rule type on small CSV and JSON Lines files, the reports, statistics
//! and the command-line entry point.

use std::path::{Path, PathBuf};

use mlbuild_rules::schema::{Format, Schema};
use mlbuild_rules::validate::error::DataErrorKind;
use mlbuild_rules::validate::{run_cli, validate, Failure, Outcome, Report, Rule};
use serde_json::Value;

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

fn run(schema: &str, name: &str, data: &str) -> Report {
    let d = Dir::new();
    let schema = Schema::parse("s.toml", schema).unwrap();
    let p = d.write(name, data);
    validate(&schema, &p, None).unwrap()
}

fn failure<'a>(r: &'a Report, column: Option<&str>, rule: Rule) -> &'a Failure {
    r.failures
        .iter()
        .find(|f| f.column.as_deref() == column && f.rule == rule)
        .unwrap_or_else(|| panic!("no {rule:?} failure for {column:?}: {:#?}", r.failures))
}

/// (row, value) of each sample.
fn samples(f: &Failure) -> Vec<(u64, Option<&str>)> {
    f.samples
        .iter()
        .map(|s| (s.row, s.value.as_deref()))
        .collect()
}

#[test]
fn valid_data_passes() {
    let r = run(
        "[columns.a]\ntype = \"int\"\n[columns.b]\ntype = \"string\"\n",
        "d.csv",
        "a,b\n1,x\n2,\"y, quoted\"\n",
    );
    assert!(r.passed(), "{:#?}", r.failures);
    assert_eq!(r.rows, 2);
    assert_eq!(r.format, Format::Csv);
}

#[test]
fn type_rule_for_every_type() {
    let r = run(
        r#"
[columns.i]
type = "int"
[columns.f]
type = "float"
[columns.b]
type = "bool"
[columns.s]
type = "string"
[columns.c]
type = "category"
"#,
        "d.csv",
        "i,f,b,s,c\n1,1.5,true,x,u\n1.5,abc,yes,y,v\n-3,nan,FALSE,z,w\n+4,1e3,0,\u{e9},x\n",
    );
    assert_eq!(
        samples(failure(&r, Some("i"), Rule::Type)),
        [(2, Some("1.5"))]
    );
    assert_eq!(
        samples(failure(&r, Some("f"), Rule::Type)),
        [(2, Some("abc")), (3, Some("nan"))]
    );
    assert_eq!(
        samples(failure(&r, Some("b"), Rule::Type)),
        [(2, Some("yes"))]
    );
    assert!(r.failures.iter().all(|f| f.column.as_deref() != Some("s")));
    let stats = r.stats.to_json("csv");
    assert_eq!(stats["columns"]["f"]["invalid"], 2);
    assert_eq!(stats["columns"]["f"]["count"], 2);
    assert_eq!(
        stats["columns"]["b"]["top"],
        serde_json::json!([{"value":"false","count":2},{"value":"true","count":1}])
    );
}

#[test]
fn invalid_utf8_is_a_string_type_failure() {
    let d = Dir::new();
    let p = d.path("d.csv");
    std::fs::write(&p, b"s\nok\n\xff\xfe\n").unwrap();
    let schema = Schema::parse("s.toml", "[columns.s]\ntype = \"string\"\n").unwrap();
    let r = validate(&schema, &p, None).unwrap();
    assert_eq!(failure(&r, Some("s"), Rule::Type).count, 1);
}

#[test]
fn nulls_and_nullable() {
    let r = run(
        r#"
[dataset]
null_values = ["", "NA"]
[columns.a]
type = "float"
[columns.b]
type = "float"
nullable = true
"#,
        "d.csv",
        "a,b\n1,\nNA,NA\n,3\n4,5\n",
    );
    let f = failure(&r, Some("a"), Rule::NotNull);
    assert_eq!(f.count, 2);
    assert_eq!(samples(f), [(2, None), (3, None)]);
    assert!(r.failures.iter().all(|f| f.column.as_deref() != Some("b")));
    let stats = r.stats.to_json("csv");
    assert_eq!(stats["columns"]["b"]["nulls"], 2);
    assert_eq!(stats["columns"]["a"]["nulls"], 2);
}

#[test]
fn min_and_max() {
    let r = run(
        "[columns.a]\ntype = \"float\"\nmin = 0\nmax = 10.5\n[columns.n]\ntype = \"int\"\nmin = -2\nmax = 9223372036854775806\n",
        "d.csv",
        "a,n\n-0.1,-3\n0,9223372036854775807\n10.5,0\n10.6,-2\n",
    );
    assert_eq!(
        samples(failure(&r, Some("a"), Rule::Min)),
        [(1, Some("-0.1"))]
    );
    assert_eq!(
        samples(failure(&r, Some("a"), Rule::Max)),
        [(4, Some("10.6"))]
    );
    assert_eq!(
        samples(failure(&r, Some("n"), Rule::Min)),
        [(1, Some("-3"))]
    );
    // Integers compare exactly, even where f64 could not tell them apart.
    assert_eq!(
        samples(failure(&r, Some("n"), Rule::Max)),
        [(2, Some("9223372036854775807"))]
    );
    assert!(failure(&r, Some("a"), Rule::Max).message.contains("10.5"));
}

#[test]
fn allowed_values() {
    let r = run(
        "[columns.c]\ntype = \"category\"\nallowed = [\"US\", \"DE\"]\n[columns.q]\ntype = \"int\"\nallowed = [1, 2]\n",
        "d.csv",
        "c,q\nUS,1\nFR,2\nus,3\nDE,01\n",
    );
    assert_eq!(
        samples(failure(&r, Some("c"), Rule::Allowed)),
        [(2, Some("FR")), (3, Some("us"))]
    );
    // `01` parses as 1, which is allowed.
    assert_eq!(
        samples(failure(&r, Some("q"), Rule::Allowed)),
        [(3, Some("3"))]
    );
}

#[test]
fn regex_must_match_the_whole_value() {
    let r = run(
        "[columns.m]\ntype = \"string\"\nregex = \"m_[0-9]{2}\"\n",
        "d.csv",
        "m\nm_12\nm_123\nxm_12\nm_1\n",
    );
    let f = failure(&r, Some("m"), Rule::Regex);
    assert_eq!(
        samples(f),
        [(2, Some("m_123")), (3, Some("xm_12")), (4, Some("m_1"))]
    );
    assert!(f.message.contains("m_[0-9]{2}"));
}

#[test]
fn unique_reports_repeats_and_keeps_five_samples() {
    let mut data = String::from("id\n");
    for i in 0..20 {
        data.push_str(&format!("{}\n", i % 10));
    }
    let r = run(
        "[columns.id]\ntype = \"int\"\nunique = true\n",
        "d.csv",
        &data,
    );
    let f = failure(&r, Some("id"), Rule::Unique);
    assert_eq!(f.count, 10);
    assert_eq!(
        samples(f),
        [
            (11, Some("0")),
            (12, Some("1")),
            (13, Some("2")),
            (14, Some("3")),
            (15, Some("4"))
        ]
    );
    // Lines count the header: row 11 is on line 12.
    assert_eq!(f.samples[0].line, 12);
}

#[test]
fn row_count_bounds() {
    let schema = "[dataset]\nmin_rows = 3\nmax_rows = 4\n[columns.a]\ntype = \"int\"\n";
    let few = run(schema, "d.csv", "a\n1\n2\n");
    let f = failure(&few, None, Rule::MinRows);
    assert_eq!(f.count, 2);
    assert!(f.message.contains("fewer than `min_rows` 3"));
    let many = run(schema, "d.csv", "a\n1\n2\n3\n4\n5\n");
    assert_eq!(failure(&many, None, Rule::MaxRows).count, 5);
    assert!(run(schema, "d.csv", "a\n1\n2\n3\n").passed());
}

#[test]
fn header_must_match_the_schema() {
    let schema = "[columns.a]\ntype = \"int\"\n[columns.b]\ntype = \"int\"\n";
    let r = run(schema, "d.csv", "a,c\n1,x\n2,\n3,y\n");
    let missing = failure(&r, Some("b"), Rule::MissingColumn);
    assert_eq!(missing.count, 3);
    let extra = failure(&r, Some("c"), Rule::ExtraColumn);
    assert_eq!(extra.count, 2);
    assert_eq!(samples(extra), [(1, Some("x")), (3, Some("y"))]);
    // With `extra_columns = "allow"` only the missing column is reported.
    let allow = format!("[dataset]\nextra_columns = \"allow\"\n{schema}");
    let r = run(&allow, "d.csv", "a,c\n1,x\n");
    assert_eq!(r.failures.len(), 1);
    assert_eq!(r.failures[0].rule, Rule::MissingColumn);
}

#[test]
fn ragged_rows_are_reported() {
    let r = run(
        "[columns.a]\ntype = \"int\"\n[columns.b]\ntype = \"int\"\nnullable = true\n",
        "d.csv",
        "a,b\n1,2\n3\n4,5,6\n",
    );
    let f = failure(&r, None, Rule::FieldCount);
    assert_eq!(samples(f), [(2, Some("1 fields")), (3, Some("3 fields"))]);
}

#[test]
fn semicolon_delimiter_and_quoted_newlines() {
    let r = run(
        "[dataset]\ndelimiter = \";\"\n[columns.a]\ntype = \"string\"\n[columns.n]\ntype = \"int\"\n",
        "d.csv",
        "a;n\n\"multi\nline\";1\nx;oops\n",
    );
    let f = failure(&r, Some("n"), Rule::Type);
    // Row 2 starts on line 4 because row 1 spans two lines.
    assert_eq!((f.samples[0].row, f.samples[0].line), (2, 4));
}

#[test]
fn json_lines_input() {
    let r = run(
        r#"
[columns.id]
type = "int"
unique = true
[columns.amount]
type = "float"
min = 0
[columns.country]
type = "category"
allowed = ["US", "DE"]
nullable = true
[columns.ok]
type = "bool"
"#,
        "d.jsonl",
        concat!(
            "{\"id\": 1, \"amount\": 2.5, \"country\": \"US\", \"ok\": true}\n",
            "\n",
            "{\"id\": 2, \"amount\": -1, \"country\": null, \"ok\": false}\n",
            "{\"id\": 2, \"amount\": \"3\", \"ok\": true, \"extra\": [1]}\n",
            "{\"id\": 4, \"country\": \"FR\", \"ok\": 1}\n",
        ),
    );
    assert_eq!(r.format, Format::JsonLines);
    assert_eq!(r.rows, 4);
    assert_eq!(
        samples(failure(&r, Some("amount"), Rule::Min)),
        [(2, Some("-1"))]
    );
    // A missing key is null.
    assert_eq!(
        samples(failure(&r, Some("amount"), Rule::NotNull)),
        [(4, None)]
    );
    assert_eq!(
        samples(failure(&r, Some("id"), Rule::Unique)),
        [(3, Some("2"))]
    );
    let allowed = failure(&r, Some("country"), Rule::Allowed);
    assert_eq!(samples(allowed), [(4, Some("FR"))]);
    assert_eq!(allowed.samples[0].line, 5);
    assert_eq!(
        samples(failure(&r, Some("extra"), Rule::ExtraColumn)),
        [(3, Some("[1]"))]
    );
    assert!(r.failures.iter().all(|f| f.column.as_deref() != Some("ok")));
}

#[test]
fn malformed_json_line_is_bad_input_naming_the_line() {
    let d = Dir::new();
    let p = d.write("d.ndjson", "{\"a\": 1}\n{\"a\": \n");
    let schema = Schema::parse("s.toml", "[columns.a]\ntype = \"int\"\n").unwrap();
    let e = validate(&schema, &p, None).unwrap_err();
    assert_eq!(e.kind(), DataErrorKind::Data);
    assert!(e.message().contains("line 2"), "{e}");
}

#[test]
fn unknown_extension_needs_a_format() {
    let d = Dir::new();
    let p = d.write("d.txt", "a\n1\n");
    let schema = Schema::parse("s.toml", "[columns.a]\ntype = \"int\"\n").unwrap();
    let e = validate(&schema, &p, None).unwrap_err();
    assert_eq!(e.kind(), DataErrorKind::Usage);
    assert!(validate(&schema, &p, Some(Format::Csv)).unwrap().passed());
    let with_format = Schema::parse(
        "s.toml",
        "[dataset]\nformat = \"csv\"\n[columns.a]\ntype = \"int\"\n",
    )
    .unwrap();
    assert!(validate(&with_format, &p, None).unwrap().passed());
}

#[test]
fn blank_lines_are_not_rows_and_a_header_alone_is_zero_rows() {
    let schema = "[columns.a]\ntype = \"int\"\n[columns.b]\ntype = \"category\"\n";
    let r = run(schema, "d.csv", "a,b\r\n1,x\r\n\r\n2,y\r\n");
    assert!(r.passed(), "{:#?}", r.failures);
    assert_eq!(r.rows, 2);
    let r = run(schema, "d.csv", "a,b\n");
    assert!(r.passed());
    assert_eq!(r.rows, 0);
    let s = r.stats.to_json("csv");
    assert_eq!(s["columns"]["a"]["count"], 0);
    assert_eq!(s["columns"]["a"]["mean"], Value::Null);
    assert_eq!(
        s["columns"]["a"]["histogram"]["counts"],
        serde_json::json!([])
    );
    assert_eq!(s["columns"]["b"]["top"], serde_json::json!([]));
}

#[test]
fn empty_csv_is_bad_input() {
    let d = Dir::new();
    let p = d.write("d.csv", "");
    let schema = Schema::parse("s.toml", "[columns.a]\ntype = \"int\"\n").unwrap();
    assert_eq!(
        validate(&schema, &p, None).unwrap_err().kind(),
        DataErrorKind::Data
    );
}

#[test]
fn stats_of_a_known_dataset() {
    let r = run(
        "[columns.x]\ntype = \"float\"\n[columns.c]\ntype = \"category\"\n",
        "d.csv",
        "x,c\n2,a\n4,b\n4,a\n4,a\n5,c\n5,b\n7,a\n9,a\n",
    );
    let s = r.stats.to_json("csv");
    assert_eq!(s["rows"], 8);
    let x = &s["columns"]["x"];
    assert_eq!(x["mean"], 5.0);
    assert!((x["std"].as_f64().unwrap() - (32.0f64 / 7.0).sqrt()).abs() < 1e-10);
    assert_eq!(
        (x["min"].as_f64(), x["max"].as_f64()),
        (Some(2.0), Some(9.0))
    );
    // Quantiles within 1% of the exact value at rank floor(q * (n - 1)).
    let sorted = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
    for (name, q) in mlbuild_rules::stats::QUANTILES {
        let exact: f64 = sorted[(q * 7.0f64).floor() as usize];
        let est = x["quantiles"][name].as_f64().unwrap();
        assert!(
            (est - exact).abs() <= 0.01 * exact,
            "{name}: {est} vs {exact}"
        );
    }
    let c = &s["columns"]["c"];
    assert_eq!(c["distinct"], 3);
    assert_eq!(c["top"][0], serde_json::json!({"value": "a", "count": 5}));
}

fn args(list: &[&Path]) -> Vec<String> {
    let names = ["--schema", "--data", "--out"];
    names
        .iter()
        .zip(list)
        .flat_map(|(n, p)| [n.to_string(), p.display().to_string()])
        .collect()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn cli_writes_deterministic_reports() {
    let d = Dir::new();
    let schema = d.write(
        "s.toml",
        "[columns.a]\ntype = \"float\"\nmax = 10\n[columns.b]\ntype = \"category\"\n",
    );
    let data = d.write("d.csv", "a,b\n1.5,x\n20,y\n3.25,x\n");
    let out1 = d.path("out1");
    let out2 = d.path("out2");
    let o = run_cli(&args(&[&schema, &data, &out1])).unwrap();
    assert!(
        matches!(o, Outcome::Failed(ref m) if m.contains("1 rule(s) broken")),
        "{o:?}"
    );
    run_cli(&args(&[&schema, &data, &out2])).unwrap();
    for f in ["report.json", "stats.json"] {
        let a = std::fs::read(out1.join(f)).unwrap();
        assert_eq!(
            a,
            std::fs::read(out2.join(f)).unwrap(),
            "{f} differs between runs"
        );
        assert!(a.ends_with(b"}\n"));
    }
    let report = read_json(&out1.join("report.json"));
    assert_eq!(report["verdict"], "fail");
    assert_eq!(report["failures"][0]["rule"], "max");
    assert_eq!(report["failures"][0]["samples"][0]["value"], "20");
    let stats = read_json(&out1.join("stats.json"));
    assert_eq!(stats["columns"]["a"]["max"], 20.0);
    // Keys are sorted.
    let text = std::fs::read_to_string(out1.join("stats.json")).unwrap();
    assert!(text.find("\"columns\"").unwrap() < text.find("\"format\"").unwrap());

    let ok = d.write("ok.csv", "a,b\n1,x\n");
    let out3 = d.path("out3");
    assert_eq!(
        run_cli(&args(&[&schema, &ok, &out3])).unwrap(),
        Outcome::Passed
    );
    assert_eq!(read_json(&out3.join("report.json"))["verdict"], "pass");
}

#[test]
fn cli_bad_input() {
    let d = Dir::new();
    let schema = d.write("s.toml", "[columns.a]\ntype = \"decimal\"\n");
    let data = d.write("d.csv", "a\n1\n");
    let out = d.path("out");
    let e = run_cli(&args(&[&schema, &data, &out])).unwrap_err();
    assert_eq!(e.kind(), DataErrorKind::Schema);
    assert!(
        e.render_plain().contains("s.toml:2:8"),
        "{}",
        e.render_plain()
    );
    let e = run_cli(&["--data".into(), "x.csv".into()]).unwrap_err();
    assert_eq!(e.kind(), DataErrorKind::Usage);
    let good = d.write("g.toml", "[columns.a]\ntype = \"int\"\n");
    let e = run_cli(&args(&[&good, &d.path("missing.csv"), &out])).unwrap_err();
    assert_eq!(e.kind(), DataErrorKind::Io);
    let mut a = args(&[&good, &data, &out]);
    a.extend(["--format".into(), "parquet".into()]);
    assert_eq!(run_cli(&a).unwrap_err().kind(), DataErrorKind::Usage);
}

#[test]
fn the_failure_table_right_aligns_row_counts() {
    let r = run(
        "[dataset]\nmin_rows = 5\n[columns.id]\ntype = \"int\"\nunique = true\n[columns.amount]\ntype = \"float\"\nmax = 1000\n",
        "d.csv",
        "id,amount\n1,10\n1,2000\n2,abc\n",
    );
    assert_eq!(
        r.table(),
        "column     rule      rows  samples (row: value)\n\
         (dataset)  min_rows     3  3 rows, fewer than `min_rows` 5\n\
         amount     type         1  3: \"abc\" (not a valid `float`)\n\
         amount     max          1  2: \"2000\" (above `max` 1000)\n\
         id         unique       1  2: \"1\" (repeats an earlier value of a `unique` column)\n"
    );
}
