//! The store across processes: concurrent builds, corruption, garbage collection.

use crate::support::{pipeline, Ws};

#[test]
fn two_concurrent_builds_on_one_store_both_succeed() {
    let ws = Ws::new();
    pipeline(&ws);
    // A second checkout of the same workspace sharing the store.
    let other = Ws::new();
    pipeline(&other);
    let store = ws.store();
    let spawn = |w: &Ws| {
        let mut cmd = w.command_with_store(&store, &["--json", "build", "//..."]);
        cmd.stdout(std::process::Stdio::piped()).spawn().unwrap()
    };
    let a = spawn(&ws);
    let b = spawn(&other);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let executed = |out: &[u8]| {
        String::from_utf8_lossy(out)
            .lines()
            .filter(|l| l.contains("\"status\":\"executed\""))
            .count()
    };
    // The action lock means each action ran once overall; the other build reused it.
    assert_eq!(executed(&a.stdout) + executed(&b.stdout), 3);
    assert_eq!(
        ws.read("mlbuild-out/models/model/model.txt"),
        other.read("mlbuild-out/models/model/model.txt")
    );
    // Both builds' results are in the index: a rebuild anywhere executes nothing.
    let again = ws.build_ok(&["//..."]);
    assert_eq!(again.executed, 0);
}

#[test]
fn fsck_removes_a_corrupt_blob_and_the_next_build_recreates_it() {
    use std::os::unix::fs::PermissionsExt;
    let ws = Ws::new();
    pipeline(&ws);
    ws.build_ok(&["//..."]);
    // Corrupt the blob behind the model output.
    let out = ws.path("mlbuild-out/models/model/model.txt");
    let content = std::fs::read(&out).unwrap();
    let digest = blake3::hash(&content).to_hex().to_string();
    let blob = ws.store().join("cas").join(&digest[..2]).join(&digest);
    std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&blob, b"tampered").unwrap();

    let run = ws.run(&["fsck"]);
    assert_eq!(run.code, 3, "{}", run.stdout);
    assert!(
        run.stdout
            .contains(&format!("corrupt blob {digest} removed")),
        "{}",
        run.stdout
    );
    assert!(!blob.exists());

    let b = ws.build_ok(&["//..."]);
    assert_eq!(b.status["//models:model"], "executed", "{b:#?}");
    assert_eq!(b.status["//data:raw"], "cached");
    assert_eq!(std::fs::read(&out).unwrap(), content);
    assert_eq!(ws.run(&["fsck"]).code, 0);
}

/// Outputs are hard links to the store's blobs: rewriting one in place (after a `chmod
/// u+w`, or as root) rewrites the blob. The next build, and `clean` then build, must not
/// hand the altered bytes out as cached: the target re-executes.
#[test]
fn an_output_rewritten_in_place_is_not_handed_out_as_cached() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let ws = Ws::new();
    pipeline(&ws);
    ws.build_ok(&["//..."]);
    let out = ws.path("mlbuild-out/models/model/model.txt");
    let good = std::fs::read(&out).unwrap();
    // Same size, other bytes, same inode; `mode` is left on the file.
    let rewrite = |mode: u32| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut f = std::fs::OpenOptions::new().write(true).open(&out).unwrap();
        f.write_all(&vec![b'X'; good.len()]).unwrap();
        drop(f);
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(mode)).unwrap();
        assert_ne!(std::fs::read(&out).unwrap(), good);
    };
    let clean = || assert_eq!(ws.run(&["clean"]).code, 0);

    // chmod u+w and rewrite, then build.
    rewrite(0o644);
    let b = ws.build_ok(&["//..."]);
    assert_eq!(b.status["//models:model"], "executed", "{b:#?}");
    assert_eq!(std::fs::read(&out).unwrap(), good);
    // The report depends on the model's bytes, which are the same as before.
    assert_eq!(b.status["//models:report"], "cached");
    clean();
    let b = ws.build_ok(&["//..."]);
    assert_eq!(b.executed, 0, "{b:#?}");
    assert_eq!(std::fs::read(&out).unwrap(), good);

    // Rewrite, then clean and build.
    rewrite(0o644);
    clean();
    let b = ws.build_ok(&["//..."]);
    assert_eq!(b.status["//models:model"], "executed", "{b:#?}");
    assert_eq!(std::fs::read(&out).unwrap(), good);

    // Rewritten with the read-only mode put back, as root could: the mtime shows it.
    rewrite(0o444);
    let b = ws.build_ok(&["//..."]);
    assert_eq!(b.status["//models:model"], "executed", "{b:#?}");
    assert_eq!(std::fs::read(&out).unwrap(), good);
    rewrite(0o444);
    clean();
    let b = ws.build_ok(&["//..."]);
    assert_eq!(b.status["//models:model"], "executed", "{b:#?}");
    assert_eq!(std::fs::read(&out).unwrap(), good);
    assert_eq!(ws.run(&["fsck"]).code, 0);
}

