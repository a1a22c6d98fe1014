//! Content digests and canonical key encoding for mlbuild.
//!
//! Every cache decision in mlbuild rests on two things defined here: the [`Digest`] of some
//! bytes (BLAKE3, 32 bytes, printed as lowercase hex) and [`canonical_json`], the one
//! encoding of a structured value that is stable across machines, runs and map orderings.
//! The action key is the digest of a domain tag plus the canonical JSON of the action's
//! preimage, so a key can always be explained field by field (`mlbuild why`).

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Files at least this large are hashed with BLAKE3's multi-threaded, memory-mapped mode;
/// below it, thread start-up costs more than it saves.
const PARALLEL_HASH_THRESHOLD: u64 = 1 << 20;

/// A BLAKE3 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    pub const LEN: usize = 32;

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Digest of an in-memory byte string.
    pub fn of_bytes(data: &[u8]) -> Self {
        Digest(*blake3::hash(data).as_bytes())
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// First 12 hex characters, for human-facing output only.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

/// Why a string is not a digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{text}` is not a BLAKE3 digest (expected 64 lowercase hex characters)")]
pub struct ParseDigestError {
    pub text: String,
}

impl FromStr for Digest {
    type Err = ParseDigestError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || ParseDigestError {
            text: text.to_string(),
        };
        // Lowercase only, as written: one spelling per digest. A no-op build of 10,000
        // targets parses ~30,000 of these, so decode in one pass.
        fn nibble(c: u8) -> Option<u8> {
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            }
        }
        let hex: &[u8; 64] = text.as_bytes().try_into().map_err(|_| err())?;
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
            *byte = (nibble(pair[0]).ok_or_else(err)? << 4) | nibble(pair[1]).ok_or_else(err)?;
        }
        Ok(Digest(bytes))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Borrowed when the format allows: no allocation per digest.
        struct HexVisitor;
        impl serde::de::Visitor<'_> for HexVisitor {
            type Value = Digest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a BLAKE3 digest as 64 lowercase hex characters")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Digest, E> {
                text.parse().map_err(E::custom)
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Digest, E> {
                match std::str::from_utf8(v) {
                    Ok(text) => self.visit_str(text),
                    Err(_) => Err(E::invalid_value(serde::de::Unexpected::Bytes(v), &self)),
                }
            }
        }
        d.deserialize_str(HexVisitor)
    }
}

/// Hashes a file's contents. Large files use memory mapping and all cores; a file that
/// cannot be mapped (a pipe, a special file) is streamed instead.
pub fn hash_file(path: &Path) -> io::Result<(Digest, u64)> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut hasher = blake3::Hasher::new();
    if len >= PARALLEL_HASH_THRESHOLD {
        hasher.update_mmap_rayon(path)?;
    } else {
        hash_reader(&mut hasher, file)?;
    }
    Ok((Digest(*hasher.finalize().as_bytes()), len))
}

/// Hashes everything a reader yields, returning the digest and the byte count.
pub fn hash_stream(reader: impl Read) -> io::Result<(Digest, u64)> {
    let mut hasher = blake3::Hasher::new();
    let n = hash_reader(&mut hasher, reader)?;
    Ok((Digest(*hasher.finalize().as_bytes()), n))
}

fn hash_reader(hasher: &mut blake3::Hasher, mut reader: impl Read) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                hasher.update(&buf[..n]);
                total += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The canonical encoding of a value: JSON with object keys sorted (serde_json's default
/// map is ordered), no insignificant whitespace, floats in their shortest round-trip form.
///
/// Callers must build values from ordered maps (`BTreeMap`) and never from
/// `std::hash::Hash`-ordered containers; the golden key test in `mlbuild-graph` pins it.
pub fn canonical_json<T: Serialize>(value: &T) -> String {
    // Round-trip through `Value` so that struct field order cannot leak into the encoding:
    // `Value::Object` sorts its keys.
    let value = serde_json::to_value(value).expect("key preimages are plain data");
    serde_json::to_string(&value).expect("a Value always serializes")
}

/// Digest of a domain-separated canonical encoding: `blake3(domain || 0x00 || json)`.
/// The domain keeps keys of different kinds (action keys, entry fingerprints) apart even
/// if their JSON happened to coincide.
pub fn digest_canonical<T: Serialize>(domain: &str, value: &T) -> (Digest, String) {
    let json = canonical_json(value);
    (digest_domain(domain, &json), json)
}

/// `blake3(domain || 0x00 || text)`, for text the caller already holds in canonical form.
pub fn digest_domain(domain: &str, text: &str) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(domain.as_bytes());
    hasher.update(&[0]);
    hasher.update(text.as_bytes());
    Digest(*hasher.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Write;

    #[test]
    fn hex_round_trip() {
        let d = Digest::of_bytes(b"hello");
        assert_eq!(d.to_hex().parse::<Digest>().unwrap(), d);
        assert_eq!(
            d.to_hex(),
            "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"
        );
    }

    #[test]
    fn serde_round_trip_borrowed_and_owned() {
        let d = Digest::of_bytes(b"hello");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert_eq!(
            serde_json::from_reader::<_, Digest>(json.as_bytes()).unwrap(),
            d
        );
        // An escape forces serde_json to hand over an owned string.
        let escaped = json.replacen('e', "\\u0065", 1);
        assert_eq!(serde_json::from_str::<Digest>(&escaped).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"0\"").is_err());
        assert!(serde_json::from_str::<Digest>("7").is_err());
    }

    #[test]
    fn rejects_malformed_hex() {
        for bad in [
            "",
            "abc",
            &"A".repeat(64),
            &"g".repeat(64),
            &"0".repeat(65),
            &"é".repeat(32),
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn small_and_large_files_hash_like_bytes() {
        for size in [0usize, 10, (PARALLEL_HASH_THRESHOLD as usize) + 17] {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let mut f = tempfile::NamedTempFile::new().unwrap();
            f.write_all(&data).unwrap();
            let (d, n) = hash_file(f.path()).unwrap();
            assert_eq!(n, size as u64);
            assert_eq!(d, Digest::of_bytes(&data));
            assert_eq!(hash_stream(&data[..]).unwrap().0, d);
        }
    }

    #[test]
    fn canonical_json_sorts_keys_regardless_of_insertion() {
        #[derive(Serialize)]
        struct S {
            z: u32,
            a: BTreeMap<String, f64>,
        }
        let mut a = BTreeMap::new();
        a.insert("lr".to_string(), 0.05);
        a.insert("epochs".to_string(), 30.0);
        assert_eq!(
            canonical_json(&S { z: 1, a }),
            r#"{"a":{"epochs":30.0,"lr":0.05},"z":1}"#
        );
    }

    #[test]
    fn domain_separates_digests() {
        let (a, _) = digest_canonical("a", &1);
        let (b, _) = digest_canonical("b", &1);
        assert_ne!(a, b);
    }
}
