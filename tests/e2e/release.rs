//! Release channels end to end: promotions through every rule, approvals, canary
//! rollouts, rollbacks, tampered logs, channels shared through a real cache server, and
//! rendered deployments checked against KServe's and Seldon's published schemas.

use std::path::{Path, PathBuf};

use crate::support::{serve, Run, Ws};

/// A tiny signed-package workspace: `//m:model` writes a model and its metrics (its F1
/// comes from `params.toml`, so `--set model.f1=…` makes a better or worse model), and
/// `//m:pkg` packages them. Channels are appended by each test.
fn package_ws(signed: bool) -> (Ws, PathBuf) {
    let ws = Ws::new();
    let (private, _) = ws.key_pair("signer");
    ws.write(
        "MLBUILD.toml",
        "[workspace]\nname = \"shop\"\nparams = \"params.toml\"\n",
    );
    ws.write("params.toml", "[model]\nf1 = 0.8\n");
    ws.write(
        "m/BUILD.toml",
        r#"
[target.model]
kind = "train"
cmd = ["sh", "-c", "echo '{{\"weights\": [1, 2]}}' > {out}/model.json; echo '{{\"f1\": {params.model.f1}}}' > {out}/metrics.json"]
outs = ["model.json", "metrics.json"]
param_keys = ["model"]

[target.pkg]
kind = "package"
deps = [":model"]
files = { "model.json" = "{deps.model}/model.json", "metrics.json" = "{deps.model}/metrics.json" }
"#,
    );
    (ws, if signed { private } else { PathBuf::new() })
}

fn channels(ws: &Ws, text: &str) {
    let mut toml = ws.read("MLBUILD.toml");
    toml.push_str(text);
    ws.write("MLBUILD.toml", &toml);
}

