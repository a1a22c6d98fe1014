//! Remembering file digests by stat stamp.
//!
//! Hashing a 10 GiB dataset on every build would dominate a no-op build; a file whose
//! device, inode, size, mtime, ctime and mode are unchanged since it was hashed is assumed
//! unchanged, as git and Bazel do. Main type: [`FileDigestCache`].

use std::collections::HashMap;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use mlbuild_digest::{hash_file, Digest};
use rusqlite::{params, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::{digest_from_sql, Store, StoreError};

/// An entry whose mtime is this close to (or after) the moment it was hashed is not
/// trusted: a write in the same timestamp tick after hashing would leave the stamp
/// unchanged (git's "racy clean" problem). Two seconds covers coarse filesystems.
const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// A file's content digest, size and executable bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub digest: Digest,
    pub size: u64,
    pub executable: bool,
}

/// What identifies a file's version without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    mode: u32,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            mode: meta.mode(),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    stamp: Stamp,
    digest: Digest,
    /// Wall clock (ns) just before the file was read.
    hashed_at_ns: i64,
}

impl Entry {
    fn trusted(&self) -> bool {
        self.stamp.mtime_ns < self.hashed_at_ns - RACY_WINDOW_NS
    }

    /// [`Entry::trusted`] for a remembered output link, whose ctime changes when a name
    /// of its inode is added or removed: a change in the same timestamp tick as the
    /// recording would keep both times.
    fn trusted_link(&self) -> bool {
        self.trusted() && self.stamp.ctime_ns < self.hashed_at_ns - RACY_WINDOW_NS
    }

    fn file_digest(&self) -> FileDigest {
        FileDigest {
            digest: self.digest,
            size: self.stamp.size,
            executable: self.stamp.mode & 0o111 != 0,
        }
    }
}

