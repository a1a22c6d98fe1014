//! The remote cache end to end: `mlbuild cache serve` as a real process, two checkouts
//! sharing it, poisoned and broken caches, and a plain nginx WebDAV server.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mlbuild_remote::wire::Entry;
use mlbuild_sign::PrivateKey;

use crate::support::{copy_tree, example_dir, parse_built, pipeline, serve, Built, Killed, Ws};

const WRITE_TOKEN: &str = "ci-runner-token-0123456789abcdef";

/// Output files under `mlbuild-out/` (logs excluded), relative path -> bytes.
fn outputs(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let out = root.join("mlbuild-out");
    let mut files: Vec<(PathBuf, Vec<u8>)> = walkdir::WalkDir::new(&out)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(&out).unwrap().to_path_buf())
        .filter(|rel| !rel.starts_with(".logs"))
        .map(|rel| {
            let bytes = std::fs::read(out.join(&rel)).unwrap();
            (rel, bytes)
        })
        .collect();
    files.sort();
    files
}

/// `mlbuild --json build` in an arbitrary checkout with its own store.
fn build_in(root: &Path, store: &Path, args: &[&str]) -> Built {
    let out = Command::new(env!("CARGO_BIN_EXE_mlbuild"))
        .arg("-C")
        .arg(root)
        .arg("--store")
        .arg(store)
        .args(["--json", "build"])
        .args(args)
        .env("CI", "1")
        .env_remove("MLBUILD_STORE")
        .env_remove("MLBUILD_REMOTE_TOKEN")
        .env_remove("MLBUILD_REMOTE_SIGNING_KEY")
        .output()
        .unwrap();
    parse_built(&out)
}

fn finished(b: &Built) -> &serde_json::Value {
    b.events
        .iter()
        .find(|e| e["event"] == "build_finished")
        .expect("a build_finished event")
}

fn count(b: &Built, event: &str) -> usize {
    b.events.iter().filter(|e| e["event"] == event).count()
}

fn warnings(b: &Built) -> Vec<String> {
    b.events
        .iter()
        .filter(|e| e["event"] == "warning")
        .map(|e| e["message"].as_str().unwrap().to_string())
        .filter(|m| !m.contains("without isolation"))
        // The example's artifact is built without a signing key here.
        .filter(|m| !m.contains("unsigned and without provenance"))
        .collect()
}

/// Writes a signing key pair under `dir`; returns (private key path, public key path).
fn key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = PrivateKey::generate();
    let (private, public) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.pub")),
    );
    std::fs::write(&private, key.to_pem()).unwrap();
    std::fs::write(&public, key.public_key().to_pem()).unwrap();
    (private, public)
}

fn with_remote(mlbuild_toml: &Path, url: &str, trusted: &[&Path]) {
    let keys: Vec<String> = trusted
        .iter()
        .map(|p| format!("{:?}", p.to_str().unwrap()))
        .collect();
    let mut text = std::fs::read_to_string(mlbuild_toml).unwrap_or_default();
    text.push_str(&format!(
        "\n[remote]\nurl = \"{url}\"\ntrusted_keys = [{}]\ntimeout = 5\n",
        keys.join(", ")
    ));
    std::fs::write(mlbuild_toml, text).unwrap();
}

