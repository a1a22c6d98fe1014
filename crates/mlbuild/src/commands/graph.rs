//! `mlbuild graph`: the target graph as Graphviz dot, Mermaid or JSON, edges from
//! dependency to dependent (the direction data flows).

use mlbuild_graph::BuildGraph;

use crate::cli::{Cli, GraphArgs, GraphFormat};
use crate::context::{load_workspace, start_dir};
use crate::exit::{CmdResult, Code, Failure};

pub fn run(cli: &Cli, args: &GraphArgs) -> CmdResult {
    if cli.json && args.format.is_some() {
        return Err(Failure::bad_input(miette::miette!(
            "`--format` and `--json` cannot be used together"
        )));
    }
    let ws = load_workspace(cli)?;
    let current = ws.package_of_dir(&start_dir(cli)?);
    let all = ["//...".to_string()];
    let patterns = if args.targets.is_empty() {
        &all[..]
    } else {
        &args.targets[..]
    };
    let labels = ws.resolve(patterns, &current)?;
    let graph = BuildGraph::new(&ws, &labels)?;
    // Each node's label text and kind, found once: linear in the graph (a lookup per
    // node and per edge used to scan every target, 54 s at 10,000 targets).
    let mut nodes: Vec<(String, &str)> = graph
        .topo_order()
        .map(|l| {
            let kind = ws.target(l).map_or("", |t| t.kind.as_str());
            (l.to_string(), kind)
        })
        .collect();
    nodes.sort_unstable();
    let ids: std::collections::HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, (label, _))| (label.as_str(), i))
        .collect();
    let edges: Vec<(String, String)> = graph
        .edges()
        .into_iter()
        .map(|(dependent, dep)| (dep.to_string(), dependent.to_string()))
        .collect();
    if cli.json {
        super::print_json(&serde_json::json!({
            "nodes": nodes
                .iter()
                .map(|(label, kind)| serde_json::json!({ "label": label, "kind": kind }))
                .collect::<Vec<_>>(),
            "edges": edges
                .iter()
                .map(|(from, to)| serde_json::json!({ "from": from, "to": to }))
                .collect::<Vec<_>>(),
        }));
        return Ok(Code::Ok);
    }
    match args.format.unwrap_or(GraphFormat::Dot) {
        GraphFormat::Dot => {
            println!("digraph mlbuild {{");
            println!("  rankdir=LR;");
            for (n, kind) in &nodes {
                println!("  \"{n}\" [label=\"{n}\\n({kind})\"];");
            }
            for (from, to) in &edges {
                println!("  \"{from}\" -> \"{to}\";");
            }
            println!("}}");
        }
        GraphFormat::Mermaid => {
            println!("graph LR");
            for (i, (n, kind)) in nodes.iter().enumerate() {
                println!("  n{i}[\"{n} ({kind})\"]");
            }
            for (from, to) in &edges {
                println!("  n{} --> n{}", ids[from.as_str()], ids[to.as_str()]);
            }
        }
    }
    Ok(Code::Ok)
}
