//! `mlbuild status`: which targets a build would run, and the first reason for each.

use mlbuild_graph::BuildGraph;

use crate::cli::{Cli, PatternArgs};
use crate::context::Context;
use crate::exit::{CmdResult, Code};

pub fn run(cli: &Cli, args: &PatternArgs) -> CmdResult {
    let ctx = Context::load(cli)?;
    let labels = ctx.resolve(&args.targets)?;
    let graph = BuildGraph::new(&ctx.ws, &labels)?;
    let states = mlbuild_exec::status(&ctx.ws, &ctx.store, &graph)?;
    let stale = states.iter().filter(|s| s.stale).count();
    if cli.json {
        super::print_json(&states);
    } else {
        for s in &states {
            match &s.reason {
                Some(reason) => println!("stale       {}: {reason}", s.label),
                None => println!("up to date  {}", s.label),
            }
        }
        eprintln!("{stale} of {} targets stale", states.len());
    }
    Ok(if stale == 0 {
        Code::Ok
    } else {
        Code::BuildFailed
    })
}
