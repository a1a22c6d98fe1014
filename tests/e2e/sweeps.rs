//! Sweeps: one action per grid combination, each cached on its own, a selection that
//! picks the best variant by a metric for downstream targets, and clear errors for
//! grids and selections that cannot work.

use crate::support::Ws;

/// `models:model` sweeps `lr` x `l2`; its f1 peaks at lr = 0.05, l2 = 0. `models:report`
/// depends on the plain label, i.e. the selected variant.
fn sweep_ws(ws: &Ws, lrs: &str) {
    ws.write(
        "models/BUILD.toml",
        &format!(
            r#"
[target.model]
kind = "train"
srcs = ["train.sh"]
cmd = ["sh", "train.sh", "{{params.lr}}", "{{params.l2}}", "{{out}}"]
tools = ["awk"]
outs = ["model.txt", "metrics.json"]
params = {{ lr = 0.5, l2 = 0.5, epochs = 3 }}
metrics = ["metrics.json"]
sweep = {{ lr = {lrs}, l2 = [0.0, 0.001] }}
select = {{ metric = "eval.f1", goal = "max" }}

[target.report]
kind = "eval"
deps = [":model"]
cmd = ["sh", "-c", "cat {{deps.model}}/model.txt > {{out}}/report.txt"]
outs = ["report.txt"]
"#
        ),
    );
    ws.write(
        "models/train.sh",
        r#"awk -v lr="$1" -v l2="$2" 'BEGIN { d = lr - 0.05; printf "{\"eval\": {\"f1\": %.6f}}\n", 1 - d * d - l2 }' > "$3/metrics.json"
echo "lr=$1 l2=$2" > "$3/model.txt"
"#,
    );
}

#[test]
fn a_grid_runs_each_variant_and_selects_the_best() {
    let ws = Ws::new();
    sweep_ws(&ws, "[0.01, 0.05]");
    let first = ws.build_ok(&["//models:report"]);
    assert_eq!((first.executed, first.cached), (6, 0), "{first:#?}");
    for variant in [
        "//models:model[l2=0.0,lr=0.01]",
        "//models:model[l2=0.0,lr=0.05]",
        "//models:model[l2=0.001,lr=0.01]",
        "//models:model[l2=0.001,lr=0.05]",
    ] {
        assert_eq!(first.status[variant], "executed", "{variant}");
    }
    assert_eq!(first.status["//models:model"], "executed");
    assert_eq!(
        ws.read("mlbuild-out/models/report/report.txt"),
        "lr=0.05 l2=0.0\n"
    );
    // Each variant's outputs are in its own directory.
    assert_eq!(
        ws.read("mlbuild-out/models/model[l2=0.001,lr=0.01]/model.txt"),
        "lr=0.01 l2=0.001\n"
    );

    let selection: serde_json::Value =
        serde_json::from_str(&ws.read("mlbuild-out/models/model/selection.json")).unwrap();
    assert_eq!(selection["selected"], "//models:model[l2=0.0,lr=0.05]");
    assert_eq!(selection["params"]["lr"], 0.05);
    assert_eq!(selection["goal"], "max");
    assert_eq!(selection["metric"], "eval.f1");
    assert_eq!(selection["value"], 1.0);
    assert!(
        selection["reason"]
            .as_str()
            .unwrap()
            .starts_with("highest `eval.f1` (1) of 4 variants"),
        "{selection}"
    );
    assert_eq!(selection["variants"].as_array().unwrap().len(), 4);
    // The selection's outputs are the winner's files plus selection.json.
    assert_eq!(
        ws.read("mlbuild-out/models/model/model.txt"),
        "lr=0.05 l2=0.0\n"
    );
    let log = ws.run(&["log", "//models:model", "--stdout"]);
    assert!(
        log.stdout
            .starts_with("selected //models:model[l2=0.0,lr=0.05] (highest `eval.f1`"),
        "{}",
        log.stdout
    );

    // Nothing reruns; a variant is addressable however its values are written.
    let again = ws.build_ok(&["//models:report"]);
    assert_eq!((again.executed, again.cached), (0, 6));
    let one = ws.build_ok(&["//models:model[lr=5e-2, l2=0.0]"]);
    assert_eq!(one.status["//models:model[l2=0.0,lr=0.05]"], "cached");
    let status = ws.run(&["status", "//models:model[lr=0.05,l2=0.0]"]);
    assert_eq!(status.code, 0, "{}", status.stdout);
    assert!(
        status.stdout.contains("//models:model[l2=0.0,lr=0.05]"),
        "{}",
        status.stdout
    );

    // One more value on an axis runs only the new combinations (and the selection).
    sweep_ws(&ws, "[0.01, 0.05, 0.1]");
    let grown = ws.build_ok(&["//models:report"]);
    let executed: Vec<&String> = grown
        .status
        .iter()
        .filter(|(_, s)| *s == "executed")
        .map(|(l, _)| l)
        .collect();
    assert_eq!(
        executed,
        [
            "//models:model",
            "//models:model[l2=0.0,lr=0.1]",
            "//models:model[l2=0.001,lr=0.1]",
            "//models:report",
        ],
        "{grown:#?}"
    );
    assert_eq!(grown.cached, 4);
}

