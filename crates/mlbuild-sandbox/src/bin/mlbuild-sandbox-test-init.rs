//! Stand-in for the `mlbuild` binary in this crate's tests: a program that becomes the
//! sandbox init when re-executed as one.
//!
//! `cargo test` builds no `mlbuild` binary, and the test harness cannot act as init, so
//! tests point `set_init_program` here. It has no main type.

fn main() {
    mlbuild_sandbox::maybe_run_init();
    eprintln!("mlbuild-sandbox-test-init: only useful as a sandbox init program");
    std::process::exit(2);
}
