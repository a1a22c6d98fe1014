//! `[channel.NAME]` tables of `MLBUILD.toml`: release channels and their rules.
//!
//! A channel (staging, production) is a named, append-only history of the artifacts a
//! team deployed; its rules say what may enter it: an artifact signed by one of `signers`,
//! one that was in another channel first (`from`), `approvals` signed approvals by
//! `approvers`, metric `gates` that may compare against the model in the channel now
//! (`f1 >= current.f1`), and how a new model is rolled out. The rules are parsed here, with
//! the file's spans, so a typo stops at its line; `mlbuild-release` enforces them.
//! Main type: [`ChannelSettings`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use crate::config::TrustedKey;
use crate::error::{closest, ErrorKind, WorkspaceError};
use crate::gate::{parse_gate_at_with, Gate};
use crate::source::SourceText;

pub(crate) const CHANNEL_NAME_HELP: &str =
    "channel names are 1-64 lowercase letters, digits, `.`, `_` or `-`, starting with a letter or digit (e.g. `staging`, `production`)";

/// Whether `name` may name a channel (it is also a log's file name and a URL segment).
pub fn is_valid_channel_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// How a new model reaches all traffic in a channel.
#[derive(Clone, Debug, PartialEq)]
pub enum RolloutStrategy {
    /// Traffic moves to the new model in steps (percent), the last one 100.
    Canary { steps: Vec<u32> },
    /// The new model receives a copy of the traffic and serves none, until it is
    /// advanced to take all of it.
    Shadow,
    /// The new model is deployed beside the old one with no traffic, then takes all of it
    /// at once.
    BlueGreen,
}

impl RolloutStrategy {
    pub fn name(&self) -> &'static str {
        match self {
            RolloutStrategy::Canary { .. } => "canary",
            RolloutStrategy::Shadow => "shadow",
            RolloutStrategy::BlueGreen => "blue-green",
        }
    }
}

