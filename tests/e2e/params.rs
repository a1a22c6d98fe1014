//! Params files: only the keys a target lists enter its key, `--set` overrides them for
//! one build, `params diff` compares builds, and bad files and keys point at their line.

use crate::support::Ws;

/// data:raw reads `data.rows`, models:model reads `train.lr`, both from `params.toml`;
/// models:report depends on the model.
fn params_pipeline(ws: &Ws) {
    ws.write(
        "MLBUILD.toml",
        "[workspace]\nname = \"test\"\nparams = \"params.toml\"\n",
    );
    ws.write(
        "params.toml",
        "[data]\nrows = 3\n\n[train]\nlr = 0.05\nepochs = 2\n",
    );
    ws.write(
        "data/BUILD.toml",
        r#"
[target.raw]
kind = "data"
cmd = ["sh", "-c", "seq {params.data.rows} > {out}/raw.csv"]
outs = ["raw.csv"]
param_keys = ["data.rows"]
tools = ["seq"]
"#,
    );
    ws.write(
        "models/BUILD.toml",
        r#"
[target.model]
kind = "train"
deps = ["//data:raw"]
cmd = ["sh", "-c", "echo lr={params.train.lr} seed={params.seed} > {out}/model.txt; cat {deps.raw}/raw.csv >> {out}/model.txt"]
outs = ["model.txt"]
params = { seed = 7 }
param_keys = ["train.lr"]

[target.report]
kind = "eval"
deps = [":model"]
cmd = ["sh", "-c", "head -n 1 {deps.model}/model.txt > {out}/report.txt"]
outs = ["report.txt"]
"#,
    );
}

#[test]
fn a_params_key_change_reruns_only_its_users() {
    let ws = Ws::new();
    params_pipeline(&ws);
    let first = ws.build_ok(&["//..."]);
    assert_eq!((first.executed, first.cached), (3, 0));
    assert_eq!(
        ws.read("mlbuild-out/models/report/report.txt"),
        "lr=0.05 seed=7\n"
    );

    // `train.lr` is used by the model only: data preparation stays cached.
    ws.write(
        "params.toml",
        "[data]\nrows = 3\n\n[train]\nlr = 0.1\nepochs = 2\n",
    );
    let second = ws.build_ok(&["//..."]);
    assert_eq!(second.status["//data:raw"], "cached");
    assert_eq!(second.status["//models:model"], "executed");
    assert_eq!(second.status["//models:report"], "executed");
    assert_eq!(
        ws.read("mlbuild-out/models/report/report.txt"),
        "lr=0.1 seed=7\n"
    );

    // A key nobody lists changes nothing at all.
    ws.write(
        "params.toml",
        "[data]\nrows = 3\n\n[train]\nlr = 0.1\nepochs = 9\n",
    );
    let third = ws.build_ok(&["//..."]);
    assert_eq!((third.executed, third.cached), (0, 3));

    // `why` names the param by its dotted path.
    ws.write(
        "params.toml",
        "[data]\nrows = 4\n\n[train]\nlr = 0.1\nepochs = 9\n",
    );
    let why = ws.run(&["why", "//data:raw"]);
    assert!(
        why.stdout.contains("param `data.rows` changed: 3 -> 4"),
        "{}",
        why.stdout
    );
    let fourth = ws.build_ok(&["//..."]);
    assert_eq!(fourth.status["//data:raw"], "executed");
    assert_eq!(fourth.status["//models:model"], "executed");
}

#[test]
fn set_overrides_a_key_for_one_build() {
    let ws = Ws::new();
    params_pipeline(&ws);
    ws.build_ok(&["//..."]);

    let set = ws.build_ok(&["//...", "--set", "train.lr=0.2"]);
    assert_eq!(set.status["//data:raw"], "cached");
    assert_eq!(set.status["//models:model"], "executed");
    assert_eq!(
        ws.read("mlbuild-out/models/report/report.txt"),
        "lr=0.2 seed=7\n"
    );
    // The file is untouched: without `--set` the first build's results come back.
    assert!(ws.read("params.toml").contains("lr = 0.05"));
    let back = ws.build_ok(&["//..."]);
    assert_eq!((back.executed, back.cached), (0, 3));

    // `status` and `why` see the override too.
    let status = ws.run(&["status", "--set", "train.lr=0.3"]);
    assert_eq!(status.code, 1, "{}", status.stdout);
    let why = ws.run(&["why", "//models:model", "--set", "train.lr=0.3"]);
    assert!(
        why.stdout.contains("param `train.lr` changed: 0.05 -> 0.3"),
        "{}",
        why.stdout
    );

    let unknown = ws.run(&["build", "//...", "--set", "train.rl=0.3"]);
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    assert!(
        unknown
            .stderr
            .contains("`--set train.rl`: no key `train.rl` in `params.toml`"),
        "{}",
        unknown.stderr
    );
    assert!(
        unknown.stderr.contains("did you mean `train.lr`?"),
        "{}",
        unknown.stderr
    );
    let malformed = ws.run(&["build", "//...", "--set", "train.lr"]);
    assert_eq!(malformed.code, 2);
    assert!(
        malformed.stderr.contains("expected `KEY=VALUE`"),
        "{}",
        malformed.stderr
    );
    let unquoted = ws.run(&["build", "//...", "--set", "train.opt=adam"]);
    assert_eq!(unquoted.code, 2);
    assert!(
        unquoted.stderr.contains("`adam` is not a TOML value"),
        "{}",
        unquoted.stderr
    );
}

