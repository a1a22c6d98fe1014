//! Bad input: each gives a clear error and a non-zero exit, never a panic, and nothing
//! already in the store is lost. Messages are snapshotted with temp paths filtered.

use crate::support::{pipeline, Ws};

fn assert_no_panic(stderr: &str) {
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Runs `build //...` expecting exit `code`, and returns filtered stderr.
fn failing_build(ws: &Ws, code: i32) -> String {
    let run = ws.run(&["build", "//..."]);
    assert_no_panic(&run.stderr);
    assert_eq!(run.code, code, "stderr: {}", run.stderr);
    run.stderr_filtered(ws)
}

/// After an error, what was built before is still cached.
fn assert_store_intact(ws: &Ws) {
    let b = ws.build(&["//data:raw"]);
    assert_eq!(
        b.status.get("//data:raw").map(String::as_str),
        Some("cached"),
        "{b:#?}"
    );
}

#[test]
fn malformed_toml_points_at_line_and_column() {
    let ws = Ws::new();
    pipeline(&ws);
    ws.build_ok(&["//data:raw"]);
    ws.write(
        "models/BUILD.toml",
        "[target.model]\nkind = \"train\"\ncmd = [\"sh\", \n",
    );
    let err = failing_build(&ws, 2);
    // The array is still open at the end of the file; the marker goes under the last
    // character the user typed.
    assert!(err.contains("models/BUILD.toml:3:12"), "{err}");
    assert!(err.contains("expected `]`"), "{err}");
    insta::assert_snapshot!("malformed_toml", err);
    ws.write("models/BUILD.toml", "");
    assert_store_intact(&ws);
}

#[test]
fn unknown_field_and_wrong_type() {
    let ws = Ws::new();
    ws.write(
        "a/BUILD.toml",
        "[target.x]\ncmd = [\"true\"]\nsrc = [\"typo\"]\n",
    );
    let err = failing_build(&ws, 2);
    assert!(err.contains("a/BUILD.toml:3:1"), "{err}");
    assert!(err.contains("src"), "{err}");
    insta::assert_snapshot!("unknown_field", err);

    ws.write("a/BUILD.toml", "[target.x]\ncmd = \"true\"\n");
    let err = failing_build(&ws, 2);
    assert!(err.contains("a/BUILD.toml:2:"), "{err}");
    insta::assert_snapshot!("wrong_type", err);
}

#[test]
fn toml_errors_name_the_field_and_target_in_a_users_words() {
    let ws = Ws::new();
    // A misspelled field gets a did-you-mean, like a misspelled label.
    ws.write(
        "a/BUILD.toml",
        "[target.train]\ncmd = [\"true\"]\ntiemout = 3\n",
    );
    let err = failing_build(&ws, 2);
    assert!(
        err.contains("unknown field `tiemout` in target `train`"),
        "{err}"
    );
    assert!(err.contains("did you mean `timeout`?"), "{err}");
    assert!(err.contains("a/BUILD.toml:3:1"), "{err}");
    // Types are named as TOML is written, with the field and its target.
    ws.write(
        "a/BUILD.toml",
        "[target.train]\ncmd = [\"true\"]\ntimeout = \"10\"\n",
    );
    let err = failing_build(&ws, 2);
    assert!(
        err.contains("`timeout` in target `train` must be a number, not a string"),
        "{err}"
    );
    assert!(!err.contains("f64"), "{err}");
    ws.write(
        "a/BUILD.toml",
        "[target.train]\ncmd = [\"true\"]\nresources = { cpu = \"2\" }\n",
    );
    let err = failing_build(&ws, 2);
    assert!(
        err.contains("`resources.cpu` in target `train` must be a number"),
        "{err}"
    );
    // An invalid output names its target, and the snippet shows the target's header.
    ws.write(
        "a/BUILD.toml",
        "[target.first]\ncmd = [\"true\"]\n\n[target.second]\ncmd = [\"true\"]\nouts = [\"../x\"]\n",
    );
    let err = failing_build(&ws, 2);
    assert!(
        err.contains("invalid output path `../x` of `//a:second`"),
        "{err}"
    );
    assert!(
        err.contains("[target.second]") && err.contains("in target `//a:second`"),
        "{err}"
    );
    assert!(err.contains("a/BUILD.toml:6:9"), "{err}");
    insta::assert_snapshot!("invalid_output_names_its_target", err);
}

#[test]
fn a_package_program_missing_from_srcs_is_named_not_a_sandbox_path() {
    let ws = Ws::new();
    ws.write("bad/run.sh", "#!/bin/sh\necho hi\n");
    ws.write("bad/BUILD.toml", "[target.t]\ncmd = [\"./run.sh\"]\n");
    let run = ws.run(&["build", "//bad:t"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let err = run.stderr.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        err.contains("the program `./run.sh` is not declared in `srcs`"),
        "{err}"
    );
    assert!(err.contains("add `./run.sh` to `srcs`"), "{err}");
    assert!(
        !err.contains("exec-"),
        "an internal sandbox path leaked: {err}"
    );
}

#[test]
fn diagnostics_are_not_wrapped_off_a_terminal_unless_columns_says_so() {
    let ws = Ws::new();
    pipeline(&ws);
    let long = "a_rather_long_target_name_that_goes_on_and_on_for_a_while";
    ws.write(
        "models/BUILD.toml",
        &format!("[target.{long}]\ncmd = [\"true\"]\ntiemout = 3\n"),
    );
    // Not a terminal, no COLUMNS: every line whole, so grep finds the label.
    let run = ws.run(&["build", "//..."]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains(&format!("unknown field `tiemout` in target `{long}`"))),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .lines()
            .all(|l| !l.trim_start().starts_with("│ `")),
        "{}",
        run.stderr
    );
    // COLUMNS is respected.
    let out = ws
        .command(&["build", "//..."])
        .env("COLUMNS", "50")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let head: Vec<&str> = text.lines().take_while(|l| !l.contains("╭─[")).collect();
    assert!(head.len() > 1, "{text}");
    assert!(head.iter().all(|l| l.chars().count() <= 50), "{text}");
}

#[test]
fn unknown_label_suggests_the_closest() {
    let ws = Ws::new();
    pipeline(&ws);
    let run = ws.run(&["build", "//models:modle"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("did you mean `//models:model`?"),
        "{}",
        run.stderr
    );

    let build = ws
        .read("models/BUILD.toml")
        .replace("\"//data:raw\"", "\"//data:rwa\"");
    ws.write("models/BUILD.toml", &build);
    let err = failing_build(&ws, 2);
    assert!(err.contains("did you mean `//data:raw`?"), "{err}");
    assert!(err.contains("models/BUILD.toml:"), "{err}");
    insta::assert_snapshot!("unknown_dep", err);
}

#[test]
fn cycle_is_reported_in_full() {
    let ws = Ws::new();
    ws.write(
        "a/BUILD.toml",
        "[target.x]\ncmd = [\"true\"]\ndeps = [\"//b:y\"]\n",
    );
    ws.write(
        "b/BUILD.toml",
        "[target.y]\ncmd = [\"true\"]\ndeps = [\":z\"]\n[target.z]\ncmd = [\"true\"]\ndeps = [\"//a:x\"]\n",
    );
    let err = failing_build(&ws, 2);
    assert!(
        err.contains("dependency cycle: `//a:x` -> `//b:y` -> `//b:z` -> `//a:x`"),
        "{err}"
    );
}

#[test]
fn missing_source_and_empty_glob() {
    let ws = Ws::new();
    ws.write(
        "a/BUILD.toml",
        "[target.x]\nsrcs = [\"missing.py\"]\ncmd = [\"true\"]\n",
    );
    let err = failing_build(&ws, 2);
    assert!(err.contains("missing.py"), "{err}");
    assert!(err.contains("a/BUILD.toml:2:"), "{err}");
    insta::assert_snapshot!("missing_source", err);

    ws.write(
        "a/BUILD.toml",
        "[target.x]\nsrcs = [\"data/*.csv\"]\ncmd = [\"true\"]\n",
    );
    let err = failing_build(&ws, 2);
    assert!(err.contains("data/*.csv"), "{err}");
    insta::assert_snapshot!("empty_glob", err);
}

#[test]
fn hostile_paths_are_refused() {
    let ws = Ws::new();
    for (srcs, outs) in [
        ("[\"../outside.txt\"]", "[\"o\"]"),
        ("[\"/etc/passwd\"]", "[\"o\"]"),
        ("[]", "[\"../escape\"]"),
        ("[]", "[\"/tmp/abs\"]"),
    ] {
        ws.write(
            "a/BUILD.toml",
            &format!("[target.x]\nsrcs = {srcs}\ncmd = [\"true\"]\nouts = {outs}\n"),
        );
        let err = failing_build(&ws, 2);
        assert!(err.contains("a/BUILD.toml:"), "{srcs} {outs}: {err}");
    }
    // A symlink that leads out of the workspace.
    std::fs::write(ws.dir.path().join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink(ws.dir.path().join("secret.txt"), ws.path("a/link.txt")).unwrap();
    ws.write(
        "a/BUILD.toml",
        "[target.x]\nsrcs = [\"link.txt\"]\ncmd = [\"true\"]\n",
    );
    let err = failing_build(&ws, 2);
    assert!(err.contains("link.txt"), "{err}");
    insta::assert_snapshot!("symlink_escape", err);
}

#[test]
fn failing_command_shows_stderr_tail_and_log_path() {
    let ws = Ws::new();
    pipeline(&ws);
    ws.build_ok(&["//data:raw"]);
    ws.write(
        "bad/BUILD.toml",
        "[target.boom]\ncmd = [\"sh\", \"-c\", \"echo working; echo 'ValueError: bad input row 7' >&2; exit 3\"]\nouts = [\"x\"]\n",
    );
    let run = ws.run(&["build", "//bad:boom"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("`//bad:boom` failed: exit code 3"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("ValueError: bad input row 7"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("mlbuild-out/.logs/bad/boom.stderr"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("build FAILED: 1 actions: 0 executed, 0 cached, 1 failed"),
        "{}",
        run.stderr
    );
    insta::assert_snapshot!("action_failed", run.stderr_filtered(&ws));
    let log = ws.run(&["log", "//bad:boom"]);
    assert!(log.stdout.contains("working"), "{}", log.stdout);
    assert!(log.stdout.contains("ValueError"), "{}", log.stdout);
    assert_store_intact(&ws);
}

#[test]
fn missing_and_undeclared_outputs() {
    let ws = Ws::new();
    ws.write(
        "a/BUILD.toml",
        "[target.x]\ncmd = [\"sh\", \"-c\", \"echo hi > {out}/other.txt\"]\nouts = [\"other.txt\", \"model.json\"]\n",
    );
    let run = ws.run(&["build", "//a:x"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("did not create its declared output `model.json`"),
        "{}",
        run.stderr
    );

    ws.write(
        "a/BUILD.toml",
        "[target.x]\ncmd = [\"sh\", \"-c\", \"echo hi > {out}/other.txt; echo x > {out}/model.json\"]\nouts = [\"model.json\"]\n",
    );
    let run = ws.run(&["build", "//a:x"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("created `other.txt`, which is not a declared output"),
        "{}",
        run.stderr
    );
}

#[test]
fn command_not_found() {
    let ws = Ws::new();
    ws.write(
        "a/BUILD.toml",
        "[target.x]\ncmd = [\"no-such-tool-xyz\", \"--flag\"]\n",
    );
    let run = ws.run(&["build", "//a:x"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_no_panic(&run.stderr);
    assert!(
        run.stderr.contains("command not found: `no-such-tool-xyz`"),
        "{}",
        run.stderr
    );
    insta::assert_snapshot!("command_not_found", run.stderr_filtered(&ws));
}

#[test]
fn writing_outside_the_output_dir_fails() {
    let ws = Ws::new();
    ws.write(
        "a/BUILD.toml",
        "[target.x]\nsrcs = [\"in.txt\"]\ncmd = [\"sh\", \"-ec\", \"echo evil > in.txt; echo ok > {out}/o\"]\nouts = [\"o\"]\n",
    );
    ws.write("a/in.txt", "original\n");
    let run = ws.run(&["build", "//a:x"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(
        ws.read("a/in.txt"),
        "original\n",
        "the action modified a source"
    );
}

#[test]
fn no_workspace_found() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mlbuild"))
        .args(["-C"])
        .arg(dir.path())
        .args(["build", "//..."])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("MLBUILD.toml"), "{stderr}");
}

#[test]
fn keep_going_builds_independent_targets() {
    let ws = Ws::new();
    ws.write(
        "a/BUILD.toml",
        r#"
[target.bad]
cmd = ["false"]
[target.after_bad]
deps = [":bad"]
cmd = ["true"]
[target.good]
cmd = ["sh", "-c", "echo ok > {out}/o"]
outs = ["o"]
"#,
    );
    let b = ws.build(&["--keep-going", "--jobs", "1", "//..."]);
    assert_eq!(b.code, 1);
    assert_eq!(b.status["//a:bad"], "failed");
    assert_eq!(b.status["//a:after_bad"], "skipped");
    assert_eq!(b.status["//a:good"], "executed");
}
