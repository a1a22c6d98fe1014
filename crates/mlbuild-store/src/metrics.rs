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

/// A metrics file's metrics: the numeric leaves of a JSON object, nested keys joined with
/// `.`. Strings, booleans, nulls and arrays are not metrics and are skipped. Gates read
/// targets' metrics files with it, release channels an artifact's.
pub fn parse_metrics(bytes: &[u8]) -> Result<MetricValues, String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let serde_json::Value::Object(map) = value else {
        return Err("the top level is not an object".into());
    };
    let mut out = MetricValues::new();
    flatten("", &map, &mut out);
    Ok(out)
}

fn flatten(prefix: &str, map: &serde_json::Map<String, serde_json::Value>, out: &mut MetricValues) {
    for (key, value) in map {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            serde_json::Value::Number(n) => {
                if let Some(f) = n.as_f64() {
                    out.insert(name, f);
                }
            }
            serde_json::Value::Object(inner) => flatten(&name, inner, out),
            _ => {}
        }
    }
}

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
    ///
    /// Aggregated while reading: a busy workspace's window holds millions of runs (1,440
    /// builds of 10,000 targets is 14.4 million), so no run is kept but its duration.
    pub fn target_stats(&self, ws: &str, since: i64) -> Result<Vec<TargetStats>, StoreError> {
        #[derive(Default)]
        struct Agg {
            executed: u64,
            cached: u64,
            failed: u64,
            /// Durations of every executed, cached or failed run, and of executed ones.
            all_ms: Vec<u32>,
            executed_ms: Vec<u32>,
            last_failure: Option<LastFailure>,
        }
        impl Agg {
            fn add(&mut self, status: &str, ms: u64, invocation_id: i64, at: i64) {
                let ms = u32::try_from(ms).unwrap_or(u32::MAX);
                match status {
                    "executed" => {
                        self.executed += 1;
                        self.executed_ms.push(ms);
                    }
                    "cached" => self.cached += 1,
                    "failed" => {
                        self.failed += 1;
                        if self
                            .last_failure
                            .as_ref()
                            .is_none_or(|f| f.invocation_id < invocation_id)
                        {
                            self.last_failure = Some(LastFailure { invocation_id, at });
                        }
                    }
                    // Skipped because a dependency failed: not a run.
                    _ => return,
                }
                self.all_ms.push(ms);
            }
        }
        let mut by_label: BTreeMap<String, Agg> = BTreeMap::new();
        let mut add =
            |label: &str, status: &str, ms: u64, invocation_id: i64, at: i64| match by_label
                .get_mut(label)
            {
                Some(agg) => agg.add(status, ms, invocation_id, at),
                None => {
                    by_label
                        .entry(label.to_owned())
                        .or_default()
                        .add(status, ms, invocation_id, at)
                }
            };
        let conn = self.conn();
        let ctx = StoreError::index;
        let mut stmt = conn
            .prepare_cached(
                "SELECT t.label, t.status, t.duration_ms, i.id, i.started_at
                 FROM target_runs t JOIN invocations i ON i.id = t.invocation_id
                 WHERE i.ws = ?1 AND i.started_at >= ?2",
            )
            .map_err(ctx("reading build history"))?;
        let mut rows = stmt
            .query(params![ws, since])
            .map_err(ctx("reading build history"))?;
        while let Some(r) = rows.next().map_err(ctx("reading build history"))? {
            let mut read = || -> rusqlite::Result<()> {
                add(
                    r.get_ref(0)?.as_str()?,
                    r.get_ref(1)?.as_str()?,
                    r.get::<_, i64>(2)?.max(0) as u64,
                    r.get(3)?,
                    r.get(4)?,
                );
                Ok(())
            };
            read().map_err(ctx("reading build history"))?;
        }
        // Cached runs are stored compactly, one list per invocation.
        let mut stmt = conn
            .prepare_cached(
                "SELECT c.runs, i.id, i.started_at
                 FROM cached_runs c JOIN invocations i ON i.id = c.invocation_id
                 WHERE i.ws = ?1 AND i.started_at >= ?2",
            )
            .map_err(ctx("reading build history"))?;
        let mut rows = stmt
            .query(params![ws, since])
            .map_err(ctx("reading build history"))?;
        while let Some(r) = rows.next().map_err(ctx("reading build history"))? {
            let mut read = || -> rusqlite::Result<()> {
                let (invocation_id, at): (i64, i64) = (r.get(1)?, r.get(2)?);
                crate::history::for_each_cached_run(r.get_ref(0)?.as_blob()?, |_, ms, label| {
                    add(label, "cached", ms, invocation_id, at)
                })
            };
            read().map_err(ctx("reading build history"))?;
        }
        Ok(by_label
            .into_iter()
            .filter_map(|(label, agg)| {
                let runs = agg.executed + agg.cached + agg.failed;
                if runs == 0 {
                    return None;
                }
                Some(TargetStats {
                    label,
                    runs,
                    executed: agg.executed,
                    cached: agg.cached,
                    failed: agg.failed,
                    median_ms: median(agg.all_ms).unwrap_or(0),
                    median_executed_ms: median(agg.executed_ms),
                    cache_hit_rate: agg.cached as f64 / runs as f64,
                    success_rate: (runs - agg.failed) as f64 / runs as f64,
                    last_failure: agg.last_failure,
                })
            })
            .collect())
    }
}

/// The median; the mean of the two middle values for an even count.
fn median(mut values: Vec<u32>) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let n = values.len();
    Some(if n % 2 == 1 {
        u64::from(values[n / 2])
    } else {
        (u64::from(values[n / 2 - 1]) + u64::from(values[n / 2])) / 2
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
                ..Default::default()
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
        // The latest of several failures.
        let later = store
            .record_invocation(&inv(450, &[("//:b", "failed", 3)]))
            .unwrap();
        let b = store.target_stats("/ws", 100).unwrap().remove(2);
        assert_eq!((b.runs, b.failed), (2, 2));
        assert_eq!(b.last_failure.map(|f| f.invocation_id), Some(later));
    }
}
