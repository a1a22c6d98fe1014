//! A Python virtual environment holding the real OpenSSF `model_signing` tool, for
//! interoperability tests.
//!
//! The environment lives at `$MLBUILD_TEST_VENV` or `<repo>/target/py-venv`. `.ci/run`
//! creates it up front; when it is missing or was made from other pins, the first test that
//! needs it creates it (`python3 -m venv` + `pip install -r requirements.txt`) under a file
//! lock, so parallel tests and test binaries build it once. Tests fail, rather than skip,
//! when it cannot be made: an interop test that silently passes proves nothing.
//!
//! Shared by `crates/mlbuild-sign/tests/` and `tests/e2e/signing.rs` through `#[path]`.

#![allow(dead_code)]

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The pinned packages; the venv records the copy it was made from.
const REQUIREMENTS: &str = include_str!("requirements.txt");
const MARKER: &str = ".mlbuild-requirements.txt";

/// The venv directory, created and populated on first use.
pub fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let dir = match std::env::var_os("MLBUILD_TEST_VENV") {
            Some(dir) => PathBuf::from(dir),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/py-venv"),
        };
        ensure(&dir);
        dir
    })
}

/// The `model_signing` command-line tool of the venv.
pub fn model_signing() -> PathBuf {
    venv().join("bin/model_signing")
}

/// The venv's Python (with `cryptography`, a dependency of `model_signing`).
pub fn python() -> PathBuf {
    venv().join("bin/python")
}

fn is_ready(dir: &Path) -> bool {
    dir.join("bin/model_signing").exists()
        && fs::read_to_string(dir.join(MARKER)).is_ok_and(|m| m == REQUIREMENTS)
}

fn ensure(dir: &Path) {
    if is_ready(dir) {
        return;
    }
    let parent = dir.parent().expect("the venv path has a parent");
    fs::create_dir_all(parent).unwrap();
    let lock_path = dir.with_extension("lock");
    let lock = fs::File::create(&lock_path)
        .unwrap_or_else(|e| panic!("cannot create `{}`: {e}", lock_path.display()));
    // SAFETY: flock on a descriptor we own; released when `lock` is dropped.
    let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "cannot lock `{}`", lock_path.display());
    if is_ready(dir) {
        return; // another process built it while we waited
    }
    if dir.exists() {
        fs::remove_dir_all(dir).unwrap();
    }
    let requirements = parent.join(".mlbuild-py-venv-requirements.txt");
    fs::write(&requirements, REQUIREMENTS).unwrap();
    run(Command::new("python3").arg("-m").arg("venv").arg(dir));
    run(Command::new(dir.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements));
    fs::write(dir.join(MARKER), REQUIREMENTS).unwrap();
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed while creating the model_signing test venv \
         (set MLBUILD_TEST_VENV to a venv with the packages of \
         crates/mlbuild-sign/tests/venv/requirements.txt):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
