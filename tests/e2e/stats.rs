//! `mlbuild stats`: per-target runs, cache hit rate, success rate and last failure from
//! the build history.

use crate::support::{pipeline, Ws};

fn target<'a>(json: &'a serde_json::Value, label: &str) -> &'a serde_json::Value {
    json["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["label"] == label)
        .unwrap_or_else(|| panic!("no {label} in {json:#}"))
}

#[test]
fn stats_count_runs_hits_and_failures() {
    let ws = Ws::new();
    pipeline(&ws);
    ws.build_ok(&["//..."]); // 3 executed
    ws.build_ok(&["//..."]); // 3 cached
    let build = ws
        .read("models/BUILD.toml")
        .replace("lr = 0.05", "lr = 0.1");
    ws.write("models/BUILD.toml", &build);
    ws.build_ok(&["//..."]); // raw cached, model and report executed
                             // A failing model: report is skipped, which is not a run.
    ws.write("models/train.sh", "exit 3\n");
    assert_eq!(ws.build(&["//..."]).code, 1);

    let run = ws.run(&["--json", "stats"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();

    let raw = target(&json, "//data:raw");
    assert_eq!(raw["runs"], 4);
    assert_eq!(raw["executed"], 1);
    assert_eq!(raw["cached"], 3);
    assert_eq!(raw["cache_hit_rate"], 0.75);
    assert_eq!(raw["success_rate"], 1.0);
    assert_eq!(raw["last_failure"], serde_json::Value::Null);

    let model = target(&json, "//models:model");
    assert_eq!(model["runs"], 4);
    assert_eq!(model["executed"], 2);
    assert_eq!(model["cached"], 1);
    assert_eq!(model["failed"], 1);
    assert_eq!(model["success_rate"], 0.75);
    let failure = &model["last_failure"];
    assert!(failure["invocation_id"].as_i64().unwrap() > 0, "{json:#}");
    assert!(failure["at"].as_i64().unwrap() > 1_600_000_000, "{json:#}");

    let report = target(&json, "//models:report");
    assert_eq!(report["runs"], 3);

    let totals = &json["totals"];
    assert_eq!(totals["targets"], 3);
    assert_eq!(totals["runs"], 11);
    assert_eq!(totals["cached"], 5);
    assert_eq!(totals["failed"], 1);

    // Text: one row per target plus the total; a filter keeps only the named targets.
    let text = ws.run(&["stats", "//models:model"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert!(lines[0].starts_with("builds since "), "{}", text.stdout);
    assert_eq!(
        lines[1], "target             runs  executed  median  hit rate  success  last failure",
        "{}",
        text.stdout
    );
    assert_eq!(lines.len(), 4, "{}", text.stdout);
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(row[..3], ["//models:model", "4", "2"], "{}", text.stdout);
    assert_eq!(row[4..6], ["25%", "75%"], "{}", text.stdout);
    assert!(lines[2].contains("(build #"), "{}", text.stdout);
    assert!(lines[3].starts_with("total (1 targets)"), "{}", text.stdout);

    // The median is the executed runs' (hits would pull it to 0ms), as in `--json`.
    let text = ws.run(&["stats", "//data:raw"]);
    let row: Vec<&str> = text
        .stdout
        .lines()
        .nth(2)
        .unwrap()
        .split_whitespace()
        .collect();
    let median = raw["median_executed_ms"].as_u64().unwrap();
    let expected = if median < 1000 {
        format!("{median}ms")
    } else {
        format!("{:.2}s", median as f64 / 1000.0)
    };
    assert_eq!(
        row[..4],
        ["//data:raw", "4", "1", &expected],
        "{}",
        text.stdout
    );

    // The window is checked in the store's unit tests; here only its parsing.
    let week = ws.run(&["--json", "stats", "--since", "1w"]);
    assert_eq!(week.code, 0, "{}", week.stderr);
    let json: serde_json::Value = serde_json::from_str(&week.stdout).unwrap();
    assert_eq!(json["totals"]["runs"], 11);
    let bad = ws.run(&["stats", "--since", "week"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr
            .contains("`week` is not an age like `30d`, `1w` or `12h`"),
        "{}",
        bad.stderr
    );
}
