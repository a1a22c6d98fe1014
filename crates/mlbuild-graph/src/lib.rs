//! The target graph and the action key.
//!
//! [`BuildGraph`] is the closure of the requested targets over their `deps`, checked for
//! cycles and ordered for execution; [`ActionPreimage`] is everything that can change an
//! action's result, whose canonical encoding is hashed into the action key. Keeping the
//! preimage (not just the key) is what lets `mlbuild why` explain a rebuild field by field.

mod explain;
mod graph;
mod key;
mod placeholder;
mod ready;

pub use explain::{diff_preimages, Change};
pub use graph::{BuildGraph, GraphError};
pub use key::{ActionPreimage, InputEntry, KEY_DOMAIN, KEY_SCHEMA_VERSION};
pub use placeholder::{expand_argv, params_to_json, ArgvContext, PlaceholderError};
pub use ready::ReadyQueue;
