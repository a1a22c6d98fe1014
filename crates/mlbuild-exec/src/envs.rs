//! Python environments an action runs in: what enters its key, what its sandbox mounts,
//! and where its tools come from.
//!
//! Main type: [`EnvMount`]. A `python_env` target built from a lock has its venv among its
//! outputs (`env/...`); a dependent's key records one digest for that whole tree (not one
//! input per file), and its sandbox binds the tree, linked once per store under
//! `<store>/envs/<digest>`, read-only at the environment's fixed prefix: O(1) per action
//! whatever the environment's size. An external environment (`path = ...`) is hashed where
//! it is, through the file digest cache (a `stat` per file when unchanged), together with
//! the base interpreter's installation when that lies outside the system directories, and
//! is bound at its own path, which its files name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mlbuild_digest::Digest;
use mlbuild_store::{FileDigestCache, OutputFile};
use mlbuild_workspace::{is_system_path, Label, Target};
use serde::Serialize;

use crate::plan::Outputs;
use crate::tools::{ResolvedTool, ToolResolver};
use crate::ExecError;

/// Domain of an environment's tree digest.
const TREE_DOMAIN: &str = "mlbuild-python-env-tree";

/// The subdirectory of a locked environment's outputs that holds the venv.
pub const ENV_OUT_DIR: &str = "env/";

/// One environment, as an action sees it.
#[derive(Clone, Debug)]
pub struct EnvMount {
    /// The key's name for it: the label of a locked environment, the host path of an
    /// external one.
    pub name: String,
    /// Digest of the whole tree.
    pub digest: Digest,
    /// Its path inside the sandbox (`{deps.NAME}`); `bin/` goes first on `PATH`.
    pub prefix: PathBuf,
    pub source: EnvSource,
}

/// Where an environment's files come from.
#[derive(Clone, Debug)]
pub enum EnvSource {
    /// A locked environment's outputs below `env/` (paths relative to the prefix).
    Store(Arc<Vec<(String, OutputFile)>>),
    /// Host directories bound read-only at their own paths: the environment, and the base
    /// interpreter's installation when it is not a system directory.
    Host(Vec<PathBuf>),
}

/// One file of an external tree, as its digest records it.
#[derive(Serialize)]
#[serde(untagged)]
enum TreeEntry {
    File { digest: Digest, executable: bool },
    Symlink { symlink: String },
}

/// The digest of a locked environment's outputs, all of them: one line per file (path,
/// digest, executable bit) in path order, hashed directly rather than through a JSON
/// value, since every dependent of a 6,000-file environment needs it on every build.
pub fn outputs_digest(outputs: &Outputs) -> Digest {
    let mut text = String::with_capacity(outputs.len() * 96);
    for (path, file) in outputs {
        text.push_str(path);
        text.push('\0');
        text.push_str(&file.digest.to_hex());
        text.push(if file.executable { 'x' } else { '-' });
        text.push('\n');
    }
    mlbuild_digest::digest_domain(TREE_DOMAIN, &text)
}

/// The environment a `python_env` dependency provides, given its outputs; computed once
/// per build and shared by all its dependents.
pub fn locked_mount(
    dep: &Label,
    prefix: &str,
    outputs: &Outputs,
    tools: &ToolResolver,
) -> EnvMount {
    let (digest, files) = tools.locked_tree(&dep.to_string(), outputs.len(), || {
        let files: Vec<(String, OutputFile)> = outputs
            .iter()
            .filter_map(|(path, file)| Some((path.strip_prefix(ENV_OUT_DIR)?.to_owned(), *file)))
            .collect();
        (outputs_digest(outputs), Arc::new(files))
    });
    EnvMount {
        name: dep.to_string(),
        digest,
        prefix: PathBuf::from(prefix),
        source: EnvSource::Store(files),
    }
}

/// An external environment, hashed where it is. `declared` is the path as written (a
/// relative one is relative to the package of `owner`).
pub fn external_mount(
    ws_root: &Path,
    owner: &Target,
    declared: &Path,
    files: &FileDigestCache,
    tools: &ToolResolver,
) -> Result<EnvMount, ExecError> {
    let label = owner.label.to_string();
    let given = if declared.is_absolute() {
        declared.to_path_buf()
    } else {
        ws_root.join(&owner.label.package).join(declared)
    };
    let path = std::fs::canonicalize(&given).map_err(|e| ExecError::Environment {
        label: label.clone(),
        env: given.display().to_string(),
        reason: format!("it is not accessible: {e}"),
        help: "create the environment there, or correct `path`".into(),
    })?;
    if !path.is_dir() {
        return Err(ExecError::Environment {
            label,
            env: path.display().to_string(),
            reason: "it is not a directory".into(),
            help: "`path` names the environment's directory (the one holding `bin/`)".into(),
        });
    }
    if path.starts_with(ws_root) {
        // The workspace is hidden in the sandbox and binding part of it back would show
        // the user's sources undeclared; the same bind of a path outside is fine.
        let inside = path
            .strip_prefix(ws_root)
            .unwrap_or(&path)
            .display()
            .to_string();
        if inside.split('/').any(|c| c == "mlbuild-out") {
            return Err(ExecError::Environment {
                label,
                env: path.display().to_string(),
                reason: "it is inside `mlbuild-out`".into(),
                help: "use the `python_env` target that built it as a dependency instead".into(),
            });
        }
    }
    let mut roots = vec![path.clone()];
    if let Some(base) = base_installation(&path) {
        if !is_system_path(&base) && !base.starts_with(&path) {
            roots.push(base);
        }
    }
    let mut trees = BTreeMap::new();
    for root in &roots {
        let digest = tools.tree_digest(root, || tree_digest(root, files))?;
        trees.insert(root.display().to_string(), digest);
    }
    let digest = mlbuild_digest::digest_canonical(TREE_DOMAIN, &trees).0;
    Ok(EnvMount {
        name: path.display().to_string(),
        digest,
        prefix: path,
        source: EnvSource::Host(roots),
    })
}

