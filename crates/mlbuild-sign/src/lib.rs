//! Keys, signatures and attestations for mlbuild artifacts.
//!
//! Artifacts are signed in the format of the OpenSSF `model_signing` tool (a sigstore bundle
//! holding a DSSE envelope over an in-toto statement), so the real tool verifies them
//! unchanged; the same ECDSA P-256 keys sign SLSA provenance and remote-cache entries.
//! Main types: [`PrivateKey`], [`PublicKey`], [`SignError`]; entry points
//! [`model::sign_dir`], [`model::verify_dir`].

pub mod bundle;
pub mod dsse;
mod error;
pub mod intoto;
mod keys;
pub mod model;
pub mod provenance;

pub use error::SignError;
pub use keys::{PrivateKey, PublicKey};
