//! Python environments as targets: a locked environment built once with uv and mounted
//! read-only at a fixed path into its dependents, whose keys follow its digest; existing
//! environments declared and hashed, undeclared ones refused; thread variables.
//!
//! The locked environments here hold only `six` (one small wheel), so each build costs
//! a download of ~11 KB; the scikit-learn environment is built once, in `sklearn.rs`.

// The test venv (its `uv`), as in `example.rs`: one venv, shared through its file lock.
#[allow(clippy::duplicate_mod)]
#[path = "../../crates/mlbuild-sign/tests/venv/mod.rs"]
mod venv;

use std::process::Command;

use crate::support::{parse_built, Built, Ws};

/// `six` 1.16.0 and 1.17.0, pinned with the hashes PyPI publishes (written by
/// `uv pip compile --generate-hashes`).
const SIX_16: &str = "six==1.16.0 \\
    --hash=sha256:1e61c37477a1626458e36f7b1d82aa5c9b094fa4802892072e49de9c60c4c926 \\
    --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254
";
const SIX_17: &str = "six==1.17.0 \\
    --hash=sha256:4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274 \\
    --hash=sha256:ff70335d468e7eb6ec65b95b99d3a2836546063f63acc5171de367e834932a81
";

/// The `uv` of the test venv (pinned in its requirements.txt).
pub fn uv() -> std::path::PathBuf {
    venv::venv().join("bin/uv")
}

/// `mlbuild ARGS` in `ws` with the test venv's `uv`.
pub fn with_uv(ws: &Ws, args: &[&str]) -> Command {
    let mut cmd = ws.command(args);
    cmd.env("MLBUILD_UV", uv());
    cmd
}

fn build(ws: &Ws, targets: &[&str]) -> Built {
    let mut args = vec!["--json", "build"];
    args.extend_from_slice(targets);
    parse_built(&with_uv(ws, &args).output().expect("run mlbuild"))
}

/// A failed target's message, unwrapped (diagnostics wrap at 80 columns).
fn failure(b: &Built, label: &str) -> String {
    let message = b
        .events
        .iter()
        .find(|e| e["event"] == "target_finished" && e["label"] == label)
        .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    flat(&message)
}

/// Text with diagnostic wrapping and gutters removed.
fn flat(text: &str) -> String {
    text.replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn locked_workspace(lock: &str) -> Ws {
    let ws = Ws::new();
    ws.write("envs/requirements.lock", lock);
    ws.write(
        "envs/BUILD.toml",
        "[target.small]\nkind = \"python_env\"\nlock = \"requirements.lock\"\npython = \"3.11\"\n",
    );
    ws.write("app/report.py", REPORT);
    ws.write(
        "app/BUILD.toml",
        r#"
[target.report]
srcs = ["report.py"]
deps = ["//envs:small"]
cmd = ["python", "report.py", "{out}", "{deps.small}"]
outs = ["report.txt"]

[target.plain]
cmd = ["sh", "-c", "echo plain > {out}/o.txt"]
outs = ["o.txt"]
"#,
    );
    ws
}

/// Reports what the action saw: the package version, the interpreter's prefix, whether
/// the environment is writable, and the thread variables.
const REPORT: &str = r#"
import os, sys, six
out, env = sys.argv[1], sys.argv[2]
try:
    open(os.path.join(sys.prefix, "probe"), "w")
    writable = "writable"
except OSError:
    writable = "read-only"
with open(os.path.join(out, "report.txt"), "w") as f:
    f.write(f"six={six.__version__}\nprefix={sys.prefix}\ndeps={env}\n{writable}\n")
    f.write(f"virtual_env={os.environ.get('VIRTUAL_ENV')}\nomp={os.environ['OMP_NUM_THREADS']}\n")
"#;

#[test]
fn a_locked_environment_is_built_once_and_mounted_read_only_at_a_fixed_path() {
    let ws = locked_workspace(SIX_16);
    let b = build(&ws, &["//..."]);
    assert_eq!(b.code, 0, "{b:#?}");
    assert_eq!(b.status["//envs:small"], "executed");
    let report = ws.read("mlbuild-out/app/report/report.txt");
    let prefix = "/mlbuild/env/envs/small";
    assert_eq!(
        report,
        format!(
            "six=1.16.0\nprefix={prefix}\ndeps={prefix}\nread-only\nvirtual_env={prefix}\nomp=1\n"
        )
    );
    let packages: serde_json::Value =
        serde_json::from_str(&ws.read("mlbuild-out/envs/small/env/packages.json")).unwrap();
    assert_eq!(packages["packages"]["six"], "1.16.0", "{packages}");
    // Plain files only: the interpreter is a copy (its bytes are in the digest), no links.
    let env_dir = ws.path("mlbuild-out/envs/small/env");
    for entry in walkdir::WalkDir::new(&env_dir) {
        let entry = entry.unwrap();
        assert!(!entry.path_is_symlink(), "{}", entry.path().display());
    }
    assert!(env_dir.join("bin/python").is_file());

    // Unchanged: nothing runs, so nothing touches the network.
    let again = build(&ws, &["//..."]);
    assert_eq!((again.executed, again.code), (0, 0), "{again:#?}");

    // Editing the stage's own source reruns only the stage.
    ws.write("app/report.py", &format!("{REPORT}\n# edited\n"));
    let edited = build(&ws, &["//..."]);
    assert_eq!(edited.status["//envs:small"], "cached");
    assert_eq!(edited.status["//app:report"], "executed");
    assert_eq!(edited.status["//app:plain"], "cached");
}

#[test]
fn a_changed_pin_rebuilds_the_environment_and_exactly_its_dependents() {
    let ws = locked_workspace(SIX_16);
    assert_eq!(build(&ws, &["//..."]).code, 0);
    ws.write("envs/requirements.lock", SIX_17);
    let status = with_uv(&ws, &["status"]).output().unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("stale       //envs:small"), "{status}");
    let b = build(&ws, &["//..."]);
    assert_eq!(b.code, 0, "{b:#?}");
    assert_eq!(b.status["//envs:small"], "executed");
    assert_eq!(b.status["//app:report"], "executed");
    assert_eq!(b.status["//app:plain"], "cached");
    assert!(ws
        .read("mlbuild-out/app/report/report.txt")
        .starts_with("six=1.17.0\n"));
    let reason = b
        .events
        .iter()
        .find(|e| e["event"] == "action_started" && e["label"] == "//app:report")
        .map(|e| e["reasons"].to_string())
        .unwrap();
    assert!(
        reason.contains("python environment `//envs:small` changed"),
        "{reason}"
    );
}