#[test]
fn two_runners_share_one_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // CI writes with a token; anyone may read.
    std::fs::write(t.join("tokens"), format!("write {WRITE_TOKEN}\n")).unwrap();
    std::fs::write(t.join("ci-token"), WRITE_TOKEN).unwrap();
    let (_server, url) = serve(
        &t.join("cache"),
        &[
            "--anonymous",
            "read",
            "--token-file",
            t.join("tokens").to_str().unwrap(),
        ],
    );
    let (ci_key, ci_pub) = key_pair(t, "ci");
    let (a, b) = (t.join("runner-a/ws"), t.join("runner-b/checkout"));
    for root in [&a, &b] {
        copy_tree(&example_dir(), root);
        with_remote(&root.join("MLBUILD.toml"), &url, &[&ci_pub]);
    }

    // Runner A: empty store, everything executes and is uploaded, signed.
    let first = build_in(
        &a,
        &t.join("store-a"),
        &[
            "//models:fraud",
            "--remote-token-file",
            t.join("ci-token").to_str().unwrap(),
            "--remote-signing-key",
            ci_key.to_str().unwrap(),
        ],
    );
    assert_eq!(first.code, 0, "{first:#?}");
    // Every action of the example: data, validation, drift, features, the sweep's
    // variants and selection, evaluation, card, package.
    let n = first.executed;
    assert!(n >= 10, "{first:#?}");
    assert_eq!(first.cached, 0);
    let summary = finished(&first);
    assert_eq!(summary["remote_uploads"], n as u64, "{summary}");
    assert!(summary["remote_uploaded_bytes"].as_u64().unwrap() > 0);
    assert_eq!(count(&first, "remote_uploaded"), n as usize);
    assert!(warnings(&first).is_empty(), "{:?}", warnings(&first));

    // Runner B: another checkout, another empty store, no write token: nothing executes,
    // every output is downloaded and identical.
    let second = build_in(&b, &t.join("store-b"), &["//models:fraud"]);
    assert_eq!(second.code, 0, "{second:#?}");
    assert_eq!((second.executed, second.cached), (0, n), "{second:#?}");
    assert_eq!(count(&second, "action_started"), 0, "nothing runs");
    let summary = finished(&second);
    assert_eq!(summary["remote_hits"], n as u64, "{summary}");
    let down = summary["remote_downloaded_bytes"].as_u64().unwrap();
    let downloaded: u64 = second
        .events
        .iter()
        .filter(|e| e["event"] == "remote_downloaded")
        .map(|e| e["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(down, downloaded);
    assert!(down > 0);
    assert_eq!(summary["remote_uploads"], 0, "a reader uploads nothing");
    assert_eq!(outputs(&a), outputs(&b));
    assert!(!outputs(&b).is_empty());
    assert!(warnings(&second).is_empty(), "{:?}", warnings(&second));
    // The downloaded results are recorded locally: without the remote, all is cached.
    let log = Command::new(env!("CARGO_BIN_EXE_mlbuild"))
        .arg("-C")
        .arg(&b)
        .arg("--store")
        .arg(t.join("store-b"))
        .args(["build", "//models:fraud", "--no-remote"])
        .env("CI", "1")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&log.stderr);
    assert!(log.contains(&format!("0 executed, {n} cached")), "{log}");

    // Change one hyperparameter in B: only training and what follows it execute.
    let params_toml = b.join("params.toml");
    let text = std::fs::read_to_string(&params_toml).unwrap();
    assert!(text.contains("epochs = 15"));
    std::fs::write(&params_toml, text.replace("epochs = 15", "epochs = 14")).unwrap();
    let third = build_in(&b, &t.join("store-b"), &["//models:fraud"]);
    assert_eq!(third.code, 0, "{third:#?}");
    for label in [
        "//data:transactions",
        "//data:validated",
        "//data:drift",
        "//features:train_set",
    ] {
        assert_eq!(third.status[label], "cached", "{label}: {third:#?}");
    }
    for label in [
        "//models:fraud_model",
        "//models:evaluation",
        "//models:card",
        "//models:fraud",
    ] {
        assert_eq!(third.status[label], "executed", "{label}: {third:#?}");
    }
    assert_eq!(finished(&third)["remote_hits"], 0);
    // B has no write token, so its new results stay local.
    assert_eq!(finished(&third)["remote_uploads"], 0);

    // Plain-text output names the remote traffic in the summary line.
    let out = Command::new(env!("CARGO_BIN_EXE_mlbuild"))
        .arg("-C")
        .arg(&b)
        .arg("--store")
        .arg(t.join("store-c"))
        .args(["build", "//data:transactions"])
        .env("CI", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("downloaded //data:transactions from the remote cache"),
        "{stderr}"
    );
    assert!(stderr.contains("; remote: 1 hits ("), "{stderr}");

    // `cache stats` sees both sides.
    let stats = Command::new(env!("CARGO_BIN_EXE_mlbuild"))
        .arg("-C")
        .arg(&b)
        .arg("--store")
        .arg(t.join("store-b"))
        .args(["--json", "cache", "stats"])
        .output()
        .unwrap();
    assert_eq!(stats.status.code(), Some(0));
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert!(stats["local"]["actions"].as_u64().unwrap() >= 8, "{stats}");
    assert_eq!(stats["remote"]["reachable"], true, "{stats}");
    assert_eq!(
        stats["remote"]["status"]["entries"]["ac"], n as u64,
        "{stats}"
    );
    assert!(stats["remote"]["status"]["hit_rate"].as_f64().unwrap() > 0.0);
}

