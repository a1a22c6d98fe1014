//! Checks the JSON Schemas in `schema/` against the TOML files they describe.
//!
//! The schemas are what editors use to validate MLBUILD.toml and BUILD.toml as users type,
//! so they must accept every file we ship (everything under `examples/`) and every form the
//! documented format allows, and reject what the format forbids (unknown fields, wrong
//! types, unknown kinds, malformed labels). The main type is [`Validator`].

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// `MLBUILD.toml`: workspace settings.
    Workspace,
    /// `BUILD.toml`: a package's targets.
    Build,
}

/// Both schemas, compiled once. Compiling also checks each schema against the draft 2020-12
/// meta-schema, so a malformed schema fails every test here.
struct Validator {
    schemas: boon::Schemas,
    workspace: boon::SchemaIndex,
    build: boon::SchemaIndex,
}

impl Validator {
    fn new() -> Self {
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler.set_default_draft(boon::Draft::V2020_12);
        let mut compile = |file: &str| {
            let path = repo_root().join("schema").join(file);
            let path = path
                .canonicalize()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            compiler
                .compile(path.to_str().expect("utf-8 path"), &mut schemas)
                .unwrap_or_else(|e| panic!("schema `{file}` does not compile: {e:#}"))
        };
        let workspace = compile("mlbuild.schema.json");
        let build = compile("build.schema.json");
        Validator {
            schemas,
            workspace,
            build,
        }
    }

    /// Parses `text` as TOML, converts it to JSON and validates it; `Err` carries the reason.
    fn check(&self, kind: Kind, text: &str) -> Result<(), String> {
        let value: toml::Value = toml::from_str(text).map_err(|e| format!("invalid TOML: {e}"))?;
        let json: Value = serde_json::to_value(value).map_err(|e| e.to_string())?;
        let index = match kind {
            Kind::Workspace => self.workspace,
            Kind::Build => self.build,
        };
        self.schemas
            .validate(&json, index)
            .map_err(|e| format!("{e}"))
    }
}

/// Every MLBUILD.toml and BUILD.toml under `dir`, sorted, skipping build outputs.
fn config_files(dir: &Path, found: &mut Vec<(Kind, PathBuf)>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("readable dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() {
            if !name.starts_with('.') && name != "mlbuild-out" && name != "target" {
                config_files(&path, found);
            }
        } else if name == "MLBUILD.toml" {
            found.push((Kind::Workspace, path));
        } else if name == "BUILD.toml" {
            found.push((Kind::Build, path));
        }
    }
}