#[test]
fn a_lock_without_hashes_is_refused_unless_allowed() {
    let ws = locked_workspace("six==1.16.0\n");
    let b = build(&ws, &["//envs:small"]);
    assert_eq!(b.code, 1, "{b:#?}");
    let message = failure(&b, "//envs:small");
    assert!(
        message.contains("line 1: `six==1.16.0` has no `--hash`"),
        "{message}"
    );
    assert!(message.contains("allow_missing_hashes = true"), "{message}");

    ws.write(
        "envs/BUILD.toml",
        "[target.small]\nkind = \"python_env\"\nlock = \"requirements.lock\"\nallow_missing_hashes = true\n",
    );
    let b = build(&ws, &["//app:report"]);
    assert_eq!(b.code, 0, "{b:#?}");
}

#[test]
fn python_env_fields_are_checked_at_load_time() {
    for (build_toml, expected) in [
        (
            "[target.e]\nkind = \"python_env\"\n",
            "neither `lock` nor `path`",
        ),
        (
            "[target.e]\nkind = \"python_env\"\nlock = \"r.lock\"\npath = \"/opt/x\"\n",
            "both `lock` and `path`",
        ),
        (
            "[target.e]\nkind = \"python_env\"\nlock = \"r.lock\"\npython = \"/home/me/py\"\n",
            "invalid `python`",
        ),
        (
            "[target.e]\nkind = \"python_env\"\npath = \"/opt/x\"\npython = \"3.11\"\n",
            "only applies to an environment built from a `lock`",
        ),
        (
            "[target.e]\ncmd = [\"true\"]\nlock = \"r.lock\"\n",
            "`lock` is not a field of `command`",
        ),
        (
            "[target.e]\nkind = \"python_env\"\nlock = \"../r.lock\"\n",
            "invalid path `../r.lock`",
        ),
    ] {
        let ws = Ws::new();
        ws.write("envs/BUILD.toml", build_toml);
        let run = ws.run(&["build", "//..."]);
        assert_eq!(run.code, 2, "{build_toml}: {}", run.stderr);
        assert!(
            run.stderr.contains(expected),
            "{build_toml}: {}",
            run.stderr
        );
        assert!(run.stderr.contains("BUILD.toml:"), "{}", run.stderr);
    }
}