/// Builds the small pipeline in a fresh workspace with `MLBUILD.toml` pointing at `url`.
fn pipeline_ws(url: &str, trusted: &[&Path]) -> Ws {
    let ws = Ws::new();
    pipeline(&ws);
    with_remote(&ws.path("MLBUILD.toml"), url, trusted);
    ws
}

#[test]
fn poisoned_entries_are_refused_and_rebuilt_locally() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let (_server, url) = serve(&cache, &["--anonymous", "write"]);
    let (ci_key, ci_pub) = key_pair(tmp.path(), "ci");
    let (intruder_key, _) = key_pair(tmp.path(), "intruder");

    let a = pipeline_ws(&url, &[&ci_pub]);
    let first = a.build(&["//...", "--remote-signing-key", ci_key.to_str().unwrap()]);
    assert_eq!((first.code, first.executed), (0, 3), "{first:#?}");
    let key_of = |label: &str| {
        first
            .events
            .iter()
            .find(|e| e["event"] == "target_finished" && e["label"] == label)
            .unwrap()["key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Rewrite the stored entries behind the server's back.
    let entry_path = |label: &str| cache.join("ac").join(key_of(label));
    let entry = |label: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(entry_path(label)).unwrap()).unwrap()
    };
    // 1. unsigned
    let mut raw = entry("//data:raw");
    raw["signatures"] = serde_json::json!([]);
    std::fs::write(entry_path("//data:raw"), raw.to_string()).unwrap();
    // 2. properly signed, but by a key nobody trusts
    let model = entry("//models:model");
    let intruder = PrivateKey::load(&intruder_key).unwrap();
    let parsed: Entry = serde_json::from_value(model.clone()).unwrap();
    let resigned = Entry::new(parsed.key, parsed.result, Some(&intruder));
    std::fs::write(entry_path("//models:model"), resigned.to_json()).unwrap();
    // 3. a wrong output digest under the trusted signature: pointing at another blob the
    // cache holds (the model's output), so only the signature can tell
    let mut report = entry("//models:report");
    let other = model["result"]["outputs"]["model.txt"]["digest"].clone();
    report["result"]["outputs"]["report.txt"]["digest"] = other;
    std::fs::write(entry_path("//models:report"), report.to_string()).unwrap();

    let b = pipeline_ws(&url, &[&ci_pub]);
    let second = b.build(&["//..."]);
    assert_eq!(
        second.code, 0,
        "a poisoned cache never fails a build: {second:#?}"
    );
    assert_eq!((second.executed, second.cached), (3, 0), "{second:#?}");
    assert_eq!(finished(&second)["remote_hits"], 0);
    // An altered entry is named with its target; entries no trusted key signed are
    // counted, each kind in one warning.
    let intruder_id = intruder.public_key().key_id();
    let warned = warnings(&second);
    assert_eq!(warned.len(), 3, "{warned:#?}");
    for expected in [
        "remote cache: 1 entry was unsigned and not used".to_owned(),
        format!(
            "remote cache: 1 entry was signed by a key not in `trusted_keys` (`{intruder_id}`) and not used"
        ),
    ] {
        assert!(
            warned.iter().any(|w| w.starts_with(&expected)),
            "{expected}: {warned:#?}"
        );
    }
    assert!(
        warned
            .iter()
            .any(|w| w.contains("does not verify")
                && w.ends_with("; building //models:report locally")),
        "{warned:#?}"
    );
    assert_eq!(
        b.read("mlbuild-out/models/report/report.txt"),
        a.read("mlbuild-out/models/report/report.txt")
    );
    assert_eq!(
        b.read("mlbuild-out/models/model/model.txt"),
        a.read("mlbuild-out/models/model/model.txt")
    );
}

