//! What the release-channel commands share: where a workspace's channel logs live, which
//! keys sign and check, and reading a channel (verified) for a command or a gate.
//!
//! The logs live on the remote cache when the workspace has one (so every CI runner sees
//! the same channels), else in the store. Main type: [`Channels`].

use std::collections::HashMap;
use std::path::PathBuf;

use mlbuild_release::{Chain, ChannelLog};
use mlbuild_sign::{PrivateKey, PublicKey};
use mlbuild_store::logs::AppendLog;
use mlbuild_store::{MetricValues, Store};
use mlbuild_workspace::{Baseline, ChannelSettings, TrustedKey, Workspace};

use crate::commands::cache::RemoteArgs;
use crate::exit::{Code, Failure};

/// A workspace's channels and the place their logs live.
pub struct Channels<'w> {
    pub ws: &'w Workspace,
    logs: Box<dyn AppendLog>,
    pub namespace: String,
}

impl<'w> Channels<'w> {
    /// The remote cache's logs when one is configured (and not `--no-remote`), else the
    /// store's.
    pub fn open(
        ws: &'w Workspace,
        store: &Store,
        remote: &RemoteArgs,
    ) -> Result<Channels<'w>, Failure> {
        let logs: Box<dyn AppendLog> = match super::cache::client(ws, remote)? {
            Some(client) => Box::new(client),
            None => Box::new(store.logs()),
        };
        Ok(Channels {
            ws,
            logs,
            namespace: mlbuild_release::namespace(ws.config.name.as_deref(), &ws.root),
        })
    }

    /// The settings of `name`, or an error listing the channels there are.
    pub fn settings(&self, name: &str) -> Result<&'w ChannelSettings, Failure> {
        self.ws
            .config
            .channels
            .get(name)
            .ok_or_else(|| unknown_channel(self.ws, name))
    }

    pub fn log(&self, channel: &str) -> Result<ChannelLog<'_>, Failure> {
        ChannelLog::new(self.logs.as_ref(), &self.namespace, channel).map_err(release_failure)
    }

    /// Reads and verifies `channel`'s log.
    pub fn read(&self, channel: &str) -> Result<Chain, Failure> {
        self.settings(channel)?;
        self.log(channel)?.read().map_err(release_failure)
    }

    /// Where the logs live, for messages.
    pub fn describe(&self) -> String {
        self.logs.describe()
    }
}

/// `unknown channel `prod``, with the closest declared name and the list.
pub fn unknown_channel(ws: &Workspace, name: &str) -> Failure {
    let names: Vec<&str> = ws.config.channels.keys().map(String::as_str).collect();
    let help = if names.is_empty() {
        "declare channels in MLBUILD.toml, e.g. `[channel.staging]` (docs/release.md)".to_owned()
    } else {
        let list = names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        match mlbuild_workspace::suggest(name, names.iter().copied()) {
            Some(s) => format!("did you mean `{s}`? the channels are {list}"),
            None => format!("the channels are {list}"),
        }
    };
    Failure::bad_input(miette::miette!(help = help, "unknown channel `{name}`"))
}

/// A release error as a failure: a broken chain is a store-like error (exit 3), a
/// refusal a failed check (exit 1), anything else bad input.
pub fn release_failure(e: mlbuild_release::ReleaseError) -> Failure {
    use mlbuild_release::ReleaseError;
    match e {
        ReleaseError::Chain(c) => Failure {
            code: Code::Store,
            report: miette::miette!(
                help = "`mlbuild channel verify CHANNEL` checks the whole log; nothing is appended to a log that does not verify",
                "{c}"
            ),
        },
        ReleaseError::Refused(outcomes) => Failure {
            code: Code::BuildFailed,
            report: miette::miette!("refused:\n{}", refusal_lines(&outcomes)),
        },
        ReleaseError::Busy { .. } => Failure {
            code: Code::BuildFailed,
            report: miette::miette!(help = "run the command again", "{e}"),
        },
        ReleaseError::Log(l) => Failure::store(miette::miette!("{l}")),
        ReleaseError::Invalid(m) => Failure::bad_input(miette::miette!("{m}")),
    }
}

