//! End-to-end tests: the real `mlbuild` binary run in temporary workspaces.

mod support;
// The MLflow server and DVC the bridge tests use.
mod bridges;

mod audit;
mod builtin_kinds;
mod ci_files;
mod cli;
mod completions;
mod crash;
mod data_rules;
mod errors;
mod example;
mod experiments;
mod gates;
mod help;
mod history;
mod import_dvc;
mod incremental;
mod isolation;
mod json;
mod metrics;
mod mlflow;
mod oci;
mod package_rule;
mod params;
mod pipes;
mod python_env;
mod readme;
mod release;
mod remote;
mod sandbox;
mod signing;
mod sklearn;
mod stats;
mod store;
mod sweeps;
