//! Tests of the package rule as a library: reproducible artifacts, the manifest (checked
//! against `schema/manifest.schema.json`), signing, and refusal of bad inputs.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use mlbuild_rules::archive::{extract, ExtractLimits};
use mlbuild_rules::package::{package, Manifest, PackageError, PackageSpec, MANIFEST_FILE};
use sha2::Digest as _;

/// Sources like a real package action sees: a model and metrics from dependencies, serving
/// code from the package, a directory output (`plots/`).
fn write_sources(root: &Path) {
    let w = |rel: &str, data: &[u8], mode: u32| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    w(
        "out/train/model.json",
        b"{\"weights\": [0.5, -1.25]}\n",
        0o600,
    );
    w("out/eval/metrics.json", b"{\"f1\": 0.91}\n", 0o644);
    w(
        "pkg/serve.py",
        b"#!/usr/bin/env python3\nprint('serving')\n",
        0o775,
    );
    w("out/eval/plots/roc.csv", b"fpr,tpr\n0,0\n1,1\n", 0o644);
    w("out/eval/plots/pr/curve.csv", b"p,r\n", 0o644);
}

fn spec(root: &Path, out: &Path, epoch: u64) -> PackageSpec {
    let files: BTreeMap<String, PathBuf> = [
        ("model.json", "out/train/model.json"),
        ("metrics.json", "out/eval/metrics.json"),
        ("serve.py", "pkg/serve.py"),
        ("plots", "out/eval/plots"),
    ]
    .into_iter()
    .map(|(d, s)| (d.to_string(), root.join(s)))
    .collect();
    PackageSpec {
        name: "fraud".into(),
        out: out.to_path_buf(),
        files,
        source_date_epoch: epoch,
    }
}

/// Packages the sources in a fresh temp dir and returns the archive bytes, the manifest
/// text and the temp dir (kept alive).
fn build(
    epoch: u64,
    key: Option<&mlbuild_sign::PrivateKey>,
) -> (Vec<u8>, String, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    write_sources(tmp.path());
    let out = tmp.path().join("action-out");
    fs::create_dir(&out).unwrap();
    let done = package(&spec(tmp.path(), &out, epoch), key).unwrap();
    assert_eq!(done.archive, out.join("fraud.tar.zst"));
    let bytes = fs::read(&done.archive).unwrap();
    let manifest = fs::read_to_string(done.dir.join(MANIFEST_FILE)).unwrap();
    (bytes, manifest, tmp)
}

#[test]
fn same_inputs_in_two_places_give_identical_artifacts() {
    let (a, ma, _ta) = build(0, None);
    let (b, mb, _tb) = build(0, None);
    assert_eq!(ma, mb);
    assert!(a == b, "archives differ");
    let (c, mc, _tc) = build(1_700_000_000, None);
    assert_eq!(ma, mc, "the manifest holds no time");
    assert_ne!(a, c, "SOURCE_DATE_EPOCH is the archive's mtime");
}

#[test]
fn manifest_lists_every_file_with_digests() {
    let (_, text, tmp) = build(0, None);
    let manifest: Manifest = serde_json::from_str(&text).unwrap();
    assert_eq!(manifest.name, "fraud");
    assert_eq!(manifest.manifest_version, 1);
    let paths: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "metrics.json",
            "model.json",
            "plots/pr/curve.csv",
            "plots/roc.csv",
            "serve.py"
        ]
    );
    let src = |p: &str| fs::read(tmp.path().join(p)).unwrap();
    for (entry, source) in manifest.files.iter().zip([
        src("out/eval/metrics.json"),
        src("out/train/model.json"),
        src("out/eval/plots/pr/curve.csv"),
        src("out/eval/plots/roc.csv"),
        src("pkg/serve.py"),
    ]) {
        assert_eq!(entry.size, source.len() as u64, "{}", entry.path);
        assert_eq!(
            entry.sha256,
            hex(&sha2::Sha256::digest(&source)),
            "{}",
            entry.path
        );
        assert_eq!(
            entry.blake3,
            blake3::hash(&source).to_hex().as_str(),
            "{}",
            entry.path
        );
        assert_eq!(entry.executable, entry.path == "serve.py");
    }
    // Recomputing from the directory gives the recorded manifest.
    let dir = tmp.path().join("action-out/fraud");
    assert_eq!(Manifest::of_dir("fraud", &dir).unwrap(), manifest);
    // Modes are normalized in the directory too.
    let mode = |p: &str| fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("serve.py"), 0o755);
    assert_eq!(mode("model.json"), 0o644);
    assert_eq!(mode(MANIFEST_FILE), 0o644);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn schema() -> (boon::Schemas, boon::SchemaIndex) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../schema/manifest.schema.json")
        .canonicalize()
        .unwrap();
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler.set_default_draft(boon::Draft::V2020_12);
    let index = compiler
        .compile(path.to_str().unwrap(), &mut schemas)
        .unwrap_or_else(|e| panic!("manifest schema does not compile: {e:#}"));
    (schemas, index)
}

