//! Throughput of packaging's archive steps on model-like data: writing the deterministic
//! `.tar.zst` (one zstd thread at `ZSTD_LEVEL`) and extracting it with every safety check.
//!
//! Run: `cargo bench -p mlbuild-rules --bench archive`. The input is 64 MiB of float32
//! values (nearly incompressible, like real weights) plus a 1 MiB JSON file.

use std::fs;
use std::hint::black_box;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mlbuild_rules::archive::{extract_reader, write_tar_zst, ExtractLimits};

const WEIGHTS: usize = 64 << 20;

fn model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    // Small random-looking floats: sign, exponent and high mantissa bits vary little,
    // low mantissa bits look random, as in trained weights.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut weights = Vec::with_capacity(WEIGHTS);
    while weights.len() < WEIGHTS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let v = ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
        weights.extend_from_slice(&v.to_le_bytes());
    }
    fs::write(dir.path().join("weights.bin"), weights).unwrap();
    let json: String = (0..60_000)
        .map(|i| format!("{:.6},", i as f32 * 0.37))
        .collect();
    fs::write(dir.path().join("model.json"), format!("[{json}0]")).unwrap();
    dir
}

fn bench(c: &mut Criterion) {
    let src = model_dir();
    let mut archive = Vec::new();
    write_tar_zst(src.path(), &mut archive, 0).unwrap();
    let total = fs::metadata(src.path().join("weights.bin")).unwrap().len()
        + fs::metadata(src.path().join("model.json")).unwrap().len();

    let mut group = c.benchmark_group("archive");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(total));
    group.bench_function("write_tar_zst", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(archive.len());
            write_tar_zst(src.path(), &mut out, 0).unwrap();
            black_box(out.len())
        })
    });
    group.bench_function("extract", |b| {
        b.iter(|| {
            let dest = tempfile::tempdir().unwrap();
            let dir = Dir::open_ambient_dir(dest.path(), ambient_authority()).unwrap();
            black_box(extract_reader(archive.as_slice(), &dir, &ExtractLimits::default()).unwrap())
        })
    });
    group.finish();
    eprintln!(
        "input {total} bytes, archive {} bytes (ratio {:.3})",
        archive.len(),
        total as f64 / archive.len() as f64
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
