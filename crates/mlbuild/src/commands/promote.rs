//! `mlbuild promote TARGET --to CHANNEL` and `mlbuild approve DIGEST --channel CHANNEL`.
//!
//! A promotion builds the package target (or reuses its cached build), establishes the
//! facts about its artifact (digests, signature, provenance, metrics), checks every rule
//! of the channel against them and the channel's verified history, and only then appends
//! a signed generation record. A refusal names every failed rule and appends nothing.
//! An approval is a signed record of its own in the channel it approves for.
//! Main types: [`PromoteArgs`], [`ApproveArgs`].

use std::path::PathBuf;

use clap::Args;
use mlbuild_release::rules::{check_promotion, Candidate};
use mlbuild_release::{artifact, new_record, ArtifactRef, RecordKind, ReleaseError};
use serde::Serialize;

use super::release::{actor_key, load_keys, refusal_lines, release_failure, signer_keys, Channels};
use crate::cli::{BuildArgs, Cli};
use crate::commands::cache::RemoteArgs;
use crate::context::Context;
use crate::exit::{CmdResult, Code, Failure};

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The package target whose artifact is promoted (built first, or reused from the
    /// cache).
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// The channel (`[channel.NAME]` in MLBUILD.toml).
    #[arg(long, value_name = "CHANNEL")]
    pub to: String,
    /// Why, recorded in the generation record.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// The promoter's private key (default: the signing key, `MLBUILD_SIGNING_KEY` or
    /// `[signing] key`).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The artifact: its digest, `sha256:HEX` or `blake3:HEX` (64 hex digits, as
    /// `mlbuild channel show` prints it), or a channel, `CHANNEL` (the model it serves)
    /// or `CHANNEL@N` (its generation N).
    #[arg(value_name = "ARTIFACT")]
    pub digest: String,
    /// The channel the approval is for.
    #[arg(long, value_name = "CHANNEL")]
    pub channel: String,
    /// The approver's private key; its public key must be in the channel's `approvers`.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Why, recorded in the approval.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// The `--json` result of a promotion.
#[derive(Serialize)]
struct Promotion<'a> {
    channel: &'a str,
    promoted: bool,
    generation: Option<u64>,
    artifact: &'a ArtifactRef,
    rules: &'a [mlbuild_release::RuleOutcome],
    record: Option<String>,
}

