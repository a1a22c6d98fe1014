//! `mlbuild push TARGET|PATH oci://HOST/REPO[:TAG]`: push a signed `package` artifact to
//! an OCI registry.
//!
//! A target is built first, exactly as `mlbuild build` builds it (cached results are
//! reused), and its artifact pushed with the package action's key and the archive's
//! BLAKE3 as annotations; a path pushes an artifact directory or `.tar.zst` as it is. The
//! reference is checked before anything is built. The work is `mlbuild_oci::push`; this
//! file picks the artifact and renders. Exit codes: 0 pushed, 1 the build or the push
//! failed, 2 bad input (reference, path, an unsigned artifact). Main type: [`PushArgs`].

use std::path::PathBuf;

use clap::Args;
use mlbuild_oci::{spec, Artifact, ClientOptions, OciError, Reference, Registry};

use crate::cli::{BuildArgs, Cli, Command as CliCommand};
use crate::context::Context;
use crate::exit::{CmdResult, Code, Failure};

#[derive(Debug, Args)]
pub struct PushArgs {
    /// What to push: a `package` target (`//models:fraud`, `:fraud`), built first if
    /// needed, or an artifact path (a directory holding `model.sig`, or its `.tar.zst`).
    /// With `--channel`, leave it out.
    #[arg(value_name = "TARGET|PATH", required_unless_present = "channel")]
    pub artifact: Option<String>,
    /// Where to: `oci://HOST[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST]` (tag `latest` when
    /// neither tag nor digest is given). With `--channel`, the repository (default: the
    /// channel's `oci`).
    #[arg(value_name = "REFERENCE")]
    pub reference: Option<String>,
    /// Push the model a release channel serves (or its generation `--generation N`) as
    /// the tags `CHANNEL` and `CHANNEL-N`, the storage URIs `mlbuild channel render` writes.
    #[arg(long, value_name = "CHANNEL")]
    pub channel: Option<String>,
    /// With `--channel`: this generation instead of the one the channel serves.
    #[arg(long, value_name = "N", requires = "channel")]
    pub generation: Option<u64>,
    /// Speak plain HTTP to the registry (registries on `localhost`, `127.0.0.0/8` and
    /// `[::1]` always are).
    #[arg(long)]
    pub plain_http: bool,
    /// The signed provenance to attach (default: `NAME.intoto.jsonl` beside the artifact,
    /// or one directory up, where a build writes it).
    #[arg(long, value_name = "FILE")]
    pub provenance: Option<PathBuf>,
    /// Maximum number of actions running at once while building a target.
    #[arg(short, long)]
    pub jobs: Option<usize>,
    #[command(flatten)]
    pub remote: super::cache::RemoteArgs,
}

/// Maps a push or pull error to its exit code.
pub(crate) fn failure(e: OciError) -> Failure {
    if e.is_bad_input() {
        Failure::bad_input(e)
    } else {
        Failure {
            code: Code::BuildFailed,
            report: e.into(),
        }
    }
}

pub fn run(cli: &Cli, args: &PushArgs) -> CmdResult {
    if let Some(channel) = &args.channel {
        return push_channel(cli, args, channel);
    }
    let (Some(artifact_arg), Some(reference_arg)) = (&args.artifact, &args.reference) else {
        return Err(Failure::bad_input(miette::miette!(
            help = "`mlbuild push TARGET|PATH oci://HOST/REPO[:TAG]`, or `mlbuild push --channel CHANNEL`",
            "push needs what to push and where to"
        )));
    };
    let reference = Reference::parse(reference_arg).map_err(failure)?;
    let is_label = artifact_arg.starts_with("//") || artifact_arg.starts_with(':');
    let (mut artifact, shown) = if is_label {
        match target_artifact(cli, args, artifact_arg)? {
            Ok(found) => found,
            Err(code) => return Ok(code),
        }
    } else {
        let path = super::verify::resolve(cli, std::path::Path::new(artifact_arg));
        let artifact = Artifact::open(&path).map_err(failure)?;
        (artifact, format!("`{artifact_arg}`"))
    };
    if let Some(provenance) = &args.provenance {
        let path = super::verify::resolve(cli, provenance);
        if !path.is_file() {
            return Err(Failure::bad_input(miette::miette!(
                "provenance `{}` does not exist",
                provenance.display()
            )));
        }
        artifact.set_provenance(Some(path));
    }
    let registry = registry(&reference, args);
    let pushed = mlbuild_oci::push(&registry, &reference, &artifact).map_err(failure)?;
    if cli.json {
        super::print_json(&pushed);
        return Ok(Code::Ok);
    }
    say_pushed(&shown, &pushed);
    Ok(Code::Ok)
}

