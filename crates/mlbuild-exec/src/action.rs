//! Running one action in a fresh exec root and recording its result.
//!
//! Main function: [`execute`]. The exec root holds only the declared inputs (sources at
//! their workspace paths, dependency outputs under `mlbuild-out/`), the command runs in
//! the sandbox, and only after every declared output is present and hashed into the store
//! is the action-cache entry written, so an interrupted or failing action never leaves a
//! half-recorded result behind.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mlbuild_sandbox::{Bind, ExitStatusKind, Isolation, SandboxSpec};
use mlbuild_store::{ActionIsolation, ActionResult, OutputFile, Store};
use mlbuild_workspace::{PythonEnv, Target, Workspace, UV_CACHE_IN_SANDBOX, UV_IN_SANDBOX};

use crate::envs::{EnvSource, ENV_OUT_DIR};
use crate::outputs::{collect, out_dir_rel};
use crate::plan::Planned;
use crate::ExecError;

/// How many bytes of stderr a failure message shows.
const STDERR_TAIL_BYTES: u64 = 2048;

pub(crate) struct ActionEnv<'a> {
    pub ws: &'a Workspace,
    pub store: &'a Store,
    pub isolation: Isolation,
    /// An audit's second run: its outputs are ingested but never recorded in the action
    /// cache (see [`crate::audit`]).
    pub audit: bool,
    /// Where its logs go.
    pub logs: Logs,
}

/// Where an action's logs are kept in the workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Logs {
    /// `mlbuild-out/.logs/`, what `mlbuild log` shows: a build that updates the workspace.
    Build,
    /// `mlbuild-out/.audit/.logs/`: everything an audit runs (its second runs, and what its
    /// own build has to execute), so the workspace's logs stay those of its last build.
    Audit,
}

