//! Expansion of a target's `srcs` (literal files and globs) into [`SourceFile`]s.
//!
//! This runs for every target on every build, so literal files cost one `lstat` and no
//! directory walk; and since srcs feed action keys, anything that could leak files from
//! outside the workspace (`..`, absolute paths, escaping symlinks) is refused.

use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};

use crate::error::{closest, ErrorKind, WorkspaceError};
use crate::package::Target;
use crate::source::Span;
use crate::workspace::{SourceFile, Workspace, BUILD_FILE, WORKSPACE_FILE};

/// Characters that make a src a glob rather than a literal path.
const GLOB_META: [char; 4] = ['*', '?', '[', '{'];

pub(crate) fn expand(ws: &Workspace, target: &Target) -> Result<Vec<SourceFile>, WorkspaceError> {
    let package = target.label.package.as_str();
    let pkg_dir = if package.is_empty() {
        ws.root.clone()
    } else {
        ws.root.join(package)
    };
    let err = |span: &Span, message: String| {
        WorkspaceError::new(ErrorKind::Src, message).at(&target.source, span.clone())
    };

    let mut files = Vec::with_capacity(target.srcs.len());
    let mut globs: Vec<(GlobMatcher, &str, Span, usize)> = Vec::new();
    for (i, src) in target.srcs.iter().enumerate() {
        let span = target.spans.srcs.get(i).unwrap_or(&target.spans.name);
        check_syntax(src).map_err(|(why, help)| {
            err(span, format!("invalid src `{src}`: {why}"))
                .with_label("invalid src")
                .with_help(help)
        })?;
        if src.contains(GLOB_META) {
            let matcher = GlobBuilder::new(src)
                .literal_separator(true)
                .backslash_escape(false)
                .build()
                .map_err(|e| {
                    err(span, format!("invalid glob `{src}`: {}", e.kind()))
                        .with_label("invalid glob")
                })?
                .compile_matcher();
            globs.push((matcher, src.as_str(), span.clone(), 0));
        } else {
            files.push(literal(ws, target, &pkg_dir, src, span)?);
        }
    }
    if !globs.is_empty() {
        walk_globs(ws, target, &pkg_dir, &mut globs, &mut files)?;
        if let Some((_, src, span, _)) = globs.iter().find(|g| g.3 == 0) {
            let place = if package.is_empty() { "." } else { package };
            return Err(err(span, format!("glob `{src}` matches no files"))
                .with_label("matches nothing")
                .with_help(format!(
                    "globs match files under `{place}/`, excluding hidden files, `mlbuild-out` and subpackages"
                )));
        }
    }
    files.sort_unstable();
    files.dedup();
    Ok(files)
}

/// Reject srcs that are absolute, escape the package, or are not canonical POSIX paths.
fn check_syntax(src: &str) -> Result<(), (&'static str, String)> {
    let help = || {
        "srcs are paths relative to the package directory, like `train.py` or `data/*.csv`"
            .to_owned()
    };
    if src.is_empty() {
        return Err(("it is empty", help()));
    }
    if src.starts_with('/') {
        return Err(("absolute paths are not allowed", help()));
    }
    if src.contains('\\') {
        return Err((
            "backslashes are not allowed",
            "use `/` as the path separator".to_owned(),
        ));
    }
    if src.ends_with('/') {
        return Err((
            "it names a directory",
            format!("use a glob like `{}**`", src),
        ));
    }
    for comp in src.split('/') {
        match comp {
            ".." => {
                return Err((
                    "`..` is not allowed",
                    "a target may only use files in its own package; depend on a filegroup in the other package".to_owned(),
                ))
            }
            "." => return Err(("`.` components are not allowed", format!("write `{}`", src.replace("./", "")))),
            "" => return Err(("it has an empty path component", help())),
            _ => {}
        }
    }
    Ok(())
}

fn escape_error(target: &Target, span: &Span, src: &str, resolved: &Path) -> WorkspaceError {
    WorkspaceError::new(
        ErrorKind::Src,
        format!(
            "src `{src}` is a symlink to `{}`, outside the workspace",
            resolved.display()
        ),
    )
    .at(&target.source, span.clone())
    .with_label("leaves the workspace")
    .with_help("copy the file into the workspace; builds may only read files inside it")
}

fn dir_error(target: &Target, span: &Span, src: &str) -> WorkspaceError {
    WorkspaceError::new(ErrorKind::Src, format!("src `{src}` is a directory"))
        .at(&target.source, span.clone())
        .with_label("directory")
        .with_help(format!("use a glob like `{src}/**`"))
}

/// Resolve a symlink and make sure it stays inside the workspace and, when it leads to a
/// file, inside the target's own package; returns whether it points at a directory (a
/// directory is checked by the files read through it).
fn check_symlink(
    ws: &Workspace,
    target: &Target,
    span: &Span,
    src: &str,
    path: &Path,
) -> Result<bool, WorkspaceError> {
    let resolved = path.canonicalize().map_err(|e| {
        WorkspaceError::new(
            ErrorKind::Src,
            format!("src `{src}` is a broken symlink: {e}"),
        )
        .at(&target.source, span.clone())
        .with_label("broken symlink")
    })?;
    if !resolved.starts_with(&ws.root) {
        return Err(escape_error(target, span, src, &resolved));
    }
    if resolved.is_dir() {
        return Ok(true);
    }
    check_owner(ws, target, span, src, &resolved)?;
    Ok(false)
}

