//! The read-only commands: query, graph, log, status, help.

use crate::support::{pipeline, Ws};

#[test]
fn query_deps_rdeps_targets() {
    let ws = Ws::new();
    pipeline(&ws);
    let deps = ws.run(&["query", "deps", "//models:report"]);
    assert_eq!(deps.stdout, "//data:raw\n//models:model\n//models:report\n");
    let rdeps = ws.run(&["query", "rdeps", "//data:raw"]);
    assert_eq!(
        rdeps.stdout,
        "//data:raw\n//models:model\n//models:report\n"
    );
    let targets = ws.run(&["query", "targets", "//models:all"]);
    assert_eq!(targets.stdout, "//models:model\n//models:report\n");
    let all = ws.run(&["--json", "query", "targets", "//..."]);
    let v: Vec<String> = serde_json::from_str(&all.stdout).unwrap();
    assert_eq!(v.len(), 3);
}

#[test]
fn relative_labels_resolve_from_the_current_package() {
    let ws = Ws::new();
    pipeline(&ws);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mlbuild"))
        .args(["query", "deps", ":report"])
        .current_dir(ws.path("models"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "//data:raw\n//models:model\n//models:report\n"
    );
}

#[test]
fn graph_formats() {
    let ws = Ws::new();
    pipeline(&ws);
    let dot = ws.run(&["graph", "--format", "dot"]);
    assert_eq!(dot.code, 0);
    insta::assert_snapshot!("graph_dot", dot.stdout);
    let mermaid = ws.run(&["graph", "--format", "mermaid"]);
    insta::assert_snapshot!("graph_mermaid", mermaid.stdout);
}

#[test]
fn log_shows_last_run_even_when_restored_from_cache() {
    let ws = Ws::new();
    ws.write(
        "a/BUILD.toml",
        "[target.x]\ncmd = [\"sh\", \"-c\", \"echo hello-stdout; echo hello-stderr >&2; echo 1 > {out}/o\"]\nouts = [\"o\"]\n",
    );
    ws.build_ok(&["//a:x"]);
    let log = ws.run(&["log", "//a:x"]);
    assert!(log.stdout.contains("hello-stdout"));
    assert!(log.stdout.contains("hello-stderr"));
    let only = ws.run(&["log", "--stderr", "//a:x"]);
    assert_eq!(only.stdout, "hello-stderr\n");
    // After `clean`, the logs come from the action cache.
    ws.run(&["clean"]);
    let log = ws.run(&["log", "--stdout", "//a:x"]);
    assert_eq!(log.stdout, "hello-stdout\n");
}

#[test]
fn json_event_stream_is_complete() {
    let ws = Ws::new();
    pipeline(&ws);
    let b = ws.build_ok(&["//..."]);
    let kinds: Vec<&str> = b
        .events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"build_started"));
    assert_eq!(kinds.last(), Some(&"build_finished"));
    assert_eq!(kinds.iter().filter(|k| **k == "action_started").count(), 3);
    let started = b
        .events
        .iter()
        .find(|e| e["event"] == "action_started")
        .unwrap();
    assert_eq!(started["reasons"][0], "never built in this workspace");
    assert_eq!(started["key"].as_str().unwrap().len(), 64);
}

#[test]
fn help_lists_every_command() {
    let ws = Ws::new();
    let help = ws.run(&["--help"]);
    for cmd in [
        "build", "status", "why", "query", "graph", "log", "clean", "gc", "fsck", "metrics",
        "stats", "params",
    ] {
        assert!(help.stdout.contains(cmd), "{cmd} missing from help");
    }
    assert!(help.stdout.contains("Exit codes"));
}
