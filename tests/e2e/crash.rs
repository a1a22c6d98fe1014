//! Builds that overlap: concurrent builds in one workspace.
//!
//! Sized for a 2-core CI machine (a few seconds each); `MLBUILD_STRESS_ROUNDS` runs more
//! rounds.

use std::process::Stdio;

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
