//! The CI files shipped in `examples/ci/`, checked two ways: each against its format's
//! schema by `check-jsonschema` (SchemaStore's GitHub workflow and GitLab CI schemas,
//! vendored in that tool), and each job *run* as its CI would run it, on a fresh copy of
//! the fraud example, with the real `mlbuild` and a real `mlbuild cache serve` on loopback.
//!
//! Running the jobs checks every mlbuild command line in them against the real argument
//! parser and the real behaviour: the main-branch job uploads to the cache, signs, verifies
//! and "uploads" the artifact; the pull-request job downloads from the cache and uploads
//! nothing; a failing gate fails the job and still leaves its JUnit report. Only lines that
//! install tools (`cargo install`, `apt-get`) are skipped: the binary under test is on
//! `PATH` instead. Actions (`uses:`) are not run; the test checks what they would be given
//! (the report and artifact paths) exists. An expression or condition the runner here does
//! not know fails the test, so the files cannot drift away from what is checked.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::Value;

use crate::support::{copy_tree, example_dir, serve};

const GITHUB: &str = "examples/ci/github-actions.yml";
const GITLAB: &str = "examples/ci/gitlab-ci.yml";
const WRITE_TOKEN: &str = "ci-write-token-0123456789";
const READ_TOKEN: &str = "ci-read-token-0123456789";
/// The pinned linter; the venv keeps a copy of the file it was made from.
const LINT_REQUIREMENTS: &str = include_str!("ci-lint/requirements.txt");

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

