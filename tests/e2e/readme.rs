//! The README's walkthroughs, run as printed: the commands are read from README.md
//! itself, so the README cannot drift from what works.
//!
//! Each command runs with `sh` in a copy of the repository's example, as a reader would
//! type it, with only what a reader's machine provides swapped for the test's: `mlbuild`
//! and `model_signing` are the built binary and the pinned tool (first on `PATH`), `~` is
//! a temporary home (so `~/fraud-signer.pem` is a temporary path) and the store is the
//! test's own.

// The same file as `signing::venv`; its file lock makes the modules share one venv.
#[allow(clippy::duplicate_mod)]
#[path = "../../crates/mlbuild-sign/tests/venv/mod.rs"]
mod venv;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{copy_tree, example_dir};

/// The README at the repository root.
fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The commands of the first ```sh block after the heading `heading`: one per line, a
/// line ending in `\` joined with the next (sh reads the comments itself).
fn commands_under(readme: &str, heading: &str) -> Vec<String> {
    let mut lines = readme
        .lines()
        .skip_while(|l| l.trim() != heading)
        .skip(1)
        .skip_while(|l| l.trim() != "```sh")
        .skip(1)
        .take_while(|l| l.trim() != "```");
    let mut commands = Vec::new();
    while let Some(line) = lines.next() {
        let mut command = line.to_string();
        while command.trim_end().ends_with('\\') {
            let next = lines.next().expect("a continued line continues");
            command = format!("{}\n{next}", command.trim_end());
        }
        if !command.trim().is_empty() {
            commands.push(command);
        }
    }
    commands
}

/// Every file below `dir` but `skip`, with its bytes.
fn files(dir: &Path, skip: &str) -> BTreeMap<PathBuf, Vec<u8>> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_entry(|e| e.file_name() != skip)
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(dir).unwrap().to_path_buf();
            (rel, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

#[test]
fn the_signed_artifact_walkthrough_runs_as_printed() {
    let heading = "### A signed, verifiable artifact";
    let commands = commands_under(&readme(), heading);
    let mentions = |what: &str| commands.iter().any(|c| c.contains(what));
    assert!(
        mentions("mlbuild key generate")
            && mentions("MLBUILD_SIGNING_KEY=")
            && mentions("model_signing verify key")
            && mentions("mlbuild audit //")
            && mentions("mlbuild audit --artifact"),
        "the walkthrough under `{heading}` is not the one this test knows: {commands:#?}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    copy_tree(&example_dir(), &repo.join("examples/fraud"));
    let home = tmp.path().join("home");
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_mlbuild"), bin.join("mlbuild")).unwrap();
    std::os::unix::fs::symlink(venv::model_signing(), bin.join("model_signing")).unwrap();
    let path = std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();

    let mut cwd = repo.clone();
    for command in &commands {
        // `cd` is the one command whose effect must outlast its shell.
        if let Some(dir) = command.trim().strip_prefix("cd ") {
            cwd = cwd.join(dir.trim());
            assert!(cwd.is_dir(), "`{command}`: no directory {}", cwd.display());
            continue;
        }
        // An audit must leave the build's outputs as they were (its own are in `.audit/`).
        let audits = command.trim_start().starts_with("mlbuild audit");
        let before = audits.then(|| files(&cwd.join("mlbuild-out"), ".audit"));
        let out = Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(&cwd)
            .env("PATH", &path)
            .env("HOME", &home)
            .env("MLBUILD_STORE", tmp.path().join("store"))
            .env("CI", "1")
            .env("NO_COLOR", "1")
            .env_remove("MLBUILD_SIGNING_KEY")
            .env_remove("XDG_CACHE_HOME")
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        eprintln!("$ {command}\n{stdout}{stderr}");
        assert!(
            out.status.success(),
            "`{command}` failed ({}):\n{stdout}{stderr}",
            out.status
        );
        if let Some(before) = before {
            assert!(
                files(&cwd.join("mlbuild-out"), ".audit") == before,
                "`{command}` changed what mlbuild-out holds"
            );
        }
    }
    assert!(
        home.join("fraud-signer.pem").is_file(),
        "the key went elsewhere"
    );
}
