//! The shipped example pipeline (`examples/fraud`), built as a user would, from fresh
//! copies: signed in two checkouts with separate stores (byte-identical artifacts that
//! `mlbuild verify` and the OpenSSF `model_signing` tool both accept), unsigned and then
//! after a params change (only training onwards reruns), and with drifted or invalid data
//! (the build stops at the check that caught it).

// The same file as `signing::venv`, included again so this module does not depend on
// another test module's private items; its file lock makes the two share one venv.
#[allow(clippy::duplicate_mod)]
#[path = "../../crates/mlbuild-sign/tests/venv/mod.rs"]
mod venv;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::{copy_tree, example_dir, parse_built, Built, Ws};

/// The four variants of the training sweep, as labels.
const VARIANTS: [&str; 4] = [
    "//models:fraud_model[train.l2=0.0,train.lr=0.05]",
    "//models:fraud_model[train.l2=0.0,train.lr=0.2]",
    "//models:fraud_model[train.l2=0.01,train.lr=0.05]",
    "//models:fraud_model[train.l2=0.01,train.lr=0.2]",
];
/// The targets upstream of training: nothing in `train.*` reaches them.
const DATA_STAGES: [&str; 4] = [
    "//data:transactions",
    "//data:validated",
    "//data:drift",
    "//features:train_set",
];
/// Training's dependents.
const MODEL_STAGES: [&str; 4] = [
    "//models:fraud_model",
    "//models:evaluation",
    "//models:card",
    "//models:fraud",
];
/// What the artifact directory holds when signed.
const ARTIFACT_FILES: [&str; 7] = [
    "MODEL_CARD.md",
    "manifest.json",
    "metrics.json",
    "model.json",
    "model.sig",
    "selection.json",
    "serve.py",
];
const ARTIFACT_DIR: &str = "mlbuild-out/models/fraud/fraud";
const ARCHIVE: &str = "mlbuild-out/models/fraud/fraud.tar.zst";

/// A workspace holding a fresh copy of the example (no `mlbuild-out/`), with its own store.
/// File modes are kept, so serve.py stays executable as in the repository.
fn checkout() -> Ws {
    let ws = Ws::new();
    copy_tree(&example_dir(), &ws.root());
    ws
}

/// `mlbuild --json [PRE...] build ARGS`, signed with `key` or explicitly without a key.
fn build(ws: &Ws, key: Option<&Path>, pre: &[&str], args: &[&str]) -> Built {
    let mut full = vec!["--json"];
    full.extend_from_slice(pre);
    full.push("build");
    full.extend_from_slice(args);
    let mut cmd = ws.command(&full);
    match key {
        Some(key) => cmd.env("MLBUILD_SIGNING_KEY", key),
        None => cmd.env_remove("MLBUILD_SIGNING_KEY"),
    };
    parse_built(&cmd.output().expect("run mlbuild"))
}

fn json(ws: &Ws, rel: &str) -> serde_json::Value {
    serde_json::from_str(&ws.read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Labels of `built` with status `status`, sorted.
fn with_status(built: &Built, status: &str) -> Vec<String> {
    built
        .status
        .iter()
        .filter(|(_, s)| s.as_str() == status)
        .map(|(l, _)| l.clone())
        .collect()
}

fn sorted(labels: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Every file below `dir`, by relative path.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(dir).unwrap().to_path_buf())
        .collect();
    files.sort();
    files
}

/// Scores the generated transactions with the artifact's serve.py and returns its F1.
fn serve_f1(ws: &Ws) -> f64 {
    let data =
        std::fs::File::open(ws.path("mlbuild-out/data/transactions/transactions.csv")).unwrap();
    // Run from elsewhere: serve.py finds model.json next to itself.
    let out = Command::new("python3")
        .arg(ws.path(ARTIFACT_DIR).join("serve.py"))
        .current_dir(ws.dir.path())
        .stdin(Stdio::from(data))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scores = String::from_utf8(out.stdout).unwrap();
    let truth = ws.read("mlbuild-out/data/transactions/transactions.csv");
    let mut score_lines = scores.lines();
    let mut truth_lines = truth.lines();
    assert_eq!(score_lines.next(), Some("transaction_id,probability,fraud"));
    truth_lines.next();
    let (mut tp, mut fp, mut fn_, mut rows) = (0u32, 0u32, 0u32, 0u32);
    for (s, t) in score_lines.zip(&mut truth_lines) {
        let s: Vec<&str> = s.split(',').collect();
        let t: Vec<&str> = t.split(',').collect();
        assert_eq!(s[0], t[0], "serve.py output is not in input order");
        let p: f64 = s[1].parse().unwrap();
        assert!((0.0..=1.0).contains(&p), "probability {p}");
        match (s[2], t[7]) {
            ("1", "1") => tp += 1,
            ("1", "0") => fp += 1,
            ("0", "1") => fn_ += 1,
            ("0", "0") => {}
            other => panic!("unexpected decision/label {other:?}"),
        }
        rows += 1;
    }
    assert!(truth_lines.next().is_none(), "serve.py dropped rows");
    assert_eq!(rows, 20_000);
    f64::from(2 * tp) / f64::from(2 * tp + fp + fn_)
}

/// The message of `label`'s `target_finished` event: its error when it failed.
fn failure(built: &Built, label: &str) -> String {
    built
        .events
        .iter()
        .find(|e| e["event"] == "target_finished" && e["label"] == label)
        .and_then(|e| e["message"].as_str())
        .unwrap_or_else(|| panic!("no failure message for {label}: {built:#?}"))
        .to_owned()
}

/// The line of a drift table (`column status metric`) for `column`.
fn drift_row<'a>(report: &'a str, column: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.split_whitespace().find(|w| *w != "│") == Some(column))
        .unwrap_or_else(|| panic!("no drift row for `{column}` in:\n{report}"))
}

