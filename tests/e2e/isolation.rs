//! Results say how they were isolated: a result built with `MLBUILD_SANDBOX=plain` is
//! recorded as such, reported by `audit`, named in provenance, and rebuilt in the sandbox
//! when `[sandbox] require = true`.

use std::path::Path;

use crate::support::{parse_built, serve, Built, Ws};

const REQUIRE: &str = "[workspace]\nname = \"test\"\n\n[sandbox]\nrequire = true\n";

/// `mlbuild --json build ARGS` in plain mode.
fn build_plain(ws: &Ws, args: &[&str]) -> Built {
    let mut full = vec!["--json", "build"];
    full.extend_from_slice(args);
    let out = ws
        .command(&full)
        .env("MLBUILD_SANDBOX", "plain")
        .output()
        .expect("run mlbuild");
    parse_built(&out)
}

fn namespaces_available(ws: &Ws) -> bool {
    ws.write("probe/BUILD.toml", "[target.p]\ncmd = [\"true\"]\n");
    let b = ws.build(&["//probe:p"]);
    b.events
        .iter()
        .any(|e| e["event"] == "sandbox_selected" && e["sandbox"] == "namespaces")
}

/// The reasons of `label`'s `action_started` event.
fn reasons(b: &Built, label: &str) -> Vec<String> {
    b.events
        .iter()
        .filter(|e| e["event"] == "action_started" && e["label"] == label)
        .flat_map(|e| e["reasons"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect()
}

/// `mlbuild --json audit ARGS`: (exit code, report, stderr).
fn audit(ws: &Ws, args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut full = vec!["--json", "audit"];
    full.extend_from_slice(args);
    let run = ws.run(&full);
    let report = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("audit report: {e}\n{}\n{}", run.stdout, run.stderr));
    (run.code, report, run.stderr)
}

fn one_target(ws: &Ws) {
    ws.write("a/in.txt", "hello\n");
    ws.write(
        "a/BUILD.toml",
        "[target.x]\nsrcs = [\"in.txt\"]\ncmd = [\"sh\", \"-c\", \"cat in.txt > {out}/o.txt\"]\nouts = [\"o.txt\"]\n",
    );
}

#[test]
fn plain_results_are_reported_and_rebuilt_when_the_sandbox_is_required() {
    let ws = Ws::new();
    if !namespaces_available(&ws) {
        eprintln!("skipping: no user namespaces on this machine");
        return;
    }
    one_target(&ws);
    let b = build_plain(&ws, &["//a:x"]);
    assert_eq!((b.code, b.executed), (0, 1), "{b:#?}");

    // By default the unsandboxed result is reused, but the audit says how it was built.
    let b = ws.build_ok(&["//a:x"]);
    assert_eq!((b.executed, b.cached), (0, 1), "{b:#?}");
    let (code, report, stderr) = audit(&ws, &["//a:x"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        report["actions"][0]["recorded_isolation"], "plain",
        "{report:#}"
    );
    assert_eq!(report["summary"]["unsandboxed"], 1, "{report:#}");
    assert!(
        stderr.contains(
            "unsandboxed: the recorded result was built without the sandbox (isolation `plain`)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("; 1 recorded without the sandbox"),
        "{stderr}"
    );

    // Required: `status` says it is out of date, the build reruns it in the sandbox.
    ws.write("MLBUILD.toml", REQUIRE);
    let status = ws.run(&["status", "//a:x"]);
    assert!(
        status
            .stdout
            .contains("not built in the sandbox (isolation `plain`)"),
        "{}{}",
        status.stdout,
        status.stderr
    );
    let b = ws.build_ok(&["//a:x"]);
    assert_eq!(b.executed, 1, "{b:#?}");
    let why = reasons(&b, "//a:x");
    assert_eq!(
        why,
        ["cached result was not built in the sandbox (isolation `plain`) and `[sandbox] require = true`"],
        "{b:#?}"
    );
    // The sandboxed result replaced it: a hit from now on, also for plain mode (no action
    // has to run), and the audit reports nothing unsandboxed.
    assert_eq!(ws.build_ok(&["//a:x"]).cached, 1);
    let b = build_plain(&ws, &["//a:x"]);
    assert_eq!((b.code, b.cached), (0, 1), "{b:#?}");
    let (code, report, stderr) = audit(&ws, &["//a:x"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["actions"][0]["recorded_isolation"], "namespaces");
    assert_eq!(report["summary"]["unsandboxed"], 0);
    assert!(!stderr.contains("unsandboxed"), "{stderr}");

    // Required, an action to run, and no sandbox: a clear failure, nothing recorded.
    ws.write("a/in.txt", "changed\n");
    let b = build_plain(&ws, &["//a:x"]);
    assert_eq!((b.code, b.executed, b.failed), (1, 0, 1), "{b:#?}");
    let message = b
        .events
        .iter()
        .find(|e| e["event"] == "target_finished" && e["label"] == "//a:x")
        .and_then(|e| e["message"].as_str())
        .unwrap_or_default();
    assert!(
        message.contains(
            "`//a:x`: actions must run in the sandbox (`[sandbox] require = true`), but they would run without isolation: `MLBUILD_SANDBOX=plain` is set"
        ),
        "{b:#?}"
    );
    assert!(
        message.contains("unset `MLBUILD_SANDBOX=plain`"),
        "{message}"
    );
}

#[test]
fn filegroups_need_no_sandbox_and_results_without_isolation_are_rebuilt() {
    let ws = Ws::new();
    if !namespaces_available(&ws) {
        eprintln!("skipping: no user namespaces on this machine");
        return;
    }
    ws.write("d/data.csv", "a,b\n1,2\n");
    ws.write(
        "d/BUILD.toml",
        "[target.data]\nkind = \"filegroup\"\nsrcs = [\"data.csv\"]\n",
    );
    ws.write("MLBUILD.toml", REQUIRE);
    // A filegroup runs no command: it is built, and reused, even in plain mode.
    let b = build_plain(&ws, &["//d:data"]);
    assert_eq!((b.code, b.executed), (0, 1), "{b:#?}");
    let b = ws.build_ok(&["//d:data"]);
    assert_eq!(b.cached, 1, "{b:#?}");

    // A result recorded before isolation was recorded counts as unsandboxed: strip the
    // field from the index as an older mlbuild wrote it.
    one_target(&ws);
    ws.build_ok(&["//a:x"]);
    let index = ws.store().join("index.sqlite");
    strip_isolation(&index);
    let b = ws.build_ok(&["//a:x"]);
    assert_eq!(b.executed, 1, "{b:#?}");
    assert_eq!(
        reasons(&b, "//a:x"),
        ["cached result was not built in the sandbox (isolation `unknown`) and `[sandbox] require = true`"]
    );
}

/// Removes `isolation` from every recorded action result, as results written before it
/// existed look.
fn strip_isolation(index: &Path) {
    assert!(index.is_file(), "no index at {}", index.display());
    let conn = rusqlite::Connection::open(index).unwrap();
    let rows: Vec<(Vec<u8>, String)> = conn
        .prepare("SELECT key, result FROM actions")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut stripped = 0;
    for (key, result) in rows {
        let mut value: serde_json::Value = serde_json::from_str(&result).unwrap();
        if value.as_object_mut().unwrap().remove("isolation").is_some() {
            stripped += 1;
        }
        conn.execute(
            "UPDATE actions SET result = ?1 WHERE key = ?2",
            rusqlite::params![value.to_string(), key],
        )
        .unwrap();
    }
    assert!(stripped > 0, "no result recorded an isolation");
}

#[test]
fn a_plain_result_in_the_remote_cache_is_not_used_when_the_sandbox_is_required() {
    let ws = Ws::new();
    if !namespaces_available(&ws) {
        eprintln!("skipping: no user namespaces on this machine");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_server, url) = serve(&tmp.path().join("cache"), &["--anonymous", "write"]);
    one_target(&ws);
    let remote = format!("[remote]\nurl = \"{url}\"\n");
    ws.write(
        "MLBUILD.toml",
        &format!("[workspace]\nname = \"test\"\n\n{remote}"),
    );
    let b = build_plain(&ws, &["//a:x"]);
    assert_eq!((b.code, b.executed), (0, 1), "{b:#?}");
    assert_eq!(
        b.events
            .iter()
            .filter(|e| e["event"] == "remote_uploaded")
            .count(),
        1
    );

    // A second runner with an empty store: without `require` it downloads the entry...
    let fresh = |name: &str| ws.dir.path().join(name);
    let download = |store: &Path| {
        let out = ws
            .command_with_store(store, &["--json", "build", "//a:x"])
            .output()
            .unwrap();
        parse_built(&out)
    };
    let b = download(&fresh("store2"));
    assert_eq!((b.code, b.executed, b.cached), (0, 0, 1), "{b:#?}");
    // ... with it, it builds in its sandbox instead.
    ws.write("MLBUILD.toml", &format!("{REQUIRE}\n{remote}"));
    let b = download(&fresh("store3"));
    assert_eq!((b.code, b.executed), (0, 1), "{b:#?}");
    assert_eq!(
        b.events
            .iter()
            .filter(|e| e["event"] == "remote_downloaded")
            .count(),
        0
    );
}

#[test]
fn provenance_names_how_each_action_was_isolated() {
    let ws = Ws::new();
    if !namespaces_available(&ws) {
        eprintln!("skipping: no user namespaces on this machine");
        return;
    }
    one_target(&ws);
    ws.write(
        "p/BUILD.toml",
        "[target.art]\nkind = \"package\"\ndeps = [\"//a:x\"]\nfiles = { \"o.txt\" = \"{deps.x}/o.txt\" }\n",
    );
    let (private, public) = ws.key_pair("signer");
    let signed = |plain: bool| {
        let mut cmd = ws.command(&["--json", "build", "//p:art"]);
        cmd.env("MLBUILD_SIGNING_KEY", &private);
        if plain {
            cmd.env("MLBUILD_SANDBOX", "plain");
        }
        let b = parse_built(&cmd.output().unwrap());
        assert_eq!(b.code, 0, "{b:#?}");
        b
    };
    let isolation = || {
        let key = mlbuild_sign::PublicKey::load(&public).unwrap();
        let bytes = std::fs::read(ws.path("mlbuild-out/p/art.intoto.jsonl")).unwrap();
        let statement = mlbuild_sign::provenance::verify(&bytes, &key).unwrap();
        statement
            .predicate
            .build_definition
            .internal_parameters
            .extra["isolation"]
            .clone()
    };
    signed(true);
    let first = isolation();
    assert_eq!(first["//a:x"], "plain", "{first:#}");
    assert!(
        first["//p:art"] == "plain",
        "the package action ran in plain mode too: {first:#}"
    );

    // Rebuilt in the sandbox with the same keys: the provenance is rewritten to say so.
    ws.write("MLBUILD.toml", REQUIRE);
    let b = signed(false);
    assert_eq!(b.executed, 2, "{b:#?}");
    let second = isolation();
    assert_eq!(second["//a:x"], "namespaces", "{second:#}");
    assert_eq!(second["//p:art"], "namespaces", "{second:#}");
}
