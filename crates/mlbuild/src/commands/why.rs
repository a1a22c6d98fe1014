//! `mlbuild why`: the field-by-field difference between a target's last key and now.
//!
//! The verdict (stale or up to date) and its first reason are exactly `mlbuild status`'s;
//! for a target stale because of a dependency, `why` follows the stale dependencies down
//! to the target whose own inputs changed.

use mlbuild_graph::BuildGraph;

use crate::cli::{Cli, LabelArg};
use crate::context::Context;
use crate::exit::{CmdResult, Code};

pub fn run(cli: &Cli, args: &LabelArg) -> CmdResult {
    let ctx = Context::load(cli)?;
    let label = ctx.resolve_one(&args.label)?;
    let graph = BuildGraph::new(&ctx.ws, std::slice::from_ref(&label))?;
    let ex = mlbuild_exec::explain(&ctx.ws, &ctx.store, &graph, &label)?;
    if cli.json {
        super::print_json(&ex);
        return Ok(Code::Ok);
    }
    // The verdict and its first reason are `status`'s; what follows explains them.
    let Some(reason) = &ex.reason else {
        println!("{label} is up to date");
        return Ok(Code::Ok);
    };
    if ex.stale_chain.is_empty() && !ex.changes.is_empty() {
        println!("{label} will rebuild:");
        for change in &ex.changes {
            println!("  {change}");
        }
        return Ok(Code::Ok);
    }
    println!("{label} is stale: {reason}");
    // Down to the target whose own inputs changed.
    for link in &ex.stale_chain {
        if let Some(reason) = &link.reason {
            println!("  {}: {reason}", link.label);
        }
    }
    if ex.stale_chain.is_empty() {
        return Ok(Code::Ok);
    }
    if !ex.changes.is_empty() {
        println!("  and its own inputs changed:");
        for change in &ex.changes {
            println!("    {change}");
        }
    }
    if let Some(err) = &ex.error {
        println!("  and it cannot be planned: {err}");
    }
    let first = &ex.stale_chain[0].label;
    let others: Vec<String> = ex
        .stale_dependencies
        .iter()
        .filter(|d| *d != first)
        .map(|d| format!("`{d}`"))
        .collect();
    if !others.is_empty() {
        println!("  other stale dependencies: {}", others.join(", "));
    }
    if ex.changes.is_empty() && ex.error.is_none() {
        println!(
            "  note: its own inputs are unchanged; if the stale dependencies rebuild to the same outputs, it stays cached"
        );
    }
    Ok(Code::Ok)
}
