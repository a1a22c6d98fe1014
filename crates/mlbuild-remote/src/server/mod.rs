//! `mlbuild cache serve`: the HTTP remote cache server.
//!
//! One tokio listener, hyper HTTP/1.1 connections, and blocking threads for the work that
//! touches bytes (hashing, zstd, files) so a multi-GiB blob streams through a few hundred
//! KiB of memory. Every CAS upload is re-hashed before it is renamed into place, an
//! action-cache entry is served only while every blob it references is present, and
//! eviction keeps the directory under its size bound, least recently used first.
//! Main type: [`Server`]; [`spawn_background`] runs one on its own thread (tests, benches).

mod body;
mod limits;
mod logs;
mod metrics;
mod storage;

use std::convert::Infallible;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use mlbuild_digest::Digest;
use tokio::net::TcpListener;

use crate::tokens::{Access, Tokens};
use crate::wire::{parse_key, Entry, Kind, MAX_ENTRY_BYTES};
use body::{ChannelBody, ChannelReader, ChannelWriter, CHUNK};
pub use limits::Limits;
use limits::{UploadSlot, Uploads};
use metrics::{Metrics, Rejection};
use storage::Storage;

/// The `Server` header of every response; clients use it to know they may send zstd
/// bodies (a plain WebDAV server would store them compressed).
pub const SERVER_HEADER: &str = concat!("mlbuild-cache/", env!("CARGO_PKG_VERSION"));
/// zstd level for responses: fast enough to keep up with a 1 GiB/s link on one core.
const ZSTD_LEVEL: i32 = 1;

/// Why the server could not start.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{message}")]
pub struct ServerError {
    pub message: String,
}

impl ServerError {
    fn new(message: impl Into<String>) -> Self {
        ServerError {
            message: message.into(),
        }
    }
}

/// How a server is set up.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub dir: PathBuf,
    /// Bytes; least recently used objects are evicted beyond it.
    pub max_size: u64,
    pub tokens: Tokens,
    /// What a request without a token may do.
    pub anonymous: Access,
    /// What one client may hold, so stalled clients cannot starve the others.
    pub limits: Limits,
}

struct State {
    storage: Storage,
    /// Append-only logs (release channels): `DIR/logs/`, never evicted.
    logs: mlbuild_store::logs::LocalLogs,
    metrics: Metrics,
    tokens: Tokens,
    anonymous: Access,
    started: Instant,
    limits: Limits,
    uploads: Uploads,
}

/// A bound, not yet serving, server.
pub struct Server {
    listener: TcpListener,
    state: Arc<State>,
}

impl Server {
    /// Opens the directory (indexing what it holds) and binds the address.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        let storage = Storage::open(&config.dir, config.max_size).map_err(|e| {
            ServerError::new(format!(
                "cannot use cache directory `{}`: {e}",
                config.dir.display()
            ))
        })?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| ServerError::new(format!("cannot listen on `{}`: {e}", config.listen)))?;
        Ok(Server {
            listener,
            state: Arc::new(State {
                storage,
                logs: mlbuild_store::logs::LocalLogs::new(config.dir.join("logs")),
                metrics: Metrics::default(),
                tokens: config.tokens,
                anonymous: config.anonymous,
                started: Instant::now(),
                uploads: Uploads::new(&config.limits),
                limits: config.limits,
            }),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then stops accepting and lets requests in
    /// flight finish (for at most 30 s).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(_) => {
                            // Out of file descriptors or similar: back off, keep serving.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let state = self.state.clone();
                    let service =
                        hyper::service::service_fn(move |req| handle(state.clone(), peer.ip(), req));
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(30))
                        .serve_connection(TokioIo::new(stream), service);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
                () = &mut shutdown => break,
            }
        }
        drop(self.listener);
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}

