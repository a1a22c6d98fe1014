//! `mlbuild audit`: actions run a second time without the cache, compared with what the
//! build recorded; `--artifact` rebuilds a signed package artifact from the workspace's
//! sources and compares its bytes.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;

use crate::support::{parse_built, Built, Run, Ws};

const GEN: &str = "import sys\nopen(sys.argv[1] + '/data.csv', 'w').write('a,b\\n1,2\\n3,4\\n')\n";

const STATS: &str = "import json, sys\nrows = open(sys.argv[1]).read().splitlines()\njson.dump({'rows': len(rows) - 1, 'columns': rows[0].split(',')}, open(sys.argv[2] + '/stats.json', 'w'))\n";

/// Writes the time (and the same row count every time) into `stamp.json`.
const STAMP: &str = "import json, sys, time\njson.dump({'rows': 2, 't': time.time_ns()}, open(sys.argv[1] + '/stamp.json', 'w'))\n";

/// `gen -> stats` (deterministic) and `stats -> stamp` (writes the time), with
/// `nondeterministic` on `stamp` when given; plus package targets over each.
fn workspace(stamp_declared: Option<&str>) -> Ws {
    let ws = Ws::new();
    ws.write("p/gen.py", GEN);
    ws.write("p/stats.py", STATS);
    ws.write("p/stamp.py", STAMP);
    let declared = stamp_declared
        .map(|r| format!("nondeterministic = \"{r}\"\n"))
        .unwrap_or_default();
    ws.write(
        "p/BUILD.toml",
        &format!(
            r#"
[target.gen]
srcs = ["gen.py"]
cmd = ["python3", "gen.py", "{{out}}"]
outs = ["data.csv"]

[target.stats]
srcs = ["stats.py"]
deps = [":gen"]
cmd = ["python3", "stats.py", "{{deps.gen}}/data.csv", "{{out}}"]
outs = ["stats.json"]

[target.stamp]
srcs = ["stamp.py"]
deps = [":stats"]
cmd = ["python3", "stamp.py", "{{out}}"]
outs = ["stamp.json"]
{declared}
[target.art]
kind = "package"
deps = [":gen", ":stats"]
files = {{ "data.csv" = "{{deps.gen}}/data.csv", "stats.json" = "{{deps.stats}}/stats.json" }}

[target.stamped]
kind = "package"
deps = [":stamp"]
files = {{ "stamp.json" = "{{deps.stamp}}/stamp.json" }}
"#
        ),
    );
    ws
}

/// Runs `mlbuild ARGS` with extra environment variables.
fn run_env(ws: &Ws, args: &[&str], env: &[(&str, &Path)]) -> Run {
    let mut cmd = ws.command(args);
    cmd.env_remove("MLBUILD_SIGNING_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run mlbuild");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "mlbuild {args:?} -> {}\n{}{}",
        run.code, run.stdout, run.stderr
    );
    run
}

fn saved_report(ws: &Ws) -> Value {
    serde_json::from_str(&ws.read("mlbuild-out/.audit/report.json")).expect("report is JSON")
}

fn action<'a>(report: &'a Value, label: &str) -> &'a Value {
    report["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .find(|a| a["label"] == label)
        .unwrap_or_else(|| panic!("{label} not in {report:#}"))
}

