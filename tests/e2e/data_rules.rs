//! `mlbuild rule validate` and `mlbuild rule drift` through the real binary, the way a
//! `validate` or `drift` action runs them: relative paths in a working directory, a clean
//! environment. Checks exit codes (0 pass, 1 check failed, 2 bad input), the files written
//! and what stderr says.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

struct Out {
    code: i32,
    stderr: String,
}

fn rule(cwd: &Path, kind: &str, args: &[&str]) -> Out {
    let output = Command::new(env!("CARGO_BIN_EXE_mlbuild"))
        .args(["rule", kind])
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("NO_COLOR", "1")
        .output()
        .expect("run mlbuild");
    Out {
        code: output.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

const SCHEMA: &str = r#"[dataset]
min_rows = 2

[columns.id]
type = "int"
unique = true

[columns.amount]
type = "float"
min = 0
max = 1000

[columns.country]
type = "category"
allowed = ["US", "DE", "FR"]
"#;

fn workdir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("transactions.schema.toml"), SCHEMA).unwrap();
    fs::create_dir_all(tmp.path().join("deps/data")).unwrap();
    tmp
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

const VALIDATE: &[&str] = &[
    "--schema",
    "transactions.schema.toml",
    "--data",
    "deps/data/transactions.csv",
    "--out",
    "out",
];

#[test]
fn validate_passes_valid_data() {
    let w = workdir();
    fs::write(
        w.path().join("deps/data/transactions.csv"),
        "id,amount,country\n1,10.5,US\n2,99,DE\n3,0,FR\n",
    )
    .unwrap();
    let out = rule(w.path(), "validate", VALIDATE);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("3 rows, all rules pass"),
        "{}",
        out.stderr
    );
    let report = json(&w.path().join("out/report.json"));
    assert_eq!(report["verdict"], "pass");
    assert_eq!(report["rows"], 3);
    let stats = json(&w.path().join("out/stats.json"));
    assert_eq!(stats["columns"]["amount"]["max"], 99.0);
    assert_eq!(stats["columns"]["country"]["distinct"], 3);
}

#[test]
fn validate_fails_invalid_data_with_a_table() {
    let w = workdir();
    fs::write(
        w.path().join("deps/data/transactions.csv"),
        "id,amount,country\n1,10.5,US\n1,2000,XX\n3,abc,FR\n",
    )
    .unwrap();
    let out = rule(w.path(), "validate", VALIDATE);
    assert_eq!(out.code, 1, "{}", out.stderr);
    for needle in [
        "column",
        "amount",
        "max",
        "2: \"2000\"",
        "type",
        "unique",
        "allowed",
        "\"XX\"",
    ] {
        assert!(
            out.stderr.contains(needle),
            "{needle} missing in:\n{}",
            out.stderr
        );
    }
    assert!(
        out.stderr.contains("4 rule(s) broken in 3 column(s)"),
        "{}",
        out.stderr
    );
    let report = json(&w.path().join("out/report.json"));
    assert_eq!(report["verdict"], "fail");
    let rules: Vec<(String, String)> = report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["column"].as_str().unwrap().to_owned(),
                f["rule"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("amount", "type"),
        ("amount", "max"),
        ("country", "allowed"),
        ("id", "unique"),
    ];
    assert_eq!(
        rules,
        expected.map(|(c, r)| (c.to_owned(), r.to_owned())),
        "{report:#}"
    );
    assert!(w.path().join("out/stats.json").is_file());
}

#[test]
fn validate_bad_schema_is_exit_2_with_file_and_line() {
    let w = workdir();
    fs::write(
        w.path().join("transactions.schema.toml"),
        "[columns.id]\ntype = \"int\"\n\n[columns.amount]\ntype = \"money\"\n",
    )
    .unwrap();
    fs::write(
        w.path().join("deps/data/transactions.csv"),
        "id,amount\n1,2\n",
    )
    .unwrap();
    let out = rule(w.path(), "validate", VALIDATE);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("unknown column type `money`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("transactions.schema.toml:5:8"),
        "{}",
        out.stderr
    );
    assert!(!w.path().join("out/report.json").exists());

    // A missing data file and a bad flag are bad input too.
    fs::write(w.path().join("transactions.schema.toml"), SCHEMA).unwrap();
    let out = rule(
        w.path(),
        "validate",
        &[
            "--schema",
            "transactions.schema.toml",
            "--data",
            "nope.csv",
            "--out",
            "out",
        ],
    );
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("nope.csv"), "{}", out.stderr);
    let out = rule(w.path(), "validate", &["--schema", "x.toml", "--bogus"]);
    assert_eq!(out.code, 2);
}