pub fn run_promote(cli: &Cli, args: &PromoteArgs) -> CmdResult {
    // The channel and key are checked before anything is built.
    let ws = crate::context::load_workspace(cli)?;
    let settings = ws
        .config
        .channels
        .get(&args.to)
        .cloned()
        .ok_or_else(|| super::release::unknown_channel(&ws, &args.to))?;
    let key = actor_key(&ws, args.key.as_ref())?;
    drop(ws);
    let build = BuildArgs {
        targets: vec![args.target.clone()],
        jobs: None,
        keep_going: false,
        remote: args.remote.clone(),
        junit: None,
        name: None,
    };
    let code = super::build::run_quiet(cli, &build)?;
    if code != Code::Ok {
        return Err(Failure {
            code,
            report: miette::miette!("`{}` did not build, so nothing was promoted", args.target),
        });
    }
    let ctx = Context::load(cli)?;
    let label = ctx.resolve_one(&args.target)?;
    let target = ctx
        .ws
        .target(&label)
        .ok_or_else(|| Failure::bad_input(miette::miette!("unknown target `{label}`")))?;
    if target.kind != "package" {
        return Err(Failure::bad_input(miette::miette!(
            help = "channels hold signed artifacts: promote a target with `kind = \"package\"`",
            "`{label}` is a `{}` target, not a package",
            target.kind
        )));
    }
    let records = ctx
        .store
        .load_workspace_state(&ctx.ws.root.to_string_lossy())?;
    let record = records
        .get(&label.to_string())
        .ok_or_else(|| Failure::store(miette::miette!("the build left no record of `{label}`")))?;
    let result = record.result.as_ref().ok_or_else(|| {
        Failure::store(miette::miette!("the store holds no result for `{label}`"))
    })?;
    let archive_name = format!("{}.tar.zst", label.name);
    let out = result
        .outputs
        .get(&archive_name)
        .ok_or_else(|| Failure::store(miette::miette!("`{label}` produced no `{archive_name}`")))?;
    let blob = ctx.store.blob_path(&out.digest);
    let (sha256, blake3, size) = artifact::digests(&blob).map_err(|e| {
        Failure::store(miette::miette!(
            "cannot read the artifact of `{label}`: {e}"
        ))
    })?;

    let signers = signer_keys(&ctx.ws, &settings)?;
    let unpacked = artifact::unpack(&blob, &ctx.store.tmp_dir())
        .map_err(|e| Failure::store(miette::miette!("{e}")))?;
    let signer = artifact::check_signature(unpacked.path(), &signers);
    let signature = signer.as_ref().map(|k| k.key_id()).map_err(Clone::clone);
    let provenance_path = ctx.ws.root.join(crate::provenance::path_of(&label));
    let provenance = artifact::check_provenance(
        &provenance_path,
        &signers,
        &archive_name,
        &sha256,
        unpacked.path(),
    );
    let metrics = artifact::read_metrics(unpacked.path(), &settings.metrics);
    let candidate = Candidate {
        artifact: ArtifactRef {
            label: label.to_string(),
            sha256,
            blake3,
            size,
            action_key: record.key.to_hex(),
            signer: signature.as_ref().ok().cloned(),
            signer_key: signer.as_ref().ok().map(|k| k.to_pem()),
            provenance_sha256: provenance.as_ref().ok().cloned(),
        },
        signature,
        provenance,
        metrics,
    };
    let approver_ids: Vec<String> = load_keys(&settings.approvers, "approvers", &settings.name)?
        .iter()
        .map(|k| k.key_id())
        .collect();
    let promoter_ids: Vec<String> = load_keys(&settings.promoters, "promoters", &settings.name)?
        .iter()
        .map(|k| k.key_id())
        .collect();
    let actor = key.public_key().key_id();

    // A channel on the remote cache is read by other machines: the artifact it names
    // must be there too, whoever built it (a cached build uploads nothing).
    if let Some(client) = super::cache::client(&ctx.ws, &args.remote)? {
        use mlbuild_store::RemoteCache;
        client.upload(&record.key, result, &ctx.store).map_err(|e| {
            Failure::store(miette::miette!(
                help = "the channel's log and artifacts are kept on the remote cache: promoting needs a write token (`MLBUILD_REMOTE_TOKEN` or `--remote-token-file`)",
                "cannot upload the artifact of `{label}` to the remote cache: {e}"
            ))
        })?;
    }
    let channels = Channels::open(&ctx.ws, &ctx.store, &args.remote)?;
    let from_log = settings
        .from
        .as_deref()
        .map(|f| channels.log(f))
        .transpose()?;
    let log = channels.log(&settings.name)?;
    let mut outcomes = Vec::new();
    let appended = log.append(&key, |chain| {
        let from_state = match &from_log {
            Some(l) => Some(l.read()?.state),
            None => None,
        };
        let verdict = check_promotion(
            &settings,
            &chain.state,
            from_state.as_ref(),
            &candidate,
            &approver_ids,
            &promoter_ids,
            &actor,
        );
        outcomes = verdict.outcomes.clone();
        if !verdict.passed() {
            return Err(ReleaseError::Refused(verdict.outcomes));
        }
        let mut r = new_record(RecordKind::Promote, &key, args.reason.clone());
        let next = chain.state.latest().map_or(1, |g| g.number + 1);
        r.generation = Some(next);
        r.artifact = Some(candidate.artifact.clone());
        r.previous = chain.state.latest().map(|g| g.artifact.clone());
        r.metrics = candidate.metrics.clone().unwrap_or_default();
        r.gates = verdict.gates;
        r.approvals = verdict.approvals;
        r.rollout = match (&settings.rollout, chain.state.latest()) {
            (Some(strategy), Some(stable)) => Some(mlbuild_release::record::RolloutState {
                strategy: strategy.name().to_owned(),
                steps: match strategy {
                    mlbuild_workspace::RolloutStrategy::Canary { steps } => steps.clone(),
                    _ => Vec::new(),
                },
                step: None,
                generation: next,
                stable: stable.number,
            }),
            _ => None,
        };
        Ok(r)
    });
    match appended {
        Ok((record, head)) => {
            let generation = record.generation.unwrap_or(0);
            if cli.json {
                super::print_json(&Promotion {
                    channel: &settings.name,
                    promoted: true,
                    generation: Some(generation),
                    artifact: &candidate.artifact,
                    rules: &outcomes,
                    record: Some(head.to_hex()),
                });
            } else {
                for o in &outcomes {
                    println!("  ok  {}: {}", o.rule, o.detail);
                }
                println!(
                    "promoted {label} ({}) to `{}` as generation {generation}",
                    candidate.artifact.short(),
                    settings.name
                );
                if record.rollout.is_some() {
                    println!(
                        "its {} rollout is staged: `mlbuild rollout start {}` sends it traffic",
                        settings.rollout.as_ref().map_or("", |s| s.name()),
                        settings.name
                    );
                }
            }
            Ok(Code::Ok)
        }
        Err(ReleaseError::Refused(outcomes)) => {
            if cli.json {
                super::print_json(&Promotion {
                    channel: &settings.name,
                    promoted: false,
                    generation: None,
                    artifact: &candidate.artifact,
                    rules: &outcomes,
                    record: None,
                });
                return Ok(Code::BuildFailed);
            }
            Err(Failure {
                code: Code::BuildFailed,
                report: miette::miette!(
                    "promotion of {label} ({}) to `{}` refused; nothing was recorded:\n{}",
                    candidate.artifact.short(),
                    settings.name,
                    refusal_lines(&outcomes)
                ),
            })
        }
        Err(e) => Err(release_failure(e)),
    }
}

