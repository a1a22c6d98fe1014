//! `mlbuild cache serve` and `mlbuild cache stats`, plus the remote-cache client set-up
//! that `build` shares ([`open_remote`]).
//!
//! Where the client's settings come from: the URL and trusted keys from `[remote]` in
//! MLBUILD.toml (overridable by flags), secrets only from the environment or files named
//! on the command line, never from the committed TOML.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use mlbuild_remote::server::{Limits, Server, ServerConfig};
use mlbuild_remote::{Access, ClientConfig, HttpRemote, RemoteStatus, Tokens};
use mlbuild_sign::{PrivateKey, PublicKey};
use mlbuild_store::{RemoteCache, Store};
use mlbuild_workspace::{TrustedKey, Workspace};

use crate::cli::Cli;
use crate::context::Context;
use crate::exit::{CmdResult, Code, Failure};
use crate::report::human_bytes;

#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Serve a remote cache over HTTP for CI runners and developers.
    ///
    /// `GET`/`HEAD`/`PUT` on `/cas/<blake3>` and `/ac/<key>`, `/metrics` (Prometheus) and
    /// `/status` (JSON). Uploads are re-hashed; least recently used entries are evicted
    /// beyond `--max-size`. Stops gracefully on Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Show entries, size and hit rate of the local store and, when one is configured and
    /// reachable, the remote cache.
    Stats(StatsArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (`127.0.0.1:0` picks a free port and prints it).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The cache directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Size bound, e.g. `50G` (10^9 bytes each; `50GiB` for 2^30): least recently used
    /// entries are evicted beyond it.
    #[arg(long, value_parser = crate::cli::parse_size, value_name = "SIZE")]
    pub max_size: u64,
    /// Tokens and their scopes, one per line: `write TOKEN` (CI) or `read TOKEN`.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// What a request without a token may do.
    #[arg(long, value_enum, default_value_t = Anonymous::None)]
    pub anonymous: Anonymous,
    /// Largest blob accepted, e.g. `4G` (default: `--max-size`); a longer announced
    /// upload is answered 413 before its body is read.
    #[arg(long, value_parser = crate::cli::parse_size, value_name = "SIZE")]
    pub max_blob_size: Option<u64>,
    /// Seconds an upload may go without sending anything before it is dropped (408).
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub upload_idle_timeout: u64,
    /// Uploads one client address may have in flight; more are answered 503.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub uploads_per_address: usize,
    /// Uploads one token may have in flight; more are answered 503.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub uploads_per_token: usize,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Anonymous {
    /// Nothing: every request needs a token.
    None,
    /// Download only.
    Read,
    /// Download and upload (only for trusted networks and tests).
    Write,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Remote cache flags of `build` and `cache stats`.
#[derive(Debug, Args, Clone, Default)]
pub struct RemoteArgs {
    /// Remote cache base URL (overrides `[remote] url` in MLBUILD.toml).
    #[arg(long, value_name = "URL")]
    pub remote: Option<String>,
    /// Download from the remote cache but never upload.
    #[arg(long)]
    pub remote_read_only: bool,
    /// Use no remote cache, whatever MLBUILD.toml says.
    #[arg(long, conflicts_with_all = ["remote", "remote_read_only"])]
    pub no_remote: bool,
    /// File holding the remote cache token (default: the `MLBUILD_REMOTE_TOKEN` variable).
    #[arg(long, value_name = "FILE")]
    pub remote_token_file: Option<PathBuf>,
    /// PEM private key that signs uploaded action-cache entries (default: the
    /// `MLBUILD_REMOTE_SIGNING_KEY` variable).
    // Read in `client`, not by clap's `env`, which listed it in usage lines as required.
    #[arg(long, value_name = "FILE")]
    pub remote_signing_key: Option<PathBuf>,
}

pub fn run(cli: &Cli, args: &CacheArgs) -> CmdResult {
    match &args.command {
        CacheCommand::Serve(a) => serve(cli, a),
        CacheCommand::Stats(a) => stats(cli, a),
    }
}

/// The remote cache a build should use, or `None`. Bad settings (unreadable token or
/// key files, a malformed URL) are input errors: silently building without the cache
/// the user asked for would hide them.
pub fn open_remote(
    ws: &Workspace,
    args: &RemoteArgs,
) -> Result<Option<Arc<dyn RemoteCache>>, Failure> {
    Ok(client(ws, args)?.map(|c| Arc::new(c) as Arc<dyn RemoteCache>))
}

pub(crate) fn client(ws: &Workspace, args: &RemoteArgs) -> Result<Option<HttpRemote>, Failure> {
    if args.no_remote {
        return Ok(None);
    }
    let settings = ws.config.remote.as_ref();
    let Some(url) = args
        .remote
        .clone()
        .or_else(|| settings.map(|s| s.url.clone()))
    else {
        return Ok(None);
    };
    let token = match &args.remote_token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Failure::bad_input(miette::miette!(
                    "cannot read the remote token file `{}`: {e}",
                    path.display()
                ))
            })?;
            let token = text.trim().to_owned();
            if token.is_empty() {
                return Err(Failure::bad_input(miette::miette!(
                    "the remote token file `{}` is empty",
                    path.display()
                )));
            }
            Some(token)
        }
        None => std::env::var("MLBUILD_REMOTE_TOKEN")
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()),
    };
    let mut trusted_keys = Vec::new();
    for key in settings.map(|s| &s.trusted_keys[..]).unwrap_or_default() {
        let loaded = match key {
            TrustedKey::Pem(pem) => PublicKey::from_pem(pem),
            TrustedKey::Path(path) => PublicKey::load(path),
        };
        trusted_keys.push(loaded.map_err(|e| {
            Failure::bad_input(miette::miette!(
                help = "`[remote] trusted_keys` in MLBUILD.toml lists PEM public keys or paths to them",
                "cannot load a trusted key: {e}"
            ))
        })?);
    }
    let signing_key_file = args
        .remote_signing_key
        .clone()
        .or_else(|| crate::cli::env_path("MLBUILD_REMOTE_SIGNING_KEY"));
    let signing_key = match &signing_key_file {
        Some(path) => Some(PrivateKey::load(path).map_err(|e| {
            Failure::bad_input(miette::miette!("cannot load the remote signing key: {e}"))
        })?),
        None => None,
    };
    let mut cfg = ClientConfig::new(url);
    cfg.token = token;
    cfg.read_only = args.remote_read_only || settings.is_some_and(|s| s.read_only);
    cfg.trusted_keys = trusted_keys;
    cfg.signing_key = signing_key;
    if let Some(secs) = settings.and_then(|s| s.timeout_secs) {
        cfg.io_timeout = Duration::from_secs(secs);
        cfg.connect_timeout = cfg.connect_timeout.min(cfg.io_timeout);
    }
    HttpRemote::new(cfg)
        .map(Some)
        .map_err(|e| Failure::bad_input(miette::miette!("{e}")))
}

