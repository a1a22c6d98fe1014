//! The action cache and each workspace's latest build.
//!
//! The action cache maps an action key to what running it produced, so an unchanged
//! action is never run twice; the workspace state remembers which key each target had
//! last time, so a no-op build of 10,000 targets is one indexed query, and so gc knows its
//! roots. Main types: [`ActionResult`], [`TargetRecord`].

use std::collections::{BTreeMap, HashMap};

use mlbuild_digest::Digest;
use rayon::prelude::*;
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::{digest_from_sql, unix_now, Store, StoreError};

/// A `last_used` this recent is not rewritten on a hit: it would turn every cache lookup
/// into a write, and gc's age bound works in days, not seconds.
const LAST_USED_GRANULARITY_SECS: i64 = 60;

/// One output file of an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    pub digest: Digest,
    pub size: u64,
    pub executable: bool,
}

/// What running an action produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    /// Keyed by output-directory-relative POSIX path.
    pub outputs: BTreeMap<String, OutputFile>,
    pub exit_code: i32,
    pub stdout: Digest,
    pub stderr: Digest,
    pub duration_ms: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// How the process that produced the result was isolated; `None` for results
    /// recorded before mlbuild recorded it. Not part of the key (the same action gives
    /// the same key however it ran), so `[sandbox] require = true` checks it instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<ActionIsolation>,
}

/// How an action's result was produced, as recorded with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionIsolation {
    /// In the namespace sandbox: only declared inputs visible, no network unless declared.
    Namespaces,
    /// As a plain process (`MLBUILD_SANDBOX=plain`, or no user namespaces): it could
    /// read undeclared files and reach the network.
    Plain,
    /// Computed by mlbuild itself from the declared inputs (filegroups, sweep
    /// selections): no command ran.
    InProcess,
}

impl ActionIsolation {
    /// The name used in results, provenance and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionIsolation::Namespaces => "namespaces",
            ActionIsolation::Plain => "plain",
            ActionIsolation::InProcess => "in_process",
        }
    }
}

impl ActionResult {
    /// Whether the result is known to come from an isolated run (or from no command at
    /// all): what `[sandbox] require = true` accepts. A result whose isolation was never
    /// recorded is not.
    pub fn sandboxed(&self) -> bool {
        matches!(
            self.isolation,
            Some(ActionIsolation::Namespaces | ActionIsolation::InProcess)
        )
    }

    /// The recorded isolation's name, `unknown` when none was recorded.
    pub fn isolation_name(&self) -> &'static str {
        self.isolation.map_or("unknown", ActionIsolation::as_str)
    }

    /// Every blob this result refers to: outputs, stdout and stderr.
    pub fn blobs(&self) -> impl Iterator<Item = Digest> + '_ {
        self.outputs
            .values()
            .map(|o| o.digest)
            .chain([self.stdout, self.stderr])
    }
}

/// A target's key in the latest build of a workspace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRecord {
    pub key: Digest,
    /// Canonical JSON of the key's preimage, for `mlbuild why`.
    pub preimage: String,
    /// The action cache entry for `key`, when there is one (filled on load, ignored on
    /// save).
    pub result: Option<ActionResult>,
}

/// A target's key in the latest build of a workspace with its cached result: all a
/// build needs to recognise a hit. The preimage is left in the index, read only when a
/// miss needs explaining ([`Store::recorded_preimage`]): on a no-op build of 10,000
/// targets it would be megabytes of text read for nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatestKey {
    pub key: Digest,
    /// The action cache entry for `key`, when there is one.
    pub result: Option<ActionResult>,
}

/// Every target's latest key in a workspace, with its cached result. Reads the covering
/// index `workspace_state_keys`, not the rows with their preimages (a test checks the plan).
const LATEST_KEYS_SQL: &str = "SELECT w.label, w.key, a.result
     FROM workspace_state w LEFT JOIN actions a ON a.key = w.key
     WHERE w.ws = ?1";

