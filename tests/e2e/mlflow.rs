//! `mlbuild mlflow export` against a real MLflow tracking server (see `bridges`): runs,
//! params, metrics, tags, child runs of a sweep, uploaded artifacts and the registered
//! model version are read back through MLflow's own REST API; a second export changes
//! nothing; an unreachable server or a refusal is a clear error that leaves the build as
//! it was; `[export.mlflow]` exports after each build.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::bridges::{api_get, api_post, artifact, mlflow_url};
use crate::support::Ws;

/// A sweep over `lr` (best at 0.05) selected by `f1`, and a signed package of the winner.
fn tracked_ws(ws: &Ws) {
    ws.write(
        "MLBUILD.toml",
        "[workspace]\nname = \"tracked\"\nparams = \"params.toml\"\n",
    );
    ws.write("params.toml", "[train]\nepochs = 3\nopt = \"adam\"\n");
    ws.write(
        "models/BUILD.toml",
        r#"
[target.model]
kind = "train"
srcs = ["train.sh"]
cmd = ["sh", "train.sh", "{params.lr}", "{out}"]
tools = ["awk"]
outs = ["model.txt", "metrics.json"]
params = { lr = 0.5 }
param_keys = ["train.epochs", "train.opt"]
metrics = ["metrics.json"]
sweep = { lr = [0.01, 0.05] }
select = { metric = "f1", goal = "max" }

[target.fraud]
kind = "package"
deps = [":model"]
files = { "model.txt" = "{deps.model}/model.txt", "metrics.json" = "{deps.model}/metrics.json" }
"#,
    );
    ws.write(
        "models/train.sh",
        r#"awk -v lr="$1" 'BEGIN { d = lr - 0.05; printf "{\"f1\": %.6f, \"loss\": %.6f}\n", 1 - d * d, d * d }' > "$2/metrics.json"
echo "lr=$1" > "$2/model.txt"
"#,
    );
}

fn export(ws: &Ws, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["--json", "mlflow", "export", "--tracking-uri", mlflow_url()];
    args.extend_from_slice(extra);
    let run = ws.run(&args);
    let json = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
    (run.code, json, run.stderr)
}

/// Every active run of an experiment, by its `mlbuild.label` tag.
fn runs_of(experiment_id: &str) -> BTreeMap<String, Value> {
    let found = api_post(
        "runs/search",
        &json!({ "experiment_ids": [experiment_id], "max_results": 1000 }),
    );
    found["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|run| (tag(&run, "mlbuild.label").unwrap(), run))
        .collect()
}

fn tag(run: &Value, key: &str) -> Option<String> {
    run["data"]["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .map(|t| t["value"].as_str().unwrap().to_owned())
}

fn kv(run: &Value, field: &str) -> BTreeMap<String, Value> {
    run["data"][field]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p["key"].as_str().unwrap().to_owned(), p["value"].clone()))
        .collect()
}

