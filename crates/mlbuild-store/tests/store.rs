//! End-to-end store behaviour on real files and a real SQLite index: gc roots, fsck
//! repairs, and several handles (as several processes would) writing at once.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use mlbuild_store::{ActionResult, Digest, GcPolicy, OutputFile, Store, TargetRecord};

fn result_for(store: &Store, outputs: &[(&str, &[u8])]) -> ActionResult {
    let log = store.put_bytes(b"log").unwrap();
    ActionResult {
        outputs: outputs
            .iter()
            .map(|(name, content)| {
                let digest = store.put_bytes(content).unwrap();
                (
                    name.to_string(),
                    OutputFile {
                        digest,
                        size: content.len() as u64,
                        executable: false,
                    },
                )
            })
            .collect::<BTreeMap<_, _>>(),
        exit_code: 0,
        stdout: log,
        stderr: log,
        duration_ms: 1,
        created_at: 0,
        isolation: None,
    }
}

fn record(key: Digest) -> TargetRecord {
    TargetRecord {
        key,
        preimage: "{}".into(),
        result: None,
    }
}

#[test]
fn gc_keeps_roots_and_removes_old_unrooted_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let rooted = Digest::of_bytes(b"rooted");
    let stale = Digest::of_bytes(b"stale");
    let rooted_result = result_for(&store, &[("a", b"keep me"), ("shared", b"shared")]);
    let stale_result = result_for(&store, &[("b", b"drop me"), ("shared", b"shared")]);
    store.put_action(&rooted, &rooted_result).unwrap();
    store.put_action(&stale, &stale_result).unwrap();
    let loose = store.put_bytes(b"referenced by nothing").unwrap();
    store
        .save_workspace_state("/ws", &[("//:a".into(), record(rooted))])
        .unwrap();

    // A generous policy removes nothing referenced.
    let report = store
        .gc(&GcPolicy {
            max_size: None,
            max_age: Some(Duration::from_secs(3600)),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(report.removed_actions, 0);
    assert_eq!(report.removed_blobs, 1, "only the unreferenced blob goes");
    assert!(!store.has_blob(&loose));

    let report = store
        .gc(&GcPolicy {
            max_size: None,
            max_age: Some(Duration::ZERO),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(report.removed_actions, 1);
    assert_eq!(report.removed_blobs, 1);
    assert_eq!(report.freed_bytes, b"drop me".len() as u64);
    assert_eq!(store.get_action(&stale).unwrap(), None);
    assert_eq!(
        store.get_action(&rooted).unwrap(),
        Some(rooted_result.clone())
    );
    for blob in rooted_result.blobs() {
        store.read_blob(&blob).unwrap();
    }
    assert!(!store.has_blob(&stale_result.outputs["b"].digest));
    assert_eq!(report.kept_blobs, 3);
    assert_eq!(store.stats().unwrap().blobs, 3);

    // A size bound that rooted blobs alone exceed: nothing rooted goes, and gc says so.
    let report = store
        .gc(&GcPolicy {
            max_size: Some(1),
            max_age: None,
            ..Default::default()
        })
        .unwrap();
    assert!(report.over_max_size);
    assert_eq!(report.removed_blobs, 0);
    assert_eq!(store.get_action(&rooted).unwrap(), Some(rooted_result));
    assert!(fs::read_dir(store.tmp_dir()).unwrap().next().is_none());
}

#[test]
fn gc_size_bound_evicts_unrooted_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let big = vec![7u8; 10_000];
    let a = Digest::of_bytes(b"a");
    let b = Digest::of_bytes(b"b");
    store
        .put_action(&a, &result_for(&store, &[("o", &big)]))
        .unwrap();
    store
        .put_action(&b, &result_for(&store, &[("o", b"small")]))
        .unwrap();
    let report = store
        .gc(&GcPolicy {
            max_size: Some(1_000),
            max_age: None,
            ..Default::default()
        })
        .unwrap();
    assert!(!report.over_max_size);
    assert!(report.kept_bytes <= 1_000);
    assert!(report.removed_actions >= 1);
    assert!(store.stats().unwrap().blob_bytes <= 1_000);
}

#[test]
fn fsck_removes_corrupt_blob_and_the_entries_using_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = Digest::of_bytes(b"train");
    let ok_key = Digest::of_bytes(b"eval");
    let r = result_for(&store, &[("model.bin", b"weights")]);
    store.put_action(&key, &r).unwrap();
    store
        .put_action(&ok_key, &result_for(&store, &[("metrics.json", b"{}")]))
        .unwrap();
    store
        .save_workspace_state(
            "/ws",
            &[
                ("//:train".into(), record(key)),
                ("//:eval".into(), record(ok_key)),
            ],
        )
        .unwrap();

    // Flip the model's bytes behind the store's back.
    let model = r.outputs["model.bin"].digest;
    let path = store.blob_path(&model);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&path, b"tampered").unwrap();
    assert!(store.read_blob(&model).unwrap_err().is_corrupt());
    // And leave a stray file in the CAS.
    fs::write(store.root().join("cas").join("junk"), b"?").unwrap();

    let report = store.fsck().unwrap();
    assert_eq!(report.corrupt, vec![model]);
    assert_eq!(report.removed_actions, 1);
    assert_eq!(report.removed_targets, 1);
    assert_eq!(report.stray_files, 1);
    assert_eq!(report.checked, 3, "log, weights, metrics");
    assert!(!store.has_blob(&model));
    assert_eq!(store.get_action(&key).unwrap(), None);
    assert!(store.get_action(&ok_key).unwrap().is_some());
    let state = store.load_workspace_state("/ws").unwrap();
    assert!(state.contains_key("//:eval") && !state.contains_key("//:train"));

    // A clean store stays clean.
    let again = store.fsck().unwrap();
    assert!(again.corrupt.is_empty());
    assert_eq!(again.removed_actions, 0);
}

