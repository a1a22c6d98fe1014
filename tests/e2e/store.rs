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
