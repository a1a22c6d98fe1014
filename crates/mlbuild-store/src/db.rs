//! Opening the SQLite index and migrating its schema.
//!
//! Every mlbuild process on a machine shares one index, so opening must be safe to race:
//! schema changes run under a file lock and inside an immediate transaction, and the
//! version lives in `PRAGMA user_version` so older binaries refuse newer indexes.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::StoreError;

/// The schema version this build writes; migrations bring older indexes up to it.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // v0 -> v1: the initial schema. Digests are stored as 32-byte blobs: half the size of
    // hex, and comparisons are memcmp.
    r#"
    CREATE TABLE actions (
        key        BLOB PRIMARY KEY,
        result     TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        last_used  INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE workspace_state (
        ws         TEXT NOT NULL,
        label      TEXT NOT NULL,
        key        BLOB NOT NULL,
        preimage   TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (ws, label)
    ) WITHOUT ROWID;
    CREATE INDEX workspace_state_key ON workspace_state (key);

    CREATE TABLE file_digests (
        path      BLOB PRIMARY KEY,
        dev       INTEGER NOT NULL,
        ino       INTEGER NOT NULL,
        size      INTEGER NOT NULL,
        mtime_ns  INTEGER NOT NULL,
        ctime_ns  INTEGER NOT NULL,
        mode      INTEGER NOT NULL,
        digest    BLOB NOT NULL,
        hashed_at INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE invocations (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        ws          TEXT NOT NULL,
        command     TEXT NOT NULL,
        started_at  INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        success     INTEGER NOT NULL
    );
    CREATE INDEX invocations_ws ON invocations (ws, id);

    CREATE TABLE target_runs (
        invocation_id INTEGER NOT NULL REFERENCES invocations (id) ON DELETE CASCADE,
        seq           INTEGER NOT NULL,
        label         TEXT NOT NULL,
        key           BLOB NOT NULL,
        status        TEXT NOT NULL,
        duration_ms   INTEGER NOT NULL,
        PRIMARY KEY (invocation_id, seq)
    ) WITHOUT ROWID;
    "#,
    // v1 -> v2: metric values per build and target, for gates against a baseline build
    // and `mlbuild metrics`. Deleted with their invocation when gc prunes history.
    r#"
    CREATE TABLE target_metrics (
        invocation_id INTEGER NOT NULL REFERENCES invocations (id) ON DELETE CASCADE,
        label         TEXT NOT NULL,
        metric        TEXT NOT NULL,
        value         REAL NOT NULL,
        PRIMARY KEY (invocation_id, label, metric)
    ) WITHOUT ROWID;
    CREATE INDEX target_metrics_label ON target_metrics (label, invocation_id);
    "#,
    // v2 -> v3: build names (`mlbuild build --name`) and the params each build's targets
    // resolved to, for `mlbuild params diff`. A build's params are one JSON document
    // stored once per distinct content (most builds repeat the previous one's params), so
    // history grows by a row per build, not per target.
    r#"
    CREATE TABLE invocation_names (
        ws            TEXT NOT NULL,
        name          TEXT NOT NULL,
        invocation_id INTEGER NOT NULL REFERENCES invocations (id) ON DELETE CASCADE,
        PRIMARY KEY (ws, name)
    ) WITHOUT ROWID;

    CREATE TABLE params_sets (
        digest BLOB PRIMARY KEY,
        json   TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE invocation_params (
        invocation_id INTEGER PRIMARY KEY REFERENCES invocations (id) ON DELETE CASCADE,
        digest        BLOB NOT NULL
    );
    CREATE INDEX invocation_params_digest ON invocation_params (digest);
    "#,
    // v3 -> v4: a covering index for loading a workspace's latest keys. Without it, that
    // query reads every row's key preimage too (a few KiB each), a third of the time a
    // 10,000-target no-op build spends reading the index.
    r#"
    CREATE INDEX IF NOT EXISTS workspace_state_keys ON workspace_state (ws, label, key);
    "#,
    // v4 -> v5: each remembered file digest belongs to the workspace the file is under
    // ('' for none), so a build loads only its own and the shared ones. Existing rows
    // go to the innermost workspace known to the store that contains them.
    r#"
    ALTER TABLE file_digests ADD COLUMN ws TEXT NOT NULL DEFAULT '';
    UPDATE file_digests SET ws = COALESCE((
        SELECT s.ws FROM (SELECT DISTINCT ws FROM workspace_state) s
        WHERE substr(file_digests.path, 1, length(CAST(s.ws AS BLOB)) + 1)
            = CAST(s.ws || '/' AS BLOB)
        ORDER BY length(CAST(s.ws AS BLOB)) DESC LIMIT 1), '');
    CREATE INDEX file_digests_ws ON file_digests (ws);
    "#,
    // v5 -> v6: the runs of cached targets, one compressed list per invocation instead of
    // a row per target (see `history.rs`). Rows written before stay readable.
    r#"
    CREATE TABLE cached_runs (
        invocation_id INTEGER PRIMARY KEY REFERENCES invocations (id) ON DELETE CASCADE,
        count         INTEGER NOT NULL,
        runs          BLOB NOT NULL
    );
    "#,
    // v6 -> v7: each build's gate verdicts and sweep selections (see `experiments.rs`),
    // for `mlbuild exp show`. A gate's rowid keeps the order gates are written in.
    r#"
    CREATE TABLE gate_results (
        invocation_id INTEGER NOT NULL REFERENCES invocations (id) ON DELETE CASCADE,
        label         TEXT NOT NULL,
        gate          TEXT NOT NULL,
        metric        TEXT NOT NULL,
        op            TEXT NOT NULL,
        threshold     REAL NOT NULL,
        actual        REAL NOT NULL,
        passed        INTEGER NOT NULL,
        UNIQUE (invocation_id, label, gate)
    );
    CREATE TABLE sweep_selections (
        invocation_id INTEGER NOT NULL REFERENCES invocations (id) ON DELETE CASCADE,
        label         TEXT NOT NULL,
        selected      TEXT NOT NULL,
        PRIMARY KEY (invocation_id, label)
    ) WITHOUT ROWID;
    "#,
];

/// Opens (creating if needed) and migrates the index at `path`.
///
/// The caller holds the store's open lock, so only one process migrates at a time.
pub(crate) fn open_index(path: &Path) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path).map_err(StoreError::index("opening the index"))?;
    // Builds from several processes share the index: wait for writers rather than fail.
    conn.busy_timeout(Duration::from_secs(60))
        .map_err(StoreError::index("configuring the index"))?;
    // WAL lets readers (a no-op build) proceed while another process writes; NORMAL
    // synchronous is durable against process crashes, which is what a cache needs. A large
    // page cache and mmap keep a 10,000-target no-op build's single query off read(2).
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;
         PRAGMA cache_size = -65536;
         PRAGMA mmap_size = 268435456;
         PRAGMA temp_store = MEMORY;",
    )
    .map_err(StoreError::index("configuring the index"))?;
    conn.set_prepared_statement_cache_capacity(64);
    skip_checkpoint_on_close(&conn).map_err(StoreError::index("configuring the index"))?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Leaves checkpointing to SQLite's automatic checkpoint (every 1,000 WAL pages, during a
