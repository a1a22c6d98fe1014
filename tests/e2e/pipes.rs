//! Output into pipes whose reader goes away, as in `mlbuild graph | head -1`: mlbuild
//! ends quietly, killed by SIGPIPE as `ls` would be, with no panic.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use crate::support::Ws;

/// More output than a pipe holds (64 KiB) plus what the test reads (8 KiB), so that a
/// write surely fails: 3,000 chained targets for `graph`, `status` and `query` (90 KiB
/// for the shortest, `query`), 3,000 params for `params show` and 100,000 lines of log.
fn big_workspace() -> Ws {
    let ws = Ws::new();
    let mut build = String::new();
    for i in 0..3000 {
        build.push_str(&format!(
            "[target.target_number_{i:04}]\ncmd = [\"true\"]\nparams = {{ value = {i} }}\n"
        ));
        if i > 0 {
            build.push_str(&format!("deps = [\":target_number_{:04}\"]\n", i - 1));
        }
    }
    build.push_str("[target.chatty]\ncmd = [\"seq\", \"100000\"]\n");
    build.push_str("[target.wide]\ncmd = [\"true\"]\n[target.wide.params]\n");
    for i in 0..3000 {
        build.push_str(&format!("key_{i:04} = \"value number {i}\"\n"));
    }
    ws.write("p/BUILD.toml", &build);
    ws
}

/// Runs `args` with stdout in a pipe, reads one line and closes the pipe; returns the
/// line, the exit status and stderr.
fn first_line_then_close(ws: &Ws, args: &[&str]) -> (String, std::process::ExitStatus, String) {
    let mut child = ws
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mlbuild");
    let mut line = String::new();
    {
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        reader.read_line(&mut line).unwrap();
    } // the read end closes here
    let out = child.wait_with_output().unwrap();
    (
        line,
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_quiet_sigpipe(ws: &Ws, args: &[&str], first: &str) {
    let (line, status, stderr) = first_line_then_close(ws, args);
    assert_eq!(line.trim_end(), first, "{args:?}");
    assert_eq!(
        status.signal(),
        Some(libc::SIGPIPE),
        "{args:?}: {status:?}, stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
}

#[test]
fn a_closed_stdout_ends_mlbuild_quietly() {
    let ws = big_workspace();
    ws.build_ok(&["//p:wide", "//p:chatty"]);
    assert_quiet_sigpipe(&ws, &["graph"], "digraph mlbuild {");
    assert_quiet_sigpipe(&ws, &["graph", "--format", "mermaid"], "graph LR");
    assert_quiet_sigpipe(&ws, &["--json", "status"], "[");
    assert_quiet_sigpipe(&ws, &["status"], "up to date  //p:chatty");
    assert_quiet_sigpipe(
        &ws,
        &["--json", "query", "deps", "//p:target_number_2999"],
        "[",
    );
    assert_quiet_sigpipe(&ws, &["log", "--stdout", "//p:chatty"], "1");
    let (line, ..) = first_line_then_close(&ws, &["params", "show"]);
    assert!(line.starts_with("build "), "{line}");
    assert_quiet_sigpipe(&ws, &["params", "show"], line.trim_end());
}

#[test]
fn a_closed_stderr_changes_nothing() {
    let ws = Ws::new();
    ws.write("a/BUILD.toml", "[target.x]\ncmd = [\"true\"]\n");
    // Closed before mlbuild has loaded the workspace, so every progress line fails.
    let mut child = ws
        .command(&["build", "//a:x"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let built = ws.build_ok(&["//a:x"]);
    assert_eq!(built.cached, 1, "{built:#?}");
}

/// mlbuild keeps SIGPIPE ignored while it runs; its actions must not inherit that, or
/// `yes | head -1` in an action would never see its writer end by SIGPIPE.
#[test]
fn actions_start_with_sigpipe_at_its_default() {
    for sandbox in ["", "plain"] {
        let ws = Ws::new();
        ws.write(
            "a/BUILD.toml",
            "[target.x]\ncmd = [\"sh\", \"-c\", \"grep -E '^Sig(Ign|Blk)' /proc/self/status > {out}/signals\"]\nouts = [\"signals\"]\n",
        );
        let out = ws
            .command(&["build", "//a:x"])
            .env("MLBUILD_SANDBOX", sandbox)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let pipe_bit = 1u64 << (libc::SIGPIPE - 1);
        for line in ws.read("mlbuild-out/a/x/signals").lines() {
            let (name, mask) = line.split_once(':').unwrap();
            let mask = u64::from_str_radix(mask.trim(), 16).unwrap();
            assert_eq!(
                mask & pipe_bit,
                0,
                "sandbox {sandbox:?}: {name} has SIGPIPE"
            );
        }
    }
}
