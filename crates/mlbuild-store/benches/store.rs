//! Benchmarks for the no-op build hot path: loading 10,000 targets' state with their
//! cached results, and stamping files through the digest cache.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use mlbuild_store::{ActionResult, Digest, OutputFile, Store, TargetRecord};

fn workspace_state(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let log = store.put_bytes(b"").unwrap();
    let records: Vec<(String, TargetRecord)> = (0..10_000)
        .map(|i| {
            let key = Digest::of_bytes(format!("key {i}").as_bytes());
            let result = ActionResult {
                outputs: BTreeMap::from([(
                    format!("out/{i}.bin"),
                    OutputFile {
                        digest: Digest::of_bytes(format!("out {i}").as_bytes()),
                        size: 1024,
                        executable: false,
                    },
                )]),
                exit_code: 0,
                stdout: log,
                stderr: log,
                duration_ms: 10,
                created_at: 1_700_000_000,
                isolation: None,
            };
            store.put_action(&key, &result).unwrap();
            let rec = TargetRecord {
                key,
                preimage: format!("{{\"argv\":[\"python\",\"t{i}.py\"]}}"),
                result: None,
            };
            (format!("//pkg:t{i}"), rec)
        })
        .collect();
    store.save_workspace_state("/ws", &records).unwrap();

    c.bench_function("load_workspace_state/10k", |b| {
        b.iter(|| store.load_workspace_state("/ws").unwrap())
    });
    c.bench_function("save_workspace_state/10k unchanged", |b| {
        b.iter(|| store.save_workspace_state("/ws", &records).unwrap())
    });
}

fn file_digests(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let old = SystemTime::now() - Duration::from_secs(3600);
    let files: Vec<_> = (0..1_000)
        .map(|i| {
            let path = dir.path().join(format!("f{i}"));
            std::fs::write(&path, vec![i as u8; 4096]).unwrap();
            let f = std::fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(old).unwrap();
            path
        })
        .collect();
    let cache = store.file_digest_cache(dir.path()).unwrap();
    for f in &files {
        cache.digest(f).unwrap();
    }
    cache.flush(&store).unwrap();
    c.bench_function("file_digest_cache/1k unchanged", |b| {
        b.iter(|| {
            for f in &files {
                cache.digest(f).unwrap();
            }
        })
    });
    c.bench_function("file_digest_cache/load 1k", |b| {
        b.iter(|| store.file_digest_cache(dir.path()).unwrap())
    });
}

criterion_group!(benches, workspace_state, file_digests);
criterion_main!(benches);
