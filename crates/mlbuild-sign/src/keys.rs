//! ECDSA P-256 signing and verification keys in the PEM formats openssl writes.
//!
//! P-256 is the one key type that `openssl`, the OpenSSF `model_signing` tool and sigstore
//! all accept (model_signing refuses Ed25519), so mlbuild uses it for artifacts, provenance
//! and remote-cache entries alike. Signatures are ASN.1 DER over SHA-256 with RFC 6979
//! nonces: signing the same bytes with the same key always gives the same signature, which
//! keeps signed artifacts reproducible. Main types: [`PrivateKey`], [`PublicKey`].

use std::fmt;
use std::path::Path;

use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use p256::elliptic_curve::Generate;
use p256::pkcs8::{DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use sha2::{Digest as _, Sha256};

use crate::SignError;

/// An ECDSA P-256 private key. Its material is a secret: `Debug` prints only the public
/// key's fingerprint.
#[derive(Clone)]
pub struct PrivateKey(SigningKey);

impl PrivateKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> PrivateKey {
        PrivateKey(SigningKey::generate())
    }

    /// Parses a PEM private key: PKCS#8 (`PRIVATE KEY`, what `openssl genpkey` and
    /// `mlbuild key generate` write) or SEC1 (`EC PRIVATE KEY`, what `openssl ecparam
    /// -genkey` writes).
    pub fn from_pem(pem: &str) -> Result<PrivateKey, SignError> {
        Self::parse(pem, "the PEM text")
    }

    /// Reads a PEM private key from `path`; errors name the file.
    pub fn load(path: &Path) -> Result<PrivateKey, SignError> {
        let text = read_key_file(path)?;
        Self::parse(&text, &format!("`{}`", path.display()))
    }

    fn parse(pem: &str, origin: &str) -> Result<PrivateKey, SignError> {
        let pem = trim_to_pem(pem);
        let error = |reason: String| SignError::PrivateKey {
            origin: origin.to_owned(),
            reason,
        };
        let label = pem_label(pem)
            .ok_or_else(|| error("no PEM `-----BEGIN ...-----` block found".into()))?;
        match label {
            "PRIVATE KEY" | "EC PRIVATE KEY" => p256::SecretKey::from_pem(pem)
                .map(|secret| PrivateKey(SigningKey::from(secret)))
                .map_err(|e| {
                    error(format!(
                        "cannot decode the `{label}` block ({e}); is it a P-256 (prime256v1) key?"
                    ))
                }),
            "ENCRYPTED PRIVATE KEY" => Err(error(
                "the key is encrypted; decrypt it with `openssl pkey -in KEY -out PLAIN.pem`"
                    .into(),
            )),
            "PUBLIC KEY" => Err(error("this is a public key; pass the private key".into())),
            other => Err(error(format!(
                "expected a `PRIVATE KEY` or `EC PRIVATE KEY` PEM block, found `{other}`"
            ))),
        }
    }

    /// The key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), readable by openssl.
    pub fn to_pem(&self) -> String {
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .expect("a valid P-256 key always encodes as PKCS#8")
            .to_string()
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(*self.0.verifying_key())
    }

    /// Signs `message` (hashed with SHA-256) and returns the ASN.1 DER signature. Nonces
    /// follow RFC 6979, so the result is deterministic.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let signature: DerSignature = self.0.sign(message);
        signature.as_bytes().to_vec()
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("public_key_id", &self.public_key().key_id())
            .finish_non_exhaustive()
    }
}

