//! `python_env`: a Python environment as a build output, built with uv from a lock that
//! pins every wheel by hash, or an existing environment described where it is.
//!
//! The action runs inside mlbuild's sandbox with the network on (the only action that
//! gets it by default); its output directory's `env/` is mounted at the environment's
//! fixed prefix, so the venv's embedded paths (script shebangs, `VIRTUAL_ENV`) are the
//! same on every machine and the bytes are reproducible. The venv is then made
//! self-contained: symlinks (the interpreter, `lib64`) become copies or go away, since
//! store outputs are plain files, and the interpreter's bytes thus join the environment's
//! digest. Main entry: [`run_cli`].

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use serde::Serialize;

/// `mlbuild rule python_env` arguments (written by the lowering in `mlbuild-workspace`).
#[derive(Parser, Debug)]
#[command(name = "mlbuild rule python_env", no_binary_name = true)]
struct Args {
    /// The lock file (pip `--require-hashes` requirements, `uv.lock` or `pylock.toml`).
    #[arg(long)]
    lock: Option<PathBuf>,
    /// The base interpreter: a program name on `PATH` or an absolute path.
    #[arg(long, default_value = "python3")]
    python: String,
    /// The `uv` binary.
    #[arg(long)]
    uv: Option<PathBuf>,
    /// uv's download cache, shared between environment builds (default: a fresh one in
    /// the action's temporary directory).
    #[arg(long)]
    uv_cache: Option<PathBuf>,
    /// Where the environment is built (the fixed path it is used at).
    #[arg(long)]
    prefix: Option<PathBuf>,
    #[arg(long)]
    allow_missing_hashes: bool,
    #[arg(long)]
    allow_source_builds: bool,
    /// Describe an existing environment instead of building one.
    #[arg(long, conflicts_with = "lock")]
    external: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum EnvError {
    #[error("{0}")]
    Usage(String),

    #[error("`{file}` line {line}: {message}")]
    #[diagnostic(help("{help}"))]
    Lock {
        file: String,
        line: usize,
        message: String,
        help: String,
    },

    #[error("`{file}`: {message}")]
    #[diagnostic(help("{help}"))]
    LockFile {
        file: String,
        message: String,
        help: String,
    },

    #[error("`uv {step}` failed ({status}); its output is above")]
    #[diagnostic(help("{help}"))]
    Uv {
        step: String,
        status: String,
        help: String,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl EnvError {
    fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> EnvError {
        let context = context.into();
        move |source| EnvError::Io { context, source }
    }

    /// Whether the lock itself is at fault (exit code 2) rather than the build.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            EnvError::Usage(_) | EnvError::Lock { .. } | EnvError::LockFile { .. }
        )
    }
}

/// How a lock file is read, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LockFormat {
    /// pip's requirements format with `--hash` options (`uv pip compile --generate-hashes`).
    Requirements,
    /// uv's project lock, installed with `uv sync --frozen` beside its `pyproject.toml`.
    UvLock,
    /// PEP 751 (`pylock.toml`, `pylock.NAME.toml`).
    Pylock,
}

impl LockFormat {
    fn of(path: &Path) -> LockFormat {
        let name = path
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned());
        if name == "uv.lock" {
            LockFormat::UvLock
        } else if name == "pylock.toml" || (name.starts_with("pylock.") && name.ends_with(".toml"))
        {
            LockFormat::Pylock
        } else {
            LockFormat::Requirements
        }
    }
}

/// What a built environment's `packages.json` (at its root) and an external
/// environment's `python-env.json` record.
#[derive(Serialize)]
struct Description {
    /// `version_info` from `pyvenv.cfg`, when there is one.
    python: Option<String>,
    /// Installed distributions, from their `.dist-info` metadata, by normalized name.
    packages: BTreeMap<String, String>,
    /// The lock it was built from, or the external environment's path.
    #[serde(skip_serializing_if = "Option::is_none")]
    lock: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
}

