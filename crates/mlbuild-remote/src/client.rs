//! The HTTP client behind [`RemoteCache`]: downloads verified results into the local
//! store, uploads what this machine built.
//!
//! Zero trust in the wire: every blob is re-hashed while it streams to a temp file in the
//! store and renamed into place only if it matches, every action-cache entry is parsed
//! strictly and its signature checked against the trusted keys before anything is used.
//! A remote that is down costs one connect timeout per build: the first transport error
//! marks it down and later calls return at once. Transfers run on a few threads, bounded
//! per client. Main type: [`HttpRemote`].

use std::collections::BTreeMap;
use std::fs::{self, File, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use mlbuild_digest::Digest;
use mlbuild_sign::{PrivateKey, PublicKey};
use mlbuild_store::{
    ActionResult, RemoteCache, RemoteError, RemoteErrorKind, RemoteHit, Store, Transfer,
};
use ureq::http::Response;
use ureq::Body;

use crate::server::SERVER_HEADER;
use crate::wire::{Entry, Kind, Refusal, MAX_ENTRY_BYTES};

/// zstd level for uploads: cheap enough not to slow a gigabit link.
const ZSTD_LEVEL: i32 = 1;
const CHUNK: usize = 256 << 10;

/// How a client talks to its remote.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The base URL, e.g. `http://cache.internal:8080` or `https://dav.example/mlbuild`.
    pub url: String,
    /// A bearer token (from `MLBUILD_REMOTE_TOKEN` or a token file, never MLBUILD.toml).
    pub token: Option<String>,
    /// Never upload.
    pub read_only: bool,
    /// When non-empty, only entries signed by one of these keys are used.
    pub trusted_keys: Vec<PublicKey>,
    /// Signs uploaded entries.
    pub signing_key: Option<PrivateKey>,
    /// Transfers in flight at once, across all callers of this client.
    pub concurrency: usize,
    /// Connect timeout: how fast a dead cache is noticed.
    pub connect_timeout: Duration,
    /// Longest wait for a response, and for each read or write of a body.
    pub io_timeout: Duration,
}

impl ClientConfig {
    pub fn new(url: impl Into<String>) -> ClientConfig {
        ClientConfig {
            url: url.into(),
            token: None,
            read_only: false,
            trusted_keys: Vec::new(),
            signing_key: None,
            concurrency: 8,
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(10),
        }
    }
}

/// What `GET {base}/status` said.
#[derive(Clone, Debug)]
pub enum RemoteStatus {
    /// An mlbuild server: its `/status` JSON.
    Mlbuild(serde_json::Value),
    /// Reachable, but not an mlbuild server (WebDAV): no statistics.
    Other { http_status: u16 },
}

/// A counting semaphore bounding transfers in flight.
struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

struct Slot<'a>(&'a Slots);

impl Slots {
    fn acquire(&self) -> Slot<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.cv.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.cv.notify_one();
    }
}

const SERVER_UNKNOWN: u8 = 0;
const SERVER_MLBUILD: u8 = 1;
const SERVER_OTHER: u8 = 2;

/// The remote cache client.
pub struct HttpRemote {
    cfg: ClientConfig,
    base: String,
    agent: ureq::Agent,
    slots: Slots,
    server: AtomicU8,
    down: AtomicBool,
    uploads_refused: AtomicBool,
    /// Whether the remote being down, and uploads being refused, were reported: each once
    /// per client, however many transfers were under way when it happened.
    down_reported: AtomicBool,
    refusal_reported: AtomicBool,
}

impl std::fmt::Debug for HttpRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRemote")
            .field("base", &self.base)
            .finish()
    }
}

/// Removes a temp file when dropped unless it was renamed into place.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Counts the bytes read through it: what crossed the wire.
struct Counting<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