/// commit) instead of also running one when the connection closes. A build closes the
/// index as its last act, and checkpointing the history rows it just wrote there cost a
/// 10,000-target no-op build ~4 ms of its ~150; the WAL stays bounded all the same, and
/// committed data is as durable either way.
fn skip_checkpoint_on_close(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .map(|_| ())
}

/// Opens the index at `path` only if it exists at exactly this build's schema version:
/// for reading ahead, which must never create or migrate anything (the command it works
/// for may still fail first).
pub(crate) fn open_existing_index(path: &Path) -> Option<Connection> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
        | rusqlite::OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).ok()?;
    conn.busy_timeout(Duration::from_secs(60)).ok()?;
    if user_version(&conn).ok()? != SCHEMA_VERSION {
        return None;
    }
    // As `open_index`; the index is in WAL mode already, so nothing is written.
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;
         PRAGMA cache_size = -65536;
         PRAGMA mmap_size = 268435456;
         PRAGMA temp_store = MEMORY;",
    )
    .ok()?;
    if conn
        .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
        .ok()?
        != "wal"
    {
        return None;
    }
    conn.set_prepared_statement_cache_capacity(64);
    skip_checkpoint_on_close(&conn).ok()?;
    Some(conn)
}

/// Whether SQLite says the index file is malformed or not a database at all: damage that
/// retrying cannot fix (unlike a busy, locked, read-only or full index).
pub(crate) fn is_malformed(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// What SQLite's integrity check says about an index file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Health {
    /// There is no index yet.
    Absent,
    Sound,
    /// What the check reported (at most [`MAX_PROBLEMS`] lines), or why the file could
    /// not be read as a database at all.
    Damaged(Vec<String>),
}

