//! `mlbuild push` and `mlbuild pull` against a real registry on loopback: Debian's
//! `docker-registry` (distribution 2.8.2, plain HTTP, filesystem storage, no referrers
//! API), read back by `skopeo` and verified by `mlbuild verify` and the real OpenSSF
//! `model_signing` tool.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::signing::venv;
use crate::support::{Killed, Run, Ws};

/// The registry program: Debian's `docker-registry`, or `registry` as upstream and Nix
/// name it.
fn registry_program() -> &'static str {
    let on_path = |name: &str| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|dir| dir.join(name).is_file())
    };
    if !on_path("docker-registry") && on_path("registry") {
        "registry"
    } else {
        "docker-registry"
    }
}

/// A `docker-registry` serving `storage` on a free loopback port.
pub(crate) struct Registry {
    _process: Killed,
    /// `127.0.0.1:PORT`.
    pub(crate) addr: String,
}

pub(crate) fn start_registry(storage: &Path) -> Registry {
    start_registry_with(storage, "")
}

/// [`start_registry`] with extra top-level configuration (e.g. `auth:`).
fn start_registry_with(storage: &Path, extra: &str) -> Registry {
    std::fs::create_dir_all(storage).unwrap();
    let config = storage.with_extension("yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:0\n{extra}",
            storage.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(registry_program())
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start docker-registry (apt-get install docker-registry)");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let addr = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("docker-registry exited:\n{seen}"))
            .unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest
                .split(|c: char| c == '"' || c.is_whitespace())
                .next()
                .unwrap()
                .to_string();
        }
        seen.push_str(&line);
        seen.push('\n');
    };
    // Keep draining its log, or it blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Registry {
        _process: Killed(child),
        addr,
    }
}