impl HttpRemote {
    /// Checks the URL; nothing is contacted until the first lookup.
    pub fn new(cfg: ClientConfig) -> Result<HttpRemote, RemoteError> {
        let base = cfg.url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(RemoteError::new(format!(
                "remote cache URL `{}` must start with `http://` or `https://`",
                cfg.url
            )));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(cfg.connect_timeout))
            .timeout_recv_response(Some(cfg.io_timeout))
            .timeout_per_read(Some(cfg.io_timeout))
            .timeout_per_write(Some(cfg.io_timeout))
            .max_idle_connections(cfg.concurrency.max(1) * 2)
            .max_idle_connections_per_host(cfg.concurrency.max(1) * 2)
            .user_agent(concat!("mlbuild/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(HttpRemote {
            slots: Slots {
                free: Mutex::new(cfg.concurrency.max(1)),
                cv: Condvar::new(),
            },
            agent: ureq::Agent::new_with_config(config),
            base,
            cfg,
            server: AtomicU8::new(SERVER_UNKNOWN),
            down: AtomicBool::new(false),
            uploads_refused: AtomicBool::new(false),
            down_reported: AtomicBool::new(false),
            refusal_reported: AtomicBool::new(false),
        })
    }

    fn url(&self, kind: Kind, d: &Digest) -> String {
        format!("{}/{}/{}", self.base, kind.as_str(), d.to_hex())
    }

    fn auth(&self) -> Option<String> {
        self.cfg.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    /// A transport failure: the remote is unreachable or too slow, so stop using it for
    /// the rest of this process rather than wait for a timeout on every action.
    fn transport(&self, what: &str, e: ureq::Error) -> RemoteError {
        self.down.store(true, Ordering::Relaxed);
        RemoteError::new(format!(
            "remote cache `{}` is unreachable ({what}: {e}); continuing without it",
            self.base
        ))
        .with_kind(RemoteErrorKind::Unreachable)
    }

    /// `Some(e)` when `e` is to be reported. That the remote is down or refuses uploads
    /// is said by the first call that meets it; calls that were already under way at the
    /// time end quietly, as later calls do (they no longer try).
    fn report_once(&self, e: RemoteError) -> Option<RemoteError> {
        let reported = match e.kind {
            RemoteErrorKind::Unreachable => &self.down_reported,
            RemoteErrorKind::UploadRefused => &self.refusal_reported,
            _ => return Some(e),
        };
        (!reported.swap(true, Ordering::Relaxed)).then_some(e)
    }

    fn learn(&self, resp: &Response<Body>) {
        let mlbuild = resp
            .headers()
            .get("server")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(SERVER_HEADER.split('/').next().unwrap_or("")));
        self.server.store(
            if mlbuild {
                SERVER_MLBUILD
            } else {
                SERVER_OTHER
            },
            Ordering::Relaxed,
        );
    }

    fn get(&self, url: &str) -> Result<Response<Body>, ureq::Error> {
        let mut req = self.agent.get(url).header("accept-encoding", "zstd");
        if let Some(a) = self.auth() {
            req = req.header("authorization", a);
        }
        req.call()
    }

    fn head(&self, url: &str) -> Result<Response<Body>, ureq::Error> {
        let mut req = self.agent.head(url);
        if let Some(a) = self.auth() {
            req = req.header("authorization", a);
        }
        req.call()
    }

    fn status_error(&self, what: &str, resp: Response<Body>) -> RemoteError {
        let status = resp.status();
        let detail = resp
            .into_body()
            .with_config()
            .limit(4096)
            .read_to_string()
            .unwrap_or_default();
        let help = match status.as_u16() {
            401 | 403 => " (check the token: `MLBUILD_REMOTE_TOKEN` or `--remote-token-file`)",
            _ => "",
        };
        RemoteError::new(format!(
            "remote cache `{}` answered {status} to {what}{}{help}",
            self.base,
            match detail.trim() {
                "" => String::new(),
                d => format!(": {d}"),
            }
        ))
    }

    /// `GET {base}/status`, for `mlbuild cache stats`.
    pub fn status(&self) -> Result<RemoteStatus, RemoteError> {
        let url = format!("{}/status", self.base);
        let resp = self
            .get(&url)
            .map_err(|e| self.transport("GET /status", e))?;
        self.learn(&resp);
        let code = resp.status().as_u16();
        if self.server.load(Ordering::Relaxed) == SERVER_MLBUILD {
            if code != 200 {
                return Err(self.status_error("GET /status", resp));
            }
            let text = resp
                .into_body()
                .with_config()
                .limit(1 << 20)
                .read_to_string()
                .map_err(|e| RemoteError::new(format!("reading /status failed: {e}")))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| RemoteError::new(format!("malformed /status: {e}")))?;
            return Ok(RemoteStatus::Mlbuild(json));
        }
        Ok(RemoteStatus::Other { http_status: code })
    }

    /// Downloads one blob into the store, verifying digest (and size when known).
    /// Returns the bytes that crossed the wire.
    fn download_blob(
        &self,
        d: &Digest,
        size: Option<u64>,
        store: &Store,
    ) -> Result<u64, RemoteError> {
        let _slot = self.slots.acquire();
        if store.has_blob(d) {
            return Ok(0);
        }
        let url = self.url(Kind::Cas, d);
        let resp = self.get(&url).map_err(|e| self.transport("GET", e))?;
        self.learn(&resp);
        match resp.status().as_u16() {
            200 => {}
            404 => {
                return Err(RemoteError::new(format!(
                    "blob `{}` is missing from the remote cache (evicted?)",
                    d.short()
                )))
            }
            _ => return Err(self.status_error("a blob download", resp)),
        }
        let zstd = resp
            .headers()
            .get("content-encoding")
            .is_some_and(|v| v.as_bytes() == b"zstd");
        let mut wire = Counting {
            inner: resp.into_body().into_reader(),
            n: 0,
        };
        let mut tmp = TempFile(Some(unique_tmp(store)));
        let tmp_path = tmp.0.clone().expect("armed");
        let io_err = |e: io::Error| {
            RemoteError::new(format!("downloading blob `{}` failed: {e}", d.short()))
        };
        // A hostile server could stream (or zstd-inflate) without end: read at most one
        // byte more than the entry promised, enough to tell a wrong size.
        let limit = size.map_or(u64::MAX, |s| s.saturating_add(1));
        let (actual, len) = {
            let mut file = File::create_new(&tmp_path).map_err(io_err)?;
            let result = if zstd {
                let decoder = zstd::stream::read::Decoder::new(&mut wire).map_err(io_err)?;
                copy_hashing(decoder.take(limit), &mut file)
            } else {
                copy_hashing((&mut wire).take(limit), &mut file)
            };
            result.map_err(io_err)?
        };
        if actual != *d || size.is_some_and(|s| s != len) {
            return Err(RemoteError::new(format!(
                "blob `{}` from the remote cache is corrupt (it hashes to `{}`, {len} bytes)",
                d.short(),
                actual.short()
            )));
        }
        // The same invariants as the store's own writes: read-only, renamed into place.
        fs::set_permissions(&tmp_path, Permissions::from_mode(0o444)).map_err(io_err)?;
        let dest = store.blob_path(d);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(io_err)?;
        }
        fs::rename(&tmp_path, &dest).map_err(io_err)?;
        tmp.0 = None; // renamed: nothing to clean up
        Ok(wire.n)
    }

    /// Uploads one blob unless the remote has it. Returns wire bytes (0 when skipped).
    fn upload_blob(&self, d: &Digest, store: &Store) -> Result<u64, RemoteError> {
        let _slot = self.slots.acquire();
        let url = self.url(Kind::Cas, d);
        let resp = self.head(&url).map_err(|e| self.transport("HEAD", e))?;
        self.learn(&resp);
        match resp.status().as_u16() {
            200 => {
                drain(resp);
                return Ok(0);
            }
            404 => drain(resp),
            401 | 403 => return Err(self.refused(resp)),
            _ => return Err(self.status_error("HEAD", resp)),
        }
        let path = store.blob_path(d);
        let file = File::open(&path).map_err(|e| {
            RemoteError::new(format!(
                "cannot read `{}` to upload it: {e}",
                path.display()
            ))
        })?;
        let mut req = self.agent.put(&url);
        if let Some(a) = self.auth() {
            req = req.header("authorization", a);
        }
        let (resp, sent) = if self.server.load(Ordering::Relaxed) == SERVER_MLBUILD {
            // Only mlbuild's server decodes zstd bodies; a WebDAV server would store the
            // compressed bytes under the blob's name.
            let encoder = zstd::stream::read::Encoder::new(file, ZSTD_LEVEL)
                .map_err(|e| RemoteError::new(format!("zstd: {e}")))?;
            let mut counted = Counting {
                inner: encoder,
                n: 0,
            };
            let resp = req
                .header("content-encoding", "zstd")
                .header("content-type", "application/octet-stream")
                .send(ureq::SendBody::from_reader(&mut counted));
            (resp, counted.n)
        } else {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            (req.send(file), len)
        };
        let resp = resp.map_err(|e| self.transport("PUT", e))?;
        match resp.status().as_u16() {
            200..=299 => {
                drain(resp);
                Ok(sent)
            }
            401 | 403 => Err(self.refused(resp)),
            _ => Err(self.status_error("a blob upload", resp)),
        }
    }

    fn refused(&self, resp: Response<Body>) -> RemoteError {
        self.uploads_refused.store(true, Ordering::Relaxed);
        let e = self.status_error("an upload", resp);
        RemoteError::new(format!(
            "{e}; no more uploads this build (if this machine only reads, set `[remote] read_only = true` or pass `--remote-read-only`)"
        ))
        .with_kind(RemoteErrorKind::UploadRefused)
    }

    /// Runs `f` over `items` on up to `concurrency` threads; the first error wins and
    /// stops the rest. Returns the sum of what `f` returned.
    fn parallel<T: Sync>(
        &self,
        items: &[T],
        f: impl Fn(&T) -> Result<u64, RemoteError> + Sync,
    ) -> Result<u64, RemoteError> {
        let workers = self.cfg.concurrency.clamp(1, items.len().max(1));
        if workers == 1 {
            return items.iter().try_fold(0, |acc, item| Ok(acc + f(item)?));
        }
        let next = AtomicU64::new(0);
        let total = AtomicU64::new(0);
        let failed = AtomicBool::new(false);
        let first_error: Mutex<Option<RemoteError>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= items.len() || failed.load(Ordering::Relaxed) {
                        break;
                    }
                    match f(&items[i]) {
                        Ok(n) => {
                            total.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            first_error
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_or_insert(e);
                        }
                    }
                });
            }
        });
        match first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e),
            None => Ok(total.into_inner()),
        }
    }
}

