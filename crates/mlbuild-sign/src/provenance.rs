//! SLSA v1 build provenance: which target was built, from which exact inputs, by whom.
//!
//! Provenance is an in-toto statement whose subjects are the artifact's files (by SHA-256)
//! and whose predicate is SLSA Provenance v1: the target label and params that define the
//! build, every resolved dependency with its digest (data, source files, upstream outputs,
//! tools), and the builder and invocation that ran it. It is signed as a DSSE envelope with
//! payload type `application/vnd.in-toto+json` and written as one line of JSON, the
//! `.intoto.jsonl` form in-toto and SLSA tools read. Main types: [`Provenance`],
//! [`ProvenanceStatement`]; entry points [`sign`], [`write_signed`], [`verify`].

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::dsse::Envelope;
use crate::intoto::{ResourceDescriptor, Statement, PAYLOAD_TYPE, STATEMENT_TYPE};
use crate::{PrivateKey, PublicKey, SignError};

/// The SLSA Provenance v1 predicate type.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";

/// mlbuild's SLSA build type: `externalParameters` holds `target` and `params`,
/// `internalParameters` the action key and kind (see `docs/signing.md#provenance`).
pub const BUILD_TYPE: &str = "https://mlbuild.dev/provenance/build-type/target/v1";

/// The builder id of a local, developer-run mlbuild (a CI builder should use its own).
pub const LOCAL_BUILDER_ID: &str = "https://mlbuild.dev/builders/local/v1";

/// A statement carrying SLSA provenance.
pub type ProvenanceStatement = Statement<Provenance>;

/// The SLSA v1 provenance predicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    pub build_definition: BuildDefinition,
    pub run_details: RunDetails,
}

/// What was built and from what: everything that determines the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildDefinition {
    /// [`BUILD_TYPE`] for mlbuild targets.
    pub build_type: String,
    pub external_parameters: ExternalParameters,
    pub internal_parameters: InternalParameters,
    /// Every input with its digest: data, source files, upstream outputs, tools.
    pub resolved_dependencies: Vec<ResourceDescriptor>,
}

/// The parameters a user controls (a verifier should compare them with what it expects).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalParameters {
    /// The target label, e.g. `//models:fraud`.
    pub target: String,
    /// The target's `params` table as JSON (maps sorted).
    pub params: serde_json::Value,
}

/// Parameters mlbuild derived itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InternalParameters {
    /// The BLAKE3 action key (hex) of the target's action.
    pub action_key: String,
    /// The target kind (`train`, `package`, ...).
    pub kind: String,
    /// Anything else worth recording (platform, key schema version), sorted by name.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Who ran the build and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDetails {
    pub builder: Builder,
    pub metadata: BuildMetadata,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub byproducts: Vec<ResourceDescriptor>,
}

/// The build platform: its id names the trust boundary, version the software.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Builder {
    pub id: String,
    /// Component name to version, e.g. `{"mlbuild": "0.1.0"}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub version: BTreeMap<String, String>,
}

/// The invocation: an id to find its logs and history, and its time span (RFC 3339, UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildMetadata {
    pub invocation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_on: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_on: Option<String>,
}

impl Builder {
    /// A builder with `id`, recording this mlbuild-sign's version as mlbuild's.
    pub fn mlbuild(id: impl Into<String>) -> Builder {
        Builder {
            id: id.into(),
            version: BTreeMap::from([("mlbuild".to_owned(), env!("CARGO_PKG_VERSION").to_owned())]),
        }
    }
}

impl BuildMetadata {
    /// Metadata for invocation `invocation_id`, run from `started` to `finished`.
    pub fn new(
        invocation_id: impl Into<String>,
        started: SystemTime,
        finished: SystemTime,
    ) -> Self {
        BuildMetadata {
            invocation_id: invocation_id.into(),
            started_on: Some(rfc3339(started)),
            finished_on: Some(rfc3339(finished)),
        }
    }
}

impl Provenance {
    /// The provenance of one mlbuild target.
    pub fn for_target(
        target: impl Into<String>,
        params: serde_json::Value,
        internal_parameters: InternalParameters,
        resolved_dependencies: Vec<ResourceDescriptor>,
        run_details: RunDetails,
    ) -> Provenance {
        Provenance {
            build_definition: BuildDefinition {
                build_type: BUILD_TYPE.to_owned(),
                external_parameters: ExternalParameters {
                    target: target.into(),
                    params,
                },
                internal_parameters,
                resolved_dependencies,
            },
            run_details,
        }
    }

    /// The statement saying `subjects` were produced by this build.
    pub fn statement(self, subjects: Vec<ResourceDescriptor>) -> ProvenanceStatement {
        Statement::new(subjects, PREDICATE_TYPE, self)
    }
}