#[test]
fn concurrent_handles_write_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    const THREADS: usize = 8;
    const PER_THREAD: usize = 40;
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let root = root.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                // Each thread opens its own store, as a separate process would.
                let store = Store::open(&root).unwrap();
                for i in 0..PER_THREAD {
                    // Shared content across threads exercises racing renames.
                    let shared = store.put_bytes(format!("shared {i}").as_bytes()).unwrap();
                    let own = store.put_bytes(format!("own {t} {i}").as_bytes()).unwrap();
                    let src = root.join(format!("../src-{t}-{i}"));
                    fs::write(&src, format!("ingested {i}")).unwrap();
                    let ingested = store.ingest_file(&src).unwrap();
                    let key = Digest::of_bytes(format!("key {t} {i}").as_bytes());
                    let r = ActionResult {
                        outputs: BTreeMap::from([(
                            "o".to_string(),
                            OutputFile {
                                digest: ingested.digest,
                                size: ingested.size,
                                executable: false,
                            },
                        )]),
                        exit_code: 0,
                        stdout: shared,
                        stderr: own,
                        duration_ms: 0,
                        created_at: 0,
                        isolation: None,
                    };
                    store.put_action(&key, &r).unwrap();
                    store
                        .save_workspace_state(
                            &format!("/ws{t}"),
                            &[(format!("//:t{i}"), record(key))],
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let store = Store::open(&root).unwrap();
    for t in 0..THREADS {
        let state = store.load_workspace_state(&format!("/ws{t}")).unwrap();
        assert_eq!(state.len(), PER_THREAD);
        for i in 0..PER_THREAD {
            let rec = &state[&format!("//:t{i}")];
            let r = rec.result.as_ref().expect("result joined");
            assert_eq!(
                store.read_blob(&r.stdout).unwrap(),
                format!("shared {i}").as_bytes()
            );
            assert_eq!(
                store.read_blob(&r.outputs["o"].digest).unwrap(),
                format!("ingested {i}").as_bytes()
            );
        }
    }
    let stats = store.stats().unwrap();
    assert_eq!(stats.actions, (THREADS * PER_THREAD) as u64);
    // shared + own + ingested content.
    assert_eq!(
        stats.blobs,
        (PER_THREAD + THREADS * PER_THREAD + PER_THREAD) as u64
    );
    assert!(fs::read_dir(store.tmp_dir()).unwrap().next().is_none());
    assert!(store.fsck().unwrap().corrupt.is_empty());
}

#[test]
fn lock_action_blocks_a_second_handle_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open(dir.path()).unwrap();
    let key = Digest::of_bytes(b"slow action");
    let held = a.lock_action(&key).unwrap();
    let released = Arc::new(AtomicBool::new(false));
    let waiter = {
        let root = dir.path().to_path_buf();
        let released = released.clone();
        std::thread::spawn(move || {
            let b = Store::open(&root).unwrap();
            let _lock = b.lock_action(&key).unwrap();
            // The lock can only be ours after the first holder let go.
            assert!(released.load(Ordering::SeqCst));
            b.get_action(&key).unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    a.put_action(&key, &result_for(&a, &[("o", b"done")]))
        .unwrap();
    released.store(true, Ordering::SeqCst);
    drop(held);
    // The waiter finds the result the first holder recorded.
    assert!(waiter.join().unwrap().is_some());
}

#[test]
fn default_root_prefers_xdg_cache_home() {
    // Only this test touches these variables in this binary.
    std::env::set_var("XDG_CACHE_HOME", "/xdg");
    assert_eq!(Store::default_root(), std::path::Path::new("/xdg/mlbuild"));
    std::env::remove_var("XDG_CACHE_HOME");
    std::env::set_var("HOME", "/home/u");
    assert_eq!(
        Store::default_root(),
        std::path::Path::new("/home/u/.cache/mlbuild")
    );
}

#[test]
fn gc_max_age_prunes_old_build_history() {
    use mlbuild_store::{GcPolicy, Invocation, TargetRun};
    let dir = tempfile::tempdir().unwrap();
    let store = mlbuild_store::Store::open(dir.path()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for started_at in [now - 40 * 86400, now] {
        store
            .record_invocation(&Invocation {
                workspace: "/ws".into(),
                command: "mlbuild build //...".into(),
                started_at,
                duration_ms: 5,
                success: true,
                targets: vec![TargetRun {
                    label: "//a:b".into(),
                    key: Some(mlbuild_digest::Digest::of_bytes(b"k")),
                    status: "cached".into(),
                    duration_ms: 1,
                }],
            })
            .unwrap();
    }
    let report = store
        .gc(&GcPolicy {
            max_size: None,
            max_age: Some(std::time::Duration::from_secs(30 * 86400)),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(report.removed_invocations, 1);
    let left = store.history("/ws", 10).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].invocation.started_at, now);
    assert_eq!(left[0].invocation.targets.len(), 1);
}

/// A store whose index spans many pages, all in the main file (no WAL left), as an index
/// looks once SQLite has checkpointed it; returns the blobs it holds.
fn populated_store(root: &std::path::Path) -> Vec<Digest> {
    let store = Store::open(root).unwrap();
    let mut blobs = Vec::new();
    let mut state = Vec::new();
    for i in 0..400 {
        let key = Digest::of_bytes(format!("action {i}").as_bytes());
        let r = result_for(&store, &[("out.txt", format!("output {i}").as_bytes())]);
        blobs.push(r.outputs["out.txt"].digest);
        store.put_action(&key, &r).unwrap();
        state.push((format!("//:t{i}"), record(key)));
    }
    store.save_workspace_state("/ws", &state).unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(root.join("index.sqlite")).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(conn);
    blobs
}

const PAGE: usize = 4096;

/// The three ways an index file gets damaged: garbage pages in the middle, cut in half,
/// header overwritten.
fn damage(path: &std::path::Path, how: &str) {
    let mut bytes = fs::read(path).unwrap();
    let pages = bytes.len() / PAGE;
    assert!(pages >= 20, "only {pages} pages");
    match how {
        "garbage pages" => {
            let mut x: u32 = 7;
            for b in &mut bytes[pages / 3 * PAGE..2 * pages / 3 * PAGE] {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                *b = (x >> 16) as u8;
            }
        }
        "truncated" => bytes.truncate(pages / 2 * PAGE),
        "header" => bytes[..100].fill(0x5a),
        _ => unreachable!(),
    }
    fs::write(path, bytes).unwrap();
}

#[test]
fn fsck_reports_a_damaged_index_and_repair_starts_a_new_one_keeping_the_blobs() {
    for how in ["garbage pages", "truncated", "header"] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let blobs = populated_store(root);
        let index = root.join("index.sqlite");
        damage(&index, how);

        // Whatever the damage, using the index fails as damage, with advice that works.
        let used = Store::open(root).and_then(|s| s.stats());
        let err = used.expect_err(how);
        assert!(err.is_index_damaged(), "{how}: {err:?}");

        // fsck reports it, changes nothing in the index, and still checks the blobs.
        let report = Store::fsck_at(root, false).unwrap();
        let damage = report.index.clone().expect(how);
        assert!(!damage.problems.is_empty(), "{how}");
        assert_eq!(damage.moved_to, None);
        assert_eq!(damage.path, index);
        assert!(report.found_damage());
        assert_eq!(
            report.checked,
            blobs.len() as u64 + 1,
            "{how}: outputs and the log"
        );
        assert!(report.corrupt.is_empty());
        if how == "garbage pages" {
            // The table heads are intact: the loss can be counted.
            assert_eq!(damage.held.targets, Some(400), "{how}: {damage:?}");
        }
        if how == "header" {
            assert_eq!(damage.held, mlbuild_store::IndexContents::default());
        }

        // --repair moves it aside and starts an empty index; every blob is kept.
        let report = Store::fsck_at(root, true).unwrap();
        let moved = report.index.clone().unwrap().moved_to.expect(how);
        assert!(moved.is_file(), "{how}");
        assert!(moved
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("index.sqlite.damaged-"));
        assert_eq!(report.checked, blobs.len() as u64 + 1);
        let store = Store::open(root).unwrap();
        assert_eq!(store.stats().unwrap().actions, 0);
        assert!(blobs.iter().all(|b| store.read_blob(b).is_ok()));
        drop(store);
        let again = Store::fsck_at(root, false).unwrap();
        assert!(!again.found_damage(), "{how}: {again:?}");
    }
}

#[test]
fn gc_keeps_named_and_baseline_builds_with_their_history_and_results() {
    use mlbuild_store::{Invocation, TargetRun};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let long_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 40 * 86400;
    // One action per build, each with its own output blob; the named build's target was
    // cached, and a named build records the keys of cached runs too.
    let action = |name: &str| {
        let key = Digest::of_bytes(name.as_bytes());
        let result = result_for(&store, &[("out", format!("{name} output").as_bytes())]);
        store.put_action(&key, &result).unwrap();
        (key, result.outputs["out"].digest)
    };
    let build = |ws: &str, key: Digest, status: &str| {
        store
            .record_invocation(&Invocation {
                workspace: ws.into(),
                command: "mlbuild build //...".into(),
                started_at: long_ago,
                duration_ms: 5,
                success: true,
                targets: vec![TargetRun {
                    label: "//:t".into(),
                    key: Some(key),
                    status: status.into(),
                    duration_ms: 1,
                }],
            })
            .unwrap()
    };
    let (named_key, named_blob) = action("named");
    let (other_key, other_blob) = action("other workspace");
    let (baseline_key, baseline_blob) = action("baseline");
    let (old_key, old_blob) = action("old");
    let named = build("/ws", named_key, "cached");
    let other = build("/other", other_key, "executed");
    let baseline = build("/ws", baseline_key, "executed");
    let old = build("/ws", old_key, "executed");
    store.name_invocation("/ws", named, "v1").unwrap();
    store.name_invocation("/other", other, "release").unwrap();
    let policy = GcPolicy {
        max_age: Some(Duration::ZERO),
        keep_builds: vec![baseline, 9999],
        ..Default::default()
    };

    // A dry run says what would go and which builds stay, and changes nothing.
    let dry = store
        .gc(&GcPolicy {
            dry_run: true,
            ..policy.clone()
        })
        .unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.removed_actions, 1);
    assert_eq!(dry.removed_blobs, 1);
    assert_eq!(dry.freed_bytes, "old output".len() as u64);
    assert_eq!(dry.removed_invocations, 1);
    let kept: Vec<(&str, i64, Option<&str>)> = dry
        .kept_builds
        .iter()
        .map(|k| (k.workspace.as_str(), k.invocation_id, k.name.as_deref()))
        .collect();
    assert_eq!(
        kept,
        [
            ("/other", other, Some("release")),
            ("/ws", named, Some("v1")),
            ("/ws", baseline, None),
        ]
    );
    assert!(store.get_action(&old_key).unwrap().is_some());
    assert!(store.has_blob(&old_blob));
    assert_eq!(store.history("/ws", 10).unwrap().len(), 3);

    let report = store.gc(&policy).unwrap();
    assert!(!report.dry_run);
    assert_eq!(report.kept_builds, dry.kept_builds);
    assert_eq!(
        (
            report.removed_actions,
            report.removed_blobs,
            report.removed_invocations
        ),
        (1, 1, 1)
    );
    assert!(store.get_action(&old_key).unwrap().is_none());
    assert!(!store.has_blob(&old_blob));
    for (key, blob) in [
        (named_key, named_blob),
        (other_key, other_blob),
        (baseline_key, baseline_blob),
    ] {
        assert!(store.get_action(&key).unwrap().is_some());
        assert!(store.has_blob(&blob));
    }
    let left: Vec<i64> = store
        .history("/ws", 10)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, [baseline, named]);
    assert!(store.invocation("/ws", old).unwrap().is_none());
    assert_eq!(
        store.find_invocation("/ws", "v1").unwrap().unwrap().id,
        named
    );
    assert_eq!(
        store
            .find_invocation("/other", "release")
            .unwrap()
            .unwrap()
            .id,
        other
    );

    // A name given to another build moves, and the build it left is no longer kept.
    let newer = build("/ws", old_key, "failed");
    store.name_invocation("/ws", newer, "v1").unwrap();
    let report = store
        .gc(&GcPolicy {
            keep_builds: vec![],
            ..policy
        })
        .unwrap();
    assert_eq!(report.removed_invocations, 2, "{report:#?}");
    assert!(store.get_action(&named_key).unwrap().is_none());
    assert!(store.get_action(&baseline_key).unwrap().is_none());
    assert!(store.get_action(&other_key).unwrap().is_some());
    assert_eq!(
        store.find_invocation("/ws", "v1").unwrap().unwrap().id,
        newer
    );
}