fn drain(resp: Response<Body>) {
    // Reading the (short) body lets the connection go back to the pool.
    let _ = resp.into_body().with_config().limit(1 << 16).read_to_vec();
}

fn unique_tmp(store: &Store) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    store
        .tmp_dir()
        .join(format!("remote-{}-{n}", std::process::id()))
}

/// Copies `from` into `to`, hashing on the way; returns digest and length.
fn copy_hashing(mut from: impl Read, to: &mut File) -> io::Result<(Digest, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut len = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
        len += n as u64;
    }
    Ok((Digest::from_bytes(*hasher.finalize().as_bytes()), len))
}

/// Every distinct blob of a result with its size when the result states one.
fn blobs_of(result: &ActionResult) -> Vec<(Digest, Option<u64>)> {
    let mut blobs: BTreeMap<Digest, Option<u64>> = BTreeMap::new();
    for o in result.outputs.values() {
        blobs.insert(o.digest, Some(o.size));
    }
    for d in [result.stdout, result.stderr] {
        blobs.entry(d).or_insert(None);
    }
    blobs.into_iter().collect()
}

impl RemoteCache for HttpRemote {
    fn describe(&self) -> String {
        self.base.clone()
    }

    fn fetch(&self, key: &Digest, store: &Store) -> Result<Option<RemoteHit>, RemoteError> {
        self.fetch_entry(key, store)
            .or_else(|e| self.report_once(e).map_or(Ok(None), Err))
    }