#[test]
fn a_deterministic_pipeline_is_reproducible_and_the_cache_is_untouched() {
    let ws = workspace(None);
    ws.build_ok(&["//p:stats"]);
    let run = run_env(&ws, &["--json", "audit", "//p:stats"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    // With --json the report is stdout, and the same as the file.
    let printed: Value = serde_json::from_str(&run.stdout).expect("stdout is the report");
    assert_eq!(printed, saved_report(&ws));
    assert_eq!(printed["success"], true);
    assert_eq!(printed["mode"], "targets");
    let labels: Vec<&str> = printed["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["//p:gen", "//p:stats"]);
    for label in labels {
        let a = action(&printed, label);
        assert_eq!(a["status"], "reproducible", "{a:#}");
        assert_eq!(a["files"], serde_json::json!([]));
    }
    assert_eq!(printed["summary"]["reproducible"], 2);
    assert!(run
        .stderr
        .contains("audit succeeded: 2 actions: 2 reproducible"));

    // The second output is kept, with the recorded bytes; nothing differs, so no
    // recorded output is kept beside it.
    assert!(!ws.path("mlbuild-out/.audit/.recorded").exists());
    assert_eq!(
        ws.read("mlbuild-out/.audit/p/stats/stats.json"),
        ws.read("mlbuild-out/p/stats/stats.json")
    );
    // The audit recorded nothing: the next build reuses the first build's results.
    let built = ws.build_ok(&["//p:stats"]);
    assert_eq!((built.executed, built.cached), (0, 2), "{built:#?}");
}

#[test]
fn a_stage_writing_the_time_is_caught_by_file_and_json_key() {
    let ws = workspace(None);
    let run = run_env(&ws, &["audit", "//p:stamp"], &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("NOT REPRODUCIBLE"))
        .unwrap_or_else(|| panic!("no verdict line:\n{}", run.stderr));
    assert!(
        line.contains("//p:stamp") && line.contains("stamp.json"),
        "{line}"
    );
    assert!(run.stderr.contains("      $.t: "), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("second output: mlbuild-out/.audit/p/stamp/"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("recorded output: mlbuild-out/.audit/.recorded/p/stamp/"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("audit FAILED"), "{}", run.stderr);
    // The audit's own build went to the store only: nothing was built before it, so the
    // workspace holds nothing but the audit's directory.
    let listing: Vec<String> = fs::read_dir(ws.path("mlbuild-out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listing, [".audit"]);

    let report = saved_report(&ws);
    assert_eq!(report["success"], false);
    assert_eq!(action(&report, "//p:gen")["status"], "reproducible");
    assert_eq!(action(&report, "//p:stats")["status"], "reproducible");
    let stamp = action(&report, "//p:stamp");
    assert_eq!(stamp["status"], "not_reproducible", "{stamp:#}");
    let file = &stamp["files"][0];
    assert_eq!(file["path"], "stamp.json");
    assert_eq!(file["change"], "modified");
    assert_ne!(file["recorded"], file["rebuilt"]);
    // Only the time differs, and its two values are named.
    assert_eq!(file["json"].as_array().unwrap().len(), 1, "{file:#}");
    let t = &file["json"][0];
    assert_eq!(t["path"], "$.t");

    let recorded: Value =
        serde_json::from_str(&ws.read("mlbuild-out/.audit/.recorded/p/stamp/stamp.json")).unwrap();
    let second: Value =
        serde_json::from_str(&ws.read("mlbuild-out/.audit/p/stamp/stamp.json")).unwrap();
    assert_eq!(t["recorded"], recorded["t"]);
    assert_eq!(t["rebuilt"], second["t"]);
    assert_ne!(recorded["t"], second["t"]);
    assert_eq!(stamp["rebuilt_dir"], "mlbuild-out/.audit/p/stamp");
    assert_eq!(
        stamp["recorded_dir"],
        "mlbuild-out/.audit/.recorded/p/stamp"
    );
    assert!(action(&report, "//p:stats").get("recorded_dir").is_none());

    // The action cache still holds the first result: a build executes nothing and
    // links the recorded bytes.
    let built = ws.build_ok(&["//p:stamp"]);
    assert_eq!(built.executed, 0, "{built:#?}");
    let after: Value = serde_json::from_str(&ws.read("mlbuild-out/p/stamp/stamp.json")).unwrap();
    assert_eq!(after, recorded);
}

/// Every file below `mlbuild-out/` but the audit's own directory, with its bytes.
fn workspace_outputs(ws: &Ws) -> BTreeMap<String, Vec<u8>> {
    let root = ws.path("mlbuild-out");
    walkdir::WalkDir::new(&root)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".audit")
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(&root).unwrap();
            (
                rel.to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// `mlbuild --json build ARGS` with extra environment variables.
fn build_env(ws: &Ws, args: &[&str], env: &[(&str, &Path)]) -> Built {
    let mut cmd = ws.command(&[&["--json", "build"][..], args].concat());
    cmd.env_remove("MLBUILD_SIGNING_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    parse_built(&cmd.output().expect("run mlbuild"))
}

#[test]
fn an_audit_leaves_mlbuild_out_as_the_last_build_left_it() {
    let ws = workspace(None);
    let (private, public) = ws.key_pair("key");
    let key = public.to_str().unwrap();
    let signing = [("MLBUILD_SIGNING_KEY", private.as_path())];
    let built = build_env(&ws, &["//p:art"], &signing);
    assert_eq!(built.code, 0, "{built:#?}");
    let before = workspace_outputs(&ws);
    assert!(
        before.contains_key("p/art/art/model.sig"),
        "{:?}",
        before.keys()
    );
    assert!(before.contains_key("p/art.intoto.jsonl"));

    // Without the key the package action is another one, unsigned: the audit builds and
    // audits that one, in the store, and the signed artifact and its provenance stay.
    let run = run_env(&ws, &["audit", "//p:art"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        action(&saved_report(&ws), "//p:art")["status"],
        "reproducible"
    );
    assert!(
        workspace_outputs(&ws) == before,
        "the audit changed mlbuild-out"
    );
    let archive = "mlbuild-out/p/art/art.tar.zst";
    let run = run_env(&ws, &["audit", "--artifact", archive, "--key", key], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(saved_report(&ws)["verdict"], "content_reproduced");

    // An edit the audit's build has to execute changes the store and `.audit/` only,
    // logs included, and the last build is still what `status` compares with.
    ws.write("p/gen.py", &GEN.replace("3,4", "5,6"));
    let run = run_env(&ws, &["audit", "//p:stats"], &signing);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        workspace_outputs(&ws) == before,
        "the audit changed mlbuild-out"
    );
    assert_eq!(run_env(&ws, &["status", "//p:stats"], &[]).code, 1);
    // The next build finds what the audit built, and links it.
    let built = build_env(&ws, &["//p:art"], &signing);
    assert_eq!(built.code, 0, "{built:#?}");
    assert_eq!((built.executed, built.cached), (1, 2), "{built:#?}");
    assert_eq!(built.status["//p:art"], "executed");
    assert!(ws.read("mlbuild-out/p/gen/data.csv").contains("5,6"));
}

#[test]
fn declared_nondeterminism_is_reported_without_failing() {
    let ws = workspace(Some("writes a timestamp"));
    let run = run_env(&ws, &["audit", "//p:stamp", "--report", "audit.json"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("nondeterministic"))
        .unwrap_or_else(|| panic!("no verdict line:\n{}", run.stderr));
    assert!(
        line.contains("//p:stamp") && line.contains("(declared: writes a timestamp)"),
        "{line}"
    );
    // `--report` is relative to `-C DIR`.
    let report: Value = serde_json::from_str(&ws.read("audit.json")).unwrap();
    assert_eq!(report["success"], true);
    let stamp = action(&report, "//p:stamp");
    assert_eq!(stamp["status"], "nondeterministic");
    assert_eq!(stamp["nondeterministic"], "writes a timestamp");
    assert_eq!(stamp["files"][0]["json"][0]["path"], "$.t");
    assert_eq!(report["summary"]["nondeterministic"], 1);
}

#[test]
fn diffoscope_runs_on_each_differing_file_when_asked() {
    let ws = workspace(None);
    // Asked for but not installed: bad input, before anything runs.
    let empty = ws.dir.path().join("empty-bin");
    fs::create_dir_all(&empty).unwrap();
    let run = run_env(
        &ws,
        &["audit", "--diffoscope", "//p:stamp"],
        &[("PATH", &empty)],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("`diffoscope` is not on your PATH"));
    assert!(!ws.path("mlbuild-out").exists());

    // A stand-in that records its arguments where `--text` says.
    let bin = ws.dir.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let tool = bin.join("diffoscope");
    fs::write(
        &tool,
        "#!/bin/sh\nout=$2\nshift 3\necho \"compared $1 with $2\" > \"$out\"\nexit 1\n",
    )
    .unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    let run = run_env(
        &ws,
        &["audit", "--diffoscope", "//p:stamp"],
        &[("PATH", &bin)],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = saved_report(&ws);
    let file = &action(&report, "//p:stamp")["files"][0];
    let saved = file["diffoscope"].as_str().expect("a diffoscope report");
    assert_eq!(
        saved,
        "mlbuild-out/.audit/.diffoscope/p/stamp/stamp.json.txt"
    );
    assert_eq!(
        ws.read(saved).trim(),
        "compared recorded/stamp.json with rebuilt/stamp.json"
    );
    assert!(run.stderr.contains(&format!("diffoscope: {saved}")));
}

#[test]
fn an_artifact_is_rebuilt_from_sources_and_tampering_or_edits_are_named() {
    let ws = workspace(None);
    let (private, public) = ws.key_pair("key");
    let key = public.to_str().unwrap();
    let signing = [("MLBUILD_SIGNING_KEY", private.as_path())];
    let built = run_env(&ws, &["build", "//p:art"], &signing);
    assert_eq!(built.code, 0, "{}", built.stderr);
    assert!(ws.path("mlbuild-out/p/art.intoto.jsonl").is_file());

    let archive = "mlbuild-out/p/art/art.tar.zst";
    let run = run_env(
        &ws,
        &["--json", "audit", "--artifact", archive, "--key", key],
        &signing,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["verdict"], "reproduced", "{report:#}");
    assert_eq!(report["target"], "//p:art");
    assert_eq!(report["provenance"], "mlbuild-out/p/art.intoto.jsonl");
    assert_eq!(report["archive"]["identical"], true);
    let sha = mlbuild_sign::model::sha256_file(&ws.path(archive)).unwrap();
    assert_eq!(report["archive"]["rebuilt_sha256"], sha.as_str());
    for label in ["//p:gen", "//p:stats", "//p:art"] {
        assert_eq!(action(&report, label)["status"], "reproducible");
    }
    // Every action ran again: the rebuilt archive is kept too.
    assert_eq!(
        fs::read(ws.path("mlbuild-out/.audit/p/art/art.tar.zst")).unwrap(),
        fs::read(ws.path(archive)).unwrap()
    );

    // The artifact directory works the same; without the signing key only the signature
    // cannot be rebuilt, and the verdict says so.
    let run = run_env(
        &ws,
        &["audit", "--artifact", "mlbuild-out/p/art/art", "--key", key],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(saved_report(&ws)["verdict"], "content_reproduced");
    assert!(
        run.stderr.contains("the rebuild is unsigned"),
        "{}",
        run.stderr
    );

    // A tampered archive fails verification, by name.
    fs::create_dir_all(ws.path("copy")).unwrap();
    let mut bytes = fs::read(ws.path(archive)).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(ws.path("copy/art.tar.zst"), bytes).unwrap();
    let provenance = ["--provenance", "mlbuild-out/p/art.intoto.jsonl"];
    let args = [
        &["audit", "--artifact", "copy/art.tar.zst", "--key", key][..],
        &provenance,
    ]
    .concat();
    let run = run_env(&ws, &args, &signing);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("`copy/art.tar.zst`"), "{}", run.stderr);
    assert_eq!(saved_report(&ws)["verdict"], "signature_invalid");

    // So does a directory with an edited file, naming the file.
    copy_dir(&ws.path("mlbuild-out/p/art/art"), &ws.path("copy/art"));
    fs::write(ws.path("copy/art/data.csv"), "a,b\n9,9\n").unwrap();
    let args = [
        &["audit", "--artifact", "copy/art", "--key", key][..],
        &provenance,
    ]
    .concat();
    let run = run_env(&ws, &args, &signing);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("`data.csv`: modified"),
        "{}",
        run.stderr
    );

    // An edited source: the workspace no longer holds the artifact's inputs.
    ws.write("p/gen.py", &format!("{GEN}# edited\n"));
    let run = run_env(
        &ws,
        &["audit", "--artifact", archive, "--key", key],
        &signing,
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("source `p/gen.py`: changed"),
        "{}",
        run.stderr
    );
    assert!(run
        .stderr
        .contains("the workspace does not hold the artifact's inputs"));
    let report = saved_report(&ws);
    assert_eq!(report["verdict"], "inputs_changed");
    assert_eq!(report["inputs"][0]["name"], "p/gen.py");
    assert_eq!(report["inputs"][0]["change"], "changed");
    assert_eq!(report["inputs"].as_array().unwrap().len(), 1, "{report:#}");
}

#[test]
fn an_artifact_audit_names_the_stage_that_does_not_reproduce() {
    let ws = workspace(None);
    let (private, public) = ws.key_pair("key");
    let signing = [("MLBUILD_SIGNING_KEY", private.as_path())];
    let built = run_env(&ws, &["build", "//p:stamped"], &signing);
    assert_eq!(built.code, 0, "{}", built.stderr);
    let run = run_env(
        &ws,
        &[
            "audit",
            "--artifact",
            "mlbuild-out/p/stamped/stamped.tar.zst",
            "--key",
            public.to_str().unwrap(),
        ],
        &signing,
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("stages that did not reproduce: //p:stamp"),
        "{}",
        run.stderr
    );
    let report = saved_report(&ws);
    assert_eq!(report["verdict"], "not_reproduced");
    assert_eq!(action(&report, "//p:stats")["status"], "reproducible");
    let stamp = action(&report, "//p:stamp");
    assert_eq!(stamp["status"], "not_reproducible");
    assert_eq!(stamp["files"][0]["json"][0]["path"], "$.t");
    let files: Vec<&str> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(files.contains(&"stamped/stamp.json"), "{files:?}");
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.unwrap();
        let dest = to.join(entry.path().strip_prefix(from).unwrap());
        if entry.file_type().is_dir() {
            fs::create_dir_all(&dest).unwrap();
        } else {
            fs::copy(entry.path(), &dest).unwrap();
            fs::set_permissions(&dest, fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}