fn yaml(rel: &str) -> Value {
    let text = fs::read_to_string(repo_file(rel)).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The venv holding `check-jsonschema`: `$MLBUILD_CI_LINT_VENV`, else
/// `<repo>/target/ci-lint-venv`, made (under a lock) when missing or made from other pins.
fn lint_venv() -> PathBuf {
    let dir = match std::env::var_os("MLBUILD_CI_LINT_VENV") {
        Some(dir) => PathBuf::from(dir),
        None => repo_file("target/ci-lint-venv"),
    };
    let marker = dir.join(".mlbuild-requirements.txt");
    let ready = || fs::read_to_string(&marker).is_ok_and(|m| m == LINT_REQUIREMENTS);
    if ready() {
        return dir;
    }
    fs::create_dir_all(dir.parent().unwrap()).unwrap();
    let lock = fs::File::create(dir.with_extension("lock")).unwrap();
    // SAFETY: flock on a descriptor we own; released when `lock` is dropped.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    if !ready() {
        let _ = fs::remove_dir_all(&dir);
        let requirements = dir.with_extension("requirements.txt");
        fs::write(&requirements, LINT_REQUIREMENTS).unwrap();
        for cmd in [
            Command::new("python3").arg("-m").arg("venv").arg(&dir),
            Command::new(dir.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                .arg(&requirements),
        ] {
            let out = cmd.output().expect("run python3");
            assert!(
                out.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        fs::write(&marker, LINT_REQUIREMENTS).unwrap();
    }
    dir
}

#[test]
fn ci_files_match_their_schemas() {
    let check = lint_venv().join("bin/check-jsonschema");
    for (file, schema) in [
        (GITHUB, "vendor.github-workflows"),
        (GITLAB, "vendor.gitlab-ci"),
    ] {
        let out = Command::new(&check)
            .args(["--builtin-schema", schema])
            .arg(repo_file(file))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The schema check itself catches mistakes: a misspelt key is refused.
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.yml");
    let text = fs::read_to_string(repo_file(GITHUB)).unwrap();
    fs::write(&bad, text.replace("runs-on:", "run-on:")).unwrap();
    let out = Command::new(&check)
        .args(["--builtin-schema", "vendor.github-workflows"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// What a CI run is: which branch, and the secrets and variables the CI would hold.
struct Scenario {
    main: bool,
    checkout: PathBuf,
    temp: PathBuf,
    store: PathBuf,
    /// `vars.*`, `secrets.*` (GitHub); CI/CD variables (GitLab).
    values: BTreeMap<&'static str, String>,
}

/// Everything a set of runs shares: the cache server and the keys.
struct Site {
    tmp: tempfile::TempDir,
    url: String,
    cache: PathBuf,
    _server: crate::support::Killed,
    keys: BTreeMap<&'static str, PathBuf>,
}

impl Site {
    fn new() -> Site {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        fs::write(
            t.join("tokens"),
            format!("write {WRITE_TOKEN}\nread {READ_TOKEN}\n"),
        )
        .unwrap();
        let cache = t.join("cache");
        let (server, url) = serve(
            &cache,
            &["--token-file", t.join("tokens").to_str().unwrap()],
        );
        let mut keys = BTreeMap::new();
        for name in ["cache", "artifact"] {
            let (private, public) = (t.join(format!("{name}.pem")), t.join(format!("{name}.pub")));
            let out = Command::new(env!("CARGO_BIN_EXE_mlbuild"))
                .args(["key", "generate", "--private-key"])
                .arg(&private)
                .arg("--public-key")
                .arg(&public)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            keys.insert(
                if name == "cache" {
                    "cache.pem"
                } else {
                    "artifact.pem"
                },
                private,
            );
            if name == "artifact" {
                keys.insert("artifact.pub", public);
            }
        }
        Site {
            tmp,
            url,
            cache,
            _server: server,
            keys,
        }
    }

    /// A fresh checkout of the example at `name/`, with its own store unless `store` names
    /// another run's.
    fn scenario(&self, name: &str, main: bool, store: Option<&Scenario>) -> Scenario {
        let root = self.tmp.path().join(name);
        let checkout = root.join("repo");
        copy_tree(&example_dir(), &checkout.join("examples/fraud"));
        fs::create_dir_all(root.join("temp")).unwrap();
        let read = |k: &str| fs::read_to_string(&self.keys[k]).unwrap();
        let path = |k: &str| self.keys[k].to_string_lossy().into_owned();
        let mut values = BTreeMap::from([
            ("MLBUILD_REMOTE_URL", self.url.clone()),
            ("MLBUILD_CACHE_READ_TOKEN", READ_TOKEN.to_owned()),
            ("MLBUILD_ARTIFACT_PUBLIC_KEY", read("artifact.pub")),
        ]);
        // Protected secrets reach the main branch only.
        if main {
            values.insert("MLBUILD_CACHE_WRITE_TOKEN", WRITE_TOKEN.to_owned());
            values.insert("MLBUILD_CACHE_SIGNING_KEY", read("cache.pem"));
            values.insert("MLBUILD_ARTIFACT_SIGNING_KEY", read("artifact.pem"));
            // GitLab's "File" variables are paths to files holding the value.
            values.insert("gitlab:MLBUILD_CACHE_SIGNING_KEY", path("cache.pem"));
            values.insert("gitlab:MLBUILD_ARTIFACT_SIGNING_KEY", path("artifact.pem"));
        }
        values.insert("gitlab:MLBUILD_ARTIFACT_PUBLIC_KEY", path("artifact.pub"));
        Scenario {
            main,
            store: store.map_or_else(|| root.join("store"), |s| s.store.clone()),
            checkout,
            temp: root.join("temp"),
            values,
        }
    }
}

/// What a job did.
#[derive(Debug, Default)]
struct JobRun {
    success: bool,
    /// `(step, ran, succeeded)` in order.
    steps: Vec<(String, bool, bool)>,
    /// Everything the commands printed.
    output: String,
    /// Files given to the CI's upload and report features.
    uploaded: Vec<PathBuf>,
    reports: Vec<PathBuf>,
}

/// Runs `script` as CI shells do (`bash -eo pipefail`) in the checkout, with `env`, the
/// tested `mlbuild` first on `PATH`, and lines that install tools left out.
fn shell(s: &Scenario, script: &str, env: &BTreeMap<String, String>, out: &mut String) -> bool {
    let kept: Vec<&str> = script
        .lines()
        .filter(|l| {
            !(l.trim_start().starts_with("cargo install") || l.trim_start().starts_with("apt-get"))
        })
        .collect();
    let bin = Path::new(env!("CARGO_BIN_EXE_mlbuild")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.args([
        "--noprofile",
        "--norc",
        "-eo",
        "pipefail",
        "-c",
        &kept.join("\n"),
    ])
    .current_dir(&s.checkout)
    .env("PATH", path)
    .env("CI", "true")
    .env("NO_COLOR", "1")
    .env("MLBUILD_STORE", &s.store)
    .env_remove("MLBUILD_SIGNING_KEY")
    .env_remove("MLBUILD_SIGNING_KEY_PEM")
    .env_remove("MLBUILD_REMOTE_TOKEN")
    .env_remove("MLBUILD_REMOTE_SIGNING_KEY")
    .envs(env);
    let o = cmd.output().expect("run bash");
    out.push_str(&String::from_utf8_lossy(&o.stdout));
    out.push_str(&String::from_utf8_lossy(&o.stderr));
    o.status.success()
}

// --- GitHub Actions ------------------------------------------------------------------------

/// The value of a `${{ ... }}` expression; an unknown one fails the test.
fn github_expr(s: &Scenario, job_env: &BTreeMap<String, String>, expr: &str) -> String {
    let expr = expr.trim();
    if let Some(name) = expr
        .strip_prefix("vars.")
        .or_else(|| expr.strip_prefix("secrets."))
    {
        // GitHub gives an empty string for a secret or variable that is not set.
        return s.values.get(name).cloned().unwrap_or_default();
    }
    if let Some(name) = expr.strip_prefix("env.") {
        return job_env.get(name).cloned().unwrap_or_default();
    }
    match expr {
        "runner.temp" => s.temp.to_string_lossy().into_owned(),
        "github.ref" => github_ref(s).to_owned(),
        other => panic!("the test's runner does not know the expression `{other}`"),
    }
}

fn github_ref(s: &Scenario) -> &'static str {
    if s.main {
        "refs/heads/main"
    } else {
        "refs/pull/7/merge"
    }
}

fn github_subst(s: &Scenario, job_env: &BTreeMap<String, String>, text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("closed expression") + start;
        out.push_str(&github_expr(s, job_env, &rest[start + 3..end]));
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Whether a step with condition `cond` runs, after earlier steps `failed` or not.
fn github_if(s: &Scenario, cond: Option<&str>, failed: bool) -> bool {
    let Some(cond) = cond else { return !failed };
    match cond.trim() {
        "always()" => true,
        "github.ref == 'refs/heads/main'" => !failed && github_ref(s) == "refs/heads/main",
        "github.ref != 'refs/heads/main'" => !failed && github_ref(s) != "refs/heads/main",
        other => panic!("the test's runner does not know the condition `{other}`"),
    }
}

fn strings(map: Option<&Value>) -> BTreeMap<String, String> {
    map.and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => serde_yaml_ng::to_string(other).unwrap().trim().to_owned(),
                    };
                    (k.as_str().unwrap().to_owned(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn run_github(s: &Scenario) -> JobRun {
    let doc = yaml(GITHUB);
    let jobs = doc["jobs"].as_mapping().unwrap();
    assert_eq!(jobs.len(), 1, "one job");
    let job = jobs.values().next().unwrap();
    let mut job_env = BTreeMap::new();
    for (k, v) in strings(job.get("env")) {
        let v = github_subst(s, &job_env, &v);
        job_env.insert(k, v);
    }
    let mut env = job_env.clone();
    env.insert("RUNNER_TEMP".into(), s.temp.to_string_lossy().into_owned());
    let summary = s.temp.join("step-summary.md");
    env.insert(
        "GITHUB_STEP_SUMMARY".into(),
        summary.to_string_lossy().into_owned(),
    );
    let mut run = JobRun::default();
    let mut failed = false;
    for (i, step) in job["steps"].as_sequence().unwrap().iter().enumerate() {
        let name = step
            .get("name")
            .or_else(|| step.get("uses"))
            .and_then(Value::as_str)
            .map_or_else(|| format!("step {i}"), str::to_owned);
        if !github_if(s, step.get("if").and_then(Value::as_str), failed) {
            run.steps.push((name, false, false));
            continue;
        }
        let ok = if let Some(script) = step.get("run").and_then(Value::as_str) {
            let mut step_env = env.clone();
            for (k, v) in strings(step.get("env")) {
                step_env.insert(k, github_subst(s, &job_env, &v));
            }
            shell(s, script, &step_env, &mut run.output)
        } else {
            let uses = step["uses"].as_str().unwrap();
            let with = strings(step.get("with"));
            let arg = |key: &str| {
                let path = PathBuf::from(github_subst(s, &job_env, &with[key]));
                if path.is_absolute() {
                    path
                } else {
                    s.checkout.join(path)
                }
            };
            match uses.split('@').next().unwrap() {
                "actions/checkout" => true,
                "actions/upload-artifact" => {
                    let path = arg("path");
                    run.uploaded.push(path.clone());
                    path.exists()
                }
                "mikepenz/action-junit-report" => {
                    let path = arg("report_paths");
                    run.reports.push(path.clone());
                    path.exists()
                }
                other => panic!("the test's runner does not know the action `{other}`"),
            }
        };
        failed |= !ok;
        run.steps.push((name, true, ok));
    }
    run.success = !failed;
    run.output
        .push_str(&fs::read_to_string(&summary).unwrap_or_default());
    run
}

// --- GitLab CI -----------------------------------------------------------------------------

/// `base` with `over` laid on top: mappings merged key by key, anything else replaced (as
/// GitLab's `extends` does).
fn merged(base: &Value, over: &Value) -> Value {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            let mut out = b.clone();
            for (k, v) in o {
                let v = match b.get(k) {
                    Some(bv) => merged(bv, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), v);
            }
            Value::Mapping(out)
        }
        (_, o) => o.clone(),
    }
}

/// The jobs that run for the scenario, with `extends` resolved.
fn gitlab_jobs(s: &Scenario) -> Vec<(String, Value)> {
    let doc = yaml(GITLAB);
    let mut jobs = Vec::new();
    for (name, job) in doc.as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        if name.starts_with('.') || ["stages", "variables", "default", "workflow"].contains(&name) {
            continue;
        }
        let job = match job.get("extends").and_then(Value::as_str) {
            Some(base) => merged(&doc[base], job),
            None => job.clone(),
        };
        let rules = job["rules"].as_sequence().expect("jobs have rules");
        let runs = rules.iter().any(|r| match r["if"].as_str().unwrap() {
            "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH" => s.main,
            "$CI_PIPELINE_SOURCE == \"merge_request_event\"" => !s.main,
            other => panic!("the test's runner does not know the rule `{other}`"),
        });
        if runs {
            jobs.push((name.to_owned(), job));
        }
    }
    jobs
}

fn script(job: &Value, key: &str) -> String {
    job.get(key)
        .and_then(Value::as_sequence)
        .map(|lines| {
            lines
                .iter()
                .map(|l| l.as_str().unwrap().trim_end().to_owned())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

fn run_gitlab(s: &Scenario) -> JobRun {
    let jobs = gitlab_jobs(s);
    assert_eq!(
        jobs.len(),
        1,
        "one job per pipeline: {:?}",
        jobs.iter().map(|j| &j.0).collect::<Vec<_>>()
    );
    let (_, job) = &jobs[0];
    let mut env = strings(job.get("variables"));
    // The CI/CD variables; a "File" variable (a `gitlab:` entry) is the path of its file.
    for (k, v) in &s.values {
        if !k.starts_with("gitlab:") {
            env.insert((*k).to_owned(), v.clone());
        }
    }
    for (k, v) in &s.values {
        if let Some(k) = k.strip_prefix("gitlab:") {
            env.insert(k.to_owned(), v.clone());
        }
    }
    env.insert(
        "CI_PROJECT_DIR".into(),
        s.checkout.to_string_lossy().into_owned(),
    );
    let mut run = JobRun::default();
    // before_script and script run in one shell; after_script in another, whose failure
    // does not fail the job.
    let main = format!(
        "{}\n{}",
        script(job, "before_script"),
        script(job, "script")
    );
    let ok = shell(s, &main, &env, &mut run.output);
    run.steps.push(("script".into(), true, ok));
    let after = shell(s, &script(job, "after_script"), &env, &mut run.output);
    run.steps.push(("after_script".into(), true, after));
    run.success = ok;
    let artifacts = &job["artifacts"];
    let collect = ok || artifacts["when"].as_str() == Some("always");
    if collect {
        if let Some(junit) = artifacts["reports"]["junit"].as_str() {
            run.reports.push(s.checkout.join(junit));
        }
        for path in artifacts["paths"].as_sequence().into_iter().flatten() {
            let path = s.checkout.join(path.as_str().unwrap());
            // GitLab uploads what exists and warns about the rest.
            if path.exists() {
                run.uploaded.push(path);
            }
        }
    }
    run
}

// --- The runs ------------------------------------------------------------------------------

fn junit(path: &Path) -> String {
    let xml = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(xml.contains("<testsuites"), "{xml}");
    xml
}

fn cache_entries(site: &Site) -> usize {
    walkdir::WalkDir::new(&site.cache)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .count()
}

/// Main, then a pull request on a fresh machine, then main with a gate the model fails.
fn check_runs(run_job: fn(&Scenario) -> JobRun, ci: &str) {
    let site = Site::new();

    let main = site.scenario("main", true, None);
    let run = run_job(&main);
    assert!(run.success, "{ci} main: {run:#?}");
    assert!(
        run.steps.iter().all(|(_, ran, ok)| !ran || *ok),
        "{ci} main: {run:#?}"
    );
    assert!(
        cache_entries(&site) > 0,
        "{ci}: main uploaded nothing: {}",
        run.output
    );
    let xml = junit(&run.reports[0]);
    assert!(
        xml.contains("//models:evaluation gate: f1 &gt;= 0.55"),
        "{xml}"
    );
    assert!(xml.contains("failures=\"0\""), "{xml}");
    let artifact = run
        .uploaded
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "zst"))
        .unwrap_or_else(|| panic!("{ci}: no artifact uploaded: {run:#?}"));
    assert!(fs::metadata(artifact).unwrap().len() > 0);
    assert!(run.output.contains("verified"), "{ci}: {}", run.output);
    let report = run
        .uploaded
        .iter()
        .find(|p| p.ends_with("metrics.html"))
        .expect("metrics report");
    assert!(fs::read_to_string(report).unwrap().contains("<svg"));
    // The experiment table: the sweep's variants with the selected one.
    assert!(run.output.contains("| variant"), "{ci}: {}", run.output);

    // A pull request on another machine: everything comes from the cache, nothing goes up.
    let before = cache_entries(&site);
    let pr = site.scenario("pr", false, None);
    let run = run_job(&pr);
    assert!(run.success, "{ci} PR: {run:#?}");
    // Only the package runs: unsigned here, it has another key than main's signed one.
    let executed: Vec<&str> = run
        .output
        .lines()
        .filter(|l| l.contains("] executed "))
        .collect();
    assert_eq!(executed.len(), 1, "{ci} PR: {}", run.output);
    assert!(
        executed[0].contains("executed //models:fraud in"),
        "{ci} PR: {}",
        run.output
    );
    assert!(
        run.output.contains("1 executed, 11 cached"),
        "{ci} PR: {}",
        run.output
    );
    assert!(run.output.contains("read-only"), "{ci} PR: {}", run.output);
    assert_eq!(
        cache_entries(&site),
        before,
        "{ci}: a pull request uploaded"
    );
    assert!(
        !run.uploaded
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "zst")),
        "{ci} PR: {run:#?}"
    );
    junit(&run.reports[0]);

    // A gate the model cannot pass fails the job; its report still says which.
    let strict = site.scenario("strict", true, Some(&main));
    let build = strict.checkout.join("examples/fraud/models/BUILD.toml");
    let text = fs::read_to_string(&build).unwrap();
    fs::write(&build, text.replace("\"f1 >= 0.55\"", "\"f1 >= 0.999\"")).unwrap();
    let run = run_job(&strict);
    assert!(
        !run.success,
        "{ci}: a failing gate passed the job: {run:#?}"
    );
    let xml = junit(&run.reports[0]);
    assert!(
        xml.contains("//models:evaluation gate: f1 &gt;= 0.999"),
        "{xml}"
    );
    assert!(xml.contains("type=\"gate\""), "{xml}");
    assert!(
        !run.uploaded
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "zst")),
        "{ci}: {run:#?}"
    );
}

#[test]
fn github_actions_job_runs_as_written() {
    check_runs(run_github, "github");
}

#[test]
fn gitlab_ci_job_runs_as_written() {
    check_runs(run_gitlab, "gitlab");
}
