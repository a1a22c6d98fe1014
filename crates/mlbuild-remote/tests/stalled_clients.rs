//! The cache server under clients that stall: uploads announcing more than the bound are
//! refused before their body is read, stalled uploads are bounded per client and timed
//! out, and reads stay served while hundreds of uploads hang.
//!
//! Scaled for CI (200 stalled uploads, 16 readers x 200 requests). The load of issue 11
//! (600 stalled uploads, 32 readers x 1,000 requests) is the same test with
//! `MLBUILD_STRESS_STALLED=600 MLBUILD_STRESS_READERS=32 MLBUILD_STRESS_REQUESTS=1000`
//! (see benches/README.md); it prints the read latencies (`--nocapture`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use mlbuild_digest::Digest;
use mlbuild_remote::server::{spawn_background, BackgroundServer, Limits, ServerConfig};
use mlbuild_remote::tokens::{Access, Tokens};

fn server(dir: &Path, limits: Limits) -> BackgroundServer {
    spawn_background(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        dir: dir.to_path_buf(),
        max_size: 1 << 30,
        tokens: Tokens::parse("").unwrap(),
        anonymous: Access::Write,
        limits,
    })
    .unwrap()
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sends the head of an upload (and `body` bytes of it), without finishing it.
fn start_upload(addr: SocketAddr, length: u64, body: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    let key = Digest::of_bytes(&length.to_le_bytes()).to_hex();
    write!(
        stream,
        "PUT /cas/{key} HTTP/1.1\r\nHost: cache\r\nContent-Length: {length}\r\n\r\n"
    )
    .unwrap();
    stream.write_all(body).unwrap();
    stream
}

/// The status code of the response on `stream`, read within `within`.
fn status_of(stream: &mut TcpStream, within: Duration) -> Option<u16> {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn an_upload_announcing_more_than_the_bound_is_refused_before_its_body() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_blob_size: 1 << 20,
        ..Limits::default()
    };
    let server = server(dir.path(), limits);
    for length in [1_000_000_000_000_000u64, 3 << 30, 3 << 20] {
        let started = Instant::now();
        let mut upload = start_upload(server.addr(), length, b"abc");
        assert_eq!(
            status_of(&mut upload, Duration::from_secs(10)),
            Some(413),
            "announced {length}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

#[test]
fn stalled_uploads_are_bounded_and_timed_out_while_reads_stay_served() {
    let stalled = env_or("MLBUILD_STRESS_STALLED", 200);
    let readers = env_or("MLBUILD_STRESS_READERS", 16);
    let requests = env_or("MLBUILD_STRESS_REQUESTS", 200);
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        body_idle_timeout: Duration::from_secs(3),
        ..Limits::default()
    };
    let per_address = limits.uploads_per_address;
    let server = server(dir.path(), limits);
    let addr = server.addr();

    // A crashed runner: uploads that announce 1 MiB, send 10 bytes and hang.
    let mut hanging: Vec<TcpStream> = (0..stalled)
        .map(|_| start_upload(addr, 1 << 20, b"0123456789"))
        .collect();

    // Meanwhile, readers on keep-alive connections: every request is answered.
    let started = Instant::now();
    let latencies: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..readers)
            .map(|r| scope.spawn(move || read_load(addr, r, requests)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a reader failed"))
            .collect()
    });
    let mut sorted = latencies.clone();
    sorted.sort();
    let pct = |p: f64| sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)];
    println!(
        "{stalled} stalled uploads, {readers} readers x {requests} requests: {} reads in {:?}; \
         latency p50 {:?}, p99 {:?}, max {:?}",
        sorted.len(),
        started.elapsed(),
        pct(0.5),
        pct(0.99),
        sorted.last().unwrap()
    );
    assert_eq!(sorted.len(), readers * requests);

    // Uploads past the per-address bound were answered 503 at once; the others, 408 once
    // they had sent nothing for the idle timeout. None is left without an answer.
    let mut answers = std::collections::BTreeMap::new();
    for upload in &mut hanging {
        let code = status_of(upload, Duration::from_secs(15));
        *answers.entry(code).or_insert(0usize) += 1;
    }
    let admitted = stalled.min(per_address);
    assert_eq!(
        answers.get(&Some(408)).copied().unwrap_or(0),
        admitted,
        "{answers:?}"
    );
    assert_eq!(
        answers.get(&Some(503)).copied().unwrap_or(0),
        stalled - admitted,
        "{answers:?}"
    );
}

/// `requests` reads on one keep-alive connection: a miss in the action cache and one in
/// the CAS, alternately; returns each request's latency.
fn read_load(addr: SocketAddr, reader: usize, requests: usize) -> Vec<Duration> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reader_buf = BufReader::new(stream.try_clone().unwrap());
    let mut latencies = Vec::with_capacity(requests);
    for i in 0..requests {
        let key = Digest::of_bytes(format!("{reader}-{i}").as_bytes()).to_hex();
        let path = if i % 2 == 0 { "ac" } else { "cas" };
        let t0 = Instant::now();
        let request = format!("GET /{path}/{key} HTTP/1.1\r\nHost: cache\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut status = String::new();
        reader_buf.read_line(&mut status).expect("a response");
        assert!(status.contains(" 404 "), "{status:?}");
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            reader_buf.read_line(&mut header).unwrap();
            if header == "\r\n" {
                break;
            }
            if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; length];
        reader_buf.read_exact(&mut body).unwrap();
        latencies.push(t0.elapsed());
    }
    latencies
}
