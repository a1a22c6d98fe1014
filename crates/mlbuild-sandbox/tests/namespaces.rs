//! Namespace-mode behaviour with real processes: isolation guarantees, exit status
//! reporting and timeouts.
//!
//! These are the properties hermetic builds rely on, so they are checked end to end
//! rather than mocked; each test skips (with a message) where `probe()` says Plain.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{namespaces_available, Fixture};
use mlbuild_sandbox::{run, ExitStatusKind, Isolation, Outcome, SandboxSpec};

fn run_ns(spec: &SandboxSpec) -> Outcome {
    run(spec, Isolation::Namespaces).unwrap()
}

macro_rules! require_namespaces {
    () => {
        if !namespaces_available() {
            return;
        }
    };
}

#[test]
fn exit_code_and_output_are_propagated() {
    require_namespaces!();
    let fx = Fixture::new();
    let outcome = run_ns(&fx.sh("echo to-out; echo to-err >&2; exit 7"));
    assert_eq!(outcome.status, ExitStatusKind::Exited(7));
    assert_eq!(fx.stdout(), "to-out\n");
    assert_eq!(fx.stderr(), "to-err\n");
}

#[test]
fn environment_is_exactly_the_spec() {
    require_namespaces!();
    let fx = Fixture::new();
    let spec = fx.spec(vec!["/usr/bin/env".into()]);
    assert_eq!(run_ns(&spec).status, ExitStatusKind::Exited(0));
    let expected: String = spec.env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    assert_eq!(fx.stdout(), expected);
}

#[test]
fn cwd_and_inputs_are_visible() {
    require_namespaces!();
    let fx = Fixture::new();
    let outcome = run_ns(&fx.sh("pwd; cat input.txt"));
    assert_eq!(outcome.status, ExitStatusKind::Exited(0), "{}", fx.stderr());
    assert_eq!(
        fx.stdout(),
        format!("{}\ninput data", fx.exec_root.display())
    );
}

#[test]
fn hidden_dirs_are_invisible() {
    require_namespaces!();
    let fx = Fixture::new();
    let secret = fx.ws.join("secret.txt");
    assert!(secret.exists());
    // The fixture root is exposed, the workspace under it hidden, the exec root under
    // that visible again.
    let script = format!(
        "test -e {s} && echo SECRET-VISIBLE; ls -A {ws}; cat {root}/.marker; ls -A /root | wc -l",
        s = secret.display(),
        ws = fx.ws.display(),
        root = fx.root.display(),
    );
    std::fs::write(fx.root.join(".marker"), "exposed\n").unwrap();
    let outcome = run_ns(&fx.sh(&script));
    assert_eq!(outcome.status, ExitStatusKind::Exited(0), "{}", fx.stderr());
    let out = fx.stdout();
    assert!(!out.contains("SECRET-VISIBLE"), "{out}");
    // Only the mount point leading to the exec root shows inside the workspace.
    assert_eq!(out, ".mlbuild\nexposed\n0\n");
}

#[test]
fn exec_root_is_read_only_except_writable_dirs() {
    require_namespaces!();
    let fx = Fixture::new();
    let script = "echo new > input.txt && echo WROTE-INPUT; \
                  echo x > created.txt && echo WROTE-ROOT; \
                  echo y > /usr/mlbuild-test && echo WROTE-USR; \
                  echo result > out/result.txt && echo WROTE-OUT";
    let outcome = run_ns(&fx.sh(script));
    assert_eq!(outcome.status, ExitStatusKind::Exited(0));
    assert_eq!(fx.stdout(), "WROTE-OUT\n");
    assert!(
        fx.stderr().contains("Read-only file system"),
        "{}",
        fx.stderr()
    );
    assert_eq!(
        std::fs::read_to_string(fx.exec_root.join("input.txt")).unwrap(),
        "input data"
    );
    assert!(!fx.exec_root.join("created.txt").exists());
    assert_eq!(
        std::fs::read_to_string(fx.out.join("result.txt")).unwrap(),
        "result\n"
    );
}

