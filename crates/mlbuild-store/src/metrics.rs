//! Metrics in the build history: the model metrics each build recorded per target, and
//! pipeline statistics (runs, durations, hit and success rates) over the target runs.
//!
//! Metric values are kept per invocation, not per action key, because gates compare a
//! build against an earlier *build* (a named release, the previous run), and a cached
//! target reports the same metrics again in every build it is part of. Main types:
//! [`MetricsRecord`], [`TargetStats`].

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::{Store, StoreError};

/// Metric name (dotted for nested JSON keys) to value.
pub type MetricValues = BTreeMap<String, f64>;

/// The metrics one invocation recorded for one target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsRecord {
    pub invocation_id: i64,
    /// Unix seconds when the invocation started.
    pub started_at: i64,
    pub label: String,
    pub values: MetricValues,
}

/// Pipeline statistics of one target over a window of build history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetStats {
    pub label: String,
    /// Recorded runs: executed, cached or failed (targets skipped because a dependency
    /// failed are not runs).
    pub runs: u64,
    pub executed: u64,
    pub cached: u64,
    pub failed: u64,
    /// Median over all runs (what the target costs a build, cache hits included).
    pub median_ms: u64,
    /// Median over executed runs only (what running its command costs), if any ran.
    pub median_executed_ms: Option<u64>,
    /// `cached / runs`.
    pub cache_hit_rate: f64,
    /// `(runs - failed) / runs`.
    pub success_rate: f64,
    pub last_failure: Option<LastFailure>,
}

/// When a target last failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastFailure {
    pub invocation_id: i64,
    /// Unix seconds when that invocation started.
    pub at: i64,
}