/// Runs `target`'s command and stores its outputs; returns the result, recorded in the
/// action cache unless this is an audit.
pub(crate) fn execute(
    env: &ActionEnv<'_>,
    target: &Target,
    planned: &Planned,
) -> Result<ActionResult, ExecError> {
    let label = target.label.to_string();
    if env.isolation == Isolation::Plain && env.ws.config.sandbox_require {
        return Err(ExecError::SandboxRequired {
            label,
            why: mlbuild_sandbox::probe_failure()
                .unwrap_or("user namespaces are unavailable")
                .to_owned(),
        });
    }
    let store = env.store;
    let started = Instant::now();
    let scratch = ExecDir(
        tempfile::Builder::new()
            .prefix(&format!("exec-{}-", planned.key.short()))
            .tempdir_in(store.tmp_dir())
            .map_err(|e| ExecError::io("cannot create an exec directory in the store", e))?
            .keep(),
    );
    let base = scratch.0.as_path();
    let root = base.join("root");
    let tmp = base.join("tmp");
    let home = base.join("home");
    for dir in [&root, &tmp, &home] {
        mkdir(dir)?;
    }

    // Inputs. In a namespace sandbox the exec root is mounted read-only, so hardlinks to
    // sources and store blobs are safe; without isolation an action could write through a
    // hardlink into the user's file or the store, so inputs are copied instead.
    let share = env.isolation == Isolation::Namespaces;
    for (src, _) in &planned.srcs {
        let dest = root.join(&src.path);
        mkdir_parent(&dest)?;
        place_input(&src.abs, &dest, share)?;
    }
    for (rel, file) in &planned.dep_outputs {
        let dest = root.join(rel);
        if share {
            store.materialize(&file.digest, &dest, file.executable)?;
        } else {
            mkdir_parent(&dest)?;
            std::fs::copy(store.blob_path(&file.digest), &dest)
                .map_err(|e| ExecError::io(format!("cannot stage input `{rel}`"), e))?;
            set_mode(&dest, if file.executable { 0o755 } else { 0o644 })?;
        }
    }
    let params_file = root.join(".mlbuild/params.json");
    mkdir_parent(&params_file)?;
    std::fs::write(
        &params_file,
        mlbuild_digest::canonical_json(&planned.preimage.params),
    )
    .map_err(|e| ExecError::io("cannot write the params file", e))?;

    let out_rel = out_dir_rel(&target.label);
    let out_dir = root.join(&out_rel);
    mkdir(&out_dir)?;
    let cwd = root.join(&target.label.package);
    mkdir(&cwd)?;

    // The command, with paths made absolute inside the exec root.
    let dep_paths: BTreeMap<String, String> = planned
        .dep_dirs
        .iter()
        .map(|(name, rel)| (name.clone(), root.join(rel).to_string_lossy().into_owned()))
        .collect();
    let out_str = out_dir.to_string_lossy().into_owned();
    let params_str = params_file.to_string_lossy().into_owned();
    let mut argv = mlbuild_graph::expand_argv(
        &target.cmd,
        &mlbuild_graph::ArgvContext {
            out: Some(&out_str),
            params_file: Some(&params_str),
            deps: Some(&dep_paths),
            params: &planned.preimage.params,
        },
    )
    .map_err(|e| ExecError::Placeholder {
        label: label.clone(),
        message: e.to_string(),
    })?;
    if let Some(program) = planned.program(target) {
        argv[0] = program.to_string_lossy().into_owned();
    } else if let Some(first) = argv.first_mut() {
        // A path into the package, such as `./run.sh`.
        *first = cwd.join(&*first).to_string_lossy().into_owned();
    }

    let (binds, env_dirs) = environment_mounts(env, target, planned, &out_dir)?;
    let mut environment = hermetic_env(env.ws, target, &home, &tmp)?;
    if let Some(first) = planned.envs.first() {
        // The environments' programs come first, as after `source bin/activate`.
        let mut path: Vec<String> = planned
            .envs
            .iter()
            .map(|e| e.prefix.join("bin").to_string_lossy().into_owned())
            .collect();
        path.push(environment["PATH"].clone());
        environment.insert("PATH".into(), path.join(":"));
        environment.insert(
            "VIRTUAL_ENV".into(),
            first.prefix.to_string_lossy().into_owned(),
        );
    }
    let stdout = base.join("stdout.log");
    let stderr = base.join("stderr.log");
    let mut hide = vec![env.ws.root.clone(), store.root().to_path_buf()];
    if let Some(h) = std::env::var_os("HOME") {
        hide.push(PathBuf::from(h));
    }
    let spec = SandboxSpec {
        argv,
        cwd,
        env: environment,
        exec_root: root.clone(),
        writable: vec![out_dir.clone()],
        tmp_dir: tmp.clone(),
        expose_readonly: [expose_dirs(env.ws, planned), env_dirs].concat(),
        hide,
        binds,
        network: target.network,
        timeout: target.timeout,
        stdout: stdout.clone(),
        stderr: stderr.clone(),
    };
    let outcome = mlbuild_sandbox::run(&spec, env.isolation)
        .map_err(|e| ExecError::io(format!("`{label}`: cannot start the sandbox"), e))?;

    let log_dir = match env.logs {
        Logs::Build => log_dir_rel(target),
        Logs::Audit => crate::audit::log_dir_rel(target),
    };
    let log = keep_logs(&env.ws.root, &log_dir, target, &stdout, &stderr)?;
    let status = match &outcome.status {
        ExitStatusKind::Exited(0) => None,
        ExitStatusKind::Exited(code) => Some(format!("exit code {code}")),
        ExitStatusKind::Signaled(sig) => Some(format!("killed by signal {sig}")),
        ExitStatusKind::TimedOut => Some(format!(
            "timed out after {}s",
            target.timeout.map_or(0, |t| t.as_secs())
        )),
        ExitStatusKind::SpawnFailed(msg) => Some(msg.clone()),
    };
    if let Some(status) = status {
        return Err(ExecError::ActionFailed {
            label,
            status,
            stderr_tail: tail(&stderr, &root),
            log,
        });
    }

    if env.isolation == Isolation::Plain {
        check_no_stray_writes(&label, &root, &out_rel, planned)?;
    }
    let files = collect(&label, &out_dir, &target.outs)?;
    let mut outputs = BTreeMap::new();
    for (rel, path) in files {
        let fd = store.ingest_file(&path)?;
        outputs.insert(
            rel,
            OutputFile {
                digest: fd.digest,
                size: fd.size,
                executable: fd.executable,
            },
        );
    }
    let result = ActionResult {
        outputs,
        exit_code: 0,
        stdout: store.ingest_file(&stdout)?.digest,
        stderr: store.ingest_file(&stderr)?.digest,
        duration_ms: started.elapsed().as_millis() as u64,
        created_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
        isolation: Some(match env.isolation {
            Isolation::Namespaces => ActionIsolation::Namespaces,
            Isolation::Plain => ActionIsolation::Plain,
        }),
    };
    if !env.audit {
        store.put_action(&planned.key, &result)?;
    }
    Ok(result)
}