/// Who owns a file of the workspace: the innermost package whose directory holds it, or
/// another workspace nested in this one.
#[derive(Debug, PartialEq, Eq)]
enum Owner {
    Package(String),
    /// A nested workspace (its root, relative to this one), or a directory with a
    /// `BUILD.toml` that is not loaded as a package: its files are not this workspace's.
    Foreign(String),
    /// No package: the workspace root has no `BUILD.toml`.
    Nobody,
    /// `mlbuild-out/`: a build's outputs, not sources.
    Outputs,
}

fn owner(ws: &Workspace, resolved: &Path) -> Owner {
    let Ok(rel) = resolved.strip_prefix(&ws.root) else {
        return Owner::Nobody;
    };
    if rel.starts_with("mlbuild-out") {
        return Owner::Outputs;
    }
    for dir in rel.ancestors().skip(1) {
        let Some(name) = dir.to_str() else {
            return Owner::Nobody;
        };
        if ws.packages.contains_key(name) {
            return Owner::Package(name.to_owned());
        }
        let abs = ws.root.join(dir);
        if !name.is_empty()
            && (abs.join(WORKSPACE_FILE).symlink_metadata().is_ok()
                || abs.join(BUILD_FILE).symlink_metadata().is_ok())
        {
            return Owner::Foreign(name.to_owned());
        }
    }
    Owner::Nobody
}

/// A source reached through a symlink (the file itself or a directory on its path),
/// whose real location is `resolved`, must be a file of the target's own package:
/// packages do not read each other's files, however the path is spelled.
fn check_owner(
    ws: &Workspace,
    target: &Target,
    span: &Span,
    src: &str,
    resolved: &Path,
) -> Result<(), WorkspaceError> {
    let package = target.label.package.as_str();
    let owner = owner(ws, resolved);
    if owner == Owner::Package(package.to_owned()) {
        return Ok(());
    }
    let shown = resolved
        .strip_prefix(&ws.root)
        .unwrap_or(resolved)
        .display()
        .to_string();
    let own = if package.is_empty() {
        ".".to_owned()
    } else {
        format!("{package}/")
    };
    let (what, label, help) = match &owner {
        Owner::Package(other) => (
            format!("a file of package `//{other}`"),
            format!("reaches into `//{other}`"),
            format!(
                "packages do not read each other's files: export it with a `filegroup` in `{}` and depend on that",
                if other.is_empty() {
                    BUILD_FILE.to_owned()
                } else {
                    format!("{other}/{BUILD_FILE}")
                }
            ),
        ),
        Owner::Foreign(dir) => (
            format!("under `{dir}/`, which is not part of this workspace's packages"),
            "leaves the package".to_owned(),
            format!("copy the file into `{own}`"),
        ),
        Owner::Outputs => (
            "an output of a build".to_owned(),
            "reaches into `mlbuild-out`".to_owned(),
            "add the target that produces it to `deps` and use `{deps.NAME}`".to_owned(),
        ),
        Owner::Nobody => (
            "a file of no package".to_owned(),
            "leaves the package".to_owned(),
            format!(
                "move the file into `{own}`, or give its directory a `{BUILD_FILE}` with a `filegroup` and add that to `deps`"
            ),
        ),
    };
    Err(WorkspaceError::new(
        ErrorKind::Src,
        format!("src `{src}` is a symlink to `{shown}`, {what}"),
    )
    .at(&target.source, span.clone())
    .with_label(label)
    .with_help(help))
}