/// `mlbuild ARGS` with the signing key in the environment (when `key` is a path).
fn run_keyed(ws: &Ws, key: &Path, args: &[&str]) -> Run {
    let mut cmd = ws.command(args);
    if key.as_os_str().is_empty() {
        cmd.env_remove("MLBUILD_SIGNING_KEY");
    } else {
        cmd.env("MLBUILD_SIGNING_KEY", key);
    }
    let out = cmd.output().expect("run mlbuild");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(run: Run) -> Run {
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    run
}

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

/// The sha256 digest of the model a channel serves, as `sha256:HEX`.
fn serving(ws: &Ws, key: &Path, channel: &str) -> String {
    let shown = json(&ok(run_keyed(
        ws,
        key,
        &["--json", "channel", "show", channel],
    )));
    format!(
        "sha256:{}",
        shown["artifact"]["sha256"].as_str().expect("a model")
    )
}

fn log_file(ws: &Ws, channel: &str) -> PathBuf {
    ws.store()
        .join("logs/shop")
        .join(format!("{channel}.jsonl"))
}

#[test]
fn a_model_goes_from_staging_to_production_through_every_rule() {
    let (ws, key) = package_ws(true);
    let (alice, alice_pub) = ws.key_pair("alice");
    let (bob, _) = ws.key_pair("bob");
    let signer_pub = key.with_extension("pub");
    channels(
        &ws,
        &format!(
            r#"
[channel.staging]
signers = [{signer:?}]

[channel.production]
from = "staging"
approvals = 1
approvers = [{alice:?}]
signers = [{signer:?}]
gates = ["f1 >= current.f1"]
rollout = {{ strategy = "canary", steps = [10, 50, 100] }}
oci = "oci://registry.local:5000/models/shop"
model_format = "sklearn"
"#,
            signer = signer_pub.to_str().unwrap(),
            alice = alice_pub.to_str().unwrap(),
        ),
    );

    // Generation 1 of staging; production refuses it before approval, and says why.
    ok(run_keyed(
        &ws,
        &key,
        &["promote", "//m:pkg", "--to", "staging", "--reason", "first"],
    ));
    let v1 = serving(&ws, &key, "staging");
    let refused = run_keyed(&ws, &key, &["promote", "//m:pkg", "--to", "production"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("approvals: 0 of 1"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("nothing was recorded"),
        "{}",
        refused.stderr
    );
    assert!(!log_file(&ws, "production").exists() || ws_lines(&ws, "production") == 0);

    // Only a listed approver may approve.
    let stranger = run_keyed(
        &ws,
        &key,
        &[
            "approve",
            &v1,
            "--channel",
            "production",
            "--key",
            bob.to_str().unwrap(),
        ],
    );
    assert_eq!(stranger.code, 2, "{}", stranger.stderr);
    assert!(
        stranger.stderr.contains("not among the approvers"),
        "{}",
        stranger.stderr
    );
    ok(run_keyed(
        &ws,
        &key,
        &[
            "approve",
            &v1,
            "--channel",
            "production",
            "--key",
            alice.to_str().unwrap(),
        ],
    ));
    let promoted = ok(run_keyed(
        &ws,
        &key,
        &["--json", "promote", "//m:pkg", "--to", "production"],
    ));
    let promoted = json(&promoted);
    assert_eq!(promoted["generation"], 1);
    assert_eq!(
        format!(
            "sha256:{}",
            promoted["artifact"]["sha256"].as_str().unwrap()
        ),
        v1
    );

    // A better model: staging, approval, production behind `f1 >= current.f1`, staged
    // as a canary and rolled out 10 -> 50 -> 100.
    let better = ["--set", "model.f1=0.9"];
    ok(run_keyed(
        &ws,
        &key,
        &[&better[..], &["promote", "//m:pkg", "--to", "staging"]].concat(),
    ));
    let v2 = serving(&ws, &key, "staging");
    assert_ne!(v1, v2);
    ok(run_keyed(
        &ws,
        &key,
        &[
            "approve",
            &v2,
            "--channel",
            "production",
            "--key",
            alice.to_str().unwrap(),
        ],
    ));
    let staged = ok(run_keyed(
        &ws,
        &key,
        &[&better[..], &["promote", "//m:pkg", "--to", "production"]].concat(),
    ));
    assert!(
        staged
            .stdout
            .contains("f1 = 0.9 satisfies 0.8 (current model: 0.8)"),
        "{}",
        staged.stdout
    );
    assert!(
        staged.stdout.contains("canary rollout is staged"),
        "{}",
        staged.stdout
    );
    // Until the rollout completes, generation 1 serves and is what gates compare with.
    assert_eq!(serving(&ws, &key, "production"), v1);

    let mut percents = Vec::new();
    for step in ["start", "advance", "advance"] {
        let moved = json(&ok(run_keyed(
            &ws,
            &key,
            &["--json", "rollout", step, "production"],
        )));
        percents.push(moved["percent"].clone());
        if moved["percent"] == 10 {
            let kserve = ok(run_keyed(
                &ws,
                &key,
                &["channel", "render", "production", "--format", "kserve"],
            ))
            .stdout;
            check_manifests(&kserve, 10);
            let seldon = ok(run_keyed(
                &ws,
                &key,
                &["channel", "render", "production", "--format", "seldon"],
            ))
            .stdout;
            check_manifests(&seldon, 10);
        }
    }
    assert_eq!(
        percents,
        [
            serde_json::json!(10),
            serde_json::json!(50),
            serde_json::Value::Null
        ]
    );
    assert_eq!(serving(&ws, &key, "production"), v2);
    let done = ok(run_keyed(
        &ws,
        &key,
        &["channel", "render", "production", "--format", "kserve"],
    ))
    .stdout;
    assert!(
        done.contains("storageUri: oci://registry.local:5000/models/shop:production-2"),
        "{done}"
    );
    assert!(!done.contains("canaryTrafficPercent"), "{done}");
    check_manifests(&done, 100);

    // A worse model is refused by the gate and changes nothing.
    let worse = ["--set", "model.f1=0.7"];
    ok(run_keyed(
        &ws,
        &key,
        &[&worse[..], &["promote", "//m:pkg", "--to", "staging"]].concat(),
    ));
    let v3 = serving(&ws, &key, "staging");
    ok(run_keyed(
        &ws,
        &key,
        &[
            "approve",
            &v3,
            "--channel",
            "production",
            "--key",
            alice.to_str().unwrap(),
        ],
    ));
    let before = std::fs::read(log_file(&ws, "production")).unwrap();
    let refused = run_keyed(
        &ws,
        &key,
        &[&worse[..], &["promote", "//m:pkg", "--to", "production"]].concat(),
    );
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("gate: `f1 >= current.f1`: f1 = 0.7 fails 0.9"),
        "{}",
        refused.stderr
    );
    assert_eq!(std::fs::read(log_file(&ws, "production")).unwrap(), before);

    // Rollback appends generation 3 pointing at generation 1's artifact.
    let back = json(&ok(run_keyed(
        &ws,
        &key,
        &["--json", "rollback", "production", "--reason", "incident"],
    )));
    assert_eq!(back["generation"], 3);
    assert_eq!(serving(&ws, &key, "production"), v1);
    let history = json(&ok(run_keyed(
        &ws,
        &key,
        &["--json", "channel", "history", "production"],
    )));
    let kinds: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["record"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "approve",
            "promote",
            "approve",
            "promote",
            "rollout_start",
            "rollout_advance",
            "rollout_advance",
            "approve",
            "rollback"
        ]
    );
    let verified = ok(run_keyed(&ws, &key, &["channel", "verify", "production"]));
    assert!(
        verified
            .stdout
            .contains("9 records, 3 generations, chain verified; every artifact verifies"),
        "{}",
        verified.stdout
    );

    // Every generation's build is a gc root, even once the workspace moved on.
    ok(run_keyed(
        &ws,
        &key,
        &["build", "//m:pkg", "--set", "model.f1=0.5"],
    ));
    ok(run_keyed(&ws, &key, &["gc", "--max-size", "1"]));
    let verified = ok(run_keyed(&ws, &key, &["channel", "verify", "staging"]));
    assert!(
        verified.stdout.contains("every artifact verifies"),
        "{}",
        verified.stdout
    );
}

fn ws_lines(ws: &Ws, channel: &str) -> usize {
    std::fs::read_to_string(log_file(ws, channel)).map_or(0, |t| t.lines().count())
}

/// Checks rendered YAML documents against the published CRD schemas (vendored under
/// tests/data/crds) and that the traffic split is `percent` for the new model.
fn check_manifests(yaml: &str, percent: u64) {
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/crds");
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    let mut seen_split = percent == 100;
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let value: serde_json::Value = serde::Deserialize::deserialize(doc).expect("YAML");
        let file = match value["kind"].as_str().unwrap() {
            "InferenceService" => "kserve-inferenceservice-v1beta1.schema.json",
            "Model" => "seldon-model-v1alpha1.schema.json",
            "Experiment" => "seldon-experiment-v1alpha1.schema.json",
            other => panic!("unexpected kind {other}"),
        };
        let url = format!("file://{}", crds.join(file).display());
        let schema = compiler
            .compile(&url, &mut schemas)
            .expect("schema compiles");
        if let Err(e) = schemas.validate(&value, schema) {
            panic!("{file} rejects the rendered manifest: {e:#}\n{yaml}");
        }
        if value["spec"]["predictor"]["canaryTrafficPercent"] == percent {
            seen_split = true;
        }
        if let Some(c) = value["spec"]["candidates"].as_array() {
            seen_split |= c.iter().any(|c| c["weight"] == percent);
        }
    }
    assert!(seen_split, "no {percent}% split in\n{yaml}");
}