fn git(ws: &Ws, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(ws.root())
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn a_build_becomes_runs_child_runs_artifacts_and_a_model_version() {
    let ws = Ws::new();
    tracked_ws(&ws);
    git(&ws, &["init", "-q"]);
    git(&ws, &["add", "-A"]);
    git(&ws, &["commit", "-qm", "pipeline"]);
    let commit = git(&ws, &["rev-parse", "HEAD"]);
    let (key, _) = ws.key_pair("signing");
    let built = crate::support::parse_built(
        &ws.command(&["--json", "build", "//...", "--name", "v1"])
            .env("MLBUILD_SIGNING_KEY", &key)
            .output()
            .unwrap(),
    );
    assert_eq!(built.code, 0, "{built:#?}");
    let keys: BTreeMap<String, String> = built
        .events
        .iter()
        .filter(|e| e["event"] == "target_finished")
        .map(|e| {
            (
                e["label"].as_str().unwrap().to_owned(),
                e["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(keys.len(), 4, "{keys:?}");

    let (code, report, stderr) = export(&ws, &["--experiment", "e2e-full"]);
    assert_eq!(code, 0, "{stderr}");
    let experiment_id = report["experiment_id"].as_str().unwrap().to_owned();
    assert!(report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["outcome"] == "created"));

    let runs = runs_of(&experiment_id);
    assert_eq!(
        runs.keys().collect::<Vec<_>>(),
        [
            "//models:fraud",
            "//models:model",
            "//models:model[lr=0.01]",
            "//models:model[lr=0.05]"
        ]
    );
    for (label, run) in &runs {
        assert_eq!(run["info"]["status"], "FINISHED", "{label}");
        assert_eq!(tag(run, "mlbuild.action_key"), Some(keys[label].clone()));
        assert_eq!(tag(run, "mlbuild.build").as_deref(), Some("v1"));
        assert_eq!(tag(run, "mlbuild.vcs_commit"), Some(commit.clone()));
        assert_eq!(tag(run, "mlflow.source.git.commit"), Some(commit.clone()));
        assert_eq!(tag(run, "mlbuild.store_digest").map(|d| d.len()), Some(64));
        assert_eq!(run["info"]["run_name"], label.as_str());
    }

    // Params: the keys the target reads (inline, from the params file, the swept value).
    let variant = &runs["//models:model[lr=0.05]"];
    assert_eq!(
        kv(variant, "params"),
        BTreeMap::from([
            ("lr".to_owned(), json!("0.05")),
            ("train.epochs".to_owned(), json!("3")),
            ("train.opt".to_owned(), json!("adam")),
        ])
    );
    let metrics = kv(variant, "metrics");
    assert_eq!(metrics["f1"], json!(1.0));
    assert_eq!(metrics["loss"], json!(0.0));
    let worse = kv(&runs["//models:model[lr=0.01]"], "metrics");
    assert!(
        (worse["f1"].as_f64().unwrap() - 0.9984).abs() < 1e-9,
        "{worse:?}"
    );
    // Variants are children of their selection.
    let selection_id = runs["//models:model"]["info"]["run_id"].as_str().unwrap();
    for v in ["//models:model[lr=0.01]", "//models:model[lr=0.05]"] {
        assert_eq!(
            tag(&runs[v], "mlflow.parentRunId").as_deref(),
            Some(selection_id)
        );
    }
    assert_eq!(tag(&runs["//models:model"], "mlflow.parentRunId"), None);
    // The metrics file itself is an artifact of the run.
    assert_eq!(
        artifact(
            variant["info"]["artifact_uri"].as_str().unwrap(),
            "metrics.json"
        ),
        std::fs::read(ws.path("mlbuild-out/models/model[lr=0.05]/metrics.json")).unwrap()
    );

    // The package: artifact directory, archive, signature and provenance, byte for byte.
    let package = &runs["//models:fraud"];
    let package_run = package["info"]["run_id"].as_str().unwrap();
    let uri = package["info"]["artifact_uri"].as_str().unwrap();
    for (name, local) in [
        ("fraud.tar.zst", "mlbuild-out/models/fraud/fraud.tar.zst"),
        (
            "fraud/model.sig",
            "mlbuild-out/models/fraud/fraud/model.sig",
        ),
        (
            "fraud/manifest.json",
            "mlbuild-out/models/fraud/fraud/manifest.json",
        ),
        (
            "fraud/model.txt",
            "mlbuild-out/models/fraud/fraud/model.txt",
        ),
        (
            "fraud.intoto.jsonl",
            "mlbuild-out/models/fraud.intoto.jsonl",
        ),
    ] {
        assert_eq!(
            artifact(uri, name),
            std::fs::read(ws.path(local)).unwrap(),
            "{name}"
        );
    }
    let versions = api_get("model-versions/search", &[("filter", "name = 'fraud'")]);
    let versions = versions["model_versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(versions[0]["run_id"], package_run);
    assert_eq!(versions[0]["source"], format!("{uri}/fraud"));
    let version_tags: BTreeMap<String, Value> = versions[0]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["key"].as_str().unwrap().to_owned(), t["value"].clone()))
        .collect();
    assert_eq!(version_tags["mlbuild.signed"], "true");
    assert_eq!(version_tags["mlbuild.provenance"], "true");
    assert_eq!(
        version_tags["mlbuild.action_key"],
        keys["//models:fraud"].as_str()
    );

    // Exporting the same build again finds every run by its action key: nothing new.
    let (code, again, stderr) = export(&ws, &["--experiment", "e2e-full", "--build", "v1"]);
    assert_eq!(code, 0, "{stderr}");
    for r in again["runs"].as_array().unwrap() {
        assert_eq!(r["outcome"], "unchanged", "{r}");
        let label = r["label"].as_str().unwrap();
        assert_eq!(r["run_id"], runs[label]["info"]["run_id"]);
        let parent = label.contains('[').then_some(selection_id);
        assert_eq!(r["parent_run_id"].as_str(), parent, "{r}");
    }
    assert_eq!(runs_of(&experiment_id).len(), 4);
    let versions = api_get("model-versions/search", &[("filter", "name = 'fraud'")]);
    assert_eq!(versions["model_versions"].as_array().unwrap().len(), 1);

    // A pattern narrows the export; a swept target's label takes its variants along.
    let (code, some, stderr) = export(&ws, &["--experiment", "e2e-narrow", "//models:model"]);
    assert_eq!(code, 0, "{stderr}");
    let labels: Vec<&str> = some["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        [
            "//models:model",
            "//models:model[lr=0.01]",
            "//models:model[lr=0.05]"
        ]
    );
}

#[test]
fn an_unreachable_server_or_a_refusal_is_an_error_and_the_build_stays() {
    let ws = Ws::new();
    tracked_ws(&ws);
    ws.build_ok(&["//models:model"]);
    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("http://127.0.0.1:{port}");
    let run = ws.run(&["mlflow", "export", "--tracking-uri", &dead]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("MLflow tracking server `{dead}` is unreachable")),
        "{}",
        run.stderr
    );
    // A 4xx names the endpoint and MLflow's own error code.
    let run = ws.run(&[
        "mlflow",
        "export",
        "--tracking-uri",
        mlflow_url(),
        "--experiment",
        "",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("with HTTP 400 INVALID_PARAMETER_VALUE"),
        "{}",
        run.stderr
    );
    let run = ws.run(&["mlflow", "export", "--tracking-uri", "file:///tmp/mlruns"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("must start with `http://`"),
        "{}",
        run.stderr
    );
    let run = ws.run(&[
        "mlflow",
        "export",
        "--tracking-uri",
        &dead,
        "--build",
        "nope",
    ]);
    assert!(
        run.stderr.contains("no build named `nope`"),
        "{}",
        run.stderr
    );

    // With `[export.mlflow]` on a dead server the build itself is recorded and cached,
    // and the failure says so; the next build executes nothing.
    ws.write(
        "MLBUILD.toml",
        &format!(
            "[workspace]\nname = \"tracked\"\nparams = \"params.toml\"\n\n[export.mlflow]\ntracking_uri = \"{dead}\"\n"
        ),
    );
    ws.write("params.toml", "[train]\nepochs = 4\nopt = \"adam\"\n");
    let failed = ws.build(&["//models:model"]);
    assert_eq!(failed.code, 1, "{failed:#?}");
    // The variants rerun; the selection's inputs (their outputs) are unchanged.
    assert_eq!((failed.executed, failed.cached), (2, 1), "{failed:#?}");
    assert!(
        failed.stderr.contains("exporting build #") && failed.stderr.contains("is unreachable"),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains(&format!(
            "the build succeeded and is recorded; run `mlbuild mlflow export --build {}`",
            failed.events.last().unwrap()["invocation_id"]
        )),
        "{}",
        failed.stderr
    );
    // Only the export failed: the next build (against the live server) executes nothing
    // and exports what the failed export could not.
    ws.write(
        "MLBUILD.toml",
        &format!(
            "[workspace]\nname = \"tracked\"\nparams = \"params.toml\"\n\n[export.mlflow]\ntracking_uri = \"{}\"\nexperiment = \"e2e-auto\"\n",
            mlflow_url()
        ),
    );
    let next = ws.build(&["//models:model"]);
    assert_eq!(
        (next.code, next.executed, next.cached),
        (0, 0, 3),
        "{next:#?}"
    );
    assert!(
        next.stderr
            .contains("exported to MLflow experiment `e2e-auto`: 3 runs created, 0 unchanged"),
        "{}",
        next.stderr
    );
    let experiment = api_get(
        "experiments/get-by-name",
        &[("experiment_name", "e2e-auto")],
    );
    let runs = runs_of(experiment["experiment"]["experiment_id"].as_str().unwrap());
    assert_eq!(runs.len(), 3);
    assert_eq!(
        kv(&runs["//models:model[lr=0.05]"], "params")["train.epochs"],
        json!("4")
    );
}

#[test]
fn a_bad_export_setting_points_at_its_line() {
    let ws = Ws::new();
    ws.write(
        "MLBUILD.toml",
        "[workspace]\nname = \"t\"\n\n[export.mlflow]\ntracking_uri = \"127.0.0.1:5000\"\n",
    );
    ws.write("BUILD.toml", "[target.a]\ncmd = [\"true\"]\n");
    let run = ws.run(&["build", "//:a"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("MLflow tracking URI `127.0.0.1:5000` must start with `http://`"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("MLBUILD.toml:5"), "{}", run.stderr);
    let run = ws.run(&["mlflow", "export"]);
    assert_eq!(run.code, 2);

    // Without a server anywhere, export says where to give one.
    ws.write("MLBUILD.toml", "[workspace]\nname = \"t\"\n");
    let run = ws
        .command(&["mlflow", "export"])
        .env_remove("MLFLOW_TRACKING_URI")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("no MLflow tracking server given"),
        "{stderr}"
    );
    assert!(stderr.contains("[export.mlflow]"), "{stderr}");
}
