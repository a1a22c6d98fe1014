//! Resolution of tools (the command's program and declared `tools`) on the sandbox path.
//!
//! Main type: [`ToolResolver`]. Tools are looked up on the workspace's hermetic
//! `[sandbox] path`, never the user's `$PATH`, so a shim or a tool installed in a home
//! directory cannot silently change what an action runs; a tool's identity in the key is
//! the digest of the binary it resolves to (through symlinks), not its path.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mlbuild_digest::Digest;
use mlbuild_store::{FileDigestCache, OutputFile};

use crate::ExecError;

/// A tool found on the sandbox path.
#[derive(Clone, Debug)]
pub struct ResolvedTool {
    /// Where it was found on the sandbox path (what the action executes).
    pub path: PathBuf,
    /// Digest of the file it resolves to.
    pub digest: Digest,
    /// The installation prefix to expose read-only in the sandbox when it lies outside the
    /// system directories (e.g. a virtualenv).
    pub prefix: Option<PathBuf>,
}

/// Memoizing tool lookup, shared by all actions of one build.
pub struct ToolResolver {
    search_path: Vec<String>,
    cache: Mutex<HashMap<String, Option<ResolvedTool>>>,
    /// Digests of external environments' trees, each walked once per build.
    trees: Mutex<HashMap<PathBuf, Digest>>,
    /// Locked environments by label: digest and files, prepared once per build.
    locked: Mutex<HashMap<String, LockedTree>>,
}

/// A locked environment's tree digest and files (relative to its prefix), with the
/// output count it was made from.
type LockedTree = (usize, Digest, Arc<Vec<(String, OutputFile)>>);

impl ToolResolver {
    pub fn new(search_path: Vec<String>) -> Self {
        ToolResolver {
            search_path,
            cache: Mutex::new(HashMap::new()),
            trees: Mutex::new(HashMap::new()),
            locked: Mutex::new(HashMap::new()),
        }
    }

    /// A locked environment's digest and files, made by `make` at most once per build
    /// (an environment's outputs do not change within one build).
    pub(crate) fn locked_tree(
        &self,
        label: &str,
        outputs: usize,
        make: impl FnOnce() -> (Digest, Arc<Vec<(String, OutputFile)>>),
    ) -> (Digest, Arc<Vec<(String, OutputFile)>>) {
        if let Some((n, d, files)) = self.locked.lock().expect("env cache lock").get(label) {
            if *n == outputs {
                return (*d, Arc::clone(files));
            }
        }
        let (digest, files) = make();
        self.locked
            .lock()
            .expect("env cache lock")
            .insert(label.to_owned(), (outputs, digest, Arc::clone(&files)));
        (digest, files)
    }

    /// The digest of the tree at `root`, computed by `compute` at most once per build
    /// (several dependents of one environment plan in parallel; a duplicate walk costs
    /// only `stat`s, so no lock is held while walking).
    pub(crate) fn tree_digest(
        &self,
        root: &Path,
        compute: impl FnOnce() -> Result<Digest, ExecError>,
    ) -> Result<Digest, ExecError> {
        if let Some(d) = self.trees.lock().expect("tree cache lock").get(root) {
            return Ok(*d);
        }
        let digest = compute()?;
        self.trees
            .lock()
            .expect("tree cache lock")
            .insert(root.to_path_buf(), digest);
        Ok(digest)
    }