    fn can_write(&self) -> bool {
        !self.cfg.read_only
            && !self.down.load(Ordering::Relaxed)
            && !self.uploads_refused.load(Ordering::Relaxed)
    }

    fn limitation(&self) -> Option<String> {
        if self.down.load(Ordering::Relaxed) {
            Some("unreachable".into())
        } else if self.uploads_refused.load(Ordering::Relaxed) {
            Some("uploads refused".into())
        } else if self.cfg.read_only {
            Some("read-only".into())
        } else {
            None
        }
    }

    fn upload(
        &self,
        key: &Digest,
        result: &ActionResult,
        store: &Store,
    ) -> Result<Option<Transfer>, RemoteError> {
        if !self.can_write() {
            return Ok(None);
        }
        match self.upload_result(key, result, store) {
            Ok(transfer) => Ok(Some(transfer)),
            Err(e) => self.report_once(e).map_or(Ok(None), Err),
        }
    }
}

impl HttpRemote {
    fn fetch_entry(&self, key: &Digest, store: &Store) -> Result<Option<RemoteHit>, RemoteError> {
        if self.down.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let resp = {
            let _slot = self.slots.acquire();
            self.get(&self.url(Kind::Ac, key))
                .map_err(|e| self.transport("GET", e))?
        };
        self.learn(&resp);
        match resp.status().as_u16() {
            200 => {}
            404 => {
                drain(resp);
                return Ok(None);
            }
            _ => return Err(self.status_error("an action-cache lookup", resp)),
        }
        let zstd = resp
            .headers()
            .get("content-encoding")
            .is_some_and(|v| v.as_bytes() == b"zstd");
        let raw = resp
            .into_body()
            .with_config()
            .limit(MAX_ENTRY_BYTES as u64)
            .read_to_vec()
            .map_err(|e| RemoteError::new(format!("reading action-cache entry failed: {e}")))?;
        let mut wire_bytes = raw.len() as u64;
        let bytes = if zstd {
            let mut out = Vec::new();
            zstd::stream::read::Decoder::new(&raw[..])
                .and_then(|d| d.take(MAX_ENTRY_BYTES as u64 + 1).read_to_end(&mut out))
                .map_err(|e| RemoteError::new(format!("cannot decode action-cache entry: {e}")))?;
            out
        } else {
            raw
        };
        let refuse = |why: String| {
            RemoteError::new(format!(
                "refused action-cache entry `{}` from `{}`: {why}",
                key.short(),
                self.base
            ))
        };
        let entry = Entry::parse(&bytes, key).map_err(refuse)?;
        entry.verify(&self.cfg.trusted_keys).map_err(|why| {
            let kind = match &why {
                Refusal::Untrusted { signers } => RemoteErrorKind::Untrusted {
                    signers: signers.clone(),
                },
                Refusal::Invalid(_) => RemoteErrorKind::Other,
            };
            refuse(why.to_string()).with_kind(kind)
        })?;
        let needed: Vec<(Digest, Option<u64>)> = blobs_of(&entry.result)
            .into_iter()
            .filter(|(d, _)| !store.has_blob(d))
            .collect();
        wire_bytes += self.parallel(&needed, |(d, size)| self.download_blob(d, *size, store))?;
        Ok(Some(RemoteHit {
            result: entry.result,
            transfer: Transfer {
                blobs: needed.len() as u64,
                bytes: wire_bytes,
            },
        }))
    }

