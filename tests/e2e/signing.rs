//! `mlbuild key generate` and `mlbuild verify`, run as the real binary against artifacts
//! signed by the real OpenSSF `model_signing` tool and by mlbuild's own signer, as
//! directories and as `.tar.zst` archives.

#[path = "../../crates/mlbuild-sign/tests/venv/mod.rs"]
pub(crate) mod venv;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use mlbuild_sign::model::{sign_dir, SIGNATURE_FILE};
use mlbuild_sign::PrivateKey;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `mlbuild ARGS` in `cwd`.
fn mlbuild(cwd: &Path, args: &[&str]) -> Out {
    let output = Command::new(env!("CARGO_BIN_EXE_mlbuild"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .output()
        .expect("run mlbuild");
    let out = Out {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    eprintln!(
        "mlbuild {args:?} -> {}\n{}{}",
        out.code, out.stdout, out.stderr
    );
    out
}

/// A small model directory `art/` in a fresh temp dir.
fn model_dir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let art = tmp.path().join("art");
    fs::create_dir_all(art.join("weights")).unwrap();
    fs::write(art.join("model.json"), br#"{"coef": [0.5, -1.25]}"#).unwrap();
    fs::write(art.join("metrics.json"), br#"{"f1": 0.91}"#).unwrap();
    fs::write(art.join("weights/w.bin"), vec![3u8; 4096]).unwrap();
    tmp
}

/// `mlbuild key generate` of `NAME.pem` and `NAME.pub`; returns the key id it printed.
fn generate_key(cwd: &Path, name: &str) -> String {
    let pem = format!("{name}.pem");
    let out = mlbuild(cwd, &["key", "generate", "--private-key", &pem]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("key id: "))
        .unwrap_or_else(|| panic!("no key id in {}", out.stdout))
        .to_owned()
}

fn model_signing_sign(cwd: &Path, private_key: &str) {
    let output = Command::new(venv::model_signing())
        .args(["sign", "key", "art", "--signature", "art/model.sig"])
        .args(["--private_key", private_key])
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn key_generate_writes_a_private_0600_key_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let out = mlbuild(
        tmp.path(),
        &[
            "key",
            "generate",
            "--private-key",
            "signer.pem",
            "--public-key",
            "keys.pub",
        ],
    );
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("`signer.pem`") && out.stdout.contains("`keys.pub`"));
    let mode = fs::metadata(tmp.path().join("signer.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let private = fs::read_to_string(tmp.path().join("signer.pem")).unwrap();
    let public = fs::read_to_string(tmp.path().join("keys.pub")).unwrap();
    assert!(private.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"));

    // Either file existing is a refusal, and nothing is written.
    let again = mlbuild(
        tmp.path(),
        &[
            "key",
            "generate",
            "--private-key",
            "signer.pem",
            "--public-key",
            "new.pub",
        ],
    );
    assert_eq!(again.code, 2);
    assert!(
        again.stderr.contains("`signer.pem` already exists"),
        "{}",
        again.stderr
    );
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    assert!(!tmp.path().join("new.pub").exists());
    let again = mlbuild(
        tmp.path(),
        &[
            "key",
            "generate",
            "--private-key",
            "other.pem",
            "--public-key",
            "keys.pub",
        ],
    );
    assert_eq!(again.code, 2);
    assert!(!tmp.path().join("other.pem").exists());
    assert_eq!(
        fs::read_to_string(tmp.path().join("signer.pem")).unwrap(),
        private
    );

    // --force replaces both, even a private key file someone made world-readable.
    fs::set_permissions(
        tmp.path().join("signer.pem"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let forced = mlbuild(
        tmp.path(),
        &[
            "--json",
            "key",
            "generate",
            "--private-key",
            "signer.pem",
            "--public-key",
            "keys.pub",
            "--force",
        ],
    );
    assert_eq!(forced.code, 0);
    let json: serde_json::Value = serde_json::from_str(&forced.stdout).unwrap();
    assert_eq!(json["key_id"].as_str().unwrap().len(), 64);
    assert_ne!(
        fs::read_to_string(tmp.path().join("signer.pem")).unwrap(),
        private
    );
    let mode = fs::metadata(tmp.path().join("signer.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn generated_keys_are_read_by_python_cryptography_and_openssl() {
    let tmp = tempfile::tempdir().unwrap();
    generate_key(tmp.path(), "key");
    // The default public key path is the private key's with `.pub`.
    assert!(tmp.path().join("key.pub").exists());
    let script = "import sys\n\
        from cryptography.hazmat.primitives import serialization as s\n\
        from cryptography.hazmat.primitives.asymmetric import ec\n\
        priv = s.load_pem_private_key(open(sys.argv[1] + '/key.pem', 'rb').read(), None)\n\
        pub = s.load_pem_public_key(open(sys.argv[1] + '/key.pub', 'rb').read())\n\
        assert isinstance(priv.curve, ec.SECP256R1), priv.curve\n\
        assert priv.public_key().public_numbers() == pub.public_numbers()\n\
        print('ok')\n";
    let output = Command::new(venv::python())
        .args(["-c", script])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // openssl, where installed, reads them too and derives the same public key.
    if let Ok(output) = Command::new("openssl")
        .args(["pkey", "-in", "key.pem", "-pubout"])
        .current_dir(tmp.path())
        .output()
    {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8(output.stdout).unwrap(),
            fs::read_to_string(tmp.path().join("key.pub")).unwrap()
        );
    }
}

#[test]
fn verify_accepts_a_model_signing_signature_and_names_every_bad_file() {
    let tmp = model_dir();
    let cwd = tmp.path();
    generate_key(cwd, "key");
    model_signing_sign(cwd, "key.pem");

    let ok = mlbuild(cwd, &["verify", "art", "--key", "key.pub"]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(
        ok.stdout
            .starts_with("verified `art`: 3 files signed by key "),
        "{}",
        ok.stdout
    );

    fs::write(cwd.join("art/model.json"), br#"{"coef": [9.9, -1.25]}"#).unwrap();
    fs::remove_file(cwd.join("art/metrics.json")).unwrap();
    fs::write(cwd.join("art/weights/extra.bin"), b"x").unwrap();
    let bad = mlbuild(cwd, &["verify", "art", "--key", "key.pub"]);
    assert_eq!(bad.code, 1);
    let lines: Vec<&str> = bad.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", bad.stdout);
    assert_eq!(
        lines[0],
        "`metrics.json`: missing (signed, but not in the directory)"
    );
    assert!(
        lines[1].starts_with("`model.json`: modified (sha256 signed "),
        "{}",
        lines[1]
    );
    assert_eq!(
        lines[2],
        "`weights/extra.bin`: extra file (not covered by the signature)"
    );
    assert!(bad
        .stderr
        .contains("`art` failed verification: 3 files are not as signed"));

    let json = mlbuild(cwd, &["--json", "verify", "art", "--key", "key.pub"]);
    assert_eq!(json.code, 1);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(value["verified"], false);
    let problems: Vec<(String, String)> = value["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["problem"].as_str().unwrap().into(),
                p["path"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        problems,
        [
            ("missing".into(), "metrics.json".into()),
            ("modified".into(), "model.json".into()),
            ("extra".into(), "weights/extra.bin".into())
        ]
    );
}

#[test]
fn verify_rejects_a_wrong_key_and_bad_input_with_distinct_codes() {
    let tmp = model_dir();
    let cwd = tmp.path();
    generate_key(cwd, "key");
    let other_id = generate_key(cwd, "other");
    model_signing_sign(cwd, "key.pem");

    // `model_signing` records no key id, only its hint (which no tool prints): the given
    // key is named by the id `key generate` printed, and the hint not at all.
    let wrong = mlbuild(cwd, &["verify", "art", "--key", "other.pub"]);
    assert_eq!(wrong.code, 1);
    assert_eq!(
        wrong.stdout,
        format!(
            "`art/model.sig`: signed with another key: not the given public key `{other_id}`\n"
        ),
    );

    let missing_key = mlbuild(cwd, &["verify", "art", "--key", "nope.pub"]);
    assert_eq!(missing_key.code, 2);
    assert!(
        missing_key.stderr.contains("`nope.pub`"),
        "{}",
        missing_key.stderr
    );

    // A private key is refused with the error and its help, and no diagnostic code.
    let private_as_public = mlbuild(cwd, &["verify", "art", "--key", "key.pem"]);
    assert_eq!(private_as_public.code, 2);
    insta::assert_snapshot!("verify_private_key", private_as_public.stderr);

    fs::create_dir(cwd.join("unsigned")).unwrap();
    let unsigned = mlbuild(cwd, &["verify", "unsigned", "--key", "key.pub"]);
    assert_eq!(unsigned.code, 2);
    assert!(
        unsigned.stderr.contains("not a signed artifact"),
        "{}",
        unsigned.stderr
    );

    let not_artifact = mlbuild(cwd, &["verify", "key.pub", "--key", "key.pub"]);
    assert_eq!(not_artifact.code, 2);
    assert!(
        not_artifact.stderr.contains("`key.pub` is not an artifact"),
        "{}",
        not_artifact.stderr
    );
}

/// Signs `art/` with mlbuild's signer and packs it as `art.tar.zst` beside it.
fn signed_archive(cwd: &Path) -> (PathBuf, PrivateKey) {
    let key = PrivateKey::generate();
    fs::write(cwd.join("key.pub"), key.public_key().to_pem()).unwrap();
    let art = cwd.join("art");
    sign_dir(&art, &key, &art.join(SIGNATURE_FILE)).unwrap();
    let archive = cwd.join("art.tar.zst");
    pack(&art, &archive);
    (archive, key)
}

fn pack(dir: &Path, archive: &Path) {
    let file = fs::File::create(archive).unwrap();
    mlbuild_rules::archive::write_tar_zst(dir, file, 0).unwrap();
}

#[test]
fn verify_checks_a_tar_zst_artifact() {
    let tmp = model_dir();
    let cwd = tmp.path();
    let (archive, key) = signed_archive(cwd);

    let ok = mlbuild(cwd, &["verify", "art.tar.zst", "--key", "key.pub"]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(ok
        .stdout
        .starts_with("verified `art.tar.zst`: 3 files signed by key "));
    assert!(ok.stdout.contains(&key.public_key().key_id()));

    // An archive cut off in a download.
    let bytes = fs::read(&archive).unwrap();
    fs::write(cwd.join("cut.tar.zst"), &bytes[..bytes.len() / 2]).unwrap();
    let cut = mlbuild(cwd, &["verify", "cut.tar.zst", "--key", "key.pub"]);
    assert_eq!(cut.code, 1);
    assert!(
        cut.stdout.starts_with("`cut.tar.zst`: archive is "),
        "{}",
        cut.stdout
    );

    // Repacked with a changed file but the original signature.
    fs::write(cwd.join("art/weights/w.bin"), vec![4u8; 4096]).unwrap();
    pack(&cwd.join("art"), &cwd.join("evil.tar.zst"));
    let evil = mlbuild(cwd, &["verify", "evil.tar.zst", "--key", "key.pub"]);
    assert_eq!(evil.code, 1);
    assert!(
        evil.stdout.starts_with("`weights/w.bin`: modified"),
        "{}",
        evil.stdout
    );
}

#[test]
fn verify_names_both_keys_by_id_and_the_signature_inside_an_archive() {
    let tmp = model_dir();
    let cwd = tmp.path();
    let signer_id = generate_key(cwd, "signer");
    let other_id = generate_key(cwd, "other");
    let signer = PrivateKey::load(&cwd.join("signer.pem")).unwrap();
    let art = cwd.join("art");
    sign_dir(&art, &signer, &art.join(SIGNATURE_FILE)).unwrap();
    pack(&art, &cwd.join("art.tar.zst"));

    // The signature is a member of the archive, not a path `art.tar.zst/model.sig`; both
    // keys are named by the ids `key generate` printed.
    let wrong = mlbuild(cwd, &["verify", "art.tar.zst", "--key", "other.pub"]);
    assert_eq!(wrong.code, 1);
    assert_eq!(
        wrong.stdout,
        format!(
            "`art.tar.zst` member `model.sig`: signed with another key: the signature names \
             key `{signer_id}`, the given public key is `{other_id}`\n"
        )
    );
    assert_eq!(wrong.stderr, "error: `art.tar.zst` failed verification\n");
    // A directory's signature is a file in it.
    let wrong = mlbuild(cwd, &["verify", "art", "--key", "other.pub"]);
    assert!(
        wrong
            .stdout
            .starts_with("`art/model.sig`: signed with another key: "),
        "{}",
        wrong.stdout
    );
}

#[test]
fn model_signing_verifies_an_artifact_mlbuild_verified() {
    // The same artifact passes both verifiers: the exact command from docs/signing.md.
    let tmp = model_dir();
    let cwd = tmp.path();
    signed_archive(cwd);
    assert_eq!(mlbuild(cwd, &["verify", "art", "--key", "key.pub"]).code, 0);
    let output = Command::new(venv::model_signing())
        .args([
            "verify",
            "key",
            "art",
            "--signature",
            "art/model.sig",
            "--public_key",
            "key.pub",
        ])
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
