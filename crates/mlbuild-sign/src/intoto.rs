//! in-toto Statement v1: a typed predicate about a list of subjects.
//!
//! Both mlbuild's attestations are statements (model signatures with the `model_signing`
//! predicate, build provenance with the SLSA one), so the shared layer lives here, generic
//! over the predicate. Main types: [`Statement`], [`ResourceDescriptor`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The `_type` of every in-toto v1 statement.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";

/// The DSSE `payloadType` of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// An in-toto v1 statement. Field order follows the specification, and maps are sorted, so
/// serializing the same statement always gives the same bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement<P> {
    #[serde(rename = "_type")]
    pub type_: String,
    pub subject: Vec<ResourceDescriptor>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: P,
}

impl<P> Statement<P> {
    /// A statement of [`STATEMENT_TYPE`].
    pub fn new(subject: Vec<ResourceDescriptor>, predicate_type: &str, predicate: P) -> Self {
        Statement {
            type_: STATEMENT_TYPE.to_owned(),
            subject,
            predicate_type: predicate_type.to_owned(),
            predicate,
        }
    }
}

/// An in-toto ResourceDescriptor: something identified by name or URI and digests (algorithm
/// name, e.g. `sha256` or `blake3`, to lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDescriptor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digest: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ResourceDescriptor {
    /// A named resource with one digest.
    pub fn named(name: impl Into<String>, algorithm: &str, hex_digest: impl Into<String>) -> Self {
        ResourceDescriptor {
            name: Some(name.into()),
            digest: BTreeMap::from([(algorithm.to_owned(), hex_digest.into())]),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_serializes_in_spec_order() {
        let statement = Statement::new(
            vec![ResourceDescriptor::named("m", "sha256", "ab")],
            "https://example.com/p",
            serde_json::json!({"k": 1}),
        );
        assert_eq!(
            serde_json::to_string(&statement).unwrap(),
            r#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"m","digest":{"sha256":"ab"}}],"predicateType":"https://example.com/p","predicate":{"k":1}}"#
        );
    }
}