/// Entry point of `mlbuild rule python_env ARGS...`.
pub fn run_cli(args: &[String]) -> Result<(), EnvError> {
    let args = Args::try_parse_from(args).map_err(|e| EnvError::Usage(e.to_string()))?;
    if let Some(path) = &args.external {
        return describe_external(path, &args.out);
    }
    let (Some(lock), Some(prefix), Some(uv)) = (&args.lock, &args.prefix, &args.uv) else {
        return Err(EnvError::Usage(
            "`--lock`, `--prefix` and `--uv` are required to build an environment".into(),
        ));
    };
    let format = LockFormat::of(lock);
    let text = fs::read_to_string(lock).map_err(EnvError::io(format!(
        "cannot read the lock `{}`",
        lock.display()
    )))?;
    let shown = lock.display().to_string();
    match format {
        LockFormat::Requirements => check_requirements(&shown, &text, &args)?,
        LockFormat::Pylock => check_pylock(&shown, &text, &args)?,
        LockFormat::UvLock => check_uv_lock(&shown, &text, &args)?,
    }

    let tmp = std::env::var_os("TMPDIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let uv = Uv {
        program: uv.clone(),
        cache: args
            .uv_cache
            .clone()
            .unwrap_or_else(|| tmp.join("uv-cache")),
    };
    // `--allow-existing`: the prefix is the (empty) mount point of the output directory.
    uv.run(
        "venv",
        &[
            "venv",
            "--no-project",
            "--allow-existing",
            "--python",
            &args.python,
            &prefix.to_string_lossy(),
        ],
        None,
    )?;
    let python = prefix.join("bin/python").to_string_lossy().into_owned();
    let lock_arg = lock.to_string_lossy().into_owned();
    match format {
        LockFormat::Requirements | LockFormat::Pylock => {
            let mut argv = vec!["pip", "sync", "--python", &python];
            if format == LockFormat::Pylock {
                argv.extend(["--preview-features", "pylock"]);
            }
            if !args.allow_missing_hashes {
                argv.push("--require-hashes");
            }
            if !args.allow_source_builds {
                argv.extend(["--only-binary", ":all:"]);
            }
            argv.push(&lock_arg);
            uv.run("pip sync", &argv, None)?;
        }
        LockFormat::UvLock => {
            let project = lock.parent().filter(|p| !p.as_os_str().is_empty());
            let mut argv = vec![
                "sync",
                "--frozen",
                "--no-install-project",
                "--python",
                &python,
            ];
            if !args.allow_source_builds {
                argv.push("--no-build");
            }
            uv.run(
                "sync",
                &argv,
                Some((project.unwrap_or(Path::new(".")), prefix)),
            )?;
        }
    }

    make_self_contained(prefix)?;
    let description = Description {
        python: pyvenv_version(prefix),
        packages: installed_packages(prefix),
        lock: Some(
            lock.file_name()
                .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
        ),
        path: None,
    };
    // Inside the environment, so a dependent reads it as `{deps.NAME}/packages.json`.
    write_json(&prefix.join("packages.json"), &description)?;
    eprintln!(
        "built the Python environment at `{}`: {} packages",
        prefix.display(),
        description.packages.len()
    );
    Ok(())
}

/// The `uv` binary and the environment every call runs it with.
struct Uv {
    program: PathBuf,
    cache: PathBuf,
}

