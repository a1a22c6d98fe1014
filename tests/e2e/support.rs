//! A temporary workspace with its own store, and helpers to run `mlbuild` in it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub struct Ws {
    pub dir: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout and stderr with temp paths replaced, for snapshots.
    pub fn stderr_filtered(&self, ws: &Ws) -> String {
        ws.filter(&self.stderr)
    }
}

/// Counts and per-target statuses of one `build --json`.
#[derive(Debug)]
pub struct Built {
    pub code: i32,
    pub executed: u64,
    pub cached: u64,
    pub failed: u64,
    pub status: BTreeMap<String, String>,
    pub events: Vec<serde_json::Value>,
    /// Kept for failure messages (`{:#?}` of a `Built`).
    #[allow(dead_code)]
    pub stderr: String,
}

impl Built {
    /// The messages of the build's `warning` events.
    pub fn warnings(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter(|e| e["event"] == "warning")
            .filter_map(|e| e["message"].as_str())
            .collect()
    }
}

impl Ws {
    pub fn new() -> Ws {
        let ws = Ws {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        ws.write("MLBUILD.toml", "[workspace]\nname = \"test\"\n");
        ws
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("ws")
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    pub fn write(&self, rel: &str, content: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    pub fn command(&self, args: &[&str]) -> Command {
        self.command_with_store(&self.store(), args)
    }

    /// Like [`Ws::command`], with another store (e.g. one shared with another checkout).
    pub fn command_with_store(&self, store: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mlbuild"));
        cmd.arg("-C")
            .arg(self.root())
            .arg("--store")
            .arg(store)
            .args(args)
            .env("CI", "1")
            .env("NO_COLOR", "1")
            // Diagnostics wrap to COLUMNS when it is set: snapshots are taken unwrapped.
            .env_remove("COLUMNS")
            .env_remove("MLBUILD_STORE");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out: Output = self.command(args).output().expect("run mlbuild");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `mlbuild --json build ARGS`, parsed.
    pub fn build(&self, args: &[&str]) -> Built {
        let mut full = vec!["--json", "build"];
        full.extend_from_slice(args);
        parse_built(&self.command(&full).output().expect("run mlbuild"))
    }

    /// A fresh signing key pair in the test's temp dir (outside the workspace), made by
    /// `mlbuild key generate`: (private key, public key).
    pub fn key_pair(&self, name: &str) -> (PathBuf, PathBuf) {
        let private = self.dir.path().join(format!("{name}.pem"));
        let public = self.dir.path().join(format!("{name}.pub"));
        let run = self.run(&[
            "key",
            "generate",
            "--private-key",
            private.to_str().unwrap(),
            "--public-key",
            public.to_str().unwrap(),
        ]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        (private, public)
    }

    /// A build that must succeed.
    pub fn build_ok(&self, args: &[&str]) -> Built {
        let b = self.build(args);
        assert_eq!(b.code, 0, "build failed: {b:#?}");
        b
    }

    /// Replaces the temp directory with `[TMP]`, durations with `[TIME]` and dates with
    /// `[DATE]` so snapshots are stable.
    pub fn filter(&self, text: &str) -> String {
        let root = self.dir.path().to_string_lossy().into_owned();
        let canon = std::fs::canonicalize(self.dir.path())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| root.clone());
        mask_dates(&mask_durations(
            &text.replace(&canon, "[TMP]").replace(&root, "[TMP]"),
        ))
    }
}

/// The result of a `mlbuild --json build ...` process: its exit code, stderr and the
/// parsed event stream with per-target statuses and the summary counts.
pub fn parse_built(out: &Output) -> Built {
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event {l}: {e}")))
        .collect();
    let mut built = Built {
        code: out.status.code().unwrap_or(-1),
        executed: 0,
        cached: 0,
        failed: 0,
        status: BTreeMap::new(),
        events: Vec::new(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    for e in &events {
        match e["event"].as_str() {
            Some("target_finished") => {
                built.status.insert(
                    e["label"].as_str().unwrap().to_string(),
                    e["status"].as_str().unwrap().to_string(),
                );
            }
            Some("build_finished") => {
                built.executed = e["executed"].as_u64().unwrap();
                built.cached = e["cached"].as_u64().unwrap();
                built.failed = e["failed"].as_u64().unwrap();
            }
            _ => {}
        }
    }
    built.events = events;
    built
}

/// Copies the tree `from` to `to` (file modes kept), skipping build outputs and Python
/// caches, as a fresh checkout would have it.
pub fn copy_tree(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(from).unwrap();
        if rel.starts_with("mlbuild-out") || rel.iter().any(|c| c == "__pycache__") {
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

/// The shipped example workspace.
pub fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fraud")
}

/// A three-stage pipeline: data -> train -> report, with shell commands.
pub fn pipeline(ws: &Ws) {
    ws.write(
        "data/BUILD.toml",
        r#"
[target.raw]
kind = "data"
srcs = ["gen.sh"]
cmd = ["sh", "gen.sh", "{out}/raw.csv", "{params.rows}"]
outs = ["raw.csv"]
params = { rows = 3 }
"#,
    );
    ws.write(
        "data/gen.sh",
        "i=0; echo x > \"$1\"; while [ $i -lt $2 ]; do echo $i >> \"$1\"; i=$((i+1)); done\n",
    );
    ws.write(
        "models/BUILD.toml",
        r#"
[target.model]
kind = "train"
srcs = ["train.sh"]
deps = ["//data:raw"]
cmd = ["sh", "train.sh", "{deps.raw}/raw.csv", "{params.lr}", "{out}/model.txt"]
outs = ["model.txt"]
params = { lr = 0.05 }

[target.report]
kind = "eval"
deps = [":model"]
cmd = ["sh", "-c", "wc -l < {deps.model}/model.txt > {out}/report.txt"]
outs = ["report.txt"]
"#,
    );
    ws.write(
        "models/train.sh",
        "echo \"lr=$2\" > \"$3\"; cat \"$1\" >> \"$3\"\n",
    );
}

/// Replaces durations such as `1.03s` or `12ms` with `[TIME]`.
fn mask_durations(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let digits = |mut j: usize| {
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                j += 1;
            }
            j
        };
        let int_end = digits(i);
        let at_word_start = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        if at_word_start && int_end > start && text[int_end..].starts_with("ms") {
            out.push_str("[TIME]");
            i = int_end + 2;
            continue;
        }
        if at_word_start && int_end > start && int_end < bytes.len() && bytes[int_end] == b'.' {
            let frac_end = digits(int_end + 1);
            if frac_end > int_end + 1 && frac_end < bytes.len() && bytes[frac_end] == b's' {
                out.push_str("[TIME]");
                i = frac_end + 1;
                continue;
            }
        }
        let ch = text[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Replaces UTC dates such as `2026-11-22 08:03:26Z` or `2026-11-22T08:03:26` with
/// `[DATE]`.
fn mask_dates(text: &str) -> String {
    const SHAPE: &[u8] = b"0000-00-00 00:00:00";
    let is_date = |window: &[u8]| {
        window.len() == SHAPE.len()
            && window.iter().zip(SHAPE).all(|(&b, &s)| match s {
                b'0' => b.is_ascii_digit(),
                b' ' => b == b' ' || b == b'T',
                _ => b == s,
            })
    };
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let end = (i + SHAPE.len()).min(bytes.len());
        if is_date(&bytes[i..end]) {
            out.push_str("[DATE]");
            i = end + usize::from(bytes.get(end) == Some(&b'Z'));
            continue;
        }
        let ch = text[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// A child process killed when the test ends, however it ends.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `mlbuild cache serve` on a free loopback port; returns the guard and the base URL.
pub fn serve(dir: &Path, extra: &[&str]) -> (Killed, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mlbuild"))
        .args([
            "cache",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-size",
            "1G",
        ])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mlbuild cache serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (Killed(child), url)
}

/// Processes other than this one whose command line, working directory or open files
/// point into `dir`: whatever a test's builds (and their actions) left running. Zombies
/// are skipped: they are dead, only waiting for a parent to reap them.
pub fn processes_under(dir: &Path) -> Vec<(i32, String)> {
    let mut needles = vec![dir.to_path_buf()];
    if let Ok(canon) = std::fs::canonicalize(dir) {
        if canon != dir {
            needles.push(canon);
        }
    }
    let inside = |p: &Path| needles.iter().any(|n| p.starts_with(n));
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let proc_dir = entry.path();
        let stat = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
        // The state follows the parenthesised command name, which may contain spaces.
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        if matches!(state, None | Some('Z' | 'X')) {
            continue;
        }
        let cmdline = std::fs::read(proc_dir.join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let mut hit = needles
            .iter()
            .any(|n| cmdline.contains(&*n.to_string_lossy()));
        hit = hit || std::fs::read_link(proc_dir.join("cwd")).is_ok_and(|cwd| inside(&cwd));
        if !hit {
            if let Ok(fds) = std::fs::read_dir(proc_dir.join("fd")) {
                hit = fds
                    .flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| inside(&t)));
            }
        }
        if hit {
            found.push((pid, cmdline));
        }
    }
    found
}

/// How many sandbox init programs (`--mlbuild-sandbox-init`) are running with an open
/// file in `dir`: their stdout and stderr are the action's logs in the store. Cheaper
/// than [`processes_under`], to catch them as they start.
pub fn sandbox_inits_under(dir: &Path) -> usize {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    procs
        .flatten()
        .filter(|entry| {
            let path = entry.path();
            std::fs::read(path.join("cmdline"))
                .is_ok_and(|c| c.windows(22).any(|w| w == b"--mlbuild-sandbox-init"))
                && std::fs::read_link(path.join("fd/1")).is_ok_and(|t| t.starts_with(&dir))
        })
        .count()
}

/// A small deterministic generator for tests that pick random moments, seeded from
/// `MLBUILD_STRESS_SEED` or the clock (the seed is printed, to replay a failure).
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        let seed = std::env::var("MLBUILD_STRESS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("MLBUILD_STRESS_SEED={seed}");
        Rng(seed | 1)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// How many rounds a stress-style test runs: `MLBUILD_STRESS_ROUNDS`, else `default`
/// (sized for a 2-core CI machine; `benches/crash.sh` runs more).
pub fn stress_rounds(default: usize) -> usize {
    std::env::var("MLBUILD_STRESS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
