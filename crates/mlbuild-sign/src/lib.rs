//! Keys, signatures and attestations for mlbuild artifacts.
//!
//! Artifacts are signed in the format of the OpenSSF `model_signing` tool (a sigstore bundle
//! holding a DSSE envelope over an in-toto statement), so the real tool verifies them
//! unchanged; the same ECDSA P-256 keys sign SLSA provenance and remote-cache entries.
//! Main types: [`PrivateKey`], [`PublicKey`], [`SignError`].

mod error;
mod keys;

pub use error::SignError;
pub use keys::{PrivateKey, PublicKey};
