//! `mlbuild import dvc`: a small DVC project, made and reproduced with the real `dvc`
//! (see `bridges`), is imported; `mlbuild build` then writes the same bytes as `dvc
//! repro`, a second build executes nothing, and what has no equivalent is reported by
//! stage and field.

use std::path::Path;

use crate::bridges::dvc;
use crate::support::Ws;

/// A DVC project in `pipeline/`: `prepare` (params, a directory output) feeds `train`
/// (metrics, plots, a persisted output) and a `matrix` sweep; `shard` is a `foreach`
/// over `vars`; `count` runs in `wdir: src`; `stamp` is `always_changed`, and frozen after `dvc repro`.
/// The scripts use only the standard library, so the venv's Python under DVC and the
/// system's under mlbuild give the same bytes.
fn dvc_project(ws: &Ws) {
    ws.write(
        "pipeline/data/raw.csv",
        &(1..=20).map(|i| format!("{i}\n")).collect::<String>(),
    );
    // JSON is YAML: the scripts read it with `json`.
    ws.write(
        "pipeline/params.yaml",
        "{\"prepare\": {\"scale\": 3}, \"train\": {\"lr\": 0.1, \"epochs\": 4}, \"unused\": 7}\n",
    );
    ws.write(
        "pipeline/src/prepare.py",
        r#"import json, os, sys
p = json.load(open("params.yaml"))["prepare"]
rows = [int(l) * p["scale"] for l in open(sys.argv[1])]
os.makedirs("data/prepared", exist_ok=True)
with open("data/prepared/rows.txt", "w") as f:
    f.write("\n".join(map(str, rows)) + "\n")
"#,
    );
    ws.write(
        "pipeline/src/train.py",
        r#"import json, os, sys
p = json.load(open("params.yaml"))["train"]
lr = float(sys.argv[1]) if len(sys.argv) > 1 else p["lr"]
name = sys.argv[2] if len(sys.argv) > 2 else "model"
rows = [int(l) for l in open("data/prepared/rows.txt")]
score = sum(rows) * lr / (p["epochs"] + 10 * abs(lr - 0.2))
for d in ("models", "metrics", "plots"):
    os.makedirs(d, exist_ok=True)
open(f"models/{name}.txt", "w").write(f"lr={lr} score={score:.6f}\n")
json.dump({"score": round(score, 6)}, open(f"metrics/{name}.json", "w"))
if name == "model":
    open("plots/loss.csv", "w").write("step,loss\n0,1\n1,0.5\n")
"#,
    );
    ws.write(
        "pipeline/src/count.py",
        "import sys\nn = sum(1 for _ in open(sys.argv[1]))\nopen('../counts.txt', 'w').write(f'{n}\\n')\n",
    );
    ws.write(
        "pipeline/dvc.yaml",
        r#"vars:
  - shards: [a, b]
stages:
  prepare:
    cmd: python3 src/prepare.py data/raw.csv
    deps:
      - src/prepare.py
      - data/raw.csv
    params:
      - prepare.scale
    outs:
      - data/prepared
  train:
    cmd: python3 src/train.py
    deps:
      - data/prepared
      - src/train.py
    params:
      - train
    outs:
      - models/model.txt:
          persist: true
    metrics:
      - metrics/model.json:
          cache: false
    plots:
      - plots/loss.csv
  sweep:
    matrix:
      lr: [0.1, 0.2]
    cmd: python3 src/train.py ${item.lr} sweep-${item.lr}
    deps:
      - data/prepared
      - src/train.py
    params:
      - train.epochs
    outs:
      - models/sweep-${item.lr}.txt
    metrics:
      - metrics/sweep-${item.lr}.json
  shard:
    foreach: ${shards}
    do:
      cmd: echo ${item} > shard-${item}.txt
      outs:
        - shard-${item}.txt
  count:
    wdir: src
    cmd: python3 count.py ../data/raw.csv
    deps:
      - ../data/raw.csv
    outs:
      - ../counts.txt
  stamp:
    cmd: date +%s > stamp.txt
    always_changed: true
    outs:
      - stamp.txt
"#,
    );
}

