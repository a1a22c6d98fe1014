//! `mlbuild metrics show|diff`: text, `--json` and `--md`, against the previous build
//! and a named one.

use crate::support::Ws;

/// `//m:train` copies `values.json` to its metrics file.
fn model(ws: &Ws, values: &str) {
    ws.write("m/values.json", values);
    ws.write(
        "m/BUILD.toml",
        r#"[target.train]
srcs = ["values.json"]
cmd = ["cp", "values.json", "{out}/metrics.json"]
outs = ["metrics.json"]
metrics = ["metrics.json"]
"#,
    );
}

fn ok(ws: &Ws, args: &[&str]) -> String {
    let run = ws.run(args);
    assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
    run.stdout
}

#[test]
fn show_prints_the_latest_metrics() {
    let ws = Ws::new();
    let run = ws.run(&["metrics", "show", "//m:train"]);
    assert_ne!(run.code, 0);
    model(
        &ws,
        r#"{"f1": 0.85, "eval": {"auc": 0.9}, "latency_ms": 40}"#,
    );
    let run = ws.run(&["metrics", "show", "//m:train"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("no metrics recorded for `//m:train` in this workspace"),
        "{}",
        run.stderr
    );

    ws.build_ok(&["//m:train"]);
    let text = ok(&ws, &["metrics", "show", "//m:train"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("//m:train (build #"), "{text}");
    assert_eq!(
        lines[1..],
        [
            "metric      value",
            "eval.auc      0.9",
            "f1           0.85",
            "latency_ms     40",
        ],
        "{text}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&ok(&ws, &["--json", "metrics", "show", "//m:train"])).unwrap();
    assert_eq!(json["label"], "//m:train");
    assert_eq!(json["values"]["eval.auc"], 0.9);
    assert_eq!(json["values"]["latency_ms"], 40.0);
    assert!(json["invocation_id"].as_i64().unwrap() > 0);

    let md = ok(&ws, &["metrics", "show", "--md", "//m:train"]);
    insta::assert_snapshot!("metrics_show_md", ws.filter(&md));

    // Relative labels resolve from the current directory, as everywhere.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mlbuild"))
        .arg("--store")
        .arg(ws.store())
        .args(["metrics", "show", ":train"])
        .current_dir(ws.path("m"))
        .env_remove("MLBUILD_STORE")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("f1           0.85"));

    let both = ws.run(&["--json", "metrics", "show", "--md", "//m:train"]);
    assert_eq!(both.code, 2);
}

#[test]
fn diff_against_the_previous_and_a_named_build() {
    let ws = Ws::new();
    model(&ws, r#"{"f1": 0.8, "loss": 0.5, "old_only": 1}"#);
    ws.build_ok(&["--name", "baseline", "//m:train"]);

    // A single build has nothing to compare against.
    let first = ok(&ws, &["metrics", "diff", "//m:train"]);
    assert!(first.contains("no earlier build"), "{first}");

    model(&ws, r#"{"f1": 0.85, "loss": 0.5, "new_only": 2}"#);
    ws.build_ok(&["//m:train"]);
    let text = ok(&ws, &["metrics", "diff", "//m:train"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("//m:train: build #") && lines[0].contains(" -> build #"),
        "{text}"
    );
    // Only what changed (`loss` did not), unless `--all`.
    assert_eq!(
        lines[1..],
        [
            "metric    old   new  delta",
            "f1        0.8  0.85  +0.05",
            "new_only    -     2      -",
            "old_only    1     -      -",
        ],
        "{text}"
    );
    let all = ok(&ws, &["metrics", "diff", "//m:train", "--all"]);
    assert!(all.contains("\nloss      0.5   0.5      0\n"), "{all}");

    // The default is the previous build, which now has the same values (a cached build
    // records its metrics too), while `--against` keeps comparing with the named one.
    ws.build_ok(&["//m:train"]);
    assert_eq!(
        ok(&ws, &["metrics", "diff"]),
        "no metric changed in 1 target (`--all` lists them)\n"
    );
    assert_eq!(
        ok(&ws, &["metrics", "diff", "//m:train"]),
        "no metric of `//m:train` changed (`--all` lists them)\n"
    );
    assert_eq!(ok(&ws, &["--json", "metrics", "diff"]).trim(), "[]");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&ws, &["--json", "metrics", "diff", "--all"])).unwrap();
    let d = &json[0];
    assert_eq!(d["label"], "//m:train");
    let f1 = d["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "f1")
        .unwrap();
    assert_eq!(f1["old"], 0.85);
    assert_eq!(f1["delta"], 0.0);

    let json: serde_json::Value = serde_json::from_str(&ok(
        &ws,
        &[
            "--json",
            "metrics",
            "diff",
            "//m:train",
            "--against",
            "baseline",
        ],
    ))
    .unwrap();
    let f1 = json[0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "f1")
        .unwrap()
        .clone();
    assert_eq!(f1["old"], 0.8);
    assert_eq!(f1["new"], 0.85);
    assert!((f1["delta"].as_f64().unwrap() - 0.05).abs() < 1e-9);

    let md = ok(&ws, &["metrics", "diff", "--against", "baseline", "--md"]);
    insta::assert_snapshot!("metrics_diff_md", md);

    // A target the named build did not record: the old side is empty, and says why.
    model(&ws, r#"{"f1": 0.85}"#);
    ws.write("n/values.json", r#"{"acc": 1}"#);
    ws.write(
        "n/BUILD.toml",
        "[target.eval]\nsrcs = [\"values.json\"]\ncmd = [\"cp\", \"values.json\", \"{out}/m.json\"]\nouts = [\"m.json\"]\nmetrics = [\"m.json\"]\n",
    );
    ws.build_ok(&["//..."]);
    let text = ok(&ws, &["metrics", "diff", "--against", "baseline"]);
    assert!(
        text.contains("//n:eval: no metrics in build `baseline` -> build #"),
        "{text}"
    );
    assert!(text.contains("\nacc       -    1      -\n"), "{text}");
    let run = ws.run(&["metrics", "diff", "//n:eval", "--against", "baseline"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("build `baseline` recorded no metrics for `//n:eval`"),
        "{}",
        run.stderr
    );

    let run = ws.run(&["metrics", "diff", "--against", "nope"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("no build named `nope`"),
        "{}",
        run.stderr
    );
}

#[test]
fn diff_lists_what_changed_with_significant_digits() {
    let ws = Ws::new();
    model(&ws, r#"{"auc": 0.91, "loss": 0.5}"#);
    ws.write("n/values.json", r#"{"acc": 1}"#);
    ws.write(
        "n/BUILD.toml",
        "[target.eval]\nsrcs = [\"values.json\"]\ncmd = [\"cp\", \"values.json\", \"{out}/m.json\"]\nouts = [\"m.json\"]\nmetrics = [\"m.json\"]\n",
    );
    ws.build_ok(&["//..."]);
    // 0.910089 - 0.91 is 8.900000000000574e-5 in floating point.
    model(&ws, r#"{"auc": 0.910089, "loss": 0.5}"#);
    ws.build_ok(&["//..."]);
    insta::assert_snapshot!("metrics_diff_changed", ok(&ws, &["metrics", "diff"]));
    insta::assert_snapshot!("metrics_diff_all", ok(&ws, &["metrics", "diff", "--all"]));
}
