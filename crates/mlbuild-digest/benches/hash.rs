//! Throughput of `mlbuild_digest::hash_file` on files of 1 MiB and 64 MiB (and 1 GiB
//! when `MLBUILD_BENCH_BIG=1`, which needs 1 GiB of free space in the temp dir).
//!
//! Run: `cargo bench -p mlbuild-digest --bench hash` (add `-- --quick` for a fast pass).
//! The files stay in the page cache, so this measures hashing, not the disk.

use std::io::Write;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const MIB: u64 = 1 << 20;

/// Writes `len` bytes of incompressible pseudo-random data (xorshift64*).
fn write_random_file(path: &Path, len: u64) {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15 ^ len;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for chunk in buf.chunks_exact_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            chunk.copy_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

fn bench_hash_file(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut sizes = vec![("1MiB", MIB), ("64MiB", 64 * MIB)];
    if std::env::var("MLBUILD_BENCH_BIG").is_ok_and(|v| v == "1") {
        sizes.push(("1GiB", 1024 * MIB));
    }
    let mut group = c.benchmark_group("hash_file");
    for (label, len) in sizes {
        let path = dir.path().join(label);
        write_random_file(&path, len);
        // Warm the page cache so the first sample does not pay for the disk.
        let (_, n) = mlbuild_digest::hash_file(&path).unwrap();
        assert_eq!(n, len);
        group.throughput(Throughput::Bytes(len));
        if len >= 64 * MIB {
            group.sample_size(10);
        }
        group.bench_with_input(BenchmarkId::from_parameter(label), &path, |b, p| {
            b.iter(|| mlbuild_digest::hash_file(p).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_hash_file);
criterion_main!(benches);
