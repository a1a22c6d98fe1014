//! The params each build resolved per target, and build names, in the build history.
//!
//! `mlbuild params diff` compares two builds' params; gates compare metrics against a
//! named build. Both need to find a build by a name the user chose (`mlbuild build --name
//! v1`) or by its invocation id, so naming lives here for every caller. A build's params
//! are one canonical JSON document (label -> params) stored once per distinct content:
//! consecutive builds usually repeat it, so history grows by one small row per build.
//! Main functions: [`Store::record_params`], [`Store::params_of`],
//! [`Store::name_invocation`], [`Store::find_invocation`].

use std::collections::BTreeMap;

use mlbuild_digest::digest_domain;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use crate::{Invocation, InvocationRecord, Store, StoreError};

/// Label -> the params that entered its action key in one build.
pub type BuildParams = BTreeMap<String, serde_json::Value>;

const PARAMS_DOMAIN: &str = "mlbuild-build-params";

/// The canonical JSON document [`Store::record_params`] stores for `params`.
pub fn params_json(params: &BuildParams) -> String {
    // `BuildParams` is a sorted map of `Value`s, whose objects are sorted maps too, so
    // plain serialization is already canonical (and skips copying every value).
    serde_json::to_string(params).expect("JSON values always serialize")
}

impl Store {
    /// Records the params of every target of invocation `invocation_id` (from
    /// [`Store::record_invocation`]); recording again replaces them.
    pub fn record_params(
        &self,
        invocation_id: i64,
        params: &BuildParams,
    ) -> Result<(), StoreError> {
        self.record_params_json(invocation_id, &params_json(params))
    }