/// A workspace with a signed-to-be package target `//m:art` built from sources.
fn workspace() -> (Ws, PathBuf, PathBuf) {
    let ws = Ws::new();
    ws.write(
        "m/BUILD.toml",
        "[target.art]\nkind = \"package\"\n\
         files = { \"model.json\" = \"model.json\", \"weights/w.bin\" = \"w.bin\", \"serve.py\" = \"serve.py\" }\n",
    );
    ws.write("m/model.json", "{\"coef\": [0.5, -1.25]}\n");
    ws.write("m/serve.py", "print('serving')\n");
    std::fs::set_permissions(
        ws.path("m/serve.py"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    // Some weights: enough to take several writes, not enough to slow the test.
    let weights: Vec<u8> = (0..300_000u32)
        .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
        .collect();
    std::fs::write(ws.path("m/w.bin"), weights).unwrap();
    let (private, public) = ws.key_pair("signer");
    (ws, private, public)
}

/// `mlbuild ARGS` in `ws` with the signing key configured.
fn signed(ws: &Ws, key: &Path, args: &[&str]) -> Run {
    let out = ws
        .command(args)
        .env("MLBUILD_SIGNING_KEY", key)
        .output()
        .expect("run mlbuild");
    run_of(args, out)
}

fn unsigned(ws: &Ws, args: &[&str]) -> Run {
    let out = ws
        .command(args)
        .env_remove("MLBUILD_SIGNING_KEY")
        .output()
        .expect("run mlbuild");
    run_of(args, out)
}

fn run_of(args: &[&str], out: std::process::Output) -> Run {
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "mlbuild {args:?} -> {}\n{}{}",
        run.code, run.stdout, run.stderr
    );
    run
}

/// `skopeo ARGS` (plain HTTP to the loopback registry); its stdout.
fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("run skopeo (apt-get install skopeo)");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The files of a directory, relative path -> bytes.
fn files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(dir).unwrap();
            (
                rel.to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_pushed_target_is_read_by_skopeo_and_verifies_after_a_skopeo_copy() {
    let (ws, private, public) = workspace();
    let registry = start_registry(&ws.dir.path().join("registry"));
    let reference = format!("oci://{}/models/art:v1", registry.addr);
    let built = crate::support::parse_built(
        &ws.command(&["--json", "build", "//m:art"])
            .env("MLBUILD_SIGNING_KEY", &private)
            .output()
            .unwrap(),
    );
    assert_eq!(built.code, 0, "{built:#?}");
    let action_key = built
        .events
        .iter()
        .find(|e| e["event"] == "target_finished" && e["label"] == "//m:art")
        .and_then(|e| e["key"].as_str())
        .unwrap()
        .to_string();

    let run = signed(&ws, &private, &["--json", "push", "//m:art", &reference]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let pushed = json(&run.stdout);
    let digest = pushed["digest"].as_str().unwrap().to_string();
    let pinned = pushed["reference"].as_str().unwrap().to_string();
    assert_eq!(pinned, format!("{reference}@{digest}"));
    assert_eq!(pushed["tag"], "v1");
    assert_eq!(pushed["referrers_api"], false, "distribution 2.8 has none");
    assert_eq!(pushed["referrers"].as_array().unwrap().len(), 2, "{pushed}");

    // The same artifact again: the same manifest, and every blob skipped.
    let run = signed(&ws, &private, &["--json", "push", "//m:art", &reference]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let again = json(&run.stdout);
    assert_eq!(again["digest"], digest.as_str());
    assert_eq!(again["uploaded"], 0, "{again}");

    // skopeo reads it as an image: one layer per file, mlbuild's labels.
    let docker = format!("docker://{}/models/art:v1", registry.addr);
    let inspect = json(&skopeo(&["inspect", "--tls-verify=false", &docker]));
    assert_eq!(inspect["Digest"], digest.as_str(), "{inspect}");
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 5, "{inspect}");
    assert_eq!(
        inspect["Labels"]["dev.mlbuild.action-key"],
        action_key.as_str()
    );
    assert_eq!(inspect["Labels"]["dev.mlbuild.target"], "//m:art");
    let raw = json(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &docker,
    ]));
    let archive = std::fs::read(ws.path("mlbuild-out/m/art/art.tar.zst")).unwrap();
    assert_eq!(
        raw["annotations"]["dev.mlbuild.blake3"],
        blake3::hash(&archive).to_hex().as_str(),
        "{raw}"
    );
    assert_eq!(
        raw["annotations"]["dev.mlbuild.action-key"],
        action_key.as_str()
    );
    let titles: Vec<&str> = raw["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l["annotations"]["org.opencontainers.image.title"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        titles,
        [
            "manifest.json",
            "model.json",
            "model.sig",
            "serve.py",
            "weights/w.bin"
        ]
    );
    // The signature and provenance, listed under the referrers tag schema's tag.
    let referrers_tag = format!(
        "docker://{}/models/art:{}",
        registry.addr,
        digest.replace(':', "-")
    );
    let index = json(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &referrers_tag,
    ]));
    let mut types: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["artifactType"].as_str().unwrap())
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            "application/vnd.dev.sigstore.bundle.v0.3+json",
            "application/vnd.in-toto+json"
        ]
    );

    // A copy made by skopeo to another repository pulls, verifies with mlbuild and with
    // model_signing, and holds the built files.
    let copy = format!("docker://{}/copies/art:v1", registry.addr);
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &docker,
        &copy,
    ]);
    let out = ws.dir.path().join("pulled/art");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let copied = format!("oci://{}/copies/art:v1", registry.addr);
    let run = unsigned(
        &ws,
        &[
            "pull",
            &copied,
            "--key",
            public.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("5 files verified"), "{}", run.stdout);
    assert!(
        files(&out) == files(&ws.path("mlbuild-out/m/art/art")),
        "the pulled files differ from the built ones"
    );
    let mode = std::fs::metadata(out.join("serve.py"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "the execute bit was lost");
    let run = unsigned(
        &ws,
        &[
            "verify",
            out.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
    let verified = Command::new(venv::model_signing())
        .args([
            "verify",
            "key",
            "art",
            "--signature",
            "art/model.sig",
            "--public_key",
        ])
        .arg(&public)
        .current_dir(out.parent().unwrap())
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "model_signing: {}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );

    // Copied into an OCI layout, the manifest keeps its bytes (so its digest).
    let layout = ws.dir.path().join("layout");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &docker,
        &format!("oci:{}:v1", layout.display()),
    ]);
    let index = json(&std::fs::read_to_string(layout.join("index.json")).unwrap());
    assert_eq!(index["manifests"][0]["digest"], digest.as_str(), "{index}");

    // From the original repository, by digest, the provenance comes too, verified with
    // the key.
    let out = ws.dir.path().join("pulled/with-provenance");
    let provenance = ws.dir.path().join("pulled/art.intoto.jsonl");
    let run = unsigned(
        &ws,
        &[
            "pull",
            &pinned,
            "--key",
            public.to_str().unwrap(),
            out.to_str().unwrap(),
            "--provenance",
            provenance.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        std::fs::read(&provenance).unwrap(),
        std::fs::read(ws.path("mlbuild-out/m/art.intoto.jsonl")).unwrap()
    );
}

#[test]
fn a_pull_that_does_not_verify_writes_nothing() {
    let (ws, private, public) = workspace();
    let registry = start_registry(&ws.dir.path().join("registry"));
    assert_eq!(signed(&ws, &private, &["build", "//m:art"]).code, 0);
    // A path pushes as it is: here the archive, with a channel-style tag.
    let reference = format!("oci://{}/models/art:production", registry.addr);
    let run = unsigned(&ws, &["push", "mlbuild-out/m/art/art.tar.zst", &reference]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("tagged `production`"), "{}", run.stdout);
    // A digest that is not the artifact's is refused before anything is sent.
    let zeros = format!(
        "oci://{}/models/other:v1@sha256:{}",
        registry.addr,
        "0".repeat(64)
    );
    let run = unsigned(&ws, &["push", "mlbuild-out/m/art/art.tar.zst", &zeros]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("as the reference pins"),
        "{}",
        run.stderr
    );

    let (_, other) = ws.key_pair("other");
    let parent = ws.dir.path().join("pulls");
    std::fs::create_dir(&parent).unwrap();
    let out = parent.join("art");
    let run = unsigned(
        &ws,
        &[
            "pull",
            &reference,
            "--key",
            other.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("failed verification, nothing was written"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("signed with another key"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_dir(&parent).unwrap().count(),
        0,
        "the failed pull left something behind"
    );

    // A registry serving a layer whose bytes changed: refused by digest, nothing written.
    let raw = json(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/models/art:production", registry.addr),
    ]));
    let layer = raw["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["annotations"]["org.opencontainers.image.title"] == "weights/w.bin")
        .unwrap();
    let hex = layer["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap();
    let blob = ws.dir.path().join(format!(
        "registry/docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    let mut bytes = std::fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let run = unsigned(
        &ws,
        &[
            "pull",
            &reference,
            "--key",
            public.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("layer `weights/w.bin`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("does not match its digest"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read_dir(&parent).unwrap().count(), 0);

    // A destination with something in it is refused before anything is fetched.
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let run = unsigned(
        &ws,
        &[
            "pull",
            &reference,
            "--key",
            public.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("exists and is not an empty directory"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).unwrap(),
        "mine"
    );

    // A tag that is not there.
    let missing = format!("oci://{}/models/art:nope", registry.addr);
    let run = unsigned(
        &ws,
        &[
            "pull",
            &missing,
            "--key",
            public.to_str().unwrap(),
            parent.join("x").to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("does not exist in the registry"),
        "{}",
        run.stderr
    );
}

/// Forwards connections to `upstream` until `limit` bytes have gone upstream, then kills
/// the registry (`victim`) and cuts every connection: a registry dying mid-upload.
fn killing_proxy(upstream: String, limit: u64, victim: Registry) -> (String, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let sent = Arc::new(AtomicU64::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let victim = Arc::new(Mutex::new(Some(victim)));
    let flag = killed.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            if flag.load(Ordering::SeqCst) {
                let _ = client.shutdown(Shutdown::Both);
                continue;
            }
            let server = TcpStream::connect(&upstream).unwrap();
            let (sent, flag, victim) = (sent.clone(), flag.clone(), victim.clone());
            let (mut c_read, mut s_write) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut s_read, mut c_write) = (server, client);
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 << 10];
                loop {
                    let n = match c_read.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64 > limit {
                        // Said before the kill: once the registry is dead, the push
                        // can fail and the test look at the flag before this thread
                        // runs again. Dropping the registry kills it.
                        flag.store(true, Ordering::SeqCst);
                        victim.lock().unwrap().take();
                        break;
                    }
                    if s_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = c_read.shutdown(Shutdown::Both);
                let _ = s_write.shutdown(Shutdown::Both);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_read, &mut c_write);
                let _ = c_write.shutdown(Shutdown::Both);
            });
        }
    });
    (addr, killed)
}

#[test]
fn a_registry_killed_mid_push_leaves_no_tag() {
    let (ws, private, public) = workspace();
    assert_eq!(signed(&ws, &private, &["build", "//m:art"]).code, 0);
    let storage = ws.dir.path().join("registry");
    let registry = start_registry(&storage);
    // The small layers go first (by path); the weights' layer is cut halfway.
    let (proxy, killed) = killing_proxy(registry.addr.clone(), 600_000, registry);
    let reference = format!("oci://{proxy}/models/art:v1");
    let run = unsigned(&ws, &["push", "mlbuild-out/m/art/art", &reference]);
    assert!(
        killed.load(Ordering::SeqCst),
        "the proxy never cut the push"
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("unreachable"), "{}", run.stderr);
    assert!(run.stderr.contains("nothing was tagged"), "{}", run.stderr);

    // The same storage served again: the tag does not exist...
    let registry = start_registry(&storage);
    let tags = Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{}/models/art", registry.addr))
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&tags.stdout);
    assert!(!listed.contains("\"v1\""), "a tag survived: {listed}");
    let direct = format!("oci://{}/models/art:v1", registry.addr);
    let out = ws.dir.path().join("out");
    let run = unsigned(
        &ws,
        &[
            "pull",
            &direct,
            "--key",
            public.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("does not exist"), "{}", run.stderr);

    // ...and pushing again completes it, reusing the blobs that made it.
    let run = unsigned(&ws, &["--json", "push", "mlbuild-out/m/art/art", &direct]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        json(&run.stdout)["skipped"].as_u64().unwrap() >= 4,
        "{}",
        run.stdout
    );
    let run = unsigned(
        &ws,
        &[
            "pull",
            &direct,
            "--key",
            public.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn bad_references_and_artifacts_are_refused_before_anything_runs() {
    let (ws, private, public) = workspace();
    for (reference, says) in [
        ("oci://", "names no repository"),
        (
            "oci://127.0.0.1:5000/Models:v1",
            "repository names are lowercase",
        ),
        (
            "oci://127.0.0.1:5000/models:bad!tag",
            "`bad!tag` is not a valid tag",
        ),
        (
            "docker://127.0.0.1:5000/models:v1",
            "must start with `oci://`",
        ),
    ] {
        let run = signed(&ws, &private, &["push", "//m:art", reference]);
        assert_eq!(run.code, 2, "{reference}: {}", run.stderr);
        assert!(
            run.stderr.contains("is not a valid OCI reference"),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains(says), "{reference}: {}", run.stderr);
        let run = unsigned(
            &ws,
            &["pull", reference, "--key", public.to_str().unwrap(), "out"],
        );
        assert_eq!(run.code, 2, "{reference}: {}", run.stderr);
        assert!(run.stderr.contains(says), "{reference}: {}", run.stderr);
    }
    assert!(
        !ws.path("mlbuild-out").exists(),
        "a bad reference still built"
    );

    // Unsigned: refused, since no pull could verify it.
    let run = unsigned(&ws, &["push", "//m:art", "oci://127.0.0.1:9/models/art:v1"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("is unsigned"), "{}", run.stderr);
    // Not a package target, not an artifact path.
    let run = unsigned(
        &ws,
        &["push", "m/model.json", "oci://127.0.0.1:9/models/art:v1"],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("is not an artifact"), "{}", run.stderr);
    // A destination whose parent is missing: refused before the registry is contacted.
    let run = unsigned(
        &ws,
        &[
            "pull",
            "oci://127.0.0.1:9/models/art:v1",
            "--key",
            public.to_str().unwrap(),
            "no/such/dir",
        ],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("no/such` does not exist"),
        "{}",
        run.stderr
    );
    // A registry that is not there.
    let run = signed(
        &ws,
        &private,
        &["push", "//m:art", "oci://127.0.0.1:9/models/art:v1"],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("is unreachable"), "{}", run.stderr);
}

#[test]
fn credentials_come_from_the_environment() {
    let (ws, private, public) = workspace();
    assert_eq!(signed(&ws, &private, &["build", "//m:art"]).code, 0);
    // A bcrypt htpasswd entry, as `htpasswd -B` writes it (Python's crypt has bcrypt),
    // at the lowest cost (2^4 rounds): the registry checks it on every request.
    let htpasswd = ws.dir.path().join("htpasswd");
    let hashed = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt; print(crypt.crypt('s3cret', crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))",
        ])
        .output()
        .unwrap();
    assert!(
        hashed.status.success(),
        "{}",
        String::from_utf8_lossy(&hashed.stderr)
    );
    let hashed = String::from_utf8(hashed.stdout).unwrap();
    assert!(hashed.starts_with("$2"), "{hashed}");
    std::fs::write(&htpasswd, format!("alice:{hashed}")).unwrap();
    let registry = start_registry_with(
        &ws.dir.path().join("registry"),
        &format!(
            "auth:\n  htpasswd:\n    realm: mlbuild-test\n    path: {}\n",
            htpasswd.display()
        ),
    );
    let reference = format!("oci://{}/models/art:v1", registry.addr);
    let push = |user: Option<&str>, password: &str| {
        let mut cmd = ws.command(&["push", "mlbuild-out/m/art/art", &reference]);
        cmd.env_remove("MLBUILD_OCI_USERNAME")
            .env_remove("MLBUILD_OCI_PASSWORD");
        if let Some(user) = user {
            cmd.env("MLBUILD_OCI_USERNAME", user)
                .env("MLBUILD_OCI_PASSWORD", password);
        }
        run_of(&["push"], cmd.output().unwrap())
    };

    let run = push(None, "");
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("answered 401"), "{}", run.stderr);
    assert!(
        run.stderr.contains("set `MLBUILD_OCI_USERNAME`"),
        "{}",
        run.stderr
    );
    let run = push(Some("alice"), "wrong");
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("refused the credentials"),
        "{}",
        run.stderr
    );
    let run = push(Some("alice"), "s3cret");
    assert_eq!(run.code, 0, "{}", run.stderr);

    let out = ws.dir.path().join("out");
    let pull = ws
        .command(&[
            "pull",
            &reference,
            "--key",
            public.to_str().unwrap(),
            out.to_str().unwrap(),
        ])
        .env("MLBUILD_OCI_USERNAME", "alice")
        .env("MLBUILD_OCI_PASSWORD", "s3cret")
        .output()
        .unwrap();
    let run = run_of(&["pull"], pull);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(out.join("model.sig").is_file());
}
