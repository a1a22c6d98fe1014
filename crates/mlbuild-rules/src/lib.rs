//! Built-in kinds: data validation, drift checks, model packaging and Python environments.
//!
//! Each rule is a plain library function plus a command-line entry point that
//! `mlbuild rule <kind>` calls inside an ordinary sandboxed action, so built-in kinds are
//! cached, keyed, logged, shared through the remote cache and audited exactly like
//! user commands: the tool is the mlbuild binary itself.

pub mod archive;
pub mod drift;
pub mod package;
pub mod python_env;
pub mod schema;
pub mod stats;
pub mod validate;