fn serve(cli: &Cli, args: &ServeArgs) -> CmdResult {
    let tokens = match &args.token_file {
        Some(path) => Tokens::load(path).map_err(|e| Failure::bad_input(miette::miette!("{e}")))?,
        None => Tokens::default(),
    };
    let anonymous = match args.anonymous {
        Anonymous::None => Access::None,
        Anonymous::Read => Access::Read,
        Anonymous::Write => Access::Write,
    };
    if tokens.is_empty() && anonymous == Access::None {
        return Err(Failure::bad_input(miette::miette!(
            help = "pass `--token-file FILE` (lines `write TOKEN` / `read TOKEN`), or `--anonymous read` or `--anonymous write`",
            "nobody could use this cache: there are no tokens and anonymous access is off"
        )));
    }
    if anonymous == Access::Write && !args.listen.ip().is_loopback() {
        eprintln!(
            "warning: anyone who can reach `{}` may write to this cache (`--anonymous write`); \
             clients without `trusted_keys` would accept what they write",
            args.listen
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::store(miette::miette!("cannot start the async runtime: {e}")))?;
    let config = ServerConfig {
        listen: args.listen,
        dir: args.dir.clone(),
        max_size: args.max_size,
        tokens,
        anonymous,
        limits: Limits {
            max_blob_size: args.max_blob_size.unwrap_or(args.max_size),
            body_idle_timeout: std::time::Duration::from_secs(args.upload_idle_timeout.max(1)),
            uploads_per_address: args.uploads_per_address.max(1),
            uploads_per_token: args.uploads_per_token.max(1),
            ..Limits::default()
        },
    };
    runtime.block_on(async {
        let server = Server::bind(config)
            .await
            .map_err(|e| Failure::store(miette::Report::new(e)))?;
        // The first line of stdout names the address, so scripts using port 0 find it;
        // with `--json`, as one compact object on that line.
        let url = format!("http://{}", server.local_addr());
        if cli.json {
            println!("{}", serde_json::json!({ "listening": url }));
        } else {
            println!("listening on {url}");
        }
        let _ = std::io::stdout().flush();
        eprintln!(
            "serving `{}` (at most {}); Ctrl-C stops",
            args.dir.display(),
            human_bytes(args.max_size)
        );
        server.run(shutdown_signal()).await;
        eprintln!("stopped");
        Ok(Code::Ok)
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn stats(cli: &Cli, args: &StatsArgs) -> CmdResult {
    // Inside a workspace: its store, its history and its `[remote]`; elsewhere the store
    // alone.
    let (store, ws) = match Context::load(cli) {
        Ok(ctx) => (ctx.store.clone(), Some(ctx.ws.clone())),
        Err(e) if cli.store.is_some() || args.remote.remote.is_some() => {
            let _ = e;
            let root = cli.store.clone().unwrap_or_else(Store::default_root);
            (Arc::new(Store::open(&root)?), None)
        }
        Err(e) => return Err(e),
    };
    let local = store.stats()?;
    // Hit rate over this workspace's recent builds: of the targets that had to be
    // up to date, how many were reused rather than executed.
    let (mut reused, mut executed) = (0u64, 0u64);
    if let Some(ws) = &ws {
        let counts = store.run_counts(&ws.root.to_string_lossy(), 100)?;
        reused = counts.get("cached").copied().unwrap_or(0);
        executed = counts.get("executed").copied().unwrap_or(0);
    }
    let hit_rate = (reused + executed > 0).then(|| reused as f64 / (reused + executed) as f64);
    let remote = match &ws {
        Some(ws) => client(ws, &args.remote)?,
        None => match &args.remote.remote {
            Some(url) if !args.remote.no_remote => {
                let mut cfg = ClientConfig::new(url.clone());
                cfg.token = std::env::var("MLBUILD_REMOTE_TOKEN")
                    .ok()
                    .filter(|t| !t.is_empty());
                Some(HttpRemote::new(cfg).map_err(|e| Failure::bad_input(miette::miette!("{e}")))?)
            }
            _ => None,
        },
    };
    let remote_status = remote.as_ref().map(|r| (r.describe(), r.status()));

    if cli.json {
        let remote_json = match &remote_status {
            None => serde_json::Value::Null,
            Some((url, Ok(RemoteStatus::Mlbuild(status)))) => {
                serde_json::json!({ "url": url, "reachable": true, "status": status })
            }
            Some((url, Ok(RemoteStatus::Other { http_status }))) => serde_json::json!({
                "url": url, "reachable": true, "status": null, "http_status": http_status
            }),
            Some((url, Err(e))) => {
                serde_json::json!({ "url": url, "reachable": false, "error": e.to_string() })
            }
        };
        super::print_json(&serde_json::json!({
            "local": {
                "store": store.root(),
                "blobs": local.blobs,
                "bytes": local.blob_bytes,
                "actions": local.actions,
                "hit_rate": hit_rate,
                "targets_reused": reused,
                "targets_executed": executed,
            },
            "remote": remote_json,
        }));
        return Ok(Code::Ok);
    }
    println!("local store `{}`", store.root().display());
    println!(
        "  {} action entries, {} blobs, {}",
        local.actions,
        local.blobs,
        human_bytes(local.blob_bytes)
    );
    match hit_rate {
        Some(rate) => println!(
            "  hit rate {:.1}% over this workspace's last 100 builds ({reused} reused, {executed} executed)",
            rate * 100.0
        ),
        None if ws.is_some() => println!("  hit rate: no builds recorded for this workspace"),
        None => println!("  hit rate: run inside a workspace to see its builds' hit rate"),
    }
    match &remote_status {
        None => println!("remote cache: none configured"),
        Some((url, Ok(RemoteStatus::Mlbuild(s)))) => {
            println!("remote cache `{url}`");
            println!(
                "  {} action entries, {} blobs, {} of {}",
                s["entries"]["ac"],
                s["entries"]["cas"],
                human_bytes(s["size_bytes"].as_u64().unwrap_or(0)),
                human_bytes(s["max_size_bytes"].as_u64().unwrap_or(0))
            );
            match s["hit_rate"].as_f64() {
                Some(rate) => println!(
                    "  hit rate {:.1}% ({} hits, {} misses since the server started), {} evictions",
                    rate * 100.0,
                    s["ac_hits"],
                    s["ac_misses"],
                    s["evictions"]
                ),
                None => println!("  no lookups since the server started"),
            }
        }
        Some((url, Ok(RemoteStatus::Other { http_status }))) => println!(
            "remote cache `{url}`: reachable, but not an mlbuild server (HTTP {http_status} for /status): no statistics"
        ),
        Some((url, Err(e))) => println!("remote cache `{url}`: unreachable: {e}"),
    }
    Ok(Code::Ok)
}
