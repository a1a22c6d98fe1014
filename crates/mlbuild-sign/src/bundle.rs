//! The sigstore bundle (v0.3, JSON) that wraps a key-signed DSSE envelope.
//!
//! `model_signing sign key` writes `model.sig` as a sigstore bundle with no transparency-log
//! entries and, instead of a certificate, a public-key *hint*: the lowercase hex SHA-256 of
//! the signer's public key in PEM form. We write the same shape so the real tool reads our
//! signatures, and read the fields it writes. Main type: [`Bundle`].

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::dsse::Envelope;
use crate::PublicKey;

/// The only bundle media type `model_signing` 1.x accepts for key signatures.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// A sigstore bundle holding a DSSE envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    pub media_type: String,
    pub verification_material: VerificationMaterial,
    pub dsse_envelope: Envelope,
}

/// How a verifier finds the key: here only a hint naming it, never the key itself (the
/// verifier must already trust the key it is given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationMaterial {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKeyHint>,
    /// Always empty for key signatures; kept because the tool writes it.
    #[serde(default)]
    pub tlog_entries: Vec<serde_json::Value>,
}

/// `verificationMaterial.publicKey`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyHint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Bundle {
    /// Wraps `envelope`, naming `key` by the hint `model_signing` expects.
    pub fn new(envelope: Envelope, key: &PublicKey) -> Bundle {
        Bundle {
            media_type: BUNDLE_MEDIA_TYPE.to_owned(),
            verification_material: VerificationMaterial {
                public_key: Some(PublicKeyHint {
                    hint: Some(public_key_hint(key)),
                }),
                tlog_entries: Vec::new(),
            },
            dsse_envelope: envelope,
        }
    }

    /// The key hint recorded in the bundle, if any.
    pub fn key_hint(&self) -> Option<&str> {
        self.verification_material
            .public_key
            .as_ref()
            .and_then(|k| k.hint.as_deref())
    }
}

/// `model_signing`'s key hint: hex SHA-256 of the PEM text of the public key (not of its
/// DER, unlike [`PublicKey::key_id`]).
pub fn public_key_hint(key: &PublicKey) -> String {
    hex::encode(Sha256::digest(key.to_pem().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PrivateKey;

    #[test]
    fn bundle_has_the_shape_model_signing_writes() {
        let key = PrivateKey::generate();
        let bundle = Bundle::new(Envelope::sign("t", b"p".to_vec(), &key), &key.public_key());
        let json: serde_json::Value = serde_json::to_value(&bundle).unwrap();
        assert_eq!(json["mediaType"], BUNDLE_MEDIA_TYPE);
        assert_eq!(
            json["verificationMaterial"]["tlogEntries"],
            serde_json::json!([])
        );
        assert_eq!(
            json["verificationMaterial"]["publicKey"]["hint"],
            public_key_hint(&key.public_key())
        );
        assert_eq!(json["dsseEnvelope"]["payloadType"], "t");
        let back: Bundle = serde_json::from_value(json).unwrap();
        assert_eq!(back, bundle);
    }
}
