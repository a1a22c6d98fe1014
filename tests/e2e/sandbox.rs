//! The sandbox as a build sees it: hermetic environment, hidden workspace, no network.

use crate::support::Ws;

fn namespaces_available(ws: &Ws) -> bool {
    let b = ws.build(&["//probe:p"]);
    b.events
        .iter()
        .any(|e| e["event"] == "sandbox_selected" && e["sandbox"] == "namespaces")
}

fn probe(ws: &Ws) {
    ws.write("probe/BUILD.toml", "[target.p]\ncmd = [\"true\"]\n");
}

#[test]
fn undeclared_workspace_files_and_home_are_invisible() {
    let ws = Ws::new();
    probe(&ws);
    ws.write("a/declared.txt", "yes\n");
    ws.write("a/undeclared.txt", "secret\n");
    ws.write("top-secret.txt", "secret\n");
    let root = ws.root().to_string_lossy().into_owned();
    ws.write(
        "a/BUILD.toml",
        &format!(
            r#"
[target.x]
srcs = ["declared.txt"]
cmd = ["sh", "-c", "ls > {{out}}/ls.txt; test -e undeclared.txt && echo visible > {{out}}/leak.txt; test -e {root}/top-secret.txt && echo visible >> {{out}}/leak.txt; test -e {root}/a/undeclared.txt && echo visible >> {{out}}/leak.txt; env | sort > {{out}}/env.txt; true"]
outs = ["ls.txt", "env.txt"]
"#
        ),
    );
    let b = ws.build(&["//a:x"]);
    assert_eq!(b.code, 0, "{b:#?}");
    assert_eq!(ws.read("mlbuild-out/a/x/ls.txt"), "declared.txt\n");
    let env = ws.read("mlbuild-out/a/x/env.txt");
    for fixed in [
        "TZ=UTC",
        "LC_ALL=C.UTF-8",
        "SOURCE_DATE_EPOCH=0",
        "PYTHONHASHSEED=0",
    ] {
        assert!(env.contains(fixed), "{env}");
    }
    assert!(!env.contains("CI="), "host env leaked: {env}");
    assert!(!env.contains("NO_COLOR"), "host env leaked: {env}");
}

#[test]
fn network_is_unreachable_unless_declared() {
    let ws = Ws::new();
    probe(&ws);
    if !namespaces_available(&ws) {
        eprintln!("skipping: no user namespaces on this machine");
        return;
    }
    // A listener on the host's loopback: reachable from the host, not from the sandbox.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('reachable')\nexcept OSError:\n    print('unreachable')\n"
    );
    ws.write("n/probe.py", &script);
    ws.write(
        "n/BUILD.toml",
        r#"
[target.closed]
srcs = ["probe.py"]
cmd = ["sh", "-c", "python3 probe.py > {out}/net.txt"]
outs = ["net.txt"]

[target.open]
srcs = ["probe.py"]
cmd = ["sh", "-c", "python3 probe.py > {out}/net.txt"]
outs = ["net.txt"]
network = true
"#,
    );
    let b = ws.build(&["//n:all"]);
    assert_eq!(b.code, 0, "{b:#?}");
    assert_eq!(ws.read("mlbuild-out/n/closed/net.txt"), "unreachable\n");
    assert_eq!(ws.read("mlbuild-out/n/open/net.txt"), "reachable\n");
    drop(listener);
}

#[test]
fn gpu_targets_never_share_the_gpu() {
    let ws = Ws::new();
    ws.write("MLBUILD.toml", "[resources]\ngpu = 1\ncpu = 4\n");
    ws.write(
        "t/BUILD.toml",
        r#"
[target.a]
cmd = ["sh", "-c", "sleep 0.2; echo a > {out}/m"]
outs = ["m"]
resources = { gpu = 1 }
[target.b]
cmd = ["sh", "-c", "sleep 0.2; echo b > {out}/m"]
outs = ["m"]
resources = { gpu = 1 }
[target.c]
cmd = ["sh", "-c", "echo c > {out}/m"]
outs = ["m"]
"#,
    );
    let b = ws.build(&["--jobs", "4", "//t:all"]);
    assert_eq!(b.code, 0, "{b:#?}");
    // Replay the event stream: at no point are both GPU targets running.
    let mut running = std::collections::BTreeSet::new();
    let mut max_gpu = 0;
    for e in &b.events {
        let label = e["label"].as_str().unwrap_or("");
        match e["event"].as_str() {
            Some("action_started") => {
                running.insert(label.to_string());
            }
            Some("target_finished") => {
                running.remove(label);
            }
            _ => {}
        }
        let gpu = running.iter().filter(|l| *l != "//t:c").count();
        max_gpu = max_gpu.max(gpu);
    }
    assert_eq!(max_gpu, 1);
}

