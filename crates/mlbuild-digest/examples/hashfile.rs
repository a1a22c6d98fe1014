//! Hashes a file with `mlbuild_digest::hash_file` and prints the digest and timing.
//!
//! `cargo run --release -p mlbuild-digest --example hashfile -- FILE [--repeat N]`
//!
//! Output: one line per run, `<hex digest>  <bytes> bytes  <seconds> s  <GiB/s> GiB/s`
//! (the digest first, like `b3sum`, so the two can be compared directly).

use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let mut path: Option<PathBuf> = None;
    let mut repeat = 1u32;
    while let Some(a) = args.next() {
        if a == "--repeat" {
            repeat = args
                .next()
                .and_then(|v| v.to_str().and_then(|s| s.parse().ok()))
                .expect("--repeat needs a number");
        } else {
            path = Some(PathBuf::from(a));
        }
    }
    let Some(path) = path else {
        eprintln!("usage: hashfile FILE [--repeat N]");
        std::process::exit(2);
    };
    for _ in 0..repeat {
        let start = Instant::now();
        let (digest, len) = match mlbuild_digest::hash_file(&path) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("hashfile: {}: {e}", path.display());
                std::process::exit(1);
            }
        };
        let secs = start.elapsed().as_secs_f64();
        let gibs = len as f64 / secs / (1u64 << 30) as f64;
        println!("{digest}  {len} bytes  {secs:.6} s  {gibs:.3} GiB/s");
    }
}
