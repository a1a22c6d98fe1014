//! Content-addressed blobs: writing, reading, ingesting and materializing files.
//!
//! Blobs are immutable and read-only so they can be hardlinked into output trees in O(1)
//! whatever their size; every write goes to a uniquely named temp file first and is then
//! renamed, so a reader never sees a half-written blob and two processes storing the same
//! content simply race to rename identical bytes. The operations hang off [`Store`].

use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use mlbuild_digest::{hash_file, Digest};

use crate::{FileDigest, FileDigestCache, Store, StoreError};

/// Blobs are read-only for everyone: a hardlinked output must not be editable in place,
/// since that would silently change the blob under every other link.
const BLOB_MODE: u32 = 0o444;
/// Executable outputs are copies (a mode is per inode, blobs stay 0444).
const EXEC_MODE: u32 = 0o555;

/// A name no other thread or process will pick: pid, a per-process counter and the clock.
/// Where [`Store::materialize_tree`] keeps linked trees.
pub const TREES_DIR: &str = "envs";

/// Where tools keep download caches of their own (uv's, for Python environments). Nothing
/// in it is trusted: what tools take from it is checked against hashes in action inputs.
/// `gc` empties it.
pub const TOOL_CACHE_DIR: &str = "cache";

pub(crate) fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}{}-{n}-{nanos:x}", std::process::id())
}

/// Removes the directory `name` of the store at `root`, if it exists.
pub(crate) fn remove_store_dir(root: &Path, name: &str) -> Result<(), StoreError> {
    let dir = root.join(name);
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StoreError::io("remove", &dir)(e)),
        _ => Ok(()),
    }
}

/// Removes a temp file when dropped unless it has been renamed into place.
struct TempGuard(Option<PathBuf>);

impl TempGuard {
    fn new(path: PathBuf) -> Self {
        TempGuard(Some(path))
    }
    fn path(&self) -> &Path {
        self.0.as_deref().expect("guard is armed")
    }
    /// Renames the temp file to `dest`, disarming the guard.
    fn rename_to(mut self, dest: &Path) -> Result<(), StoreError> {
        let tmp = self.0.take().expect("guard is armed");
        let result = fs::rename(&tmp, dest).map_err(StoreError::io("rename into", dest));
        // `rename(a, b)` where both name the same inode succeeds without removing `a`
        // (POSIX); clean it up so no temp file is left behind.
        let _ = fs::remove_file(&tmp);
        result
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), StoreError> {
    fs::set_permissions(path, Permissions::from_mode(mode))
        .map_err(StoreError::io("set permissions of", path))
}

/// Errors after which a copy may succeed where a hardlink failed: another filesystem,
/// too many links, or a filesystem or policy that forbids hardlinks.
fn link_fallback(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EXDEV | libc::EMLINK | libc::EPERM | libc::EACCES | libc::ENOTSUP)
    )
}

impl Store {
    /// True when the blob is present (its content is not checked).
    pub fn has_blob(&self, d: &Digest) -> bool {
        fs::symlink_metadata(self.blob_path(d)).is_ok()
    }

