//! Provenance files are read by the in-toto reference tooling: the DSSE signature checks
//! with Python `cryptography`, and the statement and SLSA predicate parse into the
//! `in-toto-attestation` protobufs (whose JSON parser rejects unknown or misspelled
//! fields), from the venv of `tests/venv`.

mod venv;

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;
use std::time::{Duration, SystemTime};

use mlbuild_sign::intoto::ResourceDescriptor;
use mlbuild_sign::provenance::{
    self, BuildMetadata, Builder, InternalParameters, Provenance, RunDetails, LOCAL_BUILDER_ID,
};
use mlbuild_sign::PrivateKey;

const CHECK: &str = r#"
import base64, json, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import json_format
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2

lines = open(sys.argv[1], 'rb').read().splitlines()
assert len(lines) == 1, 'one envelope per line'
envelope = json.loads(lines[0])
public = serialization.load_pem_public_key(open(sys.argv[2], 'rb').read())
payload = base64.b64decode(envelope['payload'])
ptype = envelope['payloadType'].encode()
assert ptype == b'application/vnd.in-toto+json', ptype
pae = b'DSSEv1 %d %s %d %s' % (len(ptype), ptype, len(payload), payload)
public.verify(base64.b64decode(envelope['signatures'][0]['sig']), pae, ec.ECDSA(hashes.SHA256()))

statement = json_format.Parse(payload, statement_pb2.Statement())
Statement.copy_from_pb(statement).validate()
assert statement.predicate_type == 'https://slsa.dev/provenance/v1'
predicate = json.loads(payload)['predicate']
slsa = json_format.ParseDict(predicate, provenance_pb2.Provenance())
print(slsa.build_definition.external_parameters['target'])
print(slsa.run_details.metadata.invocation_id)
print(len(slsa.build_definition.resolved_dependencies))
print(slsa.run_details.metadata.started_on.seconds)
"#;

#[test]
fn in_toto_tooling_reads_and_checks_our_provenance() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = tmp.path().join("art");
    fs::create_dir(&artifact).unwrap();
    fs::write(artifact.join("model.json"), b"{}").unwrap();
    let key = PrivateKey::generate();
    let started = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let statement = Provenance::for_target(
        "//models:fraud",
        serde_json::json!({"lr": 0.05, "nested": {"a": [1, 2]}}),
        InternalParameters {
            action_key: "0".repeat(64),
            kind: "package".into(),
            extra: BTreeMap::new(),
        },
        vec![
            ResourceDescriptor::named("data/raw/train.csv", "blake3", "1".repeat(64)),
            ResourceDescriptor::named("//models:fraud_model/model.json", "sha256", "2".repeat(64)),
        ],
        RunDetails {
            builder: Builder::mlbuild(LOCAL_BUILDER_ID),
            metadata: BuildMetadata::new("inv-1", started, started + Duration::from_secs(3)),
            byproducts: Vec::new(),
        },
    )
    .statement(provenance::dir_subjects(&artifact).unwrap());
    let path = tmp.path().join("art.intoto.jsonl");
    provenance::write_signed(&path, &statement, &key).unwrap();
    fs::write(tmp.path().join("key.pub"), key.public_key().to_pem()).unwrap();

    let output = Command::new(venv::python())
        .args(["-c", CHECK])
        .arg(&path)
        .arg(tmp.path().join("key.pub"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "//models:fraud\ninv-1\n2\n1795000000\n"
    );
    // And our own verifier reads it back.
    let back = provenance::verify(&fs::read(&path).unwrap(), &key.public_key()).unwrap();
    assert_eq!(back, statement);
}
