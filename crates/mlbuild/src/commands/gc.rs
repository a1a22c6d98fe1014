//! `mlbuild gc`: shrink the store, never touching what any workspace's latest build uses,
//! nor a named build or one this workspace's baselines compare against (with its history).
//!
//! Named builds are roots in every workspace: their names are in the store. Baselines are
//! in `BUILD.toml` files, so only the workspace gc runs in is read for them; a baseline
//! naming a build by name is a named build anyway, one naming it by id (`build:42`) is
//! kept only from its own workspace.

use std::collections::BTreeSet;

use mlbuild_store::{GcPolicy, GcReport};
use mlbuild_workspace::Baseline;

use crate::cli::{Cli, GcArgs};
use crate::context::Context;
use crate::exit::{CmdResult, Code, Failure};
use crate::report::human_bytes;

pub fn run(cli: &Cli, args: &GcArgs) -> CmdResult {
    if args.max_size.is_none() && args.max_age.is_none() {
        return Err(Failure::bad_input(miette::miette!(
            help = "for example `mlbuild gc --max-size 20G` or `mlbuild gc --max-age 30d`",
            "`gc` needs a bound: `--max-size` and/or `--max-age`"
        )));
    }
    let ctx = Context::load(cli)?;
    let report = ctx.store.gc(&GcPolicy {
        max_size: args.max_size,
        max_age: args.max_age,
        keep_builds: baseline_builds(&ctx)?,
        keep_keys: channel_keys(&ctx),
        dry_run: args.dry_run,
    })?;
    let parse_dir = ctx.store.root().join(crate::context::PARSE_CACHE_DIR);
    let pruned = mlbuild_workspace::prune_parse_cache(&parse_dir, args.dry_run);
    let removed_parse_caches = pruned.map_err(|e| {
        Failure::store(miette::miette!(
            "cannot prune the parse cache `{}`: {e}",
            parse_dir.display()
        ))
    })?;
    if cli.json {
        super::print_json(&serde_json::json!({
            "removed_actions": report.removed_actions,
            "removed_blobs": report.removed_blobs,
            "freed_bytes": report.freed_bytes,
            "kept_blobs": report.kept_blobs,
            "kept_bytes": report.kept_bytes,
            "removed_invocations": report.removed_invocations,
            "removed_parse_caches": removed_parse_caches,
            "dry_run": report.dry_run,
            "kept_builds": report.kept_builds,
            "reclaimed_scratch_dirs": report.reclaimed_scratch_dirs,
        }));
    } else {
        let removed = if report.dry_run {
            "would remove"
        } else {
            "removed"
        };
        println!(
            "{removed} {} action entries and {} blobs ({}); kept {} blobs ({})",
            report.removed_actions,
            report.removed_blobs,
            human_bytes(report.freed_bytes),
            report.kept_blobs,
            human_bytes(report.kept_bytes)
        );
        if report.removed_invocations > 0 {
            println!(
                "{removed} {} builds from the history",
                report.removed_invocations
            );
        }
        if report.reclaimed_scratch_dirs > 0 {
            println!(
                "removed the scratch directories of {} builds that died",
                report.reclaimed_scratch_dirs
            );
        }
        if removed_parse_caches > 0 {
            println!("{removed} the parse caches of {removed_parse_caches} workspaces that no longer exist");
        }
        print_kept_builds(&ctx, &report);
        if report.dry_run {
            println!("dry run: nothing was removed");
        }
    }
    Ok(Code::Ok)
}

/// The action keys of every artifact a release channel holds or held: those in the
/// store's own channel logs (every workspace's), and this workspace's channels on its
/// remote cache when it has one. A line that cannot be read names nothing, and a remote
/// that cannot be reached is said once: gc goes on with what it could read.
fn channel_keys(ctx: &Context) -> Vec<mlbuild_store::Digest> {
    use mlbuild_store::logs::AppendLog;
    let mut lines: Vec<String> = Vec::new();
    let local = ctx.store.logs();
    for name in local.list().unwrap_or_default() {
        lines.extend(local.read(&name).unwrap_or_default());
    }
    if !ctx.ws.config.channels.is_empty() {
        if let Ok(Some(remote)) = super::cache::client(&ctx.ws, &Default::default()) {
            let ns = mlbuild_release::namespace(ctx.ws.config.name.as_deref(), &ctx.ws.root);
            for channel in ctx.ws.config.channels.keys() {
                let Ok(name) = mlbuild_store::logs::LogName::new(&ns, channel) else {
                    continue;
                };
                match remote.read(&name) {
                    Ok(remote_lines) => lines.extend(remote_lines),
                    Err(e) => eprintln!("warning: channel `{channel}` not read for gc roots: {e}"),
                }
            }
        }
    }
    lines
        .iter()
        .filter_map(|l| mlbuild_release::record::open(l).ok())
        .filter_map(|r| r.artifact?.action_key.parse().ok())
        .collect()
}

/// The builds this workspace's baselines compare against (`baseline = "build:NAME"` or
/// `"build:ID"`), by invocation id; those not in the history are left to the gates to
/// report.
fn baseline_builds(ctx: &Context) -> Result<Vec<i64>, Failure> {
    let names: BTreeSet<&str> = ctx
        .ws
        .targets()
        .filter_map(|t| match &t.baseline {
            Some(Baseline::Build(name)) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let ws = ctx.ws.root.to_string_lossy();
    let mut ids = Vec::new();
    for name in names {
        if let Some(record) = ctx.store.find_invocation(&ws, name)? {
            ids.push(record.id);
        }
    }
    Ok(ids)
}

/// The builds kept whatever their age: this workspace's first, then other workspaces'.
fn print_kept_builds(ctx: &Context, report: &GcReport) {
    if report.kept_builds.is_empty() {
        return;
    }
    let here = ctx.ws.root.to_string_lossy();
    println!(
        "kept {} named or baseline builds, with their history and results:",
        report.kept_builds.len()
    );
    let (ours, theirs): (Vec<_>, Vec<_>) =
        report.kept_builds.iter().partition(|b| b.workspace == here);
    for build in ours.iter().chain(&theirs) {
        let name = build
            .name
            .as_deref()
            .map_or_else(|| "(baseline)".to_owned(), |n| format!("`{n}`"));
        let place = if build.workspace == here {
            String::new()
        } else {
            format!(" in {}", build.workspace)
        };
        println!(
            "  {name} (build #{}, {}){place}",
            build.invocation_id,
            super::utc(build.started_at)
        );
    }
}
