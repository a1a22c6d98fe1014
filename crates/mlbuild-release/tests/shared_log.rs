//! Channel logs on a real cache server: concurrent promoters never lose a record, the
//! server's compare-and-swap and token scopes hold, and readers verify what they read.

use std::path::Path;
use std::time::Duration;

use mlbuild_release::record::ArtifactRef;
use mlbuild_release::{new_record, ChannelLog, RecordKind, ReleaseError};
use mlbuild_remote::server::{spawn_background, BackgroundServer, Limits, ServerConfig};
use mlbuild_remote::{Access, ClientConfig, HttpRemote, Tokens};
use mlbuild_sign::PrivateKey;
use mlbuild_store::logs::{AppendLog, Appended, LocalLogs, LogName};

const WRITE_TOKEN: &str = "ci-writer-0123456789abcdef";
const READ_TOKEN: &str = "dev-reader-0123456789abcdef";

fn server(dir: &Path) -> BackgroundServer {
    spawn_background(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        dir: dir.to_path_buf(),
        max_size: 1 << 30,
        tokens: Tokens::parse(&format!("write {WRITE_TOKEN}\nread {READ_TOKEN}\n")).unwrap(),
        anonymous: Access::None,
        limits: Limits::default(),
    })
    .unwrap()
}

fn client(url: &str, token: &str) -> HttpRemote {
    let mut cfg = ClientConfig::new(url);
    cfg.token = Some(token.to_owned());
    cfg.io_timeout = Duration::from_secs(20);
    HttpRemote::new(cfg).unwrap()
}

fn artifact(n: u32) -> ArtifactRef {
    ArtifactRef {
        label: "//models:fraud".into(),
        sha256: format!("{n:064x}"),
        blake3: format!("{:064x}", n + 1000),
        size: 100,
        action_key: format!("{:064x}", n + 2000),
        signer: None,
        signer_key: None,
        provenance_sha256: None,
    }
}

/// Promotes artifact `n` (a new generation on top of whatever the log holds).
fn promote(log: &ChannelLog<'_>, key: &PrivateKey, n: u32) -> Result<u64, ReleaseError> {
    log.append(key, |chain| {
        let mut r = new_record(RecordKind::Promote, key, Some(format!("runner {n}")));
        r.generation = Some(chain.state.latest().map_or(1, |g| g.number + 1));
        r.artifact = Some(artifact(n));
        r.previous = chain.state.latest().map(|g| g.artifact.clone());
        Ok(r)
    })
    .map(|(r, _)| r.generation.unwrap())
}

#[test]
fn eight_concurrent_promotions_leave_eight_records_in_one_valid_chain() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let url = server.url();
    let key = PrivateKey::generate();
    std::thread::scope(|s| {
        for n in 0..8u32 {
            let (url, key) = (&url, &key);
            s.spawn(move || {
                // Each runner has its own client, as separate CI machines do.
                let remote = client(url, WRITE_TOKEN);
                let log = ChannelLog::new(&remote, "shop", "production").unwrap();
                promote(&log, key, n).unwrap_or_else(|e| panic!("runner {n}: {e}"));
            });
        }
    });
    let reader = client(&url, READ_TOKEN);
    let chain = ChannelLog::new(&reader, "shop", "production")
        .unwrap()
        .read()
        .unwrap();
    assert_eq!(chain.records.len(), 8);
    let generations: Vec<u64> = chain.state.generations.iter().map(|g| g.number).collect();
    assert_eq!(generations, (1..=8).collect::<Vec<_>>());
    let mut runners: Vec<String> = chain
        .state
        .generations
        .iter()
        .map(|g| g.artifact.sha256.clone())
        .collect();
    runners.sort();
    runners.dedup();
    assert_eq!(
        runners.len(),
        8,
        "every runner's promotion is in the chain once"
    );
    // The server keeps the same file a local log would: it verifies the same way.
    let on_disk = LocalLogs::new(dir.path().join("logs"));
    let name = LogName::new("shop", "production").unwrap();
    assert_eq!(on_disk.read(&name).unwrap(), reader.read(&name).unwrap());
}

#[test]
fn the_server_appends_only_on_the_current_head_and_only_for_writers() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let writer = client(&server.url(), WRITE_TOKEN);
    let reader = client(&server.url(), READ_TOKEN);
    let name = LogName::new("shop", "staging").unwrap();
    let head = match writer.append(&name, None, "{\"n\":1}").unwrap() {
        Appended::Done { head } => head,
        other => panic!("{other:?}"),
    };
    // A writer that did not see the first record loses and learns the head.
    assert_eq!(
        writer.append(&name, None, "{\"n\":2}").unwrap(),
        Appended::Conflict { head: Some(head) }
    );
    let refused = reader.append(&name, Some(&head), "{\"n\":2}").unwrap_err();
    assert!(
        refused.message.contains("needs a write token"),
        "{}",
        refused.message
    );
    // Not JSON, or more than one line, is refused by the server itself.
    let raw = ureq::post(&format!("{}/log/shop/staging", server.url()))
        .header("authorization", format!("Bearer {WRITE_TOKEN}"))
        .header("if-match", format!("\"{}\"", head.to_hex()))
        .config()
        .http_status_as_error(false)
        .build()
        .send("not json")
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    let no_precondition = ureq::post(&format!("{}/log/shop/staging", server.url()))
        .header("authorization", format!("Bearer {WRITE_TOKEN}"))
        .config()
        .http_status_as_error(false)
        .build()
        .send("{}")
        .unwrap();
    assert_eq!(no_precondition.status().as_u16(), 428);
    let bad_name = ureq::get(&format!("{}/log/Shop/../x", server.url()))
        .header("authorization", format!("Bearer {READ_TOKEN}"))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    assert_eq!(bad_name.status().as_u16(), 400);
    assert_eq!(reader.read(&name).unwrap(), ["{\"n\":1}"]);
}

#[test]
fn a_reader_refuses_a_log_the_server_was_made_to_hold_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let logs = LocalLogs::new(dir.path());
    let key = PrivateKey::generate();
    let log = ChannelLog::new(&logs, "shop", "production").unwrap();
    for n in 0..3 {
        promote(&log, &key, n).unwrap();
    }
    let name = LogName::new("shop", "production").unwrap();
    let lines = logs.read(&name).unwrap();
    // A record of another channel spliced in, signed and all.
    let other = ChannelLog::new(&logs, "shop", "staging").unwrap();
    promote(&other, &key, 9).unwrap();
    let foreign = logs
        .read(&LogName::new("shop", "staging").unwrap())
        .unwrap();
    let spliced = [lines[0].clone(), foreign[0].clone()];
    let e = mlbuild_release::chain::verify("production", &spliced).unwrap_err();
    assert_eq!(e.position, 2);
    assert!(
        e.problem.contains("belongs to channel `staging`"),
        "{}",
        e.problem
    );
    // A generation number that does not follow on.
    let e = mlbuild_release::chain::verify("production", &lines[1..]).unwrap_err();
    assert_eq!(e.position, 1);
}