#[test]
fn gc_keeps_the_latest_build_and_drops_old_results() {
    let ws = Ws::new();
    pipeline(&ws);
    ws.build_ok(&["//..."]);
    let old = ws.read("mlbuild-out/models/model/model.txt");
    ws.write(
        "models/BUILD.toml",
        &ws.read("models/BUILD.toml")
            .replace("lr = 0.05", "lr = 0.2"),
    );
    ws.build_ok(&["//..."]);
    let run = ws.run(&["gc", "--max-age", "0s"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("removed 2 action entries"),
        "{}",
        run.stdout
    );
    let old_digest = blake3::hash(old.as_bytes()).to_hex().to_string();
    assert!(!ws
        .store()
        .join("cas")
        .join(&old_digest[..2])
        .join(&old_digest)
        .exists());
    // The latest build is intact.
    let b = ws.build_ok(&["//..."]);
    assert_eq!(b.executed, 0);
    // Going back rebuilds the old variant.
    ws.write(
        "models/BUILD.toml",
        &ws.read("models/BUILD.toml")
            .replace("lr = 0.2", "lr = 0.05"),
    );
    let b = ws.build_ok(&["//..."]);
    assert_eq!(b.status["//models:model"], "executed");
}

#[test]
fn gc_needs_a_bound() {
    let ws = Ws::new();
    let run = ws.run(&["gc"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--max-size"), "{}", run.stderr);
}

#[test]
fn gc_reads_sizes_and_ages_and_prints_sizes_with_units() {
    let ws = Ws::new();
    pipeline(&ws);
    ws.build_ok(&["//..."]);
    let bad = ws.run(&["gc", "--max-size", "20X"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr
            .contains("`20X` is not a size like `500MB`, `20G` or `2GiB`"),
        "{}",
        bad.stderr
    );
    // `1kB` is 1000 bytes: less than the pipeline's outputs and logs, so gc removes all
    // but what the latest build uses, and prints both sizes with a unit.
    // Ages take weeks too.
    let run = ws.run(&["gc", "--max-age", "1w"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = ws.run(&["gc", "--max-size", "1kB"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let line = run.stdout.lines().next().unwrap_or_default();
    let sizes: Vec<&str> = line
        .split('(')
        .skip(1)
        .map(|s| s.split(')').next().unwrap())
        .collect();
    assert_eq!(sizes.len(), 2, "{line}");
    for size in sizes {
        let (number, unit) = size.split_once(' ').unwrap_or_else(|| panic!("{line}"));
        assert!(number.parse::<f64>().is_ok(), "{line}");
        assert!(["B", "kB", "MB"].contains(&unit), "{line}");
    }
}

#[test]
fn store_location_from_env_and_mlbuild_toml() {
    let ws = Ws::new();
    pipeline(&ws);
    ws.write("MLBUILD.toml", "[workspace]\nstore = \"../toml-store\"\n");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mlbuild"));
    cmd.arg("-C")
        .arg(ws.root())
        .args(["build", "//data:raw"])
        .env("CI", "1")
        .env_remove("MLBUILD_STORE");
    assert!(cmd.status().unwrap().success());
    assert!(ws.dir.path().join("toml-store/index.sqlite").exists());

    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mlbuild"));
    cmd.arg("-C")
        .arg(ws.root())
        .args(["build", "//data:raw"])
        .env("CI", "1")
        .env("MLBUILD_STORE", ws.dir.path().join("env-store"));
    assert!(cmd.status().unwrap().success());
    assert!(ws.dir.path().join("env-store/index.sqlite").exists());
}

#[test]
fn removed_targets_stop_rooting_their_outputs() {
    let ws = Ws::new();
    pipeline(&ws);
    ws.build_ok(&["//..."]);
    let report = ws.read("mlbuild-out/models/report/report.txt");
    let digest = blake3::hash(report.as_bytes()).to_hex().to_string();
    let blob = ws.store().join("cas").join(&digest[..2]).join(&digest);
    assert!(blob.exists());

    // Delete the report target; building anything prunes its record.
    let build = ws.read("models/BUILD.toml");
    let without = &build[..build.find("[target.report]").unwrap()];
    ws.write("models/BUILD.toml", without);
    ws.build_ok(&["//data:raw"]);
    let run = ws.run(&["gc", "--max-age", "0s"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        !blob.exists(),
        "the deleted target's output is still rooted: {}",
        run.stdout
    );
    // What still exists is untouched.
    assert_eq!(ws.build_ok(&["//..."]).executed, 0);
}

/// The parse cache lives in the store: edits to a params file and to a `BUILD.toml`
/// reach the build through it, and gc drops the entry of a workspace that is gone.
#[test]
fn the_parse_cache_follows_edits_and_gc_drops_it_with_its_workspace() {
    let entries = |ws: &Ws| match std::fs::read_dir(ws.store().join("parsed")) {
        Ok(dir) => dir.count(),
        Err(_) => 0,
    };
    let ws = Ws::new();
    ws.write("MLBUILD.toml", "[workspace]\nparams = \"params.toml\"\n");
    ws.write("params.toml", "[train]\nlr = 0.1\n");
    let build = |prefix: &str| {
        format!(
            "[target.t]\ncmd = [\"sh\", \"-c\", \"echo {prefix}{{params.train.lr}} > {{out}}/o.txt\"]\n\
             outs = [\"o.txt\"]\nparam_keys = [\"train.lr\"]\n"
        )
    };
    ws.write("BUILD.toml", &build(""));
    assert_eq!(ws.build_ok(&["//..."]).executed, 1);
    // The store did not exist while the first build loaded the workspace.
    assert_eq!(entries(&ws), 0);
    assert_eq!(ws.build_ok(&["//..."]).executed, 0);
    assert_eq!(entries(&ws), 1);
    assert_eq!(ws.build_ok(&["//..."]).executed, 0);

    ws.write("params.toml", "[train]\nlr = 0.2\n");
    assert_eq!(ws.build_ok(&["//..."]).executed, 1);
    assert_eq!(ws.read("mlbuild-out/_root/t/o.txt"), "0.2\n");
    ws.write("BUILD.toml", &build("lr="));
    assert_eq!(ws.build_ok(&["//..."]).executed, 1);
    assert_eq!(ws.read("mlbuild-out/_root/t/o.txt"), "lr=0.2\n");
    assert_eq!(ws.build_ok(&["//..."]).executed, 0);

    // A second workspace on the same store, then deleted.
    let other = Ws::new();
    other.write("BUILD.toml", "[target.o]\ncmd = [\"true\"]\n");
    for _ in 0..2 {
        let out = other
            .command_with_store(&ws.store(), &["build", "//..."])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(entries(&ws), 2);
    drop(other);
    let run = ws.run(&["gc", "--max-age", "30d"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("parse caches of 1 workspaces"),
        "{}",
        run.stdout
    );
    assert_eq!(entries(&ws), 1);
    assert_eq!(ws.build_ok(&["//..."]).executed, 0);
}

/// Damages the store's index the way disks and copies do: garbage pages in the middle,
/// the file cut in half, or its header overwritten. Checkpointed first, so the damage
/// hits what the index holds rather than a stale main file behind a write-ahead log.
fn damage_index(ws: &Ws, how: &str) {
    const PAGE: usize = 4096;
    let index = ws.store().join("index.sqlite");
    let conn = rusqlite::Connection::open(&index).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(conn);
    let mut bytes = std::fs::read(&index).unwrap();
    let pages = bytes.len() / PAGE;
    assert!(pages >= 6, "only {pages} pages");
    match how {
        "garbage pages" => {
            let mut x: u32 = 11;
            for b in &mut bytes[pages / 3 * PAGE..2 * pages / 3 * PAGE] {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                *b = (x >> 16) as u8;
            }
        }
        "truncated" => bytes.truncate(pages / 2 * PAGE),
        "header" => bytes[..100].fill(0x5a),
        _ => unreachable!(),
    }
    std::fs::write(&index, bytes).unwrap();
}

/// Every kind of index damage: `fsck` reports it (exit 3) and says how to repair it,
/// `fsck --repair` moves the index aside saying what was lost, and the next build
/// succeeds, re-executing what the lost cache held. An error met before that leads to
/// `fsck --repair`.
#[test]
fn a_damaged_index_is_reported_by_fsck_and_repaired_by_fsck_repair() {
    for how in ["garbage pages", "truncated", "header"] {
        let ws = Ws::new();
        pipeline(&ws);
        // Some history: three builds, two params.
        ws.build_ok(&["//..."]);
        ws.write(
            "models/BUILD.toml",
            &ws.read("models/BUILD.toml")
                .replace("lr = 0.05", "lr = 0.2"),
        );
        ws.build_ok(&["//..."]);
        ws.build_ok(&["//..."]);
        let model = ws.read("mlbuild-out/models/model/model.txt");
        damage_index(&ws, how);

        // Whatever fails on the way, fails as a store error that leads to the repair.
        for cmd in [&["build", "//..."][..], &["stats"], &["params", "diff"]] {
            let run = ws.run(cmd);
            if run.code != 0 {
                assert_eq!(run.code, 3, "{how}: {cmd:?}: {}", run.stderr);
                assert!(
                    run.stderr.contains("`mlbuild fsck --repair`"),
                    "{how}: {cmd:?}: {}",
                    run.stderr
                );
            }
        }

        let run = ws.run(&["fsck"]);
        assert_eq!(run.code, 3, "{how}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stdout.contains("index.sqlite` is damaged:"),
            "{how}: {}",
            run.stdout
        );
        assert!(
            run.stdout
                .contains("help: `mlbuild fsck --repair` moves it aside"),
            "{how}: {}",
            run.stdout
        );
        let json = ws.run(&["--json", "fsck"]);
        assert_eq!(json.code, 3);
        let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
        assert!(
            !json["index"]["problems"].as_array().unwrap().is_empty(),
            "{json}"
        );
        assert!(json["index"]["moved_to"].is_null());

        let run = ws.run(&["fsck", "--repair"]);
        assert_eq!(run.code, 3, "{how}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stdout.contains("index.sqlite` was damaged:"),
            "{how}: {}",
            run.stdout
        );
        assert!(
            run.stdout.contains("and started an empty index"),
            "{how}: {}",
            run.stdout
        );
        assert!(run.stdout.contains("lost: "), "{how}: {}", run.stdout);
        assert!(run.stdout.contains("kept: all "), "{how}: {}", run.stdout);
        let moved = std::fs::read_dir(ws.store())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("index.sqlite.damaged-")
            })
            .count();
        assert!(moved >= 1, "{how}: the damaged index was not kept");
        let run = ws.run(&["fsck"]);
        assert_eq!(run.code, 0, "{how}: {}{}", run.stdout, run.stderr);
        assert!(run.stdout.contains("index: ok"), "{how}: {}", run.stdout);

        // The cache is gone, the blobs are not: everything re-executes, same bytes.
        let b = ws.build_ok(&["//..."]);
        assert_eq!(b.executed, 3, "{how}: {b:#?}");
        assert_eq!(ws.read("mlbuild-out/models/model/model.txt"), model);
        assert_eq!(ws.build_ok(&["//..."]).executed, 0);
        let run = ws.run(&["stats"]);
        assert_eq!(run.code, 0, "{how}: {}", run.stderr);
    }
}

/// Package `m`: `train` writes `{"f1": F1}` as its metrics (F1 from its params), `eval`
/// always writes `{"auc": 0.9}`; the gates are appended to each target's table.
fn scored(ws: &Ws, f1: f64, train_gates: &str, eval_gates: &str) {
    ws.write(
        "m/metric.sh",
        "printf '{\"%s\": %s}\\n' \"$1\" \"$2\" > \"$3/metrics.json\"\n",
    );
    ws.write(
        "m/BUILD.toml",
        &format!(
            r#"[target.train]
srcs = ["metric.sh"]
cmd = ["sh", "metric.sh", "f1", "{{params.f1}}", "{{out}}"]
outs = ["metrics.json"]
metrics = ["metrics.json"]
params = {{ f1 = {f1} }}
{train_gates}

[target.eval]
srcs = ["metric.sh"]
cmd = ["sh", "metric.sh", "auc", "0.9", "{{out}}"]
outs = ["metrics.json"]
metrics = ["metrics.json"]
{eval_gates}
"#
        ),
    );
}

fn invocation_id(built: &crate::support::Built) -> i64 {
    built
        .events
        .iter()
        .find(|e| e["event"] == "build_finished")
        .and_then(|e| e["invocation_id"].as_i64())
        .expect("build_finished with an invocation id")
}

/// Every blob in the store, by name.
fn blobs(ws: &Ws) -> Vec<String> {
    let mut names: Vec<String> = walkdir::WalkDir::new(ws.store().join("cas"))
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn gc_keeps_named_builds_and_baselines_and_a_dry_run_changes_nothing() {
    let ws = Ws::new();
    // An unnamed build that a baseline will name by id, then three named ones.
    scored(&ws, 0.7, "", "");
    let unnamed = invocation_id(&ws.build_ok(&["//m:all"]));
    // One nothing keeps: its result and its history go.
    scored(&ws, 0.75, "", "");
    let forgotten = invocation_id(&ws.build_ok(&["//m:all"]));
    // v1 names a build that reused everything: a named build records the keys of its
    // cached targets too, so gc knows what it used.
    scored(&ws, 0.8, "", "");
    let before_v1 = invocation_id(&ws.build_ok(&["//m:all"]));
    let v1 = ws.build_ok(&["--name", "v1", "//m:all"]);
    assert_eq!(v1.executed, 0, "{v1:#?}");
    scored(&ws, 0.85, "", "");
    ws.build_ok(&["--name", "release", "//m:all"]);
    // Compared with `release` by name and with the first build by id.
    let train_gate = "gates = [\"f1 >= baseline.f1\"]\nbaseline = \"build:release\"";
    let eval_gate = format!("gates = [\"auc >= baseline.auc\"]\nbaseline = \"build:{unnamed}\"");
    scored(&ws, 0.9, train_gate, &eval_gate);
    ws.build_ok(&["--name", "v2", "//m:all"]);
    // The latest build, unnamed: everything before it is older than `--max-age 0s`.
    scored(&ws, 0.95, train_gate, &eval_gate);
    ws.build_ok(&["//m:all"]);
    // Builds started within the same second as the gc would not be older than 0s.
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let history = |ws: &Ws| {
        let run = ws.run(&["--json", "history"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        serde_json::from_str::<Vec<serde_json::Value>>(&run.stdout).unwrap()
    };
    let (blobs_before, history_before) = (blobs(&ws), history(&ws));
    assert_eq!(history_before.len(), 7);
    let kept_ids: Vec<i64> = history_before[1..]
        .iter()
        .map(|b| b["id"].as_i64().unwrap())
        .filter(|&id| id != forgotten && id != before_v1)
        .collect();

    // A dry run: what would go, which builds stay, and nothing removed.
    let dry = ws.run(&["gc", "--max-age", "0s", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.stdout
            .contains("would remove 1 action entries and 1 blobs"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout
            .contains("would remove 3 builds from the history"),
        "{}",
        dry.stdout
    );
    for kept in ["`v1` (build #", "`release` (build #", "`v2` (build #"] {
        assert!(dry.stdout.contains(kept), "{kept}: {}", dry.stdout);
    }
    assert!(
        dry.stdout
            .contains(&format!("(baseline) (build #{unnamed}, ")),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains("dry run: nothing was removed"),
        "{}",
        dry.stdout
    );
    let json = ws.run(&["--json", "gc", "--max-age", "0s", "--dry-run"]);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["dry_run"], true);
    assert_eq!(json["removed_invocations"], 3, "{json:#}");
    let kept: Vec<&str> = json["kept_builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(kept, ["-", "v1", "release", "v2"], "{json:#}");
    assert_eq!(blobs(&ws), blobs_before);
    assert_eq!(history(&ws), history_before);

    // The real thing removes only what no build, named or compared with, used.
    let run = ws.run(&["gc", "--max-age", "0s"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("removed 1 action entries and 1 blobs"),
        "{}",
        run.stdout
    );
    let left: Vec<i64> = history(&ws)
        .iter()
        .map(|b| b["id"].as_i64().unwrap())
        .collect();
    assert_eq!(left, kept_ids, "only unkept builds leave the history");

    // Named builds still compare, baselines still resolve, and their results are
    // still cached: going back to v1's params executes nothing.
    let diff = ws.run(&["params", "diff", "v1", "v2"]);
    assert_eq!(diff.code, 0, "{}", diff.stderr);
    assert!(
        diff.stdout.contains("0.8") && diff.stdout.contains("0.9"),
        "{}",
        diff.stdout
    );
    let b = ws.build_ok(&["//m:all"]);
    assert_eq!(b.executed, 0, "{b:#?}");
    scored(&ws, 0.8, "", "");
    let b = ws.build_ok(&["//m:all"]);
    assert_eq!(b.executed, 0, "v1's result was removed: {b:#?}");
    // The first build was kept for the baseline that names it by id; the one nothing
    // named or compared with is gone.
    scored(&ws, 0.7, "", "");
    assert_eq!(ws.build_ok(&["//m:all"]).executed, 0);
    scored(&ws, 0.75, "", "");
    assert_eq!(ws.build_ok(&["//m:all"]).executed, 1);
}
