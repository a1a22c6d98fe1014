//! End-to-end tests: the real `mlbuild` binary run in temporary workspaces.

mod support;

mod cli;
mod errors;
mod example;
mod incremental;
mod sandbox;
mod store;