fn registry(reference: &Reference, args: &PushArgs) -> Registry {
    Registry::new(
        reference,
        &ClientOptions {
            plain_http: args.plain_http,
            ..ClientOptions::default()
        }
        .with_env_credentials(),
    )
}

fn say_pushed(shown: &str, pushed: &mlbuild_oci::Pushed) {
    let attached: Vec<&str> = pushed
        .referrers
        .iter()
        .map(|r| match r.artifact_type.as_str() {
            spec::SIGNATURE_ARTIFACT_TYPE => "signature",
            _ => "provenance",
        })
        .collect();
    println!("pushed {shown} to {}", pushed.reference);
    println!(
        "  {} blobs uploaded ({}), {} already in the registry",
        pushed.uploaded,
        bytesize::ByteSize::b(pushed.uploaded_bytes),
        pushed.skipped
    );
    println!(
        "  attached: {} ({})",
        attached.join(" and "),
        if pushed.referrers_api {
            "referrers API".to_string()
        } else {
            format!("referrers tag `{}`", spec::referrers_tag(&pushed.digest))
        }
    );
    if let Some(tag) = &pushed.tag {
        println!("  tagged `{tag}`");
    }
}

/// Pushes the artifact of a channel's generation (read from the channel's verified log;
/// its bytes from the store, or the remote cache) under the tags `CHANNEL` and
/// `CHANNEL-N`.
fn push_channel(cli: &Cli, args: &PushArgs, channel: &str) -> CmdResult {
    let ctx = Context::load(cli)?;
    let channels = super::release::Channels::open(&ctx.ws, &ctx.store, &args.remote)?;
    let settings = channels.settings(channel)?;
    let repository = match (&args.artifact, &args.reference) {
        (Some(_), Some(_)) => {
            return Err(Failure::bad_input(miette::miette!(
                help = "`mlbuild push --channel CHANNEL [oci://HOST/REPO]`",
                "with `--channel`, give only the repository to push to"
            )))
        }
        (Some(r), None) | (None, Some(r)) => r.clone(),
        (None, None) => settings.oci.clone().ok_or_else(|| {
            Failure::bad_input(miette::miette!(
                help = format!("set `oci = \"oci://HOST/REPO\"` in `[channel.{channel}]` or pass the repository"),
                "where to push channel `{channel}`?"
            ))
        })?,
    };
    let base = Reference::parse(&repository).map_err(failure)?;
    let chain = channels.read(channel)?;
    let generation = match args.generation {
        Some(n) => chain.state.generation(n),
        None => chain.state.serving(),
    }
    .ok_or_else(|| {
        Failure::bad_input(miette::miette!(
            "channel `{channel}` holds no {}",
            args.generation
                .map_or("model yet".to_owned(), |n| format!("generation {n}"))
        ))
    })?
    .clone();
    let digest: mlbuild_store::Digest = generation.artifact.blake3.parse().map_err(|_| {
        Failure::store(miette::miette!(
            "channel `{channel}` records a malformed BLAKE3"
        ))
    })?;
    if !ctx.store.has_blob(&digest) {
        let remote = super::cache::client(&ctx.ws, &args.remote)?.ok_or_else(|| {
            Failure::store(miette::miette!(
                "the artifact of generation {} of `{channel}` is not in the store, and no remote cache is configured",
                generation.number
            ))
        })?;
        remote.fetch_blob(&digest, &ctx.store).map_err(|e| {
            Failure::store(miette::miette!(
                "cannot fetch the artifact of generation {}: {e}",
                generation.number
            ))
        })?;
    }
    let unpacked =
        mlbuild_release::artifact::unpack(&ctx.store.blob_path(&digest), &ctx.store.tmp_dir())
            .map_err(|e| Failure::store(miette::miette!("{e}")))?;
    let (sha256, _, _) = mlbuild_release::artifact::digests(&ctx.store.blob_path(&digest))
        .map_err(|e| Failure::store(miette::miette!("cannot read the artifact: {e}")))?;
    if sha256 != generation.artifact.sha256 {
        return Err(Failure::store(miette::miette!(
            "the artifact of generation {} of `{channel}` does not have the recorded sha256",
            generation.number
        )));
    }
    let mut artifact = Artifact::open(unpacked.path()).map_err(failure)?;
    artifact.annotations.insert(
        spec::ACTION_KEY.to_string(),
        generation.artifact.action_key.clone(),
    );
    artifact
        .annotations
        .insert(spec::TARGET.to_string(), generation.artifact.label.clone());
    artifact
        .annotations
        .insert(spec::BLAKE3.to_string(), generation.artifact.blake3.clone());
    let mut pushed = Vec::new();
    for tag in [
        channel.to_owned(),
        mlbuild_release::render::generation_tag(channel, generation.number),
    ] {
        let reference = base.with_tag(&tag);
        let registry = registry(&reference, args);
        pushed.push(mlbuild_oci::push(&registry, &reference, &artifact).map_err(failure)?);
    }
    if cli.json {
        super::print_json(&serde_json::json!({
            "channel": channel, "generation": generation.number, "pushed": pushed,
        }));
        return Ok(Code::Ok);
    }
    for p in &pushed {
        say_pushed(
            &format!("generation {} of `{channel}`", generation.number),
            p,
        );
    }
    Ok(Code::Ok)
}

