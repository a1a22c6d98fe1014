//! `mlbuild rollout start | advance | abort | status CHANNEL` and `mlbuild rollback
//! CHANNEL [--to N]`: moving traffic between a channel's generations.
//!
//! Each move is a signed record in the channel's log. A promotion into a channel with a
//! `rollout` stages the new generation; `start` gives it its first step of traffic,
//! `advance` the next, and at the last step it serves everything. `abort` and `rollback`
//! append a new generation pointing at an earlier artifact: history is never rewritten.
//! Main types: [`RolloutArgs`], [`RollbackArgs`].

use std::path::PathBuf;

use clap::{Args, Subcommand};
use mlbuild_release::{new_record, RecordKind, ReleaseError};

use super::release::{actor_key, release_failure, Channels};
use crate::cli::Cli;
use crate::commands::cache::RemoteArgs;
use crate::context::Context;
use crate::exit::{CmdResult, Code};

#[derive(Debug, Args)]
pub struct RolloutArgs {
    #[command(subcommand)]
    pub command: RolloutCommand,
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Give the staged generation its first step of traffic (a canary's first percent,
    /// a shadow's mirrored copy, a blue-green deployment beside the stable one).
    Start(RolloutStep),
    /// Move the rollout to its next step; at the last, the new generation serves all.
    Advance(RolloutStep),
    /// Abandon the rollout: a new generation returns all traffic to the stable model.
    Abort(RolloutStep),
    /// Where the rollout stands.
    Status(RolloutStatus),
}

#[derive(Debug, Args)]
pub struct RolloutStep {
    /// The channel.
    #[arg(value_name = "CHANNEL")]
    pub channel: String,
    /// Why, recorded with the step.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// The signing key (default: `MLBUILD_SIGNING_KEY` or `[signing] key`).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub struct RolloutStatus {
    /// The channel.
    #[arg(value_name = "CHANNEL")]
    pub channel: String,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The channel.
    #[arg(value_name = "CHANNEL")]
    pub channel: String,
    /// The generation whose artifact to return to (default: the one before the current
    /// generation's artifact).
    #[arg(long, value_name = "N")]
    pub to: Option<u64>,
    /// Why, recorded in the new generation.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// The signing key (default: `MLBUILD_SIGNING_KEY` or `[signing] key`).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub fn run(cli: &Cli, args: &RolloutArgs) -> CmdResult {
    let ctx = Context::load(cli)?;
    let (step, kind) = match &args.command {
        RolloutCommand::Status(a) => return status(cli, &ctx, a),
        RolloutCommand::Start(a) => (a, RecordKind::RolloutStart),
        RolloutCommand::Advance(a) => (a, RecordKind::RolloutAdvance),
        RolloutCommand::Abort(a) => (a, RecordKind::RolloutAbort),
    };
    let channels = Channels::open(&ctx.ws, &ctx.store, &step.remote)?;
    let settings = channels.settings(&step.channel)?;
    let key = actor_key(&ctx.ws, step.key.as_ref())?;
    let log = channels.log(&settings.name)?;
    let (record, _) = log
        .append(&key, |chain| {
            let state = &chain.state;
            let Some(rollout) = state.rollout.clone() else {
                return Err(ReleaseError::Invalid(format!(
                    "channel `{}` has no rollout staged: a promotion into a channel with `rollout` stages one",
                    settings.name
                )));
            };
            let mut r = new_record(kind, &key, step.reason.clone());
            match kind {
                RecordKind::RolloutStart => {
                    if rollout.step.is_some() {
                        return Err(ReleaseError::Invalid(format!(
                            "the rollout of generation {} in `{}` already started: `mlbuild rollout advance {}`",
                            rollout.generation, settings.name, settings.name
                        )));
                    }
                    r.rollout = Some(mlbuild_release::record::RolloutState { step: Some(0), ..rollout });
                }
                RecordKind::RolloutAdvance => {
                    let Some(at) = rollout.step else {
                        return Err(ReleaseError::Invalid(format!(
                            "the rollout of generation {} in `{}` has not started: `mlbuild rollout start {}`",
                            rollout.generation, settings.name, settings.name
                        )));
                    };
                    let last = if rollout.strategy == "canary" { rollout.steps.len().saturating_sub(1) } else { 1 };
                    r.rollout = (at + 1 < last).then(|| mlbuild_release::record::RolloutState { step: Some(at + 1), ..rollout });
                }
                _ => {
                    let stable = state.generation(rollout.stable).expect("a verified rollout names a stable generation");
                    r.generation = Some(state.latest().map_or(1, |g| g.number + 1));
                    r.artifact = Some(stable.artifact.clone());
                    r.previous = state.latest().map(|g| g.artifact.clone());
                    r.metrics = stable.metrics.clone();
                }
            }
            Ok(r)
        })
        .map_err(release_failure)?;
    let chain = log.read().map_err(release_failure)?;
    if cli.json {
        super::print_json(&serde_json::json!({
            "channel": settings.name, "record": record.kind.as_str(), "seq": record.seq,
            "rollout": chain.state.rollout, "percent": chain.state.rollout_percent(),
            "serving": chain.state.serving().map(|g| g.number),
        }));
        return Ok(Code::Ok);
    }
    match (kind, &chain.state.rollout) {
        (RecordKind::RolloutAbort, _) => println!(
            "rollout aborted: generation {} of `{}` returns all traffic to {}",
            record.generation.unwrap_or(0),
            settings.name,
            record
                .artifact
                .as_ref()
                .map_or(String::new(), |a| a.short())
        ),
        (_, None) => println!(
            "rollout done: generation {} serves all traffic of `{}`",
            chain.state.latest().map_or(0, |g| g.number),
            settings.name
        ),
        (_, Some(r)) if r.strategy == "shadow" => println!(
            "shadow: generation {} of `{}` receives a mirrored copy of the traffic",
            r.generation, settings.name
        ),
        (_, Some(r)) => println!(
            "{}: generation {} of `{}` receives {}% of the traffic",
            r.strategy,
            r.generation,
            settings.name,
            chain.state.rollout_percent().unwrap_or(0)
        ),
    }
    Ok(Code::Ok)
}

fn status(cli: &Cli, ctx: &Context, a: &RolloutStatus) -> CmdResult {
    let channels = Channels::open(&ctx.ws, &ctx.store, &a.remote)?;
    let chain = channels.read(&a.channel)?;
    let s = &chain.state;
    if cli.json {
        super::print_json(&serde_json::json!({
            "channel": a.channel, "rollout": s.rollout, "percent": s.rollout_percent(),
            "serving": s.serving().map(|g| g.number), "latest": s.latest().map(|g| g.number),
        }));
        return Ok(Code::Ok);
    }
    match &s.rollout {
        None => println!(
            "no rollout in `{}`: generation {} serves all traffic",
            a.channel,
            s.serving().map_or("-".to_owned(), |g| g.number.to_string())
        ),
        Some(r) => {
            let stable = s.generation(r.stable);
            println!(
                "`{}`: {} rollout of generation {}",
                a.channel, r.strategy, r.generation
            );
            println!(
                "  stable:    generation {} ({})",
                r.stable,
                stable.map_or(String::new(), |g| g.artifact.short())
            );
            match r.step {
                None => println!(
                    "  step:      staged, no traffic yet (`mlbuild rollout start {}`)",
                    a.channel
                ),
                Some(_) if r.strategy == "shadow" => {
                    println!("  step:      mirrored traffic, serving none")
                }
                Some(_) if r.strategy == "blue-green" => {
                    println!("  step:      deployed beside the stable model, no traffic")
                }
                Some(i) => println!(
                    "  step:      {} of {}: {}% of the traffic",
                    i + 1,
                    r.steps.len(),
                    s.rollout_percent().unwrap_or(0)
                ),
            }
        }
    }
    Ok(Code::Ok)
}

pub fn run_rollback(cli: &Cli, args: &RollbackArgs) -> CmdResult {
    let ctx = Context::load(cli)?;
    let channels = Channels::open(&ctx.ws, &ctx.store, &args.remote)?;
    let settings = channels.settings(&args.channel)?;
    let key = actor_key(&ctx.ws, args.key.as_ref())?;
    let log = channels.log(&settings.name)?;
    let (record, _) = log
        .append(&key, |chain| {
            let state = &chain.state;
            let Some(latest) = state.latest() else {
                return Err(ReleaseError::Invalid(format!(
                    "channel `{}` holds no model to roll back",
                    settings.name
                )));
            };
            let target = match args.to {
                Some(n) => state
                    .generation(n)
                    .filter(|g| g.number < latest.number)
                    .ok_or_else(|| {
                        ReleaseError::Invalid(format!(
                            "`{}` has no generation {n} before its current generation {}",
                            settings.name, latest.number
                        ))
                    })?,
                None => state
                    .generations
                    .iter()
                    .rev()
                    .find(|g| g.artifact.sha256 != latest.artifact.sha256)
                    .ok_or_else(|| {
                        ReleaseError::Invalid(format!(
                            "`{}` never held another artifact to roll back to",
                            settings.name
                        ))
                    })?,
            };
            if target.artifact.sha256 == latest.artifact.sha256 {
                return Err(ReleaseError::Invalid(format!(
                    "generation {} holds the artifact `{}` serves already",
                    target.number, settings.name
                )));
            }
            let mut r = new_record(RecordKind::Rollback, &key, args.reason.clone());
            r.generation = Some(latest.number + 1);
            r.artifact = Some(target.artifact.clone());
            r.previous = Some(latest.artifact.clone());
            r.metrics = target.metrics.clone();
            Ok(r)
        })
        .map_err(release_failure)?;
    if cli.json {
        super::print_json(&serde_json::json!({
            "channel": settings.name, "generation": record.generation, "artifact": record.artifact,
        }));
    } else {
        println!(
            "rolled back `{}`: generation {} serves {} again",
            settings.name,
            record.generation.unwrap_or(0),
            record
                .artifact
                .as_ref()
                .map_or(String::new(), |a| a.short())
        );
    }
    Ok(Code::Ok)
}