#[test]
fn params_diff_compares_builds_by_name_and_id() {
    let ws = Ws::new();
    params_pipeline(&ws);
    let first = ws.build_ok(&["//...", "--name", "base"]);
    let first_id = first
        .events
        .iter()
        .find(|e| e["event"] == "build_finished")
        .and_then(|e| e["invocation_id"].as_i64())
        .expect("build_finished has the invocation id");

    let too_few = ws.run(&["params", "diff"]);
    assert_eq!(too_few.code, 2);
    assert!(
        too_few.stderr.contains("need two builds"),
        "{}",
        too_few.stderr
    );

    ws.build_ok(&["//...", "--set", "train.lr=0.1", "--set", "data.rows=5"]);
    let diff = ws.run(&["params", "diff"]);
    assert_eq!(diff.code, 0, "{}", diff.stderr);
    let lines: Vec<&str> = diff.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", diff.stdout);
    assert!(lines[0].starts_with("target"), "{}", diff.stdout);
    assert!(lines[0].contains(&format!("build {first_id} (base)")));
    let cells = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(cells(lines[1]), ["//data:raw", "data.rows", "3", "5"]);
    assert_eq!(
        cells(lines[2]),
        ["//models:model", "train.lr", "0.05", "0.1"]
    );
    insta::assert_snapshot!("params_diff", diff.stdout);
    let md = ws.run(&["params", "diff", "--md"]);
    assert_eq!(md.code, 0, "{}", md.stderr);
    insta::assert_snapshot!("params_diff_md", md.stdout);
    let both = ws.run(&["--json", "params", "diff", "--md"]);
    assert_eq!(both.code, 2, "{}", both.stderr);

    // By name and by id, as JSON; `--all` lists unchanged params too.
    let json = ws.run(&[
        "--json",
        "params",
        "diff",
        "base",
        &(first_id + 1).to_string(),
        "--all",
    ]);
    assert_eq!(json.code, 0, "{}", json.stderr);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["a"]["name"], "base");
    let changes = v["changes"].as_array().unwrap();
    let seed = changes
        .iter()
        .find(|c| c["param"] == "seed")
        .expect("--all lists unchanged params");
    assert_eq!(seed["changed"], false);
    let lr = changes.iter().find(|c| c["param"] == "train.lr").unwrap();
    assert_eq!(
        (lr["a"].as_f64(), lr["b"].as_f64()),
        (Some(0.05), Some(0.1))
    );

    let same = ws.run(&["params", "diff", "base", "base"]);
    assert!(
        same.stdout.starts_with("no params differ"),
        "{}",
        same.stdout
    );

    let missing = ws.run(&["params", "diff", "nope"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing
            .stderr
            .contains("no build `nope` in this workspace's history"),
        "{}",
        missing.stderr
    );

    let show = ws.run(&["params", "show", "base"]);
    assert!(
        show.stdout.contains("//models:model  train.lr   0.05"),
        "{}",
        show.stdout
    );
    let show = ws.run(&["params", "show", "base", "--md"]);
    assert!(
        show.stdout
            .contains("| //models:model | train.lr  | 0.05  |"),
        "{}",
        show.stdout
    );

    let bad_name = ws.run(&["build", "//...", "--name", "42"]);
    assert_eq!(bad_name.code, 2);
    assert!(bad_name.stderr.contains("invalid build name `42`"));
}

