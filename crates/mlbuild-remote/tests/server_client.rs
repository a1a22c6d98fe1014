//! The client against a real server on loopback: round trips, zstd, tokens, eviction,
//! metrics, and every way a cache can be broken or hostile.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use mlbuild_digest::Digest;
use mlbuild_remote::server::{spawn_background, BackgroundServer, Limits, ServerConfig};
use mlbuild_remote::wire::Entry;
use mlbuild_remote::{Access, ClientConfig, HttpRemote, RemoteStatus, Tokens};
use mlbuild_sign::PrivateKey;
use mlbuild_store::{ActionResult, OutputFile, RemoteCache, Store};

const WRITE_TOKEN: &str = "ci-writer-0123456789abcdef";
const READ_TOKEN: &str = "dev-reader-0123456789abcdef";

fn server(dir: &Path, max_size: u64, tokens: &str, anonymous: Access) -> BackgroundServer {
    spawn_background(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        dir: dir.to_path_buf(),
        max_size,
        tokens: Tokens::parse(tokens).unwrap(),
        anonymous,
        limits: Limits::default(),
    })
    .unwrap()
}

fn open_server(dir: &Path) -> BackgroundServer {
    server(dir, 1 << 30, "", Access::Write)
}

fn client(url: &str, f: impl FnOnce(&mut ClientConfig)) -> HttpRemote {
    let mut cfg = ClientConfig::new(url);
    cfg.connect_timeout = Duration::from_secs(1);
    cfg.io_timeout = Duration::from_secs(2);
    f(&mut cfg);
    HttpRemote::new(cfg).unwrap()
}

/// A result with two outputs (one compressible, one not) and stdout.
fn result_in(store: &Store, seed: u8) -> ActionResult {
    let text: Vec<u8> = format!("feature,label\n{}", "0.5,1\n".repeat(5000))
        .into_bytes()
        .into_iter()
        .chain([seed])
        .collect();
    let noise: Vec<u8> = (0..70_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect();
    let mut outputs = BTreeMap::new();
    for (name, data) in [("train.csv", &text), ("weights/model.bin", &noise)] {
        outputs.insert(
            name.to_string(),
            OutputFile {
                digest: store.put_bytes(data).unwrap(),
                size: data.len() as u64,
                executable: false,
            },
        );
    }
    ActionResult {
        outputs,
        exit_code: 0,
        stdout: store.put_bytes(b"trained\n").unwrap(),
        stderr: store.put_bytes(b"").unwrap(),
        duration_ms: 1234,
        created_at: 1_700_000_000,
        isolation: None,
    }
}

fn stores() -> (tempfile::TempDir, Store, Store) {
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open(&dir.path().join("a")).unwrap();
    let b = Store::open(&dir.path().join("b")).unwrap();
    (dir, a, b)
}

/// One raw HTTP/1.1 request, so paths reach the server exactly as written.
fn raw_request(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn upload_then_fetch_into_an_empty_store() {
    let (tmp, a, b) = stores();
    let srv = open_server(&tmp.path().join("srv"));
    let remote = client(&srv.url(), |_| {});
    let key = Digest::of_bytes(b"action-1");
    let result = result_in(&a, 1);

    assert!(remote.fetch(&key, &b).unwrap().is_none(), "empty cache");
    assert!(remote.can_write());
    let up = remote.upload(&key, &result, &a).unwrap().unwrap();
    assert_eq!(up.blobs, 4, "two outputs, stdout and stderr");
    assert!(up.bytes > 0);
    // zstd on the wire: the repetitive CSV compresses far below its size.
    let raw_total: u64 = result.outputs.values().map(|o| o.size).sum();
    assert!(up.bytes < raw_total, "{} >= {raw_total}", up.bytes);

    let hit = remote.fetch(&key, &b).unwrap().expect("a hit");
    assert_eq!(hit.result, result);
    assert_eq!(hit.transfer.blobs, 4);
    for d in result.blobs() {
        assert_eq!(b.read_blob(&d).unwrap(), a.read_blob(&d).unwrap());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(b.blob_path(&d)).unwrap().permissions(),
        );
        assert_eq!(
            mode & 0o777,
            0o444,
            "downloaded blobs are read-only like local ones"
        );
    }
    assert!(std::fs::read_dir(b.tmp_dir()).unwrap().next().is_none());

    // Everything is present now: nothing crosses the wire but the entry.
    let again = remote.fetch(&key, &b).unwrap().unwrap();
    assert_eq!(again.transfer.blobs, 0);
    // Uploading again skips the blobs the server has.
    assert_eq!(remote.upload(&key, &result, &a).unwrap().unwrap().blobs, 0);
}

#[test]
fn server_rehashes_uploads_and_refuses_hostile_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("srv");
    let srv = open_server(&dir);
    let claimed = Digest::of_bytes(b"the real content").to_hex();
    let resp = raw_request(
        srv.addr(),
        &format!(
            "PUT /cas/{claimed} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nevil"
        ),
    );
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("digest mismatch"), "{resp}");
    assert!(!dir.join("cas").join(&claimed).exists());

    for path in [
        "/cas/../../etc/passwd",
        "/cas/..%2F..%2Fetc%2Fpasswd",
        "/ac/%2e%2e",
        &format!("/cas/{}", claimed.to_uppercase()),
        &format!("/cas/{claimed}/x"),
        "/cas/",
        "/ac",
    ] {
        for method in ["GET", "PUT"] {
            let resp = raw_request(
                srv.addr(),
                &format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"),
            );
            assert!(resp.starts_with("HTTP/1.1 400"), "{method} {path}: {resp}");
        }
    }
    // Nothing was written anywhere but the cache's own layout.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["ac", "cas", "tmp"]);
    assert!(std::fs::read_dir(dir.join("cas")).unwrap().next().is_none());

    // A malformed action-cache entry is refused too.
    let key = Digest::of_bytes(b"k").to_hex();
    let resp = raw_request(
        srv.addr(),
        &format!("PUT /ac/{key} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"),
    );
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");

    let metrics = raw_request(
        srv.addr(),
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        metrics.contains("mlbuild_cache_rejected_uploads_total{reason=\"digest_mismatch\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mlbuild_cache_rejected_uploads_total{reason=\"malformed\"} 1"),
        "{metrics}"
    );
}

