//! Incrementality: what reruns after which change, and `why` / `status` explaining it.

use crate::support::{pipeline, Ws};

#[test]
fn first_build_executes_everything_second_nothing() {
    let ws = Ws::new();
    pipeline(&ws);
    let first = ws.build_ok(&["//models:report"]);
    assert_eq!((first.executed, first.cached, first.failed), (3, 0, 0));
    assert_eq!(
        ws.read("mlbuild-out/models/model/model.txt"),
        "lr=0.05\nx\n0\n1\n2\n"
    );
    assert_eq!(ws.read("mlbuild-out/models/report/report.txt").trim(), "5");

    let second = ws.build_ok(&["//models:report"]);
    assert_eq!((second.executed, second.cached), (0, 3));
}

#[test]
fn summary_line_names_executed_cached_failed() {
    let ws = Ws::new();
    pipeline(&ws);
    let run = ws.run(&["build", "//..."]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let last = run.stderr.lines().last().unwrap();
    assert!(
        last.starts_with("build succeeded: 3 actions: 3 executed, 0 cached, 0 failed in "),
        "{last}"
    );
}

#[test]
fn param_change_reruns_only_that_target_and_dependents() {
    let ws = Ws::new();
    pipeline(&ws);
    ws.build_ok(&["//..."]);
    let build = ws
        .read("models/BUILD.toml")
        .replace("lr = 0.05", "lr = 0.1");
    ws.write("models/BUILD.toml", &build);

    let why = ws.run(&["why", "//models:model"]);
    assert!(
        why.stdout.contains("param `lr` changed: 0.05 -> 0.1"),
        "{}",
        why.stdout
    );

    let status = ws.run(&["status"]);
    assert_eq!(status.code, 1);
    assert!(
        status.stdout.contains("up to date  //data:raw"),
        "{}",
        status.stdout
    );
    assert!(
        status
            .stdout
            .contains("stale       //models:model: param `lr` changed: 0.05 -> 0.1"),
        "{}",
        status.stdout
    );
    assert!(
        status
            .stdout
            .contains("stale       //models:report: dependency `//models:model` is stale"),
        "{}",
        status.stdout
    );

    let b = ws.build_ok(&["//..."]);
    assert_eq!(b.status["//data:raw"], "cached");
    assert_eq!(b.status["//models:model"], "executed");
    // The model's bytes changed, so the report reruns (its wc result is the same).
    assert_eq!(b.status["//models:report"], "executed");
    assert_eq!(ws.run(&["status"]).code, 0);
}

#[test]
fn touching_mtime_reruns_nothing() {
    let ws = Ws::new();
    pipeline(&ws);
    ws.build_ok(&["//..."]);
    let f = std::fs::File::options()
        .write(true)
        .open(ws.path("models/train.sh"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    drop(f);
    let b = ws.build_ok(&["//..."]);
    assert_eq!(b.executed, 0, "{b:#?}");
}

#[test]
fn source_edit_reruns_target_and_early_cutoff_keeps_downstream_cached() {
    let ws = Ws::new();
    pipeline(&ws);
    ws.build_ok(&["//..."]);
    // Same behaviour, different bytes: the model output is identical.
    ws.write(
        "models/train.sh",
        "# a comment that changes nothing\necho \"lr=$2\" > \"$3\"; cat \"$1\" >> \"$3\"\n",
    );
    let why = ws.run(&["why", "//models:model"]);
    assert!(
        why.stdout.contains("input `models/train.sh` changed"),
        "{}",
        why.stdout
    );

    let b = ws.build_ok(&["//..."]);
    assert_eq!(b.status["//models:model"], "executed");
    assert_eq!(
        b.status["//models:report"], "cached",
        "early cutoff: {b:#?}"
    );
    assert_eq!(b.status["//data:raw"], "cached");
}

#[test]
fn why_reports_env_and_dependency_changes_and_json() {
    let ws = Ws::new();
    pipeline(&ws);
    ws.build_ok(&["//..."]);
    let build = ws.read("models/BUILD.toml").replace(
        "params = { lr = 0.05 }",
        "params = { lr = 0.05 }\nenv = { TRAIN_MODE = \"1\" }",
    );
    ws.write("models/BUILD.toml", &build);
    ws.write(
        "data/BUILD.toml",
        &ws.read("data/BUILD.toml").replace("rows = 3", "rows = 4"),
    );
    let why = ws.run(&["why", "//models:model"]);
    assert!(
        why.stdout.contains("env var `TRAIN_MODE` added: 1"),
        "{}",
        why.stdout
    );
    assert!(
        why.stdout.contains("dependency `//data:raw` is stale"),
        "{}",
        why.stdout
    );
    let json = ws.run(&["--json", "why", "//models:model"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["stale_dependencies"][0], "//data:raw");
    assert_eq!(v["changes"][0]["subject"], "env var `TRAIN_MODE`");
}

/// Checks that `why` gives every target of the pipeline the verdict and first reason
/// `status` gives it.
fn assert_why_agrees_with_status(ws: &Ws) {
    let status = ws.run(&["status"]);
    let mut lines = 0;
    for line in status.stdout.lines() {
        let (label, expected) = if let Some(rest) = line.strip_prefix("stale       ") {
            let (label, reason) = rest.split_once(": ").unwrap();
            (label, format!("{label} is stale: {reason}"))
        } else {
            let label = line.strip_prefix("up to date  ").unwrap();
            (label, format!("{label} is up to date"))
        };
        let why = ws.run(&["why", label]);
        let first = why.stdout.lines().next().unwrap_or_default();
        if first == format!("{label} will rebuild:") {
            // The target's own changes, listed in full: the first is status's reason.
            let reason = why.stdout.lines().nth(1).unwrap_or_default().trim();
            assert_eq!(
                format!("{label} is stale: {reason}"),
                expected,
                "{}",
                why.stdout
            );
        } else {
            assert_eq!(first, expected, "status: {line}\nwhy: {}", why.stdout);
        }
        lines += 1;
    }
    assert_eq!(lines, 3, "{}", status.stdout);
}

#[test]
fn why_and_status_agree_below_a_stale_dependency() {
    let ws = Ws::new();
    pipeline(&ws);
    ws.build_ok(&["//..."]);
    assert_why_agrees_with_status(&ws);
    // Upstream changes: the report's own inputs are as last built, but it is stale, and
    // `why` follows the stale dependencies down to the change.
    ws.write(
        "data/BUILD.toml",
        &ws.read("data/BUILD.toml").replace("rows = 3", "rows = 4"),
    );
    let why = ws.run(&["why", "//models:report"]);
    assert_eq!(why.code, 0, "{}", why.stderr);
    insta::assert_snapshot!("why_below_a_stale_dependency", why.stdout);
    let json = ws.run(&["--json", "why", "//models:report"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["stale"], true);
    assert_eq!(v["reason"], "dependency `//models:model` is stale");
    let chain: Vec<&str> = v["stale_chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["label"].as_str().unwrap())
        .collect();
    assert_eq!(chain, ["//models:model", "//data:raw"]);
    assert_eq!(v["current_key"], serde_json::Value::Null, "{v}");
    assert_why_agrees_with_status(&ws);
}

#[test]
fn why_and_status_agree_when_a_cached_result_is_gone() {
    // The reverse case: the key is unchanged, but the outputs are gone from the store
    // (gc, fsck), so `status` says stale and `why` must not say unchanged.
    let ws = Ws::new();
    pipeline(&ws);
    ws.build_ok(&["//..."]);
    for shard in std::fs::read_dir(ws.store().join("cas")).unwrap() {
        std::fs::remove_dir_all(shard.unwrap().path()).unwrap();
    }
    let why = ws.run(&["why", "//data:raw"]);
    assert_eq!(
        why.stdout,
        "//data:raw is stale: cached result is missing from the store\n"
    );
    assert_why_agrees_with_status(&ws);
    // And once rebuilt, both say up to date.
    ws.build_ok(&["//..."]);
    assert_why_agrees_with_status(&ws);
    let why = ws.run(&["why", "//models:report"]);
    assert_eq!(why.stdout, "//models:report is up to date\n");
}

#[test]
fn clean_then_build_restores_from_cache() {
    let ws = Ws::new();
    pipeline(&ws);
    ws.build_ok(&["//..."]);
    assert_eq!(ws.run(&["clean"]).code, 0);
    assert!(!ws.path("mlbuild-out").exists());
    let b = ws.build_ok(&["//..."]);
    assert_eq!(b.executed, 0);
    assert_eq!(ws.read("mlbuild-out/data/raw/raw.csv"), "x\n0\n1\n2\n");
}

#[test]
fn outputs_are_hardlinks_into_the_store() {
    use std::os::unix::fs::MetadataExt;
    let ws = Ws::new();
    pipeline(&ws);
    ws.build_ok(&["//data:raw"]);
    let meta = std::fs::metadata(ws.path("mlbuild-out/data/raw/raw.csv")).unwrap();
    assert!(meta.nlink() >= 2, "output is not linked into the store");
    assert!(meta.permissions().readonly());
}

#[test]
fn filegroups_share_data_by_content() {
    use std::os::unix::fs::PermissionsExt;
    let ws = Ws::new();
    ws.write("data/raw/a.csv", "1\n");
    ws.write("data/raw/b.csv", "2\n");
    ws.write(
        "data/BUILD.toml",
        "[target.raw]\nkind = \"filegroup\"\nsrcs = [\"raw/*.csv\"]\n",
    );
    ws.write(
        "stats/BUILD.toml",
        r#"
[target.sum]
deps = ["//data:raw"]
cmd = ["sh", "-c", "cat {deps.raw}/raw/a.csv {deps.raw}/raw/b.csv > {out}/all.csv"]
outs = ["all.csv"]
"#,
    );
    let b = ws.build_ok(&["//stats:sum"]);
    assert_eq!(b.status["//data:raw"], "executed");
    assert_eq!(ws.read("mlbuild-out/stats/sum/all.csv"), "1\n2\n");
    assert_eq!(ws.read("mlbuild-out/data/raw/raw/a.csv"), "1\n");
    // The user's files are copied into the store, never made read-only.
    let mode = std::fs::metadata(ws.path("data/raw/a.csv"))
        .unwrap()
        .permissions()
        .mode();
    assert_ne!(mode & 0o200, 0, "a source file became read-only");

    assert_eq!(ws.build_ok(&["//stats:sum"]).executed, 0);
    ws.write("data/raw/b.csv", "3\n");
    let b = ws.build_ok(&["//stats:sum"]);
    assert_eq!(b.executed, 2, "{b:#?}");
    assert_eq!(ws.read("mlbuild-out/stats/sum/all.csv"), "1\n3\n");
    // A new file matching the glob changes the filegroup too.
    ws.write("data/raw/c.csv", "4\n");
    let why = ws.run(&["why", "//data:raw"]);
    assert!(
        why.stdout.contains("input `data/raw/c.csv` added"),
        "{}",
        why.stdout
    );
}

#[test]
fn status_in_a_fresh_checkout_sharing_a_store_says_cached_in_the_store() {
    let a = Ws::new();
    pipeline(&a);
    a.build_ok(&["//..."]);
    // A second checkout of the same sources, on the first one's store.
    let b = Ws::new();
    pipeline(&b);
    let out = b
        .command_with_store(&a.store(), &["status"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("never built"), "{text}");
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("//")).collect();
    assert!(!lines.is_empty(), "{text}");
    for line in &lines {
        assert!(line.contains("cached in the store"), "{text}");
    }
    let built = crate::support::parse_built(
        &b.command_with_store(&a.store(), &["--json", "build", "//..."])
            .output()
            .unwrap(),
    );
    assert_eq!((built.code, built.executed), (0, 0), "{built:#?}");
}