    fn upload_result(
        &self,
        key: &Digest,
        result: &ActionResult,
        store: &Store,
    ) -> Result<Transfer, RemoteError> {
        let blobs = blobs_of(result);
        let uploaded = AtomicU64::new(0);
        let mut bytes = self.parallel(&blobs, |(d, _)| {
            let n = self.upload_blob(d, store)?;
            if n > 0 {
                uploaded.fetch_add(1, Ordering::Relaxed);
            }
            Ok(n)
        })?;
        // The entry goes last: a reader who sees it finds every blob it references.
        let entry = Entry::new(*key, result.clone(), self.cfg.signing_key.as_ref()).to_json();
        bytes += entry.len() as u64;
        let _slot = self.slots.acquire();
        let mut req = self
            .agent
            .put(&self.url(Kind::Ac, key))
            .header("content-type", "application/json");
        if let Some(a) = self.auth() {
            req = req.header("authorization", a);
        }
        let resp = req.send(&entry[..]).map_err(|e| self.transport("PUT", e))?;
        match resp.status().as_u16() {
            200..=299 => drain(resp),
            401 | 403 => return Err(self.refused(resp)),
            _ => return Err(self.status_error("an action-cache upload", resp)),
        }
        Ok(Transfer {
            blobs: uploaded.into_inner(),
            bytes,
        })
    }
}

