//! DSSE envelopes: a payload, its type and signatures over both.
//!
//! DSSE (Dead Simple Signing Envelope) signs the payload together with its type through the
//! pre-authentication encoding ([`pae`]), so a signed provenance statement can never be
//! passed off as another kind of document. Both `model.sig` (inside a sigstore bundle) and
//! provenance files carry one. Main type: [`Envelope`].

use serde::{Deserialize, Serialize};

use crate::{PrivateKey, PublicKey, SignError};

/// An envelope as DSSE's JSON encoding lays it out: `payload` and `sig` are standard base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    #[serde(with = "base64_bytes")]
    pub payload: Vec<u8>,
    pub payload_type: String,
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature of an [`Envelope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// The signer's [`PublicKey::key_id`]; a hint only, never trusted.
    #[serde(default)]
    pub keyid: String,
    /// ASN.1 DER ECDSA-SHA256 over the PAE of the payload.
    #[serde(with = "base64_bytes")]
    pub sig: Vec<u8>,
}

/// The DSSE v1 pre-authentication encoding: what is actually signed.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

impl Envelope {
    /// Signs `payload` of type `payload_type` with `key`. Deterministic: the same inputs
    /// always give the same envelope.
    pub fn sign(payload_type: &str, payload: Vec<u8>, key: &PrivateKey) -> Envelope {
        let sig = key.sign(&pae(payload_type, &payload));
        Envelope {
            payload,
            payload_type: payload_type.to_owned(),
            signatures: vec![EnvelopeSignature {
                keyid: key.public_key().key_id(),
                sig,
            }],
        }
    }

    /// Returns the payload if one of the signatures was made by `key`.
    pub fn verify(&self, key: &PublicKey) -> Result<&[u8], SignError> {
        let message = pae(&self.payload_type, &self.payload);
        let mut last_error = SignError::Format {
            origin: "DSSE envelope".into(),
            reason: "it holds no signatures".into(),
        };
        for signature in &self.signatures {
            match key.verify(&message, &signature.sig) {
                Ok(()) => return Ok(&self.payload),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }
}

/// Serde adapter for byte fields that DSSE and sigstore encode as standard base64.
pub(crate) mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD
            .decode(text.trim())
            .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // From the DSSE v1 protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn sign_verify_and_json_round_trip() {
        let key = PrivateKey::generate();
        let envelope = Envelope::sign("application/vnd.in-toto+json", b"{}".to_vec(), &key);
        let json = serde_json::to_string(&envelope).unwrap();
        assert!(json.starts_with(r#"{"payload":"e30=","payloadType":"application/vnd.in-toto+json","signatures":[{"keyid":""#), "{json}");
        let back: Envelope = serde_json::from_str(&json).unwrap();
        assert_eq!(back, envelope);
        assert_eq!(back.verify(&key.public_key()).unwrap(), b"{}");
        assert_eq!(
            envelope,
            Envelope::sign("application/vnd.in-toto+json", b"{}".to_vec(), &key)
        );
    }

    #[test]
    fn changed_type_payload_or_key_fails() {
        let key = PrivateKey::generate();
        let envelope = Envelope::sign("a", b"payload".to_vec(), &key);
        let mut other_type = envelope.clone();
        other_type.payload_type = "b".into();
        assert!(other_type.verify(&key.public_key()).is_err());
        let mut other_payload = envelope.clone();
        other_payload.payload = b"payloaD".to_vec();
        assert!(other_payload.verify(&key.public_key()).is_err());
        assert!(envelope
            .verify(&PrivateKey::generate().public_key())
            .is_err());
        let mut unsigned = envelope;
        unsigned.signatures.clear();
        let err = unsigned.verify(&key.public_key()).unwrap_err().to_string();
        assert!(err.contains("no signatures"), "{err}");
    }
}
