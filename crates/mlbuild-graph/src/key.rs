//! The action key: what can change an action's result, and its canonical digest.
//!
//! Main type: [`ActionPreimage`]. The key is `blake3("mlbuild-action-key" || 0 ||
//! canonical_json(preimage))`. Everything here is workspace-relative and host-independent:
//! tool binaries enter by content digest (not path), dependency outputs by digest (which
//! gives early cutoff for free), and path placeholders in `argv` stay symbolic because the
//! directory an action runs in is not part of what it computes.

use std::collections::BTreeMap;

use mlbuild_digest::{digest_domain, Digest};
use serde::{Deserialize, Serialize};

/// Bump when the meaning or encoding of any preimage field changes; old cache entries then
/// simply stop matching.
pub const KEY_SCHEMA_VERSION: u32 = 1;

/// Domain tag hashed in front of the canonical preimage.
pub const KEY_DOMAIN: &str = "mlbuild-action-key";

/// One file of an action's input tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputEntry {
    pub digest: Digest,
    pub executable: bool,
}

/// Everything that can change an action's result.
///
/// Fields are declared in alphabetical order and every map is a `BTreeMap`, so the derived
/// serialization already is the canonical encoding and the key can be hashed without an
/// intermediate `serde_json::Value` (the no-op build computes one key per target); the
/// `direct_encoding_is_canonical` test holds this in place.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionPreimage {
    /// The command after expanding `{params.*}`; path placeholders (`{out}`, `{deps.x}`,
    /// `{params_file}`) are kept verbatim.
    pub argv: Vec<String>,
    /// The package directory the command runs in (workspace-relative).
    pub cwd: String,
    /// Dependency name (as used in `{deps.NAME}`) -> label.
    pub deps: BTreeMap<String, String>,
    /// Declared environment. Secrets are deliberately absent.
    pub env: BTreeMap<String, String>,
    /// Python environments the action runs in (`python_env` dependencies, and an
    /// external environment's own tree): label or host path -> digest of the whole tree.
    /// One entry stands for thousands of files; absent (not empty) when there are none,
    /// so the keys of actions without environments keep their encoding.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environments: BTreeMap<String, Digest>,
    /// Exec-root-relative path -> content digest: the package's sources at their
    /// workspace paths and each dependency's outputs under `mlbuild-out/<pkg>/<name>/`.
    pub inputs: BTreeMap<String, InputEntry>,
    pub kind: String,
    pub network: bool,
    pub outs: Vec<String>,
    /// Canonical JSON of the target's params (objects are sorted maps).
    pub params: serde_json::Value,
    /// `os-arch` of the machine the action runs on.
    pub platform: String,
    pub schema: u32,
    pub source_date_epoch: u64,
    /// Tool name -> digest of the resolved binary.
    pub tools: BTreeMap<String, Digest>,
}

impl ActionPreimage {
    /// The action key and the canonical JSON it was computed from.
    pub fn key(&self) -> (Digest, String) {
        let json = serde_json::to_string(self).expect("preimages are plain data");
        (digest_domain(KEY_DOMAIN, &json), json)
    }

    pub fn platform() -> String {
        format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> ActionPreimage {
        ActionPreimage {
            schema: KEY_SCHEMA_VERSION,
            kind: "train".into(),
            cwd: "models".into(),
            argv: vec![
                "python3".into(),
                "train.py".into(),
                "--out".into(),
                "{out}".into(),
                "--lr".into(),
                "0.05".into(),
            ],
            env: BTreeMap::from([("OMP_NUM_THREADS".into(), "1".into())]),
            environments: BTreeMap::new(),
            params: serde_json::json!({"lr": 0.05, "epochs": 30, "seed": 42}),
            deps: BTreeMap::from([("train_set".into(), "//features:train_set".into())]),
            inputs: BTreeMap::from([
                (
                    "models/train.py".into(),
                    InputEntry {
                        digest: Digest::of_bytes(b"print('train')\n"),
                        executable: false,
                    },
                ),
                (
                    "mlbuild-out/features/train_set/train.csv".into(),
                    InputEntry {
                        digest: Digest::of_bytes(b"a,b\n1,2\n"),
                        executable: false,
                    },
                ),
            ]),
            tools: BTreeMap::from([("python3".into(), Digest::of_bytes(b"python"))]),
            outs: vec!["model.json".into()],
            network: false,
            source_date_epoch: 0,
            platform: "linux-x86_64".into(),
        }
    }

    /// Pins the encoding: if this fails, every existing cache entry would silently stop
    /// matching. Change it only together with `KEY_SCHEMA_VERSION`.
    #[test]
    fn golden_key() {
        let (key, json) = fixed().key();
        assert_eq!(
            json,
            r#"{"argv":["python3","train.py","--out","{out}","--lr","0.05"],"cwd":"models","deps":{"train_set":"//features:train_set"},"env":{"OMP_NUM_THREADS":"1"},"inputs":{"mlbuild-out/features/train_set/train.csv":{"digest":"GOLDEN_A","executable":false},"models/train.py":{"digest":"GOLDEN_B","executable":false}},"kind":"train","network":false,"outs":["model.json"],"params":{"epochs":30,"lr":0.05,"seed":42},"platform":"linux-x86_64","schema":1,"source_date_epoch":0,"tools":{"python3":"GOLDEN_C"}}"#
                .replace("GOLDEN_A", &Digest::of_bytes(b"a,b\n1,2\n").to_hex())
                .replace("GOLDEN_B", &Digest::of_bytes(b"print('train')\n").to_hex())
                .replace("GOLDEN_C", &Digest::of_bytes(b"python").to_hex())
        );
        assert_eq!(
            key.to_hex(),
            "8eab6e3e1a0da6d111dc843be5b3830866c5fe1138dd54e4c5480a6ff97eab9b"
        );
    }

    #[test]
    fn direct_encoding_is_canonical() {
        let p = fixed();
        assert_eq!(p.key().1, mlbuild_digest::canonical_json(&p));
        assert_eq!(
            p.key().0,
            mlbuild_digest::digest_canonical(KEY_DOMAIN, &p).0
        );
    }

    #[test]
    fn every_field_changes_the_key() {
        let base = fixed().key().0;
        let mut variants: Vec<ActionPreimage> = Vec::new();
        let mut p = fixed();
        p.argv.push("--x".into());
        variants.push(p);
        let mut p = fixed();
        p.env.insert("A".into(), "b".into());
        variants.push(p);
        let mut p = fixed();
        p.params = serde_json::json!({"lr": 0.1, "epochs": 30, "seed": 42});
        variants.push(p);
        let mut p = fixed();
        p.inputs.get_mut("models/train.py").unwrap().executable = true;
        variants.push(p);
        let mut p = fixed();
        p.tools
            .insert("python3".into(), Digest::of_bytes(b"python2"));
        variants.push(p);
        let mut p = fixed();
        p.outs.push("metrics.json".into());
        variants.push(p);
        let mut p = fixed();
        p.platform = "macos-aarch64".into();
        variants.push(p);
        let mut p = fixed();
        p.network = true;
        variants.push(p);
        let mut p = fixed();
        p.cwd = "other".into();
        variants.push(p);
        let mut p = fixed();
        p.environments
            .insert("//envs:train".into(), Digest::of_bytes(b"tree"));
        variants.push(p);
        for v in variants {
            assert_ne!(v.key().0, base, "{v:?}");
        }
    }
}
