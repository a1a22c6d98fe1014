//! End-to-end tests: the real `mlbuild` binary run in temporary workspaces.

mod support;

mod audit;
mod builtin_kinds;
mod cli;
mod crash;
mod data_rules;
mod errors;
mod example;
mod gates;
mod help;
mod history;
mod incremental;
mod isolation;
mod json;
mod metrics;
mod package_rule;
mod params;
mod pipes;
mod python_env;
mod readme;
mod remote;
mod sandbox;
mod signing;
mod sklearn;
mod stats;
mod store;
mod sweeps;