#[test]
fn a_broken_cache_slows_a_build_but_never_breaks_it() {
    let tmp = tempfile::tempdir().unwrap();
    // Nothing listens here.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = pipeline_ws(&format!("http://127.0.0.1:{port}"), &[]);
    let b = down.build(&["//..."]);
    assert_eq!((b.code, b.executed), (0, 3), "{b:#?}");
    let warned = warnings(&b);
    assert_eq!(
        warned.len(),
        1,
        "one warning, not one per action: {warned:?}"
    );
    assert!(warned[0].contains("unreachable"), "{warned:?}");
    // `--no-remote` does not even try.
    std::fs::write(down.path("data/gen.sh"), "echo changed > \"$1\"\n").unwrap();
    let b = down.build(&["//...", "--no-remote"]);
    assert_eq!(b.code, 0);
    assert!(warnings(&b).is_empty(), "{:?}", warnings(&b));

    // Evicted blobs: the entry is a miss on the server, the build runs locally.
    let cache = tmp.path().join("cache");
    let (_server, url) = serve(&cache, &["--anonymous", "write"]);
    let a = pipeline_ws(&url, &[]);
    assert_eq!(a.build_ok(&["//..."]).executed, 3);
    for entry in std::fs::read_dir(cache.join("cas")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let c = pipeline_ws(&url, &[]);
    let built = c.build_ok(&["//..."]);
    assert_eq!(built.executed, 3, "{built:#?}");

    // Bad client settings are input errors, not silent local builds.
    let run = c.run(&[
        "build",
        "//...",
        "--remote-token-file",
        "/nonexistent/token",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("token file"), "{}", run.stderr);
    c.write(
        "MLBUILD.toml",
        "[remote]\nurl = \"http://x\"\ntoken = \"s3cret\"\n",
    );
    let run = c.run(&["build", "//..."]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("MLBUILD_REMOTE_TOKEN"),
        "{}",
        run.stderr
    );
}

/// nginx with WebDAV PUT on a free loopback port, in the foreground, one process.
fn nginx(root: &Path) -> (Killed, String) {
    let binary = ["nginx", "/usr/sbin/nginx"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("-v")
                .stderr(Stdio::null())
                .status()
                .is_ok()
        })
        .expect(
            "nginx is not installed: the WebDAV remote-cache test needs it \
             (`apt-get install nginx`; .ci/run installs it)",
        );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for dir in ["data", "tmp", "logs"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    let r = root.display();
    let conf = format!(
        "daemon off;
master_process off;
worker_processes 1;
pid {r}/nginx.pid;
error_log {r}/logs/error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {r}/tmp/body;
  proxy_temp_path {r}/tmp/proxy;
  fastcgi_temp_path {r}/tmp/fastcgi;
  uwsgi_temp_path {r}/tmp/uwsgi;
  scgi_temp_path {r}/tmp/scgi;
  server {{
    listen 127.0.0.1:{port};
    root {r}/data;
    location / {{
      dav_methods PUT;
      create_full_put_path on;
      client_max_body_size 0;
    }}
  }}
}}
"
    );
    std::fs::write(root.join("nginx.conf"), conf).unwrap();
    let child = Command::new(binary)
        .arg("-p")
        .arg(root)
        .arg("-e")
        .arg(root.join("logs/error.log"))
        .arg("-c")
        .arg(root.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nginx");
    let mut guard = Killed(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = guard.0.try_wait() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(guard.0.stderr.as_mut().unwrap(), &mut err);
            panic!("nginx exited with {status}: {err}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nginx did not start listening"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (guard, format!("http://127.0.0.1:{port}/mlbuild"))
}

#[test]
fn the_client_works_against_plain_nginx_webdav() {
    let tmp = tempfile::tempdir().unwrap();
    let (_nginx, url) = nginx(tmp.path());
    let (ci_key, ci_pub) = key_pair(tmp.path(), "ci");
    let a = pipeline_ws(&url, &[&ci_pub]);
    let first = a.build(&["//...", "--remote-signing-key", ci_key.to_str().unwrap()]);
    assert_eq!((first.code, first.executed), (0, 3), "{first:#?}");
    assert_eq!(finished(&first)["remote_uploads"], 3, "{first:#?}");
    assert!(warnings(&first).is_empty(), "{:?}", warnings(&first));
    // nginx stores exactly what was sent: raw blobs under their own digest.
    let cas = tmp.path().join("data/mlbuild/cas");
    let mut blobs = 0;
    for entry in std::fs::read_dir(&cas).unwrap() {
        let entry = entry.unwrap();
        let bytes = std::fs::read(entry.path()).unwrap();
        assert_eq!(
            blake3::hash(&bytes).to_hex().to_string(),
            entry.file_name().to_string_lossy(),
            "blobs on a WebDAV server are stored uncompressed"
        );
        blobs += 1;
    }
    assert!(blobs >= 3);

    let b = pipeline_ws(&url, &[&ci_pub]);
    let second = b.build(&["//..."]);
    assert_eq!(second.code, 0, "{second:#?}");
    assert_eq!((second.executed, second.cached), (0, 3), "{second:#?}");
    assert_eq!(finished(&second)["remote_hits"], 3);
    assert_eq!(outputs(&a.root()), outputs(&b.root()));

    // `cache stats` says what it can about a server without statistics.
    let run = b.run(&["cache", "stats"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("not an mlbuild server"),
        "{}",
        run.stdout
    );
}

/// A workspace of eight independent actions that finish together, so that their uploads
/// run at once, pointed at `url` (`read_only` under `[remote]` when asked).
fn parallel_ws(url: &str, read_only: bool) -> Ws {
    let ws = Ws::new();
    let mut build = String::new();
    for i in 0..8 {
        build.push_str(&format!(
            "[target.t{i}]\ncmd = [\"sh\", \"-c\", \"sleep 0.2; echo {i} > {{out}}/o.txt\"]\nouts = [\"o.txt\"]\n\n"
        ));
    }
    ws.write("p/BUILD.toml", &build);
    with_remote(&ws.path("MLBUILD.toml"), url, &[]);
    if read_only {
        let toml = ws.read("MLBUILD.toml");
        ws.write("MLBUILD.toml", &format!("{toml}read_only = true\n"));
    }
    ws
}

/// `mlbuild --json build ARGS` in `ws` without any remote credentials from the test's
/// environment.
fn build_without_token(ws: &Ws, args: &[&str]) -> Built {
    let mut full = vec!["--json", "build", "-j", "8"];
    full.extend_from_slice(args);
    let out = ws
        .command(&full)
        .env_remove("MLBUILD_REMOTE_TOKEN")
        .env_remove("MLBUILD_REMOTE_SIGNING_KEY")
        .output()
        .unwrap();
    parse_built(&out)
}

/// How many requests the server refused for want of a token.
fn unauthorized(ws: &Ws) -> u64 {
    let out = ws
        .command(&["--json", "cache", "stats"])
        .env_remove("MLBUILD_REMOTE_TOKEN")
        .output()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    stats["remote"]["status"]["unauthorized"]
        .as_u64()
        .unwrap_or_else(|| panic!("{stats}"))
}

#[test]
fn an_anonymous_reader_is_told_once_that_it_cannot_upload() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, url) = serve(&tmp.path().join("cache"), &["--anonymous", "read"]);

    // No token, not read-only: the uploads, all under way at once, are refused; one
    // warning says so and how to stop trying.
    let ws = parallel_ws(&url, false);
    let b = build_without_token(&ws, &["//p:all"]);
    assert_eq!((b.code, b.executed), (0, 8), "{b:#?}");
    assert_eq!(finished(&b)["remote_uploads"], 0);
    let warned = warnings(&b);
    assert_eq!(
        warned.len(),
        1,
        "one warning, not one per upload: {warned:?}"
    );
    assert!(
        warned[0].contains("401") && warned[0].contains("read_only = true"),
        "{warned:?}"
    );
    // The summary says what the remote did, refusal included, in JSON and in text.
    assert_eq!(finished(&b)["remote"], true);
    assert_eq!(finished(&b)["remote_limitation"], "uploads refused");
    let ws_text = parallel_ws(&url, false);
    let out = ws_text
        .command(&["build", "-j", "8", "//p:all"])
        .env_remove("MLBUILD_REMOTE_TOKEN")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = text
        .lines()
        .find(|l| l.starts_with("build succeeded"))
        .unwrap_or_default();
    assert!(
        summary.contains("; remote: 0 hits") && summary.ends_with(", uploads refused"),
        "{text}"
    );

    // Read-only by configuration, in MLBUILD.toml or by flag: it never tries, so there
    // is nothing to warn about.
    let before = unauthorized(&ws);
    let ws = parallel_ws(&url, true);
    let b = build_without_token(&ws, &["//p:all"]);
    assert_eq!((b.code, b.executed), (0, 8), "{b:#?}");
    assert!(warnings(&b).is_empty(), "{:?}", warnings(&b));
    let ws = parallel_ws(&url, false);
    let b = build_without_token(&ws, &["//p:all", "--remote-read-only"]);
    assert_eq!((b.code, b.executed), (0, 8), "{b:#?}");
    assert!(warnings(&b).is_empty(), "{:?}", warnings(&b));
    assert_eq!(
        unauthorized(&ws),
        before,
        "a read-only client never tries to upload"
    );
}

#[test]
fn entries_signed_by_an_untrusted_key_are_reported_once_with_a_count() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, url) = serve(&tmp.path().join("cache"), &["--anonymous", "write"]);
    let (other_key, _) = key_pair(tmp.path(), "other");
    let (_, ci_pub) = key_pair(tmp.path(), "ci");
    let other_id = PrivateKey::load(&other_key).unwrap().public_key().key_id();

    // Someone uploads eight results signed with a key the readers do not trust.
    let writer = parallel_ws(&url, false);
    let b = build_without_token(
        &writer,
        &[
            "//p:all",
            "--remote-signing-key",
            other_key.to_str().unwrap(),
        ],
    );
    assert_eq!(finished(&b)["remote_uploads"], 8, "{b:#?}");

    let reader = parallel_ws(&url, true);
    let toml = reader.read("MLBUILD.toml").replace(
        "trusted_keys = []",
        &format!("trusted_keys = [{:?}]", ci_pub.to_str().unwrap()),
    );
    reader.write("MLBUILD.toml", &toml);
    let b = build_without_token(&reader, &["//p:all"]);
    assert_eq!((b.code, b.executed), (0, 8), "{b:#?}");
    assert_eq!(
        warnings(&b),
        [format!(
            "remote cache: 8 entries were signed by a key not in `trusted_keys` (`{other_id}`) and \
             not used: built locally instead (if you trust that key, add its public key to \
             `[remote] trusted_keys`)"
        )]
    );
}

