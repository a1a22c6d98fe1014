//! The signing crate's error type.
//!
//! Keys and signatures come from files a user names on the command line, so every
//! [`SignError`] says which file or which part of a signature was wrong, in words a user can
//! act on (generate a key, pass the public key, re-sign the artifact).

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while loading keys, signing or checking a signature. No
/// variant has a diagnostic `code`: miette prints it as a line of its own above the
/// message, and no user can look it up.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SignError {
    /// A file could not be read or written.
    #[error("failed to {action} `{}`: {error}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        // Not a `#[source]`: the message already says it, and reports would repeat it.
        error: io::Error,
    },

    /// Text that should hold an ECDSA P-256 private key does not.
    #[error("{origin} is not an ECDSA P-256 private key: {reason}")]
    #[diagnostic(
        help("create one with `mlbuild key generate` or `openssl ecparam -name prime256v1 -genkey -noout -out key.pem`")
    )]
    PrivateKey { origin: String, reason: String },

    /// Text that should hold an ECDSA P-256 public key does not.
    #[error("{origin} is not an ECDSA P-256 public key: {reason}")]
    #[diagnostic(
        help("pass the `PUBLIC KEY` PEM written by `mlbuild key generate` or `openssl ec -in key.pem -pubout`")
    )]
    PublicKey { origin: String, reason: String },

    /// A signature is well formed but was not made by this key over this message.
    #[error("signature does not verify with public key `{key_id}`")]
    #[diagnostic(help(
        "the content was changed after signing, or it was signed with another key"
    ))]
    BadSignature { key_id: String },

    /// A signature names (by its key hint) another key than the one given. Both keys are
    /// named by their [`PublicKey::key_id`](crate::PublicKey::key_id), what `mlbuild key
    /// generate` prints, never by `model_signing`'s hint (a hash of the PEM text that no
    /// tool shows a user).
    #[error("signed with another key: {}", key_mismatch(.signed_with.as_deref(), .given))]
    #[diagnostic(help(
        "pass the public key that matches the private key the artifact was signed with"
    ))]
    KeyMismatch {
        /// The signer's key id as the signature records it, when it does (`model_signing`
        /// records none).
        signed_with: Option<String>,
        /// The given public key's id.
        given: String,
    },

    /// A signature is not a DER-encoded ECDSA P-256 signature.
    #[error("malformed ECDSA signature: {reason}")]
    MalformedSignature { reason: String },

    /// A signature file, envelope or statement is not in the expected format.
    #[error("{origin}: {reason}")]
    Format { origin: String, reason: String },

    /// A directory to sign holds something other than regular files and directories.
    #[error("`{}` is {what}; a signed directory may hold only regular files and directories", .path.display())]
    #[diagnostic(help("replace the link with a copy of its target"))]
    UnsupportedFile { path: PathBuf, what: &'static str },
}

fn key_mismatch(signed_with: Option<&str>, given: &str) -> String {
    match signed_with {
        Some(id) => format!("the signature names key `{id}`, the given public key is `{given}`"),
        None => format!("not the given public key `{given}`"),
    }
}

impl SignError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, error: io::Error) -> Self {
        SignError::Io {
            action,
            path: path.into(),
            error,
        }
    }
}
