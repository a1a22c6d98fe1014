//! The sandbox init program that `mlbuild` executes for every sandboxed action, installed
//! beside it.
//!
//! Executing this small program instead of the whole `mlbuild` binary saves each action
//! the loading, relocation and page faults of a large executable; it does nothing but
//! become the init that `mlbuild_sandbox` asks for (`maybe_run_init`). It has no main
//! type.

fn main() {
    mlbuild_sandbox::maybe_run_init();
    eprintln!(
        "{}: started by mlbuild for each sandboxed action, not meant to be run by hand",
        mlbuild_sandbox::INIT_PROGRAM_NAME
    );
    std::process::exit(2);
}