impl Uv {
    /// Runs `uv ARGV`; `project` is `(directory, environment)` for `uv sync`.
    fn run(
        &self,
        step: &str,
        argv: &[&str],
        project: Option<(&Path, &Path)>,
    ) -> Result<(), EnvError> {
        let mut command = Command::new(&self.program);
        command
            .args(argv)
            // Downloads only: with hashes required, every wheel is checked against the lock
            // whether it comes from the index or from the cache.
            .env("UV_CACHE_DIR", &self.cache)
            // Only the interpreter the key names, never one uv would download.
            .env("UV_PYTHON_DOWNLOADS", "never")
            .env("UV_PYTHON_PREFERENCE", "only-system")
            // Copies, not links into the (temporary) cache.
            .env("UV_LINK_MODE", "copy")
            // The machine's CA store, which is where a corporate proxy's root lives.
            .env("UV_SYSTEM_CERTS", "1")
            .env("UV_NO_PROGRESS", "1")
            // No `uv.toml` from the sandbox's view of the filesystem changes the result.
            .env("UV_NO_CONFIG", "1");
        if let Some((dir, env)) = project {
            command.current_dir(dir).env("UV_PROJECT_ENVIRONMENT", env);
        }
        let status = command.status().map_err(EnvError::io(format!(
            "cannot run `{}`",
            self.program.display()
        )))?;
        if status.success() {
            return Ok(());
        }
        let help = match step {
            "venv" => "check that the interpreter named by `python` is on `[sandbox] path`".to_owned(),
            _ => "a package that has no wheel for this platform needs a source build, which is refused \
                  unless the target sets `allow_source_builds = true`; a download that failed needs the \
                  network (or the index in `env`, e.g. `UV_INDEX_URL`)"
                .to_owned(),
        };
        Err(EnvError::Uv {
            step: step.to_owned(),
            status: status.to_string(),
            help,
        })
    }
}

/// Every requirement pinned with `==` and carrying at least one `--hash`, as
/// `pip install --require-hashes` demands; includes (`-r`, `-c`) are refused because the
/// files they name are not inputs of the action.
fn check_requirements(file: &str, text: &str, args: &Args) -> Result<(), EnvError> {
    let mut logical = String::new();
    let mut start = 0;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split(" #").next().unwrap_or("");
        let line = if line.trim_start().starts_with('#') {
            ""
        } else {
            line
        };
        if logical.is_empty() {
            start = index + 1;
        }
        match line.trim_end().strip_suffix('\\') {
            Some(part) => {
                logical.push_str(part);
                logical.push(' ');
                continue;
            }
            None => logical.push_str(line),
        }
        let requirement = std::mem::take(&mut logical);
        let requirement = requirement.trim();
        if requirement.is_empty() {
            continue;
        }
        let first = requirement.split_whitespace().next().unwrap_or("");
        if ["-r", "--requirement", "-c", "--constraint"].contains(&first)
            || first.starts_with("--requirement=")
            || first.starts_with("--constraint=")
        {
            return Err(EnvError::Lock {
                file: file.to_owned(),
                line: start,
                message: format!("`{first}` includes another file"),
                help: "a lock is one self-contained file: compile it with `uv pip compile --generate-hashes`"
                    .into(),
            });
        }
        if first.starts_with('-') {
            if first == "-e" || first == "--editable" {
                return Err(EnvError::Lock {
                    file: file.to_owned(),
                    line: start,
                    message: "an editable requirement is a source build of a local tree".into(),
                    help:
                        "build a wheel of it and pin that, or declare the environment with `path`"
                            .into(),
                });
            }
            // A global option such as `--index-url`.
            continue;
        }
        if args.allow_missing_hashes {
            continue;
        }
        let name = requirement.split_whitespace().next().unwrap_or(requirement);
        if !requirement.contains("--hash=") && !requirement.contains("--hash ") {
            return Err(EnvError::Lock {
                file: file.to_owned(),
                line: start,
                message: format!("`{name}` has no `--hash`"),
                help: "regenerate the lock with hashes (`uv pip compile --generate-hashes`, or \
                       `pip-compile --generate-hashes`), or set `allow_missing_hashes = true` on the \
                       target to accept whatever the index serves"
                    .into(),
            });
        }
        if !name.contains("==") && !name.contains(" @ ") {
            return Err(EnvError::Lock {
                file: file.to_owned(),
                line: start,
                message: format!("`{name}` is not pinned to one version with `==`"),
                help: "a lock pins every package: `name==1.2.3` with its hashes".into(),
            });
        }
    }
    Ok(())
}

