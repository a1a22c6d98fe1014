//! Cross-process locks on files under `<root>/locks/`.
//!
//! Two mlbuild processes must not run the same action at once, gc must not delete a blob
//! a running build is about to reference, and two builds of one workspace must not
//! replace each other's files in `mlbuild-out/` halfway; `flock(2)` gives all three, and
//! the kernel releases it if a process dies. Main types: [`ActionLock`], [`StoreLock`],
//! [`OutputsLock`].

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use mlbuild_digest::Digest;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::{Store, StoreError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Shared,
    Exclusive,
}

/// Takes a flock on `path` (created if needed). With `block == false`, returns
/// `Ok(None)` when someone else holds a conflicting lock.
pub(crate) fn try_flock(
    path: &Path,
    mode: Mode,
    block: bool,
) -> Result<Option<Flock<File>>, StoreError> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(StoreError::io("open lock file", path))?;
    let arg = match (mode, block) {
        (Mode::Shared, true) => FlockArg::LockShared,
        (Mode::Exclusive, true) => FlockArg::LockExclusive,
        (Mode::Shared, false) => FlockArg::LockSharedNonblock,
        (Mode::Exclusive, false) => FlockArg::LockExclusiveNonblock,
    };
    loop {
        match Flock::lock(file, arg) {
            Ok(lock) => return Ok(Some(lock)),
            // A signal interrupted the wait; wait again.
            Err((f, Errno::EINTR)) => file = f,
            Err((_, Errno::EWOULDBLOCK)) if !block => return Ok(None),
            Err((_, errno)) => {
                return Err(StoreError::io("lock", path)(std::io::Error::from(errno)));
            }
        }
    }
}

pub(crate) fn flock(path: &Path, mode: Mode) -> Result<Flock<File>, StoreError> {
    // A blocking attempt only ever returns a lock or an error.
    try_flock(path, mode, true).map(|l| l.expect("blocking flock always returns a lock"))
}

/// Exclusive lock on one action key; released on drop.
#[derive(Debug)]
pub struct ActionLock {
    _lock: Flock<File>,
    key: Digest,
}

impl ActionLock {
    /// The action key this lock is for.
    pub fn key(&self) -> Digest {
        self.key
    }
}

/// A lock on the whole store (`locks/gc`): shared for builds, exclusive for gc and fsck.
/// Released on drop.
#[derive(Debug)]
pub struct StoreLock {
    _lock: Flock<File>,
    exclusive: bool,
}

impl StoreLock {
    /// True for the exclusive (gc/fsck) flavour.
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }
}

/// Prefix of the lock files of workspaces' output trees (see [`Store::outputs_lock`]).
pub(crate) const OUTPUTS_LOCK_PREFIX: &str = "outputs-";

/// Serialises changes to one workspace's `mlbuild-out/` across processes: linking a
/// target's outputs removes stale files and renames temp files into place, and a second
/// build doing the same in the same directory at the same moment would remove the
/// first's temp files under it. Within a process, targets live in different directories
/// and link in parallel: the file lock is taken by the first holder and released by the
/// last, so one build never waits for itself. Take it only around linking, never while
/// waiting for an action lock.
#[derive(Debug)]
pub struct OutputsLock {
    path: PathBuf,
    /// Holders in this process, and the file lock while there are any.
    state: Mutex<(usize, Option<Flock<File>>)>,
}

/// One holder of an [`OutputsLock`]; the last one to drop releases the file lock.
#[derive(Debug)]
pub struct OutputsGuard<'a> {
    lock: &'a OutputsLock,
}

impl OutputsLock {
    /// Waits until this process may change the workspace's output tree.
    pub fn hold(&self) -> Result<OutputsGuard<'_>, StoreError> {
        let mut state = self.state();
        if state.0 == 0 {
            // Other threads of this process wait on the mutex meanwhile, which is what
            // they would do for the file lock anyway.
            state.1 = Some(flock(&self.path, Mode::Exclusive)?);
        }
        state.0 += 1;
        Ok(OutputsGuard { lock: self })
    }

    fn state(&self) -> MutexGuard<'_, (usize, Option<Flock<File>>)> {
        // The count is only changed after the fallible part; a panic cannot skew it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for OutputsGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.lock.state();
        state.0 -= 1;
        if state.0 == 0 {
            state.1 = None;
        }
    }
}

impl Store {
    /// The lock on the output tree of the workspace rooted at `ws_root` (canonical, as
    /// the workspace's identity elsewhere in the store); nothing is locked until
    /// [`OutputsLock::hold`]. Callers must also hold [`Store::build_lock_shared`] (gc
    /// removes old lock files while it holds the store exclusively).
    pub fn outputs_lock(&self, ws_root: &Path) -> OutputsLock {
        let id = Digest::of_bytes(ws_root.as_os_str().as_encoded_bytes()).to_hex();
        OutputsLock {
            path: self.lock_path(&format!("{OUTPUTS_LOCK_PREFIX}{}", &id[..32])),
            state: Mutex::new((0, None)),
        }
    }