    /// Whether blob `d`, of `size` bytes, is in the store, for a writer about to store
    /// that content. A blob whose size or mode shows it was written in place (see
    /// [`Store::check_unwritten`]) is re-hashed, and removed if altered: the writer then
    /// stores the right bytes instead of trusting the blob's name.
    fn has_intact_blob(&self, d: &Digest, size: u64) -> Result<bool, StoreError> {
        let path = self.blob_path(d);
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(StoreError::io("stat", path)(e)),
        };
        let resized = meta.len() != size;
        match self.check_unwritten(d, &path, meta, resized) {
            Ok(_) => Ok(true),
            Err(e) if e.is_corrupt() || e.is_missing() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn prepare_blob_dir(&self, d: &Digest) -> Result<PathBuf, StoreError> {
        let path = self.blob_path(d);
        let parent = path.parent().expect("blob paths have a parent");
        fs::create_dir_all(parent).map_err(StoreError::io("create directory", parent))?;
        Ok(path)
    }

    fn tmp_path(&self, prefix: &str) -> PathBuf {
        self.tmp_dir().join(unique_name(prefix))
    }

    /// Stores `data`, returning its digest. Atomic: the blob appears complete or not at all.
    pub fn put_bytes(&self, data: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::of_bytes(data);
        if self.has_intact_blob(&digest, data.len() as u64)? {
            return Ok(digest);
        }
        let dest = self.prepare_blob_dir(&digest)?;
        let tmp = TempGuard::new(self.tmp_path("put-"));
        let mut file =
            File::create_new(tmp.path()).map_err(StoreError::io("create", tmp.path()))?;
        file.write_all(data)
            .map_err(StoreError::io("write", tmp.path()))?;
        drop(file);
        set_mode(tmp.path(), BLOB_MODE)?;
        tmp.rename_to(&dest)?;
        Ok(digest)
    }

    /// Reads a whole blob, verifying that its content matches `d`.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(d);
        let data = match fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::Missing { digest: *d })
            }
            Err(e) => return Err(StoreError::io("read", path)(e)),
        };
        if Digest::of_bytes(&data) != *d {
            return Err(StoreError::Corrupt { digest: *d, path });
        }
        Ok(data)
    }

    /// Re-hashes a blob on disk; `Corrupt` if its content no longer matches its name.
    pub fn verify_blob(&self, d: &Digest) -> Result<(), StoreError> {
        let path = self.blob_path(d);
        match hash_file(&path) {
            Ok((actual, _)) if actual == *d => Ok(()),
            Ok(_) => Err(StoreError::Corrupt { digest: *d, path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::Missing { digest: *d })
            }
            Err(e) => Err(StoreError::io("read", path)(e)),
        }
    }

    /// Moves a file's content into the store and returns its digest.
    ///
    /// If the blob already exists, `src` is left alone. Otherwise `src` is hardlinked into
    /// the store (O(1) for a 10 GiB model), falling back to a copy across filesystems;
    /// note that a hardlinked `src` shares the blob's inode and so becomes read-only (mode
    /// 0444) — meant for action outputs, which the executor materializes afresh anyway.
    /// `executable` reflects `src`'s mode before ingestion.
    pub fn ingest_file(&self, src: &Path) -> Result<FileDigest, StoreError> {
        // `link(2)` would store a symlink itself, not its target's content.
        let resolved;
        let src = match fs::symlink_metadata(src) {
            Ok(m) if m.file_type().is_symlink() => {
                resolved = fs::canonicalize(src).map_err(StoreError::io("resolve", src))?;
                resolved.as_path()
            }
            _ => src,
        };
        let before = fs::metadata(src).map_err(StoreError::io("stat", src))?;
        let executable = before.mode() & 0o111 != 0;
        let (mut digest, mut size) = hash_file(src).map_err(StoreError::io("hash", src))?;
        if self.has_intact_blob(&digest, size)? {
            return Ok(FileDigest {
                digest,
                size,
                executable,
            });
        }
        let tmp = TempGuard::new(self.tmp_path("ingest-"));
        match fs::hard_link(src, tmp.path()) {
            Ok(()) => {
                // The file may have been rewritten between hashing and linking; the link
                // pins the inode we now own, so re-hash it if it visibly changed.
                let now = fs::metadata(tmp.path()).map_err(StoreError::io("stat", tmp.path()))?;
                if now.ino() != before.ino()
                    || now.size() != before.size()
                    || now.mtime() != before.mtime()
                    || now.mtime_nsec() != before.mtime_nsec()
                {
                    (digest, size) =
                        hash_file(tmp.path()).map_err(StoreError::io("hash", tmp.path()))?;
                }
                if let Err(e) = fs::set_permissions(tmp.path(), Permissions::from_mode(BLOB_MODE)) {
                    if !link_fallback(&e) {
                        return Err(StoreError::io("set permissions of", tmp.path())(e));
                    }
                    // Not our file to chmod (another owner): copy it instead.
                    fs::remove_file(tmp.path()).map_err(StoreError::io("remove", tmp.path()))?;
                    (digest, size) = self.copy_in(src, tmp.path())?;
                }
            }
            Err(e) if link_fallback(&e) => {
                (digest, size) = self.copy_in(src, tmp.path())?;
            }
            Err(e) => return Err(StoreError::io("link into the store", src)(e)),
        }
        if self.has_intact_blob(&digest, size)? {
            // The content changed to something already stored; the guard cleans up.
            return Ok(FileDigest {
                digest,
                size,
                executable,
            });
        }
        let dest = self.prepare_blob_dir(&digest)?;
        tmp.rename_to(&dest)?;
        Ok(FileDigest {
            digest,
            size,
            executable,
        })
    }

    /// Copies `src` to `tmp` and hashes the copy (the copy is what will be stored).
    fn copy_in(&self, src: &Path, tmp: &Path) -> Result<(Digest, u64), StoreError> {
        fs::copy(src, tmp).map_err(StoreError::io("copy into the store", src))?;
        set_mode(tmp, BLOB_MODE)?;
        hash_file(tmp).map_err(StoreError::io("hash", tmp))
    }

    /// A directory holding `files` (relative path -> blob), made once per `digest` under
    /// `<store>/envs/` and then shared by every action that mounts it read-only (a Python
    /// environment: thousands of files, linked once instead of once per action). It is
    /// assembled in a temporary directory and renamed into place, so a directory under its
    /// final name is always complete; `gc` and `fsck` remove them all (the next build
    /// links them again from the blobs).
    pub fn materialize_tree(
        &self,
        digest: &Digest,
        files: &[(String, crate::OutputFile)],
    ) -> Result<PathBuf, StoreError> {
        let parent = self.root.join(TREES_DIR);
        let dir = parent.join(digest.to_hex());
        if dir.is_dir() {
            return Ok(dir);
        }
        fs::create_dir_all(&parent).map_err(StoreError::io("create directory", &parent))?;
        // Assembled in this process's scratch, so a build killed halfway leaves nothing
        // under `envs/` (its scratch is reclaimed).
        let tmp = self.tmp_dir().join(unique_name("tree-"));
        let built = self.link_tree(&tmp, files).and_then(|()| {
            fs::rename(&tmp, &dir).or_else(|e| {
                // Another build linked the same tree first; ours is dropped below.
                if dir.is_dir() {
                    Ok(())
                } else {
                    Err(StoreError::io("rename into", &dir)(e))
                }
            })
        });
        if tmp.exists() {
            let _ = crate::remove_tree(&tmp);
        }
        built.map(|()| dir)
    }

    fn link_tree(
        &self,
        tmp: &Path,
        files: &[(String, crate::OutputFile)],
    ) -> Result<(), StoreError> {
        fs::create_dir(tmp).map_err(StoreError::io("create directory", tmp))?;
        for (rel, file) in files {
            let clean = !rel.is_empty()
                && !rel.starts_with('/')
                && rel
                    .split('/')
                    .all(|c| !c.is_empty() && c != "." && c != "..");
            if !clean {
                return Err(StoreError::io("link tree entry", Path::new(rel))(
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "not a relative path inside the tree",
                    ),
                ));
            }
            self.materialize(&file.digest, &tmp.join(rel), file.executable)?;
        }
        Ok(())
    }

    /// Removes every linked tree (see [`Store::materialize_tree`]); callers hold the
    /// store lock exclusively, so no build is using one.
    pub(crate) fn remove_trees(&self) -> Result<(), StoreError> {
        remove_store_dir(&self.root, TREES_DIR)
    }

    /// Empties the tools' download caches ([`TOOL_CACHE_DIR`]); same locking as above.
    pub(crate) fn remove_tool_caches(&self) -> Result<(), StoreError> {
        remove_store_dir(&self.root, TOOL_CACHE_DIR)
    }

    /// Makes `dest` hold blob `d`'s content, creating parent directories and atomically
    /// replacing whatever `dest` was. Non-executable files are hardlinks to the blob (a
    /// copy if linking is impossible); executable ones are copies with mode 0555. A `dest`
    /// that is already a hardlink to the blob is left untouched, so a no-op build costs
    /// two `stat`s per file.
    pub fn materialize(&self, d: &Digest, dest: &Path, executable: bool) -> Result<(), StoreError> {
        self.materialize_remembered(d, dest, executable, None)
    }

    /// [`Store::materialize`], where `links` remembers destinations already checked to be
    /// hard links to their blobs: such a destination costs one `lstat` instead of two
    /// `stat`s (see [`FileDigestCache::confirms_link`]); one found linked is remembered.
    pub fn materialize_remembered(
        &self,
        d: &Digest,
        dest: &Path,
        executable: bool,
        links: Option<&FileDigestCache>,
    ) -> Result<(), StoreError> {
        match self.out_of_place(d, dest, executable, links)? {
            None => Ok(()),
            Some(blob) => self.replace_with_blob(d, &blob, dest, executable, links),
        }
    }

    /// True when `dest` already is what [`Store::materialize_remembered`] would make it,
    /// so a caller can tell without changing anything (or taking a lock) that nothing
    /// needs to change. `Missing` if the blob is gone and `dest` is not known to hold it.
    pub fn is_materialized(
        &self,
        d: &Digest,
        dest: &Path,
        executable: bool,
        links: Option<&FileDigestCache>,
    ) -> Result<bool, StoreError> {
        Ok(self.out_of_place(d, dest, executable, links)?.is_none())
    }

    /// `None` when `dest` holds blob `d` as materializing would leave it, else the blob's
    /// path to materialize from.
    fn out_of_place(
        &self,
        d: &Digest,
        dest: &Path,
        executable: bool,
        links: Option<&FileDigestCache>,
    ) -> Result<Option<PathBuf>, StoreError> {
        if let (Some(links), false) = (links, executable) {
            let confirmed = fs::symlink_metadata(dest)
                .is_ok_and(|m| m.is_file() && m.nlink() >= 2 && links.confirms_link(dest, &m, d));
            if confirmed {
                return Ok(None);
            }
        }
        let blob = self.blob_path(d);
        let blob_meta = match fs::metadata(&blob) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::Missing { digest: *d })
            }
            Err(e) => return Err(StoreError::io("stat", blob)(e)),
        };
        let written = links.is_some_and(|l| l.link_saw_other_blob(dest, d, &blob_meta));
        let blob_meta = self.check_unwritten(d, &blob, blob_meta, written)?;
        if !executable {
            if let Ok(existing) = fs::symlink_metadata(dest) {
                if existing.dev() == blob_meta.dev() && existing.ino() == blob_meta.ino() {
                    if let Some(links) = links {
                        // Same inode: the blob's metadata is the destination's.
                        links.remember_link(dest, &blob_meta, *d);
                    }
                    return Ok(None);
                }
            }
        }
        if let Some(links) = links {
            // A copy (an executable output, or a store on another filesystem than the
            // workspace) that already holds the blob's bytes with a copy's mode is kept:
            // the digest cache knows its content from one `lstat` once it has hashed it,
            // where copying again would cost the whole file on every build. On the
            // store's filesystem a plain output is linked instead, to share the bytes.
            let mode = if executable { EXEC_MODE } else { BLOB_MODE };
            let kept = fs::symlink_metadata(dest).is_ok_and(|m| {
                m.is_file()
                    && (executable || m.dev() != blob_meta.dev())
                    && m.mode() & 0o7777 == mode
                    && links
                        .digest_with_metadata(dest, Some(&m))
                        .is_ok_and(|f| f.digest == *d)
            });
            if kept {
                return Ok(None);
            }
        }
        Ok(Some(blob))
    }

    /// Atomically replaces whatever `dest` is with the blob at `blob`: a hardlink, or a
    /// copy (executable outputs, other filesystems) with a blob's or an executable's mode.
    fn replace_with_blob(
        &self,
        d: &Digest,
        blob: &Path,
        dest: &Path,
        executable: bool,
        links: Option<&FileDigestCache>,
    ) -> Result<(), StoreError> {
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        fs::create_dir_all(parent).map_err(StoreError::io("create directory", parent))?;
        let file_name = dest
            .file_name()
            .map(|n| n.to_string_lossy().chars().take(64).collect::<String>())
            .unwrap_or_default();
        let tmp = TempGuard::new(parent.join(unique_name(&format!(".{file_name}.mlbuild-"))));
        let linked = !executable
            && match fs::hard_link(blob, tmp.path()) {
                Ok(()) => true,
                Err(e) if link_fallback(&e) => false,
                Err(e) => return Err(StoreError::io("link", tmp.path())(e)),
            };
        if !linked {
            fs::copy(blob, tmp.path()).map_err(StoreError::io("copy to", tmp.path()))?;
            set_mode(tmp.path(), if executable { EXEC_MODE } else { BLOB_MODE })?;
        }
        if let Ok(existing) = fs::symlink_metadata(dest) {
            // `rename` cannot replace a directory with a file; clear it first.
            if existing.is_dir() {
                fs::remove_dir_all(dest).map_err(StoreError::io("remove", dest))?;
            }
        }
        tmp.rename_to(dest)?;
        if let (Some(links), true) = (links, linked) {
            // Remembered from the start, so a write through this link before the next
            // build (which would otherwise remember it) is seen by `check_unwritten`.
            if let Ok(meta) = fs::symlink_metadata(dest) {
                links.remember_link(dest, &meta, *d);
            }
        }
        Ok(())
    }

    /// Returns the metadata of blob `d` (at `path`, whose `stat` is `meta`) once it is
    /// known not to have been written in place, re-hashing it when that is in doubt.
    ///
    /// Outputs are hard links to blobs, so whoever can write an output file (root, or
    /// anyone after a `chmod`) writes the blob under every other link and every cache
    /// entry that names it. Blobs are always mode 0444, so another mode betrays a `chmod`;
    /// `written` says a remembered link saw the blob's inode with another size, mtime or
    /// mode (see [`FileDigestCache::link_saw_other_blob`]). Either way the blob is
    /// re-hashed: if its bytes still match it is kept (its mode put back), otherwise it is
    /// removed from the store and `Corrupt` returned, so the caller rebuilds it instead of
    /// handing out the altered bytes. A write that restores the mtime on purpose is left
    /// to `mlbuild fsck`, which re-hashes every blob.
    fn check_unwritten(
        &self,
        d: &Digest,
        path: &Path,
        meta: fs::Metadata,
        written: bool,
    ) -> Result<fs::Metadata, StoreError> {
        let chmodded = meta.mode() & 0o7777 != BLOB_MODE;
        if !written && !chmodded {
            return Ok(meta);
        }
        match hash_file(path) {
            Ok((actual, _)) if actual == *d => {
                if chmodded {
                    // Best effort: a blob we cannot chmod is simply re-hashed next time.
                    let _ = set_mode(path, BLOB_MODE);
                }
                fs::metadata(path).map_err(StoreError::io("stat", path))
            }
            Ok(_) => {
                match fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(StoreError::io("remove", path)(e))
                    }
                    _ => {}
                }
                Err(StoreError::Corrupt {
                    digest: *d,
                    path: path.to_path_buf(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::Missing { digest: *d })
            }
            Err(e) => Err(StoreError::io("read", path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        (dir, store)
    }

    fn tmp_is_empty(store: &Store) -> bool {
        fs::read_dir(store.tmp_dir()).unwrap().next().is_none()
    }

    #[test]
    fn put_and_read_round_trip() {
        let (_dir, store) = store();
        let d = store.put_bytes(b"hello").unwrap();
        assert_eq!(d, Digest::of_bytes(b"hello"));
        assert!(store.has_blob(&d));
        assert_eq!(store.read_blob(&d).unwrap(), b"hello");
        // Idempotent.
        assert_eq!(store.put_bytes(b"hello").unwrap(), d);
        let mode = fs::metadata(store.blob_path(&d)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o444);
        assert!(tmp_is_empty(&store));
        store.verify_blob(&d).unwrap();
    }

    #[test]
    fn missing_and_corrupt_blobs_are_distinguished() {
        let (_dir, store) = store();
        let absent = Digest::of_bytes(b"absent");
        assert!(store.read_blob(&absent).unwrap_err().is_missing());
        let d = store.put_bytes(b"good").unwrap();
        let path = store.blob_path(&d);
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        fs::write(&path, b"evil").unwrap();
        let err = store.read_blob(&d).unwrap_err();
        assert!(err.is_corrupt(), "{err}");
        assert_eq!(err.blob_digest(), Some(d));
        assert!(store.verify_blob(&d).unwrap_err().is_corrupt());
    }

    #[test]
    fn ingest_links_and_reports_exec_bit() {
        let (dir, store) = store();
        let src = dir.path().join("model.bin");
        fs::write(&src, b"weights").unwrap();
        fs::set_permissions(&src, Permissions::from_mode(0o755)).unwrap();
        let fd = store.ingest_file(&src).unwrap();
        assert_eq!(fd.digest, Digest::of_bytes(b"weights"));
        assert_eq!(fd.size, 7);
        assert!(fd.executable);
        let blob = fs::metadata(store.blob_path(&fd.digest)).unwrap();
        assert_eq!(blob.mode() & 0o777, 0o444);
        assert_eq!(blob.ino(), fs::metadata(&src).unwrap().ino());
        assert!(tmp_is_empty(&store));

        // Same content again from another file: src untouched, blob unchanged.
        let other = dir.path().join("copy.bin");
        fs::write(&other, b"weights").unwrap();
        let fd2 = store.ingest_file(&other).unwrap();
        assert_eq!(fd2.digest, fd.digest);
        assert!(!fd2.executable);
        assert_eq!(fs::metadata(&other).unwrap().mode() & 0o777, 0o644);
        // A symlink is ingested as its target's content.
        let link = dir.path().join("link");
        fs::write(dir.path().join("target"), b"via link").unwrap();
        std::os::unix::fs::symlink("target", &link).unwrap();
        let fd3 = store.ingest_file(&link).unwrap();
        assert_eq!(store.read_blob(&fd3.digest).unwrap(), b"via link");
        assert!(fs::metadata(store.blob_path(&fd3.digest))
            .unwrap()
            .is_file());
        // Ingesting a file that already is the blob is a no-op too.
        store.ingest_file(&src).unwrap();
        assert!(tmp_is_empty(&store));
    }

    #[test]
    fn remembered_links_are_trusted_only_while_their_inode_is_untouched() {
        let (dir, store) = store();
        let links = FileDigestCache::new();
        let d = store.put_bytes(b"model").unwrap();
        // A blob stored long ago (its mtime is old), linked just now (its ctime is not).
        fs::File::open(store.blob_path(&d))
            .unwrap()
            .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
            .unwrap();
        let dest = dir.path().join("out/m.bin");
        let remembered = |links: &FileDigestCache| {
            let meta = fs::symlink_metadata(&dest).unwrap();
            links.confirms_link(&dest, &meta, &d)
        };
        // Linked now, and remembered from the start.
        store
            .materialize_remembered(&d, &dest, false, Some(&links))
            .unwrap();
        assert_eq!(links.len(), 1);
        store
            .materialize_remembered(&d, &dest, false, Some(&links))
            .unwrap();
        assert_eq!(links.len(), 1);
        // Recorded within the racy window of the link's ctime: not trusted yet, and
        // recorded again once the window has passed.
        assert!(!remembered(&links));
        let meta = fs::symlink_metadata(&dest).unwrap();
        links.remember_link_later(&dest, &meta, d, 10);
        assert!(remembered(&links));
        // Another digest is not confirmed by this file.
        let meta = fs::symlink_metadata(&dest).unwrap();
        assert!(!links.confirms_link(&dest, &meta, &Digest::of_bytes(b"other")));

        // The store loses the blob (gc, fsck): the link's inode changes, so the fast path
        // is not taken and the hit fails as a missing blob.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::remove_file(store.blob_path(&d)).unwrap();
        assert!(!remembered(&links));
        let err = store
            .materialize_remembered(&d, &dest, false, Some(&links))
            .unwrap_err();
        assert!(matches!(err, StoreError::Missing { .. }), "{err}");

        // A destination replaced by other bytes (same size) is put back.
        let d = store.put_bytes(b"model").unwrap();
        store
            .materialize_remembered(&d, &dest, false, Some(&links))
            .unwrap();
        let meta = fs::symlink_metadata(&dest).unwrap();
        links.remember_link_later(&dest, &meta, d, 10);
        assert!(remembered(&links));
        fs::remove_file(&dest).unwrap();
        fs::write(&dest, b"MODEL").unwrap();
        store
            .materialize_remembered(&d, &dest, false, Some(&links))
            .unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"model");
        assert_eq!(
            fs::metadata(&dest).unwrap().ino(),
            fs::metadata(store.blob_path(&d)).unwrap().ino()
        );
    }

    /// Rewrites `path` in place (same inode, same size), as root or a careless `chmod`
    /// could through any hard link to a blob; `mode` is left on the file afterwards.
    fn write_in_place(path: &Path, bytes: &[u8], mode: u32) {
        // Past the file system's timestamp granularity, so the mtime moves.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::set_permissions(path, Permissions::from_mode(0o644)).unwrap();
        let mut file = fs::OpenOptions::new().write(true).open(path).unwrap();
        file.write_all(bytes).unwrap();
        drop(file);
        fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_blob_written_in_place_is_rehashed_and_dropped_not_handed_out() {
        let (dir, store) = store();
        let links = FileDigestCache::new();
        let d = store.put_bytes(b"model").unwrap();
        let dest = dir.path().join("out/m.bin");
        let materialize = |dest: &Path, links: &FileDigestCache| {
            store.materialize_remembered(&d, dest, false, Some(links))
        };
        materialize(&dest, &links).unwrap();

        // Another name for the blob moves its ctime, not its bytes: still served.
        fs::hard_link(store.blob_path(&d), dir.path().join("elsewhere")).unwrap();
        materialize(&dest, &links).unwrap();
        fs::remove_file(dir.path().join("elsewhere")).unwrap();

        // Written through the output, mode put back to 0444 (as root would leave it): the
        // remembered link saw another mtime, so the blob is re-hashed and dropped.
        write_in_place(&dest, b"MODEL", 0o444);
        let err = materialize(&dest, &links).unwrap_err();
        assert!(err.is_corrupt(), "{err}");
        assert!(!store.has_blob(&d));
        // Once stored again, the output gets the right bytes back.
        store.put_bytes(b"model").unwrap();
        materialize(&dest, &links).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"model");

        // A `chmod u+w` alone: re-hashed, kept, and read-only again.
        fs::set_permissions(&dest, Permissions::from_mode(0o644)).unwrap();
        materialize(&dest, &links).unwrap();
        let blob = store.blob_path(&d);
        assert_eq!(fs::metadata(&blob).unwrap().mode() & 0o777, 0o444);

        // Written and left writable: the mode gives it away even where no link was
        // remembered (another workspace, `mlbuild clean` then a build).
        write_in_place(&dest, b"MODEL", 0o644);
        let fresh = FileDigestCache::new();
        let err = materialize(&dir.path().join("out/n.bin"), &fresh).unwrap_err();
        assert!(err.is_corrupt(), "{err}");
        assert!(!dir.path().join("out/n.bin").exists());

        // Storing the content again replaces an altered blob rather than trusting it.
        let d = store.put_bytes(b"model").unwrap();
        write_in_place(&store.blob_path(&d), b"MODEL", 0o644);
        assert_eq!(store.put_bytes(b"model").unwrap(), d);
        assert_eq!(store.read_blob(&d).unwrap(), b"model");
        let src = dir.path().join("model.out");
        fs::write(&src, b"model").unwrap();
        write_in_place(&store.blob_path(&d), b"MODEL", 0o644);
        assert_eq!(store.ingest_file(&src).unwrap().digest, d);
        assert_eq!(store.read_blob(&d).unwrap(), b"model");
    }

    #[test]
    fn remembered_copies_are_kept_while_they_hold_the_blob() {
        let (dir, store) = store();
        let links = FileDigestCache::new();
        let d = store.put_bytes(b"#!/bin/sh\necho hi\n").unwrap();
        let dest = dir.path().join("out/run.sh");
        store
            .materialize_remembered(&d, &dest, true, Some(&links))
            .unwrap();
        let ino = fs::metadata(&dest).unwrap().ino();
        // Not copied again: same file.
        store
            .materialize_remembered(&d, &dest, true, Some(&links))
            .unwrap();
        assert_eq!(fs::metadata(&dest).unwrap().ino(), ino);
        // Other bytes, or a writable mode, are replaced.
        fs::set_permissions(&dest, Permissions::from_mode(0o755)).unwrap();
        fs::write(&dest, b"#!/bin/sh\necho hacked\n").unwrap();
        store
            .materialize_remembered(&d, &dest, true, Some(&links))
            .unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"#!/bin/sh\necho hi\n");
        assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o777, 0o555);
        // The blob leaving the store still fails the hit.
        fs::remove_file(store.blob_path(&d)).unwrap();
        let err = store
            .materialize_remembered(&d, &dest, true, Some(&links))
            .unwrap_err();
        assert!(matches!(err, StoreError::Missing { .. }), "{err}");
    }

    #[test]
    fn materialize_links_copies_and_replaces() {
        let (dir, store) = store();
        let d = store.put_bytes(b"output").unwrap();
        let dest = dir.path().join("out/a/b.txt");
        store.materialize(&d, &dest, false).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"output");
        let blob_ino = fs::metadata(store.blob_path(&d)).unwrap().ino();
        assert_eq!(fs::metadata(&dest).unwrap().ino(), blob_ino);
        // Already linked: nothing changes.
        store.materialize(&d, &dest, false).unwrap();
        assert_eq!(fs::metadata(&dest).unwrap().ino(), blob_ino);

        // Replacing with other content, then an executable copy.
        let d2 = store.put_bytes(b"#!/bin/sh\n").unwrap();
        store.materialize(&d2, &dest, true).unwrap();
        let meta = fs::metadata(&dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"#!/bin/sh\n");
        assert_eq!(meta.mode() & 0o777, 0o555);
        assert_ne!(
            meta.ino(),
            fs::metadata(store.blob_path(&d2)).unwrap().ino()
        );
        // Back to the non-executable blob; a read-only dest is still replaced.
        store.materialize(&d, &dest, false).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"output");

        // A directory in the way is replaced.
        let dir_dest = dir.path().join("out/dir");
        fs::create_dir_all(dir_dest.join("x")).unwrap();
        store.materialize(&d, &dir_dest, false).unwrap();
        assert!(dir_dest.is_file());

        // No temp files left in the destination directory.
        let names: Vec<_> = fs::read_dir(dir.path().join("out/a"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("b.txt")]);
        assert!(store
            .materialize(&Digest::of_bytes(b"nope"), &dest, false)
            .unwrap_err()
            .is_missing());
    }
}
