//! Parsing of the root `MLBUILD.toml` into a [`WorkspaceConfig`].
//!
//! The file is small but sets machine-wide facts (store location, capacity, hermetic
//! PATH), so it is parsed strictly: unknown tables and fields are errors, not typos
//! silently ignored.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use crate::error::{ErrorKind, WorkspaceError};
use crate::source::SourceText;

/// The default hermetic PATH inside actions.
pub const DEFAULT_SANDBOX_PATH: [&str; 3] = ["/usr/local/bin", "/usr/bin", "/bin"];

/// Host directories every sandbox shows read-only (`mlbuild_sandbox::SYSTEM_DIRS` is the
/// same list; a test in `mlbuild-exec` holds them equal). A tool or `[sandbox] path`
/// entry anywhere else would be visible to actions without entering their keys, so it
/// must be declared as an environment (a `python_env` target with `path`).
pub const SYSTEM_DIRS: [&str; 9] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
];

/// Whether the sandbox always shows `path` (lexically under a system directory).
pub fn is_system_path(path: &Path) -> bool {
    SYSTEM_DIRS.iter().any(|d| path.starts_with(d))
}

/// Settings from `MLBUILD.toml`, with defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkspaceConfig {
    /// `[workspace] name`, informational.
    pub name: Option<String>,
    /// `[workspace] store`, made absolute against the workspace root.
    pub store: Option<PathBuf>,
    /// `[workspace] source_date_epoch`, default 0.
    pub source_date_epoch: u64,
    /// `[resources]`: `cpu`, `gpu`, `memory_mb` (always present) and custom resources.
    pub capacity: BTreeMap<String, f64>,
    /// `[sandbox] path`: the PATH inside actions.
    pub sandbox_path: Vec<String>,
    /// `[sandbox] require`: actions must run in the namespace sandbox, and cached
    /// results recorded without it (or before isolation was recorded) are misses.
    pub sandbox_require: bool,
    /// `[workspace] params`: the default params file for `param_keys`, workspace-relative.
    pub params: Option<String>,
    /// Where `params` is written in `MLBUILD.toml`, for errors about the file.
    pub params_span: Option<crate::source::Span>,
    /// `[remote]`: the shared remote cache, if any.
    pub remote: Option<RemoteSettings>,
    /// `[signing] key`: the PEM private key that signs `package` artifacts, made absolute
    /// (`~/` is the home directory). The env var `MLBUILD_SIGNING_KEY` overrides it.
    pub signing_key: Option<PathBuf>,
    /// `[python] uv`: the `uv` binary that builds `python_env` targets, made absolute.
    /// `MLBUILD_UV` overrides it; without either, `uv` is looked up on the sandbox path.
    pub uv: Option<PathBuf>,
    /// `[channel.NAME]`: release channels and their rules.
    pub channels: BTreeMap<String, crate::channel::ChannelSettings>,
    /// `[export.mlflow]`: export every build to an MLflow tracking server.
    pub mlflow_export: Option<MlflowExport>,
}

/// `[export.mlflow]` in MLBUILD.toml: where `mlbuild build` exports each build
/// (`mlbuild mlflow export` uses it as its default).
#[derive(Clone, Debug, PartialEq)]
pub struct MlflowExport {
    /// The tracking server, `http://` or `https://`.
    pub tracking_uri: String,
    /// The experiment runs go to (default: the workspace name, else `mlbuild`).
    pub experiment: Option<String>,
}

/// `[remote]` in MLBUILD.toml. Credentials never live here (the file is committed):
/// tokens come from `MLBUILD_REMOTE_TOKEN` or `--remote-token-file`.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteSettings {
    /// Base URL, `http://` or `https://`.
    pub url: String,
    /// Never upload from this workspace.
    pub read_only: bool,
    /// Only entries signed by one of these keys are used (none: trust the cache).
    pub trusted_keys: Vec<TrustedKey>,
    /// Seconds to wait for a response or a read before treating the cache as down.
    pub timeout_secs: Option<u64>,
}

/// One `trusted_keys` entry.
#[derive(Clone, Debug, PartialEq)]
pub enum TrustedKey {
    /// Inline PEM (`-----BEGIN PUBLIC KEY-----`).
    Pem(String),
    /// A PEM file, made absolute against the workspace root.
    Path(PathBuf),
}

