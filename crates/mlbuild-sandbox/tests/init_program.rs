//! A misconfigured init program is a clear setup error, not a silent success.
//!
//! Kept in its own test binary because it changes the process-wide init program.

mod common;

use common::Fixture;
use mlbuild_sandbox::{run, set_init_program, Isolation};

#[test]
fn init_program_that_ignores_the_protocol_is_reported() {
    set_init_program("/bin/true");
    let fx = Fixture::new();
    let err = run(&fx.sh("exit 0"), Isolation::Namespaces).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("did not act as sandbox init"), "{msg}");
    assert!(msg.contains("maybe_run_init"), "{msg}");

    set_init_program("/no/such/init");
    let err = run(&fx.sh("exit 0"), Isolation::Namespaces).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot start sandbox init `/no/such/init`"),
        "{err}"
    );
}
