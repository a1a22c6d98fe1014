//! The OCI image and distribution JSON documents mlbuild writes and reads: manifests,
//! indexes, descriptors and the image config, as plain serde structs.
//!
//! The `oci-spec` crate would bring builders, getters and a dozen dependencies for the
//! five documents used here; these structs hold exactly the fields of the image spec
//! v1.1 that mlbuild writes, in the spec's order, so the same artifact always serializes
//! to the same bytes (and so the same manifest digest). Unknown fields in what a registry
//! returns are ignored, as the spec requires. Main types: [`Manifest`], [`Descriptor`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// Docker's own manifest types, accepted on read so a helpful error can name them.
pub const DOCKER_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST_MEDIA_TYPE: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// A model file: a tar holding `models/<path>`, zstd-compressed.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// The config of an artifact that needs none: the two bytes `{}`.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY_JSON: &[u8] = b"{}";
/// `model.sig` attached as a referrer: a sigstore bundle.
pub const SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The provenance attached as a referrer: a DSSE envelope of an in-toto statement.
pub const PROVENANCE_ARTIFACT_TYPE: &str = "application/vnd.in-toto+json";
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";

/// The file name a layer unpacks to (ORAS and the image spec's pre-defined annotation).
pub const TITLE: &str = "org.opencontainers.image.title";
/// The BLAKE3 of a layer's file, or of the artifact's `.tar.zst` on the manifest.
pub const BLAKE3: &str = "dev.mlbuild.blake3";
/// The package action's key.
pub const ACTION_KEY: &str = "dev.mlbuild.action-key";
/// The target label the artifact was built from.
pub const TARGET: &str = "dev.mlbuild.target";
/// The key id of the signer (`mlbuild key generate` prints it).
pub const SIGNER: &str = "dev.mlbuild.signer";

/// Where a layer's file lives inside the image (KServe's modelcar convention: the model
/// server reads `/models`).
pub const MODEL_ROOT: &str = "models";

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image manifest (image spec v1.1; `artifactType` and `subject` for referrers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index: what the referrers API returns and the fallback tag holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
}

impl Index {
    pub fn empty() -> Index {
        Index {
            schema_version: 2,
            media_type: INDEX_MEDIA_TYPE.to_string(),
            manifests: Vec::new(),
        }
    }
}

/// The image config: enough for container tooling (`skopeo inspect`, a runtime pulling
/// it as a KServe modelcar) to read the artifact as an image, with mlbuild's metadata as
/// labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageConfig {
    pub architecture: String,
    pub os: String,
    pub config: ContainerConfig,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    #[serde(rename = "Labels", default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// The descriptor of the empty config.
pub fn empty_config() -> Descriptor {
    Descriptor {
        media_type: EMPTY_MEDIA_TYPE.to_string(),
        digest: sha256_digest(EMPTY_JSON),
        size: EMPTY_JSON.len() as u64,
        artifact_type: None,
        annotations: BTreeMap::new(),
    }
}

/// The tag of the referrers index for `digest` when the registry has no referrers API
/// (distribution spec v1.1, "referrers tag schema"): `sha256:abc…` → `sha256-abc…`.
pub fn referrers_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_the_specs() {
        assert_eq!(
            empty_config().digest,
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(referrers_tag("sha256:ab"), "sha256-ab");
    }

    #[test]
    fn unknown_fields_from_a_registry_are_ignored() {
        let m: Manifest = serde_json::from_str(
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
                "config":{"mediaType":"x","digest":"sha256:1","size":1,"urls":[]},
                "layers":[],"futureField":true}"#,
        )
        .unwrap();
        assert_eq!(m.config.size, 1);
    }
}