    /// [`Store::record_params`] with the params already encoded by [`params_json`] (which
    /// a caller may run while the store is busy with something else).
    pub fn record_params_json(&self, invocation_id: i64, json: &str) -> Result<(), StoreError> {
        let digest = digest_domain(PARAMS_DOMAIN, json);
        let ctx = StoreError::index("recording build params");
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ctx)?;
        tx.execute(
            "INSERT OR IGNORE INTO params_sets (digest, json) VALUES (?1, ?2)",
            params![digest.as_bytes(), json],
        )
        .map_err(StoreError::index("recording build params"))?;
        tx.execute(
            "INSERT OR REPLACE INTO invocation_params (invocation_id, digest) VALUES (?1, ?2)",
            params![invocation_id, digest.as_bytes()],
        )
        .map_err(StoreError::index("recording build params"))?;
        // Pruned history (gc --max-age) cascades to `invocation_params` only; drop the
        // documents nothing refers to any more. Indexed, so this stays cheap.
        tx.execute(
            "DELETE FROM params_sets WHERE NOT EXISTS
               (SELECT 1 FROM invocation_params p WHERE p.digest = params_sets.digest)",
            [],
        )
        .map_err(StoreError::index("recording build params"))?;
        tx.commit()
            .map_err(StoreError::index("recording build params"))?;
        Ok(())
    }

    /// The params recorded for invocation `invocation_id`, if it recorded any.
    pub fn params_of(&self, invocation_id: i64) -> Result<Option<BuildParams>, StoreError> {
        let conn = self.conn();
        let json: Option<String> = conn
            .query_row(
                "SELECT s.json FROM invocation_params p JOIN params_sets s ON s.digest = p.digest
                 WHERE p.invocation_id = ?1",
                params![invocation_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(StoreError::index("reading build params"))?;
        // Written by `record_params` as canonical JSON; a row that does not parse means
        // the index itself is damaged.
        json.map(|j| {
            serde_json::from_str(&j).map_err(|source| StoreError::Encode {
                what: "recorded build params",
                source,
            })
        })
        .transpose()
    }

    /// Names invocation `invocation_id` of workspace `ws`. A name is unique per workspace:
    /// naming another build with it moves the name (like a git tag forced forward), which
    /// is what "compare with the last release" wants.
    pub fn name_invocation(
        &self,
        ws: &str,
        invocation_id: i64,
        name: &str,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO invocation_names (ws, name, invocation_id) VALUES (?1, ?2, ?3)",
                params![ws, name, invocation_id],
            )
            .map_err(StoreError::index("naming a build"))?;
        Ok(())
    }

    /// The name given to invocation `invocation_id`, if any.
    pub fn invocation_name(&self, invocation_id: i64) -> Result<Option<String>, StoreError> {
        self.conn()
            .query_row(
                "SELECT name FROM invocation_names WHERE invocation_id = ?1 ORDER BY name LIMIT 1",
                params![invocation_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(StoreError::index("reading build names"))
    }

    /// The invocation of workspace `ws` named `name_or_id`: a build name first, else a
    /// decimal invocation id (ids are what `history` and `--json` summaries report).
    /// Another workspace's invocation is never returned.
    pub fn find_invocation(
        &self,
        ws: &str,
        name_or_id: &str,
    ) -> Result<Option<InvocationRecord>, StoreError> {
        let named: Option<i64> = self
            .conn()
            .query_row(
                "SELECT invocation_id FROM invocation_names WHERE ws = ?1 AND name = ?2",
                params![ws, name_or_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(StoreError::index("reading build names"))?;
        let id = match named {
            Some(id) => id,
            None => match name_or_id.parse::<i64>() {
                Ok(id) => id,
                Err(_) => return Ok(None),
            },
        };
        self.invocation(ws, id)
    }

    /// Invocation `id` of workspace `ws`, with its target runs.
    pub fn invocation(&self, ws: &str, id: i64) -> Result<Option<InvocationRecord>, StoreError> {
        let conn = self.conn();
        let ctx = StoreError::index;
        let head = conn
            .query_row(
                "SELECT command, started_at, duration_ms, success FROM invocations
                 WHERE id = ?1 AND ws = ?2",
                params![id, ws],
                |r| {
                    Ok(Invocation {
                        workspace: ws.to_owned(),
                        command: r.get(0)?,
                        started_at: r.get(1)?,
                        duration_ms: r.get::<_, i64>(2)? as u64,
                        success: r.get(3)?,
                        targets: Vec::new(),
                    })
                },
            )
            .optional()
            .map_err(ctx("reading history"))?;
        let Some(mut invocation) = head else {
            return Ok(None);
        };
        invocation.targets = crate::history::runs_of(&conn, id)?;
        Ok(Some(InvocationRecord { id, invocation }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(ws: &str) -> Invocation {
        Invocation {
            workspace: ws.into(),
            command: "mlbuild build //...".into(),
            started_at: 1_700_000_000,
            duration_ms: 1,
            success: true,
            targets: vec![],
        }
    }

    #[test]
    fn params_round_trip_and_are_shared() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.record_invocation(&inv("/ws")).unwrap();
        let b = store.record_invocation(&inv("/ws")).unwrap();
        let p: BuildParams =
            BTreeMap::from([("//m:t".into(), serde_json::json!({"train": {"lr": 0.1}}))]);
        store.record_params(a, &p).unwrap();
        store.record_params(b, &p).unwrap();
        assert_eq!(store.params_of(a).unwrap(), Some(p.clone()));
        assert_eq!(store.params_of(b).unwrap(), Some(p));
        let sets: i64 = store
            .conn()
            .query_row("SELECT count(*) FROM params_sets", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sets, 1, "identical params are stored once");
        let c = store.record_invocation(&inv("/ws")).unwrap();
        assert_eq!(store.params_of(c).unwrap(), None);
    }

    #[test]
    fn recorded_params_are_canonical_json() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.record_invocation(&inv("/ws")).unwrap();
        let p: BuildParams = BTreeMap::from([
            (
                "//b:t".into(),
                serde_json::json!({"z": 1, "a": {"y": [2.5, "s"], "b": true}}),
            ),
            ("//a:t".into(), serde_json::json!({"v": 1})),
        ]);
        store.record_params(id, &p).unwrap();
        let json: String = store
            .conn()
            .query_row("SELECT json FROM params_sets", [], |r| r.get(0))
            .unwrap();
        assert_eq!(json, mlbuild_digest::canonical_json(&p));
    }

    #[test]
    fn names_find_builds_of_their_workspace_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.record_invocation(&inv("/ws")).unwrap();
        let b = store.record_invocation(&inv("/ws")).unwrap();
        let other = store.record_invocation(&inv("/other")).unwrap();
        store.name_invocation("/ws", a, "v1").unwrap();
        assert_eq!(store.find_invocation("/ws", "v1").unwrap().unwrap().id, a);
        assert_eq!(store.invocation_name(a).unwrap().as_deref(), Some("v1"));
        // Renaming moves the name.
        store.name_invocation("/ws", b, "v1").unwrap();
        assert_eq!(store.find_invocation("/ws", "v1").unwrap().unwrap().id, b);
        assert_eq!(
            store
                .find_invocation("/ws", &a.to_string())
                .unwrap()
                .unwrap()
                .id,
            a
        );
        assert!(store
            .find_invocation("/ws", &other.to_string())
            .unwrap()
            .is_none());
        assert!(store.find_invocation("/ws", "nope").unwrap().is_none());
        assert!(store.find_invocation("/other", "v1").unwrap().is_none());
    }
}
