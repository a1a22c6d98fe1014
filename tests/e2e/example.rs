//! The shipped example pipeline, built as a user would: from a fresh copy, twice, and in
//! two checkouts with separate stores to show its outputs are reproducible.

use std::path::{Path, PathBuf};
use std::process::Command;

fn copy_tree(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(from).unwrap();
        if rel.starts_with("mlbuild-out") {
            continue;
        }
        let dest = to.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fraud")
}

fn build(root: &Path, store: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mlbuild"))
        .arg("-C")
        .arg(root)
        .arg("--store")
        .arg(store)
        .args(["build", "//models:fraud"])
        .env("CI", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn example_builds_learns_and_is_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    copy_tree(&example_dir(), &a);
    copy_tree(&example_dir(), &b);

    let (code, stderr) = build(&a, &tmp.path().join("store-a"));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains(" 0 cached, 0 failed"), "{stderr}");
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(a.join("mlbuild-out/models/fraud/metrics.json")).unwrap(),
    )
    .unwrap();
    let f1 = metrics["f1"].as_f64().expect("metrics.json has f1");
    assert!(
        f1 > 0.5,
        "the example model should learn something: f1 = {f1}"
    );

    let (code, stderr) = build(&a, &tmp.path().join("store-a"));
    assert_eq!(code, 0);
    assert!(
        stderr.contains(" 0 executed,"),
        "second build executed something: {stderr}"
    );

    // A second checkout with its own empty store produces the same bytes.
    let (code, stderr) = build(&b, &tmp.path().join("store-b"));
    assert_eq!(code, 0, "{stderr}");
    for entry in walkdir::WalkDir::new(a.join("mlbuild-out")) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(&a).unwrap();
        if entry.file_type().is_file() && !rel.starts_with("mlbuild-out/.logs") {
            assert_eq!(
                std::fs::read(entry.path()).unwrap(),
                std::fs::read(b.join(rel)).unwrap(),
                "{} differs between checkouts",
                rel.display()
            );
        }
    }
}
