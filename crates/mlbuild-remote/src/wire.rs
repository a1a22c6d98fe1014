//! The wire format server and client share: resource paths, action-cache entries and
//! their signatures.
//!
//! The action cache is the trust boundary (a CAS blob is named by its own hash, so it
//! verifies itself); an entry therefore travels with signatures over a canonical
//! fingerprint of what it claims, as Nix signs binary-cache paths, and every field a
//! client acts on is checked before it reaches the local store. Main types: [`Entry`],
//! [`Kind`].

use base64::Engine as _;
use mlbuild_digest::{canonical_json, Digest};
use mlbuild_sign::{PrivateKey, PublicKey};
use mlbuild_store::ActionResult;
use serde::{Deserialize, Serialize};

/// The version of the entry format and of the signed fingerprint.
pub const ENTRY_FORMAT: u32 = 1;
/// Domain separation: an entry signature can never be replayed as another mlbuild
/// signature (an artifact, a provenance statement) or vice versa.
const FINGERPRINT_DOMAIN: &str = "mlbuild-action-cache-entry-v1";
/// An action-cache entry larger than this is refused by both ends: real ones are a few
/// KiB even for thousands of outputs.
pub const MAX_ENTRY_BYTES: usize = 16 << 20;

/// The two namespaces of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Content-addressed blobs, named by their BLAKE3.
    Cas,
    /// Action-cache entries, named by the action key.
    Ac,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Cas, Kind::Ac];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cas => "cas",
            Kind::Ac => "ac",
        }
    }
}

/// Parses a key as it appears in a URL: exactly 64 lowercase hex digits. Everything else
/// (`..`, slashes, percent escapes, uppercase) is refused, so a key can never name a file
/// outside its directory.
pub fn parse_key(text: &str) -> Option<Digest> {
    if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    text.parse().ok()
}

/// One signature of an entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntrySignature {
    /// The signer's key id: hex SHA-256 of its SubjectPublicKeyInfo DER.
    pub keyid: String,
    /// Base64 of the ASN.1 DER ECDSA-P256-SHA256 signature over [`fingerprint`].
    pub sig: String,
}

/// An action-cache entry as stored on the remote (`{base}/ac/<key>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub format: u32,
    /// The action key; must equal the key in the URL.
    pub key: Digest,
    pub result: ActionResult,
    #[serde(default)]
    pub signatures: Vec<EntrySignature>,
}

/// The bytes a signature covers: the domain, the key and the canonical JSON of the
/// result, NUL-separated. Canonical JSON sorts keys, so the fingerprint does not depend on
/// how the entry's JSON happens to be laid out.
pub fn fingerprint(key: &Digest, result: &ActionResult) -> Vec<u8> {
    format!(
        "{FINGERPRINT_DOMAIN}\0{}\0{}",
        key.to_hex(),
        canonical_json(result)
    )
    .into_bytes()
}

impl Entry {
    /// An entry for `key`, signed by `signer` when given.
    pub fn new(key: Digest, result: ActionResult, signer: Option<&PrivateKey>) -> Entry {
        let signatures = signer
            .map(|k| {
                vec![EntrySignature {
                    keyid: k.public_key().key_id(),
                    sig: base64::engine::general_purpose::STANDARD
                        .encode(k.sign(&fingerprint(&key, &result))),
                }]
            })
            .unwrap_or_default();
        Entry {
            format: ENTRY_FORMAT,
            key,
            result,
            signatures,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("entries are plain data")
    }

    /// Parses an entry and checks what holds whoever signed it: the format, the key it is
    /// stored under, and output paths that stay inside the output directory.
    pub fn parse(bytes: &[u8], expected_key: &Digest) -> Result<Entry, String> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(format!("entry is larger than {MAX_ENTRY_BYTES} bytes"));
        }
        let entry: Entry =
            serde_json::from_slice(bytes).map_err(|e| format!("malformed entry: {e}"))?;
        if entry.format != ENTRY_FORMAT {
            return Err(format!(
                "entry format {} is not supported (expected {ENTRY_FORMAT})",
                entry.format
            ));
        }
        if entry.key != *expected_key {
            return Err(format!(
                "entry is for key `{}`, not `{}`",
                entry.key.short(),
                expected_key.short()
            ));
        }
        for path in entry.result.outputs.keys() {
            if !is_safe_output_path(path) {
                return Err(format!("entry names a hostile output path `{path}`"));
            }
        }
        Ok(entry)
    }

    /// Accepts the entry when `trusted` is empty (no trust configured) or when one of its
    /// signatures verifies with one of the trusted keys.
    pub fn verify(&self, trusted: &[PublicKey]) -> Result<(), Refusal> {
        if trusted.is_empty() {
            return Ok(());
        }
        if self.signatures.is_empty() {
            return Err(Refusal::Untrusted {
                signers: Vec::new(),
            });
        }
        let message = fingerprint(&self.key, &self.result);
        for sig in &self.signatures {
            let Some(key) = trusted.iter().find(|k| k.key_id() == sig.keyid) else {
                continue;
            };
            let Ok(der) = base64::engine::general_purpose::STANDARD.decode(&sig.sig) else {
                return Err(Refusal::Invalid(format!(
                    "signature by `{}` is not valid base64",
                    short_id(&sig.keyid)
                )));
            };
            // The one trusted signer's signature decides: a bad one is tampering, not
            // something another signature could make up for.
            return key.verify(&message, &der).map_err(|_| {
                Refusal::Invalid(format!(
                    "signature by trusted key `{}` does not verify: the entry was altered",
                    short_id(&sig.keyid)
                ))
            });
        }
        Err(Refusal::Untrusted {
            signers: self.signatures.iter().map(|s| shown_id(&s.keyid)).collect(),
        })
    }
}