impl Store {
    /// Records the metrics of each target of invocation `invocation_id` (from
    /// [`Store::record_invocation`]) in one transaction.
    pub fn record_metrics(
        &self,
        invocation_id: i64,
        metrics: &[(String, MetricValues)],
    ) -> Result<(), StoreError> {
        if metrics.is_empty() {
            return Ok(());
        }
        let ctx = StoreError::index;
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ctx("recording metrics"))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO target_metrics (invocation_id, label, metric, value)
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(ctx("recording metrics"))?;
            for (label, values) in metrics {
                for (metric, value) in values {
                    stmt.execute(params![invocation_id, label, metric, value])
                        .map_err(ctx("recording metrics"))?;
                }
            }
        }
        tx.commit().map_err(ctx("recording metrics"))
    }

    /// The metrics `label` recorded in invocation `invocation_id`, if it recorded any.
    pub fn metrics_of(
        &self,
        invocation_id: i64,
        label: &str,
    ) -> Result<Option<MetricsRecord>, StoreError> {
        let started_at: Option<i64> = self
            .conn()
            .query_row(
                "SELECT started_at FROM invocations WHERE id = ?1",
                params![invocation_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(StoreError::index("reading metrics"))?;
        let Some(started_at) = started_at else {
            return Ok(None);
        };
        let values = self.metric_values(invocation_id, label)?;
        Ok((!values.is_empty()).then(|| MetricsRecord {
            invocation_id,
            started_at,
            label: label.to_owned(),
            values,
        }))
    }

    /// The newest metrics of `label` in workspace `ws`, recorded by an invocation older
    /// than `before` when given (so "the previous build" is `before = latest.id`).
    pub fn latest_metrics(
        &self,
        ws: &str,
        label: &str,
        before: Option<i64>,
    ) -> Result<Option<MetricsRecord>, StoreError> {
        let found: Option<(i64, i64)> = self
            .conn()
            .query_row(
                "SELECT i.id, i.started_at FROM invocations i
                 WHERE i.ws = ?1 AND i.id < ?3
                   AND EXISTS (SELECT 1 FROM target_metrics m
                               WHERE m.invocation_id = i.id AND m.label = ?2)
                 ORDER BY i.id DESC LIMIT 1",
                params![ws, label, before.unwrap_or(i64::MAX)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(StoreError::index("reading metrics"))?;
        let Some((invocation_id, started_at)) = found else {
            return Ok(None);
        };
        Ok(Some(MetricsRecord {
            invocation_id,
            started_at,
            label: label.to_owned(),
            values: self.metric_values(invocation_id, label)?,
        }))
    }

    /// Every label with recorded metrics in workspace `ws`, sorted.
    pub fn labels_with_metrics(&self, ws: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let ctx = StoreError::index;
        let mut stmt = conn
            .prepare_cached(
                "SELECT DISTINCT m.label FROM target_metrics m
                 JOIN invocations i ON i.id = m.invocation_id
                 WHERE i.ws = ?1 ORDER BY m.label",
            )
            .map_err(ctx("reading metrics"))?;
        let rows = stmt
            .query_map(params![ws], |r| r.get(0))
            .map_err(ctx("reading metrics"))?;
        rows.collect::<Result<_, _>>()
            .map_err(ctx("reading metrics"))
    }

    fn metric_values(&self, invocation_id: i64, label: &str) -> Result<MetricValues, StoreError> {
        let conn = self.conn();
        let ctx = StoreError::index;
        let mut stmt = conn
            .prepare_cached(
                "SELECT metric, value FROM target_metrics
                 WHERE invocation_id = ?1 AND label = ?2",
            )
            .map_err(ctx("reading metrics"))?;
        let rows = stmt
            .query_map(params![invocation_id, label], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?))
            })
            .map_err(ctx("reading metrics"))?;
        rows.collect::<Result<_, _>>()
            .map_err(ctx("reading metrics"))
    }

    /// Per-target statistics of workspace `ws` over invocations started at or after
    /// `since` (Unix seconds), sorted by label.
    pub fn target_stats(&self, ws: &str, since: i64) -> Result<Vec<TargetStats>, StoreError> {
        struct Row {
            status: String,
            ms: u64,
            invocation_id: i64,
            at: i64,
        }
        let mut by_label: BTreeMap<String, Vec<Row>> = BTreeMap::new();
        {
            let conn = self.conn();
            let ctx = StoreError::index;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT t.label, t.status, t.duration_ms, i.id, i.started_at
                     FROM target_runs t JOIN invocations i ON i.id = t.invocation_id
                     WHERE i.ws = ?1 AND i.started_at >= ?2
                     ORDER BY i.id",
                )
                .map_err(ctx("reading build history"))?;
            let rows = stmt
                .query_map(params![ws, since], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        Row {
                            status: r.get(1)?,
                            ms: r.get::<_, i64>(2)?.max(0) as u64,
                            invocation_id: r.get(3)?,
                            at: r.get(4)?,
                        },
                    ))
                })
                .map_err(ctx("reading build history"))?;
            for row in rows {
                let (label, row) = row.map_err(ctx("reading build history"))?;
                by_label.entry(label).or_default().push(row);
            }
            // Cached runs are stored compactly, one list per invocation.
            let mut stmt = conn
                .prepare_cached(
                    "SELECT c.runs, i.id, i.started_at
                     FROM cached_runs c JOIN invocations i ON i.id = c.invocation_id
                     WHERE i.ws = ?1 AND i.started_at >= ?2",
                )
                .map_err(ctx("reading build history"))?;
            let lists = stmt
                .query_map(params![ws, since], |r| {
                    let runs = crate::history::decode_cached_runs(&r.get::<_, Vec<u8>>(0)?)?;
                    Ok((runs, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                })
                .map_err(ctx("reading build history"))?;
            for list in lists {
                let (runs, invocation_id, at) = list.map_err(ctx("reading build history"))?;
                for crate::history::CachedRun(_, ms, label) in runs {
                    by_label.entry(label.into_owned()).or_default().push(Row {
                        status: "cached".to_owned(),
                        ms,
                        invocation_id,
                        at,
                    });
                }
            }
        }
        // Two sources: put each target's runs back in build order.
        for rows in by_label.values_mut() {
            rows.sort_by_key(|r| r.invocation_id);
        }
        Ok(by_label
            .into_iter()
            .filter_map(|(label, rows)| {
                let rows: Vec<Row> = rows
                    .into_iter()
                    .filter(|r| matches!(r.status.as_str(), "executed" | "cached" | "failed"))
                    .collect();
                let runs = rows.len() as u64;
                if runs == 0 {
                    return None;
                }
                let count = |s: &str| rows.iter().filter(|r| r.status == s).count() as u64;
                let (executed, cached, failed) =
                    (count("executed"), count("cached"), count("failed"));
                let all: Vec<u64> = rows.iter().map(|r| r.ms).collect();
                let ran: Vec<u64> = rows
                    .iter()
                    .filter(|r| r.status == "executed")
                    .map(|r| r.ms)
                    .collect();
                let last_failure =
                    rows.iter()
                        .rev()
                        .find(|r| r.status == "failed")
                        .map(|r| LastFailure {
                            invocation_id: r.invocation_id,
                            at: r.at,
                        });
                Some(TargetStats {
                    label,
                    runs,
                    executed,
                    cached,
                    failed,
                    median_ms: median(all).unwrap_or(0),
                    median_executed_ms: median(ran),
                    cache_hit_rate: cached as f64 / runs as f64,
                    success_rate: (runs - failed) as f64 / runs as f64,
                    last_failure,
                })
            })
            .collect())
    }
}

