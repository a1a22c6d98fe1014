//! `mlbuild rule package`, run as the real binary the way a package action runs it: paths
//! relative to the working directory, `SOURCE_DATE_EPOCH` and the signing key in the
//! environment.

use std::fs;
use std::path::Path;
use std::process::Command;

struct Out {
    code: i32,
    stderr: String,
}

/// Runs `mlbuild rule package ARGS` in `cwd` with a hermetic-looking environment.
fn rule(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mlbuild"));
    cmd.args(["rule", "package"])
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = cmd.output().expect("run mlbuild");
    Out {
        code: output.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A working directory like a package action's: dependency outputs and package sources.
fn workdir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let w = |rel: &str, data: &str| {
        let p = tmp.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    };
    w("deps/fraud_model/model.json", "{\"coef\": [0.5]}\n");
    w("deps/evaluation/metrics.json", "{\"f1\": 0.9}\n");
    w("serve.py", "print('serve')\n");
    fs::create_dir(tmp.path().join("out")).unwrap();
    tmp
}

const ARGS: &[&str] = &[
    "--name",
    "fraud",
    "--out",
    "out",
    "--file",
    "model.json=deps/fraud_model/model.json",
    "--file",
    "metrics.json=deps/evaluation/metrics.json",
    "--file",
    "serve.py=serve.py",
];

#[test]
fn packages_an_unsigned_artifact_reproducibly() {
    let a = workdir();
    let b = workdir();
    let env = [("SOURCE_DATE_EPOCH", "1700000000")];
    let ra = rule(a.path(), ARGS, &env);
    assert_eq!(ra.code, 0, "{}", ra.stderr);
    assert_eq!(rule(b.path(), ARGS, &env).code, 0);

    let unsigned: Vec<&str> = ra
        .stderr
        .lines()
        .filter(|l| l.contains("unsigned"))
        .collect();
    assert_eq!(unsigned.len(), 1, "{}", ra.stderr);
    assert!(unsigned[0].contains("`fraud`"), "{}", ra.stderr);

    let out = a.path().join("out");
    let mut listing: Vec<String> = fs::read_dir(out.join("fraud"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listing.sort();
    assert_eq!(
        listing,
        ["manifest.json", "metrics.json", "model.json", "serve.py"]
    );
    let archive_a = fs::read(out.join("fraud.tar.zst")).unwrap();
    let archive_b = fs::read(b.path().join("out/fraud.tar.zst")).unwrap();
    assert!(archive_a == archive_b, "two runs gave different archives");
    // No temp file is left next to the outputs.
    assert_eq!(fs::read_dir(&out).unwrap().count(), 2);

    // Another epoch, other bytes.
    let c = workdir();
    assert_eq!(rule(c.path(), ARGS, &[("SOURCE_DATE_EPOCH", "0")]).code, 0);
    assert_ne!(
        archive_a,
        fs::read(c.path().join("out/fraud.tar.zst")).unwrap()
    );
}

#[test]
fn signs_with_the_key_from_the_environment_without_writing_it() {
    let tmp = workdir();
    let key = mlbuild_sign::PrivateKey::generate();
    let pem = key.to_pem();
    let r = rule(
        tmp.path(),
        ARGS,
        &[
            ("SOURCE_DATE_EPOCH", "0"),
            ("MLBUILD_SIGNING_KEY_PEM", &pem),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stderr.contains("unsigned"), "{}", r.stderr);
    let dir = tmp.path().join("out/fraud");
    mlbuild_sign::model::verify_dir(&dir, &dir.join("model.sig"), &key.public_key())
        .unwrap_or_else(|e| panic!("{e}"));
    // The secret appears in no output file and not on stderr.
    let secret_line = pem
        .lines()
        .find(|l| !l.starts_with("-----"))
        .expect("a base64 line");
    for entry in walkdir::WalkDir::new(tmp.path().join("out")) {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            let bytes = fs::read(entry.path()).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains("PRIVATE KEY"), "{}", entry.path().display());
            assert!(!text.contains(secret_line), "{}", entry.path().display());
        }
    }
    assert!(!r.stderr.contains(secret_line));
}

#[test]
fn a_bad_key_is_bad_input_and_is_not_echoed() {
    let tmp = workdir();
    let r = rule(
        tmp.path(),
        ARGS,
        &[("MLBUILD_SIGNING_KEY_PEM", "not-a-key-s3cr3t")],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("MLBUILD_SIGNING_KEY_PEM"), "{}", r.stderr);
    assert!(!r.stderr.contains("s3cr3t"), "{}", r.stderr);
}

#[test]
fn a_missing_source_is_bad_input_naming_the_file() {
    let tmp = workdir();
    let r = rule(
        tmp.path(),
        &[
            "--name",
            "fraud",
            "--out",
            "out",
            "--file",
            "model.json=deps/fraud_model/modle.json",
        ],
        &[],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("deps/fraud_model/modle.json"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("model.json"), "{}", r.stderr);
    assert_eq!(fs::read_dir(tmp.path().join("out")).unwrap().count(), 0);
}

#[test]
fn a_hostile_destination_is_bad_input() {
    let tmp = workdir();
    let r = rule(
        tmp.path(),
        &[
            "--name",
            "fraud",
            "--out",
            "out",
            "--file",
            "../../escape.py=serve.py",
        ],
        &[],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("../../escape.py"), "{}", r.stderr);
    assert!(!tmp.path().join("escape.py").exists());
    assert!(!tmp.path().parent().unwrap().join("escape.py").exists());
}

#[test]
fn usage_errors_are_bad_input() {
    let tmp = workdir();
    let r = rule(tmp.path(), &["--name", "fraud"], &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--out"), "{}", r.stderr);
    let r = rule(tmp.path(), ARGS, &[("SOURCE_DATE_EPOCH", "yesterday")]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("SOURCE_DATE_EPOCH"), "{}", r.stderr);
}
