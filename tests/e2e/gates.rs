//! Metric gates: pass and fail with a table, baselines from a named build and from a
//! file, a gate on a missing metric, malformed gates, and the JUnit report.

use crate::support::Ws;

/// Package `m`: `train` copies `values.json` (its metrics) to its output; `deploy`
/// depends on it; `other` is independent. `extra` is appended to `train`'s table.
fn model(ws: &Ws, values: &str, extra: &str) {
    ws.write("m/values.json", values);
    ws.write(
        "m/BUILD.toml",
        &format!(
            r#"[target.train]
kind = "train"
srcs = ["values.json"]
cmd = ["cp", "values.json", "{{out}}/metrics.json"]
outs = ["metrics.json"]
metrics = ["metrics.json"]
{extra}

[target.deploy]
deps = [":train"]
cmd = ["sh", "-c", "echo ok > {{out}}/deployed"]
outs = ["deployed"]

[target.other]
cmd = ["sh", "-c", "echo ok > {{out}}/o"]
outs = ["o"]
"#
        ),
    );
}

const VALUES: &str = r#"{"f1": 0.85, "latency_ms": 40, "eval": {"auc": 0.91}, "name": "x"}"#;

fn gate_events(b: &crate::support::Built) -> Vec<&serde_json::Value> {
    b.events
        .iter()
        .filter(|e| e["event"] == "gate_checked")
        .collect()
}