/// How many problems the integrity check reports before it stops.
const MAX_PROBLEMS: u32 = 20;

/// Opens an index that may be damaged, for reading only: no migration, no checkpoint on
/// close (that would write into the damaged file before it is set aside), no writes.
fn open_for_inspection(path: &Path) -> rusqlite::Result<Connection> {
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(60))?;
    skip_checkpoint_on_close(&conn)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

/// Runs SQLite's integrity check on the index at `path`, which need not even be a
/// database. A read failure of the file itself (an I/O error) counts as damage; a busy
/// or unopenable index is an error, not damage: moving it aside would not help.
pub(crate) fn check_index(path: &Path) -> Result<Health, StoreError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Health::Absent),
        Err(e) => return Err(StoreError::io("stat", path)(e)),
        Ok(_) => {}
    }
    let damage = |e: &rusqlite::Error| {
        is_malformed(e) || e.sqlite_error_code() == Some(rusqlite::ErrorCode::SystemIoFailure)
    };
    let checked = open_for_inspection(path).and_then(|conn| {
        let mut stmt = conn.prepare(&format!("PRAGMA integrity_check({MAX_PROBLEMS})"))?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect::<rusqlite::Result<Vec<String>>>()
    });
    match checked {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => Ok(Health::Sound),
        Ok(rows) => Ok(Health::Damaged(rows)),
        Err(e) if damage(&e) => Ok(Health::Damaged(vec![e.to_string()])),
        Err(e) => Err(StoreError::Index {
            context: "checking the index",
            source: e,
        }),
    }
}

/// How much a (damaged) index held, table by table, where it can still be counted: what
/// setting it aside loses.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IndexContents {
    /// Action-cache entries.
    pub actions: Option<u64>,
    /// Each workspace's latest key per target.
    pub targets: Option<u64>,
    /// Builds in the history (invocations).
    pub builds: Option<u64>,
    /// Remembered file digests and output links.
    pub file_digests: Option<u64>,
}

pub(crate) fn count_contents(path: &Path) -> IndexContents {
    let Ok(conn) = open_for_inspection(path) else {
        return IndexContents::default();
    };
    let count = |table: &str| {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| {
            r.get::<_, i64>(0)
        })
        .ok()
        .map(|n| n as u64)
    };
    IndexContents {
        actions: count("actions"),
        targets: count("workspace_state"),
        builds: count("invocations"),
        file_digests: count("file_digests"),
    }
}

