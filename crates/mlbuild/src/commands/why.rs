//! `mlbuild why`: the field-by-field difference between a target's last key and now.

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
    if let Some(err) = &ex.error {
        println!("{label} cannot be planned: {err}");
    } else if ex.last_key.is_none() {
        println!("{label} has never been built in this workspace");
    } else if ex.changes.is_empty() {
        println!("{label} is unchanged since its last build");
    } else {
        println!("{label} will rebuild:");
        for change in &ex.changes {
            println!("  {change}");
        }
    }
    for dep in &ex.stale_dependencies {
        println!("  note: dependency `{dep}` is stale; its new outputs may change this target's key again");
    }
    Ok(Code::Ok)
}