/// A server running on its own thread and runtime; stopped (gracefully) on drop.
pub struct BackgroundServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts a server on a thread of its own.
pub fn spawn_background(config: ServerConfig) -> Result<BackgroundServer, ServerError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ServerError::new(format!("cannot start the async runtime: {e}")))?;
    let server = runtime.block_on(Server::bind(config))?;
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        runtime.block_on(server.run(async {
            let _ = stopped.await;
        }));
    });
    Ok(BackgroundServer {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

type ResponseBody = BoxBody<Bytes, io::Error>;

enum Route {
    Metrics,
    Status,
    Object(Kind, Digest),
    /// `/log/NAMESPACE/LOG`: read with `GET`, append with `POST`.
    Log(mlbuild_store::logs::LogName),
    BadLog(String),
    BadKey,
    Unknown,
}

fn route(path: &str) -> Route {
    match path {
        "/metrics" => return Route::Metrics,
        "/status" => return Route::Status,
        _ => {}
    }
    if let Some(name) = path.strip_prefix("/log/") {
        return match mlbuild_store::logs::LogName::parse(name) {
            Ok(name) => Route::Log(name),
            Err(why) => Route::BadLog(why),
        };
    }
    for kind in Kind::ALL {
        let prefix = format!("/{}", kind.as_str());
        if let Some(rest) = path.strip_prefix(&prefix) {
            if rest.is_empty() {
                return Route::BadKey;
            }
            if let Some(key) = rest.strip_prefix('/') {
                return match parse_key(key) {
                    Some(d) => Route::Object(kind, d),
                    None => Route::BadKey,
                };
            }
        }
    }
    Route::Unknown
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<ResponseBody> {
    let body: Bytes = body.into();
    let mut resp = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    resp
}

fn text(status: StatusCode, message: &str) -> Response<ResponseBody> {
    let mut resp = full(status, format!("{message}\n"));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

async fn handle(
    state: Arc<State>,
    peer: IpAddr,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let route = route(req.uri().path());
    let kind = match &route {
        Route::Object(kind, _) => Some(*kind),
        _ => None,
    };
    state.metrics.request(req.method().as_str(), kind);
    let mut resp = respond(&state, peer, route, req).await;
    resp.headers_mut().insert(
        hyper::header::SERVER,
        HeaderValue::from_static(SERVER_HEADER),
    );
    Ok(resp)
}

/// How much of a refused upload's body the server reads (and discards) before answering.
/// HTTP/1.1 clients send the whole body before they read the response, so answering at
/// once and closing makes them see a broken pipe instead of the 401 or 403 that says
/// why; reading on costs bandwidth an unauthorized client could waste, hence the bound.
const REFUSED_BODY_LIMIT: u64 = 16 << 20;
/// How long reading a refused upload's body may take.
const REFUSED_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers `refusal` to `req`, after draining a refused upload's body (bounded).
async fn refuse(req: Request<Incoming>, refusal: Response<ResponseBody>) -> Response<ResponseBody> {
    if req.method() == Method::PUT {
        let mut body = req.into_body();
        let drain = async {
            let mut read = 0u64;
            while let Some(Ok(frame)) = body.frame().await {
                read += frame.data_ref().map_or(0, |d| d.len() as u64);
                if read > REFUSED_BODY_LIMIT {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(REFUSED_BODY_TIMEOUT, drain).await;
    }
    refusal
}

/// The response for a request refused before its route runs (bad path, missing or
/// insufficient token, wrong method for a fixed endpoint), or `None` to go on.
fn refusal(
    state: &State,
    route: &Route,
    req: &Request<Incoming>,
) -> Option<Response<ResponseBody>> {
    let needs = if req.method() == Method::PUT || req.method() == Method::POST {
        Access::Write
    } else {
        Access::Read
    };
    let granted = match req.headers().get(AUTHORIZATION) {
        None => state.anonymous,
        Some(value) => {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            match token.and_then(|t| state.tokens.access(t)) {
                Some(access) => access,
                None => {
                    state.metrics.unauthorized();
                    return Some(text(StatusCode::UNAUTHORIZED, "unknown token"));
                }
            }
        }
    };
    match route {
        Route::Unknown => Some(text(StatusCode::NOT_FOUND, "no such resource")),
        Route::BadKey => {
            state.metrics.bad_request();
            Some(text(
                StatusCode::BAD_REQUEST,
                "expected `/cas/<blake3 hex>` or `/ac/<key hex>` (64 lowercase hex digits)",
            ))
        }
        Route::BadLog(why) => {
            state.metrics.bad_request();
            Some(text(StatusCode::BAD_REQUEST, why))
        }
        Route::Metrics | Route::Status if req.method() != Method::GET => {
            Some(text(StatusCode::METHOD_NOT_ALLOWED, "only GET"))
        }
        Route::Log(_) if req.method() != Method::GET && req.method() != Method::POST => {
            Some(text(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST"))
        }
        _ if granted < needs => {
            state.metrics.unauthorized();
            Some(if req.headers().contains_key(AUTHORIZATION) {
                text(StatusCode::FORBIDDEN, "this token may not do that")
            } else {
                text(StatusCode::UNAUTHORIZED, "a token is required")
            })
        }
        _ => None,
    }
}

async fn respond(
    state: &Arc<State>,
    peer: IpAddr,
    route: Route,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    if let Some(refused) = refusal(state, &route, &req) {
        return refuse(req, refused).await;
    }
    // Uploads are bounded before their bodies are read: by the length they announce, and
    // by how many one client (address or token) and all clients may have in flight, so
    // that a crashed or suspended runner's half-sent uploads cannot take the threads and
    // connections that reads need. Reads are never limited by uploads.
    let _slot: Option<UploadSlot> = if req.method() == Method::PUT || req.method() == Method::POST {
        if let Some(refused) = too_long(state, &route, &req) {
            return refused;
        }
        let token = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        match state.uploads.acquire(peer, &token) {
            Ok(slot) => Some(slot),
            Err(why) => {
                state.metrics.rejected(Rejection::Busy);
                let mut resp = text(StatusCode::SERVICE_UNAVAILABLE, &why);
                resp.headers_mut()
                    .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("5"));
                return close(resp);
            }
        }
    } else {
        None
    };
    match route {
        // Refused above; answered the same way should that ever change.
        Route::Unknown | Route::BadKey | Route::BadLog(_) => {
            text(StatusCode::NOT_FOUND, "no such resource")
        }
        Route::Log(name) => logs::respond(state, name, req).await,
        Route::Metrics => {
            let mut resp = full(
                StatusCode::OK,
                state
                    .metrics
                    .render_prometheus(state.storage.usage(), state.storage.max_size()),
            );
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            resp
        }
        Route::Status => {
            let json = state.metrics.status_json(
                state.storage.usage(),
                state.storage.max_size(),
                state.started.elapsed().as_secs(),
            );
            let mut resp = full(StatusCode::OK, json.to_string());
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        Route::Object(kind, d) => match *req.method() {
            Method::GET | Method::HEAD => {
                let head = req.method() == Method::HEAD;
                let zstd = accepts_zstd(&req);
                match kind {
                    Kind::Cas => get_blob(state, &d, head, zstd).await,
                    Kind::Ac => get_entry(state, &d, head, zstd).await,
                }
            }
            Method::PUT => {
                let zstd = match req
                    .headers()
                    .get(CONTENT_ENCODING)
                    .map(|v| v.to_str().unwrap_or("?"))
                {
                    None | Some("identity") => false,
                    Some("zstd") => true,
                    Some(other) => {
                        return text(
                            StatusCode::UNSUPPORTED_MEDIA_TYPE,
                            &format!("unsupported content encoding `{other}` (use zstd)"),
                        )
                    }
                };
                match kind {
                    Kind::Cas => put_blob(state, &d, zstd, req).await,
                    Kind::Ac => put_entry(state, &d, zstd, req).await,
                }
            }
            _ => text(StatusCode::METHOD_NOT_ALLOWED, "use GET, HEAD or PUT"),
        },
    }
}

/// `Connection: close`: the server answers before reading a body it refuses, so the
/// connection cannot carry another request.
fn close(mut resp: Response<ResponseBody>) -> Response<ResponseBody> {
    resp.headers_mut()
        .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// 413 at once for an upload whose announced length is over the bound: a blob over the
/// per-blob limit (a zstd body may be a little larger than what it decodes to), an
/// action-cache entry over its size limit.
fn too_long(
    state: &State,
    route: &Route,
    req: &Request<Incoming>,
) -> Option<Response<ResponseBody>> {
    let announced: u64 = req
        .headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let (limit, what) = match route {
        Route::Object(Kind::Cas, _) => {
            let blob = state.limits.max_blob_size.min(state.storage.max_size());
            // zstd's worst case adds well under 1% to incompressible data.
            (
                blob + blob / 64 + (1 << 20),
                format!("blobs are limited to {blob} bytes"),
            )
        }
        Route::Object(Kind::Ac, _) => (
            MAX_ENTRY_BYTES as u64,
            format!("action-cache entries are limited to {MAX_ENTRY_BYTES} bytes"),
        ),
        Route::Log(_) => (
            mlbuild_store::logs::MAX_LINE_BYTES as u64,
            format!(
                "log records are limited to {} bytes",
                mlbuild_store::logs::MAX_LINE_BYTES
            ),
        ),
        _ => return None,
    };
    if announced <= limit {
        return None;
    }
    state.metrics.rejected(Rejection::TooLarge);
    Some(close(text(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the upload announces {announced} bytes; {what}"),
    )))
}

fn accepts_zstd(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(hyper::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            parts.next() == Some("zstd") && !parts.any(|p| p.replace(' ', "") == "q=0")
        })
}

fn miss(state: &State, kind: Kind) -> Response<ResponseBody> {
    state.metrics.miss(kind);
    text(StatusCode::NOT_FOUND, "not in the cache")
}

async fn get_blob(
    state: &Arc<State>,
    d: &Digest,
    head: bool,
    zstd: bool,
) -> Response<ResponseBody> {
    let Some(size) = state.storage.touch(Kind::Cas, d) else {
        return miss(state, Kind::Cas);
    };
    // Opened here so a blob evicted a moment later still streams in full.
    let file = match std::fs::File::open(state.storage.path(Kind::Cas, d)) {
        Ok(f) => f,
        Err(_) => return miss(state, Kind::Cas),
    };
    state.metrics.hit(Kind::Cas);
    if head {
        let mut resp = full(StatusCode::OK, Bytes::new());
        resp.headers_mut().insert(CONTENT_LENGTH, size.into());
        return resp;
    }
    let (body, tx) = ChannelBody::new((!zstd).then_some(size));
    let state2 = state.clone();
    tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter::new(tx.clone());
        let result = stream_file(file, zstd, &mut writer);
        state2.metrics.bytes_out(writer.sent);
        if let Err(e) = result {
            // Aborts the response: the client sees a truncated body, never a wrong one.
            let _ = tx.blocking_send(Err(e));
        }
    });
    let mut resp = Response::new(body.boxed());
    if zstd {
        resp.headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("zstd"));
    }
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

fn stream_file(mut file: std::fs::File, zstd: bool, writer: &mut ChannelWriter) -> io::Result<()> {
    if zstd {
        let mut encoder = zstd::stream::write::Encoder::new(&mut *writer, ZSTD_LEVEL)?;
        io::copy(&mut file, &mut encoder)?;
        encoder.finish()?;
    } else {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            writer.write_all(&buf[..n])?;
        }
    }
    writer.flush()
}

async fn get_entry(
    state: &Arc<State>,
    d: &Digest,
    head: bool,
    zstd: bool,
) -> Response<ResponseBody> {
    let path = state.storage.path(Kind::Ac, d);
    let bytes = match tokio::fs::read(&path).await {
        Ok(b) => b,
        Err(_) => return miss(state, Kind::Ac),
    };
    // An entry whose blobs were evicted would only send the client on a futile download;
    // one that does not even parse is answered as absent too (clients verify anyway).
    let Ok(entry) = Entry::parse(&bytes, d) else {
        return miss(state, Kind::Ac);
    };
    let blobs: Vec<Digest> = entry.result.blobs().collect();
    if !blobs
        .iter()
        .all(|b| state.storage.touch(Kind::Cas, b).is_some())
    {
        return miss(state, Kind::Ac);
    }
    state.storage.touch(Kind::Ac, d);
    state.metrics.hit(Kind::Ac);
    let (body, encoded) = if zstd {
        match zstd::encode_all(&bytes[..], ZSTD_LEVEL) {
            Ok(z) => (z, true),
            Err(_) => (bytes, false),
        }
    } else {
        (bytes, false)
    };
    let len = body.len() as u64;
    let mut resp = if head {
        full(StatusCode::OK, Bytes::new())
    } else {
        state.metrics.bytes_out(len);
        full(StatusCode::OK, body)
    };
    resp.headers_mut().insert(CONTENT_LENGTH, len.into());
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if encoded {
        resp.headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("zstd"));
    }
    resp
}

enum IngestError {
    TooLarge,
    Malformed(String),
    Io(io::Error),
}

/// Writes an upload to `tmp` while hashing what it decodes to.
fn ingest(
    reader: ChannelReader,
    zstd: bool,
    tmp: &Path,
    max: u64,
) -> Result<(Digest, u64), IngestError> {
    let mut input: Box<dyn Read> = if zstd {
        Box::new(zstd::stream::read::Decoder::new(reader).map_err(IngestError::Io)?)
    } else {
        Box::new(reader)
    };
    let mut file = std::fs::File::create_new(tmp).map_err(IngestError::Io)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(n) => n,
            Err(e) if zstd && e.kind() != io::ErrorKind::BrokenPipe => {
                return Err(IngestError::Malformed(format!(
                    "cannot decode the zstd body: {e}"
                )))
            }
            Err(e) => return Err(IngestError::Io(e)),
        };
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > max {
            return Err(IngestError::TooLarge);
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(IngestError::Io)?;
    }
    Ok((Digest::from_bytes(*hasher.finalize().as_bytes()), size))
}

async fn put_blob(
    state: &Arc<State>,
    d: &Digest,
    zstd: bool,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let (reader, tx) = ChannelReader::new();
    let tmp = state.storage.tmp_path();
    let max = state.storage.max_size();
    let job = {
        let tmp = tmp.clone();
        tokio::task::spawn_blocking(move || ingest(reader, zstd, &tmp, max))
    };
    let mut body = req.into_body();
    let mut received = 0u64;
    let mut stalled = false;
    loop {
        let next = tokio::time::timeout(state.limits.body_idle_timeout, body.frame()).await;
        let Ok(next) = next else {
            // Nothing arrived for a while: a stalled client gives its slot back.
            stalled = true;
            let _ = tx
                .send(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the upload stalled",
                )))
                .await;
            break;
        };
        match next {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    received += data.len() as u64;
                    if tx.send(Ok(data)).await.is_err() {
                        break; // the ingest stopped early (too large, disk error)
                    }
                }
            }
            Some(Err(e)) => {
                let _ = tx.send(Err(io::Error::other(e))).await;
                break;
            }
            None => break,
        }
    }
    drop(tx);
    state.metrics.bytes_in(received);
    let outcome = job
        .await
        .unwrap_or_else(|e| Err(IngestError::Io(io::Error::other(e))));
    let resp = match outcome {
        _ if stalled => {
            state.metrics.rejected(Rejection::Stalled);
            close(text(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "no part of the body arrived for {} s",
                    state.limits.body_idle_timeout.as_secs()
                ),
            ))
        }
        Ok((actual, size)) if actual == *d => {
            match state.storage.commit(Kind::Cas, d, &tmp, size) {
                Ok(evicted) => {
                    state.metrics.evicted(evicted);
                    return text(StatusCode::CREATED, "stored");
                }
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("cannot store the blob: {e}"),
                ),
            }
        }
        Ok((actual, _)) => {
            state.metrics.rejected(Rejection::DigestMismatch);
            text(
                StatusCode::BAD_REQUEST,
                &format!(
                    "digest mismatch: the body hashes to `{}`, not `{}`",
                    actual.to_hex(),
                    d.to_hex()
                ),
            )
        }
        Err(IngestError::TooLarge) => {
            state.metrics.rejected(Rejection::TooLarge);
            text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the blob is larger than the whole cache",
            )
        }
        Err(IngestError::Malformed(m)) => {
            state.metrics.rejected(Rejection::Malformed);
            text(StatusCode::BAD_REQUEST, &m)
        }
        Err(IngestError::Io(e)) => text(
            StatusCode::BAD_REQUEST,
            &format!("cannot receive the body: {e}"),
        ),
    };
    let _ = std::fs::remove_file(&tmp);
    resp
}