impl WorkspaceConfig {
    /// The configuration of an empty `MLBUILD.toml` on this machine.
    pub fn defaults() -> WorkspaceConfig {
        WorkspaceConfig {
            name: None,
            remote: None,
            store: None,
            source_date_epoch: 0,
            capacity: default_capacity(),
            sandbox_path: DEFAULT_SANDBOX_PATH
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            sandbox_require: false,
            params: None,
            params_span: None,
            signing_key: None,
            uv: None,
            channels: BTreeMap::new(),
            mlflow_export: None,
        }
    }

    /// Parse `MLBUILD.toml` text; `root` is the absolute workspace root.
    pub fn parse(source: &Arc<SourceText>, root: &Path) -> Result<WorkspaceConfig, WorkspaceError> {
        let raw: RawConfig = crate::package::from_toml(source)?;
        let mut config = WorkspaceConfig::defaults();
        if let Some(ws) = raw.workspace {
            config.name = ws.name;
            if let Some(epoch) = ws.source_date_epoch {
                config.source_date_epoch = epoch;
            }
            if let Some(store) = ws.store {
                if store.get_ref().is_empty() {
                    return Err(WorkspaceError::new(ErrorKind::Invalid, "`store` is empty")
                        .at(source, store.span())
                        .with_label("empty path")
                        .with_help("remove `store` to use the default cache directory"));
                }
                config.store = Some(normalize(&root.join(store.get_ref())));
            }
            if let Some(params) = ws.params {
                let rel = params.get_ref();
                if !crate::package::is_relative_path(rel) {
                    return Err(WorkspaceError::new(
                        ErrorKind::Invalid,
                        format!("invalid params file path `{rel}`"),
                    )
                    .at(source, params.span())
                    .with_label("not a relative path")
                    .with_help("name a file inside the workspace, relative to its root, like `params.toml`"));
                }
                config.params_span = Some(params.span());
                config.params = Some(params.into_inner());
            }
        }
        if let Some(signing) = raw.signing {
            let text = signing.key.get_ref();
            if text.trim().is_empty() || text.starts_with("-----BEGIN") {
                return Err(WorkspaceError::new(
                    ErrorKind::Invalid,
                    "`[signing] key` must be the path of a PEM file",
                )
                .at(source, signing.key.span())
                .with_label("not a key file path")
                .with_help("never commit the key itself; name a file outside the repository, like `~/.config/mlbuild/signing.pem`"));
            }
            config.signing_key = Some(expand_home(root, text));
        }
        if let Some(python) = raw.python {
            if let Some(uv) = python.uv {
                if uv.get_ref().trim().is_empty() {
                    return Err(WorkspaceError::new(ErrorKind::Invalid, "`[python] uv` is empty")
                        .at(source, uv.span())
                        .with_label("empty path")
                        .with_help("name the `uv` binary, e.g. `~/.local/bin/uv`, or remove the field to find `uv` on the sandbox path"));
                }
                config.uv = Some(expand_home(root, uv.get_ref()));
            }
        }
        if let Some(resources) = raw.resources {
            for (key, value) in resources {
                if !is_valid_resource_name(key.get_ref()) {
                    return Err(WorkspaceError::new(
                        ErrorKind::Invalid,
                        format!("invalid resource name `{}`", key.get_ref()),
                    )
                    .at(source, key.span())
                    .with_label("invalid name")
                    .with_help("resource names may only contain `A-Z a-z 0-9 _`"));
                }
                check_amount(source, key.get_ref(), &value)?;
                config.capacity.insert(key.into_inner(), value.into_inner());
            }
        }
        if let Some(sandbox) = raw.sandbox {
            config.sandbox_require = sandbox.require.unwrap_or(false);
            if let Some(path) = sandbox.path {
                let mut dirs = Vec::with_capacity(path.len());
                for dir in path {
                    if !dir.get_ref().starts_with('/') || dir.get_ref().contains(':') {
                        return Err(WorkspaceError::new(
                            ErrorKind::Invalid,
                            format!(
                                "sandbox path entry `{}` is not an absolute directory",
                                dir.get_ref()
                            ),
                        )
                        .at(source, dir.span())
                        .with_label("not absolute")
                        .with_help("list absolute directories like `/usr/bin`, one per entry"));
                    }
                    if !is_system_path(&normalize(Path::new(dir.get_ref()))) {
                        return Err(WorkspaceError::new(
                            ErrorKind::Invalid,
                            format!(
                                "sandbox path entry `{}` is outside the system directories",
                                dir.get_ref()
                            ),
                        )
                        .at(source, dir.span())
                        .with_label("not part of any action key")
                        .with_help(format!(
                            "actions would run tools from it without its content entering their keys; \
                             declare it as an environment instead: a target with `kind = \"python_env\"` \
                             and `path = \"{}\"`, listed in the `deps` of the targets that use it \
                             (docs/python.md); the sandbox path may only name directories under {}",
                            Path::new(dir.get_ref())
                                .parent()
                                .filter(|p| p.file_name().is_some() && dir.get_ref().ends_with("/bin"))
                                .map_or_else(|| dir.get_ref().clone(), |p| p.display().to_string()),
                            SYSTEM_DIRS.map(|d| format!("`{d}`")).join(", ")
                        )));
                    }
                    dirs.push(dir.into_inner());
                }
                config.sandbox_path = dirs;
            }
        }
        if let Some(remote) = raw.remote {
            config.remote = Some(parse_remote(source, root, remote)?);
        }
        if let Some(channels) = raw.channel {
            config.channels = crate::channel::parse_channels(source, root, channels)?;
        }
        if let Some(mlflow) = raw.export.and_then(|e| e.mlflow) {
            let uri = mlflow.tracking_uri.get_ref();
            if !(uri.starts_with("http://") || uri.starts_with("https://")) {
                return Err(WorkspaceError::new(
                    ErrorKind::Invalid,
                    format!("MLflow tracking URI `{uri}` must start with `http://` or `https://`"),
                )
                .at(source, mlflow.tracking_uri.span())
                .with_label("not an HTTP URL")
                .with_help("give the tracking server's URL, like `http://127.0.0.1:5000`"));
            }
            config.mlflow_export = Some(MlflowExport {
                tracking_uri: mlflow.tracking_uri.into_inner(),
                experiment: mlflow.experiment,
            });
        }
        Ok(config)
    }
}