/// PEP 751: every package has hashed artifacts, and a wheel unless source builds are
/// allowed.
fn check_pylock(file: &str, text: &str, args: &Args) -> Result<(), EnvError> {
    let doc: toml::Table = toml::from_str(text).map_err(|e| EnvError::LockFile {
        file: file.to_owned(),
        message: format!("not valid TOML: {}", e.message()),
        help: "write it with `uv pip compile --format pylock.toml` or `pip lock`".into(),
    })?;
    let packages = doc
        .get("packages")
        .and_then(|p| p.as_array())
        .cloned()
        .unwrap_or_default();
    for package in &packages {
        let name = package.get("name").and_then(|n| n.as_str()).unwrap_or("?");
        let wheels = package.get("wheels").and_then(|w| w.as_array());
        let hashed = |artifact: &toml::Value| {
            artifact
                .get("hashes")
                .and_then(|h| h.as_table())
                .is_some_and(|h| !h.is_empty())
        };
        let has_wheel = wheels.is_some_and(|w| !w.is_empty());
        if !has_wheel && !args.allow_source_builds {
            return Err(EnvError::LockFile {
                file: file.to_owned(),
                message: format!("`{name}` has no wheel, so installing it needs a source build"),
                help: "pin a version that publishes wheels for this platform, or set `allow_source_builds = true`"
                    .into(),
            });
        }
        let unhashed = wheels.into_iter().flatten().any(|w| !hashed(w))
            || package.get("sdist").is_some_and(|s| !hashed(s))
            || package.get("archive").is_some_and(|s| !hashed(s));
        if unhashed && !args.allow_missing_hashes {
            return Err(EnvError::LockFile {
                file: file.to_owned(),
                message: format!("an artifact of `{name}` has no hash"),
                help: "regenerate the lock, or set `allow_missing_hashes = true`".into(),
            });
        }
    }
    Ok(())
}

/// uv's lock: registry packages carry hashes; a package with neither a wheel nor a
/// registry source needs a build.
fn check_uv_lock(file: &str, text: &str, args: &Args) -> Result<(), EnvError> {
    let doc: toml::Table = toml::from_str(text).map_err(|e| EnvError::LockFile {
        file: file.to_owned(),
        message: format!("not valid TOML: {}", e.message()),
        help: "write it with `uv lock`".into(),
    })?;
    let packages = doc
        .get("package")
        .and_then(|p| p.as_array())
        .cloned()
        .unwrap_or_default();
    for package in &packages {
        let name = package.get("name").and_then(|n| n.as_str()).unwrap_or("?");
        let source = package.get("source").and_then(|s| s.as_table());
        // The project itself (and workspace members) is not installed (`--no-install-project`).
        if source.is_some_and(|s| s.contains_key("editable") || s.contains_key("virtual")) {
            continue;
        }
        let wheels = package.get("wheels").and_then(|w| w.as_array());
        if wheels.is_none_or(|w| w.is_empty()) && !args.allow_source_builds {
            return Err(EnvError::LockFile {
                file: file.to_owned(),
                message: format!("`{name}` has no wheel, so installing it needs a source build"),
                help: "pin a version that publishes wheels for this platform, or set `allow_source_builds = true`"
                    .into(),
            });
        }
        let unhashed = wheels.into_iter().flatten().any(|w| {
            w.get("hash")
                .and_then(|h| h.as_str())
                .is_none_or(str::is_empty)
        });
        if unhashed && !args.allow_missing_hashes {
            return Err(EnvError::LockFile {
                file: file.to_owned(),
                message: format!("a wheel of `{name}` has no hash"),
                help: "regenerate the lock with `uv lock`, or set `allow_missing_hashes = true`"
                    .into(),
            });
        }
    }
    Ok(())
}

