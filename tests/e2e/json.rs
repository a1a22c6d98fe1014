//! `--json` on every command: JSON on stdout, or a usage error (exit 2) where a command
//! has no JSON form, never text where a script expects JSON.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use serde_json::Value;

use crate::support::{Killed, Ws};

/// `mlbuild --json ARGS`, which must exit with `code`; its stdout parsed.
fn json(ws: &Ws, args: &[&str], code: i32) -> Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let run = ws.run(&full);
    assert_eq!(run.code, code, "{args:?}: {}{}", run.stdout, run.stderr);
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}):\n{}", run.stdout))
}

/// `mlbuild --json ARGS`, which must be refused as a usage error.
fn refused(ws: &Ws, args: &[&str]) {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let run = ws.run(&full);
    assert_eq!(run.code, 2, "{args:?}: {}{}", run.stdout, run.stderr);
    assert_eq!(run.stdout, "", "{args:?}");
    assert!(run.stderr.contains("--json"), "{args:?}: {}", run.stderr);
}

/// A training that records metrics and a package of its output.
fn workspace(f1: &str) -> Ws {
    let ws = Ws::new();
    write_build(&ws, f1);
    ws
}

fn write_build(ws: &Ws, f1: &str) {
    // `{{` is a literal brace in `cmd`.
    let build = r#"
[target.train]
cmd = ["sh", "-c", "echo trained; echo '{{\"f1\": {params.f1}}}' > {out}/metrics.json"]
outs = ["metrics.json"]
metrics = ["metrics.json"]
params = { f1 = F1 }

[target.art]
kind = "package"
deps = [":train"]
files = { "metrics.json" = "{deps.train}/metrics.json" }
"#;
    ws.write("m/BUILD.toml", &build.replace("F1", f1));
}

#[test]
fn an_unsigned_package_is_a_warning_event_before_the_summary() {
    let ws = workspace("0.5");
    let built = ws.build_ok(&["//m:art"]);
    let kinds: Vec<&str> = built
        .events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    let warning = built
        .events
        .iter()
        .position(|e| e["event"] == "warning")
        .unwrap_or_else(|| panic!("no warning event: {kinds:?}"));
    assert_eq!(
        built.warnings(),
        [
            "//m:art is unsigned and without provenance: set `MLBUILD_SIGNING_KEY` to a PEM \
          private key (`mlbuild key generate`) or `[signing] key` in MLBUILD.toml"
        ]
    );
    assert_eq!(kinds[warning + 1], "build_finished", "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"build_finished"), "{kinds:?}");
    assert!(!built.stderr.contains("unsigned"), "{}", built.stderr);

    // As text, the same warning comes before the summary line, which stays last.
    ws.run(&["clean"]);
    let text = ws.run(&["build", "//m:art"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    let lines: Vec<&str> = text.stderr.lines().collect();
    assert!(
        lines[lines.len() - 2].starts_with("warning: //m:art is unsigned"),
        "{}",
        text.stderr
    );
    assert!(
        lines[lines.len() - 1].starts_with("build succeeded"),
        "{}",
        text.stderr
    );
}

#[test]
fn every_command_answers_json_or_refuses_it() {
    let ws = workspace("0.5");
    ws.build_ok(&["//m:art", "--name", "first"]);
    write_build(&ws, "0.75");
    let (private, public) = ws.key_pair("signer");
    let signed = ws
        .command(&["--json", "build", "//m:art", "--name", "second"])
        .env("MLBUILD_SIGNING_KEY", &private)
        .output()
        .unwrap();
    assert_eq!(signed.status.code(), Some(0), "{signed:?}");

    // Without the key, the package is stale: its key holds the signing key's id.
    let status = json(&ws, &["status"], 1);
    assert_eq!(status[0]["label"], "//m:train", "{status}");
    assert_eq!(status[0]["stale"], false, "{status}");
    assert_eq!(status[1]["stale"], true, "{status}");
    let why = json(&ws, &["why", "//m:train"], 0);
    assert_eq!(why["label"], "//m:train", "{why}");
    let deps = json(&ws, &["query", "deps", "//m:art"], 0);
    assert_eq!(deps, serde_json::json!(["//m:art", "//m:train"]));

    let graph = json(&ws, &["graph"], 0);
    assert_eq!(
        graph,
        serde_json::json!({
            "nodes": [
                { "label": "//m:art", "kind": "package" },
                { "label": "//m:train", "kind": "command" },
            ],
            "edges": [{ "from": "//m:train", "to": "//m:art" }],
        })
    );
    refused(&ws, &["graph", "--format", "mermaid"]);

    let log = json(&ws, &["log", "//m:train"], 0);
    assert_eq!(
        log,
        serde_json::json!({ "label": "//m:train", "stdout": "trained\n", "stderr": "" })
    );
    let stdout_only = json(&ws, &["log", "--stdout", "//m:train"], 0);
    assert_eq!(
        stdout_only,
        serde_json::json!({ "label": "//m:train", "stdout": "trained\n" })
    );

    let metrics = json(&ws, &["metrics", "show", "//m:train"], 0);
    assert_eq!(metrics["values"]["f1"], 0.75, "{metrics}");
    let diff = json(&ws, &["metrics", "diff", "//m:train"], 0);
    assert_eq!(diff[0]["metrics"][0]["old"], 0.5, "{diff}");
    let stats = json(&ws, &["stats"], 0);
    assert!(stats["totals"]["runs"].as_u64().unwrap() >= 4, "{stats}");
    let params = json(&ws, &["params", "show"], 0);
    assert_eq!(params["params"]["//m:train"]["f1"], 0.75, "{params}");
    let changes = json(&ws, &["params", "diff", "first", "second"], 0);
    assert_eq!(changes["changes"][0]["param"], "f1", "{changes}");

    let key = json(
        &ws,
        &[
            "key",
            "generate",
            "--private-key",
            ws.dir.path().join("other.pem").to_str().unwrap(),
        ],
        0,
    );
    assert_eq!(key["key_id"].as_str().unwrap().len(), 64, "{key}");
    let verified = json(
        &ws,
        &[
            "verify",
            ws.path("mlbuild-out/m/art/art.tar.zst").to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
        ],
        0,
    );
    assert_eq!(verified["verified"], true, "{verified}");

    let audit = json(&ws, &["audit", "//m:train"], 0);
    assert_eq!(audit["success"], true, "{audit}");
    let cache = json(&ws, &["cache", "stats"], 0);
    assert!(cache["local"]["blobs"].as_u64().unwrap() > 0, "{cache}");
    assert_eq!(cache["remote"], Value::Null, "{cache}");
    let fsck = json(&ws, &["fsck"], 0);
    assert_eq!(fsck["corrupt"], serde_json::json!([]), "{fsck}");
    let gc = json(&ws, &["gc", "--max-age", "30d"], 0);
    assert!(gc.is_object(), "{gc}");

    let out = ws.path("mlbuild-out");
    let clean = json(&ws, &["clean"], 0);
    assert_eq!(clean["removed"], out.to_str().unwrap(), "{clean}");
    let again = json(&ws, &["clean"], 0);
    assert_eq!(again["removed"], Value::Null, "{again}");

    refused(&ws, &["rule", "validate"]);
}

#[test]
fn cache_serve_names_its_address_as_json() {
    let ws = Ws::new();
    let mut child = ws
        .command(&[
            "--json",
            "cache",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-size",
            "1G",
            "--anonymous",
            "read",
            "--dir",
            ws.dir.path().join("cache").to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _server = Killed(child);
    let first: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
    let url = first["listening"].as_str().unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
}