/// Reads the public keys `trusted_keys` lists: PEM text inline, or a path (relative to
/// `base`).
pub fn load_trusted_key(entry: &str, base: &Path) -> Result<PublicKey, String> {
    if entry.trim_start().starts_with("-----BEGIN") {
        PublicKey::from_pem(entry).map_err(|e| e.to_string())
    } else {
        PublicKey::load(&base.join(entry)).map_err(|e| e.to_string())
    }
}

/// The cache server's append-only logs (`/log/NAMESPACE/LOG`), where release channels
/// live when a remote is configured. Reads need a read token, appends a write token; the
/// compare-and-swap is HTTP's own `If-Match` on the log's `ETag` (see `server/logs.rs`).
impl mlbuild_store::logs::AppendLog for HttpRemote {
    fn read(
        &self,
        name: &mlbuild_store::logs::LogName,
    ) -> Result<Vec<String>, mlbuild_store::logs::LogError> {
        use mlbuild_store::logs::LogError;
        let url = format!("{}/log/{name}", self.base);
        let mut req = self.agent.get(&url);
        if let Some(a) = self.auth() {
            req = req.header("authorization", a);
        }
        let resp = req.call().map_err(|e| {
            LogError::new(format!(
                "cannot read log `{name}` from `{}`: {e}",
                self.base
            ))
        })?;
        match resp.status().as_u16() {
            200 => {}
            404 => {
                return Err(LogError::new(format!(
                    "`{}` keeps no logs (it is not an mlbuild cache server, or an old one): \
                     release channels need `mlbuild cache serve`",
                    self.base
                )))
            }
            _ => return Err(LogError::new(self.status_error("a log read", resp).message)),
        }
        let text = resp
            .into_body()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .map_err(|e| LogError::new(format!("reading log `{name}` failed: {e}")))?;
        Ok(text
            .split('\n')
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    fn append(
        &self,
        name: &mlbuild_store::logs::LogName,
        expected: Option<&Digest>,
        line: &str,
    ) -> Result<mlbuild_store::logs::Appended, mlbuild_store::logs::LogError> {
        use mlbuild_store::logs::{Appended, LogError};
        let url = format!("{}/log/{name}", self.base);
        let mut req = self
            .agent
            .post(&url)
            .header("content-type", "application/json");
        req = match expected {
            Some(head) => req.header("if-match", format!("\"{}\"", head.to_hex())),
            None => req.header("if-none-match", "*"),
        };
        if let Some(a) = self.auth() {
            req = req.header("authorization", a);
        }
        let resp = req.send(line.as_bytes()).map_err(|e| {
            LogError::new(format!(
                "cannot append to log `{name}` on `{}`: {e}",
                self.base
            ))
        })?;
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().trim_matches('"').to_owned());
        let head = |etag: Option<String>| -> Result<Option<Digest>, LogError> {
            match etag.as_deref() {
                Some("empty") => Ok(None),
                Some(hex) => hex.parse().map(Some).map_err(|_| {
                    LogError::new(format!("`{}` sent a malformed log head `{hex}`", self.base))
                }),
                None => Err(LogError::new(format!("`{}` sent no log head", self.base))),
            }
        };
        match resp.status().as_u16() {
            200..=299 => match head(etag)? {
                Some(head) => Ok(Appended::Done { head }),
                None => Err(LogError::new(format!("`{}` sent no log head", self.base))),
            },
            412 => Ok(Appended::Conflict { head: head(etag)? }),
            401 | 403 => Err(LogError::new(format!(
                "{} (appending to a channel needs a write token: `MLBUILD_REMOTE_TOKEN` or `--remote-token-file`)",
                self.status_error("a log append", resp).message
            ))),
            _ => Err(LogError::new(self.status_error("a log append", resp).message)),
        }
    }

    fn list(&self) -> Result<Vec<mlbuild_store::logs::LogName>, mlbuild_store::logs::LogError> {
        Err(mlbuild_store::logs::LogError::new(
            "a remote cache does not list its logs",
        ))
    }

    fn describe(&self) -> String {
        format!("`{}`", self.base)
    }
}

impl HttpRemote {
    /// Downloads one blob into `store` (verified, as every download), unless it is there.
    pub fn fetch_blob(&self, d: &Digest, store: &Store) -> Result<(), RemoteError> {
        self.download_blob(d, None, store).map(|_| ())
    }
}
