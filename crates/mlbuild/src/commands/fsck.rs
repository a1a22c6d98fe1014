//! `mlbuild fsck`: re-hash every blob; corrupt ones and the entries that reference them are
//! removed, so the next build re-creates them instead of trusting bad bytes.

use crate::cli::Cli;
use crate::context::Context;
use crate::exit::{CmdResult, Code};

pub fn run(cli: &Cli) -> CmdResult {
    let ctx = Context::load(cli)?;
    let report = ctx.store.fsck()?;
    if cli.json {
        super::print_json(&serde_json::json!({
            "checked": report.checked,
            "corrupt": report.corrupt.iter().map(|d| d.to_hex()).collect::<Vec<_>>(),
            "removed_actions": report.removed_actions,
            "reclaimed_scratch_dirs": report.reclaimed_scratch_dirs,
        }));
    } else {
        if report.reclaimed_scratch_dirs > 0 {
            println!(
                "removed the scratch directories of {} builds that died",
                report.reclaimed_scratch_dirs
            );
        }
        for d in &report.corrupt {
            println!("corrupt blob {d} removed");
        }
        println!(
            "checked {} blobs: {} corrupt, {} action entries removed",
            report.checked,
            report.corrupt.len(),
            report.removed_actions
        );
    }
    Ok(if report.corrupt.is_empty() {
        Code::Ok
    } else {
        Code::Store
    })
}
