//! The remote cache: an HTTP server (`mlbuild cache serve`) and the client the executor
//! uses through [`mlbuild_store::RemoteCache`].
//!
//! What one CI runner built, the others download instead of rebuilding. The protocol is
//! plain HTTP (`GET`/`HEAD`/`PUT` on `{base}/cas/<blake3>` and `{base}/ac/<key>`), so the
//! same client also works against a WebDAV server such as nginx. Nothing on the wire is
//! trusted: blobs are re-hashed on both ends, and action-cache entries carry ECDSA
//! signatures that clients check against their trusted keys ([`wire`]).
//! Main types: [`HttpRemote`] (client), [`server::Server`].

mod client;
pub mod server;
pub mod tokens;
pub mod wire;

pub use client::{load_trusted_key, ClientConfig, HttpRemote, RemoteStatus};
pub use tokens::{Access, Tokens};