/// One `[channel.NAME]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelSettings {
    pub name: String,
    /// `from`: a digest must have been promoted to this channel first.
    pub from: Option<String>,
    /// `approvals`: how many distinct `approvers` must have signed an approval.
    pub approvals: u32,
    pub approvers: Vec<TrustedKey>,
    /// `gates`, with `current.METRIC` for the model in the channel now.
    pub gates: Vec<Gate>,
    /// `signers`: the artifact's `model.sig` must verify against one of these keys.
    pub signers: Vec<TrustedKey>,
    /// `promoters`: when set, only these keys may sign the channel's records (promotions,
    /// rollbacks, rollout steps).
    pub promoters: Vec<TrustedKey>,
    /// `metrics`: the JSON file inside the artifact whose numeric leaves are the model's
    /// metrics (default `metrics.json`).
    pub metrics: String,
    pub rollout: Option<RolloutStrategy>,
    /// `oci`: the repository the channel's models are pushed to (`oci://HOST/REPO`), for
    /// `mlbuild push --channel` and rendered deployments.
    pub oci: Option<String>,
    /// `model_format`: what rendered deployments declare as the model's format (KServe's
    /// `modelFormat.name`, Seldon's `requirements`), e.g. `sklearn`.
    pub model_format: Option<String>,
    /// The table's source, for errors about it found later.
    pub source: Arc<SourceText>,
    pub span: crate::source::Span,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawChannel {
    from: Option<Spanned<String>>,
    approvals: Option<Spanned<u32>>,
    approvers: Option<Vec<Spanned<String>>>,
    gates: Option<Vec<Spanned<String>>>,
    signers: Option<Vec<Spanned<String>>>,
    promoters: Option<Vec<Spanned<String>>>,
    metrics: Option<Spanned<String>>,
    rollout: Option<Spanned<RawRollout>>,
    oci: Option<Spanned<String>>,
    model_format: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRollout {
    strategy: Spanned<String>,
    steps: Option<Spanned<Vec<u32>>>,
}

fn invalid(
    source: &Arc<SourceText>,
    span: std::ops::Range<usize>,
    message: String,
) -> WorkspaceError {
    WorkspaceError::new(ErrorKind::Invalid, message).at(source, span)
}

/// Parses every `[channel.NAME]` table; `root` resolves key paths.
pub(crate) fn parse_channels(
    source: &Arc<SourceText>,
    root: &Path,
    raw: BTreeMap<Spanned<String>, Spanned<RawChannel>>,
) -> Result<BTreeMap<String, ChannelSettings>, WorkspaceError> {
    let names: Vec<String> = raw.keys().map(|k| k.get_ref().clone()).collect();
    let mut out = BTreeMap::new();
    for (name, table) in raw {
        let span = table.span();
        let table = table.into_inner();
        if !is_valid_channel_name(name.get_ref()) {
            return Err(invalid(
                source,
                name.span(),
                format!("invalid channel name `{}`", name.get_ref()),
            )
            .with_label("invalid name")
            .with_help(CHANNEL_NAME_HELP));
        }
        let name_text = name.get_ref().clone();
        if let Some(from) = &table.from {
            if from.get_ref() == &name_text || !names.contains(from.get_ref()) {
                let mut help = format!(
                    "`from` names another channel declared in MLBUILD.toml ({})",
                    names
                        .iter()
                        .filter(|n| **n != name_text)
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                if let Some(s) = closest(
                    from.get_ref(),
                    names.iter().map(String::as_str).filter(|n| *n != name_text),
                ) {
                    help = format!("did you mean `{s}`? {help}");
                }
                return Err(invalid(
                    source,
                    from.span(),
                    format!(
                        "channel `{name_text}` comes `from` unknown channel `{}`",
                        from.get_ref()
                    ),
                )
                .with_label(if from.get_ref() == &name_text {
                    "itself"
                } else {
                    "no such channel"
                })
                .with_help(help));
            }
        }
        let keys = |list: Option<Vec<Spanned<String>>>,
                    field: &str|
         -> Result<Vec<TrustedKey>, WorkspaceError> {
            let mut keys = Vec::new();
            for key in list.unwrap_or_default() {
                let text = key.get_ref();
                if text.contains("PRIVATE KEY") {
                    return Err(invalid(source, key.span(), format!("a private key in `{field}`"))
                        .with_label("private key")
                        .with_help("list public keys (`mlbuild key generate` writes one next to the private key), and rotate this one"));
                }
                if text.trim().is_empty() {
                    return Err(
                        invalid(source, key.span(), format!("empty `{field}` entry"))
                            .with_label("empty")
                            .with_help("give a path to a PEM public key, or the PEM text itself"),
                    );
                }
                keys.push(if text.trim_start().starts_with("-----BEGIN") {
                    TrustedKey::Pem(text.clone())
                } else {
                    TrustedKey::Path(root.join(text))
                });
            }
            Ok(keys)
        };
        let approvals = table.approvals.as_ref().map_or(0, |a| *a.get_ref());
        let approvers = keys(table.approvers, "approvers")?;
        if approvals as usize > approvers.len() {
            let span = table.approvals.as_ref().map_or(span.clone(), |a| a.span());
            return Err(invalid(
                source,
                span,
                format!(
                    "channel `{name_text}` needs {approvals} approvals but lists {} `approvers`",
                    approvers.len()
                ),
            )
            .with_label("more than the approvers")
            .with_help(
                "list at least as many public keys in `approvers` as `approvals` asks for",
            ));
        }
        let mut gates = Vec::new();
        for gate in table.gates.unwrap_or_default() {
            gates.push(parse_gate_at_with(
                source,
                gate.get_ref(),
                gate.span(),
                "current",
            )?);
        }
        let metrics = match table.metrics {
            Some(m) => {
                let rel = m.get_ref();
                if !crate::package::is_relative_path(rel) {
                    return Err(
                        invalid(source, m.span(), format!("invalid metrics path `{rel}`"))
                            .with_label("not a relative path")
                            .with_help(
                                "name the metrics file inside the artifact, like `metrics.json`",
                            ),
                    );
                }
                rel.clone()
            }
            None => "metrics.json".to_owned(),
        };
        let rollout = match table.rollout {
            None => None,
            Some(r) => {
                let r_span = r.span();
                let r = r.into_inner();
                let strategy = match (r.strategy.get_ref().as_str(), r.steps) {
                    ("canary", Some(steps)) => {
                        let s_span = steps.span();
                        let steps = steps.into_inner();
                        let increasing = steps.windows(2).all(|w| w[0] < w[1]);
                        if steps.is_empty()
                            || !increasing
                            || steps[0] == 0
                            || steps.last() != Some(&100)
                        {
                            return Err(invalid(
                                source,
                                s_span,
                                "canary `steps` must be increasing percentages ending at 100"
                                    .to_owned(),
                            )
                            .with_label("not 1..100 increasing, ending at 100")
                            .with_help("e.g. `steps = [10, 50, 100]`"));
                        }
                        RolloutStrategy::Canary { steps }
                    }
                    ("canary", None) => {
                        return Err(invalid(
                            source,
                            r_span,
                            "a canary rollout needs `steps`".to_owned(),
                        )
                        .with_label("no steps")
                        .with_help(
                            "e.g. `rollout = { strategy = \"canary\", steps = [10, 50, 100] }`",
                        ))
                    }
                    ("shadow" | "blue-green", Some(steps)) => {
                        return Err(invalid(
                            source,
                            steps.span(),
                            format!("a {} rollout has no `steps`", r.strategy.get_ref()),
                        )
                        .with_label("only for canary")
                        .with_help("remove `steps`, or use `strategy = \"canary\"`"))
                    }
                    ("shadow", None) => RolloutStrategy::Shadow,
                    ("blue-green", None) => RolloutStrategy::BlueGreen,
                    (other, _) => {
                        return Err(invalid(
                            source,
                            r.strategy.span(),
                            format!("unknown rollout strategy `{other}`"),
                        )
                        .with_label("unknown strategy")
                        .with_help("use `canary` (with `steps`), `shadow` or `blue-green`"))
                    }
                };
                Some(strategy)
            }
        };
        let oci = match table.oci {
            Some(o)
                if !o.get_ref().starts_with("oci://") || o.get_ref().len() <= "oci://".len() =>
            {
                return Err(invalid(
                    source,
                    o.span(),
                    format!("`{}` is not an `oci://` repository", o.get_ref()),
                )
                .with_label("not oci://HOST/REPO")
                .with_help("e.g. `oci = \"oci://registry.internal:5000/models/fraud\"`"))
            }
            o => o.map(Spanned::into_inner),
        };
        out.insert(
            name_text.clone(),
            ChannelSettings {
                name: name_text,
                from: table.from.map(Spanned::into_inner),
                approvals,
                approvers,
                gates,
                signers: keys(table.signers, "signers")?,
                promoters: keys(table.promoters, "promoters")?,
                metrics,
                rollout,
                oci,
                model_format: table.model_format.map(Spanned::into_inner),
                source: Arc::clone(source),
                span,
            },
        );
    }
    Ok(out)
}