/// An ECDSA P-256 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses a PEM SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`), what `openssl
    /// ec -pubout` and `mlbuild key generate` write.
    pub fn from_pem(pem: &str) -> Result<PublicKey, SignError> {
        Self::parse(pem, "the PEM text")
    }

    /// Reads a PEM public key from `path`; errors name the file.
    pub fn load(path: &Path) -> Result<PublicKey, SignError> {
        let text = read_key_file(path)?;
        Self::parse(&text, &format!("`{}`", path.display()))
    }

    fn parse(pem: &str, origin: &str) -> Result<PublicKey, SignError> {
        let pem = trim_to_pem(pem);
        let error = |reason: String| SignError::PublicKey {
            origin: origin.to_owned(),
            reason,
        };
        let label = pem_label(pem)
            .ok_or_else(|| error("no PEM `-----BEGIN ...-----` block found".into()))?;
        match label {
            "PUBLIC KEY" => VerifyingKey::from_public_key_pem(pem)
                .map(PublicKey)
                .map_err(|e| error(format!("cannot decode the `PUBLIC KEY` block ({e}); is it a P-256 (prime256v1) key?"))),
            // The variant's help says how to get the public key.
            "PRIVATE KEY" | "EC PRIVATE KEY" => Err(error("this is a private key".into())),
            other => Err(error(format!("expected a `PUBLIC KEY` PEM block, found `{other}`"))),
        }
    }

    /// The SubjectPublicKeyInfo DER encoding.
    pub fn to_der(&self) -> Vec<u8> {
        self.0
            .to_public_key_der()
            .expect("a valid P-256 key always encodes as SubjectPublicKeyInfo")
            .into_vec()
    }

    /// The key as PEM SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`).
    pub fn to_pem(&self) -> String {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .expect("a valid P-256 key always encodes as SubjectPublicKeyInfo")
    }

    /// Checks an ASN.1 DER ECDSA-SHA256 signature of `message`.
    pub fn verify(&self, message: &[u8], der_signature: &[u8]) -> Result<(), SignError> {
        let signature =
            DerSignature::try_from(der_signature).map_err(|e| SignError::MalformedSignature {
                reason: e.to_string(),
            })?;
        self.0
            .verify(message, &signature)
            .map_err(|_| SignError::BadSignature {
                key_id: self.key_id(),
            })
    }

    /// Lowercase hex SHA-256 of the SubjectPublicKeyInfo DER: a stable fingerprint used as
    /// the `keyid` of signatures and as the signer's identity in action keys.
    pub fn key_id(&self) -> String {
        hex::encode(Sha256::digest(self.to_der()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PublicKey").field(&self.key_id()).finish()
    }
}

fn read_key_file(path: &Path) -> Result<String, SignError> {
    std::fs::read_to_string(path).map_err(|e| SignError::io("read key file", path, e))
}

/// Skips anything before the first PEM block: `openssl ec -text` and some tools put
/// human-readable text or `EC PARAMETERS` blocks ahead of the key.
fn trim_to_pem(text: &str) -> &str {
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let candidate = &rest[start..];
        if !candidate.starts_with("-----BEGIN EC PARAMETERS-----") {
            return candidate.trim_end();
        }
        match candidate.find("-----END EC PARAMETERS-----") {
            Some(end) => rest = &candidate[end + "-----END EC PARAMETERS-----".len()..],
            None => return candidate.trim_end(),
        }
    }
    text.trim()
}

