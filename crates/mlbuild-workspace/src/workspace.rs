//! Discovery and loading of a whole workspace into a [`Workspace`], plus label queries.
//!
//! A no-op build of a large repository starts here, so loading parses `BUILD.toml` files
//! in parallel and queries work on in-memory maps without touching the disk.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::WorkspaceConfig;
use crate::error::{closest, ErrorKind, WorkspaceError};
use crate::label::{is_valid_package_name, Label, Pattern};
use crate::load_cache::{CacheKey, CacheUse};
use crate::package::{parse_package, Package, Target};
use crate::placeholder::{parse_cmd_arg, CmdPart};
use crate::source::{sub_span, SourceText};

/// The file that marks a workspace root.
pub const WORKSPACE_FILE: &str = "MLBUILD.toml";
/// The file that marks a package.
pub const BUILD_FILE: &str = "BUILD.toml";
/// Directories never searched for packages (besides hidden ones and nested workspaces).
pub const SKIPPED_DIRS: [&str; 3] = ["mlbuild-out", "target", "node_modules"];

/// A parsed workspace: its root, settings and every package.
#[derive(Clone, Debug, PartialEq)]
pub struct Workspace {
    /// Absolute, canonical root directory (the one holding `MLBUILD.toml`).
    pub root: PathBuf,
    pub config: WorkspaceConfig,
    /// Packages by name (`""` is the root package).
    pub packages: BTreeMap<String, Package>,
    /// The text of `MLBUILD.toml`, for diagnostics about workspace settings.
    pub config_source: Arc<SourceText>,
    /// Values of `secret_env` names that mlbuild supplies itself (the signing key of
    /// `package` targets), looked up before the process environment. Never in a key.
    pub secrets: BTreeMap<String, String>,
}

impl Workspace {
    /// The nearest directory at or above `start` that holds `MLBUILD.toml`.
    pub fn discover(start: &Path) -> Result<PathBuf, WorkspaceError> {
        let start = start
            .canonicalize()
            .map_err(|e| WorkspaceError::io("open directory", start, e))?;
        for dir in start.ancestors() {
            if dir.join(WORKSPACE_FILE).is_file() {
                return Ok(dir.to_path_buf());
            }
        }
        Err(WorkspaceError::new(
            ErrorKind::NoWorkspace,
            format!(
                "no `{WORKSPACE_FILE}` found in `{}` or any parent directory",
                start.display()
            ),
        )
        .with_help(format!(
            "create `{WORKSPACE_FILE}` (it may be empty) at the root of your project"
        )))
    }

    /// Parse `MLBUILD.toml` in `root` and every `BUILD.toml` below it.
    pub fn load(root: &Path) -> Result<Workspace, WorkspaceError> {
        Workspace::load_with(root, &[])
    }

    /// [`Workspace::load`], with `--set` overrides applied to the params files before
    /// targets take their `param_keys` from them.
    pub fn load_with(
        root: &Path,
        overrides: &[crate::params_file::ParamOverride],
    ) -> Result<Workspace, WorkspaceError> {
        Ok(Workspace::load_cached(root, overrides, |_| None)?.0)
    }

    /// [`Workspace::load_with`], through the parse cache in the directory `cache_dir`
    /// returns for the workspace's settings (see [`crate::load_cache`]): an unchanged
    /// workspace is decoded instead of parsed, with the same result.
    pub fn load_cached(
        root: &Path,
        overrides: &[crate::params_file::ParamOverride],
        cache_dir: impl FnOnce(&WorkspaceConfig) -> Option<PathBuf>,
    ) -> Result<(Workspace, CacheUse), WorkspaceError> {
        let root = root
            .canonicalize()
            .map_err(|e| WorkspaceError::io("open workspace root", root, e))?;
        let config_path = root.join(WORKSPACE_FILE);
        let config_text = std::fs::read_to_string(&config_path).map_err(|e| {
            let not_found = e.kind() == std::io::ErrorKind::NotFound;
            let err = WorkspaceError::io("read", &config_path, e);
            if not_found {
                err.with_help(format!(
                    "`{}` is not a workspace root; create `{WORKSPACE_FILE}` there or run from inside a workspace",
                    root.display()
                ))
            } else {
                err
            }
        })?;
        let config_source = Arc::new(SourceText {
            name: WORKSPACE_FILE.to_owned(),
            text: config_text,
        });
        let config = WorkspaceConfig::parse(&config_source, &root)?;

        let build_files = find_build_files(&root)?;
        let sources = read_all(&build_files)?;
        let cache = cache_dir(&config).and_then(|dir| {
            CacheKey::new(&dir, &root, &config_source, &config, overrides, &sources)
        });
        let cached = cache.as_ref().and_then(|c| c.read(&root, &sources));
        let cache_use = match (&cache, &cached) {
            (None, _) => CacheUse::Off,
            (Some(_), Some(_)) => CacheUse::Hit,
            (Some(_), None) => CacheUse::Miss,
        };
        let packages = match cached {
            Some(packages) => packages,
            None => {
                let mut packages = parse_all(&build_files, sources, &config)?;
                // Params first: a sweep's values override params, whichever way they were set.
                let params_files = crate::params_file::resolve(
                    &root,
                    &config,
                    &config_source,
                    &mut packages,
                    overrides,
                )?;
                crate::sweep::expand(&mut packages);
                if let Some(cache) = &cache {
                    cache.write(&root, &packages, &params_files);
                }
                packages
            }
        };
        let ws = Workspace {
            root,
            config,
            packages,
            config_source,
            secrets: BTreeMap::new(),
        };
        Ok((ws, cache_use))
    }

