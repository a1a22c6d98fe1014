//! `kill_all_running` stops actions running on other threads, in both modes.
//!
//! Kept in its own test binary: it kills every action of the process, which would
//! break unrelated tests running concurrently.

mod common;

use std::time::{Duration, Instant};

use common::{namespaces_available, Fixture};
use mlbuild_sandbox::{kill_all_running, run, ExitStatusKind, Isolation};

fn kill_running(isolation: Isolation) {
    let fx = Fixture::new();
    let spec = fx.sh("/bin/sleep 100");
    let start = Instant::now();
    let handle = std::thread::spawn(move || run(&spec, isolation).unwrap());
    std::thread::sleep(Duration::from_millis(500));
    kill_all_running();
    let outcome = handle.join().unwrap();
    assert_eq!(outcome.status, ExitStatusKind::Signaled(9)); // SIGKILL
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn kill_all_running_stops_actions() {
    // Sequential within one test so the two modes do not kill each other's action.
    kill_running(Isolation::Plain);
    if namespaces_available() {
        kill_running(Isolation::Namespaces);
    }
}