/// Each failed rule on its own line.
pub fn refusal_lines(outcomes: &[mlbuild_release::RuleOutcome]) -> String {
    outcomes
        .iter()
        .filter(|o| !o.passed)
        .map(|o| format!("  {}: {}", o.rule, o.detail))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Loads the public keys of a `signers`/`approvers`/`promoters` list.
pub fn load_keys(
    list: &[TrustedKey],
    field: &str,
    channel: &str,
) -> Result<Vec<PublicKey>, Failure> {
    list.iter()
        .map(|k| {
            let loaded = match k {
                TrustedKey::Pem(pem) => PublicKey::from_pem(pem),
                TrustedKey::Path(path) => PublicKey::load(path),
            };
            loaded.map_err(|e| {
                Failure::bad_input(miette::miette!(
                    help = format!(
                        "`[channel.{channel}] {field}` lists PEM public keys or paths to them"
                    ),
                    "cannot load a key of `{field}` of channel `{channel}`: {e}"
                ))
            })
        })
        .collect()
}

/// The keys an artifact of `settings` must verify against: its `signers`, else the
/// public half of the workspace's signing key.
pub fn signer_keys(ws: &Workspace, settings: &ChannelSettings) -> Result<Vec<PublicKey>, Failure> {
    let mut keys = load_keys(&settings.signers, "signers", &settings.name)?;
    if keys.is_empty() {
        if let Some(key) = crate::signing::loaded_key(ws) {
            keys.push(key.public_key());
        }
    }
    Ok(keys)
}

/// The key that signs a record: `--key FILE`, else the workspace's signing key.
pub fn actor_key(ws: &Workspace, key: Option<&PathBuf>) -> Result<PrivateKey, Failure> {
    let path = match key {
        Some(p) => p.clone(),
        None => crate::signing::key_file(ws).ok_or_else(|| {
            Failure::bad_input(miette::miette!(
                help = format!("pass `--key FILE` (an ECDSA P-256 private key, `mlbuild key generate`) or set `{}`", crate::signing::KEY_FILE_ENV),
                "channel records are signed, and no key is configured"
            ))
        })?,
    };
    PrivateKey::load(&path).map_err(|e| {
        Failure::bad_input(miette::miette!(
            "cannot load the signing key `{}`: {e}",
            path.display()
        ))
    })
}

/// The metrics each `baseline = "channel:NAME"` of the workspace compares against, read
/// (and verified) from the channels' logs once per build; a problem becomes the gate's
/// error at the target that names the channel.
pub fn channel_baselines(
    ws: &Workspace,
    store: &Store,
    remote: &RemoteArgs,
) -> Result<HashMap<String, Result<MetricValues, String>>, Failure> {
    let mut names: Vec<&str> = ws
        .targets()
        .filter_map(|t| match &t.baseline {
            Some(Baseline::Channel(name)) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut out = HashMap::new();
    if names.is_empty() {
        return Ok(out);
    }
    let channels = Channels::open(ws, store, remote)?;
    for name in names {
        let value = if !ws.config.channels.contains_key(name) {
            Err(format!(
                "baseline channel `{name}` is not declared in MLBUILD.toml"
            ))
        } else {
            match channels
                .log(name)
                .and_then(|l| l.read().map_err(release_failure))
            {
                Err(e) => Err(format!("cannot read channel `{name}`: {}", e.report)),
                Ok(chain) => match chain.state.serving() {
                    Some(g) => Ok(g.metrics.clone()),
                    None => Err(format!("channel `{name}` holds no model yet")),
                },
            }
        };
        out.insert(name.to_owned(), value);
    }
    Ok(out)
}
