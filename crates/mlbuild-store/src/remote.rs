//! The seam between the executor and remote caches.
//!
//! The executor knows remote caches only through [`RemoteCache`] (DESIGN.md section 9:
//! the executor never depends on the HTTP client), so a test double, the HTTP client of
//! `mlbuild-remote` or, later, a Remote Execution API backend plug in the same way.
//!
//! The contract is what makes a remote cache safe to use: a remote can make a build
//! faster, never wrong and never failed. An implementation verifies everything it
//! downloads (blob digests; action-cache entry signatures against the trusted keys)
//! before anything reaches the local store, and reports every problem as a
//! [`RemoteError`], which the executor turns into a warning and a local rebuild.

use mlbuild_digest::Digest;

use crate::{ActionResult, Store};

/// How much a remote operation moved over the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfer {
    /// Blobs copied (downloaded by `fetch`, uploaded by `upload`).
    pub blobs: u64,
    /// Bytes on the wire, after compression.
    pub bytes: u64,
}

/// A remote hit: the verified result, whose blobs are now all in the local store.
#[derive(Clone, Debug)]
pub struct RemoteHit {
    pub result: ActionResult,
    pub transfer: Transfer,
}

/// Why a remote operation did not help. Never fatal to a build.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    pub message: String,
    pub kind: RemoteErrorKind,
}

/// What kind of problem a [`RemoteError`] is, where its reporting depends on it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RemoteErrorKind {
    /// Anything else: reported as it happens.
    #[default]
    Other,
    /// The remote cannot be reached; the client stops using it for this build.
    Unreachable,
    /// The remote refused an upload (no write access); the client stops uploading.
    UploadRefused,
    /// An action-cache entry not signed by any trusted key: signed only by these others
    /// (key ids), or unsigned (none). The build says so once, with a count.
    Untrusted { signers: Vec<String> },
}

impl RemoteError {
    pub fn new(message: impl Into<String>) -> Self {
        RemoteError {
            message: message.into(),
            kind: RemoteErrorKind::Other,
        }
    }

    pub fn with_kind(self, kind: RemoteErrorKind) -> Self {
        RemoteError { kind, ..self }
    }
}

/// A remote action cache plus CAS. Called from blocking threads; implementations bound
/// their own concurrency and time out quickly when the remote is down or slow.
///
/// `Debug` so build options holding one stay printable.
pub trait RemoteCache: Send + Sync + std::fmt::Debug {
    /// A short description for messages, e.g. the base URL.
    fn describe(&self) -> String;

    /// Looks up `key`. On a hit, downloads every blob the entry references that the
    /// local store lacks, verifying each digest (and the entry's signature when trusted
    /// keys are configured), ingests them, and returns the result. `Ok(None)` is a plain
    /// miss; `Err` is anything else (unreachable, corrupt, untrusted).
    fn fetch(&self, key: &Digest, store: &Store) -> Result<Option<RemoteHit>, RemoteError>;

    /// Whether this client may write (it has write credentials and is not read-only).
    fn can_write(&self) -> bool;

    /// What limited the cache during this build, for the summary line: `read-only`,
    /// `uploads refused`, `unreachable`; `None` when nothing did.
    fn limitation(&self) -> Option<String> {
        None
    }

    /// Uploads the blobs of `result` the remote lacks, then the (signed) action-cache
    /// entry for `key`. `Ok(None)`: nothing was uploaded because this client may not
    /// write (any more), which is not an error to report again.
    fn upload(
        &self,
        key: &Digest,
        result: &ActionResult,
        store: &Store,
    ) -> Result<Option<Transfer>, RemoteError>;
}
