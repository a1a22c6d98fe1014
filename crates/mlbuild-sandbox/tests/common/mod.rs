//! Shared fixture for the sandbox integration tests: a temp tree shaped like a real
//! action (hidden workspace, exec root with an input and an output dir, tmp, logs).
//!
//! Tests run real processes in real namespaces, so they need a real directory layout;
//! the main type is [`Fixture`].

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mlbuild_sandbox::{Isolation, SandboxSpec};

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub ws: PathBuf,
    pub exec_root: PathBuf,
    pub out: PathBuf,
    pub tmp: PathBuf,
    pub logs: PathBuf,
}

impl Fixture {
    /// A tree under the target dir (not under /tmp, which the sandbox replaces).
    pub fn new() -> Fixture {
        Fixture::in_dir(Path::new(env!("CARGO_TARGET_TMPDIR")))
    }

    pub fn in_dir(parent: &Path) -> Fixture {
        std::fs::create_dir_all(parent).unwrap();
        let dir = tempfile::Builder::new()
            .prefix("sandbox-test")
            .tempdir_in(parent)
            .unwrap();
        let root = dir.path().canonicalize().unwrap();
        let ws = root.join("ws");
        let exec_root = ws.join(".mlbuild/sandbox/1/exec");
        let out = exec_root.join("out");
        let tmp = ws.join(".mlbuild/sandbox/1/tmp");
        let logs = root.join("logs");
        for d in [&ws, &exec_root, &out, &tmp, &logs] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(ws.join("secret.txt"), "workspace secret").unwrap();
        std::fs::write(exec_root.join("input.txt"), "input data").unwrap();
        Fixture {
            _dir: dir,
            root,
            ws,
            exec_root,
            out,
            tmp,
            logs,
        }
    }

    /// A spec running `/bin/sh -c script` in the exec root, with the fixture's root
    /// exposed but the workspace hidden (so hiding is really exercised).
    pub fn sh(&self, script: &str) -> SandboxSpec {
        self.spec(vec!["/bin/sh".into(), "-c".into(), script.into()])
    }

    pub fn spec(&self, argv: Vec<String>) -> SandboxSpec {
        let env: BTreeMap<String, String> = [
            ("PATH", "/usr/bin:/bin"),
            ("HOME", "/nonexistent"),
            ("TZ", "UTC"),
            ("LC_ALL", "C.UTF-8"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        SandboxSpec {
            argv,
            cwd: self.exec_root.clone(),
            env,
            exec_root: self.exec_root.clone(),
            writable: vec![self.out.clone()],
            tmp_dir: self.tmp.clone(),
            expose_readonly: vec![self.root.clone()],
            binds: vec![],
            hide: vec![self.ws.clone(), PathBuf::from("/root")],
            network: false,
            timeout: Some(Duration::from_secs(30)),
            stdout: self.logs.join("stdout"),
            stderr: self.logs.join("stderr"),
        }
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.logs.join("stdout")).unwrap()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.logs.join("stderr")).unwrap()
    }
}

/// Point the library at this crate's init binary; true if namespaces work here.
pub fn namespaces_available() -> bool {
    mlbuild_sandbox::set_init_program(env!("CARGO_BIN_EXE_mlbuild-sandbox-test-init"));
    match mlbuild_sandbox::probe() {
        Isolation::Namespaces => true,
        Isolation::Plain => {
            eprintln!(
                "skipping: namespace sandbox unavailable here: {}",
                mlbuild_sandbox::probe_failure().unwrap_or("unknown reason")
            );
            false
        }
    }
}