/// An exec directory, removed when dropped even if the action left read-only
/// directories in it (which a plain recursive removal cannot delete from), on the
/// background thread of [`crate::trash`]: nothing waits for it.
struct ExecDir(PathBuf);

impl Drop for ExecDir {
    fn drop(&mut self) {
        crate::trash::remove_later(std::mem::take(&mut self.0));
    }
}

/// What the sandbox mounts for the action's Python environments: each locked environment
/// (linked once per store) bound read-only at its prefix, and the host directories of
/// external ones, shown at their own paths. A locked environment's own build gets its
/// output directory writable at its prefix, and `uv`.
fn environment_mounts(
    env: &ActionEnv<'_>,
    target: &Target,
    planned: &Planned,
    out_dir: &Path,
) -> Result<(Vec<Bind>, Vec<PathBuf>), ExecError> {
    let mut binds = Vec::new();
    let mut host_dirs = Vec::new();
    for mount in &planned.envs {
        match &mount.source {
            EnvSource::Store(files) => {
                let tree = env.store.materialize_tree(&mount.digest, files)?;
                binds.push(Bind {
                    host: tree,
                    inside: mount.prefix.clone(),
                    writable: false,
                });
            }
            EnvSource::Host(dirs) => host_dirs.extend(dirs.iter().cloned()),
        }
    }
    if let Some(PythonEnv::Locked { prefix }) = &target.python_env {
        let venv = out_dir.join(ENV_OUT_DIR);
        mkdir(&venv)?;
        binds.push(Bind {
            host: venv,
            inside: PathBuf::from(prefix),
            writable: true,
        });
        if let Some(uv) = &planned.uv {
            binds.push(Bind {
                host: uv.clone(),
                inside: PathBuf::from(UV_IN_SANDBOX),
                writable: false,
            });
        }
        let cache = env
            .store
            .root()
            .join(mlbuild_store::TOOL_CACHE_DIR)
            .join("uv");
        mkdir(&cache)?;
        binds.push(Bind {
            host: cache,
            inside: PathBuf::from(UV_CACHE_IN_SANDBOX),
            writable: true,
        });
    }
    if !binds.is_empty() && env.isolation == Isolation::Plain {
        return Err(ExecError::Environment {
            label: target.label.to_string(),
            env: binds[0].inside.display().to_string(),
            reason: "environments built by mlbuild are mounted at a fixed path, which only the namespace sandbox can do".into(),
            help: "run where user namespaces are available (and without `MLBUILD_SANDBOX=plain`), or declare an existing environment with `path`".into(),
        });
    }
    Ok((binds, host_dirs))
}

/// A cleared environment plus declared env, secrets and the fixed variables that make
/// tools behave the same everywhere.
fn hermetic_env(
    ws: &Workspace,
    target: &Target,
    home: &Path,
    tmp: &Path,
) -> Result<BTreeMap<String, String>, ExecError> {
    let mut env = target.action_env();
    for name in &target.secret_env {
        let supplied = ws.secrets.get(name).cloned();
        let value = supplied
            .map_or_else(|| std::env::var(name), Ok)
            .map_err(|_| ExecError::MissingSecret {
                label: target.label.to_string(),
                name: name.clone(),
            })?;
        env.insert(name.clone(), value);
    }
    let fixed = [
        ("PATH", ws.config.sandbox_path.join(":")),
        ("HOME", home.to_string_lossy().into_owned()),
        ("TMPDIR", tmp.to_string_lossy().into_owned()),
        ("TZ", "UTC".to_string()),
        ("LC_ALL", "C.UTF-8".to_string()),
        ("SOURCE_DATE_EPOCH", ws.config.source_date_epoch.to_string()),
        ("PYTHONDONTWRITEBYTECODE", "1".to_string()),
    ];
    for (k, v) in fixed {
        env.insert(k.to_string(), v);
    }
    Ok(env)
}