fn parse_remote(
    source: &Arc<SourceText>,
    root: &Path,
    raw: RawRemote,
) -> Result<RemoteSettings, WorkspaceError> {
    if let Some(secret) = raw.token.as_ref().or(raw.token_file.as_ref()) {
        return Err(WorkspaceError::new(
            ErrorKind::Invalid,
            "remote cache credentials do not belong in MLBUILD.toml",
        )
        .at(source, secret.span())
        .with_label("a secret in a committed file")
        .with_help(
            "set `MLBUILD_REMOTE_TOKEN` or pass `--remote-token-file FILE` to `mlbuild build`",
        ));
    }
    let url = raw.url.get_ref().trim();
    if !(url.starts_with("http://") || url.starts_with("https://"))
        || url.contains(char::is_whitespace)
    {
        return Err(WorkspaceError::new(
            ErrorKind::Invalid,
            format!("`{url}` is not an HTTP(S) URL"),
        )
        .at(source, raw.url.span())
        .with_label("not a URL")
        .with_help("write the cache's base URL, e.g. `http://cache.internal:8080`"));
    }
    let mut trusted_keys = Vec::new();
    for key in raw.trusted_keys.unwrap_or_default() {
        let text = key.get_ref();
        if text.contains("PRIVATE KEY") {
            return Err(
                WorkspaceError::new(ErrorKind::Invalid, "a private key in `trusted_keys`")
                    .at(source, key.span())
                    .with_label("private key")
                    .with_help(
                        "list public keys (`mlbuild key generate` writes one next to the private key), and rotate this one",
                    ),
            );
        }
        if text.trim_start().starts_with("-----BEGIN") {
            trusted_keys.push(TrustedKey::Pem(text.clone()));
        } else if text.trim().is_empty() {
            return Err(
                WorkspaceError::new(ErrorKind::Invalid, "empty `trusted_keys` entry")
                    .at(source, key.span())
                    .with_label("empty")
                    .with_help("give a path to a PEM public key, or the PEM text itself"),
            );
        } else {
            trusted_keys.push(TrustedKey::Path(normalize(&root.join(text))));
        }
    }
    let timeout_secs = match raw.timeout {
        Some(t) if *t.get_ref() == 0 => {
            return Err(WorkspaceError::new(
                ErrorKind::Invalid,
                "`timeout` must be at least 1 second",
            )
            .at(source, t.span())
            .with_label("zero"))
        }
        t => t.map(Spanned::into_inner),
    };
    Ok(RemoteSettings {
        url: url.to_owned(),
        read_only: raw.read_only.unwrap_or(false),
        trusted_keys,
        timeout_secs,
    })
}

