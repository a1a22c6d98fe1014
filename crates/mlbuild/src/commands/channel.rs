//! `mlbuild channel list | show | history | verify | render`: reading release channels.
//!
//! Every read verifies the channel's whole log first (signatures, hash links, order);
//! `verify` also checks that every artifact the channel ever held still verifies against
//! the channel's signers, fetching it from the remote cache when it is not in the store.
//! `render` writes the deployment of the channel's state for KServe or Seldon Core 2.
//! Main type: [`ChannelArgs`].

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use mlbuild_release::render::{self, Engine};
use mlbuild_release::{artifact, Chain, ChannelState};
use serde_json::json;

use super::release::{load_keys, Channels};
use crate::cli::Cli;
use crate::commands::cache::RemoteArgs;
use crate::context::Context;
use crate::exit::{CmdResult, Code, Failure};

#[derive(Debug, Args)]
pub struct ChannelArgs {
    #[command(subcommand)]
    pub command: ChannelCommand,
}

#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// Every channel of MLBUILD.toml with the generation it serves.
    List(ChannelCommon),
    /// A channel's rules, the model it serves and any rollout under way.
    Show(OneChannel),
    /// Every record of a channel, oldest first.
    History(OneChannel),
    /// Check a channel's whole log (signatures, hash links, order, that each move was
    /// legal) and that every artifact it held still verifies; names the first bad record.
    Verify(OneChannel),
    /// Print the deployment of a channel's state (KServe InferenceService, or Seldon Core
    /// 2 Models and Experiment) as YAML.
    Render(RenderArgs),
}

