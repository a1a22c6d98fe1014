//! Channel records: what each line of a channel's log says, and its signature.
//!
//! A record is a JSON document inside a DSSE envelope, signed with its author's P-256
//! key (the key mlbuild signs artifacts with; `openssl` can check it). It names the
//! record before it by hash (`prev`, BLAKE3 of that line) and its place in the log
//! (`seq`), so an edited record fails its signature, and a deleted, inserted or reordered
//! one breaks the chain at a position [`crate::chain::verify`] names. The author's public
//! key travels in the record; which keys may author what is the channel's rules'
//! business. Main types: [`Record`], [`RecordKind`], [`ArtifactRef`].

use std::collections::BTreeMap;

use mlbuild_sign::dsse::Envelope;
use mlbuild_sign::{PrivateKey, PublicKey};
use serde::{Deserialize, Serialize};

/// The DSSE payload type of a channel record.
pub const PAYLOAD_TYPE: &str = "application/vnd.mlbuild.channel-record+json";
/// The record format, in every record.
pub const FORMAT: &str = "mlbuild.dev/channel-record/v1";

/// What a record does to its channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// A new generation: an artifact that passed the channel's rules.
    Promote,
    /// A new generation pointing at an earlier generation's artifact.
    Rollback,
    /// A signed approval of an artifact for this channel (no new generation).
    Approve,
    /// The staged generation's rollout starts (its first step).
    RolloutStart,
    /// The rollout moves to its next step; at the last one the new model serves all.
    RolloutAdvance,
    /// The rollout is abandoned: a new generation returns all traffic to the model that
    /// served it before.
    RolloutAbort,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Promote => "promote",
            RecordKind::Rollback => "rollback",
            RecordKind::Approve => "approve",
            RecordKind::RolloutStart => "rollout_start",
            RecordKind::RolloutAdvance => "rollout_advance",
            RecordKind::RolloutAbort => "rollout_abort",
        }
    }

    /// Whether the record starts a new generation.
    pub fn is_generation(self) -> bool {
        matches!(
            self,
            RecordKind::Promote | RecordKind::Rollback | RecordKind::RolloutAbort
        )
    }
}

/// An artifact a generation points at: the package's `.tar.zst`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactRef {
    /// The package target that built it (`//models:fraud`).
    pub label: String,
    /// SHA-256 of the `.tar.zst` (hex): what OCI registries and most tools name it by.
    pub sha256: String,
    /// BLAKE3 of the `.tar.zst` (hex): its name in mlbuild's stores and caches.
    pub blake3: String,
    pub size: u64,
    /// The mlbuild action key that produced it (hex).
    pub action_key: String,
    /// Key id of the key its `model.sig` verified with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// That key (PEM), so a reader whose channel lists no `signers` can still check
    /// that the artifact is the one that was signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_key: Option<String>,
    /// SHA-256 of the signed provenance it was promoted with, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance_sha256: Option<String>,
}

impl ArtifactRef {
    /// Whether `digest` (`sha256:HEX`, `blake3:HEX`, or a bare hex of either, or a
    /// prefix of at least 12 hex digits) names this artifact.
    pub fn matches(&self, digest: &str) -> bool {
        let d = digest.trim().to_ascii_lowercase();
        if let Some(hex) = d.strip_prefix("sha256:") {
            return self.sha256 == hex;
        }
        if let Some(hex) = d.strip_prefix("blake3:") {
            return self.blake3 == hex;
        }
        d.len() >= 12
            && d.bytes().all(|b| b.is_ascii_hexdigit())
            && (self.sha256.starts_with(&d) || self.blake3.starts_with(&d))
    }

    /// `sha256:abcdef123456` for messages.
    pub fn short(&self) -> String {
        format!("sha256:{}", &self.sha256[..12.min(self.sha256.len())])
    }
}

/// Who wrote a record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// SHA-256 of the public key's DER (as in `model.sig` and `mlbuild key`).
    pub key_id: String,
    /// The public key, PEM: enough to check the signature without a key server.
    pub public_key: String,
}

