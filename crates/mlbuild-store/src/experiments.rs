//! What each build decided about its experiments: the verdict of every gate checked and the
//! variant each sweep selected, recorded per build next to its metrics.
//!
//! Metrics alone do not say which variant won (ties are broken by label) nor how a gate
//! against a baseline came out, so `mlbuild exp show` reads these instead of guessing.
//! Main types: [`GateRecord`], [`SelectionRecord`].

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::{MetricsRecord, Store, StoreError};

/// One gate of one target, as a build checked it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateRecord {
    pub label: String,
    /// The expression as written in `BUILD.toml`.
    pub gate: String,
    pub metric: String,
    pub op: String,
    /// The value compared against, baseline adjustment applied.
    pub threshold: f64,
    pub actual: f64,
    pub passed: bool,
}

/// The variant a sweep's selection picked in one build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectionRecord {
    /// The selection: the swept target's plain label.
    pub label: String,
    /// The winning variant's label.
    pub selected: String,
}

impl Store {
    /// Records the gate verdicts and sweep selections of invocation `invocation_id` in one
    /// transaction (nothing when both are empty).
    pub fn record_experiments(
        &self,
        invocation_id: i64,
        gates: &[GateRecord],
        selections: &[SelectionRecord],
    ) -> Result<(), StoreError> {
        if gates.is_empty() && selections.is_empty() {
            return Ok(());
        }
        let ctx = StoreError::index("recording gates and selections");
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ctx)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO gate_results
                     (invocation_id, label, gate, metric, op, threshold, actual, passed)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(StoreError::index("recording gates and selections"))?;
            for g in gates {
                stmt.execute(params![
                    invocation_id,
                    g.label,
                    g.gate,
                    g.metric,
                    g.op,
                    g.threshold,
                    g.actual,
                    g.passed
                ])
                .map_err(StoreError::index("recording gates and selections"))?;
            }
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO sweep_selections (invocation_id, label, selected)
                     VALUES (?1, ?2, ?3)",
                )
                .map_err(StoreError::index("recording gates and selections"))?;
            for s in selections {
                stmt.execute(params![invocation_id, s.label, s.selected])
                    .map_err(StoreError::index("recording gates and selections"))?;
            }
        }
        tx.commit()
            .map_err(StoreError::index("recording gates and selections"))
    }

    /// The gates invocation `invocation_id` checked on `label`, in the order written.
    pub fn gates_of(&self, invocation_id: i64, label: &str) -> Result<Vec<GateRecord>, StoreError> {
        let conn = self.conn();
        let ctx = StoreError::index;
        let mut stmt = conn
            .prepare_cached(
                "SELECT gate, metric, op, threshold, actual, passed FROM gate_results
                 WHERE invocation_id = ?1 AND label = ?2 ORDER BY rowid",
            )
            .map_err(ctx("reading gate results"))?;
        let rows = stmt
            .query_map(params![invocation_id, label], |r| {
                Ok(GateRecord {
                    label: label.to_owned(),
                    gate: r.get(0)?,
                    metric: r.get(1)?,
                    op: r.get(2)?,
                    threshold: r.get(3)?,
                    actual: r.get(4)?,
                    passed: r.get(5)?,
                })
            })
            .map_err(ctx("reading gate results"))?;
        rows.collect::<Result<_, _>>()
            .map_err(ctx("reading gate results"))
    }

    /// The variant the selection `label` picked in invocation `invocation_id`, if it ran.
    pub fn selection_of(
        &self,
        invocation_id: i64,
        label: &str,
    ) -> Result<Option<String>, StoreError> {
        self.conn()
            .query_row(
                "SELECT selected FROM sweep_selections WHERE invocation_id = ?1 AND label = ?2",
                params![invocation_id, label],
                |r| r.get(0),
            )
            .optional()
            .map_err(StoreError::index("reading sweep selections"))
    }

    /// The metrics `label` recorded in the latest `limit` builds of workspace `ws` that
    /// recorded any for it, newest first.
    pub fn metrics_history(
        &self,
        ws: &str,
        label: &str,
        limit: usize,
    ) -> Result<Vec<MetricsRecord>, StoreError> {
        let ids: Vec<(i64, i64)> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT i.id, i.started_at FROM invocations i
                     WHERE i.ws = ?1 AND EXISTS (SELECT 1 FROM target_metrics m
                                                 WHERE m.invocation_id = i.id AND m.label = ?2)
                     ORDER BY i.id DESC LIMIT ?3",
                )
                .map_err(StoreError::index("reading metrics"))?;
            let rows = stmt
                .query_map(
                    params![ws, label, limit.min(i64::MAX as usize) as i64],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(StoreError::index("reading metrics"))?;
            rows.collect::<Result<_, _>>()
                .map_err(StoreError::index("reading metrics"))?
        };
        let mut records = Vec::with_capacity(ids.len());
        for (id, _) in ids {
            if let Some(record) = self.metrics_of(id, label)? {
                records.push(record);
            }
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Invocation, MetricValues};

    fn build(store: &Store, n: i64) -> i64 {
        store
            .record_invocation(&Invocation {
                workspace: "/ws".into(),
                command: "build".into(),
                started_at: 1_700_000_000 + n,
                duration_ms: 1,
                success: true,
                targets: Vec::new(),
            })
            .unwrap()
    }

    #[test]
    fn gates_and_selections_round_trip_per_build() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (build(&store, 1), build(&store, 2));
        let gate = |gate: &str, passed| GateRecord {
            label: "//m:t".into(),
            gate: gate.into(),
            metric: "f1".into(),
            op: ">=".into(),
            threshold: 0.9,
            actual: 0.8,
            passed,
        };
        let pick = |v: &str| SelectionRecord {
            label: "//m:t".into(),
            selected: format!("//m:t[lr={v}]"),
        };
        store
            .record_experiments(
                a,
                &[gate("f1 >= 0.9", false), gate("f1 >= 0.5", true)],
                &[pick("0.1")],
            )
            .unwrap();
        store.record_experiments(b, &[], &[pick("0.2")]).unwrap();
        let gates = store.gates_of(a, "//m:t").unwrap();
        assert_eq!(gates, [gate("f1 >= 0.9", false), gate("f1 >= 0.5", true)]);
        assert!(store.gates_of(b, "//m:t").unwrap().is_empty());
        assert_eq!(
            store.selection_of(a, "//m:t").unwrap().as_deref(),
            Some("//m:t[lr=0.1]")
        );
        assert_eq!(
            store.selection_of(b, "//m:t").unwrap().as_deref(),
            Some("//m:t[lr=0.2]")
        );
        assert_eq!(store.selection_of(b, "//m:other").unwrap(), None);
    }

    #[test]
    fn metrics_history_is_newest_first_and_skips_builds_without() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ids: Vec<i64> = (0..4).map(|n| build(&store, n)).collect();
        for (i, id) in ids.iter().enumerate() {
            if i == 2 {
                continue;
            }
            let values = MetricValues::from([("f1".to_owned(), i as f64)]);
            store
                .record_metrics(*id, &[("//m:t".into(), values)])
                .unwrap();
        }
        let history = store.metrics_history("/ws", "//m:t", 2).unwrap();
        let got: Vec<(i64, f64)> = history
            .iter()
            .map(|r| (r.invocation_id, r.values["f1"]))
            .collect();
        assert_eq!(got, [(ids[3], 3.0), (ids[1], 1.0)]);
        assert!(store
            .metrics_history("/other", "//m:t", 9)
            .unwrap()
            .is_empty());
    }
}