/// The median; the mean of the two middle values for an even count.
fn median(mut values: Vec<u64>) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Digest, Invocation, TargetRun};

    fn inv(started_at: i64, runs: &[(&str, &str, u64)]) -> Invocation {
        Invocation {
            workspace: "/ws".into(),
            command: "build".into(),
            started_at,
            duration_ms: 1,
            success: runs.iter().all(|r| r.1 != "failed"),
            targets: runs
                .iter()
                .map(|(label, status, ms)| TargetRun {
                    label: (*label).into(),
                    key: Some(Digest::of_bytes(label.as_bytes())),
                    status: (*status).into(),
                    duration_ms: *ms,
                })
                .collect(),
        }
    }

    fn values(pairs: &[(&str, f64)]) -> MetricValues {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn metrics_round_trip_and_previous_build() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = store.record_invocation(&inv(100, &[])).unwrap();
        store
            .record_metrics(
                first,
                &[("//m:t".into(), values(&[("f1", 0.8), ("n", 3.0)]))],
            )
            .unwrap();
        let second = store.record_invocation(&inv(200, &[])).unwrap();
        store
            .record_metrics(second, &[("//m:t".into(), values(&[("f1", 0.9)]))])
            .unwrap();
        // A build that recorded nothing for the target does not count as its previous.
        let third = store.record_invocation(&inv(300, &[])).unwrap();

        let latest = store.latest_metrics("/ws", "//m:t", None).unwrap().unwrap();
        assert_eq!(latest.invocation_id, second);
        assert_eq!(latest.started_at, 200);
        assert_eq!(latest.values, values(&[("f1", 0.9)]));
        let previous = store
            .latest_metrics("/ws", "//m:t", Some(latest.invocation_id))
            .unwrap()
            .unwrap();
        assert_eq!(previous.invocation_id, first);
        assert_eq!(previous.values, values(&[("f1", 0.8), ("n", 3.0)]));
        assert!(store
            .latest_metrics("/ws", "//m:t", Some(first))
            .unwrap()
            .is_none());
        assert!(store
            .latest_metrics("/other", "//m:t", None)
            .unwrap()
            .is_none());

        assert_eq!(store.metrics_of(first, "//m:t").unwrap(), Some(previous));
        assert!(store.metrics_of(third, "//m:t").unwrap().is_none());
        assert!(store.metrics_of(9999, "//m:t").unwrap().is_none());
        assert_eq!(store.labels_with_metrics("/ws").unwrap(), ["//m:t"]);
    }

    #[test]
    fn pruning_history_removes_its_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = store.record_invocation(&inv(100, &[])).unwrap();
        store
            .record_metrics(old, &[("//m:t".into(), values(&[("f1", 0.8)]))])
            .unwrap();
        let new = store
            .record_invocation(&inv(crate::unix_now(), &[]))
            .unwrap();
        store
            .record_metrics(new, &[("//m:t".into(), values(&[("f1", 0.9)]))])
            .unwrap();
        let report = store
            .gc(&crate::GcPolicy {
                max_size: None,
                max_age: Some(std::time::Duration::from_secs(3600)),
            })
            .unwrap();
        assert_eq!(report.removed_invocations, 1);
        assert!(store.metrics_of(old, "//m:t").unwrap().is_none());
        let rows: i64 = store
            .conn()
            .query_row("SELECT COUNT(*) FROM target_metrics", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
        assert_eq!(
            store
                .latest_metrics("/ws", "//m:t", None)
                .unwrap()
                .unwrap()
                .invocation_id,
            new
        );
    }

    #[test]
    fn stats_count_runs_rates_and_last_failure() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .record_invocation(&inv(50, &[("//:a", "executed", 999)]))
            .unwrap();
        store
            .record_invocation(&inv(
                100,
                &[("//:a", "executed", 40), ("//:b", "failed", 5)],
            ))
            .unwrap();
        let failed_at = store
            .record_invocation(&inv(200, &[("//:a", "failed", 20), ("//:b", "skipped", 0)]))
            .unwrap();
        store
            .record_invocation(&inv(300, &[("//:a", "cached", 2), ("//:a2", "cached", 1)]))
            .unwrap();
        store
            .record_invocation(&inv(400, &[("//:a", "cached", 4)]))
            .unwrap();

        // The first invocation is outside the window.
        let stats = store.target_stats("/ws", 100).unwrap();
        let labels: Vec<&str> = stats.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["//:a", "//:a2", "//:b"]);
        let a = &stats[0];
        assert_eq!((a.runs, a.executed, a.cached, a.failed), (4, 1, 2, 1));
        // 2, 4, 20, 40 -> (4 + 20) / 2
        assert_eq!(a.median_ms, 12);
        assert_eq!(a.median_executed_ms, Some(40));
        assert_eq!(a.cache_hit_rate, 0.5);
        assert_eq!(a.success_rate, 0.75);
        assert_eq!(
            a.last_failure,
            Some(LastFailure {
                invocation_id: failed_at,
                at: 200
            })
        );
        // A skipped run is not a run.
        assert_eq!(stats[2].runs, 1);
        assert_eq!(stats[2].success_rate, 0.0);
        assert_eq!(stats[2].median_executed_ms, None);
        assert!(store.target_stats("/ws", 1000).unwrap().is_empty());
    }
}