pub fn run_approve(cli: &Cli, args: &ApproveArgs) -> CmdResult {
    let ctx = Context::load(cli)?;
    let channels = Channels::open(&ctx.ws, &ctx.store, &args.remote)?;
    let settings = channels.settings(&args.channel)?;
    let subject = match normalize_digest(&args.digest) {
        Ok(digest) => digest,
        Err(not_a_digest) => channel_artifact(&channels, &args.digest).ok_or(not_a_digest)??,
    };
    let key = mlbuild_sign::PrivateKey::load(&args.key).map_err(|e| {
        Failure::bad_input(miette::miette!(
            "cannot load the approver's key `{}`: {e}",
            args.key.display()
        ))
    })?;
    let key_id = key.public_key().key_id();
    let approvers = load_keys(&settings.approvers, "approvers", &settings.name)?;
    if !approvers.iter().any(|k| k.key_id() == key_id) {
        return Err(Failure::bad_input(miette::miette!(
            help = format!(
                "the channel's approvers are listed in `[channel.{}] approvers` of MLBUILD.toml",
                settings.name
            ),
            "key {} of `{}` is not among the approvers of channel `{}`; nothing was recorded",
            mlbuild_release::record::short_id(&key_id),
            args.key.display(),
            settings.name
        )));
    }
    let log = channels.log(&settings.name)?;
    let (_, head) = log
        .append(&key, |chain| {
            if chain
                .state
                .approvals
                .iter()
                .any(|(s, k, _)| s == &subject && k == &key_id)
            {
                return Err(ReleaseError::Invalid(format!(
                    "key {} already approved `{subject}` for `{}`",
                    mlbuild_release::record::short_id(&key_id),
                    settings.name
                )));
            }
            let mut r = new_record(RecordKind::Approve, &key, args.reason.clone());
            r.subject = Some(subject.clone());
            Ok(r)
        })
        .map_err(release_failure)?;
    if cli.json {
        super::print_json(&serde_json::json!({
            "channel": settings.name, "subject": subject, "approver": key_id, "record": head.to_hex(),
        }));
    } else {
        println!(
            "approved {subject} for `{}` with key {}",
            settings.name,
            mlbuild_release::record::short_id(&key_id)
        );
    }
    Ok(Code::Ok)
}

/// The `sha256:HEX` of the artifact `reference` (`CHANNEL` or `CHANNEL@N`) names, or
/// `None` when it names no declared channel.
fn channel_artifact(channels: &Channels<'_>, reference: &str) -> Option<Result<String, Failure>> {
    let (name, generation) = match reference.split_once('@') {
        Some((name, n)) => (name, Some(n)),
        None => (reference, None),
    };
    channels.ws.config.channels.get(name)?;
    Some((|| {
        let chain = channels.read(name)?;
        let found = match generation {
            None => chain.state.serving(),
            Some(n) => {
                let n: u64 = n.parse().map_err(|_| {
                    Failure::bad_input(miette::miette!(
                        "`{reference}`: `{n}` is not a generation number"
                    ))
                })?;
                chain.state.generation(n)
            }
        };
        found
            .map(|g| format!("sha256:{}", g.artifact.sha256))
            .ok_or_else(|| {
                Failure::bad_input(miette::miette!(
                    "channel `{name}` holds no {}",
                    generation.map_or("model yet".to_owned(), |n| format!("generation {n}"))
                ))
            })
    })())
}

/// `sha256:HEX` or `blake3:HEX` (64 hex digits), lowercased.
fn normalize_digest(text: &str) -> Result<String, Failure> {
    let t = text.trim().to_ascii_lowercase();
    let ok = |hex: &str| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    match t.split_once(':') {
        Some(("sha256" | "blake3", hex)) if ok(hex) => Ok(t),
        _ => Err(Failure::bad_input(miette::miette!(
            help = "give the artifact's full digest as `mlbuild channel show` prints it (`sha256:` and 64 hex digits, or `blake3:...`), or a channel (`staging`, `staging@3`)",
            "`{text}` is neither an artifact digest nor a channel"
        ))),
    }
}
