//! The scikit-learn example end to end: a locked numpy / pandas / scikit-learn
//! environment, a real dataset, a swept HistGradientBoostingClassifier with gates, and a
//! packaged `serve.py` run in the same environment.
//!
//! One test, because the environment (~260 MB of wheels) is the expensive part: runner A
//! builds it once and fills a real `mlbuild cache serve`; runner B, with an empty store,
//! takes everything from that cache without executing anything (so the environment never
//! touches the network there); B's audit then rebuilds every stage, the environment
//! included, without any cache and must get the same bytes. That is two environment
//! builds for the whole suite.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::python_env::uv;
use crate::support::{copy_tree, parse_built, serve, Built};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sklearn")
}

fn mlbuild(root: &Path, store: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mlbuild"));
    cmd.arg("-C")
        .arg(root)
        .arg("--store")
        .arg(store)
        .args(args)
        .env("CI", "1")
        .env("NO_COLOR", "1")
        .env("MLBUILD_UV", uv())
        .env_remove("MLBUILD_STORE")
        .env_remove("MLBUILD_SIGNING_KEY")
        .env_remove("MLBUILD_REMOTE_TOKEN");
    cmd
}

fn build(root: &Path, store: &Path, args: &[&str]) -> Built {
    let mut full = vec!["--json", "build"];
    full.extend_from_slice(args);
    parse_built(&mlbuild(root, store, &full).output().expect("run mlbuild"))
}

#[test]
fn the_sklearn_example_builds_shares_its_environment_and_reproduces() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    copy_tree(&example(), &a);
    copy_tree(&example(), &b);
    let (store_a, store_b) = (tmp.path().join("store-a"), tmp.path().join("store-b"));
    let (_server, url) = serve(&tmp.path().join("cache"), &["--anonymous", "write"]);
    let all = ["//...", "--remote", url.as_str()];

    // Runner A: every stage runs, the gates pass, the packaged serve.py scores the test
    // split in the locked environment, and the results are uploaded.
    let first = build(&a, &store_a, &all);
    assert_eq!(first.code, 0, "{first:#?}");
    assert_eq!(first.status["//envs:train"], "executed");
    assert_eq!(first.failed, 0);
    let packages: serde_json::Value = serde_json::from_slice(
        &std::fs::read(a.join("mlbuild-out/envs/train/env/packages.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(packages["packages"]["scikit-learn"], "1.7.2", "{packages}");
    let predictions =
        std::fs::read_to_string(a.join("mlbuild-out/models/smoke/predictions.csv")).unwrap();
    assert!(predictions.lines().count() > 100, "{predictions}");

    // Runner B, empty store: everything, the environment included, comes from the cache;
    // nothing executes, so nothing is resolved or downloaded from the package index.
    let second = build(&b, &store_b, &all);
    assert_eq!(second.code, 0, "{second:#?}");
    assert_eq!((second.executed, second.failed), (0, 0), "{second:#?}");
    assert!(
        second
            .events
            .iter()
            .any(|e| e["event"] == "remote_downloaded" && e["label"] == "//envs:train"),
        "the environment was not downloaded: {second:#?}"
    );
    for file in ["models/cancer/cancer.tar.zst", "models/model/model.pkl"] {
        let (x, y) = (
            std::fs::read(a.join("mlbuild-out").join(file)).unwrap(),
            std::fs::read(b.join("mlbuild-out").join(file)).unwrap(),
        );
        assert!(x == y, "{file} differs between the runners");
    }

    // B rebuilds every stage of the artifact's closure without any cache, and gets the
    // bytes A built: the environment, the data, every trained variant, the package.
    let audit = mlbuild(&b, &store_b, &["audit", "//models:cancer"])
        .output()
        .unwrap();
    let report =
        std::fs::read_to_string(b.join("mlbuild-out/.audit/report.json")).unwrap_or_default();
    assert!(
        audit.status.success(),
        "{}\n{report}",
        String::from_utf8_lossy(&audit.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let audited = report.to_string();
    for label in ["//envs:train", "//data:raw", "//models:cancer"] {
        assert!(audited.contains(label), "{label} not audited: {audited}");
    }

    // Editing one stage's source reruns that stage only: its metrics keep their bytes, so
    // the package and the smoke test stay cached (early cutoff).
    let evaluate = a.join("models/evaluate.py");
    let mut text = std::fs::read_to_string(&evaluate).unwrap();
    text.push_str("\n# a comment changes the source, not the metrics\n");
    std::fs::write(&evaluate, text).unwrap();
    let edited = build(&a, &store_a, &["//..."]);
    assert_eq!(edited.code, 0, "{edited:#?}");
    let executed: Vec<&String> = edited
        .status
        .iter()
        .filter(|(_, s)| *s == "executed")
        .map(|(l, _)| l)
        .collect();
    assert_eq!(executed, ["//models:evaluation"], "{edited:#?}");
}