/// The fenced block of `lang` that follows the line `after` in `doc`.
fn doc_block<'a>(doc: &'a str, after: &str, lang: &str) -> &'a str {
    let rest = &doc[doc.find(after).unwrap_or_else(|| panic!("no {after:?}"))..];
    let open = format!("```{lang}\n");
    let start = rest.find(&open).unwrap() + open.len();
    &rest[start..start + rest[start..].find("```").unwrap()]
}

#[test]
fn the_remote_cache_quick_start_keys_work_as_written() {
    // docs/remote-cache.md: the key commands, then its MLBUILD.toml and CI command, as
    // written (only the URL and the home directory are the test's).
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/remote-cache.md"),
    )
    .unwrap();
    let keys = doc_block(&doc, "Once, for the CI runners' signing key", "sh");
    let toml = doc_block(&doc, "In `MLBUILD.toml`", "toml");
    let tmp = tempfile::tempdir().unwrap();
    let (home, bin) = (tmp.path().join("home"), tmp.path().join("bin"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    // `git add` here only checks that what it is told to commit exists.
    std::fs::write(
        bin.join("git"),
        "#!/bin/sh\n[ \"$1\" = add ] && shift && for f; do [ -e \"$f\" ] || { echo \"git add: no $f\" >&2; exit 1; }; done\n",
    )
    .unwrap();
    std::fs::set_permissions(
        bin.join("git"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_mlbuild"), bin.join("mlbuild")).unwrap();

    let (_server, url) = serve(&tmp.path().join("cache"), &["--anonymous", "write"]);
    let ci = pipeline_ws(&url, &[]);
    let out = Command::new("sh")
        .args(["-e", "-c", keys])
        .current_dir(ci.root())
        .env("HOME", &home)
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{keys}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mlbuild_toml = format!(
        "[workspace]\nname = \"test\"\n{}",
        toml.replace("http://cache.internal:8080", &url)
    );
    ci.write("MLBUILD.toml", &mlbuild_toml);

    // CI signs with the private key; a developer's checkout trusts the committed public
    // key and downloads everything without a warning.
    let signing_key = home.join("ci.pem");
    let b = ci.build_ok(&[
        "//...",
        "--remote-signing-key",
        signing_key.to_str().unwrap(),
    ]);
    assert_eq!(finished(&b)["remote_uploads"], 3, "{b:#?}");
    let dev = Ws::new();
    pipeline(&dev);
    dev.write("MLBUILD.toml", &mlbuild_toml);
    dev.write("keys/ci.pub", &ci.read("keys/ci.pub"));
    let b = dev.build_ok(&["//..."]);
    assert_eq!((b.executed, b.cached), (0, 3), "{b:#?}");
    assert!(warnings(&b).is_empty(), "{:?}", warnings(&b));
}
