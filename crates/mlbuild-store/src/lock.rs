//! Cross-process locks on files under `<root>/locks/`.
//!
//! Two mlbuild processes must not run the same action at once, and gc must not delete a
//! blob a running build is about to reference; `flock(2)` gives both, and the kernel
//! releases it if a process dies. Main types: [`ActionLock`], [`StoreLock`].

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

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

impl Store {
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
