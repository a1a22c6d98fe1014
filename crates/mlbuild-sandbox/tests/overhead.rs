//! Measures the per-action cost of the namespace sandbox (run with `--ignored
//! --nocapture`, preferably `--release`); prints, never asserts on timing.
//!
//! Startup overhead multiplies over thousands of small actions, so it is worth a
//! number; but timing is a benchmark concern, so this test is ignored by default.

mod common;

use std::time::Instant;

use common::{namespaces_available, Fixture};
use mlbuild_sandbox::{run, ExitStatusKind, Isolation};

#[test]
#[ignore = "measurement, run explicitly with --nocapture"]
fn startup_overhead() {
    let fx = Fixture::new();
    let spec = fx.spec(vec!["/bin/true".into()]);
    let mut modes = vec![Isolation::Plain];
    if namespaces_available() {
        modes.push(Isolation::Namespaces);
    }
    for isolation in modes {
        run(&spec, isolation).unwrap();
        let n = 50;
        let start = Instant::now();
        for _ in 0..n {
            let outcome = run(&spec, isolation).unwrap();
            assert_eq!(outcome.status, ExitStatusKind::Exited(0));
        }
        let per = start.elapsed() / n;
        println!("{isolation:?}: {n} x /bin/true, {per:?} per action");
    }
    if namespaces_available() {
        // The network namespace is usually the most expensive part; show its share.
        let mut spec = spec.clone();
        spec.network = true;
        let n = 50;
        let start = Instant::now();
        for _ in 0..n {
            run(&spec, Isolation::Namespaces).unwrap();
        }
        println!(
            "Namespaces with network = true: {:?} per action",
            start.elapsed() / n
        );
    }
}
