//! `mlbuild query deps|rdeps|targets`: read-only questions about the target graph.

use std::collections::BTreeSet;

use mlbuild_graph::BuildGraph;
use mlbuild_workspace::Label;

use crate::cli::{Cli, QueryArgs, QueryKind};
use crate::context::{load_workspace, start_dir};
use crate::exit::{CmdResult, Code};

pub fn run(cli: &Cli, args: &QueryArgs) -> CmdResult {
    let ws = load_workspace(cli)?;
    let current = ws.package_of_dir(&start_dir(cli)?);
    let named = ws.resolve(std::slice::from_ref(&args.expr), &current)?;
    let result: BTreeSet<Label> = match args.kind {
        QueryKind::Targets => named.into_iter().collect(),
        QueryKind::Deps => BuildGraph::new(&ws, &named)?
            .topo_order()
            .cloned()
            .collect(),
        QueryKind::Rdeps => {
            // Reverse reachability over the whole workspace.
            let all: Vec<Label> = ws.targets().map(|t| t.label.clone()).collect();
            let graph = BuildGraph::new(&ws, &all)?;
            let mut found: BTreeSet<Label> = named.iter().cloned().collect();
            let mut stack = named;
            while let Some(label) = stack.pop() {
                for dependent in graph.dependents(&label) {
                    if found.insert(dependent.clone()) {
                        stack.push(dependent.clone());
                    }
                }
            }
            found
        }
    };
    if cli.json {
        let labels: Vec<String> = result.iter().map(ToString::to_string).collect();
        super::print_json(&labels);
    } else {
        for label in &result {
            println!("{label}");
        }
    }
    Ok(Code::Ok)
}
