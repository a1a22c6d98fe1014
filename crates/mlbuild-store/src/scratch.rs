//! Per-process scratch space under `<store>/tmp/`, reclaimed once its process is gone.
//!
//! A build killed with SIGKILL runs no destructor, so its exec directories and temp files
//! (model-sized outputs among them) would stay in the store forever. Instead every process
//! keeps its temp files in a directory of its own, `tmp/run-<id>/`, marked live by a flock
//! on `tmp/run-<id>.lock` that the kernel releases when the process dies; whoever finds
//! such a lock free may remove the directory. The main type is [`Scratch`], reached
//! through [`Store::tmp_dir`] and [`Store::reclaim_scratch`].

use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::{Store, StoreError};

const RUN_PREFIX: &str = "run-";
const LOCK_SUFFIX: &str = ".lock";
/// A lock file before it is renamed into place, already locked.
const NEW_PREFIX: &str = ".new-";
/// Attempts at creating a scratch directory: a reclaimer may take a `.new-` lock file in
/// the microseconds between its creation and its locking, and then the attempt fails.
const CREATE_ATTEMPTS: usize = 3;

/// This process's scratch directory, removed when dropped. While it exists its lock is
/// held, so no other process removes it.
#[derive(Debug)]
pub(crate) struct Scratch {
    dir: PathBuf,
    /// `None` when no own directory could be set up and `dir` is `tmp/` itself.
    owned: Option<(PathBuf, Flock<File>)>,
}

impl Scratch {
    /// A fresh `tmp/run-<id>/`, or `tmp/` itself if that cannot be created (then the
    /// first temp file created in it reports the underlying problem).
    pub(crate) fn new(tmp: &Path) -> Scratch {
        (0..CREATE_ATTEMPTS)
            .find_map(|_| Scratch::create(tmp).ok())
            .unwrap_or_else(|| Scratch {
                dir: tmp.to_path_buf(),
                owned: None,
            })
    }

    fn create(tmp: &Path) -> io::Result<Scratch> {
        let id = crate::cas::unique_name("");
        // Locked before it gets the name reclaimers look for, so they never see it
        // unlocked while this process lives.
        let new = tmp.join(format!("{NEW_PREFIX}{id}{LOCK_SUFFIX}"));
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&new)?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, errno)) => {
                let _ = fs::remove_file(&new);
                return Err(errno.into());
            }
        };
        let lock_path = tmp.join(format!("{RUN_PREFIX}{id}{LOCK_SUFFIX}"));
        if let Err(e) = fs::rename(&new, &lock_path) {
            let _ = fs::remove_file(&new);
            return Err(e);
        }
        let dir = tmp.join(format!("{RUN_PREFIX}{id}"));
        if let Err(e) = fs::create_dir(&dir) {
            let _ = fs::remove_file(&lock_path);
            return Err(e);
        }
        Ok(Scratch {
            dir,
            owned: Some((lock_path, lock)),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some((lock_path, lock)) = self.owned.take() {
            // Directory first, lock file second, unlock last: a directory is never
            // without its lock file while this process might still use it.
            let _ = remove_tree(&self.dir);
            let _ = fs::remove_file(lock_path);
            drop(lock);
        }
    }
}

/// What [`Store::reclaim_scratch`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reclaimed {
    /// Scratch directories of processes that are gone.
    pub dirs: u64,
}

