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
    let mut nodes: Vec<String> = graph.topo_order().map(ToString::to_string).collect();
    nodes.sort();
    let kind = |l: &str| {
        ws.targets()
            .find(|t| t.label.to_string() == l)
            .map_or_else(String::new, |t| t.kind.clone())
    };
    if cli.json {
        super::print_json(&serde_json::json!({
            "nodes": nodes
                .iter()
                .map(|n| serde_json::json!({ "label": n, "kind": kind(n) }))
                .collect::<Vec<_>>(),
            "edges": graph
                .edges()
                .into_iter()
                .map(|(dependent, dep)| {
                    serde_json::json!({ "from": dep.to_string(), "to": dependent.to_string() })
                })
                .collect::<Vec<_>>(),
        }));
        return Ok(Code::Ok);
    }
    match args.format.unwrap_or(GraphFormat::Dot) {
        GraphFormat::Dot => {
            println!("digraph mlbuild {{");
            println!("  rankdir=LR;");
            for n in &nodes {
                println!("  \"{n}\" [label=\"{n}\\n({})\"];", kind(n));
            }
            for (dependent, dep) in graph.edges() {
                println!("  \"{dep}\" -> \"{dependent}\";");
            }
            println!("}}");
        }
        GraphFormat::Mermaid => {
            println!("graph LR");
            let id = |l: &str| nodes.iter().position(|n| n == l).expect("node exists");
            for n in &nodes {
                println!("  n{}[\"{n} ({})\"]", id(n), kind(n));
            }
            for (dependent, dep) in graph.edges() {
                println!(
                    "  n{} --> n{}",
                    id(&dep.to_string()),
                    id(&dependent.to_string())
                );
            }
        }
    }
    Ok(Code::Ok)
}
