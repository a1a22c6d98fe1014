//! `mlbuild fsck [--repair]`: check the index with SQLite's integrity check and re-hash
//! every blob. Corrupt blobs and the entries that reference them are removed, so the next
//! build re-creates them instead of trusting bad bytes; a damaged index is reported, and
//! with `--repair` moved aside for an empty one, saying what was lost.

use mlbuild_store::{FsckReport, IndexDamage, Store};

use crate::cli::{Cli, FsckArgs};
use crate::context::maintenance_store_root;
use crate::exit::{CmdResult, Code};

/// Problems of a damaged index listed before "and N more".
const SHOWN_PROBLEMS: usize = 5;

pub fn run(cli: &Cli, args: &FsckArgs) -> CmdResult {
    // Not `Context::load`: that opens the store, which a damaged index can prevent.
    let root = maintenance_store_root(cli)?;
    let report = Store::fsck_at(&root, args.repair)?;
    if cli.json {
        super::print_json(&serde_json::json!({
            "checked": report.checked,
            "corrupt": report.corrupt.iter().map(|d| d.to_hex()).collect::<Vec<_>>(),
            "removed_actions": report.removed_actions,
            "index": report.index,
            "reclaimed_scratch_dirs": report.reclaimed_scratch_dirs,
        }));
    } else {
        print_text(&report);
    }
    Ok(if report.found_damage() {
        Code::Store
    } else {
        Code::Ok
    })
}

fn print_text(report: &FsckReport) {
    match &report.index {
        None => println!("index: ok"),
        Some(damage) => print_index_damage(damage, report.checked),
    }
    if report.reclaimed_scratch_dirs > 0 {
        println!(
            "removed the scratch directories of {} builds that died",
            report.reclaimed_scratch_dirs
        );
    }
    for d in &report.corrupt {
        println!("corrupt blob {d} removed");
    }
    let index_used = report.index.as_ref().is_none_or(|d| d.moved_to.is_some());
    if index_used {
        println!(
            "checked {} blobs: {} corrupt, {} action entries removed",
            report.checked,
            report.corrupt.len(),
            report.removed_actions
        );
    } else {
        println!(
            "checked {} blobs: {} corrupt (cache entries not checked: the index is damaged)",
            report.checked,
            report.corrupt.len()
        );
    }
}

fn print_index_damage(damage: &IndexDamage, blobs: u64) {
    let verb = if damage.moved_to.is_some() {
        "was"
    } else {
        "is"
    };
    println!("index `{}` {verb} damaged:", damage.path.display());
    for problem in damage.problems.iter().take(SHOWN_PROBLEMS) {
        println!("  {problem}");
    }
    if damage.problems.len() > SHOWN_PROBLEMS {
        println!("  (and more)");
    }
    let held = &damage.held;
    let lost = [
        held.actions
            .map_or("the cached action results".into(), |n| {
                format!("{n} cached action results")
            }),
        held.targets
            .map_or("each workspace's latest keys".into(), |n| {
                format!("the latest keys of {n} targets")
            }),
        held.builds.map_or("the build history".into(), |n| {
            format!("{n} builds of history")
        }) + " (`stats`, `params`, `metrics`, named builds)",
        held.file_digests
            .map_or("the remembered file digests".into(), |n| {
                format!("{n} remembered file digests")
            }),
    ];
    let lost = format!("{}, and {}", lost[..3].join(", "), lost[3]);
    match &damage.moved_to {
        Some(moved) => {
            println!(
                "moved it to `{}` and started an empty index",
                moved.display()
            );
            println!("lost: {lost}");
            println!(
                "kept: all {blobs} blobs; the next build re-executes (or downloads from a remote cache) what it needs"
            );
        }
        None => {
            println!(
                "help: `mlbuild fsck --repair` moves it aside and starts an empty index; it keeps all {blobs} blobs and loses {lost}; the next build then re-executes (or downloads) what it needs"
            );
        }
    }
}