#[test]
fn validate_json_lines() {
    let w = workdir();
    fs::write(
        w.path().join("deps/data/t.jsonl"),
        "{\"id\": 1, \"amount\": 1.5, \"country\": \"US\"}\n{\"id\": 2, \"amount\": null, \"country\": \"DE\"}\n",
    )
    .unwrap();
    let out = rule(
        w.path(),
        "validate",
        &[
            "--schema",
            "transactions.schema.toml",
            "--data",
            "deps/data/t.jsonl",
            "--out",
            "out",
        ],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let report = json(&w.path().join("out/report.json"));
    assert_eq!(report["format"], "jsonl");
    assert_eq!(report["failures"][0]["rule"], "not_null");
    assert_eq!(report["failures"][0]["samples"][0]["line"], 2);
}

fn sample_csv(shift: f64) -> String {
    let mut s = String::from("id,amount,country\n");
    for i in 0..2000u32 {
        // A smooth, deterministic spread of amounts over [0, 200).
        let a = f64::from((i * 7919) % 2000) / 10.0 + shift;
        let _ = writeln!(s, "{i},{a},{}", ["US", "DE", "FR"][i as usize % 3]);
    }
    s
}

#[test]
fn drift_exit_codes_and_report() {
    let w = workdir();
    fs::write(w.path().join("deps/data/ref.csv"), sample_csv(0.0)).unwrap();
    fs::write(w.path().join("deps/data/same.csv"), sample_csv(0.0)).unwrap();
    fs::write(w.path().join("deps/data/shifted.csv"), sample_csv(80.0)).unwrap();
    let args = |data: &'static str| {
        vec![
            "--data",
            data,
            "--reference",
            "deps/data/ref.csv",
            "--schema",
            "transactions.schema.toml",
            "--bins",
            "10",
            "--psi-warn",
            "0.1",
            "--psi-fail",
            "0.25",
            "--out",
            "out",
        ]
    };
    let ok = rule(w.path(), "drift", &args("deps/data/same.csv"));
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(ok.stderr.contains("drift ok"), "{}", ok.stderr);
    let report = json(&w.path().join("out/drift.json"));
    assert_eq!(report["verdict"], "ok");
    assert_eq!(report["columns"]["amount"]["psi"], 0.0);

    let fail = rule(w.path(), "drift", &args("deps/data/shifted.csv"));
    assert_eq!(fail.code, 1, "{}", fail.stderr);
    assert!(fail.stderr.contains("amount"), "{}", fail.stderr);
    assert!(fail.stderr.contains("fail"), "{}", fail.stderr);
    let report = json(&w.path().join("out/drift.json"));
    assert_eq!(report["verdict"], "fail");
    assert_eq!(report["columns"]["amount"]["status"], "fail");
    assert_eq!(report["columns"]["country"]["status"], "ok");
    // `id` is an int column: compared too (and drifts not, being the same ids).
    assert_eq!(report["columns"]["id"]["status"], "ok");

    let warn = rule(
        w.path(),
        "drift",
        &[
            "--data",
            "deps/data/shifted.csv",
            "--reference",
            "deps/data/ref.csv",
            "--psi-warn",
            "0.1",
            "--psi-fail",
            "100",
            "--out",
            "out",
        ],
    );
    assert_eq!(warn.code, 0, "{}", warn.stderr);
    assert!(warn.stderr.contains("warning: drift"), "{}", warn.stderr);

    let bad = rule(
        w.path(),
        "drift",
        &[
            "--data",
            "deps/data/ref.csv",
            "--reference",
            "deps/data/ref.csv",
            "--out",
            "out",
            "--bins",
            "0",
        ],
    );
    assert_eq!(bad.code, 2, "{}", bad.stderr);
}