/// Resource names appear in keys and on the command line; keep them identifier-like.
pub(crate) fn is_valid_resource_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A resource amount must be a finite, non-negative number.
pub(crate) fn check_amount(
    source: &Arc<SourceText>,
    key: &str,
    value: &Spanned<f64>,
) -> Result<(), WorkspaceError> {
    let v = *value.get_ref();
    if !v.is_finite() || v < 0.0 {
        return Err(WorkspaceError::new(
            ErrorKind::Invalid,
            format!("resource `{key}` must be a finite number >= 0, got `{v}`"),
        )
        .at(source, value.span())
        .with_label("invalid amount"));
    }
    Ok(())
}

/// Machine capacity defaults: all cores, no GPUs, all physical memory.
pub fn default_capacity() -> BTreeMap<String, f64> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut capacity = BTreeMap::new();
    capacity.insert("cpu".to_owned(), cpus as f64);
    capacity.insert("gpu".to_owned(), 0.0);
    capacity.insert(
        "memory_mb".to_owned(),
        physical_memory_mb().unwrap_or(4096) as f64,
    );
    capacity
}

/// Total physical memory in MiB from `/proc/meminfo` (Linux only; `None` elsewhere).
fn physical_memory_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// `~/x` under the home directory; anything else relative to the workspace root.
fn expand_home(root: &Path, text: &str) -> PathBuf {
    match text.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map_or_else(|| root.join(text), |home| Path::new(&home).join(rest)),
        None => normalize(&root.join(text)),
    }
}

