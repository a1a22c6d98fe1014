//! `mlbuild exp show` and `mlbuild metrics plot` on the fraud example: the sweep's
//! variants with the one selected, recent builds with the params that differ and gate
//! verdicts (including a failed gate), as text, Markdown, CSV, JSON, SVG and HTML.

use crate::support::{copy_tree, example_dir, Ws};

const VARIANTS: [&str; 4] = [
    "//models:fraud_model[train.l2=0.0,train.lr=0.05]",
    "//models:fraud_model[train.l2=0.0,train.lr=0.2]",
    "//models:fraud_model[train.l2=0.01,train.lr=0.05]",
    "//models:fraud_model[train.l2=0.01,train.lr=0.2]",
];

/// The example built three times: named `v1`; with `--set train.epochs=5`; with a gate
/// on the evaluation that fails.
fn built_example() -> Ws {
    let ws = Ws::new();
    copy_tree(&example_dir(), &ws.root());
    let build = |args: &[&str]| {
        let mut full = vec!["build", "//models:evaluation"];
        full.extend_from_slice(args);
        ws.command(&full)
            .env_remove("MLBUILD_SIGNING_KEY")
            .output()
            .unwrap()
    };
    let out = build(&["--name", "v1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = build(&["--set", "train.epochs=5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = ws.read("models/BUILD.toml");
    ws.write(
        "models/BUILD.toml",
        &text.replace("\"f1 >= 0.55\"", "\"f1 >= 0.999\""),
    );
    let out = build(&[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ws
}

fn json(ws: &Ws, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["--json", "exp", "show"];
    full.extend_from_slice(args);
    let run = ws.run(&full);
    assert_eq!(run.code, 0, "{}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

#[test]
fn exp_show_and_metrics_plot_on_the_fraud_example() {
    let ws = built_example();
    let selection: serde_json::Value =
        serde_json::from_str(&ws.read("mlbuild-out/models/fraud_model/selection.json")).unwrap();

    // The sweep: four variants of the latest build, the selection's pick marked.
    let exps = json(&ws, &["//models:fraud_model"]);
    let exp = &exps[0];
    assert_eq!(exp["label"], "//models:fraud_model");
    let variants = exp["variants"].as_array().unwrap();
    let labels: Vec<&str> = variants
        .iter()
        .map(|v| v["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, VARIANTS);
    let selected: Vec<&str> = variants
        .iter()
        .filter(|v| v["selected"] == true)
        .map(|v| v["label"].as_str().unwrap())
        .collect();
    assert_eq!(selected, [selection["selected"].as_str().unwrap()]);
    for v in variants {
        // Only the swept keys differ among the variants.
        let keys: Vec<&String> = v["params"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["train.l2", "train.lr"], "{v}");
        assert!(v["metrics"]["f1"].is_number(), "{v}");
    }
    let best = variants
        .iter()
        .map(|v| v["metrics"]["f1"].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    assert_eq!(selection["value"].as_f64().unwrap(), best);

    // Its builds, newest first: the epochs override is the param that differs.
    let builds = exp["builds"].as_array().unwrap();
    assert_eq!(builds.len(), 3, "{builds:#?}");
    let epochs: Vec<i64> = builds
        .iter()
        .map(|b| b["params"]["train.epochs"].as_i64().unwrap())
        .collect();
    assert_eq!(epochs, [15, 5, 15]);
    assert_eq!(builds[2]["name"], "v1");
    assert!(builds.iter().all(|b| b["selected"]
        .as_str()
        .unwrap()
        .starts_with("//models:fraud_model[")));
    assert!(builds[0]["invocation_id"].as_i64() > builds[1]["invocation_id"].as_i64());

    // The evaluation's gates: passed twice, then failed on the strict threshold.
    let eval = &json(&ws, &["//models:evaluation"])[0];
    assert!(eval["variants"].as_array().unwrap().is_empty());
    let verdicts: Vec<Vec<(String, bool)>> = eval["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            b["gates"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| {
                    (
                        g["gate"].as_str().unwrap().to_owned(),
                        g["passed"].as_bool().unwrap(),
                    )
                })
                .collect()
        })
        .collect();
    let g = |s: &str, ok| (s.to_owned(), ok);
    assert_eq!(
        verdicts,
        [
            vec![g("f1 >= 0.999", false), g("auc >= 0.9", true)],
            vec![g("f1 >= 0.55", true), g("auc >= 0.9", true)],
            vec![g("f1 >= 0.55", true), g("auc >= 0.9", true)],
        ]
    );

    // Text: both tables, the selected variant starred, the failed gate named.
    let run = ws.run(&["exp", "show"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = run.stdout;
    assert!(
        text.contains("//models:fraud_model: 4 variants in build #"),
        "{text}"
    );
    assert!(
        text.contains("//models:evaluation: 3 recent builds"),
        "{text}"
    );
    let starred: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("//models:fraud_model[") && l.split_whitespace().nth(1) == Some("*")
        })
        .collect();
    assert_eq!(starred.len(), 1, "{text}");
    assert!(
        starred[0].starts_with(selection["selected"].as_str().unwrap()),
        "{text}"
    );
    assert!(text.contains("FAIL: f1 >= 0.999"), "{text}");
    assert!(text.contains("pass (2)"), "{text}");
    // Variants appear under their sweep, not as targets of their own.
    assert!(
        !text.contains("//models:fraud_model[train.l2=0.0,train.lr=0.05]: "),
        "{text}"
    );

    // Markdown and CSV.
    let md = ws
        .run(&["exp", "show", "//models:fraud_model", "--md"])
        .stdout;
    assert!(
        md.starts_with("### //models:fraud\\_model: 4 variants")
            || md.starts_with("### //models:fraud_model: 4 variants"),
        "{md}"
    );
    assert!(md.contains("| variant"), "{md}");
    let csv_text = ws
        .run(&["exp", "show", "//models:fraud_model", "--csv"])
        .stdout;
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert!(header.contains(&"param:train.lr".to_owned()), "{header:?}");
    assert!(header.contains(&"metric:f1".to_owned()), "{header:?}");
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 4 + 3, "{csv_text}");
    let kind = header.iter().position(|h| h == "row").unwrap();
    let label = header.iter().position(|h| h == "label").unwrap();
    assert_eq!(&rows[0][label], VARIANTS[0]);
    assert_eq!(rows.iter().filter(|r| &r[kind] == "build").count(), 3);

    // Only the metrics asked for.
    let only = &json(
        &ws,
        &["//models:fraud_model", "--metric", "f1", "--metric", "auc"],
    )[0];
    for row in only["variants"]
        .as_array()
        .unwrap()
        .iter()
        .chain(only["builds"].as_array().unwrap())
    {
        let names: Vec<&String> = row["metrics"].as_object().unwrap().keys().collect();
        assert_eq!(names, ["auc", "f1"], "{row}");
    }
    let run = ws.run(&["exp", "show", "--metric", "nope"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("no recorded metric is named `nope`"),
        "{}",
        run.stderr
    );

    // Bad input.
    let run = ws.run(&["exp", "show", "//data:transactions"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("no metrics recorded for `//data:transactions`"),
        "{}",
        run.stderr
    );
    assert_eq!(ws.run(&["--json", "exp", "show", "--md"]).code, 2);
    assert_eq!(ws.run(&["exp", "show", "--md", "--csv"]).code, 2);

    // The plot: an SVG of f1 across builds and across variants (3 + 4 points).
    let run = ws.run(&[
        "metrics",
        "plot",
        "//models:fraud_model",
        "--metric",
        "f1",
        "--out",
        "f1.svg",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("wrote f1.svg (2 charts of 1 targets)"),
        "{}",
        run.stdout
    );
    let svg = ws.read("f1.svg");
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(
        svg.contains("//models:fraud_model f1 across builds"),
        "{svg}"
    );
    assert!(svg.contains("per variant"), "{svg}");
    assert_eq!(svg.matches("<circle").count(), 3 + 4, "{svg}");
    assert!(svg.contains("v1"), "the named build labels its point");

    // The HTML report: every target with metrics, each chart inline, nothing external.
    let run = ws.run(&["metrics", "plot", "--out", "report.html"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let html = ws.read("report.html");
    assert!(html.starts_with("<!DOCTYPE html>"));
    for target in ["//models:fraud_model", "//models:evaluation"] {
        assert!(
            html.contains(&format!("<h2>{target}</h2>")),
            "{target} missing"
        );
    }
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
    assert!(html.matches("<svg").count() >= 4);
    assert!(html.contains("(selected)"));

    let run = ws.run(&["metrics", "plot", "--out", "report.png"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("must end in `.svg` or `.html`"),
        "{}",
        run.stderr
    );
    let run = ws.run(&["metrics", "plot", "--metric", "nope", "--out", "x.svg"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("no recorded metric is named `nope`"),
        "{}",
        run.stderr
    );
}