async fn put_entry(
    state: &Arc<State>,
    d: &Digest,
    zstd: bool,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let too_large = |state: &State| {
        state.metrics.rejected(Rejection::TooLarge);
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("action-cache entries are limited to {MAX_ENTRY_BYTES} bytes"),
        )
    };
    let collect = Limited::new(req.into_body(), MAX_ENTRY_BYTES).collect();
    // An entry is small: the whole of it gets the idle timeout once.
    let raw = match tokio::time::timeout(state.limits.body_idle_timeout, collect).await {
        Err(_) => {
            state.metrics.rejected(Rejection::Stalled);
            return close(text(
                StatusCode::REQUEST_TIMEOUT,
                "the entry did not arrive in time",
            ));
        }
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(_)) => return too_large(state),
    };
    state.metrics.bytes_in(raw.len() as u64);
    let bytes = if zstd {
        let mut out = Vec::new();
        let decoded = zstd::stream::read::Decoder::new(&raw[..])
            .and_then(|dec| dec.take(MAX_ENTRY_BYTES as u64 + 1).read_to_end(&mut out));
        if decoded.is_err() {
            state.metrics.rejected(Rejection::Malformed);
            return text(StatusCode::BAD_REQUEST, "cannot decode the zstd body");
        }
        if out.len() > MAX_ENTRY_BYTES {
            return too_large(state);
        }
        out
    } else {
        raw.to_vec()
    };
    if let Err(e) = Entry::parse(&bytes, d) {
        state.metrics.rejected(Rejection::Malformed);
        return text(StatusCode::BAD_REQUEST, &e);
    }
    let tmp = state.storage.tmp_path();
    let size = bytes.len() as u64;
    if let Err(e) = tokio::fs::write(&tmp, &bytes).await {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot store the entry: {e}"),
        );
    }
    match state.storage.commit(Kind::Ac, d, &tmp, size) {
        Ok(evicted) => {
            state.metrics.evicted(evicted);
            text(StatusCode::CREATED, "stored")
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot store the entry: {e}"),
            )
        }
    }
}
