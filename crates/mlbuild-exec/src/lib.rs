//! The executor: from a set of requested targets to up-to-date outputs.
//!
//! For each target, in dependency order, it computes the action key ([`plan`]), looks it
//! up in the store, and either reuses the recorded outputs or runs the command in a fresh
//! sandbox ([`action`]), then links the outputs into `mlbuild-out/` ([`outputs`]).
//! Independent actions run in parallel within `--jobs` and the workspace's declared
//! resources ([`scheduler`]). Main entry point: [`build`]; [`audit`] runs actions a second
//! time without the cache and compares their outputs.

mod action;
mod admission;
pub mod audit;
mod envs;
mod error;
mod events;
mod gates;
mod outputs;
pub mod plan;
mod scheduler;
mod select;
pub mod status;
mod tools;
mod trash;

pub use error::ExecError;
pub use events::{BuildSummary, Event, TargetStatus};
pub use gates::{fmt_threshold, fmt_value, gate_table, parse_metrics, GateError, GateResult};
pub use outputs::out_dir_rel;
pub use plan::{Planned, Planner};
pub use scheduler::{build, build_with_state, BuildOptions, BuildState, UPLOADS_IN_FLIGHT};
pub use status::{explain, status, Explanation, TargetState};
pub use tools::ToolResolver;