    /// The target with this label, if any.
    pub fn target(&self, label: &Label) -> Option<&Target> {
        self.packages.get(&label.package)?.targets.get(&label.name)
    }

    /// Every target, sorted by label.
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        // Package names sort like label packages (BTreeMap by string), so this is in
        // label order.
        self.packages.values().flat_map(|p| p.targets.values())
    }

    /// Expand command-line patterns to sorted, deduplicated labels.
    pub fn resolve(
        &self,
        patterns: &[String],
        current_package: &str,
    ) -> Result<Vec<Label>, WorkspaceError> {
        // Collected, then sorted and deduplicated once: `//...` of a large workspace
        // names every target.
        let mut out = Vec::new();
        for text in patterns {
            match Pattern::parse(text, current_package)? {
                Pattern::Label(label) => {
                    if self.target(&label).is_none() {
                        return Err(self.unknown_target(&label, text));
                    }
                    out.push(label);
                }
                Pattern::AllInPackage(package) => {
                    let Some(pkg) = self.packages.get(&package) else {
                        return Err(self.unknown_package(&package, text));
                    };
                    if pkg.targets.is_empty() {
                        return Err(WorkspaceError::new(
                            ErrorKind::NotFound,
                            format!("pattern `{text}` matches no targets"),
                        )
                        .with_help(format!("`{}` defines no targets", pkg.source.name)));
                    }
                    out.extend(pkg.targets.values().map(|t| t.label.clone()));
                }
                Pattern::Recursive(package) => {
                    let mut matched = false;
                    for pkg in self.packages_under(&package) {
                        matched |= !pkg.targets.is_empty();
                        out.extend(pkg.targets.values().map(|t| t.label.clone()));
                    }
                    if !matched {
                        let err = WorkspaceError::new(
                            ErrorKind::NotFound,
                            format!("pattern `{text}` matches no targets"),
                        );
                        let help = if package.is_empty() {
                            Some(format!("add a `{BUILD_FILE}` with a `[target.NAME]` table"))
                        } else {
                            closest(&package, self.packages.keys().map(String::as_str))
                                .map(|p| format!("did you mean `//{p}/...`?"))
                        };
                        return Err(err.with_help_opt(help));
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Packages equal to `package` or below it (`""` = all).
    fn packages_under<'a>(&'a self, package: &'a str) -> impl Iterator<Item = &'a Package> + 'a {
        self.packages
            .range::<str, _>((
                std::ops::Bound::Included(package),
                std::ops::Bound::Unbounded,
            ))
            // Every name with prefix `package` sorts contiguously from `package` on.
            .take_while(move |(name, _)| name.starts_with(package))
            .filter(move |(name, _)| {
                package.is_empty()
                    || name.as_str() == package
                    || name
                        .strip_prefix(package)
                        .is_some_and(|r| r.starts_with('/'))
            })
            .map(|(_, p)| p)
    }

    /// A did-you-mean for a label that names no target.
    pub fn suggest(&self, label: &Label) -> Option<Label> {
        let package = match self.packages.get(&label.package) {
            Some(_) => label.package.as_str(),
            None => closest(&label.package, self.packages.keys().map(String::as_str))?,
        };
        let pkg = self.packages.get(package)?;
        if pkg.targets.contains_key(&label.name) {
            return Some(Label::new(package, label.name.as_str()));
        }
        let name = closest(&label.name, pkg.targets.keys().map(String::as_str))?;
        Some(Label::new(package, name))
    }

    fn unknown_target(&self, label: &Label, text: &str) -> WorkspaceError {
        let message = if self.packages.contains_key(&label.package) {
            format!(
                "no target `{}` in package `//{}`",
                label.name, label.package
            )
        } else {
            format!("no package `//{}` (for `{text}`)", label.package)
        };
        let help = match self.suggest(label) {
            Some(s) => Some(format!("did you mean `{s}`?")),
            None if !self.packages.contains_key(&label.package) => Some(format!(
                "a package is a directory with a `{BUILD_FILE}`; there is none at `{}`",
                if label.package.is_empty() {
                    "."
                } else {
                    &label.package
                }
            )),
            None => None,
        };
        WorkspaceError::new(ErrorKind::NotFound, message)
            .with_label("no such target")
            .with_help_opt(help)
    }

    fn unknown_package(&self, package: &str, text: &str) -> WorkspaceError {
        let help = closest(package, self.packages.keys().map(String::as_str))
            .map(|p| format!("did you mean `//{p}:all`?"));
        WorkspaceError::new(
            ErrorKind::NotFound,
            format!("no package `//{package}` (for `{text}`)"),
        )
        .with_help_opt(help)
    }

    /// Check every target's deps and `cmd` placeholders against the loaded workspace.
    /// Large workspaces are checked on all cores; the first error in label order wins, as
    /// when checking one target after the other.
    pub fn check_deps(&self) -> Result<(), WorkspaceError> {
        const PER_THREAD: usize = 512;
        let targets: Vec<&Target> = self.targets().collect();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(targets.len().div_ceil(PER_THREAD))
            .max(1);
        if threads == 1 {
            return targets.iter().try_for_each(|t| self.check_target(t));
        }
        let chunk = targets.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = targets
                .chunks(chunk)
                .map(|part| scope.spawn(move || part.iter().try_for_each(|t| self.check_target(t))))
                .collect();
            let results: Vec<Result<(), WorkspaceError>> = handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect();
            results.into_iter().collect()
        })
    }

    fn check_target(&self, target: &Target) -> Result<(), WorkspaceError> {
        let source = &target.source;
        let span_of = |spans: &[std::ops::Range<usize>], i: usize| {
            spans
                .get(i)
                .cloned()
                .unwrap_or_else(|| target.spans.name.clone())
        };
        let mut by_name: HashMap<&str, &Label> = HashMap::with_capacity(target.deps.len());
        for (i, dep) in target.deps.iter().enumerate() {
            let span = span_of(&target.spans.deps, i);
            if *dep == target.label {
                return Err(WorkspaceError::new(
                    ErrorKind::Dep,
                    format!("target `{}` depends on itself", target.label),
                )
                .at(source, span)
                .with_label("self-dependency")
                .with_help("remove it from `deps`"));
            }
            if self.target(dep).is_none() {
                let text = dep.to_string();
                return Err(self
                    .unknown_target(dep, &text)
                    .with_kind(ErrorKind::Dep)
                    .at(source, span));
            }
            if let Some(prev) = by_name.insert(dep.name.as_str(), dep) {
                let message = if prev == dep {
                    format!("`{dep}` is listed twice in `deps` of `{}`", target.label)
                } else {
                    format!(
                        "deps `{prev}` and `{dep}` of `{}` have the same name `{}`",
                        target.label, dep.name
                    )
                };
                let help = if prev == dep {
                    "remove the duplicate".to_owned()
                } else {
                    format!(
                        "`{{deps.{}}}` would be ambiguous; rename one of the targets",
                        dep.name
                    )
                };
                return Err(WorkspaceError::new(ErrorKind::Dep, message)
                    .at(source, span)
                    .with_label("duplicate dep name")
                    .with_help(help));
            }
        }

        for (i, arg) in target.cmd.iter().enumerate() {
            // Without braces an argument is one literal: nothing to check.
            if !arg.contains(['{', '}']) {
                continue;
            }
            let token = span_of(&target.spans.cmd, i);
            let parts = parse_cmd_arg(arg).map_err(|e| {
                WorkspaceError::new(ErrorKind::Placeholder, e.message)
                    .at(source, sub_span(&source.text, &token, arg, e.range))
                    .with_label("invalid placeholder")
                    .with_help_opt(e.help)
            })?;
            for part in parts {
                let bad = |what: String, help: String| {
                    let placeholder = placeholder_range(arg, &what);
                    WorkspaceError::new(
                        ErrorKind::Placeholder,
                        format!(
                            "`{what}` in `cmd` of `{}` {}",
                            target.label, "does not resolve"
                        ),
                    )
                    .at(source, sub_span(&source.text, &token, arg, placeholder))
                    .with_label("not found")
                    .with_help(help)
                };
                match part {
                    CmdPart::Dep(name) if !by_name.contains_key(name) => {
                        let help = match closest(name, by_name.keys().copied()) {
                            Some(s) => format!("did you mean `{{deps.{s}}}`?"),
                            None => format!(
                                "`{name}` is not the name of any dep; add the target to `deps`"
                            ),
                        };
                        return Err(bad(format!("{{deps.{name}}}"), help));
                    }
                    CmdPart::Param(path) => {
                        if let Err(help) = lookup_param(&target.params, &path) {
                            return Err(bad(format!("{{params.{}}}", path.join(".")), help));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Every source file of `target`: literal srcs and glob matches, sorted and deduplicated.
    pub fn expand_srcs(&self, target: &Target) -> Result<Vec<SourceFile>, WorkspaceError> {
        crate::srcs::expand(self, target)
    }

    /// The package containing `dir` (nearest ancestor with a `BUILD.toml`), `""` if none.
    pub fn package_of_dir(&self, dir: &Path) -> String {
        let abs = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            match std::env::current_dir() {
                Ok(cwd) => cwd.join(dir),
                Err(_) => return String::new(),
            }
        };
        let abs = abs.canonicalize().unwrap_or(abs);
        let Ok(rel) = abs.strip_prefix(&self.root) else {
            return String::new();
        };
        let mut comps: Vec<&str> = Vec::new();
        for comp in rel.components() {
            match comp.as_os_str().to_str() {
                Some(c) => comps.push(c),
                None => break,
            }
        }
        while !comps.is_empty() {
            let name = comps.join("/");
            if self.packages.contains_key(&name) {
                return name;
            }
            comps.pop();
        }
        String::new()
    }
}

/// A source file of a target. Compared and ordered by its paths only.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// Workspace-relative POSIX path.
    pub path: String,
    /// Absolute path (inside the workspace; symlinks are not resolved).
    pub abs: PathBuf,
    /// The file's metadata, when expansion already read it and the file is not a symlink
    /// (so `lstat` and `stat` agree): the digest cache can then skip a second `stat`,
    /// which is a tenth of a no-op build.
    pub metadata: Option<std::fs::Metadata>,
}

impl PartialEq for SourceFile {
    fn eq(&self, other: &Self) -> bool {
        (&self.path, &self.abs) == (&other.path, &other.abs)
    }
}

impl Eq for SourceFile {}

impl PartialOrd for SourceFile {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SourceFile {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.path, &self.abs).cmp(&(&other.path, &other.abs))
    }
}

impl std::hash::Hash for SourceFile {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (&self.path, &self.abs).hash(state);
    }
}

/// The byte range of the first occurrence of `placeholder` in `arg` (whole arg if absent).
fn placeholder_range(arg: &str, placeholder: &str) -> std::ops::Range<usize> {
    match arg.find(placeholder) {
        Some(start) => start..start + placeholder.len(),
        None => 0..arg.len(),
    }
}

/// Walk `params` along `path`; on failure, a help text for the user.
fn lookup_param(params: &BTreeMap<String, toml::Value>, path: &[&str]) -> Result<(), String> {
    let Some((first, rest)) = path.split_first() else {
        return Err("name a param, like `{params.seed}`".to_owned());
    };
    let missing = |keys: Vec<&str>, key: &str, at: &str| match closest(key, keys) {
        Some(s) => format!("did you mean `{at}{s}}}`?"),
        None => format!("add `{key}` to `params`"),
    };
    let Some(mut value) = params.get(*first) else {
        return Err(missing(
            params.keys().map(String::as_str).collect(),
            first,
            "{params.",
        ));
    };
    let mut walked = format!("{{params.{first}");
    for key in rest {
        let toml::Value::Table(table) = value else {
            return Err(format!("`{walked}}}` is not a table"));
        };
        let Some(next) = table.get(*key) else {
            let at = format!("{walked}.");
            return Err(missing(
                table.keys().map(String::as_str).collect(),
                key,
                &at,
            ));
        };
        walked.push('.');
        walked.push_str(key);
        value = next;
    }
    Ok(())
}

/// Find every `BUILD.toml` below `root`, as (package name, path), sorted by package.
///
/// Runs on every command, over every file of the workspace, so it reads each directory
/// once and keeps only subdirectories and `BUILD.toml` entries (file types come from the
/// directory listing, no `stat` per file). Directories are visited in sorted order, so
/// the first problem reported does not depend on the order the filesystem lists them.
fn find_build_files(root: &Path) -> Result<Vec<(String, PathBuf)>, WorkspaceError> {
    let mut found = Vec::new();
    visit_dir(root, root, &mut found)?;
    found.sort();
    Ok(found)
}

fn visit_dir(
    root: &Path,
    dir: &Path,
    found: &mut Vec<(String, PathBuf)>,
) -> Result<(), WorkspaceError> {
    let read_error = |path: &Path, e: std::io::Error| WorkspaceError::io("read directory", path, e);
    // (name, is a directory) of the entries that matter, sorted by name.
    let mut entries: Vec<(std::ffi::OsString, bool)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| read_error(dir, e))? {
        let entry = entry.map_err(|e| read_error(dir, e))?;
        let kind = entry
            .file_type()
            .map_err(|e| read_error(&entry.path(), e))?;
        let name = entry.file_name();
        if kind.is_dir() || name == BUILD_FILE {
            entries.push((name, kind.is_dir()));
        }
    }
    entries.sort_unstable();
    for (name, is_dir) in entries {
        let path = dir.join(&name);
        if is_dir {
            let name = name.to_string_lossy();
            if name.starts_with('.')
                || SKIPPED_DIRS.contains(&name.as_ref())
                || path.join(WORKSPACE_FILE).symlink_metadata().is_ok()
            {
                continue;
            }
            visit_dir(root, &path, found)?;
            continue;
        }
        let rel = dir.strip_prefix(root).unwrap_or(Path::new(""));
        let Some(name) = rel
            .to_str()
            .map(|s| s.replace(std::path::MAIN_SEPARATOR, "/"))
        else {
            return Err(WorkspaceError::new(
                ErrorKind::Invalid,
                format!("package directory `{}` is not valid UTF-8", rel.display()),
            )
            .with_help("rename the directory"));
        };
        if !is_valid_package_name(&name) {
            return Err(WorkspaceError::new(
                ErrorKind::Invalid,
                format!(
                    "directory `{name}` holds a `{BUILD_FILE}` but is not a valid package name"
                ),
            )
            .with_help(
                "package directory names may only contain `A-Z a-z 0-9 _ . + -`; rename it",
            ));
        }
        found.push((name, path));
    }
    Ok(())
}

/// Reads every build file (in parallel for large workspaces), in the order given.
fn read_all(files: &[(String, PathBuf)]) -> Result<Vec<Arc<SourceText>>, WorkspaceError> {
    parallel_map(files, 8, |(name, path)| {
        let text =
            std::fs::read_to_string(path).map_err(|e| WorkspaceError::io("read", path, e))?;
        let display = if name.is_empty() {
            BUILD_FILE.to_owned()
        } else {
            format!("{name}/{BUILD_FILE}")
        };
        Ok(Arc::new(SourceText {
            name: display,
            text,
        }))
    })
    .into_iter()
    .collect()
}

/// `f` over `items` on up to one thread per core, at least `per_thread` items each, in
/// order: small workspaces stay on one thread, large ones use every core.
pub(crate) fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    per_thread: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len().div_ceil(per_thread))
        .max(1);
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(results) => results,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

/// Parse all build files, in parallel for large workspaces; the first error in package
/// order wins so that the reported error does not depend on thread timing.
fn parse_all(
    files: &[(String, PathBuf)],
    sources: Vec<Arc<SourceText>>,
    config: &WorkspaceConfig,
) -> Result<BTreeMap<String, Package>, WorkspaceError> {
    let inputs: Vec<(&(String, PathBuf), Arc<SourceText>)> = files.iter().zip(sources).collect();
    let results = parallel_map(&inputs, 8, |((name, path), source)| {
        parse_package(name, path.clone(), Arc::clone(source), config)
    });
    let mut packages = BTreeMap::new();
    for result in results {
        let package = result?;
        packages.insert(package.name.clone(), package);
    }
    Ok(packages)
}