    /// The `uv` that builds locked environments: `MLBUILD_UV`, else `[python] uv`, else
    /// `uv` on the sandbox path. It is one self-contained binary, so its digest is all of
    /// it that can change a result; it is mounted alone at a fixed path.
    pub fn resolve_uv(
        &self,
        label: &str,
        configured: Option<&Path>,
        files: &FileDigestCache,
    ) -> Result<ResolvedTool, ExecError> {
        let chosen = std::env::var_os("MLBUILD_UV")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| configured.map(Path::to_path_buf));
        let Some(path) = chosen else {
            let mut tool = self
                .resolve_with(|| label.to_owned(), "uv", files)
                .map_err(|_| ExecError::ToolNotFound {
                    label: label.to_owned(),
                    tool: "uv".into(),
                    path: self.search_path.clone(),
                })?;
            tool.path = std::fs::canonicalize(&tool.path).unwrap_or(tool.path);
            tool.prefix = None;
            return Ok(tool);
        };
        let real = std::fs::canonicalize(&path).map_err(|e| {
            ExecError::io(
                format!(
                    "`{label}`: cannot find uv at `{}` (from MLBUILD_UV or `[python] uv`)",
                    path.display()
                ),
                e,
            )
        })?;
        let fd = files
            .digest(&real)
            .map_err(|e| ExecError::io(format!("cannot hash `{}`", real.display()), e))?;
        Ok(ResolvedTool {
            path: real,
            digest: fd.digest,
            prefix: None,
        })
    }

    pub fn search_path(&self) -> &[String] {
        &self.search_path
    }

    /// Resolves a bare tool name, hashing the binary through the file digest cache (an
    /// unchanged interpreter costs one `stat`).
    pub fn resolve(
        &self,
        label: &str,
        name: &str,
        files: &FileDigestCache,
    ) -> Result<ResolvedTool, ExecError> {
        self.resolve_with(|| label.to_owned(), name, files)
    }

    /// [`ToolResolver::resolve`], formatting the label only if the tool is missing.
    pub fn resolve_with(
        &self,
        label: impl FnOnce() -> String,
        name: &str,
        files: &FileDigestCache,
    ) -> Result<ResolvedTool, ExecError> {
        if let Some(hit) = self.cache.lock().expect("tool cache lock").get(name) {
            return hit.clone().ok_or_else(|| self.not_found(&label(), name));
        }
        let found = self.lookup(name, files)?;
        self.cache
            .lock()
            .expect("tool cache lock")
            .insert(name.to_string(), found.clone());
        found.ok_or_else(|| self.not_found(&label(), name))
    }

    /// The running mlbuild binary, the program of built-in kinds (`mlbuild rule ...`).
    /// Exposed read-only in the sandbox as that single file, wherever it is installed.
    pub fn resolve_self(&self, files: &FileDigestCache) -> Result<ResolvedTool, ExecError> {
        const SELF: &str = "\0self";
        if let Some(Some(hit)) = self.cache.lock().expect("tool cache lock").get(SELF) {
            return Ok(hit.clone());
        }
        let exe = std::env::current_exe()
            .and_then(std::fs::canonicalize)
            .map_err(|e| ExecError::io("cannot locate the running mlbuild binary", e))?;
        let digest = files
            .digest(&exe)
            .map_err(|e| ExecError::io(format!("cannot hash `{}`", exe.display()), e))?
            .digest;
        let tool = ResolvedTool {
            prefix: (!is_system(&exe)).then(|| exe.clone()),
            path: exe,
            digest,
        };
        self.cache
            .lock()
            .expect("tool cache lock")
            .insert(SELF.to_owned(), Some(tool.clone()));
        Ok(tool)
    }

    fn not_found(&self, label: &str, name: &str) -> ExecError {
        ExecError::ToolNotFound {
            label: label.to_string(),
            tool: name.to_string(),
            path: self.search_path.clone(),
        }
    }

    fn lookup(
        &self,
        name: &str,
        files: &FileDigestCache,
    ) -> Result<Option<ResolvedTool>, ExecError> {
        for dir in &self.search_path {
            let candidate = Path::new(dir).join(name);
            let Ok(meta) = std::fs::metadata(&candidate) else {
                continue;
            };
            if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
                continue;
            }
            let real = std::fs::canonicalize(&candidate).map_err(|e| {
                ExecError::io(format!("cannot resolve tool `{}`", candidate.display()), e)
            })?;
            let digest = files
                .digest(&real)
                .map_err(|e| ExecError::io(format!("cannot hash tool `{}`", real.display()), e))?
                .digest;
            let prefix = install_prefix(&candidate).filter(|p| !is_system(p));
            return Ok(Some(ResolvedTool {
                path: candidate,
                digest,
                prefix,
            }));
        }
        Ok(None)
    }
}

/// `/x/venv/bin/python3` -> `/x/venv`.
fn install_prefix(tool: &Path) -> Option<PathBuf> {
    let bin = tool.parent()?;
    Some(bin.parent().unwrap_or(bin).to_path_buf())
}

/// Whether the sandbox always shows `path` read-only (so it needs no extra exposure).
pub(crate) fn is_system(path: &Path) -> bool {
    mlbuild_sandbox::SYSTEM_DIRS
        .iter()
        .any(|d| path.starts_with(d))
        || path == Path::new("/")
}