/// The files `dvc repro` wrote, and where mlbuild puts each.
const OUTPUTS: [(&str, &str); 11] = [
    ("data/prepared/rows.txt", "prepare"),
    ("models/model.txt", "train"),
    ("metrics/model.json", "train"),
    ("plots/loss.csv", "train"),
    ("models/sweep-0.1.txt", "sweep[item.lr=0.1]"),
    ("metrics/sweep-0.1.json", "sweep[item.lr=0.1]"),
    ("models/sweep-0.2.txt", "sweep[item.lr=0.2]"),
    ("metrics/sweep-0.2.json", "sweep[item.lr=0.2]"),
    ("shard-a.txt", "shard-a"),
    ("shard-b.txt", "shard-b"),
    ("counts.txt", "count"),
];

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn an_imported_dvc_project_builds_the_same_bytes_and_then_nothing() {
    let ws = Ws::new();
    dvc_project(&ws);
    let project = ws.path("pipeline");
    dvc(&project, &["init", "--no-scm", "-q"]);
    dvc(&project, &["repro", "-q"]);
    dvc(&project, &["freeze", "stamp"]);
    assert!(ws.read("pipeline/dvc.yaml").contains("frozen: true"));

    let imported = ws.run(&["--json", "import", "dvc", "pipeline/dvc.yaml"]);
    assert_eq!(imported.code, 0, "{}", imported.stderr);
    let report: serde_json::Value = serde_json::from_str(&imported.stdout).unwrap();
    assert_eq!(report["build_toml"], "pipeline/BUILD.toml");
    assert_eq!(report["created_workspace"], serde_json::Value::Null);
    let unmapped: Vec<(String, String)> = report["unmapped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["stage"].as_str().unwrap().to_owned(),
                n["field"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for expected in [
        ("train", "outs"),
        ("train", "plots"),
        ("stamp", "frozen"),
        ("sweep", "matrix"),
        ("count", "deps"),
    ] {
        assert!(
            unmapped.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} not in {unmapped:?}"
        );
    }
    let build_toml = ws.read("pipeline/BUILD.toml");
    assert!(
        build_toml.contains("sweep = { \"item.lr\" = [0.1, 0.2] }"),
        "{build_toml}"
    );
    assert!(build_toml.contains("nondeterministic = \"always_changed in dvc.yaml\""));
    assert!(build_toml.contains("param_keys = [\"prepare.scale\"]"));

    let first = ws.build_ok(&["//pipeline/..."]);
    assert_eq!(first.failed, 0);
    for (file, target) in OUTPUTS {
        assert_eq!(
            read(&ws.path(&format!("mlbuild-out/pipeline/{target}/{file}"))),
            read(&project.join(file)),
            "{file} of {target}"
        );
    }
    // The sweep's selection took the better variant.
    let selection: serde_json::Value =
        serde_json::from_str(&ws.read("mlbuild-out/pipeline/sweep/selection.json")).unwrap();
    assert_eq!(selection["selected"], "//pipeline:sweep[item.lr=0.2]");
    let second = ws.build_ok(&["//pipeline/..."]);
    assert_eq!(second.executed, 0, "{second:#?}");

    // The params wiring: only the keys a stage declares reach it, so a key `prepare`
    // does not read reruns neither it nor, as `--set` works, anything else.
    let set = ws.build_ok(&["//pipeline/...", "--set", "train.epochs=5"]);
    let executed: Vec<&str> = set
        .status
        .iter()
        .filter(|(_, s)| *s == "executed")
        .map(|(l, _)| l.as_str())
        .collect();
    assert_eq!(
        executed,
        [
            "//pipeline:sweep",
            "//pipeline:sweep[item.lr=0.1]",
            "//pipeline:sweep[item.lr=0.2]",
            "//pipeline:train"
        ]
    );
    let metrics = ws.run(&["--json", "metrics", "show", "//pipeline:train"]);
    assert_eq!(metrics.code, 0, "{}", metrics.stderr);
    let metrics: serde_json::Value = serde_json::from_str(&metrics.stdout).unwrap();
    // sum(3..=60 step 3) * 0.1 / (5 + 1) = 630 * 0.1 / 6
    assert_eq!(metrics["values"]["score"], serde_json::json!(10.5));

    // An existing BUILD.toml is kept unless `--force`.
    let again = ws.run(&["import", "dvc", "pipeline"]);
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("exists already"), "{}", again.stderr);
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
}

#[test]
fn a_project_outside_a_workspace_gets_one_and_bad_pipelines_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("proj");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("dvc.yaml"),
        "stages:\n  hello:\n    cmd: echo hi > hi.txt\n    outs:\n      - hi.txt\n",
    )
    .unwrap();
    let mlbuild = |dir: &Path, args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mlbuild"))
            .arg("-C")
            .arg(dir)
            .arg("--store")
            .arg(tmp.path().join("store"))
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    let out = mlbuild(tmp.path(), &["import", "dvc", "proj/dvc.yaml"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("wrote proj/MLBUILD.toml"), "{stdout}");
    assert!(
        stdout.contains("every field of dvc.yaml has an equivalent"),
        "{stdout}"
    );
    let built = mlbuild(&project, &["build", "//..."]);
    assert!(built.status.success(), "{built:?}");
    assert_eq!(
        std::fs::read_to_string(project.join("mlbuild-out/_root/hello/hi.txt")).unwrap(),
        "hi\n"
    );

    // A stage whose wdir leaves the project, and a variable that does not exist.
    for (yaml, message) in [
        (
            "stages:\n  s:\n    wdir: ..\n    cmd: 'true'\n",
            "is outside the project",
        ),
        (
            "stages:\n  s:\n    cmd: echo ${nope}\n",
            "`${nope}`: no variable `nope`",
        ),
        ("stages: [1\n", "is not valid YAML"),
    ] {
        std::fs::write(project.join("dvc.yaml"), yaml).unwrap();
        let out = mlbuild(&project, &["import", "dvc", "--force"]);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{yaml}: {stderr}");
    }
    let out = mlbuild(tmp.path(), &["import", "dvc"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no DVC pipeline at"));
}