/// Replaces symlinks by what they point to (the interpreter becomes a copy, which finds
/// its standard library through `pyvenv.cfg`'s `home`) or removes them (`lib64 -> lib`),
/// and drops uv's bookkeeping files, so the tree is plain files a store can hold.
fn make_self_contained(prefix: &Path) -> Result<(), EnvError> {
    for name in [".lock", ".gitignore", "CACHEDIR.TAG"] {
        let path = prefix.join(name);
        if path.exists() {
            fs::remove_file(&path)
                .map_err(EnvError::io(format!("cannot remove `{}`", path.display())))?;
        }
    }
    let mut links = Vec::new();
    collect_symlinks(prefix, &mut links)
        .map_err(EnvError::io(format!("cannot read `{}`", prefix.display())))?;
    // Resolve every link before replacing any, so `python3 -> python` copies the
    // interpreter rather than whatever `python` has become.
    let mut plan = Vec::with_capacity(links.len());
    for link in links {
        let target = fs::metadata(&link).ok();
        let content = match &target {
            Some(m) if m.is_file() => Some((
                fs::read(&link)
                    .map_err(EnvError::io(format!("cannot read `{}`", link.display())))?,
                std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777,
            )),
            _ => None,
        };
        plan.push((link, content));
    }
    for (link, content) in plan {
        fs::remove_file(&link)
            .map_err(EnvError::io(format!("cannot remove `{}`", link.display())))?;
        if let Some((bytes, mode)) = content {
            fs::write(&link, bytes)
                .map_err(EnvError::io(format!("cannot write `{}`", link.display())))?;
            fs::set_permissions(&link, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .map_err(EnvError::io(format!(
                    "cannot set the mode of `{}`",
                    link.display()
                )))?;
        }
    }
    Ok(())
}

fn collect_symlinks(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            out.push(entry.path());
        } else if kind.is_dir() {
            collect_symlinks(&entry.path(), out)?;
        }
    }
    Ok(())
}

/// `version_info` from the environment's `pyvenv.cfg`.
fn pyvenv_version(env: &Path) -> Option<String> {
    let cfg = fs::read_to_string(env.join("pyvenv.cfg")).ok()?;
    cfg.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "version_info" || key.trim() == "version").then(|| value.trim().to_owned())
    })
}

/// Name -> version of every distribution in the environment's `site-packages`.
fn installed_packages(env: &Path) -> BTreeMap<String, String> {
    let mut packages = BTreeMap::new();
    let Ok(lib) = fs::read_dir(env.join("lib")) else {
        return packages;
    };
    for python_dir in lib.flatten() {
        let Ok(entries) = fs::read_dir(python_dir.path().join("site-packages")) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".dist-info") {
                continue;
            }
            let Ok(metadata) = fs::read_to_string(entry.path().join("METADATA")) else {
                continue;
            };
            let field = |key: &str| {
                metadata
                    .lines()
                    .take_while(|l| !l.is_empty())
                    .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
            };
            if let (Some(n), Some(v)) = (field("Name:"), field("Version:")) {
                packages.insert(n.to_lowercase().replace(['_', '.'], "-"), v);
            }
        }
    }
    packages
}

