//! Build history: one row per mlbuild invocation and one per target it touched.
//!
//! Timings and hit/miss counts over time answer "why was this build slow" and feed
//! scheduling heuristics later. Main types: [`Invocation`], [`TargetRun`].
//!
//! Runs of cached targets, most of every build, are stored compactly: one zstd-compressed
//! JSON list per invocation in `cached_runs`, without their keys (nothing reads the key of
//! a reused result; the action cache has it). A no-op build of 10,000 targets used to add
//! 10,000 rows (~700 KB); it now adds one of ~20 KB. Other runs keep a row each in
//! `target_runs`, and so do cached runs recorded with their key: a named build records
//! every key, because gc keeps the results a named build used. Main readers:
//! [`Store::history`], [`Store::invocation`], [`Store::list_builds`].

use std::collections::BTreeMap;

use mlbuild_digest::Digest;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::{digest_from_sql, Store, StoreError};

/// One mlbuild command run against a workspace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invocation {
    /// The workspace root path.
    pub workspace: String,
    pub command: String,
    /// Unix seconds.
    pub started_at: i64,
    pub duration_ms: u64,
    pub success: bool,
    pub targets: Vec<TargetRun>,
}

/// What happened to one target during an invocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRun {
    pub label: String,
    /// The action key. A `cached` run given without one is stored compactly (see the
    /// module docs); one given with its key keeps it.
    pub key: Option<Digest>,
    /// `executed`, `cached`, `failed` or `skipped`.
    pub status: String,
    pub duration_ms: u64,
}

/// One recorded build as `mlbuild history` lists it: the invocation without its target
/// runs, with its name and how many of its targets ended each way (targets a failure
/// kept from running are not runs, and not recorded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildListing {
    pub id: i64,
    /// The name given with `mlbuild build --name`, if any.
    pub name: Option<String>,
    pub command: String,
    /// Unix seconds.
    pub started_at: i64,
    pub duration_ms: u64,
    pub success: bool,
    pub executed: u64,
    pub cached: u64,
    pub failed: u64,
}

/// A recorded invocation with its id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationRecord {
    pub id: i64,
    pub invocation: Invocation,
}

const CACHED: &str = "cached";

/// A 10,000-target build's list is ~150 KB of JSON; a damaged blob is never inflated
/// past this.
const MAX_CACHED_RUNS_JSON: usize = 256 << 20;

/// One cached run in `cached_runs`: its position among the invocation's runs, its
/// duration and its label.
#[derive(Serialize, Deserialize)]
struct CachedRun<'a>(u64, u64, #[serde(borrow)] std::borrow::Cow<'a, str>);

fn encode_cached_runs(runs: &[CachedRun<'_>]) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(runs).map_err(|source| StoreError::Encode {
        what: "cached target runs",
        source,
    })?;
    Ok(zstd::bulk::compress(&json, 3).expect("compressing to memory cannot fail"))
}

/// Every run of invocation `id`, in the order they were recorded.
pub(crate) fn runs_of(conn: &Connection, id: i64) -> Result<Vec<TargetRun>, StoreError> {
    let ctx = StoreError::index("reading history");
    let mut runs: Vec<(u64, TargetRun)> = conn
        .prepare_cached(
            "SELECT seq, label, key, status, duration_ms FROM target_runs
             WHERE invocation_id = ?1",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![id], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    TargetRun {
                        label: r.get(1)?,
                        key: digest_from_sql(&r.get::<_, Vec<u8>>(2)?),
                        status: r.get(3)?,
                        duration_ms: r.get::<_, i64>(4)?.max(0) as u64,
                    },
                ))
            })?
            .collect()
        })
        .map_err(ctx)?;
    let cached: Option<Vec<u8>> = conn
        .prepare_cached("SELECT runs FROM cached_runs WHERE invocation_id = ?1")
        .and_then(|mut stmt| stmt.query_row(params![id], |r| r.get(0)).optional())
        .map_err(StoreError::index("reading history"))?;
    if let Some(blob) = cached {
        for_each_cached_run(&blob, |seq, duration_ms, label| {
            runs.push((
                seq,
                TargetRun {
                    label: label.to_owned(),
                    key: None,
                    status: CACHED.to_owned(),
                    duration_ms,
                },
            ))
        })
        .map_err(StoreError::index("reading history"))?;
    }
    runs.sort_by_key(|(seq, _)| *seq);
    Ok(runs.into_iter().map(|(_, run)| run).collect())
}