    pub(crate) fn lock_path(&self, name: &str) -> PathBuf {
        self.root.join("locks").join(name)
    }

    /// Blocks until this process holds the exclusive lock for `key`, so two mlbuild
    /// processes never execute the same action at once: the second waits, then finds the
    /// result in the action cache. Callers must also hold [`Store::build_lock_shared`]
    /// (gc removes action lock files while it holds the store exclusively).
    pub fn lock_action(&self, key: &Digest) -> Result<ActionLock, StoreError> {
        let lock = flock(&self.lock_path(&key.to_hex()), Mode::Exclusive)?;
        Ok(ActionLock {
            _lock: lock,
            key: *key,
        })
    }

    /// Like [`Store::lock_action`] but returns `Ok(None)` at once if another process (or
    /// another handle) holds the lock, so the caller can say what it is waiting for.
    pub fn try_lock_action(&self, key: &Digest) -> Result<Option<ActionLock>, StoreError> {
        Ok(
            try_flock(&self.lock_path(&key.to_hex()), Mode::Exclusive, false)?.map(|lock| {
                ActionLock {
                    _lock: lock,
                    key: *key,
                }
            }),
        )
    }

    /// Shared lock held by every build for its whole duration; gc and fsck take it
    /// exclusively, so they never delete a blob a running build is about to reference.
    /// Do not call [`Store::gc`] or [`Store::fsck`] while holding it: they would wait for
    /// it forever.
    pub fn build_lock_shared(&self) -> Result<StoreLock, StoreError> {
        Ok(StoreLock {
            _lock: flock(&self.lock_path("gc"), Mode::Shared)?,
            exclusive: false,
        })
    }

    /// The exclusive store lock that gc and fsck take; blocks while any build runs.
    pub fn store_lock_exclusive(&self) -> Result<StoreLock, StoreError> {
        Ok(StoreLock {
            _lock: flock(&self.lock_path("gc"), Mode::Exclusive)?,
            exclusive: true,
        })
    }

    /// Non-blocking [`Store::store_lock_exclusive`]: `Ok(None)` while a build runs.
    pub fn try_store_lock_exclusive(&self) -> Result<Option<StoreLock>, StoreError> {
        Ok(
            try_flock(&self.lock_path("gc"), Mode::Exclusive, false)?.map(|lock| StoreLock {
                _lock: lock,
                exclusive: true,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_lock_excludes_across_handles() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open(dir.path()).unwrap();
        let b = Store::open(dir.path()).unwrap();
        let key = Digest::of_bytes(b"action");
        let held = a.lock_action(&key).unwrap();
        assert_eq!(held.key(), key);
        assert!(b.try_lock_action(&key).unwrap().is_none());
        // A different key is independent.
        assert!(b
            .try_lock_action(&Digest::of_bytes(b"other"))
            .unwrap()
            .is_some());
        drop(held);
        assert!(b.try_lock_action(&key).unwrap().is_some());
    }

    #[test]
    fn outputs_lock_excludes_other_processes_not_this_ones_threads() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open(dir.path()).unwrap();
        let b = Store::open(dir.path()).unwrap();
        let ws = Path::new("/work/ws");
        let mine = a.outputs_lock(ws);
        // Two holders in one process (two threads linking two targets).
        let first = mine.hold().unwrap();
        let second = mine.hold().unwrap();
        // Another process (another open file description) is kept out until both go.
        let path = b.outputs_lock(ws).path;
        assert!(try_flock(&path, Mode::Exclusive, false).unwrap().is_none());
        drop(first);
        assert!(try_flock(&path, Mode::Exclusive, false).unwrap().is_none());
        drop(second);
        let other = try_flock(&path, Mode::Exclusive, false).unwrap();
        assert!(other.is_some());
        // Another workspace is independent.
        assert_ne!(a.outputs_lock(Path::new("/work/other")).path, path);
    }

    #[test]
    fn build_lock_blocks_gc_lock() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open(dir.path()).unwrap();
        let b = Store::open(dir.path()).unwrap();
        let build1 = a.build_lock_shared().unwrap();
        let build2 = b.build_lock_shared().unwrap();
        assert!(!build1.is_exclusive());
        assert!(b.try_store_lock_exclusive().unwrap().is_none());
        drop(build1);
        drop(build2);
        let gc = b.try_store_lock_exclusive().unwrap().unwrap();
        assert!(gc.is_exclusive());
    }
}