#[test]
fn bad_promotions_are_refused_and_change_nothing() {
    let (ws, key) = package_ws(true);
    let signer_pub = key.with_extension("pub");
    let (_, other_pub) = ws.key_pair("other");
    channels(
        &ws,
        &format!(
            "\n[channel.staging]\nsigners = [{:?}]\n\n[channel.strict]\nsigners = [{:?}]\n",
            signer_pub.to_str().unwrap(),
            other_pub.to_str().unwrap()
        ),
    );
    // An unknown channel, with a suggestion, before anything is built.
    let unknown = run_keyed(&ws, &key, &["promote", "//m:pkg", "--to", "stagin"]);
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    assert!(
        unknown.stderr.contains("unknown channel `stagin`"),
        "{}",
        unknown.stderr
    );
    assert!(
        unknown.stderr.contains("did you mean `staging`?"),
        "{}",
        unknown.stderr
    );
    assert!(!ws.path("mlbuild-out").exists());

    // A signature by a key the channel does not list.
    let foreign = run_keyed(&ws, &key, &["promote", "//m:pkg", "--to", "strict"]);
    assert_eq!(foreign.code, 1, "{}", foreign.stderr);
    assert!(
        foreign
            .stderr
            .contains("signature: `model.sig` does not verify"),
        "{}",
        foreign.stderr
    );
    assert!(
        foreign.stderr.contains("provenance: the provenance"),
        "{}",
        foreign.stderr
    );

    // An unsigned artifact (no signing key): the promoter's key is given, the build is not
    // signed.
    let unsigned = {
        let mut cmd = ws.command(&[
            "promote",
            "//m:pkg",
            "--to",
            "staging",
            "--key",
            key.to_str().unwrap(),
            "--set",
            "model.f1=0.1",
        ]);
        cmd.env_remove("MLBUILD_SIGNING_KEY");
        cmd.output().unwrap()
    };
    let stderr = String::from_utf8_lossy(&unsigned.stderr);
    assert_eq!(unsigned.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the artifact is unsigned"), "{stderr}");
    assert!(!log_file(&ws, "staging").exists() && !log_file(&ws, "strict").exists());

    // A package target is required, and a record needs a key.
    let not_pkg = run_keyed(&ws, &key, &["promote", "//m:model", "--to", "staging"]);
    assert_eq!(not_pkg.code, 2, "{}", not_pkg.stderr);
    assert!(
        not_pkg.stderr.contains("not a package"),
        "{}",
        not_pkg.stderr
    );
    let keyless = run_keyed(
        &ws,
        Path::new(""),
        &["promote", "//m:pkg", "--to", "staging"],
    );
    assert_eq!(keyless.code, 2, "{}", keyless.stderr);
    assert!(
        keyless.stderr.contains("no key is configured"),
        "{}",
        keyless.stderr
    );

    // Malformed channel tables stop at their line.
    let mut toml = ws.read("MLBUILD.toml");
    toml.push_str("\n[channel.prod]\nfrom = \"stagin\"\n");
    ws.write("MLBUILD.toml", &toml);
    let bad = run_keyed(&ws, &key, &["channel", "list"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("unknown channel `stagin`"),
        "{}",
        bad.stderr
    );
    assert!(bad.stderr.contains("MLBUILD.toml"), "{}", bad.stderr);
}

#[test]
fn a_tampered_log_is_named_by_its_first_bad_record_and_blocks_appends() {
    let (ws, key) = package_ws(true);
    let signer_pub = key.with_extension("pub");
    channels(
        &ws,
        &format!(
            "\n[channel.staging]\nsigners = [{:?}]\n",
            signer_pub.to_str().unwrap()
        ),
    );
    for f1 in ["0.1", "0.2", "0.3", "0.4"] {
        ok(run_keyed(
            &ws,
            &key,
            &[
                "promote",
                "//m:pkg",
                "--to",
                "staging",
                "--set",
                &format!("model.f1={f1}"),
            ],
        ));
    }
    let path = log_file(&ws, "staging");
    let original = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    assert_eq!(lines.len(), 4);

    let edit = |line: &str| {
        // Change the reason inside the signed payload, keeping the envelope well formed.
        let mut envelope: serde_json::Value = serde_json::from_str(line).unwrap();
        let payload = base64_decode(envelope["payload"].as_str().unwrap());
        let mut record: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        record["reason"] = "edited".into();
        envelope["payload"] = base64_encode(&serde_json::to_vec(&record).unwrap()).into();
        envelope.to_string()
    };
    let cases: Vec<(String, &str)> = vec![
        (
            [lines[0], &edit(lines[1]), lines[2], lines[3]].join("\n") + "\n",
            "record 2 of channel `staging` was edited after it was signed",
        ),
        (
            [lines[0], lines[2], lines[3]].join("\n") + "\n",
            "record 2 of channel `staging` is numbered 3: 1 record(s) before it are missing (deleted)",
        ),
        (
            [lines[0], lines[2], lines[1], lines[3]].join("\n") + "\n",
            "record 2 of channel `staging` is numbered 3, and record 2 is at line 3: records are out of order",
        ),
        (
            original[..original.len() - 30].to_owned(),
            "record 4 of channel `staging` is damaged",
        ),
    ];
    for (text, message) in cases {
        std::fs::write(&path, &text).unwrap();
        let verify = run_keyed(&ws, &key, &["channel", "verify", "staging"]);
        assert_eq!(verify.code, 1, "{}", verify.stderr);
        assert!(
            verify.stderr.contains(message),
            "expected {message:?} in\n{}",
            verify.stderr
        );
        // Nothing is appended to a log that does not verify.
        let promote = run_keyed(
            &ws,
            &key,
            &[
                "promote",
                "//m:pkg",
                "--to",
                "staging",
                "--set",
                "model.f1=0.9",
            ],
        );
        assert_eq!(promote.code, 3, "{}", promote.stderr);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }
    std::fs::write(&path, &original).unwrap();
    ok(run_keyed(&ws, &key, &["channel", "verify", "staging"]));
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Two checkouts with empty stores share channels through `mlbuild cache serve`: one
/// promotes, the other gates a build on `baseline = "channel:production"` and verifies
/// the channel, downloading the artifact from the cache.
#[test]
fn channels_are_shared_through_the_cache_server() {
    let server_dir = tempfile::tempdir().unwrap();
    let tokens = server_dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "write ci-token-0123456789\nread dev-token-0123456789\n",
    )
    .unwrap();
    let (_server, url) = serve(
        &server_dir.path().join("cache"),
        &["--token-file", tokens.to_str().unwrap()],
    );

    let (a, key) = package_ws(true);
    let signer_pub = key.with_extension("pub");
    let shared = format!(
        "\n[remote]\nurl = \"{url}\"\n\n[channel.production]\nsigners = [{:?}]\n",
        signer_pub.to_str().unwrap()
    );
    channels(&a, &shared);
    let promote = |ws: &Ws, token: &str, f1: &str| {
        let mut cmd = ws.command(&[
            "promote",
            "//m:pkg",
            "--to",
            "production",
            "--set",
            &format!("model.f1={f1}"),
        ]);
        cmd.env("MLBUILD_SIGNING_KEY", &key)
            .env("MLBUILD_REMOTE_TOKEN", token);
        cmd.output().unwrap()
    };
    // A read token cannot append.
    let refused = promote(&a, "dev-token-0123456789", "0.8");
    assert_eq!(
        refused.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("needs a write token"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let done = promote(&a, "ci-token-0123456789", "0.8");
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(
        !a.store().join("logs").exists(),
        "the log lives on the server"
    );

    // Another checkout, empty store: its gate reads the channel's model's metrics.
    let (b, _) = package_ws(false);
    channels(&b, &shared);
    b.write(
        "m/BUILD.toml",
        &(b.read("m/BUILD.toml")
            + "\n[target.challenger]\nkind = \"eval\"\ncmd = [\"sh\", \"-c\", \"echo '{{\\\"f1\\\": 0.75}}' > {out}/m.json\"]\nouts = [\"m.json\"]\nmetrics = [\"m.json\"]\ngates = [\"f1 >= baseline.f1\"]\nbaseline = \"channel:production\"\n"),
    );
    let mut cmd = b.command(&["--json", "build", "//m:challenger"]);
    cmd.env("MLBUILD_REMOTE_TOKEN", "dev-token-0123456789");
    let built = crate::support::parse_built(&cmd.output().unwrap());
    assert_eq!(built.code, 1, "{built:#?}");
    let gate = built
        .events
        .iter()
        .find(|e| e["event"] == "gate_checked")
        .expect("a gate event");
    assert_eq!(gate["threshold"], 0.8, "{gate}");
    assert_eq!(gate["baseline"], "channel:production", "{gate}");

    let mut cmd = b.command(&["channel", "verify", "production"]);
    cmd.env("MLBUILD_REMOTE_TOKEN", "dev-token-0123456789")
        .env("MLBUILD_SIGNING_KEY", &key);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 records, 1 generations"));
}

/// The fraud example's release walkthrough (its README, section "Release"), run as
/// printed: each command in a fresh `sh` in a copy of the example, `~` a temporary home.
/// A command marked `# refused` must be refused (exit 1), every other must succeed.
#[test]
fn the_fraud_examples_release_walkthrough_runs_as_printed() {
    let readme = std::fs::read_to_string(crate::support::example_dir().join("README.md")).unwrap();
    let heading = "## Release: staging, approval, canary, rollback";
    let block: Vec<&str> = readme
        .lines()
        .skip_while(|l| l.trim() != heading)
        .skip_while(|l| l.trim() != "```sh")
        .skip(1)
        .take_while(|l| l.trim() != "```")
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(block.len() > 10, "no walkthrough under {heading:?}");
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("fraud");
    crate::support::copy_tree(&crate::support::example_dir(), &ws);
    // The one thing swapped for the test's own: the registry, on a free port.
    let registry = crate::oci::start_registry(&tmp.path().join("registry"));
    let config = std::fs::read_to_string(ws.join("MLBUILD.toml")).unwrap();
    assert!(config.contains("oci://localhost:5000/"));
    std::fs::write(
        ws.join("MLBUILD.toml"),
        config.replace(
            "oci://localhost:5000/",
            &format!("oci://{}/", registry.addr),
        ),
    )
    .unwrap();
    let home = tmp.path().join("home");
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_mlbuild"), bin.join("mlbuild")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut outputs = Vec::new();
    for command in block {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(&ws)
            .env("PATH", &path)
            .env("HOME", &home)
            .env("MLBUILD_STORE", tmp.path().join("store"))
            .env("CI", "1")
            .env("NO_COLOR", "1")
            .env_remove("MLBUILD_SIGNING_KEY")
            .env_remove("MLBUILD_REMOTE_TOKEN")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("$ {command}\n{text}");
        if command.contains("# refused") {
            assert_eq!(
                out.status.code(),
                Some(1),
                "`{command}` was not refused:\n{text}"
            );
            assert!(
                text.contains("gate: `f1 >= current.f1`") && text.contains("nothing was recorded"),
                "{text}"
            );
        } else {
            assert!(
                out.status.success(),
                "`{command}` failed ({}):\n{text}",
                out.status
            );
        }
        outputs.push((command, String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    let output_of = |what: &str| {
        outputs
            .iter()
            .find(|(c, _)| c.contains(what))
            .map(|(_, o)| o.clone())
            .unwrap_or_else(|| panic!("no `{what}` in the walkthrough"))
    };
    let kserve = output_of("channel render production --format kserve");
    let uri = format!(
        "storageUri: oci://{}/models/fraud:production-2",
        registry.addr
    );
    assert!(kserve.contains(&uri), "{kserve}");
    // What the manifest names is in the registry: the channel's tags.
    let tags = output_of("push --channel production");
    assert!(
        tags.contains("tagged `production`") && tags.contains("tagged `production-2`"),
        "{tags}"
    );
    let listed: serde_json::Value = ureq::get(&format!(
        "http://{}/v2/models/fraud/tags/list",
        registry.addr
    ))
    .call()
    .unwrap()
    .body_mut()
    .read_to_string()
    .map(|text| serde_json::from_str(&text).unwrap())
    .unwrap();
    let mut listed: Vec<&str> = listed["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    listed.retain(|t| !t.starts_with("sha256-"));
    listed.sort_unstable();
    assert_eq!(listed, ["production", "production-2"]);
    check_manifests(&kserve, 10);
    assert!(output_of("channel verify production")
        .contains("3 generations, chain verified; every artifact verifies"));
    let history = output_of("channel history production");
    assert!(
        history.contains("rollback") && history.contains("incident 42"),
        "{history}"
    );
}

/// Shadow and blue-green rollouts: what each step renders, and an abort that returns all
/// traffic to the stable model as a new generation.
#[test]
fn shadow_and_blue_green_rollouts_render_and_abort() {
    let (ws, key) = package_ws(true);
    channels(
        &ws,
        "\n[channel.shadowed]\nrollout = { strategy = \"shadow\" }\noci = \"oci://r.local/m\"\nmodel_format = \"sklearn\"\n\
         \n[channel.bg]\nrollout = { strategy = \"blue-green\" }\noci = \"oci://r.local/m\"\nmodel_format = \"sklearn\"\n",
    );
    for channel in ["shadowed", "bg"] {
        ok(run_keyed(
            &ws,
            &key,
            &["promote", "//m:pkg", "--to", channel],
        ));
        ok(run_keyed(
            &ws,
            &key,
            &[
                "promote",
                "//m:pkg",
                "--to",
                channel,
                "--set",
                "model.f1=0.9",
            ],
        ));
        // A second promotion waits for the rollout.
        let blocked = run_keyed(
            &ws,
            &key,
            &[
                "promote",
                "//m:pkg",
                "--to",
                channel,
                "--set",
                "model.f1=0.95",
            ],
        );
        assert_eq!(blocked.code, 1, "{}", blocked.stderr);
        assert!(
            blocked.stderr.contains("rollout: the") && blocked.stderr.contains("is under way"),
            "{}",
            blocked.stderr
        );
        let advance_early = run_keyed(&ws, &key, &["rollout", "advance", channel]);
        assert_eq!(advance_early.code, 2, "{}", advance_early.stderr);
        assert!(
            advance_early.stderr.contains("has not started"),
            "{}",
            advance_early.stderr
        );
        ok(run_keyed(&ws, &key, &["rollout", "start", channel]));
    }
    let seldon = ok(run_keyed(
        &ws,
        &key,
        &["channel", "render", "shadowed", "--format", "seldon"],
    ))
    .stdout;
    assert!(
        seldon.contains("mirror:") && seldon.contains("percent: 100"),
        "{seldon}"
    );
    check_manifests(&seldon, 100);
    let kserve = run_keyed(
        &ws,
        &key,
        &["channel", "render", "shadowed", "--format", "kserve"],
    );
    assert_eq!(kserve.code, 2, "{}", kserve.stderr);
    assert!(kserve.stderr.contains("no shadow"), "{}", kserve.stderr);
    let bg = ok(run_keyed(
        &ws,
        &key,
        &["channel", "render", "bg", "--format", "kserve"],
    ))
    .stdout;
    assert!(
        bg.contains("canaryTrafficPercent: 0") && bg.contains(":bg-2"),
        "{bg}"
    );
    check_manifests(&bg, 0);

    let status = ok(run_keyed(&ws, &key, &["rollout", "status", "shadowed"])).stdout;
    assert!(
        status.contains("shadow rollout of generation 2") && status.contains("mirrored traffic"),
        "{status}"
    );
    let aborted = json(&ok(run_keyed(
        &ws,
        &key,
        &[
            "--json", "rollout", "abort", "shadowed", "--reason", "latency",
        ],
    )));
    assert_eq!(aborted["serving"], 3);
    assert!(aborted["rollout"].is_null());
    let show = json(&ok(run_keyed(
        &ws,
        &key,
        &["--json", "channel", "show", "shadowed"],
    )));
    assert_eq!(
        show["metrics"]["f1"], 0.8,
        "generation 3 is generation 1's model again"
    );
    ok(run_keyed(&ws, &key, &["rollout", "advance", "bg"]));
    let show = json(&ok(run_keyed(
        &ws,
        &key,
        &["--json", "channel", "show", "bg"],
    )));
    assert_eq!(show["metrics"]["f1"], 0.9);
    assert!(show["rollout"].is_null());
    ok(run_keyed(&ws, &key, &["channel", "verify", "shadowed"]));
    ok(run_keyed(&ws, &key, &["channel", "verify", "bg"]));
}
