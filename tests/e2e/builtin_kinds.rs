//! The built-in kinds (`validate`, `drift`, `package`) declared in BUILD.toml and built by
//! `mlbuild build`: lowered to sandboxed, cached actions of the mlbuild binary itself,
//! signed when a key is configured, with SLSA provenance beside the artifact.

use std::path::Path;

use crate::support::{parse_built, Built, Ws};

const GEN: &str = r#"import sys
shift = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
with open(sys.argv[1] + "/data.csv", "w") as w:
    w.write("id,amount,kind\n")
    for i in range(2000):
        w.write(f"{i},{(i * 37 % 101) * 1.5 + shift:.2f},{'ab'[i % 2]}\n")
"#;

const SCHEMA: &str = r#"[dataset]
min_rows = 100

[columns.id]
type = "int"
unique = true

[columns.amount]
type = "float"
min = 0
max = 1000

[columns.kind]
type = "category"
allowed = ["a", "b"]
"#;

fn reference() -> String {
    let mut text = String::from("id,amount,kind\n");
    for i in 0..2000 {
        text.push_str(&format!(
            "{i},{:.2},{}\n",
            ((i * 37 + 11) % 101) as f64 * 1.5,
            ["a", "b"][(i % 2) as usize]
        ));
    }
    text
}

/// A workspace with a generator, a validation, a drift check and a package.
fn workspace(shift: &str) -> Ws {
    let ws = Ws::new();
    ws.write("d/gen.py", GEN);
    ws.write("d/schema.toml", SCHEMA);
    ws.write("d/reference.csv", &reference());
    ws.write("d/serve.py", "print('serving')\n");
    ws.write(
        "d/BUILD.toml",
        &format!(
            r#"
[target.gen]
srcs = ["gen.py"]
cmd = ["python3", "gen.py", "{{out}}", "{shift}"]
outs = ["data.csv"]

[target.check]
kind = "validate"
deps = [":gen"]
data = "{{deps.gen}}/data.csv"
schema = "schema.toml"

[target.shift]
kind = "drift"
deps = [":gen"]
data = "{{deps.gen}}/data.csv"
reference = "reference.csv"
schema = "schema.toml"
params = {{ psi_fail = 0.25 }}

[target.art]
kind = "package"
deps = [":gen", ":check", ":shift"]
files = {{ "data.csv" = "{{deps.gen}}/data.csv", "report.json" = "{{deps.check}}/report.json", "serving/serve.py" = "serve.py" }}
"#
        ),
    );
    ws
}

/// `ws`'s key pair, as paths in text.
fn keypair(ws: &Ws) -> (String, String) {
    let (private, public) = ws.key_pair("signing");
    (
        private.to_string_lossy().into_owned(),
        public.to_string_lossy().into_owned(),
    )
}

/// `mlbuild --json build ARGS` with `MLBUILD_SIGNING_KEY` set to `key`.
fn signed_build(ws: &Ws, key: &str, args: &[&str]) -> Built {
    let mut full = vec!["--json", "build"];
    full.extend_from_slice(args);
    let out = ws.command(&full).env("MLBUILD_SIGNING_KEY", key).output();
    parse_built(&out.expect("run mlbuild"))
}