/// One literal src: a single `lstat`, plus checks of intermediate directories only when
/// the path has several components.
fn literal(
    ws: &Workspace,
    target: &Target,
    pkg_dir: &Path,
    src: &str,
    span: &Span,
) -> Result<SourceFile, WorkspaceError> {
    let package = target.label.package.as_str();
    let abs = pkg_dir.join(src);
    let mut through_symlink = false;
    if src.contains('/') {
        let comps: Vec<&str> = src.split('/').collect();
        let mut dir = pkg_dir.to_path_buf();
        for k in 1..comps.len() {
            // A file inside a subpackage belongs to that package: in-memory check.
            let prefix = comps[..k].join("/");
            let sub = if package.is_empty() {
                prefix
            } else {
                format!("{package}/{prefix}")
            };
            if ws.packages.contains_key(&sub) {
                return Err(WorkspaceError::new(
                    ErrorKind::Src,
                    format!("src `{src}` belongs to package `//{sub}`"),
                )
                .at(&target.source, span.clone())
                .with_label("inside another package")
                .with_help(format!(
                    "export it from `{sub}/{BUILD_FILE}` with a `filegroup` and add that to `deps`"
                )));
            }
            // An intermediate directory that is a symlink could lead anywhere.
            dir.push(comps[k - 1]);
            if dir
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
            {
                check_symlink(ws, target, span, &comps[..k].join("/"), &dir)?;
                through_symlink = true;
            }
        }
    }
    let meta = match abs.symlink_metadata() {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(20) => {
            let help = similar_file(&abs, src);
            return Err(
                WorkspaceError::new(ErrorKind::Src, format!("src `{src}` does not exist"))
                    .at(&target.source, span.clone())
                    .with_label("no such file")
                    .with_help_opt(help),
            );
        }
        Err(e) => return Err(WorkspaceError::io("read", &abs, e).at(&target.source, span.clone())),
    };
    let is_symlink = meta.file_type().is_symlink();
    let is_dir = if is_symlink {
        check_symlink(ws, target, span, src, &abs)?
    } else {
        meta.is_dir()
    };
    if through_symlink && !is_symlink && !is_dir {
        // The file itself is no symlink, but a directory on its way was.
        if let Ok(resolved) = abs.canonicalize() {
            check_owner(ws, target, span, src, &resolved)?;
        }
    }
    if is_dir {
        return Err(dir_error(target, span, src));
    }
    Ok(SourceFile {
        path: workspace_path(package, src),
        abs,
        metadata: (!is_symlink).then_some(meta),
    })
}

/// A did-you-mean for a missing literal, from the files next to where it should be.
/// Only runs on the error path, so listing the directory is fine.
fn similar_file(abs: &Path, src: &str) -> Option<String> {
    let parent = abs.parent()?;
    let wanted = abs.file_name()?.to_str()?;
    let names: Vec<String> = std::fs::read_dir(parent)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let best = closest(wanted, names.iter().map(String::as_str))?;
    let prefix = &src[..src.len() - wanted.len()];
    Some(format!("did you mean `{prefix}{best}`?"))
}

fn workspace_path(package: &str, rel: &str) -> String {
    if package.is_empty() {
        rel.to_owned()
    } else {
        format!("{package}/{rel}")
    }
}

/// Walk the package directory once, matching every file against all globs.
fn walk_globs(
    ws: &Workspace,
    target: &Target,
    pkg_dir: &Path,
    globs: &mut [(GlobMatcher, &str, Span, usize)],
    files: &mut Vec<SourceFile>,
) -> Result<(), WorkspaceError> {
    let package = target.label.package.as_str();
    let first_span = globs[0].2.clone();
    let walker = walkdir::WalkDir::new(pkg_dir)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| {
            if e.depth() == 0 {
                return true;
            }
            let name = e.file_name().to_string_lossy();
            if name.starts_with('.') {
                return false;
            }
            if !e.file_type().is_dir() {
                return true;
            }
            if name == "mlbuild-out" {
                return false;
            }
            // Subpackages own their files; the package map answers without a syscall.
            let rel = e.path().strip_prefix(&ws.root).ok().and_then(Path::to_str);
            if rel.is_some_and(|r| ws.packages.contains_key(r)) {
                return false;
            }
            // A nested workspace (skipped at load) or an unlisted BUILD.toml still owns its files.
            !(e.path().join(WORKSPACE_FILE).symlink_metadata().is_ok()
                || e.path().join(BUILD_FILE).symlink_metadata().is_ok())
        });
    for entry in walker {
        let entry = entry.map_err(|e| {
            let path = e
                .path()
                .map_or_else(|| pkg_dir.to_path_buf(), Path::to_path_buf);
            match e.into_io_error() {
                Some(io) => WorkspaceError::io("read directory", &path, io),
                None => WorkspaceError::new(
                    ErrorKind::Io,
                    format!("failed to walk `{}`", path.display()),
                ),
            }
            .at(&target.source, first_span.clone())
        })?;
        let ft = entry.file_type();
        if ft.is_dir() {
            continue;
        }
        let rel_path = entry.path().strip_prefix(pkg_dir).unwrap_or(entry.path());
        let Some(rel) = rel_path.to_str() else {
            return Err(WorkspaceError::new(
                ErrorKind::Src,
                format!("file name `{}` is not valid UTF-8", rel_path.display()),
            )
            .at(&target.source, first_span.clone())
            .with_help("rename the file; workspace paths must be UTF-8"));
        };
        let mut first_match: Option<usize> = None;
        for (i, glob) in globs.iter_mut().enumerate() {
            if glob.0.is_match(rel) {
                glob.3 += 1;
                first_match.get_or_insert(i);
            }
        }
        let Some(i) = first_match else { continue };
        if ft.is_symlink() {
            let span = globs[i].2.clone();
            if check_symlink(ws, target, &span, rel, entry.path())? {
                // A symlink to a directory is not walked; it contributes no files.
                globs.iter_mut().for_each(|g| {
                    if g.0.is_match(rel) {
                        g.3 -= 1;
                    }
                });
                continue;
            }
        } else if !ft.is_file() {
            continue;
        }
        files.push(SourceFile {
            path: workspace_path(package, rel),
            abs: PathBuf::from(entry.path()),
            metadata: None,
        });
    }
    Ok(())
}
