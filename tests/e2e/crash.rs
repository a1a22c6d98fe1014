//! Builds that overlap or die: concurrent builds in one workspace, `kill -9` of a build
//! while its actions start, and the scratch space such a build leaves in the store.
//!
//! Sized for a 2-core CI machine (a few seconds each); `MLBUILD_STRESS_ROUNDS` runs more
//! rounds, and `benches/crash.sh` runs them all longer and collects their tallies.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    parse_built, processes_under, sandbox_inits_under, stress_rounds, Built, Rng, Ws,
};

/// Output files of each `mid` target.
const MID_FILES: usize = 50;

/// Distinct actions in [`overlapping_workspace`]: base, eight mids, top.
const OVERLAPPING_ACTIONS: u64 = 10;

/// `base` -> `mid0`..`mid7` ([`MID_FILES`] output files each) -> `top`, all fed by `src.txt`.
fn overlapping_workspace(ws: &Ws) {
    let mut build = String::from(
        r#"
[target.base]
srcs = ["src.txt"]
cmd = ["sh", "-c", "cat src.txt > {out}/base.txt"]
outs = ["base.txt"]
"#,
    );
    for m in 0..8 {
        build.push_str(&format!(
            r#"
[target.mid{m}]
deps = [":base"]
cmd = ["sh", "-c", "mkdir {{out}}/d; i=0; while [ $i -lt {MID_FILES} ]; do (cat {{deps.base}}/base.txt; echo {m}.$i) > {{out}}/d/$i.txt; i=$((i+1)); done"]
outs = ["d/"]
"#
        ));
    }
    let mids: Vec<String> = (0..8).map(|m| format!("\":mid{m}\"")).collect();
    build.push_str(&format!(
        r#"
[target.top]
deps = [{deps}]
cmd = ["sh", "-c", "cat {{deps.mid0}}/d/0.txt {{deps.mid7}}/d/{last}.txt > {{out}}/top.txt"]
outs = ["top.txt"]
"#,
        deps = mids.join(", "),
        last = MID_FILES - 1,
    ));
    ws.write("BUILD.toml", &build);
}

