//! Builds that overlap or die: concurrent builds in one workspace, and the scratch space
//! a killed build leaves in the store.
//!
//! Sized for a 2-core CI machine (a few seconds each); `MLBUILD_STRESS_ROUNDS` runs more
//! rounds.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{parse_built, stress_rounds, Built, Ws};

/// Output files of each `mid` target.
const MID_FILES: usize = 50;

/// Distinct actions in [`overlapping_workspace`]: base, eight mids, top.
const OVERLAPPING_ACTIONS: u64 = 10;

/// `base` -> `mid0`..`mid7` ([`MID_FILES`] output files each) -> `top`, all fed by `src.txt`.
fn overlapping_workspace(ws: &Ws) {
    let mut build = String::from(
        r#"
[target.base]
srcs = ["src.txt"]
cmd = ["sh", "-c", "cat src.txt > {out}/base.txt"]
outs = ["base.txt"]
"#,
    );
    for m in 0..8 {
        build.push_str(&format!(
            r#"
[target.mid{m}]
deps = [":base"]
cmd = ["sh", "-c", "mkdir {{out}}/d; i=0; while [ $i -lt {MID_FILES} ]; do (cat {{deps.base}}/base.txt; echo {m}.$i) > {{out}}/d/$i.txt; i=$((i+1)); done"]
outs = ["d/"]
"#
        ));
    }
    let mids: Vec<String> = (0..8).map(|m| format!("\":mid{m}\"")).collect();
    build.push_str(&format!(
        r#"
[target.top]
deps = [{deps}]
cmd = ["sh", "-c", "cat {{deps.mid0}}/d/0.txt {{deps.mid7}}/d/{last}.txt > {{out}}/top.txt"]
outs = ["top.txt"]
"#,
        deps = mids.join(", "),
        last = MID_FILES - 1,
    ));
    ws.write("BUILD.toml", &build);
}

