//! `drift`: identical data is ok, shifted data fails, categorical shifts are caught by the
//! JS distance, type inference without a schema, and the command-line entry point.

use std::fmt::Write as _;
use std::path::PathBuf;

use mlbuild_rules::drift::{drift, run_cli, Comparison, DriftReport, Status, Thresholds};
use mlbuild_rules::schema::{Format, Schema};
use mlbuild_rules::validate::error::DataErrorKind;
use mlbuild_rules::validate::Outcome;

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
}

/// A deterministic pseudo-normal sample (sum of 12 uniforms) with the given mean and sd.
fn normal(n: usize, mean: f64, sd: f64, seed: u64) -> Vec<f64> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut uniform = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| mean + sd * ((0..12).map(|_| uniform()).sum::<f64>() - 6.0))
        .collect()
}

fn csv(amounts: &[f64], countries: &[&str]) -> String {
    let mut s = String::from("amount,country\n");
    for (i, a) in amounts.iter().enumerate() {
        let _ = writeln!(s, "{a},{}", countries[i % countries.len()]);
    }
    s
}

fn compare(data: &str, reference: &str, schema: Option<&str>) -> DriftReport {
    let d = Dir::new();
    let dp = d.write("data.csv", data);
    let rp = d.write("ref.csv", reference);
    let schema = schema.map(|s| Schema::parse("s.toml", s).unwrap());
    drift(
        (&dp, Format::Csv),
        (&rp, Format::Csv),
        schema.as_ref(),
        Thresholds::default(),
    )
    .unwrap()
}

fn column<'a>(r: &'a DriftReport, name: &str) -> &'a mlbuild_rules::drift::ColumnDrift {
    r.columns.iter().find(|c| c.name == name).unwrap()
}

fn psi_of(r: &DriftReport, name: &str) -> f64 {
    match &column(r, name).comparison {
        Comparison::Numeric { psi, .. } => psi.as_ref().unwrap().value,
        other => panic!("not numeric: {other:?}"),
    }
}

fn ks_of(r: &DriftReport, name: &str) -> f64 {
    match &column(r, name).comparison {
        Comparison::Numeric { ks, .. } => ks.unwrap(),
        other => panic!("not numeric: {other:?}"),
    }
}

fn js_of(r: &DriftReport, name: &str) -> f64 {
    match &column(r, name).comparison {
        Comparison::Categorical { js, .. } => js.unwrap(),
        other => panic!("not categorical: {other:?}"),
    }
}

const COUNTRIES: [&str; 4] = ["US", "DE", "FR", "GB"];

#[test]
fn identical_data_is_ok() {
    let text = csv(&normal(5000, 100.0, 15.0, 1), &COUNTRIES);
    let r = compare(&text, &text, None);
    assert_eq!(r.verdict, Status::Ok);
    assert_eq!(psi_of(&r, "amount"), 0.0);
    assert_eq!(ks_of(&r, "amount"), 0.0);
    assert_eq!(js_of(&r, "country"), 0.0);
    let table = r.table();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0], "column   status  metric                note",
        "{table}"
    );
    assert_eq!(lines[1], "amount   ok      psi 0.0000 ks 0.0000", "{table}");
    assert_eq!(lines[2], "country  ok      js 0.0000", "{table}");
}

#[test]
fn another_sample_of_the_same_distribution_is_ok() {
    let a = csv(&normal(20_000, 100.0, 15.0, 1), &COUNTRIES);
    let b = csv(&normal(20_000, 100.0, 15.0, 2), &COUNTRIES);
    let r = compare(&a, &b, None);
    assert_eq!(r.verdict, Status::Ok, "{}", r.table());
    assert!(psi_of(&r, "amount") < 0.01);
    assert!(ks_of(&r, "amount") < 0.03);
}

#[test]
fn shifted_distribution_fails() {
    // A one-sd shift of a normal: the PSI is about 1 (far above 0.25) and the KS
    // statistic is 2 * Phi(0.5) - 1, about 0.38.
    let reference = csv(&normal(20_000, 100.0, 15.0, 1), &COUNTRIES);
    let data = csv(&normal(20_000, 115.0, 15.0, 2), &COUNTRIES);
    let r = compare(&data, &reference, None);
    assert_eq!(column(&r, "amount").status, Status::Fail);
    assert_eq!(r.verdict, Status::Fail);
    assert!(psi_of(&r, "amount") > 0.25);
    let ks = ks_of(&r, "amount");
    assert!((ks - 0.383).abs() < 0.03, "{ks}");
    assert_eq!(column(&r, "country").status, Status::Ok);
}

#[test]
fn small_shift_warns() {
    let reference = csv(&normal(20_000, 100.0, 15.0, 1), &COUNTRIES);
    let data = csv(&normal(20_000, 106.0, 15.0, 2), &COUNTRIES);
    let r = compare(&data, &reference, None);
    let psi = psi_of(&r, "amount");
    assert!((0.1..0.25).contains(&psi), "{psi}");
    assert_eq!(r.verdict, Status::Warn);
}

#[test]
fn categorical_shift_is_caught_by_js() {
    let amounts = normal(4000, 10.0, 1.0, 3);
    let reference = csv(&amounts, &COUNTRIES);
    let data = csv(&amounts, &["US", "US", "US", "NG"]);
    let r = compare(&data, &reference, None);
    // P = (.25, .25, .25, .25, 0), Q = (.75, 0, 0, 0, .25) over US, DE, FR, GB, NG.
    let pairs = [
        (0.25, 0.75),
        (0.25, 0.0),
        (0.25, 0.0),
        (0.25, 0.0),
        (0.0, 0.25),
    ];
    let expected = mlbuild_rules::drift::metrics::js_from_pairs(&pairs);
    assert!((js_of(&r, "country") - expected).abs() < 1e-12);
    assert!(expected > 0.2);
    assert_eq!(column(&r, "country").status, Status::Fail);
    assert_eq!(column(&r, "amount").status, Status::Ok);
}