fn pem_label(pem: &str) -> Option<&str> {
    let rest = pem.strip_prefix("-----BEGIN ")?;
    let end = rest.find("-----")?;
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by `openssl ecparam -name prime256v1 -genkey -noout` (SEC1) and converted with
    // `openssl pkcs8 -topk8 -nocrypt` (PKCS#8); the public key by `openssl ec -pubout`.
    const SEC1: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEID0JFeo2Z32RsWxDA5j7CttLK2XuWyuK3ItWUPsugSTOoAoGCCqGSM49
AwEHoUQDQgAENLtNSxwDjFlUrY6zE6UBQfDN6YeksE7V0Sg/WFtIkAV1l6WdIhCM
+OpU2b+MeS8ohYIPZHD3ZFNvib9wIX5u+g==
-----END EC PRIVATE KEY-----
";
    const PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgPQkV6jZnfZGxbEMD
mPsK20srZe5bK4rci1ZQ+y6BJM6hRANCAAQ0u01LHAOMWVStjrMTpQFB8M3ph6Sw
TtXRKD9YW0iQBXWXpZ0iEIz46lTZv4x5LyiFgg9kcPdkU2+Jv3Ahfm76
-----END PRIVATE KEY-----
";
    const PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAENLtNSxwDjFlUrY6zE6UBQfDN6Yek
sE7V0Sg/WFtIkAV1l6WdIhCM+OpU2b+MeS8ohYIPZHD3ZFNvib9wIX5u+g==
-----END PUBLIC KEY-----
";

    #[test]
    fn pem_round_trips() {
        let key = PrivateKey::generate();
        let again = PrivateKey::from_pem(&key.to_pem()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let public = PublicKey::from_pem(&key.public_key().to_pem()).unwrap();
        assert_eq!(public, key.public_key());
        assert!(key.to_pem().starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(public.to_pem().starts_with("-----BEGIN PUBLIC KEY-----\n"));
    }

    #[test]
    fn openssl_sec1_and_pkcs8_keys_load_to_the_same_key() {
        let sec1 = PrivateKey::from_pem(SEC1).unwrap();
        let pkcs8 = PrivateKey::from_pem(PKCS8).unwrap();
        let public = PublicKey::from_pem(PUBLIC).unwrap();
        assert_eq!(sec1.public_key(), public);
        assert_eq!(pkcs8.public_key(), public);
        // Our PKCS#8 output is byte-identical to openssl's.
        assert_eq!(sec1.to_pem(), PKCS8);
        assert_eq!(public.to_pem(), PUBLIC);
    }

    #[test]
    fn ec_parameters_block_before_the_key_is_skipped() {
        let with_params = format!(
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{SEC1}"
        );
        assert_eq!(
            PrivateKey::from_pem(&with_params).unwrap().public_key(),
            PublicKey::from_pem(PUBLIC).unwrap()
        );
    }

    #[test]
    fn signatures_verify_and_are_deterministic() {
        let key = PrivateKey::generate();
        let signature = key.sign(b"hello");
        assert_eq!(
            signature,
            key.sign(b"hello"),
            "RFC 6979 makes signing deterministic"
        );
        assert_eq!(signature[0], 0x30, "DER SEQUENCE");
        key.public_key().verify(b"hello", &signature).unwrap();
        let err = key.public_key().verify(b"hellO", &signature).unwrap_err();
        assert!(matches!(err, SignError::BadSignature { .. }), "{err}");
    }

    #[test]
    fn wrong_key_is_rejected() {
        let signature = PrivateKey::generate().sign(b"payload");
        let other = PrivateKey::generate().public_key();
        let err = other.verify(b"payload", &signature).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "signature does not verify with public key `{}`",
                other.key_id()
            )
        );
    }

    #[test]
    fn malformed_signature_is_a_clear_error() {
        let key = PrivateKey::generate().public_key();
        let err = key.verify(b"x", b"not der").unwrap_err();
        assert!(matches!(err, SignError::MalformedSignature { .. }), "{err}");
    }

    #[test]
    fn key_id_is_sha256_of_spki_der() {
        let public = PublicKey::from_pem(PUBLIC).unwrap();
        let id = public.key_id();
        assert_eq!(id.len(), 64);
        assert_eq!(id, hex::encode(Sha256::digest(public.to_der())));
        assert_eq!(id, id.to_lowercase());
    }

    #[test]
    fn garbage_and_wrong_kinds_are_clear_errors() {
        let err = PrivateKey::from_pem("hello").unwrap_err().to_string();
        assert!(err.contains("no PEM"), "{err}");
        let err = PrivateKey::from_pem(PUBLIC).unwrap_err().to_string();
        assert!(err.contains("this is a public key"), "{err}");
        let err = PublicKey::from_pem(PKCS8).unwrap_err().to_string();
        assert!(err.contains("this is a private key"), "{err}");
        let corrupt = PKCS8.replace("MIGHAgEA", "MIGHAgEB");
        let err = PrivateKey::from_pem(&corrupt).unwrap_err().to_string();
        assert!(err.contains("cannot decode"), "{err}");
        let err =
            PrivateKey::from_pem("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("found `CERTIFICATE`"), "{err}");
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let err = PrivateKey::load(&missing).unwrap_err().to_string();
        assert!(err.contains("nope.pem"), "{err}");
        let bad = dir.path().join("bad.pub");
        std::fs::write(&bad, "junk").unwrap();
        let err = PublicKey::load(&bad).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "`{}` is not an ECDSA P-256 public key",
                bad.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let key = PrivateKey::from_pem(PKCS8).unwrap();
        let debug = format!("{key:?}");
        assert!(debug.contains(&key.public_key().key_id()), "{debug}");
        let secret_hex = hex::encode(p256::SecretKey::from_pem(PKCS8).unwrap().to_bytes());
        assert!(!debug.contains(&secret_hex), "{debug}");
        assert!(!debug.to_lowercase().contains("scalar"), "{debug}");
    }
}