/// Four builds at once in one checkout, with overlapping targets, round after round; the
/// source flips between two contents, so from the third round on every target is a hit
/// that all four builds link into `mlbuild-out` at the same moment (issue 11, item 1).
#[test]
fn concurrent_builds_in_one_workspace_all_succeed() {
    let ws = Ws::new();
    overlapping_workspace(&ws);
    let sets: [&[&str]; 4] = [
        &["//:top"],
        &["//:mid0", "//:mid1", "//:mid2", "//:mid3"],
        &["//:mid2", "//:mid3", "//:mid4", "//:mid5", "//:base"],
        &["//:mid4", "//:mid5", "//:mid6", "//:mid7", "//:top"],
    ];
    let rounds = stress_rounds(4);
    let mut failures = Vec::new();
    for round in 0..rounds {
        let content = if round % 2 == 0 { "A\n" } else { "B\n" };
        ws.write("src.txt", content);
        let children: Vec<_> = sets
            .iter()
            .map(|targets| {
                let mut args = vec!["--json", "build"];
                args.extend_from_slice(targets);
                ws.command(&args)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let built: Vec<Built> = children
            .into_iter()
            .map(|c| parse_built(&c.wait_with_output().unwrap()))
            .collect();
        let failed: Vec<String> = built
            .iter()
            .filter(|b| b.code != 0)
            .map(|b| format!("round {round}: {}{}", failure_messages(b), b.stderr))
            .collect();
        if !failed.is_empty() {
            failures.extend(failed);
            continue;
        }
        // Each action still runs once, whichever build gets to it first.
        let executed: u64 = built.iter().map(|b| b.executed).sum();
        let expected = if round < 2 { OVERLAPPING_ACTIONS } else { 0 };
        assert_eq!(executed, expected, "round {round}: {built:#?}");
        let last = ws.read(&format!("mlbuild-out/_root/mid7/d/{}.txt", MID_FILES - 1));
        assert_eq!(
            last,
            format!("{content}7.{}\n", MID_FILES - 1),
            "round {round}"
        );
    }
    eprintln!(
        "{} of {} concurrent builds failed",
        failures.len(),
        rounds * sets.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The last round's outputs are complete, and nothing stray is left next to them.
    let again = ws.build_ok(&["//..."]);
    assert_eq!(again.executed, 0);
    let mid = ws.path("mlbuild-out/_root/mid3/d");
    assert_eq!(std::fs::read_dir(mid).unwrap().count(), MID_FILES);
}

/// The messages of a build's failed targets, one per line.
fn failure_messages(b: &Built) -> String {
    b.events
        .iter()
        .filter(|e| e["status"] == "failed")
        .map(|e| format!("{}: {}", e["label"], e["message"].as_str().unwrap_or("")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Everything directly in the store's `tmp/` and one level below it.
fn scratch_entries(store: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(store.join("tmp"))
        .into_iter()
        .flatten()
        .flatten()
    {
        found.push(entry.path());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(
                std::fs::read_dir(entry.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
        }
    }
    found
}

fn exec_dirs(store: &Path) -> Vec<PathBuf> {
    scratch_entries(store)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("exec-"))
        })
        .collect()
}

/// A build that is killed leaves scratch behind (here with a read-only directory in it);
/// the next build, `gc` and `fsck` remove it, but never the scratch of a build that is
/// still running, even one from another checkout sharing the store (issue 11, item 3).
#[test]
fn dead_builds_scratch_is_reclaimed_and_a_live_ones_is_kept() {
    let ws = Ws::new();
    ws.write(
        "BUILD.toml",
        r#"
[target.ro]
cmd = ["sh", "-c", "mkdir {out}/d && echo x > {out}/d/f && chmod 500 {out}/d && sleep 30"]
outs = ["d/"]

[target.quick]
cmd = ["sh", "-c", "echo q > {out}/q.txt"]
outs = ["q.txt"]
"#,
    );
    let store = ws.store();
    let kill_while_running = |target: &str| {
        let before = exec_dirs(&store);
        let mut child = ws
            .command(&["build", target])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let dir = loop {
            let ready = exec_dirs(&store)
                .into_iter()
                .find(|d| !before.contains(d) && d.join("root/mlbuild-out/_root/ro/d/f").exists());
            if let Some(dir) = ready {
                break dir;
            }
            assert!(Instant::now() < deadline, "the action never started");
            std::thread::sleep(Duration::from_millis(20));
        };
        child.kill().unwrap();
        child.wait().unwrap();
        dir
    };

    let dead = kill_while_running("//:ro");
    assert!(dead.exists());

    // A build in another checkout on the same store is running...
    let other = Ws::new();
    other.write(
        "BUILD.toml",
        "[target.slow]\ncmd = [\"sh\", \"-c\", \"sleep 4 && echo slow > {out}/o.txt\"]\nouts = [\"o.txt\"]\n",
    );
    let before = exec_dirs(&store);
    let live = other
        .command_with_store(&store, &["--json", "build", "//:slow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let live_dir = loop {
        if let Some(dir) = exec_dirs(&store).into_iter().find(|d| !before.contains(d)) {
            break dir;
        }
        assert!(Instant::now() < deadline, "the live action never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    // ...while the next build here removes the dead one's scratch, and only that.
    ws.build_ok(&["//:quick"]);
    assert!(!dead.exists(), "dead scratch `{}` kept", dead.display());
    assert!(
        live_dir.exists(),
        "live scratch `{}` removed",
        live_dir.display()
    );
    let live = parse_built(&live.wait_with_output().unwrap());
    assert_eq!((live.code, live.executed), (0, 1), "{live:#?}");
    assert_eq!(other.read("mlbuild-out/_root/slow/o.txt"), "slow\n");
    assert_eq!(scratch_entries(&store), Vec::<PathBuf>::new());

    // gc and fsck reclaim too.
    for command in [&["gc", "--max-age", "30d"][..], &["fsck"][..]] {
        let dead = kill_while_running("//:ro");
        let run = ws.run(command);
        assert_eq!(run.code, 0, "{command:?}: {}{}", run.stdout, run.stderr);
        assert!(!dead.exists(), "{command:?} kept `{}`", dead.display());
        assert_eq!(
            scratch_entries(&store),
            Vec::<PathBuf>::new(),
            "{command:?}"
        );
    }
}

/// An action may leave read-only directories among its outputs; the scratch it ran in is
/// still removed when the build ends.
#[test]
fn read_only_output_dirs_do_not_leak_scratch() {
    let ws = Ws::new();
    ws.write(
        "BUILD.toml",
        r#"
[target.ro]
cmd = ["sh", "-c", "mkdir -p {out}/d/e && echo x > {out}/d/e/f && chmod 500 {out}/d/e {out}/d"]
outs = ["d/"]
"#,
    );
    let b = ws.build_ok(&["//:ro"]);
    assert_eq!(b.executed, 1);
    assert_eq!(ws.read("mlbuild-out/_root/ro/d/e/f"), "x\n");
    assert_eq!(scratch_entries(&ws.store()), Vec::<PathBuf>::new());
}