/// Whether `std::path::absolute` would return `path` unchanged: absolute, with no empty
/// (`//`) or `.` components and no trailing separator.
fn is_normal_absolute(path: &Path) -> bool {
    let bytes = path.as_os_str().as_bytes();
    bytes.first() == Some(&b'/')
        && bytes.len() > 1
        && !bytes.ends_with(b"/")
        && !bytes.ends_with(b"/.")
        && !bytes.windows(2).any(|w| w == b"//")
        && !bytes.windows(3).any(|w| w == b"/./")
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// File digests keyed by absolute path, loaded from the store in one query and written
/// back with [`FileDigestCache::flush`]. `Sync`: hash from many threads at once.
///
/// Rows belong to the workspace whose root the file is under (or to none: tools, files
/// outside every workspace), so a build loads its own workspace's rows and the shared
/// ones, not those of every workspace that ever used the store.
#[derive(Debug, Default)]
pub struct FileDigestCache {
    /// The workspace root this cache was loaded for; `None` for a cache not backed by a
    /// store.
    scope: Option<String>,
    entries: RwLock<HashMap<PathBuf, Entry>>,
    /// Entries hashed since the last flush.
    dirty: Mutex<HashMap<PathBuf, Entry>>,
    hashed: AtomicU64,
}

impl FileDigestCache {
    /// An empty cache, not backed by a store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The digest of the file at `path` (symlinks followed). Costs one `stat` when the
    /// file is unchanged since it was last hashed; otherwise reads and hashes it.
    pub fn digest(&self, path: &Path) -> io::Result<FileDigest> {
        self.digest_with_metadata(path, None)
    }

    /// Like [`FileDigestCache::digest`], reusing `metadata` the caller already has from a
    /// `stat` of `path` (not an `lstat` of a symlink), to save a system call per file.
    pub fn digest_with_metadata(
        &self,
        path: &Path,
        metadata: Option<&std::fs::Metadata>,
    ) -> io::Result<FileDigest> {
        // Entries are keyed by absolute, normalized paths; most callers have one already,
        // and looking it up as is spares a copy per file.
        let owned;
        let path = if is_normal_absolute(path) {
            path
        } else {
            owned = std::path::absolute(path)?;
            owned.as_path()
        };
        let stamp = match metadata {
            Some(m) => Stamp::of(m),
            None => Stamp::of(&std::fs::metadata(path)?),
        };
        {
            let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = entries.get(path) {
                if entry.stamp == stamp && entry.trusted() {
                    return Ok(entry.file_digest());
                }
            }
        }
        let path = path.to_path_buf();
        // Taken before reading: a write during hashing then lands inside the racy window.
        let hashed_at_ns = now_ns();
        let (digest, _) = hash_file(&path)?;
        self.hashed.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            stamp,
            digest,
            hashed_at_ns,
        };
        // Only remember what we can trust later: not racy, and not changed while we read.
        let after = std::fs::metadata(&path).map(|m| Stamp::of(&m));
        if entry.trusted() && after.as_ref().ok() == Some(&stamp) {
            self.insert(path, entry);
        }
        Ok(entry.file_digest())
    }

    /// Remembers `entry` for `path` now and in the store at the next flush.
    fn insert(&self, path: PathBuf, entry: Entry) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.clone(), entry);
        self.dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path, entry);
    }

    /// Whether `path`, whose `lstat` is `meta`, is still the hard link to `digest`'s store
    /// blob that [`FileDigestCache::remember_link`] saw: same inode, size, mode, mtime and
    /// ctime. Linking or unlinking a name of the inode (the store's included) changes its
    /// ctime, so this also says the blob is still in the store, without a `stat` of it.
    pub fn confirms_link(&self, path: &Path, meta: &std::fs::Metadata, digest: &Digest) -> bool {
        let stamp = Stamp::of(meta);
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(path).is_some_and(|entry| {
            entry.digest == *digest && entry.stamp == stamp && entry.trusted_link()
        })
    }

    /// Whether the link remembered at `path` to `digest`'s blob saw that blob's inode
    /// (`blob`, a `stat` of the blob, is the same inode) with another size, mtime or mode:
    /// the blob was written or chmod-ed since. The ctime is not compared: it moves whenever
    /// a name of the inode is linked or unlinked (another workspace, a sandbox staging the
    /// file as an input, `mlbuild clean`), none of which changes a byte.
    pub(crate) fn link_saw_other_blob(
        &self,
        path: &Path,
        digest: &Digest,
        blob: &std::fs::Metadata,
    ) -> bool {
        let now = Stamp::of(blob);
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(path).is_some_and(|entry| {
            let then = entry.stamp;
            entry.digest == *digest
                && (then.dev, then.ino) == (now.dev, now.ino)
                && (then.size, then.mtime_ns, then.mode) != (now.size, now.mtime_ns, now.mode)
        })
    }

    /// Remembers that `path` (whose `lstat` is `meta`) has just been checked to be a hard
    /// link to the store blob of `digest`, for [`FileDigestCache::confirms_link`].
    pub fn remember_link(&self, path: &Path, meta: &std::fs::Metadata, digest: Digest) {
        self.remember_link_at(path, meta, digest, now_ns());
    }

    fn remember_link_at(&self, path: &Path, meta: &std::fs::Metadata, digest: Digest, now: i64) {
        let entry = Entry {
            stamp: Stamp::of(meta),
            digest,
            hashed_at_ns: now,
        };
        // An entry that confirms this link already stays: rewriting it would only cost a
        // write. One recorded too soon after the link changed is replaced, or it would
        // never confirm.
        let confirmed = {
            let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
            entries
                .get(path)
                .is_some_and(|e| e.digest == digest && e.stamp == entry.stamp && e.trusted_link())
        };
        if !confirmed {
            self.insert(path.to_path_buf(), entry);
        }
    }

    /// [`FileDigestCache::remember_link`] as if `secs` seconds had passed since now.
    #[cfg(test)]
    pub(crate) fn remember_link_later(
        &self,
        path: &Path,
        meta: &std::fs::Metadata,
        digest: Digest,
        secs: i64,
    ) {
        self.remember_link_at(path, meta, digest, now_ns() + secs * 1_000_000_000);
    }

    /// How many files this cache has actually read and hashed (for tests and stats).
    pub fn hashed_count(&self) -> u64 {
        self.hashed.load(Ordering::Relaxed)
    }

    /// Number of remembered entries.
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes entries hashed since the last flush to the store, in one transaction.
    pub fn flush(&self, store: &Store) -> Result<(), StoreError> {
        let dirty = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|e| e.into_inner()));
        if dirty.is_empty() {
            return Ok(());
        }
        let mut conn = store.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::index("saving file digests"))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO file_digests
                     (path, dev, ino, size, mtime_ns, ctime_ns, mode, digest, hashed_at, ws)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(StoreError::index("saving file digests"))?;
            for (path, e) in &dirty {
                let s = e.stamp;
                let ws = match &self.scope {
                    Some(root) if is_under(path, root) => root.as_str(),
                    _ => "",
                };
                stmt.execute(params![
                    path.as_os_str().as_bytes(),
                    s.dev as i64,
                    s.ino as i64,
                    s.size as i64,
                    s.mtime_ns,
                    s.ctime_ns,
                    s.mode,
                    e.digest.as_bytes(),
                    e.hashed_at_ns,
                    ws
                ])
                .map_err(StoreError::index("saving file digests"))?;
            }
        }
        tx.commit()
            .map_err(StoreError::index("saving file digests"))
    }
}