#[test]
fn manifest_validates_against_the_schema() {
    let (schemas, index) = schema();
    let (_, text, _tmp) = build(0, None);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    if let Err(e) = schemas.validate(&json, index) {
        panic!("generated manifest does not validate: {e}");
    }

    // And the schema rejects what the format forbids.
    type Mutation = (&'static str, fn(&mut serde_json::Value));
    let mutations: &[Mutation] = &[
        ("bad sha256", |v| v["files"][0]["sha256"] = "XYZ".into()),
        ("negative size", |v| v["files"][0]["size"] = (-1).into()),
        ("escaping path", |v| v["files"][0]["path"] = "../x".into()),
        ("absolute path", |v| v["files"][0]["path"] = "/x".into()),
        ("reserved path", |v| {
            v["files"][0]["path"] = "manifest.json".into()
        }),
        ("unknown field", |v| v["timestamp"] = 1.into()),
        ("version 2", |v| v["manifest_version"] = 2.into()),
        ("missing blake3", |v| {
            v["files"][0].as_object_mut().unwrap().remove("blake3");
        }),
    ];
    for (what, mutate) in mutations {
        let mut bad = json.clone();
        mutate(&mut bad);
        assert!(
            schemas.validate(&bad, index).is_err(),
            "schema accepted {what}"
        );
    }
}

#[test]
fn signed_artifacts_verify_after_extraction_and_stay_reproducible() {
    let key = mlbuild_sign::PrivateKey::generate();
    let (a, _, _ta) = build(0, Some(&key));
    let (b, _, _tb) = build(0, Some(&key));
    assert!(a == b, "signed archives of the same inputs differ");

    let dest = tempfile::tempdir().unwrap();
    let archive = dest.path().join("fraud.tar.zst");
    fs::write(&archive, &a).unwrap();
    let unpacked = dest.path().join("fraud");
    fs::create_dir(&unpacked).unwrap();
    let dir = Dir::open_ambient_dir(&unpacked, ambient_authority()).unwrap();
    let report = extract(&archive, &dir, &ExtractLimits::default()).unwrap();
    assert!(report.entries.iter().any(|e| e.path == "model.sig"));

    let verified =
        mlbuild_sign::model::verify_dir(&unpacked, &unpacked.join("model.sig"), &key.public_key())
            .unwrap_or_else(|e| panic!("signature does not verify: {e}"));
    let signed: Vec<&str> = verified.files.iter().map(|f| f.name.as_str()).collect();
    assert!(signed.contains(&MANIFEST_FILE), "{signed:?}");
    assert!(signed.contains(&"plots/roc.csv"), "{signed:?}");

    // Tampering with a file after signing is caught.
    fs::write(unpacked.join("model.json"), b"{}").unwrap();
    assert!(mlbuild_sign::model::verify_dir(
        &unpacked,
        &unpacked.join("model.sig"),
        &key.public_key()
    )
    .is_err());
}

fn bad_input(spec: &PackageSpec) -> PackageError {
    let err = package(spec, None).unwrap_err();
    assert!(err.is_bad_input(), "{err:?}");
    err
}

#[test]
fn bad_inputs_are_refused_by_name_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    write_sources(tmp.path());
    let out = tmp.path().join("o");
    fs::create_dir(&out).unwrap();

    let mut s = spec(tmp.path(), &out, 0);
    s.files
        .insert("extra.bin".into(), tmp.path().join("out/train/missing.bin"));
    let err = bad_input(&s);
    assert!(
        matches!(&err, PackageError::MissingSource { dest, src } if dest == "extra.bin" && src.ends_with("missing.bin")),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing.bin"), "{err}");
    assert_eq!(fs::read_dir(&out).unwrap().count(), 0, "nothing written");

    for dest in [
        "../escape.json",
        "/abs.json",
        "a/../../b",
        "manifest.json",
        "model.sig",
        "",
    ] {
        let mut s = spec(tmp.path(), &out, 0);
        s.files
            .insert(dest.into(), tmp.path().join("out/train/model.json"));
        let err = bad_input(&s);
        assert!(
            matches!(&err, PackageError::BadDest { dest: d, .. } if d == dest),
            "{dest:?}: {err:?}"
        );
        assert_eq!(fs::read_dir(&out).unwrap().count(), 0, "nothing written");
    }

    // A file and a directory of the same name.
    let mut s = spec(tmp.path(), &out, 0);
    s.files
        .insert("model.json/x".into(), tmp.path().join("pkg/serve.py"));
    assert!(matches!(bad_input(&s), PackageError::BadDest { .. }));

    let mut s = spec(tmp.path(), &out, 0);
    s.name = "../evil".into();
    assert!(matches!(bad_input(&s), PackageError::BadName { .. }));
}

#[test]
fn a_symlink_inside_a_directory_source_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    write_sources(tmp.path());
    std::os::unix::fs::symlink("/etc/passwd", tmp.path().join("out/eval/plots/leak")).unwrap();
    let out = tmp.path().join("o");
    fs::create_dir(&out).unwrap();
    let err = bad_input(&spec(tmp.path(), &out, 0));
    assert!(
        matches!(&err, PackageError::UnsupportedSource { path, .. } if path.ends_with("plots/leak")),
        "{err:?}"
    );
}