#[test]
fn built_in_kinds_build_cache_and_report() {
    let ws = workspace("0");
    let b = ws.build_ok(&["//d:art"]);
    assert_eq!(b.executed, 4, "{b:#?}");
    assert!(
        b.warnings()
            .iter()
            .any(|w| w.starts_with("//d:art is unsigned and without provenance")),
        "{b:#?}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&ws.read("mlbuild-out/d/check/report.json")).unwrap();
    assert_eq!(report["verdict"], "pass", "{report}");
    assert!(ws.path("mlbuild-out/d/check/stats.json").is_file());
    let drift: serde_json::Value =
        serde_json::from_str(&ws.read("mlbuild-out/d/shift/drift.json")).unwrap();
    assert_ne!(drift["verdict"], "fail", "{drift}");
    for file in [
        "art.tar.zst",
        "art/data.csv",
        "art/report.json",
        "art/serving/serve.py",
        "art/manifest.json",
    ] {
        assert!(
            ws.path(&format!("mlbuild-out/d/art/{file}")).is_file(),
            "{file}"
        );
    }
    assert!(!ws.path("mlbuild-out/d/art/art/model.sig").exists());

    // Built-in actions are cached like any other.
    let again = ws.build_ok(&["//d:art"]);
    assert_eq!((again.executed, again.cached), (0, 4), "{again:#?}");
}

#[test]
fn failing_validation_and_drift_fail_the_build_with_their_reasons() {
    // Shifted amounts break the schema's max and drift far from the reference.
    let ws = workspace("2000");
    let b = ws.build(&["--keep-going", "//d:check", "//d:shift"]);
    assert_eq!(b.code, 1, "{b:#?}");
    assert_eq!(b.status["//d:check"], "failed");
    assert_eq!(b.status["//d:shift"], "failed");
    // With --json, failures are reported in the events.
    let message = |label: &str| {
        b.events
            .iter()
            .find(|e| e["event"] == "target_finished" && e["label"] == label)
            .and_then(|e| e["message"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let (check, shift) = (message("//d:check"), message("//d:shift"));
    assert!(check.contains("amount") && check.contains("max"), "{check}");
    assert!(
        shift.contains("amount") && shift.contains("fail"),
        "{shift}"
    );
    assert!(
        shift.contains("mlbuild-out/.logs/d/shift.stderr"),
        "{shift}"
    );
    let log = ws.read("mlbuild-out/.logs/d/shift.stderr");
    assert!(
        log.contains("amount"),
        "the drift log names the column: {log}"
    );
}

#[test]
fn data_rule_failures_name_workspace_paths_not_the_sandbox() {
    // The rules read their data at absolute paths inside the exec root
    // (`…/store/tmp/exec-…/root/mlbuild-out/…`); the failure shows the workspace path, on
    // one line, without a box nested in the build's.
    let ws = workspace("2000");
    let check = ws.run(&["build", "//d:check"]);
    assert_eq!(check.code, 1, "{}", check.stderr);
    insta::assert_snapshot!("validate_failed", check.stderr_filtered(&ws));
    let shift = ws.run(&["build", "//d:shift"]);
    assert_eq!(shift.code, 1, "{}", shift.stderr);
    insta::assert_snapshot!("drift_failed", shift.stderr_filtered(&ws));
}

#[test]
fn a_signed_artifact_gets_provenance_and_keeps_the_key_secret() {
    let ws = workspace("0");
    let (private, public) = keypair(&ws);
    let b = signed_build(&ws, &private, &["//d:art"]);
    assert_eq!(b.code, 0, "{b:#?}");
    assert!(
        b.stderr.contains("signed provenance of //d:art"),
        "{}",
        b.stderr
    );

    let run = ws.run(&["verify", "mlbuild-out/d/art/art.tar.zst", "--key", &public]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = ws.run(&["verify", "mlbuild-out/d/art/art", "--key", &public]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    // The provenance is signed by the same key and names the artifact's bytes and inputs.
    let key = mlbuild_sign::PublicKey::load(Path::new(&public)).unwrap();
    let bytes = std::fs::read(ws.path("mlbuild-out/d/art.intoto.jsonl")).unwrap();
    let statement = mlbuild_sign::provenance::verify(&bytes, &key).expect("provenance verifies");
    let archive_sha =
        mlbuild_sign::model::sha256_file(&ws.path("mlbuild-out/d/art/art.tar.zst")).unwrap();
    let archive = statement
        .subject
        .iter()
        .find(|s| s.name.as_deref() == Some("art.tar.zst"))
        .expect("archive subject");
    assert_eq!(archive.digest["sha256"], archive_sha);
    assert!(statement
        .subject
        .iter()
        .any(|s| s.name.as_deref() == Some("art/serving/serve.py")));
    // ... and matches the published schema.
    let mut schemas = boon::Schemas::new();
    let schema_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../schema/provenance.schema.json")
        .canonicalize()
        .unwrap();
    let index = boon::Compiler::new()
        .compile(schema_path.to_str().unwrap(), &mut schemas)
        .unwrap();
    let json = serde_json::to_value(&statement).unwrap();
    if let Err(e) = schemas.validate(&json, index) {
        panic!("provenance does not match its schema: {e}\n{json:#}");
    }
    let build = &statement.predicate.build_definition;
    assert_eq!(build.external_parameters.target, "//d:art");
    assert_eq!(
        build.external_parameters.params["//d:shift"]["psi_fail"],
        0.25
    );
    let names: Vec<&str> = build
        .resolved_dependencies
        .iter()
        .filter_map(|d| d.name.as_deref())
        .collect();
    for expected in [
        "d/gen.py",
        "d/schema.toml",
        "d/reference.csv",
        "d/serve.py",
        "python3",
        "mlbuild",
        "mlbuild-out/d/gen/data.csv",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let gen_py = blake3::hash(GEN.as_bytes()).to_hex().to_string();
    assert!(build
        .resolved_dependencies
        .iter()
        .any(|d| d.name.as_deref() == Some("d/gen.py") && d.digest["blake3"] == gen_py));

    // A cache hit keeps the provenance of the build that made the artifact.
    let again = signed_build(&ws, &private, &["//d:art"]);
    assert_eq!(again.executed, 0, "{again:#?}");
    assert_eq!(
        std::fs::read(ws.path("mlbuild-out/d/art.intoto.jsonl")).unwrap(),
        bytes
    );

    // An upstream edit that leaves its output unchanged keeps the artifact cached, but the
    // provenance must now list the edited source.
    let edited = format!("# a comment changes the source, not the data\n{GEN}");
    ws.write("d/gen.py", &edited);
    let b = signed_build(&ws, &private, &["//d:art"]);
    assert_eq!(b.status["//d:gen"], "executed", "{b:#?}");
    assert_eq!(b.status["//d:art"], "cached", "{b:#?}");
    let bytes = std::fs::read(ws.path("mlbuild-out/d/art.intoto.jsonl")).unwrap();
    let statement = mlbuild_sign::provenance::verify(&bytes, &key).unwrap();
    let edited_digest = blake3::hash(edited.as_bytes()).to_hex().to_string();
    assert!(statement
        .predicate
        .build_definition
        .resolved_dependencies
        .iter()
        .any(|d| d.name.as_deref() == Some("d/gen.py") && d.digest["blake3"] == edited_digest));

    // The private key is in no blob of the store and in no log.
    let pem = std::fs::read_to_string(&private).unwrap();
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let needle = &body[..32];
    for entry in walkdir::WalkDir::new(ws.store())
        .into_iter()
        .chain(walkdir::WalkDir::new(ws.path("mlbuild-out")))
    {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            let data = std::fs::read(entry.path()).unwrap();
            assert!(
                !String::from_utf8_lossy(&data).contains(needle),
                "the private key leaked into {}",
                entry.path().display()
            );
        }
    }
}

#[test]
fn signing_state_is_part_of_the_package_key() {
    let ws = workspace("0");
    ws.build_ok(&["//d:art"]);
    let (private, _) = keypair(&ws);
    // Adding a key re-packages (signs) without rerunning anything upstream, and `why`
    // says which variable changed.
    let b = signed_build(&ws, &private, &["//d:art"]);
    assert_eq!(b.code, 0, "{b:#?}");
    assert_eq!(b.status["//d:art"], "executed");
    assert_eq!(b.executed, 1, "{b:#?}");
    let started = b
        .events
        .iter()
        .find(|e| e["event"] == "action_started" && e["label"] == "//d:art")
        .unwrap();
    assert!(
        started["reasons"][0]
            .as_str()
            .unwrap()
            .contains("MLBUILD_SIGNING_KEY_ID"),
        "{started}"
    );
    assert!(ws.path("mlbuild-out/d/art/art/model.sig").is_file());
    // Dropping the key does not reuse the signed artifact for an unsigned build.
    let unsigned = ws.build_ok(&["//d:art"]);
    assert_eq!(
        unsigned.status["//d:art"], "cached",
        "the unsigned result was cached first"
    );
    assert!(!ws.path("mlbuild-out/d/art/art/model.sig").exists());
}

#[test]
fn bad_built_in_declarations_are_clear_errors() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "[target.v]\nkind = \"validate\"\ndata = \"d.csv\"\n",
            "validate without schema",
            &["`validate` target `//p:v` has no `schema`", "BUILD.toml:1"],
        ),
        (
            "[target.v]\nkind = \"drift\"\ndata = \"d.csv\"\nreference = \"r.csv\"\nparams = { psi_fial = 0.3 }\n",
            "misspelled drift param",
            &["unknown drift param `psi_fial`", "did you mean `psi_fail`"],
        ),
        (
            "[target.v]\nkind = \"validate\"\ndata = \"../outside.csv\"\nschema = \"s.toml\"\n",
            "path leaving the package",
            &["invalid path `../outside.csv` in `data`", "BUILD.toml:3"],
        ),
        (
            "[target.v]\nkind = \"validate\"\ndata = \"/etc/passwd\"\nschema = \"s.toml\"\n",
            "absolute path",
            &["invalid path `/etc/passwd` in `data`"],
        ),
        (
            "[target.p]\nkind = \"package\"\nfiles = { \"a\" = \"a\" }\ncmd = [\"true\"]\n",
            "package with a cmd",
            &["`package` target `//p:p` cannot have `cmd`", "BUILD.toml:4"],
        ),
        (
            "[target.p]\nkind = \"package\"\nfiles = { \"../x\" = \"a\" }\n",
            "artifact path leaving the artifact",
            &["invalid artifact path `../x`"],
        ),
        (
            "[target.p]\nkind = \"package\"\nfiles = { \"model.sig\" = \"a\" }\n",
            "reserved artifact name",
            &["`model.sig` in `files` of `//p:p` is written by mlbuild"],
        ),
        (
            "[target.c]\ncmd = [\"true\"]\nreference = \"r.csv\"\n",
            "built-in field on a command",
            &["`reference` is not a field of `command` target `//p:c`"],
        ),
        (
            "[target.v]\nkind = \"validate\"\ndata = \"{deps.nope}/d.csv\"\nschema = \"s.toml\"\n",
            "unknown dependency placeholder",
            &["`{deps.nope}`", "does not resolve"],
        ),
        (
            "[target.c]\ncmd = [\"true\"]\nnondeterministic = \" \"\n",
            "empty nondeterministic reason",
            &["`nondeterministic` of `//p:c` needs a reason"],
        ),
    ];
    for (build, what, expected) in cases {
        let ws = Ws::new();
        ws.write("p/BUILD.toml", build);
        let run = ws.run(&["build", "//p:all"]);
        assert_eq!(run.code, 2, "{what}: {}", run.stderr);
        for needle in *expected {
            assert!(
                run.stderr.contains(needle),
                "{what}: `{needle}` not in:\n{}",
                run.stderr
            );
        }
    }
}

#[test]
fn a_missing_or_bad_signing_key_is_a_clear_error() {
    let ws = workspace("0");
    let missing = ws.dir.path().join("nope.pem");
    let b = signed_build(&ws, missing.to_str().unwrap(), &["//d:art"]);
    assert_eq!(b.code, 2, "{b:#?}");
    assert!(
        b.stderr.contains("cannot read the signing key"),
        "{}",
        b.stderr
    );
    let junk = ws.dir.path().join("junk.pem");
    std::fs::write(&junk, "not a key").unwrap();
    let b = signed_build(&ws, junk.to_str().unwrap(), &["//d:art"]);
    assert_eq!(b.code, 2, "{b:#?}");
    assert!(
        b.stderr.contains("is not a usable signing key"),
        "{}",
        b.stderr
    );
}

#[test]
fn a_schema_with_an_unknown_type_fails_validation_with_file_and_line() {
    let ws = workspace("0");
    ws.write(
        "d/schema.toml",
        "[columns.id]\ntype = \"int\"\n\n[columns.amount]\ntype = \"money\"\n",
    );
    let run = ws.run(&["build", "//d:check"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("`//d:check` failed"), "{}", run.stderr);
    assert!(
        run.stderr.contains("unknown column type `money`"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("schema.toml:5"), "{}", run.stderr);
    assert!(
        run.stderr.contains("mlbuild-out/.logs/d/check.stderr"),
        "{}",
        run.stderr
    );
}