#[test]
fn json_and_yaml_params_files_and_per_target_files() {
    let ws = Ws::new();
    ws.write(
        "m/BUILD.toml",
        r#"
[target.j]
cmd = ["sh", "-c", "echo {params.train.lr} {params.opt} > {out}/o.txt"]
outs = ["o.txt"]
params_file = "p.json"
param_keys = ["train.lr", "opt"]

[target.y]
cmd = ["sh", "-c", "echo {params.train.layers} > {out}/o.txt"]
outs = ["o.txt"]
params_file = "//conf/p.yaml"
param_keys = ["train.layers"]
"#,
    );
    ws.write(
        "m/p.json",
        r#"{"train": {"lr": 0.5, "unused": 1}, "opt": "adam"}"#,
    );
    ws.write("conf/p.yaml", "train:\n  layers: [64, 32]\n  lr: 1\n");
    ws.build_ok(&["//..."]);
    assert_eq!(ws.read("mlbuild-out/m/j/o.txt"), "0.5 adam\n");
    assert_eq!(ws.read("mlbuild-out/m/y/o.txt"), "[64,32]\n");
    // The override reaches every file holding the key, and only the targets using it.
    let set = ws.build_ok(&["//...", "--set", "opt=\"sgd\""]);
    assert_eq!(set.status["//m:j"], "executed");
    assert_eq!(set.status["//m:y"], "cached");
    assert_eq!(ws.read("mlbuild-out/m/j/o.txt"), "0.5 sgd\n");
}

#[test]
fn a_missing_key_points_at_its_param_keys_entry() {
    let ws = Ws::new();
    params_pipeline(&ws);
    let build = ws
        .read("models/BUILD.toml")
        .replace("param_keys = [\"train.lr\"]", "param_keys = [\"train.rl\"]");
    ws.write("models/BUILD.toml", &build);
    let run = ws.run(&["build", "//..."]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let err = run.stderr_filtered(&ws);
    assert!(
        err.contains("params key `train.rl` of `//models:model` does not exist in `params.toml`"),
        "{err}"
    );
    assert!(err.contains("[models/BUILD.toml:8:15]"), "{err}");
    assert!(err.contains("did you mean `train.lr`?"), "{err}");

    // No params file at all.
    ws.write("MLBUILD.toml", "[workspace]\nname = \"test\"\n");
    let run = ws.run(&["build", "//..."]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("lists `param_keys` but has no params file"),
        "{}",
        run.stderr
    );
    // A params file that does not exist, named in MLBUILD.toml.
    ws.write(
        "MLBUILD.toml",
        "[workspace]\nname = \"test\"\nparams = \"nope.toml\"\n",
    );
    let run = ws.run(&["build", "//..."]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("params file `nope.toml` does not exist"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("[MLBUILD.toml:3:10]"), "{}", run.stderr);
}

#[test]
fn malformed_params_files_report_file_line_and_column() {
    let cases = [
        ("params.toml", "[train]\nlr = = 0.05\n", "[params.toml:2:6]"),
        (
            "params.json",
            "{\"train\": {\"lr\": 0.05,}}",
            "[params.json:1:",
        ),
        ("params.yaml", "train:\n  lr: [0.05\n", "[params.yaml:"),
    ];
    for (file, text, at) in cases {
        let ws = Ws::new();
        params_pipeline(&ws);
        ws.write(
            "MLBUILD.toml",
            &format!("[workspace]\nname = \"test\"\nparams = \"{file}\"\n"),
        );
        ws.write(file, text);
        let run = ws.run(&["build", "//..."]);
        assert_eq!(run.code, 2, "{file}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!("params file `{file}`")),
            "{file}: {}",
            run.stderr
        );
        assert!(run.stderr.contains(at), "{file}: {}", run.stderr);
    }
}

#[test]
fn a_key_both_inline_and_from_the_file_is_refused() {
    let ws = Ws::new();
    params_pipeline(&ws);
    let build = ws.read("models/BUILD.toml").replace(
        "params = { seed = 7 }",
        "params = { seed = 7, train = { lr = 1 } }",
    );
    ws.write("models/BUILD.toml", &build);
    let run = ws.run(&["build", "//..."]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("params key `train.lr` of `//models:model` is set twice"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_null_or_unrepresentable_value_is_refused_at_its_key() {
    let ws = Ws::new();
    ws.write(
        "m/BUILD.toml",
        r#"
[target.j]
cmd = ["true"]
params_file = "p.json"
param_keys = ["a", "b"]
"#,
    );
    ws.write("m/p.json", r#"{"a": null, "b": 1}"#);
    let run = ws.run(&["build", "//..."]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("params key `a` in `m/p.json` holds a null, which a param cannot be"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("[m/BUILD.toml:5:15]"), "{}", run.stderr);
    ws.write("m/p.json", r#"{"a": 18446744073709551615, "b": 1}"#);
    let run = ws.run(&["build", "//..."]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("params key `a` in `m/p.json` cannot be a param"),
        "{}",
        run.stderr
    );
}