#[test]
fn an_existing_artifact_directory_is_not_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    write_sources(tmp.path());
    let out = tmp.path().join("o");
    fs::create_dir_all(out.join("fraud")).unwrap();
    assert!(matches!(
        bad_input(&spec(tmp.path(), &out, 0)),
        PackageError::Exists { .. }
    ));
}

#[test]
fn check_manifest_accepts_the_artifact_and_names_every_difference() {
    use mlbuild_rules::package::{check_manifest, ManifestProblem};
    let (_, _, tmp) = build(0, None);
    let dir = tmp.path().join("action-out/fraud");
    let manifest = check_manifest(&dir).unwrap();
    assert_eq!(manifest.files.len(), 5);

    fs::write(dir.join("model.json"), b"{}").unwrap();
    fs::remove_file(dir.join("plots/roc.csv")).unwrap();
    fs::write(dir.join("extra.txt"), b"x").unwrap();
    fs::set_permissions(dir.join("serve.py"), fs::Permissions::from_mode(0o644)).unwrap();
    match check_manifest(&dir).unwrap_err() {
        PackageError::ManifestMismatch { problems, .. } => assert_eq!(
            problems,
            [
                ManifestProblem::Extra {
                    path: "extra.txt".into()
                },
                ManifestProblem::Modified {
                    path: "model.json".into()
                },
                ManifestProblem::Missing {
                    path: "plots/roc.csv".into()
                },
                ManifestProblem::Mode {
                    path: "serve.py".into()
                },
            ]
        ),
        other => panic!("unexpected {other:?}"),
    }

    fs::write(dir.join(MANIFEST_FILE), b"{\"manifest_version\": 1}").unwrap();
    assert!(matches!(
        check_manifest(&dir).unwrap_err(),
        PackageError::BadManifest { .. }
    ));
}
