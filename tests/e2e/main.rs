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
mod incremental;
mod metrics;
mod package_rule;
mod params;
mod python_env;
mod remote;
mod sandbox;
mod signing;
mod sklearn;
mod stats;
mod store;
mod sweeps;
