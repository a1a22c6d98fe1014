//! `mlbuild history`: the workspace's recent builds with their ids, names, times, counts
//! and outcomes.

use serde_json::Value;

use crate::support::{pipeline, Built, Ws};

fn history_json(ws: &Ws, args: &[&str]) -> Vec<Value> {
    let run = ws.run(&[&["--json", "history"][..], args].concat());
    assert_eq!(run.code, 0, "{}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

fn invocation_id(built: &Built) -> i64 {
    built
        .events
        .iter()
        .find(|e| e["event"] == "build_finished")
        .and_then(|e| e["invocation_id"].as_i64())
        .expect("build_finished with an invocation id")
}

/// `2026-11-22T08:03:26Z`.
fn is_iso8601_utc(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    b.len() == 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'Z'
}

#[test]
fn history_lists_builds_newest_first_with_names_counts_and_outcomes() {
    let ws = Ws::new();
    pipeline(&ws);
    // Nothing built yet: an empty list, not an error.
    assert_eq!(history_json(&ws, &[]), Vec::<Value>::new());
    let empty = ws.run(&["history"]);
    assert_eq!(empty.code, 0, "{}", empty.stderr);
    assert!(empty.stderr.contains("no builds"), "{}", empty.stderr);

    let first = invocation_id(&ws.build_ok(&["//..."]));
    let named = invocation_id(&ws.build_ok(&["--name", "v1", "//..."]));
    ws.write("models/train.sh", "exit 3\n");
    let failed = ws.build(&["//..."]);
    assert_eq!(failed.code, 1);
    let failed = invocation_id(&failed);
    // Another workspace's builds in the same store are not this one's history.
    let other = Ws::new();
    pipeline(&other);
    let out = other
        .command_with_store(&ws.store(), &["build", "//..."])
        .output()
        .unwrap();
    assert!(out.status.success());

    let builds = history_json(&ws, &[]);
    let ids: Vec<i64> = builds.iter().map(|b| b["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [failed, named, first]);
    let counts = |b: &Value| ["executed", "cached", "failed"].map(|k| b[k].as_u64().unwrap());
    assert_eq!(counts(&builds[0]), [0, 1, 1]);
    assert_eq!(builds[0]["success"], false);
    assert_eq!(builds[0]["name"], Value::Null);
    assert_eq!(counts(&builds[1]), [0, 3, 0]);
    assert_eq!(builds[1]["name"], "v1");
    assert_eq!(builds[1]["success"], true);
    assert_eq!(counts(&builds[2]), [3, 0, 0]);
    for b in &builds {
        let started = b["started_at"].as_str().unwrap();
        assert!(is_iso8601_utc(started), "{started}");
        assert!(b["duration_ms"].is_u64(), "{b}");
        assert!(b["command"].as_str().unwrap().contains(" build "), "{b}");
    }
    assert_eq!(history_json(&ws, &["--limit", "1"]).len(), 1);

    // Text: a header and one row per build, newest first.
    let text = ws.run(&["history", "-n", "2"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", text.stdout);
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "id", "name", "started", "duration", "executed", "cached", "failed", "result",
            "command"
        ]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        row[..2],
        [failed.to_string().as_str(), "-"],
        "{}",
        text.stdout
    );
    assert!(is_iso8601_utc(row[2]), "{}", text.stdout);
    assert_eq!(row[4..8], ["0", "1", "1", "FAILED"], "{}", text.stdout);
    assert_eq!(row[8], "mlbuild", "{}", text.stdout);
    assert!(row.ends_with(&["build", "//..."]), "{}", text.stdout);
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        row[..2],
        [named.to_string().as_str(), "v1"],
        "{}",
        text.stdout
    );
    assert_eq!(row[4..8], ["0", "3", "0", "ok"], "{}", text.stdout);
}