#[test]
fn example_builds_signed_and_byte_identical_in_two_checkouts() {
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = (
        keys.path().join("signer.pem"),
        keys.path().join("signer.pub"),
    );
    let gen = Command::new(env!("CARGO_BIN_EXE_mlbuild"))
        .args(["key", "generate", "--private-key"])
        .arg(&private)
        .arg("--public-key")
        .arg(&public)
        .output()
        .unwrap();
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );

    let a = checkout();
    let first = build(&a, Some(&private), &[], &["//models:fraud"]);
    assert_eq!(first.code, 0, "{first:#?}");
    let mut every: Vec<&str> = [&DATA_STAGES[..], &VARIANTS[..], &MODEL_STAGES[..]].concat();
    every.sort();
    assert_eq!(
        with_status(&first, "executed"),
        sorted(&every),
        "{first:#?}"
    );
    assert_eq!((first.executed, first.cached, first.failed), (12, 0, 0));
    assert!(
        !first.warnings().iter().any(|w| w.contains("unsigned")),
        "{first:#?}"
    );

    // The checks passed, and the gates were checked on the evaluation.
    assert_eq!(
        json(&a, "mlbuild-out/data/validated/report.json")["verdict"],
        "pass"
    );
    assert_eq!(
        json(&a, "mlbuild-out/data/drift/drift.json")["verdict"],
        "ok"
    );
    let gates: Vec<&serde_json::Value> = first
        .events
        .iter()
        .filter(|e| e["event"] == "gate_checked")
        .collect();
    assert_eq!(gates.len(), 2, "{first:#?}");
    assert!(gates
        .iter()
        .all(|g| g["label"] == "//models:evaluation" && g["passed"] == true));
    let selection = json(&a, "mlbuild-out/models/fraud_model/selection.json");
    assert_eq!(selection["variants"].as_array().unwrap().len(), 4);
    assert!(VARIANTS.contains(&selection["selected"].as_str().unwrap()));

    // The artifact: the declared files, the manifest and the signature; its metrics are
    // the evaluation's, and its serve.py scores raw transactions about as well.
    let listing: Vec<PathBuf> = files_below(&a.path(ARTIFACT_DIR));
    let expected: Vec<PathBuf> = ARTIFACT_FILES.iter().map(PathBuf::from).collect();
    assert_eq!(listing, expected);
    assert_eq!(
        a.read(&format!("{ARTIFACT_DIR}/metrics.json")),
        a.read("mlbuild-out/models/evaluation/metrics.json")
    );
    let f1 = json(&a, "mlbuild-out/models/evaluation/metrics.json")["f1"]
        .as_f64()
        .unwrap();
    assert!((0.55..0.9).contains(&f1), "test F1 {f1}");
    let served = serve_f1(&a);
    assert!(
        (f1 - served).abs() < 0.06,
        "serve.py F1 {served}, test F1 {f1}"
    );
    let card = a.read(&format!("{ARTIFACT_DIR}/MODEL_CARD.md"));
    assert!(
        card.contains(selection["selected"].as_str().unwrap()),
        "{card}"
    );

    // Nothing to do the second time.
    let again = build(&a, Some(&private), &[], &["//models:fraud"]);
    assert_eq!(again.code, 0, "{again:#?}");
    assert_eq!((again.executed, again.cached), (0, 12), "{again:#?}");

    // Another checkout, another empty store, the same key: the same bytes, signature
    // included. (Provenance records times and build ids, so it is left out.)
    let b = checkout();
    let other = build(&b, Some(&private), &[], &["//models:fraud"]);
    assert_eq!(other.code, 0, "{other:#?}");
    assert_eq!(other.executed, 12);
    let archive = std::fs::read(a.path(ARCHIVE)).unwrap();
    assert!(
        archive == std::fs::read(b.path(ARCHIVE)).unwrap(),
        "fraud.tar.zst differs"
    );
    let sig = format!("{ARTIFACT_DIR}/model.sig");
    assert_eq!(a.read(&sig), b.read(&sig), "model.sig differs");
    let outputs = files_below(&a.path("mlbuild-out"));
    assert_eq!(outputs, files_below(&b.path("mlbuild-out")));
    for rel in outputs {
        if rel.starts_with(".logs") || rel.to_string_lossy().ends_with(".intoto.jsonl") {
            continue;
        }
        let path = Path::new("mlbuild-out").join(&rel);
        assert!(
            std::fs::read(a.root().join(&path)).unwrap()
                == std::fs::read(b.root().join(&path)).unwrap(),
            "{} differs between checkouts",
            rel.display()
        );
    }

    // Both verifiers accept it: mlbuild on the archive, model_signing on the directory
    // (the commands of examples/fraud/README.md).
    let verify = a.run(&[
        "verify",
        a.path(ARCHIVE).to_str().unwrap(),
        "--key",
        public.to_str().unwrap(),
    ]);
    assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
    assert!(
        verify.stdout.contains("6 files signed"),
        "{}",
        verify.stdout
    );
    let output = Command::new(venv::model_signing())
        .args(["verify", "key", ARTIFACT_DIR])
        .args(["--signature", &sig, "--public_key"])
        .arg(&public)
        .current_dir(a.root())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "model_signing verify failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn example_without_a_key_is_unsigned_and_an_epochs_change_reruns_training_onwards() {
    let ws = checkout();
    // The README's quick start: no key, an unsigned artifact and a warning.
    let first = build(&ws, None, &[], &["//models:fraud"]);
    assert_eq!(first.code, 0, "{first:#?}");
    assert!(
        first.warnings().iter().any(|w| w.contains("unsigned")),
        "{first:#?}"
    );
    assert!(ws.path(ARCHIVE).is_file());
    assert!(ws.path(&format!("{ARTIFACT_DIR}/manifest.json")).is_file());
    assert!(!ws.path(&format!("{ARTIFACT_DIR}/model.sig")).exists());

    let params = ws.read("params.toml");
    assert!(params.contains("\nepochs = 15\n"), "{params}");
    ws.write(
        "params.toml",
        &params.replace("\nepochs = 15\n", "\nepochs = 10\n"),
    );
    let second = build(&ws, None, &[], &["//models:fraud"]);
    assert_eq!(second.code, 0, "{second:#?}");
    let mut rerun: Vec<&str> = [&VARIANTS[..], &MODEL_STAGES[..]].concat();
    rerun.sort();
    assert_eq!(
        with_status(&second, "executed"),
        sorted(&rerun),
        "{second:#?}"
    );
    assert_eq!(
        with_status(&second, "cached"),
        sorted(&DATA_STAGES),
        "{second:#?}"
    );
    let model = json(&ws, &format!("{ARTIFACT_DIR}/model.json"));
    assert_eq!(model["params"]["epochs"], 10);
    assert_eq!(
        model["training"]["loss_history"].as_array().unwrap().len(),
        10
    );
}