#[test]
fn variants_appear_in_query_graph_and_why() {
    let ws = Ws::new();
    sweep_ws(&ws, "[0.01, 0.05]");
    let q = ws.run(&["query", "deps", "//models:report"]);
    assert_eq!(q.code, 0, "{}", q.stderr);
    assert!(
        q.stdout.contains("//models:model[l2=0.001,lr=0.01]"),
        "{}",
        q.stdout
    );
    let g = ws.run(&["graph", "//models:model"]);
    assert_eq!(g.code, 0, "{}", g.stderr);
    assert!(g.stdout.contains("model[l2=0.0,lr=0.05]"), "{}", g.stdout);
    let g = ws.run(&["graph", "//models:model", "--format", "mermaid"]);
    assert_eq!(g.code, 0, "{}", g.stderr);

    ws.build_ok(&["//models:model"]);
    ws.write(
        "models/train.sh",
        &(ws.read("models/train.sh") + "# changed\n"),
    );
    let why = ws.run(&["why", "//models:model[lr=0.01,l2=0.0]"]);
    assert_eq!(why.code, 0, "{}", why.stderr);
    assert!(why.stdout.contains("models/train.sh"), "{}", why.stdout);
}

#[test]
fn min_goal_and_a_tie_pick_deterministically() {
    let ws = Ws::new();
    ws.write(
        "BUILD.toml",
        r#"
[target.m]
cmd = ["sh", "-c", "echo '{{\"loss\": 1}}' > {out}/m.json; echo {params.k} > {out}/k.txt"]
outs = ["m.json", "k.txt"]
sweep = { k = ["b", "a", "c"] }
select = { metric = "loss", goal = "min", file = "m.json" }
"#,
    );
    ws.build_ok(&["//:m"]);
    let selection: serde_json::Value =
        serde_json::from_str(&ws.read("mlbuild-out/_root/m/selection.json")).unwrap();
    assert_eq!(selection["selected"], "//:m[k=a]");
    assert!(
        selection["reason"]
            .as_str()
            .unwrap()
            .contains("3 variants tie"),
        "{selection}"
    );
    assert_eq!(ws.read("mlbuild-out/_root/m/k.txt"), "a\n");
}

#[test]
fn a_variant_without_the_metric_fails_the_selection() {
    let ws = Ws::new();
    sweep_ws(&ws, "[0.01, 0.05]");
    let build = ws
        .read("models/BUILD.toml")
        .replace("metric = \"eval.f1\"", "metric = \"eval.auc\"");
    ws.write("models/BUILD.toml", &build);
    let b = ws.build(&["//models:model"]);
    assert_eq!(b.code, 1, "{b:#?}");
    assert_eq!(b.status["//models:model"], "failed");
    let message = b
        .events
        .iter()
        .find(|e| e["event"] == "target_finished" && e["label"] == "//models:model")
        .and_then(|e| e["message"].as_str())
        .unwrap()
        .to_owned();
    assert!(
        message.contains(
            "metric `eval.auc` is missing in `metrics.json` of variant `//models:model[l2=0.0,lr=0.01]`"
        ),
        "{message}"
    );
    assert!(message.contains("the file has `eval`"), "{message}");
}

