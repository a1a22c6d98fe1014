//! `--json` on every command: JSON on stdout, or a usage error (exit 2) where a command
//! has no JSON form, never text where a script expects JSON.

use crate::support::Ws;

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
