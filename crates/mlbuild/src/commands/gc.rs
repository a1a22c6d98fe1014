//! `mlbuild gc`: shrink the store, never touching what any workspace's latest build uses.

use mlbuild_store::GcPolicy;

use crate::cli::{Cli, GcArgs};
use crate::context::Context;
use crate::exit::{CmdResult, Code, Failure};

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
    })?;
    let parse_dir = ctx.store.root().join(crate::context::PARSE_CACHE_DIR);
    let removed_parse_caches = mlbuild_workspace::prune_parse_cache(&parse_dir).map_err(|e| {
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
            "reclaimed_scratch_dirs": report.reclaimed_scratch_dirs,
        }));
    } else {
        println!(
            "removed {} action entries and {} blobs ({} bytes); kept {} blobs ({} bytes)",
            report.removed_actions,
            report.removed_blobs,
            report.freed_bytes,
            report.kept_blobs,
            report.kept_bytes
        );
        if report.reclaimed_scratch_dirs > 0 {
            println!(
                "removed the scratch directories of {} builds that died",
                report.reclaimed_scratch_dirs
            );
        }
        if removed_parse_caches > 0 {
            println!("removed the parse caches of {removed_parse_caches} workspaces that no longer exist");
        }
    }
    Ok(Code::Ok)
}