impl Store {
    /// Removes the scratch directories under `tmp/` whose process is gone (its lock is
    /// free), with whatever they hold: exec directories of killed builds, half-written
    /// temp files. A live process's directory is never touched, whichever store handle or
    /// workspace it belongs to. Safe to run at any time, from any number of processes.
    /// Entries of another layout (an older mlbuild's) are left to `gc`'s age rule.
    pub fn reclaim_scratch(&self) -> Result<Reclaimed, StoreError> {
        let tmp = self.root.join("tmp");
        let mut reclaimed = Reclaimed::default();
        let entries = match fs::read_dir(&tmp) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(reclaimed),
            Err(e) => return Err(StoreError::io("list", &tmp)(e)),
        };
        let own = self.scratch.get().map(|s| s.dir().to_path_buf());
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = name
                .strip_prefix(RUN_PREFIX)
                .and_then(|n| n.strip_suffix(LOCK_SUFFIX))
            {
                let dir = tmp.join(format!("{RUN_PREFIX}{id}"));
                if Some(&dir) == own.as_ref() {
                    continue;
                }
                if reclaim_if_dead(&entry.path(), &dir)? {
                    reclaimed.dirs += 1;
                }
            } else if name.starts_with(RUN_PREFIX) {
                // A directory outlives its lock file only when removing it failed before
                // (the lock file is created first and removed last): its process is gone.
                // (Or this very loop reclaimed it a moment ago, through its lock file.)
                let lock = tmp.join(format!("{name}{LOCK_SUFFIX}"));
                let path = entry.path();
                if !lock.exists() && Some(&path) != own.as_ref() && path.exists() {
                    remove_tree(&path).map_err(StoreError::io("remove", &path))?;
                    reclaimed.dirs += 1;
                }
            } else if name.starts_with(NEW_PREFIX) && name.ends_with(LOCK_SUFFIX) {
                // Its process died before renaming it, or is just about to lock it (then
                // its rename fails for want of the file, and it tries again).
                let _ = reclaim_if_dead(&entry.path(), Path::new(""));
            }
        }
        Ok(reclaimed)
    }
}

/// True for the entries of `tmp/` that [`Store::reclaim_scratch`] is responsible for.
pub(crate) fn is_scratch_entry(name: &str) -> bool {
    name.starts_with(RUN_PREFIX) || name.starts_with(NEW_PREFIX)
}

/// Takes `lock` if its process is gone and removes `dir` (if not empty) and `lock`;
/// true if it did.
fn reclaim_if_dead(lock: &Path, dir: &Path) -> Result<bool, StoreError> {
    let file = match File::open(lock) {
        Ok(file) => file,
        // Another reclaimer (or the owner, exiting) was faster.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StoreError::io("open lock file", lock)(e)),
    };
    let held = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(held) => held,
        // Alive, or being reclaimed by someone else right now.
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(false),
        Err((_, errno)) => return Err(StoreError::io("lock", lock)(errno.into())),
    };
    if !dir.as_os_str().is_empty() {
        remove_tree(dir).map_err(StoreError::io("remove", dir))?;
    }
    match fs::remove_file(lock) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(StoreError::io("remove", lock)(e));
        }
        _ => {}
    }
    drop(held);
    Ok(true)
}

/// Removes `path` and everything under it, whatever the modes: an action may leave
/// read-only files and directories it made read-only. Directories are made writable
/// before they are emptied; files never are (one may be a hard link to a blob, whose mode
/// must not change). Symbolic links are removed, never followed; entries that vanish
/// meanwhile are fine.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return ignore_missing(fs::remove_file(path));
    }
    // The common case (nothing read-only) is std's own removal.
    match fs::remove_dir_all(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    empty_dir(path)?;
    ignore_missing(fs::remove_dir(path))
}

fn empty_dir(dir: &Path) -> io::Result<()> {
    make_dir_writable(dir)?;
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        // `file_type` does not follow symbolic links.
        if entry.file_type()?.is_dir() {
            empty_dir(&path)?;
            ignore_missing(fs::remove_dir(&path))?;
        } else {
            ignore_missing(fs::remove_file(&path))?;
        }
    }
    Ok(())
}

