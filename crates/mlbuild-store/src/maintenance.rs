//! Garbage collection, consistency checks and statistics.
//!
//! A shared cache only grows, and disks and users corrupt files; gc bounds the store by
//! age and size without ever touching its roots (what a workspace's latest build uses,
//! and the builds someone named or compares against, with their history), and fsck
//! re-hashes every blob and drops whatever refers to a bad one, so the next build simply
//! reruns those actions. Main types: [`GcPolicy`], [`GcReport`], [`FsckReport`].

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use mlbuild_digest::{hash_file, Digest};
use rayon::prelude::*;
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::db::{self, Health, IndexContents};
use crate::lock::{self, Mode};
use crate::{digest_from_sql, unix_now, ActionResult, Store, StoreError};

/// Temp files and action lock files older than this are leftovers of dead processes.
const STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How far gc may shrink the store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcPolicy {
    /// Remove unrooted entries until the blobs take at most this many bytes.
    pub max_size: Option<u64>,
    /// Remove unrooted entries not used for this long.
    pub max_age: Option<Duration>,
    /// Builds to keep as roots besides the named ones, by invocation id: those the
    /// baselines of the workspace gc runs in name by id (`baseline = "build:42"`).
    pub keep_builds: Vec<i64>,
    /// Action keys to keep as roots besides the builds': those of the artifacts release
    /// channels hold or held.
    pub keep_keys: Vec<Digest>,
    /// Work out what would be removed and remove nothing.
    pub dry_run: bool,
}

/// What gc did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    pub removed_actions: u64,
    pub removed_blobs: u64,
    pub freed_bytes: u64,
    pub kept_blobs: u64,
    pub kept_bytes: u64,
    /// Bytes of blobs referenced by rooted (latest-build) entries, which gc never removes.
    pub rooted_bytes: u64,
    /// True when `max_size` could not be met because rooted blobs alone exceed it.
    pub over_max_size: bool,
    /// Stale temp and lock files removed.
    pub removed_temp_files: u64,
    /// Scratch directories of processes that died (killed builds), removed.
    pub reclaimed_scratch_dirs: u64,
    /// Build-history invocations (with their per-target rows) older than `max_age`.
    pub removed_invocations: u64,
    /// Nothing was removed: the `removed_*` counts and `freed_bytes` say what would be.
    pub dry_run: bool,
    /// The builds kept as roots, whatever their age: every named build of every workspace,
    /// and those in [`GcPolicy::keep_builds`]. Their history and the results of their
    /// targets (and the blobs those reference) stay.
    pub kept_builds: Vec<KeptBuild>,
}

/// A build gc keeps, with its history and the results it used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptBuild {
    /// The workspace root the build ran in.
    pub workspace: String,
    pub invocation_id: i64,
    /// Its name (`mlbuild build --name`); `None` for a build a baseline names by id.
    pub name: Option<String>,
    /// Unix seconds.
    pub started_at: i64,
}

/// A damaged index, as fsck found it, and what became of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexDamage {
    /// The index file that was checked (`<store>/index.sqlite`).
    pub path: PathBuf,
    /// What SQLite's integrity check reported (its first lines), or why the file could not
    /// be read as a database at all.
    pub problems: Vec<String>,
    /// What the damaged index still shows it held: what setting it aside loses.
    pub held: IndexContents,
    /// Where `repair` moved it (with its `-wal` and `-shm` files); `None` when fsck only
    /// reported it.
    pub moved_to: Option<PathBuf>,
}

/// What fsck found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsckReport {
    /// Blobs re-hashed.
    pub checked: u64,
    /// Blobs whose content did not match their name (now deleted).
    pub corrupt: Vec<Digest>,
    /// Action entries dropped because they referenced a missing or corrupt blob.
    pub removed_actions: u64,
    /// Workspace-state rows dropped along with those actions.
    pub removed_targets: u64,
    /// Files in `cas/` that were not blobs (now deleted).
    pub stray_files: u64,
    /// Scratch directories of processes that died (killed builds), removed.
    pub reclaimed_scratch_dirs: u64,
    /// Set when SQLite's integrity check found the index damaged.
    pub index: Option<IndexDamage>,
}

impl FsckReport {
    /// Whether fsck found damage: a corrupt blob or a damaged index (repaired or not).
    pub fn found_damage(&self) -> bool {
        !self.corrupt.is_empty() || self.index.is_some()
    }
}