#[test]
fn failing_gate_fails_the_target_with_a_table_and_skips_dependents() {
    let ws = Ws::new();
    model(
        &ws,
        VALUES,
        r#"gates = ["f1 >= 0.9", "latency_ms <= 50", "eval.auc > 0.5"]"#,
    );
    let run = ws.run(&["build", "//m:deploy"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let err = &run.stderr;
    assert!(err.contains("FAILED //m:train"), "{err}");
    assert!(!err.contains("executed //m:deploy"), "{err}");
    assert!(err.contains("`//m:train`: 1 of 3 gates failed"), "{err}");
    // The table at the end lists every gate with its verdict.
    let table: Vec<&str> = err
        .lines()
        .skip_while(|l| !l.starts_with("target  "))
        .collect();
    assert_eq!(
        table[..4],
        [
            "target     metric      op  threshold  actual  result",
            "//m:train  f1          >=  0.9        0.85    FAIL",
            "//m:train  latency_ms  <=  50         40      pass",
            "//m:train  eval.auc    >   0.5        0.91    pass",
        ],
        "{err}"
    );
    assert!(table[4].starts_with("build FAILED:"), "{err}");

    // Like a failed action: dependents are skipped, independent targets still build.
    let b = ws.build(&["-k", "//m:all"]);
    assert_eq!(b.code, 1);
    assert_eq!(b.status["//m:train"], "failed");
    assert_eq!(b.status["//m:deploy"], "skipped");
    assert_eq!(b.status["//m:other"], "executed");
    let gates = gate_events(&b);
    assert_eq!(gates.len(), 3);
    assert_eq!(gates[0]["label"], "//m:train");
    assert_eq!(gates[0]["gate"], "f1 >= 0.9");
    assert_eq!(gates[0]["metric"], "f1");
    assert_eq!(gates[0]["op"], ">=");
    assert_eq!(gates[0]["threshold"], 0.9);
    assert_eq!(gates[0]["actual"], 0.85);
    assert_eq!(gates[0]["passed"], false);
    assert_eq!(gates[1]["passed"], true);

    // Relaxing the gate re-checks it without re-running the action.
    model(&ws, VALUES, r#"gates = ["f1 >= 0.8", "latency_ms <= 50"]"#);
    let b = ws.build_ok(&["//m:all"]);
    assert_eq!(b.status["//m:train"], "cached");
    assert_eq!(b.status["//m:deploy"], "executed");
    assert!(gate_events(&b).iter().all(|g| g["passed"] == true));
}

#[test]
fn baseline_from_a_named_build() {
    let ws = Ws::new();
    model(&ws, r#"{"f1": 0.9}"#, "");
    ws.build_ok(&["--name", "release", "//m:train"]);

    let gate = "gates = [\"f1 >= baseline.f1 - 0.01\"]\nbaseline = \"build:release\"";
    model(&ws, r#"{"f1": 0.85}"#, gate);
    let run = ws.run(&["build", "//m:train"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("//m:train  f1      >=  0.89 (baseline 0.9)  0.85    FAIL"),
        "{}",
        run.stderr
    );

    model(&ws, r#"{"f1": 0.895}"#, gate);
    let b = ws.build_ok(&["//m:train"]);
    let g = gate_events(&b);
    assert_eq!(g[0]["baseline"], "build:release");
    assert_eq!(g[0]["baseline_value"], 0.9);
    assert_eq!(g[0]["passed"], true);

    // The baseline is the named build, not the latest one: a later build does not move it.
    model(&ws, r#"{"f1": 0.5}"#, "");
    ws.build_ok(&["//m:train"]);
    model(&ws, r#"{"f1": 0.895}"#, gate);
    ws.build_ok(&["//m:train"]);
}

#[test]
fn baseline_build_errors_are_bad_input() {
    let ws = Ws::new();
    model(
        &ws,
        VALUES,
        "gates = [\"f1 >= baseline.f1\"]\nbaseline = \"build:nope\"",
    );
    let run = ws.run(&["build", "//m:train"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("baseline build `nope` not found in this workspace's history"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("m/BUILD.toml:8:12"), "{}", run.stderr);

    // A named build that did not record the metric the gate compares against.
    model(&ws, r#"{"recall": 0.7}"#, "");
    ws.build_ok(&["--name", "old", "//m:train"]);
    model(
        &ws,
        VALUES,
        "gates = [\"f1 >= baseline.f1\"]\nbaseline = \"build:old\"",
    );
    let run = ws.run(&["build", "//m:train"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("baseline `build:old` of `//m:train` has no metric `f1`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("the baseline has metrics `recall`"),
        "{}",
        run.stderr
    );
}

#[test]
fn baseline_from_a_file() {
    let ws = Ws::new();
    ws.write("baselines/m.json", r#"{"serving": {"latency_ms": 30}}"#);
    let gate = "gates = [\"latency_ms <= baseline.serving.latency_ms * 1.5\"]\nbaseline = \"//baselines/m.json\"";
    model(&ws, VALUES, gate);
    let b = ws.build_ok(&["//m:train"]);
    let g = gate_events(&b);
    assert_eq!(g[0]["threshold"], 45.0);
    assert_eq!(g[0]["baseline"], "//baselines/m.json");

    // Editing the baseline file re-checks the gate; the action stays cached.
    ws.write("baselines/m.json", r#"{"serving": {"latency_ms": 20}}"#);
    let b = ws.build(&["//m:train"]);
    assert_eq!(b.code, 1);
    assert_eq!(b.status["//m:train"], "failed");
    assert_eq!(gate_events(&b)[0]["threshold"], 30.0);

    // A package-relative baseline file that does not exist.
    model(
        &ws,
        VALUES,
        "gates = [\"f1 >= baseline.f1\"]\nbaseline = \"missing.json\"",
    );
    let run = ws.run(&["build", "//m:train"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("cannot read baseline file `m/missing.json`"),
        "{}",
        run.stderr
    );
}

#[test]
fn gate_on_a_missing_metric_names_target_file_and_metric() {
    let ws = Ws::new();
    model(&ws, VALUES, r#"gates = ["f1 >= 0.5", "eval.acu >= 0.5"]"#);
    let run = ws.run(&["build", "//m:train"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let err = ws.filter(&run.stderr);
    assert!(
        err.contains(
            "gate `eval.acu >= 0.5` of `//m:train`: metric `eval.acu` is not in `metrics.json`"
        ),
        "{err}"
    );
    // Line 7, column 24: the metric name inside the second gate string.
    assert!(err.contains("m/BUILD.toml:7:24"), "{err}");
    assert!(err.contains("did you mean `eval.auc`?"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn malformed_gate_points_at_line_and_column() {
    let ws = Ws::new();
    model(&ws, VALUES, r#"gates = ["f1 >= 0.9", "latency_ms =< 50"]"#);
    let run = ws.run(&["build", "//m:train"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let err = &run.stderr;
    assert!(
        err.contains("invalid gate `latency_ms =< 50`: `=<` is not a comparison, write `<=`"),
        "{err}"
    );
    assert!(err.contains("m/BUILD.toml:7:35"), "{err}");
    assert!(err.contains('┬'), "no caret: {err}");

    // A metrics file that is not among the outputs is caught at load time too.
    ws.write(
        "m/BUILD.toml",
        "[target.train]\ncmd = [\"true\"]\nouts = [\"metrics.json\"]\nmetrics = [\"metric.json\"]\n",
    );
    let run = ws.run(&["build", "//m:train"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("metrics file `metric.json` of `//m:train` is not one of its outputs"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("m/BUILD.toml:4:12"), "{}", run.stderr);
    assert!(
        run.stderr.contains("did you mean `metrics.json`?"),
        "{}",
        run.stderr
    );
}

#[test]
fn junit_report_has_a_case_per_target_and_gate() {
    let ws = Ws::new();
    model(&ws, VALUES, r#"gates = ["f1 >= 0.9", "latency_ms <= 50"]"#);
    // A failing command whose stderr has markup and a terminal escape, which XML 1.0
    // cannot carry.
    ws.write(
        "z/BUILD.toml",
        "[target.noisy]\ncmd = [\"sh\", \"-c\", \"printf '\\\\033[31m<bad> & \\\"q\\\" ]]>\\\\n' >&2; exit 3\"]\n",
    );
    let report = ws.dir.path().join("report.xml");
    let run = ws.run(&[
        "build",
        "-k",
        "//m:all",
        "//z:noisy",
        "--junit",
        report.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let xml = std::fs::read_to_string(&report).unwrap();
    assert!(xml.contains("f1 &gt;= 0.9"), "{xml}");
    // The escape reached the build's own output, but not the XML.
    assert!(run.stderr.contains('\u{1b}'), "{}", run.stderr);
    assert!(!xml.contains('\u{1b}'), "{xml}");

    // A real XML parser reads it, and sees what CI would show.
    let script = r#"
import json, sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
cases = []
for suite in root.iter("testsuite"):
    for c in suite.iter("testcase"):
        f = c.find("failure")
        cases.append({
            "suite": suite.get("name"),
            "name": c.get("name"),
            "time": float(c.get("time")),
            "failure": None if f is None else f.get("message"),
            "failure_text": None if f is None else f.text,
            "skipped": c.find("skipped") is not None,
        })
print(json.dumps({"tag": root.tag, "tests": root.get("tests"), "failures": root.get("failures"),
                  "skipped": root.get("skipped"), "cases": cases}))
"#;
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script, report.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tag"], "testsuites");
    assert_eq!(v["tests"], "6");
    assert_eq!(v["failures"], "3");
    assert_eq!(v["skipped"], "1");
    let cases = v["cases"].as_array().unwrap();
    let case = |name: &str| {
        cases
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no case {name} in {cases:#?}"))
    };
    assert_eq!(case("//m:train")["suite"], "//m");
    assert!(case("//m:train")["failure"]
        .as_str()
        .unwrap()
        .contains("1 of 2 gates failed"));
    assert_eq!(
        case("//m:train gate: f1 >= 0.9")["failure"],
        "f1 = 0.85, required >= 0.9"
    );
    assert!(case("//m:train gate: f1 >= 0.9")["failure_text"]
        .as_str()
        .unwrap()
        .contains("FAIL"));
    assert_eq!(
        case("//m:train gate: latency_ms <= 50")["failure"],
        serde_json::Value::Null
    );
    assert_eq!(case("//m:deploy")["skipped"], true);
    assert_eq!(case("//m:other")["failure"], serde_json::Value::Null);
    assert!(case("//m:other")["time"].as_f64().unwrap() >= 0.0);
    assert_eq!(case("//z:noisy")["suite"], "//z");
    let noisy = case("//z:noisy")["failure_text"].as_str().unwrap();
    assert!(noisy.contains("[31m<bad> & \"q\" ]]>"), "{noisy}");
    assert!(noisy.contains("exit"), "{noisy}");
}