/// Tool prefixes and sandbox-path directories outside the system directories the sandbox
/// always shows (e.g. a virtualenv).
fn expose_dirs(ws: &Workspace, planned: &Planned) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = planned
        .tools
        .values()
        .filter_map(|t| t.prefix.clone())
        .collect();
    for dir in &ws.config.sandbox_path {
        let p = PathBuf::from(dir);
        if p.exists() && !crate::tools::is_system(&p) {
            dirs.push(p);
        }
    }
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Copies the logs to `<log_dir>/<name>.{stdout,stderr}` and returns the stderr path,
/// which failure messages point to.
fn keep_logs(
    ws_root: &Path,
    log_dir: &str,
    target: &Target,
    stdout: &Path,
    stderr: &Path,
) -> Result<PathBuf, ExecError> {
    let dir = ws_root.join(log_dir);
    mkdir(&dir)?;
    let out = dir.join(format!("{}.stdout", target.label.name));
    let err = dir.join(format!("{}.stderr", target.label.name));
    for (from, to) in [(stdout, &out), (stderr, &err)] {
        // Remove first: a previous log may be a read-only hardlink into the store.
        let _ = std::fs::remove_file(to);
        std::fs::copy(from, to)
            .map_err(|e| ExecError::io(format!("cannot keep log `{}`", to.display()), e))?;
    }
    Ok(err)
}

/// Workspace-relative directory of a package's logs.
pub(crate) fn log_dir_rel(target: &Target) -> String {
    let pkg = if target.label.package.is_empty() {
        "_root"
    } else {
        &target.label.package
    };
    format!("mlbuild-out/.logs/{pkg}")
}

/// Without a mount namespace nothing stops an action from writing next to its inputs;
/// catch it afterwards so such an action never produces a cache entry.
fn check_no_stray_writes(
    label: &str,
    root: &Path,
    out_rel: &str,
    planned: &Planned,
) -> Result<(), ExecError> {
    let mut expected: std::collections::HashSet<String> =
        planned.srcs.iter().map(|(s, _)| s.path.clone()).collect();
    expected.extend(planned.dep_outputs.iter().map(|(rel, _)| rel.clone()));
    expected.insert(".mlbuild/params.json".to_string());
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let Ok(entry) = entry else { continue };
        if entry.file_type().is_dir() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(root)
            .expect("under root")
            .to_string_lossy()
            .into_owned();
        if rel.starts_with(&format!("{out_rel}/")) {
            continue;
        }
        if !expected.contains(&rel) {
            return Err(ExecError::WroteOutside {
                label: label.to_string(),
                path: rel,
            });
        }
    }
    Ok(())
}

fn place_input(src: &Path, dest: &Path, share: bool) -> Result<(), ExecError> {
    if share && std::fs::hard_link(src, dest).is_ok() {
        return Ok(());
    }
    std::fs::copy(src, dest)
        .map(|_| ())
        .map_err(|e| ExecError::io(format!("cannot stage input `{}`", src.display()), e))
}

/// The last lines of an action's stderr, for the failure message, with the exec root's
/// prefix removed: actions see their inputs at absolute paths inside the sandbox
/// (`…/store/tmp/exec-…/root/mlbuild-out/data/…`), and what is left is the
/// workspace-relative path the user knows. The log file keeps the original text.
fn tail(path: &Path, root: &Path) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let start = len.saturating_sub(STDERR_TAIL_BYTES);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let text = text.trim_end();
    // Start at a line boundary when we cut into the middle of the log.
    let text = if start > 0 {
        text.split_once('\n').map_or(text, |(_, rest)| rest)
    } else {
        text
    };
    if text.is_empty() {
        return "(stderr was empty)".to_string();
    }
    format!("last lines of stderr:\n{}", relative_to_root(text, root))
}

/// `text` with `root/` removed wherever it appears, as the action was given it and as the
/// action may have found it (`getcwd` answers with the canonical path).
fn relative_to_root(text: &str, root: &Path) -> String {
    let mut prefixes = vec![format!("{}/", root.display())];
    if let Ok(canonical) = root.canonicalize() {
        prefixes.push(format!("{}/", canonical.display()));
    }
    // The longer first, so that neither leaves a piece of the other behind.
    prefixes.sort_by_key(|p| std::cmp::Reverse(p.len()));
    prefixes.iter().fold(text.to_owned(), |text, prefix| {
        text.replace(prefix.as_str(), "")
    })
}

fn mkdir(dir: &Path) -> Result<(), ExecError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| ExecError::io(format!("cannot create `{}`", dir.display()), e))
}

fn mkdir_parent(path: &Path) -> Result<(), ExecError> {
    mkdir(path.parent().expect("exec-root paths have parents"))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ExecError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| ExecError::io(format!("cannot set mode of `{}`", path.display()), e))
}