#[test]
fn action_cannot_remount_inputs_writable() {
    require_namespaces!();
    let fx = Fixture::new();
    let script = format!(
        "/bin/mount -o remount,rw,bind {e} 2>/dev/null && echo REMOUNTED; \
         /usr/bin/umount -l {e} 2>/dev/null && echo UNMOUNTED; \
         echo x > {e}/evil.txt 2>/dev/null && echo WROTE; exit 0",
        e = fx.exec_root.display()
    );
    let outcome = run_ns(&fx.sh(&script));
    assert_eq!(outcome.status, ExitStatusKind::Exited(0), "{}", fx.stderr());
    assert_eq!(fx.stdout(), "");
    assert!(!fx.exec_root.join("evil.txt").exists());
}

#[test]
fn tmp_is_writable_and_backed_by_tmp_dir() {
    require_namespaces!();
    let fx = Fixture::new();
    let script = format!(
        "echo scratch > /tmp/a.txt && cat {}/a.txt",
        fx.tmp.display()
    );
    let outcome = run_ns(&fx.sh(&script));
    assert_eq!(outcome.status, ExitStatusKind::Exited(0), "{}", fx.stderr());
    assert_eq!(fx.stdout(), "scratch\n");
    assert_eq!(
        std::fs::read_to_string(fx.tmp.join("a.txt")).unwrap(),
        "scratch\n"
    );
}

#[test]
fn works_when_everything_lives_under_host_tmp() {
    require_namespaces!();
    // The sandbox mounts tmp_dir over /tmp, so paths under the host's /tmp must still
    // resolve to the host dirs they name.
    let fx = Fixture::in_dir(&std::env::temp_dir());
    let outcome = run_ns(&fx.sh("cat input.txt > out/copy.txt && echo t > /tmp/t"));
    assert_eq!(outcome.status, ExitStatusKind::Exited(0), "{}", fx.stderr());
    assert_eq!(
        std::fs::read_to_string(fx.out.join("copy.txt")).unwrap(),
        "input data"
    );
    assert!(fx.tmp.join("t").exists());
}

const CONNECT: &str = r#"
import socket, sys
s = socket.socket()
s.settimeout(3)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print('connected')
except OSError as e:
    print('failed', e)
"#;

fn connect_spec(fx: &Fixture, host: &str, port: u16) -> SandboxSpec {
    let argv = ["/usr/bin/python3", "-c", CONNECT, host, &port.to_string()];
    fx.spec(argv.iter().map(|s| s.to_string()).collect())
}

#[test]
fn network_is_blocked_by_default() {
    require_namespaces!();
    if !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("skipping: /usr/bin/python3 not installed");
        return;
    }
    let fx = Fixture::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    let outcome = run_ns(&connect_spec(&fx, "127.0.0.1", port));
    assert_eq!(outcome.status, ExitStatusKind::Exited(0), "{}", fx.stderr());
    assert!(fx.stdout().starts_with("failed"), "{}", fx.stdout());

    let outcome = run_ns(&connect_spec(&fx, "1.1.1.1", 53));
    assert_eq!(outcome.status, ExitStatusKind::Exited(0), "{}", fx.stderr());
    assert!(fx.stdout().starts_with("failed"), "{}", fx.stdout());

    // With network = true the host's loopback listener is reachable.
    let mut spec = connect_spec(&fx, "127.0.0.1", port);
    spec.network = true;
    let outcome = run_ns(&spec);
    assert_eq!(outcome.status, ExitStatusKind::Exited(0), "{}", fx.stderr());
    assert_eq!(fx.stdout(), "connected\n");
}

#[test]
fn host_processes_are_invisible() {
    require_namespaces!();
    let fx = Fixture::new();
    let outcome = run_ns(&fx.sh("ls /proc | grep -c '^[0-9]'"));
    assert_eq!(outcome.status, ExitStatusKind::Exited(0), "{}", fx.stderr());
    let count: u32 = fx.stdout().trim().parse().unwrap();
    // pid 1 (init), sh, ls, grep
    assert!(count <= 4, "saw {count} pids");
}

