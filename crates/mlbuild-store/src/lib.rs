//! The mlbuild store: content-addressed blobs plus a SQLite index.
//!
//! Every cache decision ends here: blobs live under `cas/<2 hex>/<64 hex>` (immutable,
//! read-only, always written to a temp file and renamed so a half-written blob never
//! exists under its real name), and `index.sqlite` maps action keys to results, remembers
//! file digests by stat stamp, each workspace's latest build, and the build history.
//! One store is shared by all workspaces and all concurrent mlbuild processes of a user.
//! The main type is [`Store`].

mod actions;
mod cas;
pub use cas::{TOOL_CACHE_DIR, TREES_DIR};
mod db;
mod digest_cache;
mod error;
mod experiments;
mod history;
mod lock;
pub mod logs;
mod maintenance;
mod metrics;
mod params;
mod remote;
mod scratch;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use rusqlite::Connection;

pub use actions::{ActionIsolation, ActionResult, LatestKey, OutputFile, TargetRecord};
pub use db::IndexContents;
pub use digest_cache::{FileDigest, FileDigestCache};
pub use error::StoreError;
pub use experiments::{GateRecord, SelectionRecord};
pub use history::{BuildListing, Invocation, InvocationRecord, TargetRun};
pub use lock::{ActionLock, OutputsGuard, OutputsLock, StoreLock};
pub use maintenance::{FsckReport, GcPolicy, GcReport, IndexDamage, KeptBuild, StoreStats};
pub use metrics::{parse_metrics, LastFailure, MetricValues, MetricsRecord, TargetStats};
pub use mlbuild_digest::Digest;
pub use params::{params_json, BuildParams};
pub use remote::{RemoteCache, RemoteError, RemoteErrorKind, RemoteHit, Transfer};
pub use scratch::{remove_tree, Reclaimed};

/// A content-addressed store rooted at one directory. `Send + Sync`: share it across the
/// executor's threads; open one per process.
pub struct Store {
    root: PathBuf,
    /// One connection per store handle; SQLite serialises writers anyway, and a mutex is
    /// cheaper than a pool for the short statements the store runs.
    conn: Mutex<Connection>,
    /// This handle's directory under `tmp/`, created on first use, removed on drop.
    scratch: OnceLock<scratch::Scratch>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.root).finish()
    }
}

impl Store {
    /// `$XDG_CACHE_HOME/mlbuild`, else `$HOME/.cache/mlbuild`, else `./.mlbuild-cache`
    /// when neither is set (a bare CI container).
    pub fn default_root() -> PathBuf {
        let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(xdg) = non_empty("XDG_CACHE_HOME") {
            return PathBuf::from(xdg).join("mlbuild");
        }
        if let Some(home) = non_empty("HOME") {
            return PathBuf::from(home).join(".cache").join("mlbuild");
        }
        PathBuf::from(".mlbuild-cache")
    }

    /// Opens the store at `root`, creating its layout and index if needed.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let root = std::path::absolute(root).map_err(StoreError::io("resolve", root))?;
        for dir in ["cas", "tmp", "locks"] {
            let path = root.join(dir);
            std::fs::create_dir_all(&path).map_err(StoreError::io("create directory", &path))?;
        }
        // Serialise index creation and migration across processes; SQLite's own locking
        // does not cover switching to WAL on a fresh file.
        let _open = lock::flock(&root.join("locks").join("index"), lock::Mode::Exclusive)?;
        let conn = db::open_index(&root.join("index.sqlite"))?;
        Ok(Store {
            root,
            conn: Mutex::new(conn),
            scratch: OnceLock::new(),
        })
    }

    /// Opens the store at `root` only if it exists and needs no migration, creating and
    /// changing nothing: for reading a build's state ahead while the command has not yet
    /// checked its input. `None` otherwise (then [`Store::open`] when it is really needed).
    pub fn open_existing(root: &Path) -> Option<Store> {
        let root = std::path::absolute(root).ok()?;
        if !["cas", "tmp", "locks"]
            .iter()
            .all(|d| root.join(d).is_dir())
        {
            return None;
        }
        let conn = db::open_existing_index(&root.join("index.sqlite"))?;
        Some(Store {
            root,
            conn: Mutex::new(conn),
            scratch: OnceLock::new(),
        })
    }

    /// The store's root directory (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with digest `d` lives: `<root>/cas/<2 hex>/<64 hex>`.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        // Built in one allocation: a no-op build looks up a blob per output.
        let hex = d.to_hex();
        let mut path = std::ffi::OsString::with_capacity(self.root.as_os_str().len() + 72);
        path.push(self.root.as_os_str());
        // As `Path::join` would: no doubled separator after a root that ends in one.
        let sep = !self.root.as_os_str().as_encoded_bytes().ends_with(b"/");
        path.push(if sep { "/cas/" } else { "cas/" });
        path.push(&hex[..2]);
        path.push("/");
        path.push(&hex);
        PathBuf::from(path)
    }

    /// Where this store handle keeps temp files and exec directories: its own directory
    /// under `<root>/tmp/`, on the same filesystem as `cas/` (so a finished temp file can
    /// be renamed into place atomically), created on first use and removed when the
    /// handle is dropped. A process that dies without dropping it leaves it to
    /// [`Store::reclaim_scratch`], which every build, `gc` and `fsck` run.
    pub fn tmp_dir(&self) -> PathBuf {
        self.scratch
            .get_or_init(|| scratch::Scratch::new(&self.root.join("tmp")))
            .dir()
            .to_path_buf()
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (statements are atomic,
        // open transactions roll back on drop), so poisoning carries no information.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn digest_from_sql(bytes: &[u8]) -> Option<Digest> {
    <[u8; 32]>::try_from(bytes).ok().map(Digest::from_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_creates_layout_and_is_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Store>();
        assert_send_sync::<FileDigestCache>();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s")).unwrap();
        for sub in ["cas", "tmp", "locks"] {
            assert!(store.root().join(sub).is_dir());
        }
        assert!(store.root().join("index.sqlite").is_file());
        let d = Digest::of_bytes(b"a");
        let hex = d.to_hex();
        assert_eq!(
            store.blob_path(&d),
            store.root().join("cas").join(&hex[..2]).join(&hex)
        );
        // However the root was written.
        let slash = Store::open(Path::new(&format!("{}/", store.root().display()))).unwrap();
        assert_eq!(
            slash.blob_path(&d),
            slash.root().join("cas").join(&hex[..2]).join(&hex)
        );
        drop(slash);
        // Reopening an existing store works.
        drop(store);
        Store::open(&dir.path().join("s")).unwrap();
        assert!(Store::open_existing(&dir.path().join("s")).is_some());
        assert!(Store::open_existing(&dir.path().join("new")).is_none());
        assert!(!dir.path().join("new").exists());
    }
}