#[test]
fn example_stops_at_the_drift_check_or_the_validation_that_caught_bad_data() {
    let ws = checkout();
    // The generator's amounts doubled: the drift check fails and names the column.
    let drifted = build(
        &ws,
        None,
        &["--set", "data.amount_scale=2.0"],
        &["//models:fraud"],
    );
    assert_eq!(drifted.code, 1, "{drifted:#?}");
    assert_eq!(drifted.status["//data:drift"], "failed", "{drifted:#?}");
    assert_eq!(drifted.failed, 1);
    for label in ["//models:card", "//models:fraud"] {
        assert!(
            !matches!(
                drifted.status.get(label).map(String::as_str),
                Some("executed" | "cached")
            ),
            "{label} was built from drifted data: {drifted:#?}"
        );
    }
    let message = failure(&drifted, "//data:drift");
    assert!(message.contains("`//data:drift` failed"), "{message}");
    assert!(drift_row(&message, "amount").contains("fail"), "{message}");
    assert!(drift_row(&message, "hour").contains("ok"), "{message}");
    // The README's command, as a person sees it.
    let plain = ws.run(&["--set", "data.amount_scale=2.0", "build", "//data:drift"]);
    assert_eq!(plain.code, 1, "{}", plain.stderr);
    assert!(
        plain.stderr.contains("`//data:drift` failed"),
        "{}",
        plain.stderr
    );
    assert!(
        drift_row(&plain.stderr, "amount").contains("fail"),
        "{}",
        plain.stderr
    );
    assert!(!ws.path(ARCHIVE).exists());

    // Too few rows for the schema: validation fails and nothing learns from the data.
    let small = build(&ws, None, &["--set", "data.rows=500"], &["//models:fraud"]);
    assert_eq!(small.code, 1, "{small:#?}");
    assert_eq!(small.status["//data:validated"], "failed", "{small:#?}");
    assert!(
        !matches!(
            small.status.get("//features:train_set").map(String::as_str),
            Some("executed" | "cached")
        ),
        "{small:#?}"
    );
    let message = failure(&small, "//data:validated");
    assert!(message.contains("fewer than `min_rows` 1000"), "{message}");

    // Without overrides the same workspace builds.
    assert_eq!(build(&ws, None, &[], &["//data:drift"]).code, 0);
}