#[test]
fn bad_sweeps_point_at_their_line() {
    let cases = [
        (
            "sweep = { lr = [], l2 = [0.0] }",
            "sweep axis `lr` of `//models:model` is empty: zero combinations",
            "[models/BUILD.toml:10:11]",
        ),
        (
            "sweep = { lr = 0.1, l2 = [0.0] }",
            "sweep axis `lr` of `//models:model` must be a list of values, not a float",
            "[models/BUILD.toml:10:11]",
        ),
        (
            "sweep = { lr = [0.1, 0.1], l2 = [0.0] }",
            "lists `0.1` twice",
            "[models/BUILD.toml:10:11]",
        ),
        (
            "sweep = { opt = [\"1x\"], l2 = [0.0] }",
            "invalid value in sweep axis `opt`: `1x` would need quotes in a label",
            "[models/BUILD.toml:10:11]",
        ),
        (
            "sweep = { opt = [\"a b\"], l2 = [0.0] }",
            "invalid value in sweep axis `opt`: `a b` has characters",
            "[models/BUILD.toml:10:11]",
        ),
    ];
    for (line, message, at) in cases {
        let ws = Ws::new();
        sweep_ws(&ws, "[0.01]");
        let build = ws
            .read("models/BUILD.toml")
            .replace("sweep = { lr = [0.01], l2 = [0.0, 0.001] }", line);
        ws.write("models/BUILD.toml", &build);
        let run = ws.run(&["build", "//..."]);
        assert_eq!(run.code, 2, "{line}: {}", run.stderr);
        assert!(run.stderr.contains(message), "{line}: {}", run.stderr);
        assert!(run.stderr.contains(at), "{line}: {}", run.stderr);
    }

    let ws = Ws::new();
    sweep_ws(&ws, "[0.01]");
    let no_sweep = ws
        .read("models/BUILD.toml")
        .replace("sweep = { lr = [0.01], l2 = [0.0, 0.001] }\n", "");
    ws.write("models/BUILD.toml", &no_sweep);
    let run = ws.run(&["build", "//..."]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("`select` of `//models:model` has no `sweep` to choose from"),
        "{}",
        run.stderr
    );

    let ws = Ws::new();
    sweep_ws(&ws, "[0.01]");
    let no_select = ws
        .read("models/BUILD.toml")
        .replace("select = { metric = \"eval.f1\", goal = \"max\" }\n", "");
    ws.write("models/BUILD.toml", &no_select);
    let run = ws.run(&["build", "//..."]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("the sweep of `//models:model` has no `select` rule"),
        "{}",
        run.stderr
    );

    let ws = Ws::new();
    sweep_ws(&ws, "[0.01]");
    let bad_goal = ws.read("models/BUILD.toml").replace("\"max\"", "\"maxi\"");
    ws.write("models/BUILD.toml", &bad_goal);
    let run = ws.run(&["build", "//..."]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("did you mean `max`?"), "{}", run.stderr);

    // A variant label that is not well formed, and one that is not in the grid.
    let ws = Ws::new();
    sweep_ws(&ws, "[0.01]");
    let run = ws.run(&["build", "//models:model[lr=]"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("invalid sweep variant"),
        "{}",
        run.stderr
    );
    let run = ws.run(&["build", "//models:model[l2=0.0,lr=0.02]"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("no target `model[l2=0.0,lr=0.02]` in package `//models`"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_target_can_depend_on_one_variant() {
    let ws = Ws::new();
    sweep_ws(&ws, "[0.01, 0.05]");
    let mut build = ws.read("models/BUILD.toml");
    build.push_str(
        r#"
[target.baseline_report]
deps = [":model[lr=1e-2, l2=0.0]"]
cmd = ["sh", "-c", "cat '{deps.model[l2=0.0,lr=0.01]}/model.txt' > {out}/r.txt"]
outs = ["r.txt"]
"#,
    );
    ws.write("models/BUILD.toml", &build);
    let built = ws.build_ok(&["//models:baseline_report"]);
    assert_eq!((built.executed, built.cached), (2, 0), "{built:#?}");
    assert_eq!(
        ws.read("mlbuild-out/models/baseline_report/r.txt"),
        "lr=0.01 l2=0.0\n"
    );
}