#[test]
fn inference_and_unmatched_columns_without_a_schema() {
    let reference = "id,code,old\n1,7,x\n2,8,y\n3,9,z\n";
    let data = "id,code,new\n1,7,a\n2,x9,b\n3,,c\n";
    let r = compare(data, reference, None);
    assert!(matches!(
        column(&r, "id").comparison,
        Comparison::Numeric { .. }
    ));
    // `x9` is not a number, so `code` is compared as categorical.
    assert!(matches!(
        column(&r, "code").comparison,
        Comparison::Categorical { .. }
    ));
    assert_eq!(column(&r, "code").data_nulls, 1);
    assert_eq!(r.only_in_data, ["new"]);
    assert_eq!(r.only_in_reference, ["old"]);
}

#[test]
fn schema_picks_columns_and_types() {
    let schema = r#"
[columns.amount]
type = "float"
[columns.country]
type = "category"
[columns.note]
type = "string"
[columns.flag]
type = "bool"
"#;
    let reference = "amount,country,note,flag\n1,US,a,true\n2,DE,b,0\n";
    let data = "amount,country,note\n1,US,zz\n2,DE,yy\n";
    let r = compare(data, reference, Some(schema));
    let names: Vec<_> = r.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["amount", "country", "flag"]);
    let flag = column(&r, "flag");
    assert_eq!(flag.status, Status::Fail);
    assert_eq!(flag.note.as_deref(), Some("column missing from the data"));
    assert_eq!(r.verdict, Status::Fail);
}

#[test]
fn json_lines_against_csv() {
    let d = Dir::new();
    let rp = d.write("ref.csv", "x,c\n1,a\n2,b\n3,a\n4,b\n");
    let dp = d.write(
        "data.jsonl",
        "{\"x\": 1, \"c\": \"a\"}\n{\"x\": 2, \"c\": \"b\"}\n{\"x\": 3, \"c\": \"a\"}\n{\"x\": 4, \"c\": \"b\"}\n",
    );
    let r = drift(
        (&dp, Format::JsonLines),
        (&rp, Format::Csv),
        None,
        Thresholds::default(),
    )
    .unwrap();
    assert_eq!(r.verdict, Status::Ok, "{}", r.table());
    assert_eq!(psi_of(&r, "x"), 0.0);
    assert_eq!(js_of(&r, "c"), 0.0);
}

fn cli(args: &[&str]) -> Result<Outcome, mlbuild_rules::validate::error::DataError> {
    run_cli(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
}

#[test]
fn cli_writes_drift_json_and_sets_the_outcome() {
    let d = Dir::new();
    let reference = d.write("ref.csv", &csv(&normal(5000, 100.0, 15.0, 1), &COUNTRIES));
    let shifted = d.write("new.csv", &csv(&normal(5000, 130.0, 15.0, 2), &COUNTRIES));
    let out = d.0.path().join("out");
    let (r, s, o) = (
        reference.to_str().unwrap(),
        shifted.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let outcome = cli(&["--data", s, "--reference", r, "--out", o]).unwrap();
    assert!(
        matches!(outcome, Outcome::Failed(ref m) if m.contains("1 fail")),
        "{outcome:?}"
    );
    let text = std::fs::read_to_string(out.join("drift.json")).unwrap();
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(j["verdict"], "fail");
    assert_eq!(j["columns"]["amount"]["status"], "fail");
    assert_eq!(
        j["columns"]["amount"]["bins"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        9
    );
    assert_eq!(j["thresholds"]["psi_fail"], 0.25);

    // Raising the thresholds turns the same data into a pass.
    let outcome = cli(&[
        "--data",
        s,
        "--reference",
        r,
        "--out",
        o,
        "--bins",
        "5",
        "--psi-warn",
        "5",
        "--psi-fail",
        "10",
    ])
    .unwrap();
    assert_eq!(outcome, Outcome::Passed);
    let again = std::fs::read_to_string(out.join("drift.json")).unwrap();
    let j: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(
        j["columns"]["amount"]["bins"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    // Same input, same bytes.
    cli(&["--data", s, "--reference", r, "--out", o]).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("drift.json")).unwrap(),
        text
    );
}

#[test]
fn cli_rejects_bad_thresholds_and_schemas() {
    let d = Dir::new();
    let f = d.write("a.csv", "x\n1\n");
    let p = f.to_str().unwrap();
    let e = cli(&[
        "--data",
        p,
        "--reference",
        p,
        "--out",
        "o",
        "--psi-warn",
        "0.5",
        "--psi-fail",
        "0.1",
    ])
    .unwrap_err();
    assert_eq!(e.kind(), DataErrorKind::Usage);
    let e = cli(&["--data", p, "--reference", p, "--out", "o", "--bins", "1"]).unwrap_err();
    assert_eq!(e.kind(), DataErrorKind::Usage);
    let schema = d.write("s.toml", "[columns.x]\ntype = \"number\"\n");
    let e = cli(&[
        "--data",
        p,
        "--reference",
        p,
        "--out",
        "o",
        "--schema",
        schema.to_str().unwrap(),
    ])
    .unwrap_err();
    assert_eq!(e.kind(), DataErrorKind::Schema);
    assert_eq!(e.line_col(), Some((2, 8)));
}