/// One metric gate as it was checked for a promotion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateCheck {
    pub gate: String,
    pub metric: String,
    pub op: String,
    pub actual: f64,
    /// The value compared against (after any adjustment), `None` when the gate compares
    /// against the current model and the channel was empty.
    pub threshold: Option<f64>,
    /// The current model's value, for `current.METRIC` gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<f64>,
    pub passed: bool,
}

/// An approval a promotion counted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRef {
    pub key_id: String,
    /// The hash of the approval's own record in this channel.
    pub record: String,
}

/// A rollout's state as a record leaves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutState {
    /// `canary`, `shadow` or `blue-green`.
    pub strategy: String,
    /// A canary's steps, in percent of traffic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<u32>,
    /// The step reached (index into `steps` for a canary, 0 once a shadow or blue-green
    /// rollout started); `None` while staged.
    pub step: Option<usize>,
    /// The generation rolled out.
    pub generation: u64,
    /// The generation serving all traffic until the rollout completes.
    pub stable: u64,
}

/// One record of a channel's log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub format: String,
    pub channel: String,
    /// Position in the log, from 1.
    pub seq: u64,
    /// BLAKE3 (hex) of the previous line; `None` for the first record.
    pub prev: Option<String>,
    pub kind: RecordKind,
    /// The generation this record creates (promote, rollback, rollout abort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// The artifact of the new generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactRef>,
    /// The artifact the channel held before this record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<ArtifactRef>,
    /// What an approval approves: `sha256:HEX` or `blake3:HEX`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub actor: Actor,
    /// RFC 3339, UTC.
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The promoted model's metrics (numeric leaves of its metrics file).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateCheck>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<ApprovalRef>,
    /// The rollout after this record, when one is staged or under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutState>,
}

impl Record {
    /// Signs the record into the line a log stores.
    pub fn sign(&self, key: &PrivateKey) -> String {
        let payload = serde_json::to_vec(self).expect("a record serializes");
        serde_json::to_string(&Envelope::sign(PAYLOAD_TYPE, payload, key))
            .expect("an envelope serializes")
    }

    /// The actor entry for `key`.
    pub fn actor(key: &PublicKey) -> Actor {
        Actor {
            key_id: key.key_id(),
            public_key: key.to_pem(),
        }
    }
}

/// Why a line is not a valid signed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineProblem {
    /// Not a DSSE envelope of a record: edited by hand, truncated, or not ours.
    Malformed(String),
    /// The signature does not hold: the record was edited after it was signed.
    BadSignature(String),
}

/// Parses a line and checks its signature against the key it names.
pub fn open(line: &str) -> Result<Record, LineProblem> {
    let envelope: Envelope = serde_json::from_str(line)
        .map_err(|e| LineProblem::Malformed(format!("not a signed record ({e})")))?;
    if envelope.payload_type != PAYLOAD_TYPE {
        return Err(LineProblem::Malformed(format!(
            "payload type `{}` is not a channel record",
            envelope.payload_type
        )));
    }
    let record: Record = serde_json::from_slice(&envelope.payload)
        .map_err(|e| LineProblem::Malformed(format!("its payload is not a record ({e})")))?;
    if record.format != FORMAT {
        return Err(LineProblem::Malformed(format!(
            "format `{}` is not `{FORMAT}`",
            record.format
        )));
    }
    let key = PublicKey::from_pem(&record.actor.public_key)
        .map_err(|e| LineProblem::Malformed(format!("its author's key is unreadable ({e})")))?;
    if key.key_id() != record.actor.key_id {
        return Err(LineProblem::BadSignature(
            "its author's key id does not match its key".into(),
        ));
    }
    envelope.verify(&key).map_err(|_| {
        LineProblem::BadSignature(format!(
            "its signature does not verify with its author's key {}",
            short_id(&record.actor.key_id)
        ))
    })?;
    Ok(record)
}

/// The first 12 hex digits of a key id, for messages.
pub fn short_id(key_id: &str) -> &str {
    &key_id[..12.min(key_id.len())]
}