/// A venv's base interpreter installation, from `home = /x/bin` in its `pyvenv.cfg` (a
/// conda environment or a plain installation has none: it is its own base).
fn base_installation(env: &Path) -> Option<PathBuf> {
    let cfg = std::fs::read_to_string(env.join("pyvenv.cfg")).ok()?;
    let home = cfg.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "home").then(|| PathBuf::from(value.trim()))
    })?;
    let home = std::fs::canonicalize(&home).unwrap_or(home);
    Some(match home.file_name() {
        Some(name) if name == "bin" => home.parent()?.to_path_buf(),
        _ => home,
    })
}

/// Digest of every file below `root`: content and executable bit through the file digest
/// cache, symlinks by their target's text. Bytecode caches are left out: Python writes
/// them beside the sources whenever the environment is used outside the sandbox, and they
/// are derived from the sources that are hashed.
fn tree_digest(root: &Path, files: &FileDigestCache) -> Result<Digest, ExecError> {
    let mut entries = BTreeMap::new();
    let walk = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.file_name() != "__pycache__");
    for entry in walk {
        let entry = entry.map_err(|e| {
            ExecError::io(
                format!("cannot read the environment `{}`", root.display()),
                std::io::Error::other(e.to_string()),
            )
        })?;
        let rel = entry
            .path()
            .strip_prefix(root)
            .expect("walk stays below its root")
            .to_string_lossy()
            .into_owned();
        let kind = entry.file_type();
        if kind.is_symlink() {
            let target = std::fs::read_link(entry.path()).map_err(|e| {
                ExecError::io(format!("cannot read link `{}`", entry.path().display()), e)
            })?;
            entries.insert(
                rel,
                TreeEntry::Symlink {
                    symlink: target.to_string_lossy().into_owned(),
                },
            );
        } else if kind.is_file() && !rel.ends_with(".pyc") {
            let fd = files.digest(entry.path()).map_err(|e| {
                ExecError::io(format!("cannot hash `{}`", entry.path().display()), e)
            })?;
            entries.insert(
                rel,
                TreeEntry::File {
                    digest: fd.digest,
                    executable: fd.executable,
                },
            );
        }
    }
    Ok(mlbuild_digest::digest_canonical(TREE_DOMAIN, &entries).0)
}

/// A program found in one of the environments, searched in order before the sandbox path
/// (as their `bin/` directories come first on the action's `PATH`). `name` is a bare name
/// or an absolute path inside an external environment.
pub fn find_tool(
    envs: &[EnvMount],
    name: &str,
    files: &FileDigestCache,
) -> Result<Option<ResolvedTool>, ExecError> {
    for env in envs {
        match &env.source {
            EnvSource::Store(outputs) => {
                if name.contains('/') {
                    continue;
                }
                let wanted = format!("bin/{name}");
                // Sorted by path (they come from a map).
                let found = outputs
                    .binary_search_by(|(p, _)| p.as_str().cmp(&wanted))
                    .ok()
                    .map(|i| &outputs[i])
                    .filter(|(_, f)| f.executable);
                if let Some((_, file)) = found {
                    return Ok(Some(ResolvedTool {
                        path: env.prefix.join(&wanted),
                        digest: file.digest,
                        prefix: None,
                    }));
                }
            }
            EnvSource::Host(roots) => {
                let candidate = if name.starts_with('/') {
                    let path = PathBuf::from(name);
                    if !roots.iter().any(|r| path.starts_with(r)) {
                        continue;
                    }
                    path
                } else if name.contains('/') {
                    continue;
                } else {
                    env.prefix.join("bin").join(name)
                };
                let Ok(real) = std::fs::canonicalize(&candidate) else {
                    continue;
                };
                if !real.is_file() {
                    continue;
                }
                let fd = files.digest(&real).map_err(|e| {
                    ExecError::io(format!("cannot hash tool `{}`", real.display()), e)
                })?;
                if !fd.executable {
                    continue;
                }
                return Ok(Some(ResolvedTool {
                    path: candidate,
                    digest: fd.digest,
                    prefix: None,
                }));
            }
        }
    }
    Ok(None)
}

/// The help for a program or directory outside the system directories.
pub fn declare_help(path: &Path) -> String {
    let env = path
        .ancestors()
        .find(|a| a.join("bin").is_dir() && path.starts_with(a.join("bin")))
        .unwrap_or(path);
    format!(
        "declare the environment it belongs to: a target with `kind = \"python_env\"` and \
         `path = \"{}\"`, listed in this target's `deps`; its tree's digest then enters the key \
         (docs/python.md)",
        env.display()
    )
}

#[cfg(test)]
mod tests {
    /// The workspace crate refuses `[sandbox] path` entries outside the directories the
    /// sandbox shows; the two lists must be one.
    #[test]
    fn system_directories_agree_with_the_sandbox() {
        assert_eq!(mlbuild_workspace::SYSTEM_DIRS, mlbuild_sandbox::SYSTEM_DIRS);
    }
}
