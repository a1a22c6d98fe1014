//! OCI distribution of signed mlbuild artifacts: push a `package` artifact to any OCI
//! registry as an image whose layers are the model files, pull one back only after its
//! signature verifies.
//!
//! A registry is where deployment tooling already looks (KServe's `oci://` storage URIs,
//! `skopeo`, `oras`, container runtimes), so an artifact pushed there is ready to deploy
//! anywhere, while the signature and provenance travel with it. Layout and rules:
//! docs/oci.md. Main entry points: [`push()`], [`pull()`], [`Artifact`], [`Reference`].

pub mod client;
pub mod pull;
pub mod push;
pub mod reference;
pub mod spec;

use std::io;
use std::path::{Path, PathBuf};

pub use client::{ClientOptions, Registry};
pub use pull::{pull, PullOptions, Pulled};
pub use push::{push, Artifact, Pushed};
pub use reference::Reference;

/// Everything that can go wrong pushing or pulling. [`OciError::is_bad_input`] separates
/// what the user typed or pointed at from what the registry or the artifact did.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum OciError {
    #[error("`{reference}` is not a valid OCI reference: {reason}")]
    #[diagnostic(help(
        "write `oci://HOST[:PORT]/REPOSITORY[:TAG]`, e.g. `oci://localhost:5000/models/fraud:v1`"
    ))]
    BadReference { reference: String, reason: String },

    #[error("`{}` is not an artifact: {reason}", .path.display())]
    #[diagnostic(help("pass a `package` target's output directory or its `.tar.zst`"))]
    NotAnArtifact { path: PathBuf, reason: String },

    #[error("`{}` is unsigned: it holds no `model.sig`", .path.display())]
    #[diagnostic(help(
        "configure a signing key (`MLBUILD_SIGNING_KEY` or `[signing] key` in MLBUILD.toml) and build it again: a pull verifies the signature"
    ))]
    Unsigned { path: PathBuf },

    #[error("`{}` does not match its `manifest.json`: {}", .path.display(), .problems.join(", "))]
    #[diagnostic(help("rebuild the artifact; files changed after it was packaged"))]
    Modified {
        path: PathBuf,
        problems: Vec<String>,
    },

    #[error(
        "the manifest pushed would have digest `{actual}`, not `{expected}` as the reference pins"
    )]
    #[diagnostic(help("push by tag, or pin the digest the artifact has"))]
    PinnedDigest { expected: String, actual: String },

    #[error("registry `{registry}` is unreachable ({what}: {error})")]
    #[diagnostic(help(
        "check that the registry is running and the address is right; nothing was tagged"
    ))]
    Unreachable {
        registry: String,
        what: String,
        error: String,
    },

    #[error("registry `{repository}` answered {status} to {what}{}", if .detail.is_empty() { String::new() } else { format!(": {}", .detail) })]
    Refused {
        repository: String,
        what: String,
        status: u16,
        detail: String,
    },

    #[error("registry `{repository}` sent something unexpected: {detail}")]
    Protocol { repository: String, detail: String },

    #[error("`{reference}` does not exist in the registry")]
    NotFound { reference: String },

    #[error("`{reference}` is not an mlbuild model: {reason}")]
    NotAModel { reference: String, reason: String },

    #[error("{what} from `{repository}` does not match its digest (it hashes to `{actual}`)")]
    DigestMismatch {
        repository: String,
        what: String,
        actual: String,
    },

    #[error("`{reference}` failed verification, nothing was written: {detail}")]
    Verification { reference: String, detail: String },

    #[error("`{}` exists and is not an empty directory", .path.display())]
    #[diagnostic(help("pull into a new directory; nothing is ever overwritten"))]
    DestinationExists { path: PathBuf },

    #[error("`{}` does not exist, so nothing can be pulled into it", .path.display())]
    #[diagnostic(help("create it first: a pull only creates the final directory"))]
    MissingParent { path: PathBuf },

    #[error("cannot {action} `{}`: {error}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },
}

impl OciError {
    pub(crate) fn io(action: &'static str, path: &Path, error: io::Error) -> OciError {
        OciError::Io {
            action,
            path: path.to_path_buf(),
            error,
        }
    }

    /// Whether the error is about the input (a reference, a path, a destination) rather
    /// than the registry or the artifact's content: `mlbuild` exits 2 for those.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            OciError::BadReference { .. }
                | OciError::NotAnArtifact { .. }
                | OciError::Unsigned { .. }
                | OciError::PinnedDigest { .. }
                | OciError::DestinationExists { .. }
                | OciError::MissingParent { .. }
        )
    }
}
