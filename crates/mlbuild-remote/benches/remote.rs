//! Remote-cache client benchmarks against a running server (driven by
//! `benches/remote.sh`, which starts `mlbuild cache serve` under `/usr/bin/time -v`).
//!
//! A plain program rather than criterion: each case is one long transfer or one load
//! run whose throughput, latency and peak memory are the numbers we want, and repeating a
//! 1 GiB transfer dozens of times would measure nothing new.
//!
//! ```text
//! remote blob  URL SIZE_MIB       one blob up, then down into an empty store
//! remote small URL COUNT          COUNT 1 KiB blobs in one entry, up then down
//! remote load  URL CLIENTS TOTAL  mixed GET/HEAD/PUT from CLIENTS threads; exits 1 on any
//!                                 error or corrupt response
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mlbuild_digest::Digest;
use mlbuild_remote::wire::Entry;
use mlbuild_remote::{ClientConfig, HttpRemote};
use mlbuild_store::{ActionResult, OutputFile, RemoteCache, Store};

/// xorshift64*: fast, seeded, incompressible enough that zstd cannot cheat.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn client(url: &str) -> HttpRemote {
    let mut cfg = ClientConfig::new(url);
    cfg.io_timeout = Duration::from_secs(60);
    HttpRemote::new(cfg).expect("valid URL")
}

fn result_of(store: &Store, files: &[(String, Digest, u64)]) -> ActionResult {
    let empty = store.put_bytes(b"").unwrap();
    ActionResult {
        outputs: files
            .iter()
            .map(|(name, digest, size)| {
                (
                    name.clone(),
                    OutputFile {
                        digest: *digest,
                        size: *size,
                        executable: false,
                    },
                )
            })
            .collect::<BTreeMap<_, _>>(),
        exit_code: 0,
        stdout: empty,
        stderr: empty,
        duration_ms: 0,
        created_at: 0,
        isolation: None,
    }
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn up_and_down(
    url: &str,
    store: &Store,
    result: &ActionResult,
    key: Digest,
) -> (Duration, Duration, u64, u64) {
    let remote = client(url);
    let t0 = Instant::now();
    let up = remote
        .upload(&key, result, store)
        .expect("upload")
        .expect("a writable client");
    let up_time = t0.elapsed();
    let fresh = tempfile::tempdir().unwrap();
    let target = Store::open(fresh.path()).unwrap();
    let t0 = Instant::now();
    let hit = remote.fetch(&key, &target).expect("fetch").expect("a hit");
    let down_time = t0.elapsed();
    assert_eq!(hit.result, *result);
    (up_time, down_time, up.bytes, hit.transfer.bytes)
}

fn blob(url: &str, mib: u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    // Written straight into the store while hashing: `Store::ingest_file` would mmap the
    // file to hash it, and the mapping would count in this process's peak RSS, hiding
    // what the transfers themselves use.
    let path = store.tmp_dir().join("big.bin");
    let mut hasher = blake3::Hasher::new();
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ mib);
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..mib {
            rng.fill(&mut buf);
            hasher.update(&buf);
            f.write_all(&buf).unwrap();
        }
    }
    let digest = Digest::from_bytes(*hasher.finalize().as_bytes());
    let dest = store.blob_path(&digest);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::rename(&path, &dest).unwrap();
    let size = mib << 20;
    let result = result_of(&store, &[("big.bin".into(), digest, size)]);
    let key = Digest::of_bytes(format!("blob-bench-{mib}").as_bytes());
    let (up, down, up_bytes, down_bytes) = up_and_down(url, &store, &result, key);
    println!(
        "blob {mib} MiB: up {:.2}s ({:.0} MiB/s, {} bytes on the wire), down {:.2}s ({:.0} MiB/s, {} bytes on the wire)",
        up.as_secs_f64(),
        mib_per_s(size, up),
        up_bytes,
        down.as_secs_f64(),
        mib_per_s(size, down),
        down_bytes
    );
}

fn small(url: &str, count: u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut rng = Rng(42);
    let mut files = Vec::new();
    let mut buf = vec![0u8; 1024];
    for i in 0..count {
        rng.fill(&mut buf);
        let d = store.put_bytes(&buf).unwrap();
        files.push((format!("f/{i}.bin"), d, buf.len() as u64));
    }
    let result = result_of(&store, &files);
    let key = Digest::of_bytes(format!("small-bench-{count}").as_bytes());
    let (up, down, _, _) = up_and_down(url, &store, &result, key);
    println!(
        "{count} small blobs (1 KiB): up {:.2}s ({:.0} blobs/s), down {:.2}s ({:.0} blobs/s)",
        up.as_secs_f64(),
        count as f64 / up.as_secs_f64(),
        down.as_secs_f64(),
        count as f64 / down.as_secs_f64()
    );
}

