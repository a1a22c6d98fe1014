//! Throughput of `validate` on a large CSV: parsing, every rule type and the statistics.
//!
//! Run: `cargo bench -p mlbuild-rules --bench validate -- --warm-up-time 1 --measurement-time 5`.
//! The input (generated once per run in a temp dir, deterministic) is ~150 MB of CSV with
//! 10 mixed columns: a unique int id, ints with bounds and allowed values, floats with
//! bounds, categories with allowed lists, a bool, a regex-checked string and free text.
//! The goal is at least 100 MB/s on one core (the reported throughput).

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mlbuild_rules::schema::Schema;
use mlbuild_rules::validate::validate;

const ROWS: u64 = 1_500_000;

const SCHEMA: &str = r#"
[dataset]
format = "csv"
min_rows = 1

[columns.id]
type = "int"
unique = true
min = 0

[columns.ts]
type = "int"
min = 1600000000
max = 1900000000

[columns.amount]
type = "float"
min = 0
max = 1e6

[columns.score]
type = "float"
nullable = true

[columns.country]
type = "category"
allowed = ["US", "DE", "FR", "GB", "IN", "BR", "JP", "NG"]

[columns.channel]
type = "category"
allowed = ["web", "app", "pos", "phone"]

[columns.is_fraud]
type = "bool"

[columns.qty]
type = "int"
allowed = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]

[columns.merchant]
type = "string"
regex = "m_[0-9]{4}"

[columns.note]
type = "string"
nullable = true
"#;

fn generate(path: &Path) -> u64 {
    let countries = ["US", "DE", "FR", "GB", "IN", "BR", "JP", "NG"];
    let channels = ["web", "app", "pos", "phone"];
    let words = [
        "ok",
        "late delivery",
        "gift",
        "refund requested",
        "",
        "vip customer",
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = String::with_capacity(160 << 20);
    out.push_str("id,ts,amount,score,country,channel,is_fraud,qty,merchant,note\n");
    for id in 0..ROWS {
        let r = next();
        let amount = (r % 10_000_000) as f64 / 100.0;
        let score = (next() % 1_000_000) as f64 / 1_000_000.0 - 0.5;
        let _ = writeln!(
            out,
            "{id},{},{amount},{},{},{},{},{},m_{:04},{}",
            1_700_000_000 + (r >> 20) % 100_000_000,
            if r % 50 == 0 {
                String::new()
            } else {
                format!("{score:.6}")
            },
            countries[(r >> 8) as usize % countries.len()],
            channels[(r >> 12) as usize % channels.len()],
            if r % 97 == 0 { "true" } else { "false" },
            1 + (r >> 16) % 10,
            (r >> 24) % 10_000,
            words[(r >> 32) as usize % words.len()],
        );
    }
    std::fs::write(path, &out).unwrap();
    out.len() as u64
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bench.csv");
    let bytes = generate(&data);
    let schema = Schema::parse("bench.schema.toml", SCHEMA).unwrap();
    // The generated data is valid: a bench that silently measured the failure path would
    // be measuring something else.
    let report = validate(&schema, &data, None).unwrap();
    assert!(report.passed(), "{}", report.table());
    assert_eq!(report.rows, ROWS);

    let mut group = c.benchmark_group("validate");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function(format!("csv_{}MB_10_columns", bytes / 1_000_000), |b| {
        b.iter(|| black_box(validate(&schema, &data, None).unwrap()))
    });
    group.finish();

    // The machine may be shared, and wall time then includes waiting for a core. The
    // thread's own CPU time (Linux schedstat, nanoseconds) gives the one-core throughput.
    if let Some(start) = thread_cpu_ns() {
        let wall = std::time::Instant::now();
        let runs = 3;
        for _ in 0..runs {
            black_box(validate(&schema, &data, None).unwrap());
        }
        if let Some(end) = thread_cpu_ns() {
            let mb = (bytes * runs) as f64 / 1e6;
            println!(
                "validate one-core throughput: {:.1} MB/s of CPU time ({:.1} MB/s wall), {runs} runs of {bytes} bytes",
                mb / ((end - start) as f64 / 1e9),
                mb / wall.elapsed().as_secs_f64(),
            );
        }
    }
}

/// Nanoseconds this thread has run on a CPU, where Linux reports it.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

criterion_group!(benches, bench);
criterion_main!(benches);