/// Why [`Entry::verify`] refused an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not signed by any trusted key: signed only by others (their key ids, as the entry
    /// claims them), or unsigned (`signers` empty). A setup question (whose keys to
    /// trust), so a build reports these together rather than once per action.
    Untrusted { signers: Vec<String> },
    /// A signature that cannot be decoded or does not verify: the entry was altered.
    Invalid(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Untrusted { signers } if signers.is_empty() => {
                f.write_str("entry is unsigned and trusted keys are configured")
            }
            Refusal::Untrusted { signers } => {
                let ids: Vec<String> = signers.iter().map(|s| short_id(s)).collect();
                write!(
                    f,
                    "entry is signed only by untrusted keys ({})",
                    ids.join(", ")
                )
            }
            Refusal::Invalid(reason) => f.write_str(reason),
        }
    }
}

fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// A key id from the wire, safe to print: at most 64 alphanumerics (a real one is 64 hex
/// digits), so a hostile entry cannot put control characters on a terminal.
fn shown_id(id: &str) -> String {
    id.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(64)
        .collect()
}

/// A relative POSIX path of normal components: what `outs` may declare. An entry from a
/// remote could otherwise make the client write `../../.bashrc`.
pub fn is_safe_output_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\0')
        && !path.contains('\\')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mlbuild_store::OutputFile;

    use super::*;

    fn result() -> ActionResult {
        let d = Digest::of_bytes(b"weights");
        ActionResult {
            outputs: BTreeMap::from([(
                "model.bin".into(),
                OutputFile {
                    digest: d,
                    size: 7,
                    executable: false,
                },
            )]),
            exit_code: 0,
            stdout: Digest::of_bytes(b""),
            stderr: Digest::of_bytes(b""),
            duration_ms: 3,
            created_at: 1_700_000_000,
            isolation: None,
        }
    }

    #[test]
    fn keys_are_strict() {
        let hex = Digest::of_bytes(b"x").to_hex();
        assert!(parse_key(&hex).is_some());
        for bad in [
            "",
            "..",
            &hex.to_uppercase(),
            &hex[..63],
            &format!("{hex}0"),
            &format!("../{}", &hex[3..]),
            &format!("%2e%2e{}", &hex[6..]),
        ] {
            assert!(parse_key(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn signed_entries_verify_only_with_trusted_keys() {
        let key = Digest::of_bytes(b"action");
        let signer = PrivateKey::generate();
        let other = PrivateKey::generate();
        let entry = Entry::new(key, result(), Some(&signer));
        let parsed = Entry::parse(&entry.to_json(), &key).unwrap();
        assert_eq!(parsed, entry);
        parsed.verify(&[signer.public_key()]).unwrap();
        parsed
            .verify(&[other.public_key(), signer.public_key()])
            .unwrap();
        parsed.verify(&[]).unwrap();
        let err = parsed.verify(&[other.public_key()]).unwrap_err();
        assert_eq!(
            err,
            Refusal::Untrusted {
                signers: vec![signer.public_key().key_id()]
            }
        );
        assert!(err.to_string().contains("untrusted"), "{err}");

        // Tampering with any field of the result breaks the signature.
        let mut tampered = entry.clone();
        tampered.result.outputs.get_mut("model.bin").unwrap().digest = Digest::of_bytes(b"evil");
        let err = tampered.verify(&[signer.public_key()]).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");

        // An entry moved to another key is refused before any signature check.
        let err = Entry::parse(&entry.to_json(), &Digest::of_bytes(b"other")).unwrap_err();
        assert!(err.contains("is for key"), "{err}");

        let unsigned = Entry::new(key, result(), None);
        let err = unsigned.verify(&[signer.public_key()]).unwrap_err();
        assert!(err.to_string().contains("unsigned"), "{err}");
    }

    #[test]
    fn fingerprint_is_pinned() {
        // Changing the fingerprint invalidates every signed entry in every cache.
        let key = Digest::from_bytes([7; 32]);
        let fp = String::from_utf8(fingerprint(&key, &result())).unwrap();
        assert!(fp.starts_with(
            "mlbuild-action-cache-entry-v1\x000707070707070707070707070707070707070707070707070707070707070707\x00{\"created_at\":1700000000,\"duration_ms\":3,"
        ), "{fp}");
    }

    #[test]
    fn hostile_entries_are_refused() {
        let key = Digest::of_bytes(b"action");
        for path in ["../x", "/etc/passwd", "a/../../b", "", "a//b", "./a"] {
            let mut r = result();
            let f = r.outputs.remove("model.bin").unwrap();
            r.outputs.insert(path.into(), f);
            let err = Entry::parse(&Entry::new(key, r, None).to_json(), &key).unwrap_err();
            assert!(err.contains("hostile"), "{path}: {err}");
        }
        assert!(Entry::parse(b"{}", &key).is_err());
        assert!(Entry::parse(b"not json", &key).is_err());
        let mut e = Entry::new(key, result(), None);
        e.format = 99;
        assert!(Entry::parse(&e.to_json(), &key)
            .unwrap_err()
            .contains("format"));
    }
}
