//! Declared outputs: checking what an action produced, and linking results into the
//! workspace.
//!
//! Main functions: [`collect`] (validate an action's output directory against `outs`) and
//! [`link_into_workspace`] (hardlink store blobs into `mlbuild-out/<pkg>/<name>/`).
//! Outputs are linked, not copied, so even a multi-GiB model costs O(1) per file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use mlbuild_store::{FileDigestCache, OutputsLock, Store};
use mlbuild_workspace::Label;

use crate::plan::Outputs;
use crate::ExecError;

/// Workspace-relative directory holding a target's outputs. The root package uses `_root`
/// so that its targets can never collide with a package's directory.
pub fn out_dir_rel(label: &Label) -> String {
    if label.package.is_empty() {
        format!("mlbuild-out/_root/{}", label.name)
    } else {
        format!("mlbuild-out/{}/{}", label.package, label.name)
    }
}

/// Checks an action's output directory against its declared `outs` and returns every
/// output file as (output-relative POSIX path, absolute path), sorted.
pub(crate) fn collect(
    label: &str,
    out_dir: &Path,
    outs: &[String],
) -> Result<Vec<(String, PathBuf)>, ExecError> {
    let dir_outs: Vec<&str> = outs.iter().filter_map(|o| o.strip_suffix('/')).collect();
    let file_outs: BTreeSet<&str> = outs
        .iter()
        .filter(|o| !o.ends_with('/'))
        .map(String::as_str)
        .collect();
    let covered = |rel: &str| {
        file_outs.contains(rel)
            || dir_outs
                .iter()
                .any(|d| rel.strip_prefix(d).is_some_and(|r| r.starts_with('/')))
    };
    // An undeclared directory is fine as long as it only leads to declared outputs.
    let leads_to_declared = |rel: &str| {
        outs.iter()
            .any(|o| o.trim_end_matches('/') == rel || o.starts_with(&format!("{rel}/")))
    };

    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(out_dir)
        .min_depth(1)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| {
            ExecError::io(
                format!("`{label}`: cannot read its output directory"),
                e.into(),
            )
        })?;
        let rel = entry
            .path()
            .strip_prefix(out_dir)
            .expect("walkdir yields paths under its root")
            .to_string_lossy()
            .replace('\\', "/");
        let kind = entry.file_type();
        if kind.is_symlink() {
            return Err(ExecError::OutputSymlink {
                label: label.to_string(),
                path: rel,
            });
        }
        if kind.is_dir() {
            if !covered(&rel) && !leads_to_declared(&rel) {
                return Err(ExecError::UndeclaredOutput {
                    label: label.to_string(),
                    path: format!("{rel}/"),
                });
            }
            continue;
        }
        if !covered(&rel) {
            return Err(ExecError::UndeclaredOutput {
                label: label.to_string(),
                path: rel,
            });
        }
        files.push((rel, entry.into_path()));
    }
    for out in outs {
        let present = match out.strip_suffix('/') {
            Some(dir) => out_dir.join(dir).is_dir(),
            None => files.iter().any(|(rel, _)| rel == out),
        };
        if !present {
            return Err(ExecError::MissingOutput {
                label: label.to_string(),
                path: out.clone(),
            });
        }
    }
    Ok(files)
}

/// Makes `<workspace>/mlbuild-out/<pkg>/<name>/` hold exactly `outputs`, as hardlinks to
/// the store. With `prune`, files left there by an earlier build are removed (skipped on
/// the no-op path, where the set of outputs cannot have changed). `links` remembers
/// which links were already in place (see [`Store::materialize_remembered`]).
///
/// Anything that changes the tree happens under `lock`, so two builds of one workspace
/// never remove each other's temp files or directories halfway through a replacement;
/// a tree that already holds `outputs` is confirmed without it, so a no-op build does
/// not wait for a concurrent one.
pub(crate) fn link_into_workspace(
    store: &Store,
    ws_root: &Path,
    label: &Label,
    outputs: &Outputs,
    prune: bool,
    links: Option<&FileDigestCache>,
    lock: &OutputsLock,
) -> Result<(), ExecError> {
    let dest = ws_root.join(out_dir_rel(label));
    if !prune && in_place(store, &dest, outputs, links)? {
        return Ok(());
    }
    let _held = lock.hold()?;
    if prune && dest.exists() {
        let keep: BTreeSet<PathBuf> = outputs.keys().map(|p| dest.join(p)).collect();
        for entry in walkdir::WalkDir::new(&dest)
            .min_depth(1)
            .contents_first(true)
        {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            if entry.file_type().is_dir() {
                if !keep.iter().any(|k| k.starts_with(path)) {
                    let _ = std::fs::remove_dir(path);
                }
            } else if !keep.contains(path) {
                match std::fs::remove_file(path) {
                    // Gone already (the user, or a build not holding the lock: an older
                    // mlbuild); gone is what pruning wants.
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(ExecError::io(
                            format!("cannot remove stale output `{}`", path.display()),
                            e,
                        ));
                    }
                    _ => {}
                }
            }
        }
    }
    for (rel, file) in outputs {
        store.materialize_remembered(&file.digest, &dest.join(rel), file.executable, links)?;
    }
    if outputs.is_empty() {
        std::fs::create_dir_all(&dest)
            .map_err(|e| ExecError::io(format!("cannot create `{}`", dest.display()), e))?;
    }
    Ok(())
}

/// True when `dest` holds every one of `outputs` already (and exists, even if empty).
fn in_place(
    store: &Store,
    dest: &Path,
    outputs: &Outputs,
    links: Option<&FileDigestCache>,
) -> Result<bool, ExecError> {
    if outputs.is_empty() {
        return Ok(dest.is_dir());
    }
    for (rel, file) in outputs {
        if !store.is_materialized(&file.digest, &dest.join(rel), file.executable, links)? {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, f).unwrap();
        }
        dir
    }

    #[test]
    fn accepts_declared_files_and_dirs() {
        let d = setup(&[
            "model.json",
            "plots/a.png",
            "plots/sub/b.png",
            "nested/m.txt",
        ]);
        let outs = [
            "model.json".to_string(),
            "plots/".to_string(),
            "nested/m.txt".to_string(),
        ];
        let files = collect("//x:y", d.path(), &outs).unwrap();
        let rels: Vec<&str> = files.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(
            rels,
            [
                "model.json",
                "nested/m.txt",
                "plots/a.png",
                "plots/sub/b.png"
            ]
        );
    }

    #[test]
    fn rejects_missing_undeclared_and_symlinks() {
        let d = setup(&["model.json", "extra.txt"]);
        let err = collect("//x:y", d.path(), &["model.json".into()]).unwrap_err();
        assert!(matches!(err, ExecError::UndeclaredOutput { ref path, .. } if path == "extra.txt"));

        let d = setup(&["model.json"]);
        let err = collect("//x:y", d.path(), &["model.json".into(), "m.json".into()]).unwrap_err();
        assert!(matches!(err, ExecError::MissingOutput { ref path, .. } if path == "m.json"));

        let d = setup(&["model.json"]);
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("link")).unwrap();
        let err = collect("//x:y", d.path(), &["model.json".into(), "link".into()]).unwrap_err();
        assert!(matches!(err, ExecError::OutputSymlink { .. }));
    }
}