/// An environment mlbuild did not build: its interpreter version and packages, for
/// people and provenance (its content entered the key through its tree's digest).
fn describe_external(path: &Path, out: &Path) -> Result<(), EnvError> {
    if !path.join("bin").is_dir() {
        return Err(EnvError::LockFile {
            file: path.display().to_string(),
            message: "this is not an environment: it has no `bin/` directory".into(),
            help: "`path` names a venv or conda environment's directory".into(),
        });
    }
    let description = Description {
        python: pyvenv_version(path),
        packages: installed_packages(path),
        lock: None,
        path: Some(path.display().to_string()),
    };
    write_json(&out.join("python-env.json"), &description)
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), EnvError> {
    let mut text = serde_json::to_string_pretty(value).expect("plain data");
    text.push('\n');
    fs::write(path, text).map_err(EnvError::io(format!("cannot write `{}`", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["--lock", "requirements.lock", "--out", "/o"];
        argv.extend(extra);
        Args::try_parse_from(argv).unwrap()
    }

    #[test]
    fn requirements_need_hashes_and_pins() {
        let good = "# header\nsix==1.16.0 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n    # via x\n--index-url https://example.org/simple\n";
        check_requirements("r.lock", good, &args(&[])).unwrap();
        let unhashed = "six==1.16.0\n";
        let err = check_requirements("r.lock", unhashed, &args(&[])).unwrap_err();
        assert!(
            err.to_string().contains("line 1") && err.to_string().contains("no `--hash`"),
            "{err}"
        );
        check_requirements("r.lock", unhashed, &args(&["--allow-missing-hashes"])).unwrap();
        let unpinned = "a==1 --hash=sha256:aa\nsix>=1 \\\n  --hash=sha256:aa\n";
        let err = check_requirements("r.lock", unpinned, &args(&[])).unwrap_err();
        assert!(
            err.to_string().contains("line 2") && err.to_string().contains("pinned"),
            "{err}"
        );
        for include in ["-r other.txt\n", "--constraint c.txt\n", "-e ./pkg\n"] {
            assert!(
                check_requirements("r.lock", include, &args(&[])).is_err(),
                "{include}"
            );
        }
    }

    #[test]
    fn pylock_needs_wheels_and_hashes() {
        let ok = "lock-version = \"1.0\"\n[[packages]]\nname = \"six\"\nversion = \"1\"\nwheels = [{ url = \"u\", hashes = { sha256 = \"aa\" } }]\n";
        check_pylock("pylock.toml", ok, &args(&[])).unwrap();
        let sdist_only =
            "[[packages]]\nname = \"x\"\nsdist = { url = \"u\", hashes = { sha256 = \"aa\" } }\n";
        let err = check_pylock("pylock.toml", sdist_only, &args(&[])).unwrap_err();
        assert!(err.to_string().contains("source build"), "{err}");
        check_pylock("pylock.toml", sdist_only, &args(&["--allow-source-builds"])).unwrap();
        let unhashed = "[[packages]]\nname = \"six\"\nwheels = [{ url = \"u\" }]\n";
        assert!(check_pylock("pylock.toml", unhashed, &args(&[])).is_err());
        assert!(check_pylock("pylock.toml", "not toml [", &args(&[])).is_err());
    }

    #[test]
    fn uv_lock_skips_the_project_and_needs_wheels() {
        let lock = "version = 1\n[[package]]\nname = \"me\"\nsource = { editable = \".\" }\n[[package]]\nname = \"six\"\nsource = { registry = \"https://pypi.org/simple\" }\nwheels = [{ url = \"u\", hash = \"sha256:aa\" }]\n";
        check_uv_lock("uv.lock", lock, &args(&[])).unwrap();
        let git = "[[package]]\nname = \"x\"\nsource = { git = \"https://g\" }\n";
        assert!(check_uv_lock("uv.lock", git, &args(&[])).is_err());
        check_uv_lock("uv.lock", git, &args(&["--allow-source-builds"])).unwrap();
    }

    #[test]
    fn formats_by_name() {
        assert_eq!(LockFormat::of(Path::new("a/uv.lock")), LockFormat::UvLock);
        assert_eq!(LockFormat::of(Path::new("pylock.toml")), LockFormat::Pylock);
        assert_eq!(
            LockFormat::of(Path::new("pylock.gpu.toml")),
            LockFormat::Pylock
        );
        assert_eq!(
            LockFormat::of(Path::new("requirements.lock")),
            LockFormat::Requirements
        );
    }

    #[test]
    fn symlinks_become_files() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path();
        fs::create_dir_all(env.join("bin")).unwrap();
        fs::create_dir_all(env.join("lib/python3.11/site-packages/six-1.16.0.dist-info")).unwrap();
        fs::write(env.join("real"), b"interp").unwrap();
        std::os::unix::fs::symlink(env.join("real"), env.join("bin/python")).unwrap();
        std::os::unix::fs::symlink("python", env.join("bin/python3")).unwrap();
        std::os::unix::fs::symlink("lib", env.join("lib64")).unwrap();
        fs::write(env.join(".lock"), b"").unwrap();
        fs::write(
            env.join("lib/python3.11/site-packages/six-1.16.0.dist-info/METADATA"),
            "Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\n\nbody\n",
        )
        .unwrap();
        make_self_contained(env).unwrap();
        assert_eq!(fs::read(env.join("bin/python3")).unwrap(), b"interp");
        assert!(!fs::symlink_metadata(env.join("bin/python"))
            .unwrap()
            .is_symlink());
        assert!(!env.join("lib64").exists() && !env.join(".lock").exists());
        assert_eq!(installed_packages(env)["six"], "1.16.0");
    }
}
