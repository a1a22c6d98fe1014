//! The store's one error type.
//!
//! Callers mostly need to tell three situations apart: a corrupt blob (drop it and rebuild),
//! a missing blob (rebuild), and everything else (report it); [`StoreError`] keeps those
//! distinguishable while carrying the path or digest a user needs to act on the message.

use std::io;
use std::path::PathBuf;

use mlbuild_digest::Digest;

/// Everything that can go wrong in the store. No variant has a diagnostic `code`: miette
/// prints it as a line of its own above the message, and no user can look it up.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("failed to {action} `{}`", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The SQLite index failed.
    #[error("store index failed while {context}")]
    #[diagnostic(
        help("if another mlbuild is running it may hold the index: try again once it is done; otherwise check that the store is writable and its disk not full; `mlbuild fsck` checks the index for damage")
    )]
    Index {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    /// The SQLite index file is damaged: SQLite found it malformed, or not a database.
    #[error("store index is damaged (found while {context})")]
    #[diagnostic(
        help("run `mlbuild fsck --repair`: it moves the damaged index aside and starts an empty one, keeping every blob; cached results and build history are lost, so the next build re-executes (or downloads) what it needs")
    )]
    IndexDamaged {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    /// A blob's content does not hash to its name.
    #[error("blob `{digest}` is corrupt: its content does not match its name")]
    #[diagnostic(help(
        "run `mlbuild fsck` to drop corrupt blobs and the cache entries that use them"
    ))]
    Corrupt { digest: Digest, path: PathBuf },

    /// A blob that should be in the store is not.
    #[error("blob `{digest}` is missing from the store")]
    #[diagnostic(help("run `mlbuild fsck` to drop cache entries that refer to missing blobs"))]
    Missing { digest: Digest },

    /// The index was written by a newer mlbuild.
    #[error("store index `{}` has schema version {found}, newer than this mlbuild supports ({supported})", .path.display())]
    #[diagnostic(help("upgrade mlbuild, or point it at another store with `--store`"))]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },

    /// A value could not be encoded for the index.
    #[error("failed to encode {what} for the store index")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl StoreError {
    /// True when a blob's content does not match its digest.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, StoreError::Corrupt { .. })
    }

    /// True when a blob is absent from the store.
    pub fn is_missing(&self) -> bool {
        matches!(self, StoreError::Missing { .. })
    }

    /// The digest of the corrupt or missing blob, if that is what went wrong.
    pub fn blob_digest(&self) -> Option<Digest> {
        match self {
            StoreError::Corrupt { digest, .. } | StoreError::Missing { digest } => Some(*digest),
            _ => None,
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    }

    /// True when the index file is damaged (see [`StoreError::IndexDamaged`]).
    pub fn is_index_damaged(&self) -> bool {
        matches!(self, StoreError::IndexDamaged { .. })
    }

    pub(crate) fn index(context: &'static str) -> impl FnOnce(rusqlite::Error) -> Self {
        move |source| {
            if crate::db::is_malformed(&source) {
                StoreError::IndexDamaged { context, source }
            } else {
                StoreError::Index { context, source }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_with_backticks() {
        let d = Digest::of_bytes(b"x");
        let e = StoreError::Corrupt {
            digest: d,
            path: PathBuf::from("/s/cas/ab/x"),
        };
        assert!(e.is_corrupt());
        assert_eq!(e.blob_digest(), Some(d));
        assert_eq!(
            e.to_string(),
            format!("blob `{d}` is corrupt: its content does not match its name")
        );
        let e = StoreError::io("read", "/a/b")(io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(e.to_string(), "failed to read `/a/b`");
        assert!(!e.is_corrupt());
    }
}