#[test]
fn unschedulable_resource_is_an_error() {
    let ws = Ws::new();
    ws.write(
        "t/BUILD.toml",
        "[target.a]\ncmd = [\"true\"]\nresources = { gpu = 2 }\n",
    );
    let run = ws.run(&["build", "//t:a"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("needs gpu = 2, but the machine's capacity is 0"),
        "{}",
        run.stderr
    );
}

#[test]
fn timeout_kills_the_action() {
    let ws = Ws::new();
    ws.write(
        "t/BUILD.toml",
        "[target.slow]\ncmd = [\"sleep\", \"30\"]\ntimeout = 1\n",
    );
    let run = ws.run(&["build", "//t:slow"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("timed out after 1s"), "{}", run.stderr);
}

#[test]
fn sigterm_stops_running_actions_and_leaves_the_store_usable() {
    let ws = Ws::new();
    ws.write(
        "t/BUILD.toml",
        "[target.slow]\ncmd = [\"sleep\", \"60\"]\n[target.quick]\ncmd = [\"sh\", \"-c\", \"echo q > {out}/q\"]\nouts = [\"q\"]\n",
    );
    let mut child = ws.command(&["build", "//t:slow"]).spawn().unwrap();
    // Wait until the action is running (its exec dir exists in the build's scratch in
    // the store).
    let tmp = ws.store().join("tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let busy = walkdir::WalkDir::new(&tmp)
            .max_depth(2)
            .into_iter()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("exec-"));
        if busy {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "action never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    unsafe_kill(child.id() as i32);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let b = ws.build_ok(&["//t:quick"]);
    assert_eq!(b.executed, 1);
}

fn unsafe_kill(pid: i32) {
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
}

#[test]
fn secrets_reach_the_action_but_not_the_key_or_the_store() {
    let ws = Ws::new();
    ws.write(
        "s/BUILD.toml",
        r#"
[target.x]
cmd = ["sh", "-c", "case \"$API_TOKEN\" in s3cret-*) echo ok > {out}/o;; esac"]
outs = ["o"]
secret_env = ["API_TOKEN"]
"#,
    );
    let build = |token: Option<&str>| {
        let mut cmd = ws.command(&["--json", "build", "//s:x"]);
        match token {
            Some(t) => cmd.env("API_TOKEN", t),
            None => cmd.env_remove("API_TOKEN"),
        };
        cmd.output().unwrap()
    };
    let first = build(Some("s3cret-first"));
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(ws.read("mlbuild-out/s/x/o"), "ok\n");

    // Rotating the secret does not change the key: the result is reused.
    let second = build(Some("s3cret-second"));
    assert!(second.status.success());
    assert!(String::from_utf8_lossy(&second.stdout).contains("\"status\":\"cached\""));

    // The value never reaches the store (index, its WAL, blobs) or the logs.
    for entry in walkdir::WalkDir::new(ws.store()) {
        let entry = entry.unwrap();
        if !entry.file_type().is_file() {
            continue;
        }
        let bytes = std::fs::read(entry.path()).unwrap();
        for needle in [&b"s3cret-first"[..], &b"s3cret-second"[..]] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "secret found in {}",
                entry.path().display()
            );
        }
    }
    for entry in std::fs::read_dir(ws.path("mlbuild-out/.logs/s")).unwrap() {
        let log = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!log.contains("s3cret"), "{log}");
    }

    // A declared secret that is not set is a clear error (bad input).
    ws.write(
        "s/BUILD.toml",
        &ws.read("s/BUILD.toml").replace("echo ok", "echo ok2"),
    );
    let missing = build(None);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stdout)
        .contains("needs the secret environment variable `API_TOKEN`"));
}