/// Four builds at once in one checkout, with overlapping targets, round after round; the
/// source flips between two contents, so from the third round on every target is a hit
/// that all four builds link into `mlbuild-out` at the same moment (issue 11, item 1).
#[test]
fn concurrent_builds_in_one_workspace_all_succeed() {
    let ws = Ws::new();
    overlapping_workspace(&ws);
    let sets: [&[&str]; 4] = [
        &["//:top"],
        &["//:mid0", "//:mid1", "//:mid2", "//:mid3"],
        &["//:mid2", "//:mid3", "//:mid4", "//:mid5", "//:base"],
        &["//:mid4", "//:mid5", "//:mid6", "//:mid7", "//:top"],
    ];
    let rounds = stress_rounds(4);
    let mut failures = Vec::new();
    for round in 0..rounds {
        let content = if round % 2 == 0 { "A\n" } else { "B\n" };
        ws.write("src.txt", content);
        let children: Vec<_> = sets
            .iter()
            .map(|targets| {
                let mut args = vec!["--json", "build"];
                args.extend_from_slice(targets);
                ws.command(&args)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let built: Vec<Built> = children
            .into_iter()
            .map(|c| parse_built(&c.wait_with_output().unwrap()))
            .collect();
        let failed: Vec<String> = built
            .iter()
            .filter(|b| b.code != 0)
            .map(|b| format!("round {round}: {}{}", failure_messages(b), b.stderr))
            .collect();
        if !failed.is_empty() {
            failures.extend(failed);
            continue;
        }
        // Each action still runs once, whichever build gets to it first.
        let executed: u64 = built.iter().map(|b| b.executed).sum();
        let expected = if round < 2 { OVERLAPPING_ACTIONS } else { 0 };
        assert_eq!(executed, expected, "round {round}: {built:#?}");
        let last = ws.read(&format!("mlbuild-out/_root/mid7/d/{}.txt", MID_FILES - 1));
        assert_eq!(
            last,
            format!("{content}7.{}\n", MID_FILES - 1),
            "round {round}"
        );
    }
    eprintln!(
        "{} of {} concurrent builds failed",
        failures.len(),
        rounds * sets.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The last round's outputs are complete, and nothing stray is left next to them.
    let again = ws.build_ok(&["//..."]);
    assert_eq!(again.executed, 0);
    let mid = ws.path("mlbuild-out/_root/mid3/d");
    assert_eq!(std::fs::read_dir(mid).unwrap().count(), MID_FILES);
}

/// The messages of a build's failed targets, one per line.
fn failure_messages(b: &Built) -> String {
    b.events
        .iter()
        .filter(|e| e["status"] == "failed")
        .map(|e| format!("{}: {}", e["label"], e["message"].as_str().unwrap_or("")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Actions started at once by [`slow_workspace`].
const SLOW_TARGETS: usize = 24;

/// `k:t0`..`k:t23`, independent; each sleeps as many seconds as `k/delay.txt` says. The
/// declared CPU capacity lets all of them start at once, even on two cores.
fn slow_workspace(ws: &Ws, delay: u32) {
    ws.write(
        "MLBUILD.toml",
        "[workspace]\nname = \"test\"\n\n[resources]\ncpu = 64\n",
    );
    let mut build = String::new();
    for i in 0..SLOW_TARGETS {
        build.push_str(&format!(
            "[target.t{i}]\nsrcs = [\"delay.txt\"]\n\
             cmd = [\"sh\", \"-c\", \"sleep $(cat delay.txt); echo {i} > {{out}}/o.txt\"]\n\
             outs = [\"o.txt\"]\n\n"
        ));
    }
    ws.write("k/BUILD.toml", &build);
    ws.write("k/delay.txt", &format!("{delay}\n"));
}

fn build_cmd(ws: &Ws, sandbox: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = ws.command(args);
    match sandbox {
        Some(mode) => cmd.env("MLBUILD_SANDBOX", mode),
        None => cmd.env_remove("MLBUILD_SANDBOX"),
    };
    cmd
}

/// Waits up to `patience` for every process pointing into the test's directory to be
/// gone; returns the survivors (after killing them, so they do not outlive the test).
fn survivors(ws: &Ws, patience: Duration) -> Vec<(i32, String)> {
    let deadline = Instant::now() + patience;
    loop {
        let left = processes_under(ws.dir.path());
        if left.is_empty() {
            return left;
        }
        if Instant::now() >= deadline {
            for (pid, _) in &left {
                // SAFETY: plain syscall; the process may be gone already (ESRCH).
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Everything directly in the store's `tmp/` and one level below it.
fn scratch_entries(store: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(store.join("tmp"))
        .into_iter()
        .flatten()
        .flatten()
    {
        found.push(entry.path());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(
                std::fs::read_dir(entry.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
        }
    }
    found
}

fn exec_dirs(store: &Path) -> Vec<PathBuf> {
    scratch_entries(store)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("exec-"))
        })
        .collect()
}

/// `kill -9` of a build at random moments while its 24 actions start; after each kill
/// nothing it started may still run, and afterwards the next build succeeds, fsck is
/// clean and the store's scratch space is empty again (issue 11, items 2 and 3).
fn kill_loop(sandbox: Option<&str>, kills: usize) {
    let ws = Ws::new();
    slow_workspace(&ws, 30);
    let mut rng = Rng::new();
    let jobs = SLOW_TARGETS.to_string();
    let mut leaks = Vec::new();
    let mut cleanup = Duration::ZERO;
    let (mut dead, mut dead_dirs): (Vec<PathBuf>, usize) = (Vec::new(), 0);
    let mut unreclaimed = Vec::new();
    for round in 0..kills {
        let mut child = build_cmd(&ws, sandbox, &["--json", "build", "//...", "--jobs", &jobs])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill once the k-th action has been announced (its sandbox is being set up),
        // plus up to 20 ms; or, two times in three with namespaces, the moment the k-th
        // sandbox init program has been executed, when it is still starting up.
        let k = rng.below(SLOW_TARGETS as u64) + 1;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let trigger = if sandbox.is_none() && round % 3 != 0 {
            let deadline = Instant::now() + Duration::from_secs(20);
            while sandbox_inits_under(ws.dir.path()) < k as usize && Instant::now() < deadline {}
            format!("{k} sandbox inits started")
        } else {
            let mut started = 0;
            while started < k {
                match lines.next() {
                    Some(Ok(line)) if line.contains("\"event\":\"action_started\"") => started += 1,
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            let ms = rng.below(20);
            std::thread::sleep(Duration::from_millis(ms));
            format!("{k} actions started, +{ms} ms")
        };
        child.kill().unwrap();
        child.wait().unwrap();
        let t0 = Instant::now();
        let left = survivors(&ws, Duration::from_secs(3));
        cleanup = cleanup.max(t0.elapsed());
        if !left.is_empty() {
            leaks.push(format!(
                "kill {round} ({trigger}): {} processes survived: {left:?}",
                left.len()
            ));
        }
        // This build removed the scratch of the one killed before, when it started.
        let kept: Vec<&PathBuf> = dead.iter().filter(|d| d.exists()).collect();
        if !kept.is_empty() {
            unreclaimed.push(format!("kill {round}: {} dead exec dirs kept", kept.len()));
        }
        dead = exec_dirs(&ws.store());
        dead_dirs += dead.len();
    }
    let mode = sandbox.unwrap_or("auto");
    eprintln!(
        "sandbox {mode}: {} of {kills} kills left processes running; slowest clean-up {cleanup:?}",
        leaks.len()
    );
    eprintln!(
        "the killed builds left {dead_dirs} exec dirs; {} of {} next builds kept some",
        unreclaimed.len(),
        kills - 1
    );
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
    assert!(unreclaimed.is_empty(), "{}", unreclaimed.join("\n"));
    assert!(dead_dirs > 0, "the kills left no scratch to reclaim");

    // The next build succeeds, and leaves the store's scratch space empty.
    slow_workspace(&ws, 0);
    let out = build_cmd(&ws, sandbox, &["--json", "build", "//...", "--jobs", &jobs])
        .output()
        .unwrap();
    let b = parse_built(&out);
    assert_eq!(b.code, 0, "{b:#?}");
    assert_eq!(b.executed, SLOW_TARGETS as u64, "{b:#?}");
    assert_eq!(ws.read("mlbuild-out/k/t23/o.txt"), "23\n");
    assert_eq!(scratch_entries(&ws.store()), Vec::<PathBuf>::new());
    let fsck = ws.run(&["fsck"]);
    assert_eq!(fsck.code, 0, "{}{}", fsck.stdout, fsck.stderr);
    assert!(
        fsck.stdout.contains(" 0 corrupt, 0 action entries removed"),
        "{}",
        fsck.stdout
    );
    let out = build_cmd(&ws, sandbox, &["--json", "build", "//..."])
        .output()
        .unwrap();
    let again = parse_built(&out);
    assert_eq!((again.code, again.executed), (0, 0), "{again:#?}");
    assert!(survivors(&ws, Duration::from_secs(3)).is_empty());
}

#[test]
fn killed_builds_leave_no_process_and_no_scratch() {
    kill_loop(None, stress_rounds(6));
}

#[test]
fn killed_plain_builds_leave_no_process_and_no_scratch() {
    kill_loop(Some("plain"), stress_rounds(3));
}

/// A build that is killed leaves scratch behind (here with a read-only directory in it);
/// the next build, `gc` and `fsck` remove it, but never the scratch of a build that is
/// still running, even one from another checkout sharing the store (issue 11, item 3).
#[test]
fn dead_builds_scratch_is_reclaimed_and_a_live_ones_is_kept() {
    let ws = Ws::new();
    ws.write(
        "BUILD.toml",
        r#"
[target.ro]
cmd = ["sh", "-c", "mkdir {out}/d && echo x > {out}/d/f && chmod 500 {out}/d && sleep 30"]
outs = ["d/"]

[target.quick]
cmd = ["sh", "-c", "echo q > {out}/q.txt"]
outs = ["q.txt"]
"#,
    );
    let store = ws.store();
    let kill_while_running = |target: &str| {
        let before = exec_dirs(&store);
        let mut child = ws
            .command(&["build", target])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let dir = loop {
            let ready = exec_dirs(&store)
                .into_iter()
                .find(|d| !before.contains(d) && d.join("root/mlbuild-out/_root/ro/d/f").exists());
            if let Some(dir) = ready {
                break dir;
            }
            assert!(Instant::now() < deadline, "the action never started");
            std::thread::sleep(Duration::from_millis(20));
        };
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(survivors(&ws, Duration::from_secs(3)).is_empty());
        dir
    };

    let dead = kill_while_running("//:ro");
    assert!(dead.exists());

    // A build in another checkout on the same store is running (in plain mode, so that
    // its action can wait for a file this test creates once it has checked)...
    let other = Ws::new();
    let release = Release(other.dir.path().join("release"));
    other.write(
        "BUILD.toml",
        &format!(
            "[target.slow]\ncmd = [\"sh\", \"-c\", \"while [ ! -e {} ]; do sleep 0.05; done; \
             echo slow > {{out}}/o.txt\"]\nouts = [\"o.txt\"]\n",
            release.0.display()
        ),
    );
    let before = exec_dirs(&store);
    let live = other
        .command_with_store(&store, &["--json", "build", "//:slow"])
        .env("MLBUILD_SANDBOX", "plain")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let live_dir = loop {
        if let Some(dir) = exec_dirs(&store).into_iter().find(|d| !before.contains(d)) {
            break dir;
        }
        assert!(Instant::now() < deadline, "the live action never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    // ...while the next build here removes the dead one's scratch, and only that.
    ws.build_ok(&["//:quick"]);
    assert!(!dead.exists(), "dead scratch `{}` kept", dead.display());
    assert!(
        live_dir.exists(),
        "live scratch `{}` removed",
        live_dir.display()
    );
    drop(release);
    let live = parse_built(&live.wait_with_output().unwrap());
    assert_eq!((live.code, live.executed), (0, 1), "{live:#?}");
    assert_eq!(other.read("mlbuild-out/_root/slow/o.txt"), "slow\n");
    assert_eq!(scratch_entries(&store), Vec::<PathBuf>::new());

    // gc and fsck reclaim too.
    for command in [&["gc", "--max-age", "30d"][..], &["fsck"][..]] {
        let dead = kill_while_running("//:ro");
        let run = ws.run(command);
        assert_eq!(run.code, 0, "{command:?}: {}{}", run.stdout, run.stderr);
        assert!(!dead.exists(), "{command:?} kept `{}`", dead.display());
        assert_eq!(
            scratch_entries(&store),
            Vec::<PathBuf>::new(),
            "{command:?}"
        );
    }
}

/// A file an action waits for, created when dropped (also when a test fails first).
struct Release(PathBuf);

impl Drop for Release {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, "");
    }
}

/// An action may leave read-only directories among its outputs; the scratch it ran in is
/// still removed when the build ends.
#[test]
fn read_only_output_dirs_do_not_leak_scratch() {
    let ws = Ws::new();
    ws.write(
        "BUILD.toml",
        r#"
[target.ro]
cmd = ["sh", "-c", "mkdir -p {out}/d/e && echo x > {out}/d/e/f && chmod 500 {out}/d/e {out}/d"]
outs = ["d/"]
"#,
    );
    let b = ws.build_ok(&["//:ro"]);
    assert_eq!(b.executed, 1);
    assert_eq!(ws.read("mlbuild-out/_root/ro/d/e/f"), "x\n");
    assert_eq!(scratch_entries(&ws.store()), Vec::<PathBuf>::new());
}