#[test]
fn zstd_is_served_only_to_clients_that_accept_it() {
    let (tmp, a, _b) = stores();
    let srv = open_server(&tmp.path().join("srv"));
    let remote = client(&srv.url(), |_| {});
    let result = result_in(&a, 2);
    remote.upload(&Digest::of_bytes(b"z"), &result, &a).unwrap();
    let csv = result.outputs["train.csv"].digest;
    let agent = ureq::Agent::new_with_defaults();
    let url = format!("{}/cas/{}", srv.url(), csv.to_hex());
    let plain = agent.get(&url).call().unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    let body = plain.into_body().read_to_vec().unwrap();
    assert_eq!(body, a.read_blob(&csv).unwrap());
    let zstd = agent
        .get(&url)
        .header("accept-encoding", "zstd")
        .call()
        .unwrap();
    assert_eq!(zstd.headers().get("content-encoding").unwrap(), "zstd");
    let compressed = zstd.into_body().read_to_vec().unwrap();
    assert!(compressed.len() < body.len() / 4);
    assert_eq!(zstd::decode_all(&compressed[..]).unwrap(), body);
}

#[test]
fn tokens_separate_readers_from_writers() {
    let (tmp, a, b) = stores();
    let tokens = format!("write {WRITE_TOKEN}\nread {READ_TOKEN}\n");
    let srv = server(&tmp.path().join("srv"), 1 << 30, &tokens, Access::None);
    let key = Digest::of_bytes(b"scoped");
    let result = result_in(&a, 3);

    let anonymous = client(&srv.url(), |_| {});
    let err = anonymous.fetch(&key, &b).unwrap_err().to_string();
    assert!(err.contains("401"), "{err}");

    let reader = client(&srv.url(), |c| c.token = Some(READ_TOKEN.into()));
    assert!(reader.fetch(&key, &b).unwrap().is_none());
    let err = reader.upload(&key, &result, &a).unwrap_err().to_string();
    assert!(
        err.contains("403") && err.contains("no more uploads"),
        "{err}"
    );
    assert!(
        !reader.can_write(),
        "a refused upload stops further attempts"
    );

    let wrong = client(&srv.url(), |c| {
        c.token = Some("not-a-token-at-all-0000".into())
    });
    assert!(wrong
        .fetch(&key, &b)
        .unwrap_err()
        .to_string()
        .contains("401"));

    let writer = client(&srv.url(), |c| c.token = Some(WRITE_TOKEN.into()));
    writer.upload(&key, &result, &a).unwrap();
    assert_eq!(reader.fetch(&key, &b).unwrap().unwrap().result, result);
}

