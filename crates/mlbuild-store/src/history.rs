//! Build history: one row per mlbuild invocation and one per target it touched.
//!
//! Timings and hit/miss counts over time answer "why was this build slow" and feed
//! scheduling heuristics later. Main types: [`Invocation`], [`TargetRun`].

use mlbuild_digest::Digest;
use rusqlite::{params, TransactionBehavior};
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
    pub key: Digest,
    /// `executed`, `cached`, `failed` or `skipped`.
    pub status: String,
    pub duration_ms: u64,
}

/// A recorded invocation with its id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationRecord {
    pub id: i64,
    pub invocation: Invocation,
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
            // Many rows per statement: a no-op build of 10,000 targets records 10,000
            // runs, and executing one statement per row was most of the cost.
            let mut seq = 0;
            for chunk in inv.targets.chunks(RUNS_PER_INSERT) {
                let mut stmt = tx
                    .prepare_cached(&insert_runs_sql(chunk.len()))
                    .map_err(StoreError::index("recording an invocation"))?;
                let mut values: Vec<rusqlite::types::ToSqlOutput<'_>> =
                    Vec::with_capacity(chunk.len() * 6);
                for t in chunk {
                    values.extend([
                        id.into(),
                        (seq as i64).into(),
                        t.label.as_str().into(),
                        t.key.as_bytes().as_slice().into(),
                        t.status.as_str().into(),
                        (t.duration_ms as i64).into(),
                    ]);
                    seq += 1;
                }
                stmt.execute(rusqlite::params_from_iter(values))
                    .map_err(StoreError::index("recording an invocation"))?;
            }
            id
        };
        tx.commit()
            .map_err(StoreError::index("recording an invocation"))?;
        Ok(id)
    }

    /// The latest `limit` invocations against workspace `ws`, newest first.
    pub fn history(&self, ws: &str, limit: usize) -> Result<Vec<InvocationRecord>, StoreError> {
        let conn = self.conn();
        let ctx = StoreError::index;
        let mut invs: Vec<InvocationRecord> = {
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
                .map_err(ctx("reading history"))?
        };
        let mut stmt = conn
            .prepare_cached(
                "SELECT label, key, status, duration_ms FROM target_runs
                 WHERE invocation_id = ?1 ORDER BY seq",
            )
            .map_err(ctx("reading history"))?;
        for rec in &mut invs {
            let rows = stmt
                .query_map(params![rec.id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .map_err(ctx("reading history"))?;
            for row in rows {
                let (label, key, status, duration_ms) = row.map_err(ctx("reading history"))?;
                let Some(key) = digest_from_sql(&key) else {
                    continue;
                };
                rec.invocation.targets.push(TargetRun {
                    label,
                    key,
                    status,
                    duration_ms: duration_ms as u64,
                });
            }
        }
        Ok(invs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            targets: vec![
                TargetRun {
                    label: "//:a".into(),
                    key: Digest::of_bytes(b"a"),
                    status: "executed".into(),
                    duration_ms: 3,
                },
                TargetRun {
                    label: "//:b".into(),
                    key: Digest::of_bytes(b"b"),
                    status: "cached".into(),
                    duration_ms: 0,
                },
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

        // More runs than one statement inserts keep their order.
        let mut big = inv(3);
        big.targets = (0..RUNS_PER_INSERT * 2 + 7)
            .map(|i| TargetRun {
                label: format!("//:t{i}"),
                key: Digest::of_bytes(format!("{i}").as_bytes()),
                status: "cached".into(),
                duration_ms: i as u64,
            })
            .collect();
        let id3 = store.record_invocation(&big).unwrap();
        let h = store.history("/ws", 1).unwrap();
        assert_eq!(h[0].id, id3);
        assert_eq!(h[0].invocation, big);
        assert!(store.history("/other", 10).unwrap().is_empty());
    }
}
