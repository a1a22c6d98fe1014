//! Closure, cycle detection and execution order of the requested targets.
//!
//! Main type: [`BuildGraph`]. A cycle is reported in full (`//a:x -> //b:y -> //a:x`)
//! because the fix is always to break one specific edge, and the user needs to see all of
//! them to choose which.

use std::collections::{BTreeMap, BTreeSet};

use mlbuild_workspace::{Label, Workspace};
use petgraph::graph::{DiGraph, NodeIndex};

/// Errors in the shape of the graph.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum GraphError {
    #[error("dependency cycle: {}", render_cycle(.cycle))]
    #[diagnostic(help(
        "remove one of these `deps` edges; a target cannot depend on its own outputs"
    ))]
    Cycle { cycle: Vec<Label> },
    #[error("unknown target `{label}`")]
    Unknown { label: Label },
}

fn render_cycle(cycle: &[Label]) -> String {
    let mut parts: Vec<String> = cycle.iter().map(|l| format!("`{l}`")).collect();
    if let Some(first) = cycle.first() {
        parts.push(format!("`{first}`"));
    }
    parts.join(" -> ")
}

/// The requested targets and everything they depend on, in a DAG.
pub struct BuildGraph {
    graph: DiGraph<Label, ()>,
    index: BTreeMap<Label, NodeIndex>,
    order: Vec<NodeIndex>,
    roots: Vec<Label>,
}

impl BuildGraph {
    /// Builds the closure of `roots`. Edges point from a dependency to its dependent, so a
    /// topological order is an execution order.
    pub fn new(ws: &Workspace, roots: &[Label]) -> Result<Self, GraphError> {
        let mut graph = DiGraph::new();
        let mut index = BTreeMap::new();
        let mut stack: Vec<Label> = roots.to_vec();
        while let Some(label) = stack.pop() {
            if index.contains_key(&label) {
                continue;
            }
            let target = ws.target(&label).ok_or_else(|| GraphError::Unknown {
                label: label.clone(),
            })?;
            index.insert(label.clone(), graph.add_node(label.clone()));
            stack.extend(target.deps.iter().cloned());
        }
        for (label, &node) in &index {
            let target = ws.target(label).expect("present: collected above");
            for dep in &target.deps {
                graph.add_edge(index[dep], node, ());
            }
        }
        let order = match petgraph::algo::toposort(&graph, None) {
            Ok(order) => order,
            Err(_) => {
                return Err(GraphError::Cycle {
                    cycle: find_cycle(&graph),
                })
            }
        };
        let mut roots = roots.to_vec();
        roots.sort();
        roots.dedup();
        Ok(BuildGraph {
            graph,
            index,
            order,
            roots,
        })
    }

    /// Labels in an order where every target comes after all of its dependencies.
    pub fn topo_order(&self) -> impl Iterator<Item = &Label> + '_ {
        self.order.iter().map(|&n| &self.graph[n])
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn roots(&self) -> &[Label] {
        &self.roots
    }

    pub fn contains(&self, label: &Label) -> bool {
        self.index.contains_key(label)
    }

    /// Direct dependents of `label` within this graph, sorted.
    pub fn dependents(&self, label: &Label) -> Vec<&Label> {
        let mut out: Vec<&Label> = self
            .graph
            .neighbors_directed(self.index[label], petgraph::Direction::Outgoing)
            .map(|n| &self.graph[n])
            .collect();
        out.sort();
        out
    }

    /// Direct dependencies of `label` within this graph, sorted.
    pub fn dependencies(&self, label: &Label) -> Vec<&Label> {
        let mut out: Vec<&Label> = self
            .graph
            .neighbors_directed(self.index[label], petgraph::Direction::Incoming)
            .map(|n| &self.graph[n])
            .collect();
        out.sort();
        out
    }

    /// Every edge as (dependent, dependency), sorted; for `mlbuild graph`.
    pub fn edges(&self) -> Vec<(&Label, &Label)> {
        let mut out: Vec<(&Label, &Label)> = self
            .graph
            .edge_indices()
            .map(|e| {
                let (from, to) = self.graph.edge_endpoints(e).expect("edge exists");
                (&self.graph[to], &self.graph[from])
            })
            .collect();
        out.sort();
        out
    }
}

/// Finds one cycle, as the sequence of labels along `deps` edges, starting from its
/// smallest label so the message is stable between runs.
fn find_cycle(graph: &DiGraph<Label, ()>) -> Vec<Label> {
    for scc in petgraph::algo::tarjan_scc(graph) {
        let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
        let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        let start = *scc
            .iter()
            .min_by_key(|&&n| &graph[n])
            .expect("scc is not empty");
        // Walk dependency edges (incoming: dep -> dependent is the stored direction) inside
        // the component until we come back to the start.
        let mut path = vec![start];
        let mut seen = BTreeSet::from([start]);
        let mut current = start;
        loop {
            let mut deps: Vec<NodeIndex> = graph
                .neighbors_directed(current, petgraph::Direction::Incoming)
                .filter(|n| members.contains(n))
                .collect();
            deps.sort_by_key(|&n| &graph[n]);
            if deps.contains(&start) {
                break;
            }
            let next = deps.into_iter().find(|n| !seen.contains(n));
            match next {
                Some(n) => {
                    seen.insert(n);
                    path.push(n);
                    current = n;
                }
                None => {
                    // Dead end inside the component: back-track.
                    path.pop();
                    match path.last() {
                        Some(&p) => current = p,
                        None => break,
                    }
                }
            }
        }
        return path.into_iter().map(|n| graph[n].clone()).collect();
    }
    Vec::new()
}
