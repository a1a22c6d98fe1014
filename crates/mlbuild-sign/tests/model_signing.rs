//! Interoperability with the real OpenSSF `model_signing` tool (pinned in
//! `tests/venv/requirements.txt`): it must verify what we sign, and we must verify what it
//! signs, with keys that openssl and Python `cryptography` read.

mod venv;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mlbuild_sign::model::{sign_dir, verify_dir, FileProblem, VerifyError, SIGNATURE_FILE};
use mlbuild_sign::{PrivateKey, PublicKey, SignError};

/// A temp dir holding `art/` (a small model) and a key pair `key.pem`/`key.pub` beside it.
struct Fixture {
    tmp: tempfile::TempDir,
    key: PrivateKey,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let art = tmp.path().join("art");
        fs::create_dir_all(art.join("weights")).unwrap();
        fs::write(
            art.join("model.json"),
            br#"{"coef": [0.5, -1.25], "bias": 0.1}"#,
        )
        .unwrap();
        fs::write(art.join("metrics.json"), br#"{"f1": 0.91}"#).unwrap();
        fs::write(art.join("weights/layer-0.bin"), vec![7u8; 70_000]).unwrap();
        fs::write(art.join("weights/layer.1.bin"), b"\x00\xff").unwrap();
        let key = PrivateKey::generate();
        fs::write(tmp.path().join("key.pem"), key.to_pem()).unwrap();
        fs::write(tmp.path().join("key.pub"), key.public_key().to_pem()).unwrap();
        Fixture { tmp, key }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn art(&self) -> PathBuf {
        self.path("art")
    }

    fn sig(&self) -> PathBuf {
        self.art().join(SIGNATURE_FILE)
    }

    /// Runs `model_signing ARGS` in `cwd`.
    fn tool(&self, cwd: &Path, args: &[&str]) -> Output {
        let output = Command::new(venv::model_signing())
            .args(args)
            .current_dir(cwd)
            .output()
            .expect("run model_signing");
        eprintln!(
            "model_signing {args:?}: {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn model_signing_verifies_our_signature() {
    let f = Fixture::new();
    sign_dir(&f.art(), &f.key, &f.sig()).unwrap();

    // The command from the docs, run next to the artifact.
    let out = f.tool(
        f.tmp.path(),
        &[
            "verify",
            "key",
            "art",
            "--signature",
            "art/model.sig",
            "--public_key",
            "key.pub",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Verification succeeded"),
        "{}",
        text(&out)
    );

    // And literally `model_signing verify key <dir> --signature model.sig --public_key
    // key.pub`, run inside the artifact (the signature path is relative to the working
    // directory; the key is kept outside so it is not an extra file).
    let art = f.art();
    let key_pub = f.path("key.pub");
    let out = f.tool(
        &art,
        &[
            "verify",
            "key",
            art.to_str().unwrap(),
            "--signature",
            "model.sig",
            "--public_key",
            key_pub.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn model_signing_rejects_our_signature_after_tampering() {
    let f = Fixture::new();
    sign_dir(&f.art(), &f.key, &f.sig()).unwrap();
    fs::write(f.art().join("weights/layer.1.bin"), b"\x00\xfe").unwrap();
    let out = f.tool(
        f.tmp.path(),
        &[
            "verify",
            "key",
            "art",
            "--signature",
            "art/model.sig",
            "--public_key",
            "key.pub",
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("weights/layer.1.bin"), "{}", text(&out));
}

#[test]
fn model_signing_rejects_our_signature_with_another_key() {
    let f = Fixture::new();
    sign_dir(&f.art(), &f.key, &f.sig()).unwrap();
    fs::write(
        f.path("other.pub"),
        PrivateKey::generate().public_key().to_pem(),
    )
    .unwrap();
    let out = f.tool(
        f.tmp.path(),
        &[
            "verify",
            "key",
            "art",
            "--signature",
            "art/model.sig",
            "--public_key",
            "other.pub",
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
}

/// Signs `art/` with the real tool and the given private key file.
fn tool_sign(f: &Fixture, private_key: &str) {
    let out = f.tool(
        f.tmp.path(),
        &[
            "sign",
            "key",
            "art",
            "--signature",
            "art/model.sig",
            "--private_key",
            private_key,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn we_verify_what_model_signing_signed() {
    let f = Fixture::new();
    // Our PKCS#8 key, read by the tool.
    tool_sign(&f, "key.pem");
    let verified = verify_dir(&f.art(), &f.sig(), &f.key.public_key()).unwrap();
    let names: Vec<&str> = verified.files.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "metrics.json",
            "model.json",
            "weights/layer-0.bin",
            "weights/layer.1.bin"
        ]
    );
    assert_eq!(verified.name, "art");
}

#[test]
fn we_sign_exactly_what_model_signing_signs() {
    // Same files, same ordering, same digests: only the JSON layout differs.
    let f = Fixture::new();
    tool_sign(&f, "key.pem");
    let theirs = verify_dir(&f.art(), &f.sig(), &f.key.public_key()).unwrap();
    sign_dir(&f.art(), &f.key, &f.sig()).unwrap();
    let ours = verify_dir(&f.art(), &f.sig(), &f.key.public_key()).unwrap();
    assert_eq!(ours.files, theirs.files);
    let mut their_ignored = theirs.ignored_paths.clone();
    their_ignored.sort();
    assert_eq!(ours.ignored_paths, their_ignored);
}

#[test]
fn we_verify_a_signature_made_with_an_openssl_sec1_key() {
    let f = Fixture::new();
    // What `openssl ecparam -genkey` writes: a SEC1 `EC PRIVATE KEY`, converted by Python
    // `cryptography` so the test does not need openssl.
    let script = "import sys\n\
        from cryptography.hazmat.primitives import serialization as s\n\
        from cryptography.hazmat.primitives.asymmetric import ec\n\
        k = ec.generate_private_key(ec.SECP256R1())\n\
        open(sys.argv[1], 'wb').write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.TraditionalOpenSSL, s.NoEncryption()))\n\
        open(sys.argv[2], 'wb').write(k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))\n";
    let status = Command::new(venv::python())
        .args(["-c", script])
        .arg(f.path("sec1.pem"))
        .arg(f.path("sec1.pub"))
        .status()
        .unwrap();
    assert!(status.success());
    assert!(fs::read_to_string(f.path("sec1.pem"))
        .unwrap()
        .starts_with("-----BEGIN EC PRIVATE KEY-----"));
    tool_sign(&f, "sec1.pem");
    let public = PublicKey::load(&f.path("sec1.pub")).unwrap();
    verify_dir(&f.art(), &f.sig(), &public).unwrap();
    // The same key, loaded by us from its SEC1 form, is the same signer.
    assert_eq!(
        PrivateKey::load(&f.path("sec1.pem")).unwrap().public_key(),
        public
    );
}

#[test]
fn tampered_missing_and_extra_files_in_a_tool_signed_dir_are_each_named() {
    let f = Fixture::new();
    tool_sign(&f, "key.pem");
    fs::write(
        f.art().join("model.json"),
        br#"{"coef": [9.0, -1.25], "bias": 0.1}"#,
    )
    .unwrap();
    fs::remove_file(f.art().join("metrics.json")).unwrap();
    fs::write(f.art().join("weights/backdoor.bin"), b"!").unwrap();
    let err = verify_dir(&f.art(), &f.sig(), &f.key.public_key()).unwrap_err();
    let VerifyError::Files { problems, .. } = err else {
        panic!("expected file problems, got {err}")
    };
    assert!(
        matches!(&problems[0], FileProblem::Missing { path } if path == "metrics.json"),
        "{problems:?}"
    );
    assert!(
        matches!(&problems[1], FileProblem::Modified { path, .. } if path == "model.json"),
        "{problems:?}"
    );
    assert!(
        matches!(&problems[2], FileProblem::Extra { path } if path == "weights/backdoor.bin"),
        "{problems:?}"
    );
    assert_eq!(problems.len(), 3);
}

#[test]
fn wrong_key_is_rejected_for_a_tool_signed_dir() {
    let f = Fixture::new();
    tool_sign(&f, "key.pem");
    let err = verify_dir(&f.art(), &f.sig(), &PrivateKey::generate().public_key()).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Signature {
                source: SignError::KeyMismatch { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn python_cryptography_reads_our_keys_and_checks_our_signatures_both_ways() {
    let f = Fixture::new();
    let message = b"mlbuild interop message";
    fs::write(f.path("message"), message).unwrap();
    fs::write(f.path("ours.sig"), f.key.sign(message)).unwrap();
    let script = "import sys\n\
        from cryptography.hazmat.primitives import hashes, serialization as s\n\
        from cryptography.hazmat.primitives.asymmetric import ec\n\
        d = sys.argv[1]\n\
        priv = s.load_pem_private_key(open(d + '/key.pem', 'rb').read(), None)\n\
        pub = s.load_pem_public_key(open(d + '/key.pub', 'rb').read())\n\
        assert priv.public_key().public_numbers() == pub.public_numbers()\n\
        msg = open(d + '/message', 'rb').read()\n\
        pub.verify(open(d + '/ours.sig', 'rb').read(), msg, ec.ECDSA(hashes.SHA256()))\n\
        open(d + '/theirs.sig', 'wb').write(priv.sign(msg, ec.ECDSA(hashes.SHA256())))\n\
        open(d + '/theirs.pem', 'wb').write(pub.public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))\n";
    let out = Command::new(venv::python())
        .args(["-c", script])
        .arg(f.tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let theirs = fs::read(f.path("theirs.sig")).unwrap();
    f.key.public_key().verify(message, &theirs).unwrap();
    // cryptography writes the public key byte-for-byte as we do, so the key hint in
    // `model.sig` (a hash of that PEM text) agrees.
    assert_eq!(
        fs::read_to_string(f.path("theirs.pem")).unwrap(),
        f.key.public_key().to_pem()
    );
}