/// Builds `args.artifact` (a `package` target) as `mlbuild build` would and opens its
/// artifact with the action key and archive digest the build recorded. `Err(code)` when
/// the build did not succeed (it has said why).
fn target_artifact(
    cli: &Cli,
    args: &PushArgs,
    artifact_arg: &str,
) -> Result<Result<(Artifact, String), Code>, Failure> {
    // Refuse anything but a package target before building.
    let ctx = Context::load(cli)?;
    let label = ctx.resolve_one(artifact_arg)?;
    let target = ctx.ws.target(&label).ok_or_else(|| {
        Failure::bad_input(miette::miette!("no target `{label}` in the workspace"))
    })?;
    if target.kind != "package" {
        return Err(Failure::bad_input(miette::miette!(
            help = "push a `package` target: its output is the signed artifact",
            "`{label}` is a `{}` target, not a `package`",
            target.kind
        )));
    }
    drop(ctx);

    // The build's events go to stderr, so that with `--json` stdout carries only the push.
    let build_cli = Cli {
        directory: cli.directory.clone(),
        store: cli.store.clone(),
        json: false,
        set: cli.set.clone(),
        command: CliCommand::Clean,
    };
    let build_args = BuildArgs {
        targets: vec![label.to_string()],
        jobs: args.jobs,
        keep_going: false,
        remote: args.remote.clone(),
        junit: None,
        name: None,
    };
    let built = super::build::run(&build_cli, &build_args)?;
    if built != Code::Ok {
        eprintln!("error: the build did not succeed, so nothing was pushed");
        return Ok(Err(built));
    }

    let ctx = Context::load(cli)?;
    let records = ctx
        .store
        .load_workspace_state(&ctx.ws.root.to_string_lossy())?;
    let record = records.get(&label.to_string()).ok_or_else(|| {
        Failure::store(miette::miette!(
            "the build of `{label}` left no record in the store"
        ))
    })?;
    let out_dir = ctx.ws.root.join(mlbuild_exec::out_dir_rel(&label));
    let dir = out_dir.join(&label.name);
    let mut artifact = Artifact::open(&dir).map_err(failure)?;
    let provenance = ctx.ws.root.join(crate::provenance::path_of(&label));
    artifact.set_provenance(provenance.is_file().then_some(provenance));
    // What the store recorded is authoritative over what the provenance file says.
    artifact
        .annotations
        .insert(spec::ACTION_KEY.to_string(), record.key.to_hex());
    artifact
        .annotations
        .insert(spec::TARGET.to_string(), label.to_string());
    let archive = format!("{}.tar.zst", label.name);
    if let Some(output) = record.result.as_ref().and_then(|r| r.outputs.get(&archive)) {
        artifact
            .annotations
            .insert(spec::BLAKE3.to_string(), output.digest.to_hex());
    }
    Ok(Ok((artifact, label.to_string())))
}