/// Gives the owner read, write and search permission on `dir`, through a descriptor
/// opened without following symbolic links.
fn make_dir_writable(dir: &Path) -> io::Result<()> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
    {
        Ok(file) => file,
        // Not readable by us: chmod by path (it is a directory, checked by the caller).
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let mode = fs::symlink_metadata(dir)?.permissions().mode();
            return fs::set_permissions(dir, Permissions::from_mode(mode | 0o700));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o700 != 0o700 {
        file.set_permissions(Permissions::from_mode(mode | 0o700))?;
    }
    Ok(())
}

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn remove_tree_removes_read_only_trees_but_never_follows_links() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep.txt"), "keep").unwrap();
        let blob = outside.join("blob");
        fs::write(&blob, "blob").unwrap();
        fs::set_permissions(&blob, Permissions::from_mode(0o444)).unwrap();

        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("a/b")).unwrap();
        fs::write(tree.join("a/b/f"), "x").unwrap();
        fs::set_permissions(tree.join("a/b/f"), Permissions::from_mode(0o444)).unwrap();
        fs::hard_link(&blob, tree.join("a/link")).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("a/sym")).unwrap();
        fs::set_permissions(tree.join("a/b"), Permissions::from_mode(0o500)).unwrap();
        fs::set_permissions(tree.join("a"), Permissions::from_mode(0o000)).unwrap();

        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        // The link's target and the hard-linked file are untouched, mode included.
        assert_eq!(
            fs::read_to_string(outside.join("keep.txt")).unwrap(),
            "keep"
        );
        assert_eq!(
            fs::metadata(&blob).unwrap().permissions().mode() & 0o777,
            0o444
        );
        // Missing is fine.
        remove_tree(&tree).unwrap();
    }

    #[test]
    fn each_store_handle_owns_a_scratch_dir_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open(dir.path()).unwrap();
        let b = Store::open(dir.path()).unwrap();
        let (a_dir, b_dir) = (a.tmp_dir(), b.tmp_dir());
        assert_ne!(a_dir, b_dir);
        assert_eq!(a_dir.parent().unwrap(), dir.path().join("tmp"));
        fs::write(a_dir.join("x"), "x").unwrap();
        // Both are live: reclaiming from either side removes nothing.
        assert_eq!(a.reclaim_scratch().unwrap().dirs, 0);
        assert_eq!(b.reclaim_scratch().unwrap().dirs, 0);
        assert!(a_dir.join("x").exists() && b_dir.is_dir());
        drop(a);
        drop(b);
        assert!(names(&dir.path().join("tmp")).is_empty());
    }

    #[test]
    fn scratch_of_a_dead_process_is_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tmp = dir.path().join("tmp");
        // What a process killed during a build leaves: its lock file (nobody holds the
        // lock any more) and its directory, with a read-only exec dir inside.
        fs::write(tmp.join("run-dead.lock"), "").unwrap();
        let exec = tmp.join("run-dead/exec-1/root/out");
        fs::create_dir_all(&exec).unwrap();
        fs::write(exec.join("model.bin"), "weights").unwrap();
        fs::set_permissions(&exec, Permissions::from_mode(0o555)).unwrap();
        // A directory whose lock file is gone (an interrupted removal), and a lock file
        // that never got its name (creation interrupted).
        fs::create_dir_all(tmp.join("run-orphan/x")).unwrap();
        fs::write(tmp.join(".new-abandoned.lock"), "").unwrap();
        // An older mlbuild's exec dir is not ours to judge (gc's age rule is).
        fs::create_dir(tmp.join("exec-legacy")).unwrap();
        let live = store.tmp_dir();

        let reclaimed = store.reclaim_scratch().unwrap();
        assert_eq!(reclaimed.dirs, 2);
        let live_name = live.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            names(&tmp),
            [
                "exec-legacy".to_string(),
                live_name.clone(),
                format!("{live_name}.lock")
            ]
        );
        // Another handle (another process, as far as flock is concerned) keeps off a
        // live directory.
        let other = Store::open(dir.path()).unwrap();
        assert_eq!(other.reclaim_scratch().unwrap().dirs, 0);
        assert!(live.is_dir());
    }
}