impl Store {
    /// Looks up an action. A row that no longer parses (written by an incompatible
    /// version) is treated as a miss: the action is rerun and the row overwritten.
    pub fn get_action(&self, key: &Digest) -> Result<Option<ActionResult>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT result, last_used FROM actions WHERE key = ?1")
            .map_err(StoreError::index("looking up an action"))?;
        let mut rows = stmt
            .query(params![key.as_bytes()])
            .map_err(StoreError::index("looking up an action"))?;
        let Some(row) = rows
            .next()
            .map_err(StoreError::index("looking up an action"))?
        else {
            return Ok(None);
        };
        let json: String = row
            .get(0)
            .map_err(StoreError::index("looking up an action"))?;
        let last_used: i64 = row
            .get(1)
            .map_err(StoreError::index("looking up an action"))?;
        drop(rows);
        drop(stmt);
        let now = unix_now();
        if now - last_used >= LAST_USED_GRANULARITY_SECS {
            conn.prepare_cached("UPDATE actions SET last_used = ?1 WHERE key = ?2")
                .and_then(|mut s| s.execute(params![now, key.as_bytes()]))
                .map_err(StoreError::index("touching an action"))?;
        }
        Ok(serde_json::from_str(&json).ok())
    }

    /// Records an action's result, replacing any previous one.
    pub fn put_action(&self, key: &Digest, r: &ActionResult) -> Result<(), StoreError> {
        let json = serde_json::to_string(r).map_err(|source| StoreError::Encode {
            what: "an action result",
            source,
        })?;
        let now = unix_now();
        let conn = self.conn();
        conn.prepare_cached(
            "INSERT INTO actions (key, result, created_at, last_used) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT (key) DO UPDATE SET result = excluded.result, last_used = excluded.last_used",
        )
        .and_then(|mut s| s.execute(params![key.as_bytes(), json, now]))
        .map_err(StoreError::index("recording an action"))?;
        Ok(())
    }

    /// Removes an action cache entry (e.g. after its outputs turned out to be corrupt).
    /// Returns whether there was one.
    pub fn remove_action(&self, key: &Digest) -> Result<bool, StoreError> {
        let conn = self.conn();
        let n = conn
            .prepare_cached("DELETE FROM actions WHERE key = ?1")
            .and_then(|mut s| s.execute(params![key.as_bytes()]))
            .map_err(StoreError::index("removing an action"))?;
        Ok(n > 0)
    }

    /// The latest build of every target of workspace `ws` (its root path), label ->
    /// record, with each record's cached result joined in. One query, whatever the size.
    pub fn load_workspace_state(
        &self,
        ws: &str,
    ) -> Result<HashMap<String, TargetRecord>, StoreError> {
        let rows: Vec<(String, Vec<u8>, String, Option<String>)> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT w.label, w.key, w.preimage, a.result
                     FROM workspace_state w LEFT JOIN actions a ON a.key = w.key
                     WHERE w.ws = ?1",
                )
                .map_err(StoreError::index("loading workspace state"))?;
            let rows = stmt
                .query_map(params![ws], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .map_err(StoreError::index("loading workspace state"))?;
            rows.collect::<Result<_, _>>()
                .map_err(StoreError::index("loading workspace state"))?
        };
        // Parsing JSON dominates for large workspaces; do it off the connection lock and
        // in parallel.
        Ok(rows
            .into_par_iter()
            .filter_map(|(label, key, preimage, result)| {
                let key = digest_from_sql(&key)?;
                let result = result.and_then(|json| serde_json::from_str(&json).ok());
                Some((
                    label,
                    TargetRecord {
                        key,
                        preimage,
                        result,
                    },
                ))
            })
            .collect())
    }

    /// Like [`Store::load_workspace_state`] without the preimages: label -> latest key and
    /// its cached result. One query, whatever the size.
    pub fn load_latest_keys(&self, ws: &str) -> Result<HashMap<String, LatestKey>, StoreError> {
        let rows: Vec<(String, Option<Digest>, Option<String>)> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare_cached(LATEST_KEYS_SQL)
                .map_err(StoreError::index("loading workspace state"))?;
            let rows = stmt
                .query_map(params![ws], |r| {
                    let key = r.get_ref(1)?.as_blob().ok().and_then(digest_from_sql);
                    Ok((r.get(0)?, key, r.get(2)?))
                })
                .map_err(StoreError::index("loading workspace state"))?;
            rows.collect::<Result<_, _>>()
                .map_err(StoreError::index("loading workspace state"))?
        };
        // Parsing the results dominates; do it off the connection lock and in parallel.
        Ok(rows
            .into_par_iter()
            .filter_map(|(label, key, result)| {
                let result = result.and_then(|json| serde_json::from_str(&json).ok());
                Some((label, LatestKey { key: key?, result }))
            })
            .collect())
    }

    /// The preimage recorded with `label`'s latest key in workspace `ws`, if any.
    pub fn recorded_preimage(&self, ws: &str, label: &str) -> Result<Option<String>, StoreError> {
        self.conn()
            .prepare_cached("SELECT preimage FROM workspace_state WHERE ws = ?1 AND label = ?2")
            .and_then(|mut s| s.query_row(params![ws, label], |r| r.get(0)).optional())
            .map_err(StoreError::index("reading a recorded preimage"))
    }

    /// Records the latest key of each given target of workspace `ws` in one transaction.
    /// Targets not mentioned keep their previous record; `result` is ignored (results
    /// live in the action cache).
    pub fn save_workspace_state(
        &self,
        ws: &str,
        records: &[(String, TargetRecord)],
    ) -> Result<(), StoreError> {
        let now = unix_now();
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::index("saving workspace state"))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO workspace_state (ws, label, key, preimage, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (ws, label) DO UPDATE SET key = excluded.key,
                         preimage = excluded.preimage, updated_at = excluded.updated_at
                     WHERE workspace_state.key != excluded.key
                        OR workspace_state.preimage != excluded.preimage",
                )
                .map_err(StoreError::index("saving workspace state"))?;
            for (label, rec) in records {
                stmt.execute(params![ws, label, rec.key.as_bytes(), rec.preimage, now])
                    .map_err(StoreError::index("saving workspace state"))?;
            }
        }
        tx.commit()
            .map_err(StoreError::index("saving workspace state"))
    }

    /// Forgets targets of workspace `ws` (removed from its BUILD files), so they stop
    /// rooting their outputs. Returns how many records were removed.
    pub fn forget_targets(&self, ws: &str, labels: &[String]) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::index("forgetting targets"))?;
        let mut n = 0;
        {
            let mut stmt = tx
                .prepare_cached("DELETE FROM workspace_state WHERE ws = ?1 AND label = ?2")
                .map_err(StoreError::index("forgetting targets"))?;
            for label in labels {
                n += stmt
                    .execute(params![ws, label])
                    .map_err(StoreError::index("forgetting targets"))? as u64;
            }
        }
        tx.commit()
            .map_err(StoreError::index("forgetting targets"))?;
        Ok(n)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn latest_keys_are_read_from_the_covering_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let conn = store.conn();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {LATEST_KEYS_SQL}"))
            .unwrap()
            .query_map(params!["/ws"], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.contains("COVERING INDEX workspace_state_keys")),
            "{plan:?}"
        );
    }

    pub(crate) fn result_with(store: &Store, content: &[u8]) -> ActionResult {
        let out = store.put_bytes(content).unwrap();
        let empty = store.put_bytes(b"").unwrap();
        ActionResult {
            outputs: BTreeMap::from([(
                "model.bin".to_string(),
                OutputFile {
                    digest: out,
                    size: content.len() as u64,
                    executable: false,
                },
            )]),
            exit_code: 0,
            stdout: empty,
            stderr: empty,
            duration_ms: 12,
            created_at: 1_700_000_000,
            isolation: Some(ActionIsolation::Namespaces),
        }
    }

    #[test]
    fn action_round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = Digest::of_bytes(b"key");
        assert_eq!(store.get_action(&key).unwrap(), None);
        let r = result_with(&store, b"one");
        store.put_action(&key, &r).unwrap();
        assert_eq!(store.get_action(&key).unwrap(), Some(r.clone()));
        assert_eq!(r.blobs().count(), 3);
        let r2 = result_with(&store, b"two");
        store.put_action(&key, &r2).unwrap();
        assert_eq!(store.get_action(&key).unwrap(), Some(r2));
        assert!(store.remove_action(&key).unwrap());
        assert_eq!(store.get_action(&key).unwrap(), None);
    }

    #[test]
    fn isolation_round_trips_and_is_absent_from_older_results() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut r = result_with(&store, b"out");
        r.isolation = Some(ActionIsolation::Plain);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""isolation":"plain""#), "{json}");
        assert_eq!(serde_json::from_str::<ActionResult>(&json).unwrap(), r);
        assert!(!r.sandboxed());
        // A result written before isolation was recorded: unknown, not sandboxed, and
        // serialized exactly as before (remote entries' signatures cover these bytes).
        r.isolation = None;
        let old = serde_json::to_string(&r).unwrap();
        assert!(!old.contains("isolation"), "{old}");
        let parsed: ActionResult = serde_json::from_str(&old).unwrap();
        assert_eq!(parsed.isolation, None);
        assert!(!parsed.sandboxed());
        assert_eq!(parsed.isolation_name(), "unknown");
        for (isolation, sandboxed) in [
            (ActionIsolation::Namespaces, true),
            (ActionIsolation::InProcess, true),
            (ActionIsolation::Plain, false),
        ] {
            r.isolation = Some(isolation);
            assert_eq!(r.sandboxed(), sandboxed, "{isolation:?}");
        }
    }

    #[test]
    fn results_parse_like_digest_fields() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let r = result_with(&store, b"out");
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<ActionResult>(&json).unwrap(), r);
        // Errors read as those of `Digest` itself (but for where they are).
        let message = |e: serde_json::Error| {
            let text = e.to_string();
            text[..text.find(" at line").unwrap_or(text.len())].to_owned()
        };
        for bad in ["5", "\"xyz\""] {
            let text = json.replacen(&format!("\"{}\"", r.stdout.to_hex()), bad, 1);
            let ours = serde_json::from_str::<ActionResult>(&text).unwrap_err();
            let digest = serde_json::from_str::<Digest>(bad).unwrap_err();
            assert_eq!(message(ours), message(digest));
        }
    }

    #[test]
    fn workspace_state_joins_results() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let cached = Digest::of_bytes(b"cached");
        let uncached = Digest::of_bytes(b"uncached");
        let r = result_with(&store, b"x");
        store.put_action(&cached, &r).unwrap();
        let rec = |key| TargetRecord {
            key,
            preimage: "{\"k\":1}".into(),
            result: None,
        };
        store
            .save_workspace_state(
                "/ws/a",
                &[("//:a".into(), rec(cached)), ("//:b".into(), rec(uncached))],
            )
            .unwrap();
        store
            .save_workspace_state("/ws/other", &[("//:a".into(), rec(uncached))])
            .unwrap();
        let state = store.load_workspace_state("/ws/a").unwrap();
        assert_eq!(state.len(), 2);
        assert_eq!(state["//:a"].result, Some(r));
        assert_eq!(state["//:b"].result, None);
        assert_eq!(state["//:b"].preimage, "{\"k\":1}");

        // Upsert replaces one target and keeps the other.
        store
            .save_workspace_state("/ws/a", &[("//:b".into(), rec(cached))])
            .unwrap();
        let state = store.load_workspace_state("/ws/a").unwrap();
        assert_eq!(state["//:b"].key, cached);
        assert_eq!(state["//:a"].key, cached);
        assert_eq!(store.load_workspace_state("/ws/other").unwrap().len(), 1);
        assert!(store.load_workspace_state("/nope").unwrap().is_empty());

        // Keys and results without preimages, which are read one at a time.
        let keys = store.load_latest_keys("/ws/a").unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys["//:a"].key, cached);
        assert_eq!(keys["//:b"].result, state["//:b"].result);
        assert_eq!(
            store.recorded_preimage("/ws/a", "//:b").unwrap().as_deref(),
            Some("{\"k\":1}")
        );
        assert_eq!(store.recorded_preimage("/ws/a", "//:c").unwrap(), None);
        assert_eq!(store.recorded_preimage("/nope", "//:a").unwrap(), None);

        assert_eq!(store.forget_targets("/ws/a", &["//:a".into()]).unwrap(), 1);
        assert_eq!(store.load_workspace_state("/ws/a").unwrap().len(), 1);
    }
}