/// Renames the index at `path` (with its `-wal` and `-shm` files, so the copy still opens
/// with what was committed to its log) to `<name>.damaged-<unix time>`, and returns the
/// new path. The caller holds the store exclusively; this takes the index's open lock so
/// no process is creating or migrating it meanwhile.
pub(crate) fn move_aside(root: &Path, path: &Path) -> Result<std::path::PathBuf, StoreError> {
    let _open = crate::lock::flock(
        &root.join("locks").join("index"),
        crate::lock::Mode::Exclusive,
    )?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stamp = crate::unix_now();
    let mut n = 0;
    let moved = loop {
        let suffix = if n == 0 {
            format!("{name}.damaged-{stamp}")
        } else {
            format!("{name}.damaged-{stamp}-{n}")
        };
        let candidate = path.with_file_name(suffix);
        if std::fs::symlink_metadata(&candidate).is_err() {
            break candidate;
        }
        n += 1;
    };
    for ext in ["-wal", "-shm"] {
        let mut from = path.as_os_str().to_owned();
        from.push(ext);
        let mut to = moved.as_os_str().to_owned();
        to.push(ext);
        match std::fs::rename(&from, &to) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(StoreError::io("move aside", std::path::PathBuf::from(from))(e))
            }
            _ => {}
        }
    }
    std::fs::rename(path, &moved).map_err(StoreError::io("move aside", path))?;
    Ok(moved)
}

fn user_version(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(StoreError::index("reading the schema version"))
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let current = user_version(conn)?;
    if current == SCHEMA_VERSION {
        return Ok(());
    }
    if current > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(StoreError::index("migrating the schema"))?;
    // Re-read inside the write lock: another process may have migrated meanwhile.
    let current = user_version(&tx)?;
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql)
            .map_err(StoreError::index("migrating the schema"))?;
        tx.pragma_update(None, "user_version", from as i64 + 1)
            .map_err(StoreError::index("migrating the schema"))?;
    }
    tx.commit()
        .map_err(StoreError::index("migrating the schema"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_rejects_newer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        drop(open_index(&path).unwrap());
        let conn = open_index(&path).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
        assert!(open_existing_index(&path).is_some());
        assert!(open_existing_index(&dir.path().join("missing.sqlite")).is_none());
        assert!(!dir.path().join("missing.sqlite").exists());
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        assert!(open_existing_index(&path).is_none(), "newer schema");
        let err = open_index(&path).unwrap_err();
        assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
    }

    #[test]
    fn v5_gives_each_file_digest_the_innermost_workspace_containing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let mut conn = Connection::open(&path).unwrap();
        for (from, sql) in MIGRATIONS.iter().enumerate().take(4) {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", from as i64 + 1)
                .unwrap();
        }
        for ws in ["/w", "/w/inner", "/wx"] {
            conn.execute(
                "INSERT INTO workspace_state (ws, label, key, preimage, updated_at)
                 VALUES (?1, '//:t', x'00', '{}', 0)",
                [ws],
            )
            .unwrap();
        }
        for file in [
            "/w/a.txt",
            "/w/inner/b.txt",
            "/wx/c.txt",
            "/w",
            "/usr/bin/sh",
        ] {
            conn.execute(
                "INSERT INTO file_digests
                 (path, dev, ino, size, mtime_ns, ctime_ns, mode, digest, hashed_at)
                 VALUES (?1, 0, 0, 0, 0, 0, 0, x'00', 0)",
                [file.as_bytes()],
            )
            .unwrap();
        }
        migrate(&mut conn, &path).unwrap();
        let scoped: Vec<(Vec<u8>, String)> = conn
            .prepare("SELECT path, ws FROM file_digests ORDER BY path")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let scoped: Vec<(&str, &str)> = scoped
            .iter()
            .map(|(p, w)| (std::str::from_utf8(p).unwrap(), w.as_str()))
            .collect();
        assert_eq!(
            scoped,
            [
                ("/usr/bin/sh", ""),
                ("/w", ""),
                ("/w/a.txt", "/w"),
                ("/w/inner/b.txt", "/w/inner"),
                ("/wx/c.txt", "/wx"),
            ]
        );
    }
}