/// 32 clients, each its own connection pool, mixing the requests a CI fleet makes.
fn load(url: &str, clients: u64, total: u64) {
    let errors = AtomicU64::new(0);
    let corrupt = AtomicU64::new(0);
    let next = AtomicU64::new(0);
    let latencies = std::sync::Mutex::new(Vec::with_capacity(total as usize));
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for c in 0..clients {
            let (errors, corrupt, next, latencies) = (&errors, &corrupt, &next, &latencies);
            s.spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                let mut rng = Rng(c + 1);
                // Blobs this client stored, to read back and verify.
                let mut mine: Vec<(Digest, Vec<u8>)> = Vec::new();
                let mut mine_lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let op = rng.next() % 10;
                    let t = Instant::now();
                    let ok = match op {
                        // 30%: upload a blob of 1-64 KiB
                        0..=2 => {
                            let mut data = vec![0u8; 1024 + (rng.next() % (63 * 1024)) as usize];
                            rng.fill(&mut data);
                            let d = Digest::of_bytes(&data);
                            let resp = agent
                                .put(&format!("{url}/cas/{}", d.to_hex()))
                                .send(&data[..]);
                            let ok = resp.is_ok_and(|r| r.status().is_success());
                            if ok {
                                mine.push((d, data));
                            }
                            ok
                        }
                        // 40%: download one and verify it
                        3..=6 if !mine.is_empty() => {
                            let (d, data) = &mine[(rng.next() % mine.len() as u64) as usize];
                            match agent
                                .get(&format!("{url}/cas/{}", d.to_hex()))
                                .header("accept-encoding", "zstd")
                                .call()
                            {
                                Ok(r) if r.status() == 200 => {
                                    let zstd = r.headers().get("content-encoding").is_some();
                                    let body = r.into_body().read_to_vec().unwrap_or_default();
                                    let body = if zstd {
                                        zstd::decode_all(&body[..]).unwrap_or_default()
                                    } else {
                                        body
                                    };
                                    if body != *data || Digest::of_bytes(&body) != *d {
                                        corrupt.fetch_add(1, Ordering::Relaxed);
                                    }
                                    true
                                }
                                _ => false,
                            }
                        }
                        // 10%: HEAD
                        7 if !mine.is_empty() => {
                            let (d, _) = &mine[(rng.next() % mine.len() as u64) as usize];
                            agent
                                .head(&format!("{url}/cas/{}", d.to_hex()))
                                .call()
                                .is_ok_and(|r| r.status() == 200)
                        }
                        // 10%: an action-cache miss
                        8 => {
                            let k = Digest::of_bytes(&rng.next().to_le_bytes());
                            agent
                                .get(&format!("{url}/ac/{}", k.to_hex()))
                                .call()
                                .is_ok_and(|r| r.status() == 404)
                        }
                        // 10% (and the reads before any upload): an action-cache entry
                        // written and read back
                        _ => {
                            let k = Digest::of_bytes(&rng.next().to_le_bytes());
                            let empty = Digest::of_bytes(b"");
                            let _ = agent
                                .put(&format!("{url}/cas/{}", empty.to_hex()))
                                .send(&[][..]);
                            let entry = Entry::new(k, result_of_empty(empty), None).to_json();
                            let put = agent
                                .put(&format!("{url}/ac/{}", k.to_hex()))
                                .send(&entry[..])
                                .is_ok_and(|r| r.status().is_success());
                            let got = agent.get(&format!("{url}/ac/{}", k.to_hex())).call();
                            match got {
                                Ok(r) if r.status() == 200 => {
                                    if r.into_body().read_to_vec().unwrap_or_default() != entry {
                                        corrupt.fetch_add(1, Ordering::Relaxed);
                                    }
                                    put
                                }
                                _ => false,
                            }
                        }
                    };
                    mine_lat.push(t.elapsed());
                    if !ok {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                latencies.lock().unwrap().extend(mine_lat);
            });
        }
    });
    let wall = t0.elapsed();
    let mut lat = latencies.into_inner().unwrap();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let (errors, corrupt) = (errors.into_inner(), corrupt.into_inner());
    println!(
        "load: {clients} clients, {total} requests in {:.2}s ({:.0} req/s), p50 {:.1} ms, p99 {:.1} ms, {errors} errors, {corrupt} corrupt responses",
        wall.as_secs_f64(),
        total as f64 / wall.as_secs_f64(),
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    );
    if errors > 0 || corrupt > 0 {
        std::process::exit(1);
    }
}

fn result_of_empty(empty: Digest) -> ActionResult {
    ActionResult {
        outputs: BTreeMap::from([(
            "out.txt".to_string(),
            OutputFile {
                digest: empty,
                size: 0,
                executable: false,
            },
        )]),
        exit_code: 0,
        stdout: empty,
        stderr: empty,
        duration_ms: 0,
        created_at: 0,
        isolation: None,
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let num = |i: usize| -> u64 {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| usage())
    };
    match args.first().map(String::as_str) {
        Some("blob") => blob(&args[1], num(2)),
        Some("small") => small(&args[1], num(2)),
        Some("load") => load(&args[1], num(2), num(3)),
        // `cargo bench --workspace` runs every bench without arguments: nothing to do
        // without a server, which `benches/remote.sh` provides.
        None => eprintln!("remote: run through benches/remote.sh (it starts the server)"),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: remote blob URL SIZE_MIB | remote small URL COUNT | remote load URL CLIENTS TOTAL"
    );
    std::process::exit(2);
}