/// Size of the store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    pub blobs: u64,
    pub blob_bytes: u64,
    pub actions: u64,
    /// Workspace-state rows (targets across all workspaces).
    pub targets: u64,
    pub file_digests: u64,
}

struct CasScan {
    /// Digest -> (path, size).
    blobs: HashMap<Digest, (PathBuf, u64)>,
    strays: Vec<PathBuf>,
}

struct ActionRow {
    key: Digest,
    result: Option<ActionResult>,
    last_used: i64,
}

impl ActionRow {
    fn blobs(&self) -> HashSet<Digest> {
        self.result
            .iter()
            .flat_map(|r| r.blobs())
            .collect::<HashSet<_>>()
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn remove_any(path: &Path) -> io::Result<()> {
    crate::remove_tree(path)
}

/// Lists the blobs and stray files under `<root>/cas`.
fn scan_cas(root: &Path) -> Result<CasScan, StoreError> {
    let cas = root.join("cas");
    let mut scan = CasScan {
        blobs: HashMap::new(),
        strays: Vec::new(),
    };
    for shard in fs::read_dir(&cas).map_err(StoreError::io("list", &cas))? {
        let shard = shard.map_err(StoreError::io("list", &cas))?;
        let shard_name = shard.file_name().to_string_lossy().into_owned();
        let is_dir = shard.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if !is_dir || !is_hex(&shard_name, 2) {
            scan.strays.push(shard.path());
            continue;
        }
        let shard_path = shard.path();
        for entry in fs::read_dir(&shard_path).map_err(StoreError::io("list", &shard_path))? {
            let entry = entry.map_err(StoreError::io("list", &shard_path))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry
                .metadata()
                .map_err(StoreError::io("stat", entry.path()))?;
            let digest = (meta.is_file() && is_hex(&name, 64) && name.starts_with(&shard_name))
                .then(|| name.parse::<Digest>().ok())
                .flatten();
            match digest {
                Some(d) => {
                    scan.blobs.insert(d, (entry.path(), meta.len()));
                }
                None => scan.strays.push(entry.path()),
            }
        }
    }
    Ok(scan)
}

/// Re-hashes every blob of the store at `root`, removing corrupt ones and stray files
/// (recorded in `report`); returns the blobs that remain. The caller holds the store
/// exclusively.
fn check_blobs(root: &Path, report: &mut FsckReport) -> Result<CasScan, StoreError> {
    // A linked tree may hold a link to a corrupt blob; builds link them again from the
    // blobs that survive.
    crate::cas::remove_store_dir(root, crate::TREES_DIR)?;
    let mut scan = scan_cas(root)?;
    for stray in &scan.strays {
        remove_any(stray).map_err(StoreError::io("remove", stray))?;
        report.stray_files += 1;
    }
    report.checked = scan.blobs.len() as u64;
    let mut corrupt: Vec<Digest> = scan
        .blobs
        .par_iter()
        .filter(|(d, (path, _))| !matches!(hash_file(path), Ok((actual, _)) if actual == **d))
        .map(|(d, _)| *d)
        .collect();
    corrupt.sort();
    for d in &corrupt {
        let (path, _) = scan.blobs.remove(d).expect("scanned");
        remove_any(&path).map_err(StoreError::io("remove", &path))?;
    }
    report.corrupt = corrupt;
    Ok(scan)
}

impl Store {
    fn action_rows(&self) -> Result<Vec<ActionRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT key, result, last_used FROM actions")
            .map_err(StoreError::index("listing actions"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(StoreError::index("listing actions"))?;
        let rows: Vec<_> = rows
            .collect::<Result<_, _>>()
            .map_err(StoreError::index("listing actions"))?;
        Ok(rows
            .into_par_iter()
            .filter_map(|(key, json, last_used)| {
                Some(ActionRow {
                    key: digest_from_sql(&key)?,
                    result: serde_json::from_str(&json).ok(),
                    last_used,
                })
            })
            .collect())
    }

    fn root_keys(&self) -> Result<HashSet<Digest>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT DISTINCT key FROM workspace_state")
            .map_err(StoreError::index("listing gc roots"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .map_err(StoreError::index("listing gc roots"))?;
        let mut keys = HashSet::new();
        for row in rows {
            if let Some(d) = digest_from_sql(&row.map_err(StoreError::index("listing gc roots"))?) {
                keys.insert(d);
            }
        }
        Ok(keys)
    }

    fn delete_actions(&self, keys: &[Digest], with_state: bool) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::index("removing actions"))?;
        let mut state_rows = 0;
        {
            let mut del = tx
                .prepare_cached("DELETE FROM actions WHERE key = ?1")
                .map_err(StoreError::index("removing actions"))?;
            let mut del_state = tx
                .prepare_cached("DELETE FROM workspace_state WHERE key = ?1")
                .map_err(StoreError::index("removing actions"))?;
            for key in keys {
                del.execute(params![key.as_bytes()])
                    .map_err(StoreError::index("removing actions"))?;
                if with_state {
                    state_rows += del_state
                        .execute(params![key.as_bytes()])
                        .map_err(StoreError::index("removing actions"))?
                        as u64;
                }
            }
        }
        tx.commit().map_err(StoreError::index("removing actions"))?;
        Ok(state_rows)
    }

    /// The builds gc keeps: every named build, and the invocations `extra` names (those
    /// that exist), each once, by workspace and id.
    fn kept_builds(&self, extra: &[i64]) -> Result<Vec<KeptBuild>, StoreError> {
        let ctx = StoreError::index;
        let conn = self.conn();
        let mut kept: Vec<KeptBuild> = conn
            .prepare_cached(
                "SELECT i.ws, i.id, n.name, i.started_at
                 FROM invocation_names n JOIN invocations i ON i.id = n.invocation_id",
            )
            .and_then(|mut stmt| {
                stmt.query_map([], |r| {
                    Ok(KeptBuild {
                        workspace: r.get(0)?,
                        invocation_id: r.get(1)?,
                        name: r.get(2)?,
                        started_at: r.get(3)?,
                    })
                })?
                .collect()
            })
            .map_err(ctx("listing kept builds"))?;
        let mut stmt = conn
            .prepare_cached("SELECT ws, started_at FROM invocations WHERE id = ?1")
            .map_err(ctx("listing kept builds"))?;
        for &id in extra {
            if kept.iter().any(|k| k.invocation_id == id) {
                continue;
            }
            let found = stmt
                .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(ctx("listing kept builds"))?;
            if let Some((workspace, started_at)) = found {
                kept.push(KeptBuild {
                    workspace,
                    invocation_id: id,
                    name: None,
                    started_at,
                });
            }
        }
        kept.sort_by(|a, b| {
            (&a.workspace, a.invocation_id, &a.name).cmp(&(&b.workspace, b.invocation_id, &b.name))
        });
        // A build with two names is kept once.
        kept.dedup_by_key(|k| k.invocation_id);
        Ok(kept)
    }

    /// The action keys recorded for the target runs of `builds`. A named build records
    /// every key, cached runs included (see `history.rs`); a build named before that kept
    /// only those of the targets it ran.
    fn keys_of_builds(&self, builds: &[KeptBuild]) -> Result<HashSet<Digest>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT key FROM target_runs WHERE invocation_id = ?1")
            .map_err(StoreError::index("listing gc roots"))?;
        let mut keys = HashSet::new();
        for build in builds {
            let rows = stmt
                .query_map(params![build.invocation_id], |r| r.get::<_, Vec<u8>>(0))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(StoreError::index("listing gc roots"))?;
            keys.extend(rows.iter().filter_map(|k| digest_from_sql(k)));
        }
        Ok(keys)
    }

    /// Removes (or, with `dry_run`, counts) files in `dir` older than [`STALE_AFTER`]
    /// that `keep` does not accept.
    fn remove_stale(&self, dir: &Path, keep: impl Fn(&str) -> bool, dry_run: bool) -> u64 {
        let Ok(entries) = fs::read_dir(dir) else {
            return 0;
        };
        let cutoff = SystemTime::now() - STALE_AFTER;
        let mut removed = 0;
        for entry in entries.flatten() {
            if keep(&entry.file_name().to_string_lossy()) {
                continue;
            }
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            if old && (dry_run || remove_any(&entry.path()).is_ok()) {
                removed += 1;
            }
        }
        removed
    }

    /// Shrinks the store per `policy`. Roots are the keys of every workspace's latest
    /// build and of every kept build (named, or in [`GcPolicy::keep_builds`]), and the
    /// blobs their results reference; they are never removed, even when `max_size`
    /// cannot be met (see [`GcReport::over_max_size`]), and `max_age` never prunes a kept
    /// build's history. Waits for running builds to finish (it takes the store lock
    /// exclusively), except for a dry run, which reads alongside them and changes
    /// nothing.
    pub fn gc(&self, policy: &GcPolicy) -> Result<GcReport, StoreError> {
        let dry_run = policy.dry_run;
        let _lock = if dry_run {
            self.build_lock_shared()?
        } else {
            self.store_lock_exclusive()?
        };
        let mut reclaimed_scratch_dirs = 0;
        if !dry_run {
            reclaimed_scratch_dirs = self.reclaim_scratch()?.dirs;
            // Linked environment trees hold links to blobs gc may remove; builds link
            // them again on demand. Download caches only save time, and grow without
            // bound.
            self.remove_trees()?;
            self.remove_tool_caches()?;
        }
        let mut report = GcReport {
            dry_run,
            kept_builds: self.kept_builds(&policy.keep_builds)?,
            reclaimed_scratch_dirs,
            ..GcReport::default()
        };
        let mut roots = self.root_keys()?;
        roots.extend(self.keys_of_builds(&report.kept_builds)?);
        roots.extend(policy.keep_keys.iter().copied());
        let mut actions = self.action_rows()?;
        let scan = scan_cas(&self.root)?;
        let size_of = |d: &Digest| scan.blobs.get(d).map_or(0, |(_, size)| *size);

        // Oldest first, so the size bound evicts least recently used entries.
        actions.sort_by_key(|a| a.last_used);
        let mut removed: HashSet<Digest> = HashSet::new();
        if let Some(age) = policy.max_age {
            let cutoff = unix_now().saturating_sub(age.as_secs().min(i64::MAX as u64) as i64);
            for a in &actions {
                if !roots.contains(&a.key) && a.last_used <= cutoff {
                    removed.insert(a.key);
                }
            }
        }

        let mut refs: HashMap<Digest, u32> = HashMap::new();
        for a in actions.iter().filter(|a| !removed.contains(&a.key)) {
            for b in a.blobs() {
                *refs.entry(b).or_default() += 1;
            }
        }
        let mut projected: u64 = refs.keys().map(size_of).sum();
        if let Some(max) = policy.max_size {
            for a in &actions {
                if projected <= max {
                    break;
                }
                if roots.contains(&a.key) || removed.contains(&a.key) {
                    continue;
                }
                removed.insert(a.key);
                for b in a.blobs() {
                    let count = refs.get_mut(&b).expect("counted above");
                    *count -= 1;
                    if *count == 0 {
                        refs.remove(&b);
                        projected -= size_of(&b);
                    }
                }
            }
            report.over_max_size = projected > max;
        }
        report.rooted_bytes = actions
            .iter()
            .filter(|a| roots.contains(&a.key))
            .flat_map(|a| a.blobs())
            .collect::<HashSet<_>>()
            .iter()
            .map(size_of)
            .sum();

        let removed: Vec<Digest> = removed.into_iter().collect();
        if !dry_run {
            self.delete_actions(&removed, false)?;
        }
        report.removed_actions = removed.len() as u64;

        for (digest, (path, size)) in &scan.blobs {
            if refs.contains_key(digest) {
                report.kept_blobs += 1;
                report.kept_bytes += size;
                continue;
            }
            if dry_run {
                report.removed_blobs += 1;
                report.freed_bytes += size;
                continue;
            }
            match fs::remove_file(path) {
                Ok(()) => {
                    report.removed_blobs += 1;
                    report.freed_bytes += size;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("remove", path)(e)),
            }
        }

        // History is kept as long as results are: every build adds rows (one per target
        // that ran, one list of those reused), so without a bound it would grow forever.
        // Target rows, lists, names, params and metrics cascade. Kept builds stay: a
        // name or a baseline is a promise to compare with that build later.
        if let Some(age) = policy.max_age {
            let cutoff = unix_now().saturating_sub(age.as_secs().min(i64::MAX as u64) as i64);
            let kept: Vec<i64> = report.kept_builds.iter().map(|k| k.invocation_id).collect();
            let kept = serde_json::to_string(&kept).expect("integers serialize");
            let condition = "started_at < ?1 AND id NOT IN (SELECT value FROM json_each(?2))";
            let conn = self.conn();
            report.removed_invocations = if dry_run {
                conn.query_row(
                    &format!("SELECT count(*) FROM invocations WHERE {condition}"),
                    params![cutoff, kept],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n.max(0) as u64)
            } else {
                conn.execute(
                    &format!("DELETE FROM invocations WHERE {condition}"),
                    params![cutoff, kept],
                )
                .map(|n| n as u64)
            }
            .map_err(StoreError::index("pruning build history"))?;
        }

        // Scratch directories are judged by their locks (above), never by their age: a
        // week-long training is not stale. Other entries are an older mlbuild's.
        report.removed_temp_files = self.remove_stale(
            &self.root.join("tmp"),
            crate::scratch::is_scratch_entry,
            dry_run,
        )
            // Action and output-tree lock files: safe to unlink while we hold the store
            // exclusively, since both are only taken under a shared build lock.
            + self.remove_stale(
                &self.root.join("locks"),
                |name| !is_hex(name, 64) && !name.starts_with(crate::lock::OUTPUTS_LOCK_PREFIX),
                dry_run,
            );
        Ok(report)
    }

    /// Checks the index (SQLite's integrity check) and re-hashes every blob; deletes
    /// corrupt blobs and stray files, then drops action entries (and workspace-state rows)
    /// that reference a missing or corrupt blob, so the next build reruns them. Waits for
    /// running builds to finish. A damaged index is only reported here (see
    /// [`FsckReport::index`]); [`Store::fsck_at`] can repair it.
    pub fn fsck(&self) -> Result<FsckReport, StoreError> {
        Store::fsck_at(&self.root, false)
    }

    /// [`Store::fsck`] of the store at `root`, which works when the store cannot be
    /// opened because its index is damaged. With `repair`, a damaged index is moved aside
    /// (see [`IndexDamage::moved_to`]) and an empty one started: the blobs are kept and
    /// checked, but what only the index knew is gone (cached results, each workspace's
    /// latest keys, build history and metrics, remembered file digests). None of it can be
    /// rebuilt from the blobs, which say nothing of the actions that made them, and rows
    /// read back from a damaged file could carry its damage; so the next build re-executes
    /// (or downloads from a remote cache) what it needs. Without `repair`, a damaged index
    /// is left as it is and only the blobs are checked.
    pub fn fsck_at(root: &Path, repair: bool) -> Result<FsckReport, StoreError> {
        let root = std::path::absolute(root).map_err(StoreError::io("resolve", root))?;
        for dir in ["cas", "tmp", "locks"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(StoreError::io("create directory", &path))?;
        }
        let _lock = lock::flock(&root.join("locks").join("gc"), Mode::Exclusive)?;
        let index = root.join("index.sqlite");
        let mut report = FsckReport::default();
        let store = match db::check_index(&index)? {
            Health::Absent | Health::Sound => Some(Store::open(&root)?),
            Health::Damaged(problems) => {
                let held = db::count_contents(&index);
                let moved_to = if repair {
                    Some(db::move_aside(&root, &index)?)
                } else {
                    None
                };
                report.index = Some(IndexDamage {
                    path: index.clone(),
                    problems,
                    held,
                    moved_to,
                });
                if repair {
                    Some(Store::open(&root)?)
                } else {
                    None
                }
            }
        };
        if let Some(store) = &store {
            // Scratch of builds that died (killed, crashed); a live build's is kept.
            report.reclaimed_scratch_dirs = store.reclaim_scratch()?.dirs;
        }
        let scan = check_blobs(&root, &mut report)?;
        let Some(store) = store else {
            return Ok(report);
        };
        let broken: Vec<Digest> = store
            .action_rows()?
            .into_iter()
            .filter(|a| match &a.result {
                None => true,
                Some(r) => r.blobs().any(|b| !scan.blobs.contains_key(&b)),
            })
            .map(|a| a.key)
            .collect();
        report.removed_targets = store.delete_actions(&broken, true)?;
        report.removed_actions = broken.len() as u64;
        Ok(report)
    }

    /// How big the store is.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let scan = scan_cas(&self.root)?;
        let count = |sql: &str| -> Result<u64, StoreError> {
            let conn = self.conn();
            conn.query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(StoreError::index("counting entries"))
        };
        Ok(StoreStats {
            blobs: scan.blobs.len() as u64,
            blob_bytes: scan.blobs.values().map(|(_, s)| s).sum(),
            actions: count("SELECT COUNT(*) FROM actions")?,
            targets: count("SELECT COUNT(*) FROM workspace_state")?,
            file_digests: count("SELECT COUNT(*) FROM file_digests")?,
        })
    }
}
