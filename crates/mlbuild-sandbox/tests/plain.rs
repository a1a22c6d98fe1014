//! Plain-mode behaviour: no isolation, but exact environment, exit status, output
//! capture and timeouts still hold.
//!
//! Plain mode is the fallback on every non-Linux machine, so it is tested on its own.

mod common;

use std::time::{Duration, Instant};

use common::Fixture;
use mlbuild_sandbox::{run, ExitStatusKind, Isolation};

#[test]
fn exit_code_output_and_cwd() {
    let fx = Fixture::new();
    let outcome = run(&fx.sh("pwd; echo err >&2; exit 5"), Isolation::Plain).unwrap();
    assert_eq!(outcome.status, ExitStatusKind::Exited(5));
    assert_eq!(fx.stdout(), format!("{}\n", fx.exec_root.display()));
    assert_eq!(fx.stderr(), "err\n");
}

#[test]
fn environment_is_exactly_the_spec() {
    let fx = Fixture::new();
    let spec = fx.spec(vec!["/usr/bin/env".into()]);
    let outcome = run(&spec, Isolation::Plain).unwrap();
    assert_eq!(outcome.status, ExitStatusKind::Exited(0));
    let expected: String = spec.env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    assert_eq!(fx.stdout(), expected);
}

#[test]
fn timeout_kills_the_process_group() {
    let fx = Fixture::new();
    let mut spec = fx.sh("/bin/sleep 100 & /bin/sleep 100");
    spec.timeout = Some(Duration::from_millis(200));
    let start = Instant::now();
    let outcome = run(&spec, Isolation::Plain).unwrap();
    assert_eq!(outcome.status, ExitStatusKind::TimedOut);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn signals_and_missing_commands() {
    let fx = Fixture::new();
    let outcome = run(&fx.sh("kill -KILL $$"), Isolation::Plain).unwrap();
    assert_eq!(outcome.status, ExitStatusKind::Signaled(9));
    let outcome = run(
        &fx.spec(vec!["/usr/bin/no-such-tool".into()]),
        Isolation::Plain,
    )
    .unwrap();
    assert_eq!(
        outcome.status,
        ExitStatusKind::SpawnFailed("command not found: `/usr/bin/no-such-tool`".into())
    );
}

#[test]
fn missing_cwd_is_an_error_not_command_not_found() {
    let fx = Fixture::new();
    let mut spec = fx.sh("true");
    spec.cwd = fx.exec_root.join("missing");
    let err = run(&spec, Isolation::Plain).unwrap_err();
    assert!(err.to_string().contains("working directory"), "{err}");
}

#[test]
fn relative_paths_are_rejected() {
    let fx = Fixture::new();
    let mut spec = fx.sh("true");
    spec.tmp_dir = "relative/tmp".into();
    let err = run(&spec, Isolation::Plain).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

/// Without a PID namespace the action's leader exiting would leave its background
/// processes running; the watchdog kills its process group when the action ends.
#[cfg(target_os = "linux")]
#[test]
fn processes_left_behind_are_killed_when_the_action_ends() {
    let fx = Fixture::new();
    let spec = fx.sh("/bin/sleep 30 & echo $! > out/pid");
    let outcome = run(&spec, Isolation::Plain).unwrap();
    assert_eq!(outcome.status, ExitStatusKind::Exited(0));
    let pid = std::fs::read_to_string(fx.out.join("pid")).unwrap();
    let proc_dir = std::path::Path::new("/proc").join(pid.trim());
    let deadline = Instant::now() + Duration::from_secs(5);
    // Dead and reaped (by whoever adopted it), or at least a zombie.
    while std::fs::read_to_string(proc_dir.join("stat")).is_ok_and(|stat| !stat.contains(") Z")) {
        assert!(Instant::now() < deadline, "`sleep 30` survived its action");
        std::thread::sleep(Duration::from_millis(10));
    }
}