/// Lexically remove `.` and `..` so `root/../.mlbuild-store` prints as the real place.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for comp in path.components() {
        match comp {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    workspace: Option<RawWorkspace>,
    resources: Option<BTreeMap<Spanned<String>, Spanned<f64>>>,
    sandbox: Option<RawSandbox>,
    remote: Option<RawRemote>,
    signing: Option<RawSigning>,
    python: Option<RawPython>,
    channel: Option<BTreeMap<Spanned<String>, Spanned<crate::channel::RawChannel>>>,
    export: Option<RawExport>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExport {
    mlflow: Option<RawMlflowExport>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMlflowExport {
    tracking_uri: Spanned<String>,
    experiment: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPython {
    uv: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSigning {
    key: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemote {
    url: Spanned<String>,
    read_only: Option<bool>,
    trusted_keys: Option<Vec<Spanned<String>>>,
    timeout: Option<Spanned<u64>>,
    /// Accepted only to be refused with a helpful message.
    token: Option<Spanned<toml::Value>>,
    token_file: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkspace {
    name: Option<String>,
    store: Option<Spanned<String>>,
    source_date_epoch: Option<u64>,
    params: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSandbox {
    path: Option<Vec<Spanned<String>>>,
    require: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WorkspaceConfig, WorkspaceError> {
        let source = Arc::new(SourceText {
            name: "MLBUILD.toml".into(),
            text: text.into(),
        });
        WorkspaceConfig::parse(&source, Path::new("/ws/root"))
    }

    #[test]
    fn mlflow_export() {
        let c = parse("[export.mlflow]\ntracking_uri = \"http://127.0.0.1:5000\"\n").unwrap();
        assert_eq!(
            c.mlflow_export,
            Some(MlflowExport {
                tracking_uri: "http://127.0.0.1:5000".into(),
                experiment: None,
            })
        );
        assert_eq!(parse("[export]\n").unwrap().mlflow_export, None);
        let e = parse("[export.mlflow]\ntracking_uri = \"mlruns\"\n").unwrap_err();
        assert!(e.to_string().contains("must start with `http://`"), "{e}");
        assert!(parse("[export.mlflow]\nexperiment = \"x\"\n").is_err());
        assert!(parse("[export.wandb]\n").is_err());
    }

    #[test]
    fn defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.name, None);
        assert_eq!(c.store, None);
        assert_eq!(c.source_date_epoch, 0);
        assert!(c.capacity["cpu"] >= 1.0);
        assert_eq!(c.capacity["gpu"], 0.0);
        assert!(c.capacity["memory_mb"] > 0.0);
        assert_eq!(c.sandbox_path, ["/usr/local/bin", "/usr/bin", "/bin"]);
        assert!(!c.sandbox_require);
    }

    #[test]
    fn full() {
        let c = parse(
            r#"
[workspace]
name = "fraud"
store = "../.mlbuild-store"
source_date_epoch = 1700000000

[resources]
cpu = 2
gpu = 1.5
tpu = 4

[sandbox]
path = ["/opt/bin", "/bin"]
require = true
"#,
        )
        .unwrap();
        assert!(c.sandbox_require);
        assert_eq!(c.name.as_deref(), Some("fraud"));
        assert_eq!(c.store, Some(PathBuf::from("/ws/.mlbuild-store")));
        assert_eq!(c.source_date_epoch, 1_700_000_000);
        assert_eq!(c.capacity["cpu"], 2.0);
        assert_eq!(c.capacity["gpu"], 1.5);
        assert_eq!(c.capacity["tpu"], 4.0);
        assert!(c.capacity.contains_key("memory_mb"));
        assert_eq!(c.sandbox_path, ["/opt/bin", "/bin"]);
        let abs = parse("[workspace]\nstore = \"/var/cache/x\"\n").unwrap();
        assert_eq!(abs.store, Some(PathBuf::from("/var/cache/x")));
    }

    #[test]
    fn remote() {
        let c = parse(
            r#"
[remote]
url = "http://cache:8080/"
read_only = true
trusted_keys = ["../keys/ci.pub", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"]
timeout = 5
"#,
        )
        .unwrap();
        let r = c.remote.unwrap();
        assert_eq!(r.url, "http://cache:8080/");
        assert!(r.read_only);
        assert_eq!(r.timeout_secs, Some(5));
        assert_eq!(
            r.trusted_keys[0],
            TrustedKey::Path(PathBuf::from("/ws/keys/ci.pub"))
        );
        assert!(matches!(&r.trusted_keys[1], TrustedKey::Pem(p) if p.contains("AAAA")));
        assert_eq!(parse("").unwrap().remote, None);
        let err = parse("[remote]\nurl = \"http://x\"\ntoken = \"s3cret\"\n").unwrap_err();
        assert!(err.to_string().contains("credentials"), "{err}");
    }

    #[test]
    fn rejects() {
        for text in [
            "[workspace]\nnmae = \"x\"\n",
            "[bogus]\n",
            "[workspace]\nsource_date_epoch = -1\n",
            "[workspace]\nsource_date_epoch = \"0\"\n",
            "[resources]\ncpu = -1\n",
            "[resources]\ncpu = nan\n",
            "[resources]\n\"bad name\" = 1\n",
            "[resources]\ncpu = \"2\"\n",
            "[sandbox]\npath = [\"bin\"]\n",
            "[sandbox]\npath = [\"/root/.venv/bin\", \"/usr/bin\"]\n",
            "[sandbox]\npath = [\"/usr/../home/x/bin\"]\n",
            "[python]\nuv = \"\"\n",
            "[python]\npip = \"x\"\n",
            "[sandbox]\nPATH = [\"/bin\"]\n",
            "[workspace]\nstore = \"\"\n",
            "[workspace\n",
            "[remote]\nurl = \"ftp://x\"\n",
            "[remote]\nurl = \"http://x\"\ntoken = \"s3cret\"\n",
            "[remote]\nurl = \"http://x\"\ntoken_file = \"t.txt\"\n",
            "[remote]\nurl = \"http://x\"\ntrusted_keys = [\"-----BEGIN PRIVATE KEY-----\"]\n",
            "[remote]\nurl = \"http://x\"\ntimeout = 0\n",
            "[remote]\nurl = \"http://x\"\nurll = 1\n",
            "[remote]\nread_only = true\n",
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.span().is_some(), "{text}: {err}");
            assert_eq!(err.file_name(), Some("MLBUILD.toml"));
        }
    }
}