#[test]
fn every_example_file_matches_its_schema() {
    let validator = Validator::new();
    let mut files = Vec::new();
    config_files(&repo_root().join("examples"), &mut files);
    let workspaces = files
        .iter()
        .filter(|(k, _)| matches!(k, Kind::Workspace))
        .count();
    assert!(workspaces > 0, "no MLBUILD.toml found under examples/");
    assert!(
        files.len() > workspaces,
        "no BUILD.toml found under examples/"
    );

    let failures: Vec<String> = files
        .iter()
        .filter_map(|(kind, path)| {
            let text = fs::read_to_string(path).expect("readable example file");
            let shown = path
                .strip_prefix(repo_root())
                .unwrap_or(path)
                .display()
                .to_string();
            validator
                .check(*kind, &text)
                .err()
                .map(|e| format!("{shown}:\n{e}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "example files rejected by their schema:\n\n{}",
        failures.join("\n\n")
    );
}

/// Everything the documented format allows, each field at least once.
#[rustfmt::skip]
const VALID: &[(Kind, &str, &str)] = &[
    (Kind::Workspace, "empty file", ""),
    (
        Kind::Workspace,
        "every documented setting",
        r#"
[workspace]
name = "fraud-example"
store = "../.mlbuild-store"
source_date_epoch = 0
params = "params.toml"

[resources]
cpu = 2
gpu = 0
memory_mb = 16384
licenses = 3

[sandbox]
path = ["/usr/local/bin", "/usr/bin", "/bin"]
"#,
    ),
    (Kind::Workspace, "fractional capacity", "[resources]\ncpu = 1.5\n"),
    (
        Kind::Workspace,
        "mlflow export",
        "[export.mlflow]\ntracking_uri = \"http://127.0.0.1:5000\"\nexperiment = \"fraud\"\n",
    ),
    (Kind::Build, "empty file", ""),
    (Kind::Build, "empty target table", "[target]\n"),
    (
        Kind::Build,
        "every documented field",
        r#"
[target.raw]
kind = "command"
srcs = ["gen.py", "data/*.csv", "conf/**/*.yaml"]
deps = ["//data:raw", ":prep", "//pkg", "//:root", "//pkg/sub:name.v2+x-y"]
cmd = ["python3", "gen.py", "--out", "{out}/raw.csv", "--seed", "{params.seed}",
       "--lr", "{params.model.lr}", "--cfg", "{params_file}", "--in", "{deps.raw}/x",
       "--json", "{{\"a\": 1}}"]
outs = ["raw.csv", "plots/"]
params = { seed = 42, rows = 5000, model = { lr = 0.05 }, tags = ["a", "b"], on = true }
env = { OMP_NUM_THREADS = "1", _X = "" }
secret_env = ["API_TOKEN"]
tools = ["sh"]
resources = { cpu = 1, gpu = 0, memory_mb = 512, licenses = 1 }
timeout = 600
network = false
"#,
    ),
    (
        Kind::Build,
        "every kind",
        r#"
[target.a]
kind = "data"
cmd = ["true"]
[target.b]
kind = "features"
cmd = ["true"]
[target.c]
kind = "train"
cmd = ["true"]
[target.d]
kind = "eval"
cmd = ["true"]
[target.e]
kind = "test"
cmd = ["true"]
[target.f]
kind = "transform"
cmd = ["true"]
[target.g]
kind = "filegroup"
srcs = ["*.csv"]
[target."v1.2+build_x-y"]
cmd = ["true"]
"#,
    ),
    (
        Kind::Build,
        "labels, globs and placeholders at their edges",
        r#"
[target.a]
srcs = ["data/**", "**/*.py", "a.b/c+d-e_f.txt"]
deps = ["//a.b/c+d-e_f:g", "//:x", "//x", ":y", "//a/b/c"]
cmd = ["sh", "-c", "echo {{}} {{{out}}} {params.a.b-c}", "{deps.x}{deps.y}"]
outs = ["a/b/", "c"]
secret_env = ["A", "B"]
"#,
    ),
    (
        Kind::Build,
        "params files, sweeps and variant labels",
        r#"
[target.m]
cmd = ["python3", "train.py", "{params.train.lr}", "{out}"]
outs = ["model.json", "metrics.json"]
params_file = "//params.yaml"
param_keys = ["train.lr", "train.l2", "data-rows"]
sweep = { lr = [0.01, 0.1], opt = ["adam", "sgd"], train.l2 = [0, 1e-3], shuffle = [true, false] }
select = { metric = "eval.f1", goal = "max", file = "metrics.json" }
[target.r]
deps = [":m", "//models:m[lr=0.01,opt=adam]"]
cmd = ["cat", "{deps.m[lr=0.01,opt=adam]}/model.json"]
"#,
    ),
    (
        Kind::Build,
        "built-in kinds: validate, drift, package; nondeterministic",
        r#"
[target.v]
kind = "validate"
deps = [":gen"]
data = "{deps.gen}/data.csv"
schema = "schema.toml"
format = "csv"
[target.d]
kind = "drift"
deps = [":gen"]
data = "{deps.gen}/data.jsonl"
reference = "reference.jsonl"
params = { bins = 20, psi_fail = 0.3 }
[target.p]
kind = "package"
deps = [":gen"]
files = { "model.json" = "{deps.gen}/model.json", "serving/serve.py" = "serve.py" }
[target.gen]
cmd = ["python3", "gen.py", "{out}"]
outs = ["data.csv"]
nondeterministic = "records the wall-clock time"
"#,
    ),
    (
        Kind::Workspace,
        "a signing key file",
        "[signing]\nkey = \"~/.config/mlbuild/signing.pem\"\n",
    ),
];

#[test]
fn documented_forms_are_accepted() {
    let validator = Validator::new();
    let failures: Vec<String> = VALID
        .iter()
        .filter_map(|(kind, what, text)| {
            validator
                .check(*kind, text)
                .err()
                .map(|e| format!("{kind:?}, {what}:\n{e}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "valid files rejected:\n\n{}",
        failures.join("\n\n")
    );
}

/// Files the format forbids. Each must fail schema validation (not TOML parsing).
#[rustfmt::skip]
const INVALID: &[(Kind, &str, &str)] = &[
    // Unknown fields.
    (Kind::Workspace, "unknown table", "[cache]\nurl = \"http://x\"\n"),
    (Kind::Workspace, "misspelled workspace field", "[workspace]\nnmae = \"x\"\n"),
    (Kind::Workspace, "unknown sandbox field", "[sandbox]\nnetwork = true\n"),
    (Kind::Workspace, "top-level key", "name = \"x\"\n"),
    (Kind::Workspace, "mlflow export without a server", "[export.mlflow]\nexperiment = \"x\"\n"),
    (Kind::Workspace, "mlflow export to a directory", "[export.mlflow]\ntracking_uri = \"./mlruns\"\n"),
    (Kind::Build, "unknown target field", "[target.a]\ncmd = [\"true\"]\noutputs = [\"x\"]\n"),
    (Kind::Build, "unknown top-level table", "[targets.a]\ncmd = [\"true\"]\n"),
    // Wrong types.
    (Kind::Workspace, "name not a string", "[workspace]\nname = 3\n"),
    (Kind::Workspace, "negative source_date_epoch", "[workspace]\nsource_date_epoch = -1\n"),
    (Kind::Workspace, "fractional source_date_epoch", "[workspace]\nsource_date_epoch = 1.5\n"),
    (Kind::Workspace, "capacity as a string", "[resources]\ncpu = \"2\"\n"),
    (Kind::Workspace, "custom capacity as a string", "[resources]\nlicenses = \"3\"\n"),
    (Kind::Workspace, "sandbox path as a string", "[sandbox]\npath = \"/usr/bin\"\n"),
    (Kind::Build, "cmd as a string", "[target.a]\ncmd = \"python3 x.py\"\n"),
    (Kind::Build, "empty cmd", "[target.a]\ncmd = []\n"),
    (Kind::Build, "deps as a string", "[target.a]\ncmd = [\"true\"]\ndeps = \":b\"\n"),
    (Kind::Build, "timeout as a string", "[target.a]\ncmd = [\"true\"]\ntimeout = \"10\"\n"),
    (Kind::Build, "zero timeout", "[target.a]\ncmd = [\"true\"]\ntimeout = 0\n"),
    (Kind::Build, "network as a string", "[target.a]\ncmd = [\"true\"]\nnetwork = \"yes\"\n"),
    (Kind::Build, "env value not a string", "[target.a]\ncmd = [\"true\"]\nenv = { N = 1 }\n"),
    (Kind::Build, "params not a table", "[target.a]\ncmd = [\"true\"]\nparams = [1]\n"),
    (Kind::Build, "negative resource", "[target.a]\ncmd = [\"true\"]\nresources = { cpu = -1 }\n"),
    (Kind::Build, "target not a table", "[target]\na = 1\n"),
    // Bad kinds.
    (Kind::Build, "unknown kind", "[target.a]\nkind = \"training\"\ncmd = [\"true\"]\n"),
    (Kind::Build, "kind not a string", "[target.a]\nkind = 1\ncmd = [\"true\"]\n"),
    (Kind::Build, "command without cmd", "[target.a]\nsrcs = [\"x.py\"]\n"),
    (Kind::Build, "data stage without cmd", "[target.a]\nkind = \"data\"\n"),
    (Kind::Build, "filegroup with cmd", "[target.a]\nkind = \"filegroup\"\ncmd = [\"true\"]\n"),
    (Kind::Build, "filegroup with outs", "[target.a]\nkind = \"filegroup\"\nouts = [\"x\"]\n"),
    // Names, labels, paths, placeholders.
    (Kind::Build, "space in target name", "[target.\"a b\"]\ncmd = [\"true\"]\n"),
    (Kind::Build, "slash in target name", "[target.\"a/b\"]\ncmd = [\"true\"]\n"),
    (Kind::Build, "dot-dot target name", "[target.\"..\"]\ncmd = [\"true\"]\n"),
    (Kind::Build, "label without //", "[target.a]\ncmd = [\"true\"]\ndeps = [\"models:fraud\"]\n"),
    (Kind::Build, "label with ..", "[target.a]\ncmd = [\"true\"]\ndeps = [\"//a/../b:c\"]\n"),
    (Kind::Build, "empty label name", "[target.a]\ncmd = [\"true\"]\ndeps = [\"//a:\"]\n"),
    (Kind::Build, "bare //", "[target.a]\ncmd = [\"true\"]\ndeps = [\"//\"]\n"),
    (Kind::Build, "pattern as a dep", "[target.a]\ncmd = [\"true\"]\ndeps = [\"//...\"]\n"),
    (Kind::Build, "absolute src", "[target.a]\ncmd = [\"true\"]\nsrcs = [\"/etc/passwd\"]\n"),
    (Kind::Build, "src leaving the package", "[target.a]\ncmd = [\"true\"]\nsrcs = [\"../x.py\"]\n"),
    (Kind::Build, "out leaving the output dir", "[target.a]\ncmd = [\"true\"]\nouts = [\"a/../../x\"]\n"),
    (Kind::Build, "unknown placeholder", "[target.a]\ncmd = [\"python3\", \"{output}/x\"]\n"),
    (Kind::Build, "unbalanced brace", "[target.a]\ncmd = [\"echo\", \"{out\"]\n"),
    (Kind::Build, "bad env name", "[target.a]\ncmd = [\"true\"]\nenv = { \"1X\" = \"a\" }\n"),
    (Kind::Build, "bad secret_env name", "[target.a]\ncmd = [\"true\"]\nsecret_env = [\"A-B\"]\n"),
    (Kind::Build, "reserved env name", "[target.a]\ncmd = [\"true\"]\nenv = { HOME = \"/root\" }\n"),
    (Kind::Build, "reserved secret_env name", "[target.a]\ncmd = [\"true\"]\nsecret_env = [\"PATH\"]\n"),
    (Kind::Build, "duplicate secret_env", "[target.a]\ncmd = [\"true\"]\nsecret_env = [\"T\", \"T\"]\n"),
    (Kind::Build, "duplicate out", "[target.a]\ncmd = [\"true\"]\nouts = [\"m.json\", \"m.json\"]\n"),
    (Kind::Build, "tool with a space", "[target.a]\ncmd = [\"true\"]\ntools = [\"my tool\"]\n"),
    (Kind::Build, "filegroup without srcs", "[target.a]\nkind = \"filegroup\"\n"),
    (Kind::Build, "filegroup with empty srcs", "[target.a]\nkind = \"filegroup\"\nsrcs = []\n"),
    (Kind::Build, "src with ./", "[target.a]\ncmd = [\"true\"]\nsrcs = [\"./x.py\"]\n"),
    (Kind::Build, "src naming a directory", "[target.a]\ncmd = [\"true\"]\nsrcs = [\"data/\"]\n"),
    (Kind::Build, "src with a backslash", "[target.a]\ncmd = [\"true\"]\nsrcs = [\"data\\\\x.csv\"]\n"),
    (Kind::Build, "src with an empty component", "[target.a]\ncmd = [\"true\"]\nsrcs = [\"data//x.csv\"]\n"),
    (Kind::Build, "space in label package", "[target.a]\ncmd = [\"true\"]\ndeps = [\"//a b:c\"]\n"),
    (Kind::Build, "recursive pattern as a dep", "[target.a]\ncmd = [\"true\"]\ndeps = [\"//models/...\"]\n"),
    (Kind::Build, "bad target resource name", "[target.a]\ncmd = [\"true\"]\nresources = { \"gpu-mem\" = 1 }\n"),
    (Kind::Workspace, "relative sandbox path", "[sandbox]\npath = [\"bin\"]\n"),
    (Kind::Workspace, "sandbox path with a colon", "[sandbox]\npath = [\"/usr/bin:/bin\"]\n"),
    (Kind::Workspace, "bad resource name", "[resources]\n\"gpu-mem\" = 1\n"),
    (Kind::Build, "empty sweep axis", "[target.a]\ncmd = [\"true\"]\nsweep = { lr = [] }\nselect = { metric = \"f1\", goal = \"max\" }\n"),
    (Kind::Build, "sweep axis not a list", "[target.a]\ncmd = [\"true\"]\nsweep = { lr = 0.1 }\nselect = { metric = \"f1\", goal = \"max\" }\n"),
    (Kind::Build, "select without sweep", "[target.a]\ncmd = [\"true\"]\nselect = { metric = \"f1\", goal = \"max\" }\n"),
    (Kind::Build, "unknown select goal", "[target.a]\ncmd = [\"true\"]\nsweep = { lr = [1] }\nselect = { metric = \"f1\", goal = \"up\" }\n"),
    (Kind::Build, "bad param key", "[target.a]\ncmd = [\"true\"]\nparam_keys = [\"train..lr\"]\n"),
    (Kind::Build, "validate without schema", "[target.a]\nkind = \"validate\"\ndata = \"d.csv\"\n"),
    (Kind::Build, "drift without reference", "[target.a]\nkind = \"drift\"\ndata = \"d.csv\"\n"),
    (Kind::Build, "package without files", "[target.a]\nkind = \"package\"\n"),
    (Kind::Build, "package with cmd", "[target.a]\nkind = \"package\"\nfiles = { m = \"m\" }\ncmd = [\"true\"]\n"),
    (Kind::Build, "validate with outs", "[target.a]\nkind = \"validate\"\ndata = \"d.csv\"\nschema = \"s.toml\"\nouts = [\"x\"]\n"),
    (Kind::Build, "data on a command", "[target.a]\ncmd = [\"true\"]\ndata = \"d.csv\"\n"),
    (Kind::Build, "reference on validate", "[target.a]\nkind = \"validate\"\ndata = \"d.csv\"\nschema = \"s.toml\"\nreference = \"r.csv\"\n"),
    (Kind::Build, "files on drift", "[target.a]\nkind = \"drift\"\ndata = \"d.csv\"\nreference = \"r.csv\"\nfiles = { m = \"m\" }\n"),
    (Kind::Build, "unknown data format", "[target.a]\nkind = \"validate\"\ndata = \"d\"\nschema = \"s.toml\"\nformat = \"parquet\"\n"),
    (Kind::Build, "package writing its own manifest", "[target.a]\nkind = \"package\"\nfiles = { \"manifest.json\" = \"m.json\" }\n"),
    (Kind::Build, "empty nondeterministic reason", "[target.a]\ncmd = [\"true\"]\nnondeterministic = \"\"\n"),
    (Kind::Workspace, "inline signing key", "[signing]\nkey = \"-----BEGIN PRIVATE KEY-----\"\n"),
    (Kind::Workspace, "unknown signing field", "[signing]\nkey = \"k.pem\"\npassword = \"x\"\n"),
];

#[test]
fn forbidden_forms_are_rejected() {
    let validator = Validator::new();
    let accepted: Vec<String> = INVALID
        .iter()
        .filter(|(kind, what, text)| {
            // A case that is not even TOML would pass for the wrong reason.
            toml::from_str::<toml::Value>(text)
                .unwrap_or_else(|e| panic!("case `{what}` is not valid TOML: {e}"));
            validator.check(*kind, text).is_ok()
        })
        .map(|(kind, what, _)| format!("{kind:?}: {what}"))
        .collect();
    assert!(
        accepted.is_empty(),
        "invalid files accepted by the schema:\n{}",
        accepted.join("\n")
    );
}

#[test]
fn rejection_names_the_offending_field() {
    let validator = Validator::new();
    let err = validator
        .check(
            Kind::Build,
            "[target.fraud]\ncmd = [\"true\"]\nouptuts = [\"x\"]\n",
        )
        .expect_err("unknown field must be rejected");
    assert!(
        err.contains("ouptuts"),
        "error does not name the field: {err}"
    );
    assert!(
        err.contains("/target/fraud"),
        "error does not locate the field: {err}"
    );
}