/// Whether `path` is strictly inside the directory `root`.
fn is_under(path: &Path, root: &str) -> bool {
    path.as_os_str()
        .as_bytes()
        .strip_prefix(root.as_bytes())
        .is_some_and(|rest| rest.first() == Some(&b'/'))
}

impl Store {
    /// Loads, with one query, the remembered digests of files under the workspace root
    /// `ws_root` (absolute, canonical) and of files outside every workspace.
    pub fn file_digest_cache(&self, ws_root: &Path) -> Result<FileDigestCache, StoreError> {
        let scope = ws_root.to_string_lossy().into_owned();
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT path, dev, ino, size, mtime_ns, ctime_ns, mode, digest, hashed_at
                 FROM file_digests WHERE ws = ?1 OR ws = ''",
            )
            .map_err(StoreError::index("loading file digests"))?;
        let rows = stmt
            .query_map([&scope], |r| {
                let path: Vec<u8> = r.get(0)?;
                let digest: Vec<u8> = r.get(7)?;
                let stamp = Stamp {
                    dev: r.get::<_, i64>(1)? as u64,
                    ino: r.get::<_, i64>(2)? as u64,
                    size: r.get::<_, i64>(3)? as u64,
                    mtime_ns: r.get(4)?,
                    ctime_ns: r.get(5)?,
                    mode: r.get(6)?,
                };
                Ok((path, digest, stamp, r.get::<_, i64>(8)?))
            })
            .map_err(StoreError::index("loading file digests"))?;
        let mut entries = HashMap::new();
        for row in rows {
            let (path, digest, stamp, hashed_at_ns) =
                row.map_err(StoreError::index("loading file digests"))?;
            let Some(digest) = digest_from_sql(&digest) else {
                continue;
            };
            entries.insert(
                PathBuf::from(std::ffi::OsString::from_vec(path)),
                Entry {
                    stamp,
                    digest,
                    hashed_at_ns,
                },
            );
        }
        Ok(FileDigestCache {
            scope: Some(scope),
            entries: RwLock::new(entries),
            dirty: Mutex::default(),
            hashed: AtomicU64::new(0),
        })
    }

    /// Drops remembered digests of files that no longer exist. Returns how many.
    pub fn prune_file_digests(&self) -> Result<u64, StoreError> {
        let paths: Vec<Vec<u8>> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare_cached("SELECT path FROM file_digests")
                .map_err(StoreError::index("pruning file digests"))?;
            let rows = stmt
                .query_map([], |r| r.get(0))
                .map_err(StoreError::index("pruning file digests"))?;
            rows.collect::<Result<_, _>>()
                .map_err(StoreError::index("pruning file digests"))?
        };
        let gone: Vec<Vec<u8>> = paths
            .into_iter()
            .filter(|p| std::fs::symlink_metadata(std::ffi::OsStr::from_bytes(p)).is_err())
            .collect();
        if gone.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::index("pruning file digests"))?;
        {
            let mut stmt = tx
                .prepare_cached("DELETE FROM file_digests WHERE path = ?1")
                .map_err(StoreError::index("pruning file digests"))?;
            for p in &gone {
                stmt.execute(params![p])
                    .map_err(StoreError::index("pruning file digests"))?;
            }
        }
        tx.commit()
            .map_err(StoreError::index("pruning file digests"))?;
        Ok(gone.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, File};
    use std::time::{Duration, SystemTime};

    fn age(path: &Path, by: Duration) {
        let f = File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - by).unwrap();
    }

    #[test]
    fn a_workspace_loads_its_own_digests_and_the_shared_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for d in [&a, &b] {
            fs::create_dir_all(d).unwrap();
        }
        let in_a = a.join("x.txt");
        let outside = dir.path().join("tool");
        let in_b = b.join("y.txt");
        for f in [&in_a, &outside, &in_b] {
            fs::write(f, b"data").unwrap();
            age(f, Duration::from_secs(3600));
        }
        let cache = store.file_digest_cache(&a).unwrap();
        cache.digest(&in_a).unwrap();
        cache.digest(&outside).unwrap();
        cache.flush(&store).unwrap();
        let cache = store.file_digest_cache(&b).unwrap();
        cache.digest(&in_b).unwrap();
        cache.flush(&store).unwrap();

        // `a` sees its file and the shared one, not `b`'s (nor `b` a's).
        let a_view = store.file_digest_cache(&a).unwrap();
        assert_eq!(a_view.len(), 2);
        a_view.digest(&in_a).unwrap();
        a_view.digest(&outside).unwrap();
        assert_eq!(a_view.hashed_count(), 0);
        let b_view = store.file_digest_cache(&b).unwrap();
        assert_eq!(b_view.len(), 2);
        b_view.digest(&in_b).unwrap();
        assert_eq!(b_view.hashed_count(), 0);
        // A sibling whose name extends the root is not inside it.
        assert!(!is_under(Path::new("/w2/f"), "/w"));
        assert!(is_under(Path::new("/w/f"), "/w"));
        assert!(!is_under(Path::new("/w"), "/w"));
    }

    #[test]
    fn unchanged_file_is_not_reread_after_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let file = dir.path().join("data.csv");
        fs::write(&file, b"a,b\n1,2\n").unwrap();
        age(&file, Duration::from_secs(3600));

        let cache = store.file_digest_cache(dir.path()).unwrap();
        let first = cache.digest(&file).unwrap();
        assert_eq!(first.digest, Digest::of_bytes(b"a,b\n1,2\n"));
        assert_eq!(first.size, 8);
        assert!(!first.executable);
        assert_eq!(cache.hashed_count(), 1);
        assert_eq!(cache.digest(&file).unwrap(), first);
        assert_eq!(
            cache.hashed_count(),
            1,
            "an unchanged file must not be re-read"
        );
        cache.flush(&store).unwrap();

        // A fresh cache loaded from the index trusts the stored entry.
        let cache = store.file_digest_cache(dir.path()).unwrap();
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.digest(&file).unwrap(), first);
        assert_eq!(cache.hashed_count(), 0);
    }

    #[test]
    fn changed_file_is_rehashed_even_with_same_size_and_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x");
        fs::write(&file, b"old!").unwrap();
        age(&file, Duration::from_secs(3600));
        let mtime = fs::metadata(&file).unwrap().modified().unwrap();
        let cache = FileDigestCache::new();
        cache.digest(&file).unwrap();

        // Same size, mtime restored: only the ctime betrays the change.
        fs::write(&file, b"new!").unwrap();
        File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let d = cache.digest(&file).unwrap();
        assert_eq!(d.digest, Digest::of_bytes(b"new!"));
        assert_eq!(cache.hashed_count(), 2);

        // A mode change flips the executable bit without content change.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(cache.digest(&file).unwrap().executable);
    }

    #[test]
    fn racy_entries_are_never_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let file = dir.path().join("fresh");
        fs::write(&file, b"just written").unwrap();
        let cache = store.file_digest_cache(dir.path()).unwrap();
        cache.digest(&file).unwrap();
        cache.digest(&file).unwrap();
        // Modified "now": each lookup re-reads, and nothing is remembered.
        assert_eq!(cache.hashed_count(), 2);
        assert!(cache.is_empty());
        cache.flush(&store).unwrap();
        assert!(store.file_digest_cache(dir.path()).unwrap().is_empty());
        // Once old enough, it is cached.
        age(&file, Duration::from_secs(10));
        cache.digest(&file).unwrap();
        cache.digest(&file).unwrap();
        assert_eq!(cache.hashed_count(), 3);
    }

    #[test]
    fn normal_absolute_paths_are_left_as_is() {
        for p in ["/a", "/a/b.txt", "/a/.b", "/a/b..", "/a/../b"] {
            assert!(is_normal_absolute(Path::new(p)), "{p}");
            assert_eq!(std::path::absolute(p).unwrap(), Path::new(p));
        }
        for p in ["/", "a/b", "/a//b", "/a/./b", "/a/.", "/a/", "//a", ""] {
            assert!(!is_normal_absolute(Path::new(p)), "{p}");
        }
        // Either way a file is found under the same entry.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        age(&file, Duration::from_secs(3600));
        let cache = FileDigestCache::new();
        let plain = cache.digest(&file).unwrap();
        let dotted = dir.path().join(".").join("f");
        assert_eq!(cache.digest(&dotted).unwrap(), plain);
        assert_eq!(cache.hashed_count(), 1);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn prune_drops_deleted_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let file = dir.path().join("gone");
        fs::write(&file, b"x").unwrap();
        age(&file, Duration::from_secs(3600));
        let cache = store.file_digest_cache(dir.path()).unwrap();
        cache.digest(&file).unwrap();
        cache.flush(&store).unwrap();
        fs::remove_file(&file).unwrap();
        assert_eq!(store.prune_file_digests().unwrap(), 1);
        assert!(store.file_digest_cache(dir.path()).unwrap().is_empty());
    }
}