/// Calls `f(seq, duration_ms, label)` for each cached run in a `cached_runs` blob,
/// without copying the labels; a damaged blob is a conversion error.
pub(crate) fn for_each_cached_run(
    blob: &[u8],
    mut f: impl FnMut(u64, u64, &str),
) -> Result<(), rusqlite::Error> {
    let bad = |e: Box<dyn std::error::Error + Send + Sync>| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, e)
    };
    let json = zstd::bulk::decompress(blob, MAX_CACHED_RUNS_JSON).map_err(|e| bad(Box::new(e)))?;
    let runs: Vec<CachedRun<'_>> = serde_json::from_slice(&json).map_err(|e| bad(Box::new(e)))?;
    for CachedRun(seq, ms, label) in &runs {
        f(*seq, *ms, label);
    }
    Ok(())
}

/// Target runs inserted by one statement (6 parameters each, well below SQLite's limit).
const RUNS_PER_INSERT: usize = 100;

/// `INSERT INTO target_runs ... VALUES (?, ?, ?, ?, ?, ?), ...` for `rows` rows.
fn insert_runs_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO target_runs (invocation_id, seq, label, key, status, duration_ms) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?)");
    }
    sql
}

impl Store {
    /// Records an invocation and its target runs in one transaction; returns its id.
    pub fn record_invocation(&self, inv: &Invocation) -> Result<i64, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::index("recording an invocation"))?;
        let id = {
            tx.prepare_cached(
                "INSERT INTO invocations (ws, command, started_at, duration_ms, success)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    inv.workspace,
                    inv.command,
                    inv.started_at,
                    inv.duration_ms as i64,
                    inv.success
                ])
            })
            .map_err(StoreError::index("recording an invocation"))?;
            let id = tx.last_insert_rowid();
            let (cached, others): (Vec<_>, Vec<_>) = inv
                .targets
                .iter()
                .enumerate()
                .partition(|(_, t)| t.status == CACHED && t.key.is_none());
            // Many rows per statement: executing one statement per row was most of the
            // cost of recording a large build.
            for chunk in others.chunks(RUNS_PER_INSERT) {
                let mut stmt = tx
                    .prepare_cached(&insert_runs_sql(chunk.len()))
                    .map_err(StoreError::index("recording an invocation"))?;
                let mut values: Vec<rusqlite::types::ToSqlOutput<'_>> =
                    Vec::with_capacity(chunk.len() * 6);
                for (seq, t) in chunk {
                    values.extend([
                        id.into(),
                        (*seq as i64).into(),
                        t.label.as_str().into(),
                        t.key.as_ref().map_or(&[][..], |k| k.as_bytes()).into(),
                        t.status.as_str().into(),
                        (t.duration_ms as i64).into(),
                    ]);
                }
                stmt.execute(rusqlite::params_from_iter(values))
                    .map_err(StoreError::index("recording an invocation"))?;
            }
            if !cached.is_empty() {
                let list: Vec<CachedRun<'_>> = cached
                    .iter()
                    .map(|(seq, t)| CachedRun(*seq as u64, t.duration_ms, t.label.as_str().into()))
                    .collect();
                tx.execute(
                    "INSERT INTO cached_runs (invocation_id, count, runs) VALUES (?1, ?2, ?3)",
                    params![id, list.len() as i64, encode_cached_runs(&list)?],
                )
                .map_err(StoreError::index("recording an invocation"))?;
            }
            id
        };
        tx.commit()
            .map_err(StoreError::index("recording an invocation"))?;
        Ok(id)
    }

    /// The latest `limit` invocations against workspace `ws`, newest first, with their
    /// target runs.
    pub fn history(&self, ws: &str, limit: usize) -> Result<Vec<InvocationRecord>, StoreError> {
        let mut invs = self.recent_invocations(ws, limit)?;
        let conn = self.conn();
        for rec in &mut invs {
            rec.invocation.targets = runs_of(&conn, rec.id)?;
        }
        Ok(invs)
    }

    /// [`Store::history`] without the target runs (`targets` is empty): for looking
    /// builds up, which must not cost a row per target of every build.
    pub fn recent_invocations(
        &self,
        ws: &str,
        limit: usize,
    ) -> Result<Vec<InvocationRecord>, StoreError> {
        let conn = self.conn();
        let ctx = StoreError::index;
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, ws, command, started_at, duration_ms, success FROM invocations
                 WHERE ws = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(ctx("reading history"))?;
        let rows = stmt
            .query_map(params![ws, limit.min(i64::MAX as usize) as i64], |r| {
                Ok(InvocationRecord {
                    id: r.get(0)?,
                    invocation: Invocation {
                        workspace: r.get(1)?,
                        command: r.get(2)?,
                        started_at: r.get(3)?,
                        duration_ms: r.get::<_, i64>(4)? as u64,
                        success: r.get(5)?,
                        targets: Vec::new(),
                    },
                })
            })
            .map_err(ctx("reading history"))?;
        rows.collect::<Result<_, _>>()
            .map_err(ctx("reading history"))
    }

    /// The latest `limit` builds of workspace `ws`, newest first, with their names and
    /// counts of target runs by status. Counted in the index (one range of the runs'
    /// primary key per build), never decoding the lists of cached runs.
    pub fn list_builds(&self, ws: &str, limit: usize) -> Result<Vec<BuildListing>, StoreError> {
        let conn = self.conn();
        let ctx = StoreError::index;
        let mut builds: Vec<BuildListing> = conn
            .prepare_cached(
                "SELECT i.id, i.command, i.started_at, i.duration_ms, i.success,
                        (SELECT n.name FROM invocation_names n
                         WHERE n.invocation_id = i.id ORDER BY n.name LIMIT 1),
                        (SELECT c.count FROM cached_runs c WHERE c.invocation_id = i.id)
                 FROM invocations i WHERE i.ws = ?1 ORDER BY i.id DESC LIMIT ?2",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![ws, limit.min(i64::MAX as usize) as i64], |r| {
                    Ok(BuildListing {
                        id: r.get(0)?,
                        command: r.get(1)?,
                        started_at: r.get(2)?,
                        duration_ms: r.get::<_, i64>(3)?.max(0) as u64,
                        success: r.get(4)?,
                        name: r.get(5)?,
                        cached: r.get::<_, Option<i64>>(6)?.unwrap_or(0).max(0) as u64,
                        executed: 0,
                        failed: 0,
                    })
                })?
                .collect()
            })
            .map_err(ctx("listing builds"))?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT status, count(*) FROM target_runs WHERE invocation_id = ?1
                 GROUP BY status",
            )
            .map_err(ctx("listing builds"))?;
        for build in &mut builds {
            let counts = stmt
                .query_map(params![build.id], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(ctx("listing builds"))?;
            for (status, n) in counts {
                match status.as_str() {
                    "executed" => build.executed += n,
                    CACHED => build.cached += n,
                    "failed" => build.failed += n,
                    _ => {}
                }
            }
        }
        Ok(builds)
    }

    /// How many target runs of each status (`executed`, `cached`, ...) the latest `limit`
    /// invocations of workspace `ws` had, counted in the index.
    pub fn run_counts(&self, ws: &str, limit: usize) -> Result<BTreeMap<String, u64>, StoreError> {
        let conn = self.conn();
        let limit = limit.min(i64::MAX as usize) as i64;
        let mut counts: BTreeMap<String, u64> = conn
            .prepare_cached(
                "SELECT t.status, count(*) FROM target_runs t
                 WHERE t.invocation_id IN
                     (SELECT id FROM invocations WHERE ws = ?1 ORDER BY id DESC LIMIT ?2)
                 GROUP BY t.status",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![ws, limit], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
                })?
                .collect()
            })
            .map_err(StoreError::index("counting target runs"))?;
        let cached: i64 = conn
            .prepare_cached(
                "SELECT coalesce(sum(c.count), 0) FROM cached_runs c
                 WHERE c.invocation_id IN
                     (SELECT id FROM invocations WHERE ws = ?1 ORDER BY id DESC LIMIT ?2)",
            )
            .and_then(|mut stmt| stmt.query_row(params![ws, limit], |r| r.get(0)))
            .map_err(StoreError::index("counting target runs"))?;
        if cached > 0 {
            *counts.entry(CACHED.to_owned()).or_default() += cached as u64;
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(label: &str, key: Option<&str>, status: &str, ms: u64) -> TargetRun {
        TargetRun {
            label: label.into(),
            key: key.map(|k| Digest::of_bytes(k.as_bytes())),
            status: status.into(),
            duration_ms: ms,
        }
    }

    /// Counts the rows of `table`.
    fn rows(store: &Store, table: &str) -> i64 {
        store
            .conn()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn invocations_round_trip_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let inv = |n: i64| Invocation {
            workspace: "/ws".into(),
            command: format!("build #{n}"),
            started_at: 1_700_000_000 + n,
            duration_ms: 5,
            success: n % 2 == 0,
            // Cached runs come back without their keys, in their recorded place.
            targets: vec![
                run("//:a", Some("a"), "executed", 3),
                run("//:b", None, "cached", 1),
                run("//:c", Some("c"), "failed", 2),
                run("//:d[x=\"\\n\"]", None, "cached", 0),
                run("//:e", Some("e"), "skipped", 0),
            ],
        };
        let id1 = store.record_invocation(&inv(1)).unwrap();
        let id2 = store.record_invocation(&inv(2)).unwrap();
        assert!(id2 > id1);
        let h = store.history("/ws", 10).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].id, id2);
        assert_eq!(h[0].invocation, inv(2));
        assert_eq!(h[1].invocation, inv(1));
        assert_eq!(store.history("/ws", 1).unwrap().len(), 1);
        assert_eq!(
            store.invocation("/ws", id1).unwrap().unwrap().invocation,
            inv(1)
        );
        let heads = store.recent_invocations("/ws", 10).unwrap();
        assert_eq!(heads.iter().map(|r| r.id).collect::<Vec<_>>(), [id2, id1]);
        assert!(heads.iter().all(|r| r.invocation.targets.is_empty()));
        let expected: BTreeMap<String, u64> = [
            ("cached", 4),
            ("executed", 2),
            ("failed", 2),
            ("skipped", 2),
        ]
        .map(|(s, n)| (s.to_owned(), n))
        .into();
        assert_eq!(store.run_counts("/ws", 10).unwrap(), expected);
        assert_eq!(store.run_counts("/ws", 1).unwrap()["cached"], 2);
        // Three rows per build; the cached runs are one compressed list.
        assert_eq!(rows(&store, "target_runs"), 6);
        assert_eq!(rows(&store, "cached_runs"), 2);

        // A cached run given with its key (a named build's) keeps it, in a row.
        let mut keyed = inv(4);
        keyed.targets[1] = run("//:b", Some("b"), "cached", 1);
        let id4 = store.record_invocation(&keyed).unwrap();
        let back = store.invocation("/ws", id4).unwrap().unwrap().invocation;
        assert_eq!(back, keyed);
        assert_eq!(rows(&store, "target_runs"), 10);
        store
            .conn()
            .execute("DELETE FROM invocations WHERE id = ?1", [id4])
            .unwrap();

        // A build that reuses everything (a no-op) adds no target rows at all.
        let mut big = inv(3);
        big.targets = (0..RUNS_PER_INSERT * 2 + 7)
            .map(|i| run(&format!("//:t{i}"), None, "cached", i as u64))
            .collect();
        let id3 = store.record_invocation(&big).unwrap();
        let h = store.history("/ws", 1).unwrap();
        assert_eq!(h[0].id, id3);
        assert_eq!(h[0].invocation, big);
        assert_eq!(rows(&store, "target_runs"), 6);
        assert!(store.history("/other", 10).unwrap().is_empty());

        // Runs recorded before the compact form (schema v5) read back as they were.
        store
            .conn()
            .execute(
                "INSERT INTO target_runs (invocation_id, seq, label, key, status, duration_ms)
                 VALUES (?1, 9, '//:old', ?2, 'cached', 4)",
                params![id3, Digest::of_bytes(b"old").as_bytes()],
            )
            .unwrap();
        let targets = store
            .history("/ws", 1)
            .unwrap()
            .remove(0)
            .invocation
            .targets;
        assert_eq!(targets[9], run("//:old", Some("old"), "cached", 4));
        assert_eq!(targets.len(), big.targets.len() + 1);
        assert_eq!(
            store.run_counts("/ws", 1).unwrap()["cached"],
            big.targets.len() as u64 + 1
        );
    }

    #[test]
    fn builds_are_listed_newest_first_with_names_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let record = |started_at: i64, success: bool, targets: Vec<TargetRun>| {
            store
                .record_invocation(&Invocation {
                    workspace: "/ws".into(),
                    command: "mlbuild build //...".into(),
                    started_at,
                    duration_ms: 1500,
                    success,
                    targets,
                })
                .unwrap()
        };
        let first = record(
            100,
            true,
            vec![
                run("//:a", Some("a"), "executed", 3),
                run("//:b", Some("b"), "executed", 3),
            ],
        );
        let second = record(
            200,
            false,
            vec![
                run("//:a", None, "cached", 0),
                // A cached run recorded with its key is a row, and counts the same.
                run("//:x", Some("x"), "cached", 0),
                run("//:b", Some("b"), "failed", 3),
            ],
        );
        store.name_invocation("/ws", first, "v1").unwrap();
        record(300, true, vec![]);
        store
            .record_invocation(&Invocation {
                workspace: "/other".into(),
                ..store.history("/ws", 1).unwrap().remove(0).invocation
            })
            .unwrap();

        let builds = store.list_builds("/ws", 10).unwrap();
        assert_eq!(builds.len(), 3);
        assert_eq!(builds[0].started_at, 300);
        assert_eq!(
            builds[1],
            BuildListing {
                id: second,
                name: None,
                command: "mlbuild build //...".into(),
                started_at: 200,
                duration_ms: 1500,
                success: false,
                executed: 0,
                cached: 2,
                failed: 1,
            }
        );
        assert_eq!(builds[2].id, first);
        assert_eq!(builds[2].name.as_deref(), Some("v1"));
        assert_eq!((builds[2].executed, builds[2].cached), (2, 0));
        assert_eq!(store.list_builds("/ws", 1).unwrap()[0].started_at, 300);
        assert!(store.list_builds("/nowhere", 10).unwrap().is_empty());
    }

    #[test]
    fn a_damaged_list_of_cached_runs_is_an_index_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store
            .record_invocation(&Invocation {
                workspace: "/ws".into(),
                command: "build".into(),
                started_at: 1,
                duration_ms: 1,
                success: true,
                targets: vec![run("//:a", None, "cached", 0)],
            })
            .unwrap();
        store
            .conn()
            .execute(
                "UPDATE cached_runs SET runs = x'00ff' WHERE invocation_id = ?1",
                [id],
            )
            .unwrap();
        let err = store.history("/ws", 1).unwrap_err();
        assert!(matches!(err, StoreError::Index { .. }), "{err}");
        assert!(store.target_stats("/ws", 0).is_err());
    }
}
