//! Parsing of an mlbuild workspace: `MLBUILD.toml`, every `BUILD.toml`, labels, patterns
//! and source globs, with diagnostics that point at the offending TOML.
//!
//! Everything downstream (graph, executor, CLI) works from the validated [`Workspace`]
//! this crate produces, so malformed input stops here with a precise error.

mod builtin;
mod channel;
mod config;
mod error;
#[cfg(test)]
mod fuzz_tests;
mod gate;
mod label;
mod load_cache;
mod package;
mod params_file;
mod placeholder;
mod source;
mod srcs;
mod sweep;
mod workspace;

pub use builtin::{is_builtin, BUILTIN_KINDS, BUILTIN_PROGRAM, UV_CACHE_IN_SANDBOX, UV_IN_SANDBOX};
pub use channel::{is_valid_channel_name, ChannelSettings, RolloutStrategy};
pub use config::{
    default_capacity, is_system_path, MlflowExport, RemoteSettings, TrustedKey, WorkspaceConfig,
    DEFAULT_SANDBOX_PATH, SYSTEM_DIRS,
};
pub use error::{render_plain, ErrorKind, WorkspaceError};
pub use gate::{suggest, Adjust, Baseline, Gate, GateOp, Threshold};
pub use label::{is_valid_package_name, is_valid_target_name, Label, Pattern};
pub use load_cache::{prune_parse_cache, CacheUse};
pub use package::{
    Package, PythonEnv, Target, TargetSpans, KINDS, PYTHON_ENV_ROOT, RESERVED_ENV, THREAD_ENV,
};
pub use params_file::ParamOverride;
pub use placeholder::{parse_cmd_arg, CmdPart, PlaceholderError};
pub use source::{SourceText, Span};
pub use sweep::{render_value, variant_name, Goal, Select, Sweep, SELECTION_FILE};
pub use workspace::{SourceFile, Workspace, BUILD_FILE, SKIPPED_DIRS, WORKSPACE_FILE};