#[test]
fn uploads_refused_at_once_are_reported_once() {
    // Anonymous reads only, and a client without a token: a build's uploads run in
    // parallel and are all refused; one of them says so, the rest end quietly.
    let (tmp, a, _b) = stores();
    let srv = server(&tmp.path().join("srv"), 1 << 30, "", Access::Read);
    let remote = client(&srv.url(), |c| c.concurrency = 16);
    let results: Vec<ActionResult> = (0..8).map(|seed| result_in(&a, seed)).collect();
    let start = std::sync::Barrier::new(results.len());
    let outcomes: Vec<Result<Option<_>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = results
            .iter()
            .enumerate()
            .map(|(i, result)| {
                let (remote, start, a) = (&remote, &start, &a);
                s.spawn(move || {
                    start.wait();
                    remote
                        .upload(&Digest::of_bytes(&[i as u8]), result, a)
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let errors: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert_eq!(errors.len(), 1, "{outcomes:?}");
    assert!(errors[0].contains("401"), "{}", errors[0]);
    assert!(
        outcomes.iter().all(|o| matches!(o, Ok(None) | Err(_))),
        "nothing was uploaded: {outcomes:?}"
    );
    assert!(!remote.can_write());
    assert!(remote
        .upload(&Digest::of_bytes(b"later"), &results[0], &a)
        .unwrap()
        .is_none());
}

#[test]
fn a_refused_large_upload_reports_the_refusal_not_a_broken_pipe() {
    // The server answers 403 before reading the body; without draining it, a client still
    // sending 8 MiB sees its connection reset instead of the reason.
    let (tmp, a, _b) = stores();
    let tokens = format!("write {WRITE_TOKEN}\nread {READ_TOKEN}\n");
    let srv = server(&tmp.path().join("srv"), 1 << 30, &tokens, Access::None);
    let big: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let mut result = result_in(&a, 9);
    result.outputs.insert(
        "weights/big.bin".into(),
        OutputFile {
            digest: a.put_bytes(&big).unwrap(),
            size: big.len() as u64,
            executable: false,
        },
    );
    for attempt in 0..3 {
        let reader = client(&srv.url(), |c| c.token = Some(READ_TOKEN.into()));
        let err = reader
            .upload(&Digest::of_bytes(&[attempt]), &result, &a)
            .unwrap_err()
            .to_string();
        assert!(err.contains("403"), "attempt {attempt}: {err}");
    }
}

#[test]
fn entries_whose_blobs_were_evicted_are_misses() {
    let (tmp, a, b) = stores();
    let dir = tmp.path().join("srv");
    let srv = open_server(&dir);
    let remote = client(&srv.url(), |_| {});
    let key = Digest::of_bytes(b"partial");
    let result = result_in(&a, 4);
    remote.upload(&key, &result, &a).unwrap();
    let model = result.outputs["weights/model.bin"].digest;
    std::fs::remove_file(dir.join("cas").join(model.to_hex())).unwrap();
    assert!(remote.fetch(&key, &b).unwrap().is_none());
    assert!(b.get_action(&key).unwrap().is_none());
}

#[test]
fn lru_eviction_keeps_the_cache_under_its_bound() {
    let (tmp, a, _b) = stores();
    let dir = tmp.path().join("srv");
    // Room for about two results.
    let srv = server(&dir, 200_000, "", Access::Write);
    let remote = client(&srv.url(), |_| {});
    for seed in 10..16 {
        let result = result_in(&a, seed);
        remote
            .upload(&Digest::of_bytes(&[seed]), &result, &a)
            .unwrap();
    }
    let on_disk: u64 = ["cas", "ac"]
        .iter()
        .flat_map(|k| std::fs::read_dir(dir.join(k)).unwrap())
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(on_disk <= 200_000, "{on_disk}");
    let RemoteStatus::Mlbuild(status) = remote.status().unwrap() else {
        panic!("an mlbuild server")
    };
    assert!(status["evictions"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(status["size_bytes"].as_u64().unwrap(), on_disk, "{status}");
    assert_eq!(status["max_size_bytes"], 200_000);
}

#[test]
fn poisoned_entries_and_corrupt_blobs_are_refused() {
    let (tmp, a, b) = stores();
    let dir = tmp.path().join("srv");
    let srv = open_server(&dir);
    let ci = PrivateKey::generate();
    let intruder = PrivateKey::generate();
    let writer = client(&srv.url(), |c| c.signing_key = Some(ci.clone()));
    let reader = client(&srv.url(), |c| c.trusted_keys = vec![ci.public_key()]);
    let result = result_in(&a, 5);
    let good = Digest::of_bytes(b"good");
    writer.upload(&good, &result, &a).unwrap();
    assert!(
        reader.fetch(&good, &b).unwrap().is_some(),
        "a properly signed entry is used"
    );

    let other = result_in(&a, 6);
    // Upload the other result's blobs (so only the entry is at fault).
    let blobs_only = client(&srv.url(), |_| {});
    blobs_only
        .upload(&Digest::of_bytes(b"carrier"), &other, &a)
        .unwrap();
    let plant = |key: &Digest, entry: &Entry| {
        std::fs::write(dir.join("ac").join(key.to_hex()), entry.to_json()).unwrap();
    };
    let fresh = || {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        (d, s)
    };

    // Unsigned.
    let k1 = Digest::of_bytes(b"unsigned");
    plant(&k1, &Entry::new(k1, other.clone(), None));
    // Signed by a key nobody trusts.
    let k2 = Digest::of_bytes(b"intruder");
    plant(&k2, &Entry::new(k2, other.clone(), Some(&intruder)));
    // Signed by the trusted key, then an output digest swapped for other content.
    let k3 = Digest::of_bytes(b"swapped");
    let mut swapped = Entry::new(k3, result.clone(), Some(&ci));
    swapped.result.outputs.get_mut("train.csv").unwrap().digest = other.outputs["train.csv"].digest;
    plant(&k3, &swapped);
    for (key, want) in [(k1, "unsigned"), (k2, "untrusted"), (k3, "does not verify")] {
        let (_d, store) = fresh();
        let err = reader.fetch(&key, &store).unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
        assert!(store.get_action(&key).unwrap().is_none());
        for blob in other.blobs() {
            assert!(
                !store.has_blob(&blob),
                "nothing of a refused entry is downloaded"
            );
        }
    }

    // Without trusted keys an entry is believed, but not its sizes: a blob longer than
    // promised is cut off after one extra byte and refused.
    let k4 = Digest::of_bytes(b"short size");
    let mut lying = other.clone();
    lying.outputs.get_mut("weights/model.bin").unwrap().size = 10;
    plant(&k4, &Entry::new(k4, lying, None));
    let (_d, store) = fresh();
    let err = blobs_only.fetch(&k4, &store).unwrap_err().to_string();
    assert!(err.contains("corrupt") && err.contains("11 bytes"), "{err}");

    // A blob corrupted on the server's disk: the download is re-hashed and refused.
    let model = result.outputs["weights/model.bin"].digest;
    let path = dir.join("cas").join(model.to_hex());
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, vec![0u8; 70_000]).unwrap();
    let (_d, store) = fresh();
    let err = reader.fetch(&good, &store).unwrap_err().to_string();
    assert!(err.contains("corrupt"), "{err}");
    assert!(!store.has_blob(&model));
    assert!(std::fs::read_dir(store.tmp_dir()).unwrap().next().is_none());
}

#[test]
fn a_down_or_silent_cache_is_given_up_quickly() {
    let (_tmp, a, b) = stores();
    // Nothing listens on this port once the listener is dropped.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = client(&format!("http://127.0.0.1:{port}"), |_| {});
    let key = Digest::of_bytes(b"k");
    let err = down.fetch(&key, &b).unwrap_err().to_string();
    assert!(err.contains("unreachable"), "{err}");
    // Marked down: later calls neither wait nor warn again.
    let t0 = Instant::now();
    assert!(down.fetch(&key, &b).unwrap().is_none());
    assert!(!down.can_write());
    assert!(down.upload(&key, &result_in(&a, 7), &a).unwrap().is_none());
    assert!(t0.elapsed() < Duration::from_millis(500));

    // Accepts connections but never answers: the response timeout ends the wait.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = std::thread::spawn(move || {
        let conn = silent.accept();
        std::thread::sleep(Duration::from_secs(3));
        drop(conn);
    });
    let slow = client(&format!("http://{addr}"), |_| {});
    let err = slow.fetch(&key, &b).unwrap_err().to_string();
    assert!(err.contains("unreachable"), "{err}");
    hold.join().unwrap();
}

#[test]
fn shutdown_lets_transfers_in_flight_finish() {
    let (tmp, a, _b) = stores();
    let srv = open_server(&tmp.path().join("srv"));
    let remote = client(&srv.url(), |_| {});
    let mut data = vec![0u8; 24 << 20];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2_654_435_761) >> 7) as u8;
    }
    let d = a.put_bytes(&data).unwrap();
    let mut result = result_in(&a, 8);
    result.outputs.get_mut("train.csv").unwrap().digest = d;
    result.outputs.get_mut("train.csv").unwrap().size = data.len() as u64;
    remote
        .upload(&Digest::of_bytes(b"big"), &result, &a)
        .unwrap();

    let url = format!("{}/cas/{}", srv.url(), d.to_hex());
    let addr = srv.addr();
    let resp = ureq::get(&url).call().unwrap();
    let mut body = resp.into_body().into_reader();
    let mut first = vec![0u8; 1 << 16];
    body.read_exact(&mut first).unwrap();
    // Stop while the body is still streaming; `stop` waits for it.
    let stopper = std::thread::spawn(move || srv.stop());
    std::thread::sleep(Duration::from_millis(200));
    let mut rest = Vec::new();
    body.read_to_end(&mut rest).unwrap();
    first.extend(rest);
    assert_eq!(
        Digest::of_bytes(&first),
        d,
        "the transfer in flight completed intact"
    );
    stopper.join().unwrap();
    assert!(TcpStream::connect(addr).is_err(), "no longer accepting");
}