/// One subject per regular file under `dir` (relative POSIX path, SHA-256), sorted; the
/// same files [`crate::model::sign_dir`] signs, minus nothing: the signature file, if
/// present, is a subject too.
pub fn dir_subjects(dir: &Path) -> Result<Vec<ResourceDescriptor>, SignError> {
    Ok(crate::model::hash_tree(dir, &[])?
        .into_iter()
        .map(|(name, sha256)| ResourceDescriptor::named(name, "sha256", sha256))
        .collect())
}

/// Signs `statement` as a DSSE envelope.
pub fn sign(statement: &ProvenanceStatement, key: &PrivateKey) -> Envelope {
    let payload = serde_json::to_vec(statement).expect("statements always serialize");
    Envelope::sign(PAYLOAD_TYPE, payload, key)
}

/// The envelope as one line of JSON (a valid `.json` file and a one-line `.intoto.jsonl`).
pub fn to_json_line(envelope: &Envelope) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(envelope).expect("envelopes always serialize");
    bytes.push(b'\n');
    bytes
}

/// Signs `statement` and writes it to `path` (conventionally `<artifact>.intoto.jsonl`).
pub fn write_signed(
    path: &Path,
    statement: &ProvenanceStatement,
    key: &PrivateKey,
) -> Result<(), SignError> {
    std::fs::write(path, to_json_line(&sign(statement, key)))
        .map_err(|e| SignError::io("write", path, e))
}

/// Checks that `envelope_json` (a provenance file's content) is signed by `key` and holds
/// an in-toto statement with the SLSA v1 predicate; returns the statement.
pub fn verify(envelope_json: &[u8], key: &PublicKey) -> Result<ProvenanceStatement, SignError> {
    let error = |reason: String| SignError::Format {
        origin: "provenance".into(),
        reason,
    };
    let envelope: Envelope = serde_json::from_slice(envelope_json)
        .map_err(|e| error(format!("not a DSSE envelope ({e})")))?;
    let payload = envelope.verify(key)?;
    if envelope.payload_type != PAYLOAD_TYPE {
        return Err(error(format!(
            "payload type is `{}`, expected `{PAYLOAD_TYPE}`",
            envelope.payload_type
        )));
    }
    let statement: Statement<serde_json::Value> = serde_json::from_slice(payload)
        .map_err(|e| error(format!("payload is not an in-toto statement ({e})")))?;
    if statement.type_ != STATEMENT_TYPE || statement.predicate_type != PREDICATE_TYPE {
        return Err(error(format!(
            "statement `{}` with predicate `{}`, expected `{STATEMENT_TYPE}` with `{PREDICATE_TYPE}`",
            statement.type_, statement.predicate_type
        )));
    }
    let predicate: Provenance = serde_json::from_value(statement.predicate)
        .map_err(|e| error(format!("malformed SLSA provenance predicate ({e})")))?;
    Ok(Statement {
        type_: statement.type_,
        subject: statement.subject,
        predicate_type: statement.predicate_type,
        predicate,
    })
}