#[derive(Debug, Args)]
pub struct ChannelCommon {
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub struct OneChannel {
    /// The channel.
    #[arg(value_name = "CHANNEL")]
    pub channel: String,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Kserve,
    Seldon,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The channel.
    #[arg(value_name = "CHANNEL")]
    pub channel: String,
    /// The serving engine.
    #[arg(long, value_enum)]
    pub format: Format,
    /// The resource name (default: `NAMESPACE-CHANNEL`, the workspace's name and the
    /// channel's).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The model format (default: the channel's `model_format`).
    #[arg(long, value_name = "FORMAT")]
    pub model_format: Option<String>,
    /// The OCI repository the channel's generations are pushed to, `oci://HOST/REPO`
    /// (default: the channel's `oci`).
    #[arg(long, value_name = "REPO")]
    pub oci: Option<String>,
    /// Write the YAML to FILE instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub fn run(cli: &Cli, args: &ChannelArgs) -> CmdResult {
    let ctx = Context::load(cli)?;
    match &args.command {
        ChannelCommand::List(a) => list(cli, &ctx, &a.remote),
        ChannelCommand::Show(a) => show(cli, &ctx, a),
        ChannelCommand::History(a) => history(cli, &ctx, a),
        ChannelCommand::Verify(a) => verify(cli, &ctx, a),
        ChannelCommand::Render(a) => render_cmd(cli, &ctx, a),
    }
}

fn list(cli: &Cli, ctx: &Context, remote: &RemoteArgs) -> CmdResult {
    let channels = Channels::open(&ctx.ws, &ctx.store, remote)?;
    let mut rows = Vec::new();
    for name in ctx.ws.config.channels.keys() {
        let chain = channels.read(name)?;
        rows.push((name.clone(), chain));
    }
    if cli.json {
        let list: Vec<_> = rows
            .iter()
            .map(|(name, chain)| summary(name, &chain.state))
            .collect();
        super::print_json(&list);
        return Ok(Code::Ok);
    }
    if rows.is_empty() {
        println!(
            "no channels: declare them in MLBUILD.toml, e.g. `[channel.staging]` (docs/release.md)"
        );
        return Ok(Code::Ok);
    }
    use crate::table::Align::{Left, Right};
    let mut table_rows = Vec::new();
    for (name, chain) in &rows {
        let s = &chain.state;
        let serving = s.serving();
        table_rows.push([
            name.clone(),
            serving.map_or("-".into(), |g| g.number.to_string()),
            serving.map_or("-".into(), |g| g.artifact.short()),
            serving.map_or("-".into(), |g| g.artifact.label.clone()),
            rollout_text(s),
        ]);
    }
    print!(
        "{}",
        crate::table::text(
            &["channel", "generation", "artifact", "target", "rollout"],
            &table_rows,
            &[Left, Right, Left, Left, Left]
        )
    );
    Ok(Code::Ok)
}

fn summary(name: &str, s: &ChannelState) -> serde_json::Value {
    let serving = s.serving();
    json!({
        "channel": name,
        "records": s.len,
        "generation": serving.map(|g| g.number),
        "artifact": serving.map(|g| &g.artifact),
        "metrics": serving.map(|g| &g.metrics),
        "latest_generation": s.latest().map(|g| g.number),
        "rollout": s.rollout.as_ref().map(|r| json!({
            "strategy": r.strategy, "generation": r.generation, "stable": r.stable,
            "started": r.step.is_some(), "percent": s.rollout_percent(),
        })),
        "head": s.head.map(|d| d.to_hex()),
    })
}

fn rollout_text(s: &ChannelState) -> String {
    match &s.rollout {
        None => "-".into(),
        Some(r) if r.step.is_none() => {
            format!("{} of generation {} staged", r.strategy, r.generation)
        }
        Some(r) if r.strategy == "shadow" => {
            format!("shadow: generation {} mirrors traffic", r.generation)
        }
        Some(r) => format!(
            "{}: generation {} at {}%",
            r.strategy,
            r.generation,
            s.rollout_percent().unwrap_or(0)
        ),
    }
}

fn show(cli: &Cli, ctx: &Context, a: &OneChannel) -> CmdResult {
    let channels = Channels::open(&ctx.ws, &ctx.store, &a.remote)?;
    let settings = channels.settings(&a.channel)?;
    let chain = channels.read(&a.channel)?;
    if cli.json {
        super::print_json(&summary(&a.channel, &chain.state));
        return Ok(Code::Ok);
    }
    println!("channel `{}` ({})", a.channel, channels.describe());
    let mut rules = Vec::new();
    if let Some(from) = &settings.from {
        rules.push(format!("from `{from}`"));
    }
    if settings.approvals > 0 {
        rules.push(format!(
            "{} approval(s) of {} approver(s)",
            settings.approvals,
            settings.approvers.len()
        ));
    }
    for g in &settings.gates {
        rules.push(format!("gate `{}`", g.text));
    }
    if let Some(r) = &settings.rollout {
        rules.push(match r {
            mlbuild_workspace::RolloutStrategy::Canary { steps } => {
                format!("canary rollout {steps:?}")
            }
            other => format!("{} rollout", other.name()),
        });
    }
    println!(
        "  rules:      {}",
        if rules.is_empty() {
            "none but a verified signature".to_owned()
        } else {
            rules.join("; ")
        }
    );
    match chain.state.serving() {
        None => println!("  serving:    nothing yet"),
        Some(g) => {
            println!(
                "  serving:    generation {} = {} ({})",
                g.number,
                g.artifact.label,
                g.artifact.short()
            );
            println!("              sha256:{}", g.artifact.sha256);
            println!("              blake3:{}", g.artifact.blake3);
            if !g.metrics.is_empty() {
                let m: Vec<String> = g
                    .metrics
                    .iter()
                    .map(|(k, v)| format!("{k}={}", mlbuild_exec::fmt_value(*v)))
                    .collect();
                println!("  metrics:    {}", m.join(", "));
            }
        }
    }
    println!("  rollout:    {}", rollout_text(&chain.state));
    println!(
        "  records:    {} (head {})",
        chain.state.len,
        chain.state.head.map_or("-".into(), |d| d.short())
    );
    Ok(Code::Ok)
}

fn history(cli: &Cli, ctx: &Context, a: &OneChannel) -> CmdResult {
    let channels = Channels::open(&ctx.ws, &ctx.store, &a.remote)?;
    let chain = channels.read(&a.channel)?;
    if cli.json {
        let records: Vec<_> = chain
            .records
            .iter()
            .map(|(r, hash)| json!({ "hash": hash.to_hex(), "record": r }))
            .collect();
        super::print_json(&records);
        return Ok(Code::Ok);
    }
    if chain.records.is_empty() {
        println!("channel `{}` has no records yet", a.channel);
        return Ok(Code::Ok);
    }
    use crate::table::Align::{Left, Right};
    let mut table_rows = Vec::new();
    for (r, _) in &chain.records {
        let what = match (&r.rollout, r.kind) {
            (
                Some(ro),
                mlbuild_release::RecordKind::RolloutStart
                | mlbuild_release::RecordKind::RolloutAdvance,
            ) if ro.strategy == "canary" => {
                format!(
                    "{} ({}%)",
                    r.kind.as_str(),
                    ro.step.and_then(|i| ro.steps.get(i)).copied().unwrap_or(0)
                )
            }
            (None, mlbuild_release::RecordKind::RolloutAdvance) => {
                "rollout_advance (100%, done)".to_owned()
            }
            _ => r.kind.as_str().to_owned(),
        };
        table_rows.push([
            r.seq.to_string(),
            r.time.trim_end_matches('Z').replace('T', " "),
            what,
            r.generation.map_or("-".into(), |g| g.to_string()),
            r.artifact
                .as_ref()
                .map(|a| a.short())
                .or_else(|| r.subject.as_ref().map(|s| s.chars().take(19).collect()))
                .unwrap_or_else(|| "-".into()),
            mlbuild_release::record::short_id(&r.actor.key_id).to_owned(),
            r.reason.clone().unwrap_or_default(),
        ]);
    }
    print!(
        "{}",
        crate::table::text(
            &[
                "#",
                "time (UTC)",
                "record",
                "generation",
                "artifact",
                "by",
                "reason"
            ],
            &table_rows,
            &[Right, Left, Left, Right, Left, Left, Left]
        )
    );
    Ok(Code::Ok)
}

fn verify(cli: &Cli, ctx: &Context, a: &OneChannel) -> CmdResult {
    let channels = Channels::open(&ctx.ws, &ctx.store, &a.remote)?;
    let settings = channels.settings(&a.channel)?;
    let chain: Chain = match channels.log(&a.channel)?.read() {
        Ok(chain) => chain,
        Err(mlbuild_release::ReleaseError::Chain(e)) => {
            if cli.json {
                super::print_json(
                    &json!({ "channel": a.channel, "verified": false, "record": e.position, "problem": e.problem }),
                );
                return Ok(Code::BuildFailed);
            }
            return Err(Failure {
                code: Code::BuildFailed,
                report: miette::miette!("{e}"),
            });
        }
        Err(e) => return Err(super::release::release_failure(e)),
    };
    let mut problems: Vec<(u64, String)> = Vec::new();
    let promoters: Vec<String> = load_keys(&settings.promoters, "promoters", &settings.name)?
        .iter()
        .map(|k| k.key_id())
        .collect();
    let approvers: Vec<String> = load_keys(&settings.approvers, "approvers", &settings.name)?
        .iter()
        .map(|k| k.key_id())
        .collect();
    for (r, _) in &chain.records {
        let by_promoter = promoters.is_empty() || promoters.contains(&r.actor.key_id);
        match r.kind {
            mlbuild_release::RecordKind::Approve if !approvers.contains(&r.actor.key_id) => {
                problems.push((
                    r.seq,
                    format!(
                        "is an approval by key {}, which is not among the channel's `approvers`",
                        mlbuild_release::record::short_id(&r.actor.key_id)
                    ),
                ))
            }
            mlbuild_release::RecordKind::Approve => {}
            _ if !by_promoter => problems.push((
                r.seq,
                format!(
                    "is signed by key {}, which is not among the channel's `promoters`",
                    mlbuild_release::record::short_id(&r.actor.key_id)
                ),
            )),
            _ => {}
        }
    }
    // Every artifact the channel held, once each: it must still be the bytes recorded
    // and still verify against the channel's signers.
    let signers = load_keys(&settings.signers, "signers", &settings.name)?;
    let remote = super::cache::client(&ctx.ws, &a.remote)?;
    let mut checked = std::collections::HashSet::new();
    for g in &chain.state.generations {
        if !checked.insert(g.artifact.sha256.clone()) {
            continue;
        }
        if let Err(why) = check_artifact(ctx, remote.as_ref(), &g.artifact, &signers) {
            problems.push((
                g.seq,
                format!(
                    "holds generation {} ({}), which {why}",
                    g.number,
                    g.artifact.short()
                ),
            ));
        }
    }
    problems.sort_by_key(|p| p.0);
    if cli.json {
        super::print_json(&json!({
            "channel": a.channel,
            "verified": problems.is_empty(),
            "records": chain.state.len,
            "generations": chain.state.generations.len(),
            "head": chain.state.head.map(|d| d.to_hex()),
            "problems": problems.iter().map(|(seq, p)| json!({ "record": seq, "problem": p })).collect::<Vec<_>>(),
        }));
        return Ok(if problems.is_empty() {
            Code::Ok
        } else {
            Code::BuildFailed
        });
    }
    if let Some((seq, problem)) = problems.first() {
        let rest: Vec<String> = problems
            .iter()
            .skip(1)
            .map(|(s, p)| format!("  record {s} {p}"))
            .collect();
        return Err(Failure {
            code: Code::BuildFailed,
            report: miette::miette!(
                "record {seq} of channel `{}` {problem}{}",
                a.channel,
                if rest.is_empty() {
                    String::new()
                } else {
                    format!("\nalso:\n{}", rest.join("\n"))
                }
            ),
        });
    }
    println!(
        "channel `{}`: {} records, {} generations, chain verified; every artifact verifies",
        a.channel,
        chain.state.len,
        chain.state.generations.len()
    );
    Ok(Code::Ok)
}

/// Whether `artifact` is still the recorded bytes and its signature still holds.
fn check_artifact(
    ctx: &Context,
    remote: Option<&mlbuild_remote::HttpRemote>,
    a: &mlbuild_release::ArtifactRef,
    signers: &[mlbuild_sign::PublicKey],
) -> Result<(), String> {
    let digest: mlbuild_digest::Digest = a
        .blake3
        .parse()
        .map_err(|_| "has a malformed BLAKE3 digest".to_owned())?;
    if !ctx.store.has_blob(&digest) {
        match remote {
            Some(r) => r
                .fetch_blob(&digest, &ctx.store)
                .map_err(|e| format!("is in neither the store nor the remote cache ({e})"))?,
            None => {
                return Err("is not in the store (and no remote cache is configured)".to_owned())
            }
        }
    }
    let blob = ctx.store.blob_path(&digest);
    let (sha256, _, _) = artifact::digests(&blob).map_err(|e| format!("cannot be read ({e})"))?;
    if sha256 != a.sha256 {
        return Err("no longer has the recorded sha256".to_owned());
    }
    let unpacked = artifact::unpack(&blob, &ctx.store.tmp_dir())?;
    // Without `signers`, the key it was promoted with (the workspace's signing key of the
    // time, which may since have been rotated): the signature still proves these are the
    // bytes that were signed.
    let recorded: Vec<mlbuild_sign::PublicKey> = a
        .signer_key
        .as_deref()
        .and_then(|pem| mlbuild_sign::PublicKey::from_pem(pem).ok())
        .into_iter()
        .collect();
    let keys = if signers.is_empty() {
        &recorded[..]
    } else {
        signers
    };
    artifact::check_signature(unpacked.path(), keys)
        .map(|_| ())
        .map_err(|e| format!("no longer verifies: {e}"))
}

fn render_cmd(cli: &Cli, ctx: &Context, a: &RenderArgs) -> CmdResult {
    super::refuse_json(cli, "channel render")?;
    let channels = Channels::open(&ctx.ws, &ctx.store, &a.remote)?;
    let settings = channels.settings(&a.channel)?;
    let chain = channels.read(&a.channel)?;
    let oci = a
        .oci
        .clone()
        .or_else(|| settings.oci.clone())
        .ok_or_else(|| {
            Failure::bad_input(miette::miette!(
                help = format!(
                    "set `oci = \"oci://HOST/REPO\"` in `[channel.{}]` or pass `--oci`",
                    a.channel
                ),
                "rendering needs the OCI repository the channel's models are pushed to"
            ))
        })?;
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", channels.namespace, a.channel));
    let target = render::Target {
        channel: &a.channel,
        name: &name,
        oci: &oci,
        model_format: a
            .model_format
            .as_deref()
            .or(settings.model_format.as_deref()),
    };
    let engine = match a.format {
        Format::Kserve => Engine::Kserve,
        Format::Seldon => Engine::Seldon,
    };
    let yaml = render::render(engine, &chain.state, &target)
        .map_err(|e| Failure::bad_input(miette::miette!("{e}")))?;
    match &a.output {
        Some(path) => {
            let path = super::verify::resolve(cli, path);
            std::fs::write(&path, yaml).map_err(|e| {
                Failure::bad_input(miette::miette!("cannot write `{}`: {e}", path.display()))
            })?;
        }
        None => print!("{yaml}"),
    }
    Ok(Code::Ok)
}