#[test]
fn timeout_kills_the_action() {
    require_namespaces!();
    let fx = Fixture::new();
    let mut spec = fx.sh("/bin/sleep 100");
    spec.timeout = Some(Duration::from_millis(300));
    let start = Instant::now();
    let outcome = run_ns(&spec);
    assert_eq!(outcome.status, ExitStatusKind::TimedOut);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn background_processes_die_with_the_action() {
    require_namespaces!();
    let fx = Fixture::new();
    let start = Instant::now();
    let outcome = run_ns(&fx.sh("/bin/sleep 100 & exit 3"));
    assert_eq!(outcome.status, ExitStatusKind::Exited(3));
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn signal_death_is_reported_as_signaled() {
    require_namespaces!();
    let fx = Fixture::new();
    let outcome = run_ns(&fx.sh("kill -TERM $$"));
    assert_eq!(outcome.status, ExitStatusKind::Signaled(15));
}

#[test]
fn missing_command_is_spawn_failed() {
    require_namespaces!();
    let fx = Fixture::new();
    let outcome = run_ns(&fx.spec(vec!["/usr/bin/no-such-tool".into()]));
    match outcome.status {
        ExitStatusKind::SpawnFailed(msg) => {
            assert_eq!(msg, "command not found: `/usr/bin/no-such-tool`")
        }
        other => panic!("expected SpawnFailed, got {other:?}"),
    }
    // A host path that exists but is hidden is equally not found.
    let tool = fx.ws.join("tool.sh");
    std::fs::write(&tool, "#!/bin/sh\necho hi\n").unwrap();
    let outcome = run_ns(&fx.spec(vec![tool.to_string_lossy().into_owned()]));
    assert!(
        matches!(outcome.status, ExitStatusKind::SpawnFailed(_)),
        "{outcome:?}"
    );
}

#[test]
fn stdin_is_empty() {
    require_namespaces!();
    let fx = Fixture::new();
    let outcome = run_ns(&fx.sh("cat; echo done"));
    assert_eq!(outcome.status, ExitStatusKind::Exited(0));
    assert_eq!(fx.stdout(), "done\n");
}

#[test]
fn setup_errors_are_io_errors_with_context() {
    require_namespaces!();
    let fx = Fixture::new();
    let mut spec = fx.sh("true");
    spec.expose_readonly.push("/no/such/prefix".into());
    let err = run(&spec, Isolation::Namespaces).unwrap_err();
    assert!(err.to_string().contains("`/no/such/prefix`"), "{err}");

    let mut spec = fx.sh("true");
    spec.cwd = fx.exec_root.join("missing");
    let err = run(&spec, Isolation::Namespaces).unwrap_err();
    assert!(err.to_string().contains("working directory"), "{err}");
}

#[test]
fn many_sandboxes_run_concurrently() {
    require_namespaces!();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let fx = Fixture::new();
                let outcome = run_ns(&fx.sh(&format!("echo {i} > out/n; exit {i}")));
                assert_eq!(outcome.status, ExitStatusKind::Exited(i));
                assert_eq!(
                    std::fs::read_to_string(fx.out.join("n")).unwrap(),
                    format!("{i}\n")
                );
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn system_dirs_are_read_only_and_root_is_minimal() {
    require_namespaces!();
    let fx = Fixture::new();
    let script = "for f in /etc/mlbuild-test /etc/hosts /usr/bin/mlbuild-test /mlbuild-test /dev/mlbuild-test; do \
                    (echo x >> $f) 2>/dev/null && echo WROTE $f; done; \
                  ls -A / | tr '\\n' ' '; echo; echo ok > /dev/null && echo devnull-ok; \
                  hostname";
    let outcome = run_ns(&fx.sh(script));
    assert_eq!(outcome.status, ExitStatusKind::Exited(0), "{}", fx.stderr());
    let out = fx.stdout();
    assert!(!out.contains("WROTE"), "{out}");
    let top: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    for forbidden in ["root", "home", "sys", "var", "srv", "mnt"] {
        assert!(!top.contains(&forbidden), "`/{forbidden}` visible: {top:?}");
    }
    for expected in ["usr", "etc", "dev", "proc", "tmp"] {
        assert!(top.contains(&expected), "`/{expected}` missing: {top:?}");
    }
    assert!(out.contains("devnull-ok\nmlbuild\n"), "{out}");
}