/// A venv made by the system interpreter, outside the workspace (whose base is a system
/// directory, so the environment's own tree is all that is hashed).
fn external_venv(ws: &Ws) -> std::path::PathBuf {
    let dir = ws.dir.path().join("venvs/ext");
    let made = Command::new("/usr/bin/python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&dir)
        .status()
        .expect("run /usr/bin/python3");
    assert!(made.success());
    let site = std::fs::read_dir(dir.join("lib"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("site-packages");
    std::fs::write(site.join("extmod.py"), "V = 1\n").unwrap();
    dir
}

#[test]
fn an_external_environment_is_declared_hashed_and_visible() {
    let ws = Ws::new();
    let venv = external_venv(&ws);
    let venv_text = venv.to_string_lossy().into_owned();
    ws.write(
        "ext/BUILD.toml",
        &format!(
            r#"
[target.host]
kind = "python_env"
path = "{venv_text}"

[target.use]
deps = [":host"]
cmd = ["python", "-c", "import extmod, sys; open(sys.argv[1] + '/o.txt', 'w').write(str(extmod.V) + ' ' + sys.prefix)", "{{out}}"]
outs = ["o.txt"]
"#
        ),
    );
    let b = ws.build(&["//ext:use"]);
    assert_eq!(b.code, 0, "{b:#?}");
    assert_eq!(
        ws.read("mlbuild-out/ext/use/o.txt"),
        format!("1 {venv_text}")
    );
    assert_eq!(ws.build(&["//ext:use"]).executed, 0);

    // A file edited inside the environment is a changed input, never silently reused.
    let site = std::fs::read_dir(venv.join("lib"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(site.join("site-packages/extmod.py"), "V = 2\n").unwrap();
    let status = ws.run(&["status", "//ext:use"]);
    assert_eq!(status.code, 1, "{}", status.stdout);
    let b = ws.build(&["//ext:use"]);
    assert_eq!(b.status["//ext:use"], "executed", "{b:#?}");
    assert_eq!(
        ws.read("mlbuild-out/ext/use/o.txt"),
        format!("2 {venv_text}")
    );
}

#[test]
fn an_undeclared_environment_is_refused_with_the_way_to_declare_it() {
    let ws = Ws::new();
    let venv = external_venv(&ws);
    let python = venv.join("bin/python");
    ws.write(
        "a/BUILD.toml",
        &format!(
            "[target.abs]\ncmd = [\"{}\", \"-c\", \"print(1)\"]\n\n[target.rel]\ncmd = [\".venv/bin/python\", \"-c\", \"print(1)\"]\n",
            python.display()
        ),
    );
    let abs = ws.run(&["build", "//a:abs"]);
    assert_eq!(abs.code, 1, "{}", abs.stderr);
    let abs = flat(&abs.stderr);
    assert!(abs.contains("is outside the system directories"), "{abs}");
    assert!(
        abs.contains(&format!("path = \"{}\"", venv.display())),
        "{abs}"
    );
    let rel = ws.run(&["build", "//a:rel"]);
    assert_eq!(rel.code, 1, "{}", rel.stderr);
    let rel = flat(&rel.stderr);
    assert!(
        rel.contains("`.venv/bin/python` is not declared in `srcs`"),
        "{rel}"
    );
    assert!(rel.contains("python_env"), "{rel}");

    ws.write(
        "MLBUILD.toml",
        &format!(
            "[sandbox]\npath = [\"{}\", \"/usr/bin\", \"/bin\"]\n",
            venv.join("bin").display()
        ),
    );
    let run = ws.run(&["build", "//a:rel"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let text = flat(&run.stderr);
    assert!(text.contains("is outside the system directories"), "{text}");
    assert!(text.contains("MLBUILD.toml:2:9"), "{text}");
}

#[test]
fn thread_variables_follow_the_declared_cpus_and_enter_the_key() {
    let ws = Ws::new();
    ws.write("MLBUILD.toml", "[resources]\ncpu = 4\n");
    let script =
        "env | grep -E '^(OMP|MKL|OPENBLAS)_NUM_THREADS|^PYTHONHASHSEED' | sort > {out}/env.txt";
    let target = |cpu: u32, extra: &str| {
        format!("[target.t]\ncmd = [\"sh\", \"-c\", \"{script}\"]\nouts = [\"env.txt\"]\nresources = {{ cpu = {cpu} }}\n{extra}")
    };
    ws.write("a/BUILD.toml", &target(1, ""));
    assert_eq!(ws.build(&["//a:t"]).code, 0);
    assert_eq!(
        ws.read("mlbuild-out/a/t/env.txt"),
        "MKL_NUM_THREADS=1\nOMP_NUM_THREADS=1\nOPENBLAS_NUM_THREADS=1\nPYTHONHASHSEED=0\n"
    );
    ws.write("a/BUILD.toml", &target(3, ""));
    let why = ws.run(&["why", "//a:t"]);
    assert!(why.stdout.contains("OMP_NUM_THREADS"), "{}", why.stdout);
    let b = ws.build(&["//a:t"]);
    assert_eq!(b.executed, 1, "{b:#?}");
    assert_eq!(
        ws.read("mlbuild-out/a/t/env.txt"),
        "MKL_NUM_THREADS=3\nOMP_NUM_THREADS=3\nOPENBLAS_NUM_THREADS=3\nPYTHONHASHSEED=0\n"
    );
    // A target's own values win, and are the key's.
    ws.write(
        "a/BUILD.toml",
        &target(
            3,
            "env = { OMP_NUM_THREADS = \"2\", PYTHONHASHSEED = \"7\" }\n",
        ),
    );
    assert_eq!(ws.build(&["//a:t"]).executed, 1);
    assert_eq!(
        ws.read("mlbuild-out/a/t/env.txt"),
        "MKL_NUM_THREADS=3\nOMP_NUM_THREADS=2\nOPENBLAS_NUM_THREADS=3\nPYTHONHASHSEED=7\n"
    );
}

#[test]
fn a_locked_environment_needs_the_namespace_sandbox() {
    let ws = locked_workspace(SIX_16);
    let out = with_uv(&ws, &["--json", "build", "//envs:small"])
        .env("MLBUILD_SANDBOX", "plain")
        .output()
        .unwrap();
    let b = parse_built(&out);
    assert_eq!(b.code, 1, "{b:#?}");
    let message = failure(&b, "//envs:small");
    assert!(
        message.contains("which only the namespace sandbox can do"),
        "{message}"
    );
}

/// `uv.lock` (with its `pyproject.toml`) and PEP 751 `pylock.toml`, as uv 0.13 writes them.
const UV_LOCK: &str = r#"version = 1
revision = 5
requires-python = ">=3.11"

[[package]]
name = "app"
version = "0.1.0"
source = { virtual = "." }
dependencies = [
    { name = "six" },
]

[package.metadata]
requires-dist = [{ name = "six", specifier = "==1.16.0" }]

[[package]]
name = "six"
version = "1.16.0"
source = { registry = "https://pypi.org/simple" }
sdist = { url = "https://files.pythonhosted.org/packages/71/39/171f1c67cd00715f190ba0b100d606d440a28c93c7714febeca8b79af85e/six-1.16.0.tar.gz", hash = "sha256:1e61c37477a1626458e36f7b1d82aa5c9b094fa4802892072e49de9c60c4c926", size = 34041, upload-time = "2021-05-05T14:18:18.379Z" }
wheels = [
    { url = "https://files.pythonhosted.org/packages/d9/5a/e7c31adbe875f2abbb91bd84cf2dc52d792b5a01506781dbcf25c91daf11/six-1.16.0-py2.py3-none-any.whl", hash = "sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254", size = 11053, upload-time = "2021-05-05T14:18:17.237Z" },
]
"#;
const PYPROJECT: &str = "[project]\nname = \"app\"\nversion = \"0.1.0\"\nrequires-python = \">=3.11\"\ndependencies = [\"six==1.16.0\"]\n";
const PYLOCK: &str = r#"lock-version = "1.0"
created-by = "uv"
requires-python = ">=3.11"

[[packages]]
name = "six"
version = "1.16.0"
sdist = { url = "https://files.pythonhosted.org/packages/71/39/171f1c67cd00715f190ba0b100d606d440a28c93c7714febeca8b79af85e/six-1.16.0.tar.gz", upload-time = 2021-05-05T14:18:18Z, size = 34041, hashes = { sha256 = "1e61c37477a1626458e36f7b1d82aa5c9b094fa4802892072e49de9c60c4c926" } }
wheels = [{ url = "https://files.pythonhosted.org/packages/d9/5a/e7c31adbe875f2abbb91bd84cf2dc52d792b5a01506781dbcf25c91daf11/six-1.16.0-py2.py3-none-any.whl", upload-time = 2021-05-05T14:18:17Z, size = 11053, hashes = { sha256 = "8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254" } }]
"#;

#[test]
fn uv_lock_and_pylock_environments_build_and_follow_their_project_file() {
    let ws = Ws::new();
    ws.write("envs/uv.lock", UV_LOCK);
    ws.write("envs/pyproject.toml", PYPROJECT);
    ws.write("envs/pylock.toml", PYLOCK);
    ws.write(
        "envs/BUILD.toml",
        "[target.uvlock]\nkind = \"python_env\"\nlock = \"uv.lock\"\npython = \"3.11\"\n\n\
         [target.pylock]\nkind = \"python_env\"\nlock = \"pylock.toml\"\npython = \"3.11\"\n",
    );
    let user = |env: &str| {
        format!(
            "[target.{env}]\ndeps = [\"//envs:{env}\"]\n\
             cmd = [\"python\", \"-c\", \"import six, sys; open(sys.argv[1] + '/v.txt', 'w').write(six.__version__)\", \"{{out}}\"]\n\
             outs = [\"v.txt\"]\n\n"
        )
    };
    ws.write("app/BUILD.toml", &(user("uvlock") + &user("pylock")));
    let b = build(&ws, &["//..."]);
    assert_eq!(b.code, 0, "{b:#?}");
    assert_eq!(ws.read("mlbuild-out/app/uvlock/v.txt"), "1.16.0");
    assert_eq!(ws.read("mlbuild-out/app/pylock/v.txt"), "1.16.0");
    // `uv sync` reads the project beside the lock, so it is an input of the environment.
    ws.write("envs/pyproject.toml", &format!("{PYPROJECT}# edited\n"));
    let b = build(&ws, &["//..."]);
    assert_eq!(b.status["//envs:uvlock"], "executed", "{b:#?}");
    assert_eq!(b.status["//envs:pylock"], "cached", "{b:#?}");
}

#[test]
fn gc_drops_linked_environments_and_download_caches_and_the_next_build_relinks() {
    let ws = locked_workspace(SIX_16);
    assert_eq!(build(&ws, &["//..."]).code, 0);
    let (trees, cache) = (ws.store().join("envs"), ws.store().join("cache/uv"));
    assert!(
        trees.read_dir().unwrap().next().is_some(),
        "no linked environment"
    );
    assert!(cache.join("wheels-v8").exists() || cache.read_dir().unwrap().next().is_some());
    let gc = ws.run(&["gc", "--max-size", "100G"]);
    assert_eq!(gc.code, 0, "{}", gc.stderr);
    assert!(!trees.exists() && !cache.exists());
    // The environment's result is still cached; a dependent that reruns links it again.
    ws.write("app/report.py", &format!("{REPORT}\n# rerun\n"));
    let b = build(&ws, &["//..."]);
    assert_eq!(b.status["//envs:small"], "cached", "{b:#?}");
    assert_eq!(b.status["//app:report"], "executed", "{b:#?}");
    assert!(ws
        .read("mlbuild-out/app/report/report.txt")
        .starts_with("six=1.16.0\n"));
}

#[test]
fn env_may_name_the_environment_instead_of_deps() {
    let ws = locked_workspace(SIX_16);
    ws.write(
        "app/BUILD.toml",
        r#"
[target.report]
srcs = ["report.py"]
env = "//envs:small"
cmd = ["python", "report.py", "{out}", "{deps.small}"]
outs = ["report.txt"]

[target.plain]
cmd = ["sh", "-c", "echo plain > {out}/o.txt"]
outs = ["o.txt"]

[target.wrong]
env = ":plain"
cmd = ["true"]
"#,
    );
    let b = build(&ws, &["//app:report"]);
    assert_eq!(b.code, 0, "{b:#?}");
    assert!(ws
        .read("mlbuild-out/app/report/report.txt")
        .starts_with("six=1.16.0\n"));
    let b = build(&ws, &["//app:wrong"]);
    assert_eq!(b.code, 1, "{b:#?}");
    let message = failure(&b, "//app:wrong");
    assert!(
        message.contains("`env` names a target that is not a `python_env`"),
        "{message}"
    );
}

#[test]
fn a_declared_environment_that_is_missing_or_not_a_directory_is_a_clear_error() {
    let ws = Ws::new();
    let file = ws.dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    for (path, expected) in [
        ("/nonexistent/venv".to_owned(), "is not accessible"),
        (file.to_string_lossy().into_owned(), "it is not a directory"),
    ] {
        ws.write(
            "e/BUILD.toml",
            &format!(
                "[target.host]\nkind = \"python_env\"\npath = \"{path}\"\n\n\
                 [target.use]\ndeps = [\":host\"]\ncmd = [\"python\", \"-c\", \"1\"]\n"
            ),
        );
        let b = ws.build(&["//e:use"]);
        assert_eq!(b.code, 1, "{b:#?}");
        let message = failure(&b, "//e:host");
        assert!(message.contains(expected), "{message}");
        assert!(message.contains("`path`"), "{message}");
    }
}