/// `time` as RFC 3339 in UTC with second precision, e.g. `2026-11-22T08:00:00Z` (times
/// before 1970 as its start).
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time.max(UNIX_EPOCH)).to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    /// A statement using every field, as the integrator's builds will produce.
    pub(crate) fn example() -> ProvenanceStatement {
        let started = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let finished = started + Duration::from_secs(42);
        let mut training =
            ResourceDescriptor::named("//features:train_set/train.csv", "blake3", "b".repeat(64));
        training.digest.insert("sha256".into(), "c".repeat(64));
        Provenance::for_target(
            "//models:fraud",
            serde_json::json!({"epochs": 30, "lr": 0.05, "seed": 42}),
            InternalParameters {
                action_key: "a".repeat(64),
                kind: "package".into(),
                extra: BTreeMap::from([("platform".into(), serde_json::json!("x86_64-linux"))]),
            },
            vec![
                ResourceDescriptor::named("models/train.py", "blake3", "d".repeat(64)),
                training,
                ResourceDescriptor {
                    uri: Some("file:///usr/bin/python3".into()),
                    name: Some("tool:python3".into()),
                    digest: BTreeMap::from([("blake3".into(), "e".repeat(64))]),
                    ..Default::default()
                },
            ],
            RunDetails {
                builder: Builder::mlbuild(LOCAL_BUILDER_ID),
                metadata: BuildMetadata::new("0193f1d2-inv", started, finished),
                byproducts: Vec::new(),
            },
        )
        .statement(vec![ResourceDescriptor::named(
            "model.json",
            "sha256",
            "f".repeat(64),
        )])
    }

    #[test]
    fn rfc3339_formats_utc_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_000_042)),
            "2026-11-18T11:07:22Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn statement_has_the_slsa_v1_shape() {
        let json = serde_json::to_value(example()).unwrap();
        assert_eq!(json["_type"], STATEMENT_TYPE);
        assert_eq!(json["predicateType"], PREDICATE_TYPE);
        let definition = &json["predicate"]["buildDefinition"];
        assert_eq!(definition["buildType"], BUILD_TYPE);
        assert_eq!(definition["externalParameters"]["target"], "//models:fraud");
        assert_eq!(
            definition["internalParameters"]["actionKey"],
            "a".repeat(64)
        );
        assert_eq!(definition["internalParameters"]["platform"], "x86_64-linux");
        assert_eq!(
            definition["resolvedDependencies"][1]["digest"]["sha256"],
            "c".repeat(64)
        );
        let run = &json["predicate"]["runDetails"];
        assert_eq!(
            run["builder"]["version"]["mlbuild"],
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(run["metadata"]["invocationId"], "0193f1d2-inv");
        assert_eq!(run["metadata"]["finishedOn"], "2026-11-18T11:07:22Z");
    }

    #[test]
    fn signed_provenance_round_trips_and_rejects_other_keys_and_types() {
        let key = PrivateKey::generate();
        let statement = example();
        let line = to_json_line(&sign(&statement, &key));
        assert_eq!(
            line.iter().filter(|b| **b == b'\n').count(),
            1,
            "one JSONL line"
        );
        assert_eq!(verify(&line, &key.public_key()).unwrap(), statement);
        assert_eq!(line, to_json_line(&sign(&statement, &key)), "deterministic");
        assert!(matches!(
            verify(&line, &PrivateKey::generate().public_key()),
            Err(SignError::BadSignature { .. })
        ));
        // A model signature is a valid envelope but not provenance.
        let other = Envelope::sign(PAYLOAD_TYPE, br#"{"_type":"https://in-toto.io/Statement/v1","subject":[],"predicateType":"https://model_signing/signature/v1.0","predicate":{}}"#.to_vec(), &key);
        let err = verify(&to_json_line(&other), &key.public_key())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "expected `https://in-toto.io/Statement/v1` with `https://slsa.dev/provenance/v1`"
            ),
            "{err}"
        );
    }

    /// `schema/provenance.schema.json`, compiled (which also checks it against the draft
    /// 2020-12 meta-schema).
    fn schema() -> (boon::Schemas, boon::SchemaIndex) {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schema/provenance.schema.json");
        let path = path.canonicalize().unwrap();
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler.set_default_draft(boon::Draft::V2020_12);
        let index = compiler
            .compile(path.to_str().unwrap(), &mut schemas)
            .unwrap_or_else(|e| panic!("provenance schema does not compile: {e:#}"));
        (schemas, index)
    }

    /// Edits a valid statement into an invalid one.
    type Breakage = fn(&mut serde_json::Value);

    #[test]
    fn generated_statement_matches_the_schema() {
        let (schemas, index) = schema();
        let json = serde_json::to_value(example()).unwrap();
        if let Err(e) = schemas.validate(&json, index) {
            panic!("generated provenance does not match the schema: {e:#}");
        }
        // And the schema is not vacuous: each of these breaks it.
        let breakages: [(&str, Breakage); 5] = [
            ("no subjects", |j| j["subject"] = serde_json::json!([])),
            ("subject without sha256", |j| {
                j["subject"][0]["digest"] = serde_json::json!({"blake3": "ab"})
            }),
            ("bad label", |j| {
                j["predicate"]["buildDefinition"]["externalParameters"]["target"] =
                    "models:fraud".into()
            }),
            ("dependency without digest", |j| {
                j["predicate"]["buildDefinition"]["resolvedDependencies"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("digest");
            }),
            ("local time", |j| {
                j["predicate"]["runDetails"]["metadata"]["startedOn"] = "2026-11-18 11:07".into()
            }),
        ];
        for (what, breakage) in breakages {
            let mut broken = json.clone();
            breakage(&mut broken);
            assert!(
                schemas.validate(&broken, index).is_err(),
                "schema accepted {what}"
            );
        }
    }

    #[test]
    fn dir_subjects_hash_every_file() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        std::fs::write(tmp.path().join("sub/a"), b"a").unwrap();
        std::fs::write(tmp.path().join("model.sig"), b"sig").unwrap();
        let subjects = dir_subjects(tmp.path()).unwrap();
        let names: Vec<_> = subjects.iter().map(|s| s.name.clone().unwrap()).collect();
        assert_eq!(names, ["model.sig", "sub/a"]);
        assert_eq!(
            subjects[1].digest["sha256"],
            "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
        );
    }
}
