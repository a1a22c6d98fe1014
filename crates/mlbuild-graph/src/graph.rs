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
///
/// Besides label queries it numbers the targets by their topological position, so a
/// build can keep per-target state in flat arrays indexed by position instead of maps
/// keyed by label (a 10,000-target no-op build does a few lookups per target).
pub struct BuildGraph {
    graph: DiGraph<Label, ()>,
    index: BTreeMap<Label, NodeIndex>,
    order: Vec<NodeIndex>,
    roots: Vec<Label>,
    /// Topological position of each node, by node index.
    position: Vec<u32>,
    /// By position: the positions of each target's dependencies, in `deps` order.
    deps: Adjacency,
    /// By position: the positions of each target's dependents, sorted by label.
    dependents: Adjacency,
}

/// Per-position lists of positions, flattened into one array.
struct Adjacency {
    /// `items[starts[p]..starts[p + 1]]` belongs to position `p`.
    starts: Vec<u32>,
    items: Vec<u32>,
}

impl Adjacency {
    fn build(lists: impl Iterator<Item = impl Iterator<Item = u32>>) -> Adjacency {
        let mut starts = vec![0];
        let mut items = Vec::new();
        for list in lists {
            items.extend(list);
            starts.push(items.len() as u32);
        }
        Adjacency { starts, items }
    }

    fn get(&self, pos: usize) -> &[u32] {
        &self.items[self.starts[pos] as usize..self.starts[pos + 1] as usize]
    }
}

impl BuildGraph {
    /// Builds the closure of `roots`. Edges point from a dependency to its dependent, so a
    /// topological order is an execution order.
    pub fn new(ws: &Workspace, roots: &[Label]) -> Result<Self, GraphError> {
        let mut graph = DiGraph::new();
        let mut index = BTreeMap::new();
        let mut stack: Vec<&Label> = roots.iter().collect();
        while let Some(label) = stack.pop() {
            if index.contains_key(label) {
                continue;
            }
            let target = ws.target(label).ok_or_else(|| GraphError::Unknown {
                label: label.clone(),
            })?;
            index.insert(label.clone(), graph.add_node(label.clone()));
            stack.extend(target.deps.iter());
        }
        // Each node's dependencies in `deps` order: `dep_nodes[dep_spans[node]]`.
        let mut dep_nodes: Vec<NodeIndex> = Vec::new();
        let mut dep_spans = vec![0..0; index.len()];
        for (label, &node) in &index {
            let target = ws.target(label).expect("present: collected above");
            let start = dep_nodes.len();
            for dep in &target.deps {
                let dep = index[dep];
                graph.add_edge(dep, node, ());
                dep_nodes.push(dep);
            }
            dep_spans[node.index()] = start..dep_nodes.len();
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
        let mut position = vec![0u32; order.len()];
        for (pos, node) in order.iter().enumerate() {
            position[node.index()] = pos as u32;
        }
        let deps = Adjacency::build(order.iter().map(|&node| {
            dep_nodes[dep_spans[node.index()].clone()]
                .iter()
                .map(|dep| position[dep.index()])
        }));
        let dependents = Adjacency::build(order.iter().map(|&node| {
            let mut out: Vec<NodeIndex> = graph
                .neighbors_directed(node, petgraph::Direction::Outgoing)
                .collect();
            out.sort_by(|a, b| graph[*a].cmp(&graph[*b]));
            out.into_iter().map(|n| position[n.index()])
        }));
        Ok(BuildGraph {
            graph,
            index,
            order,
            roots,
            position,
            deps,
            dependents,
        })
    }

    /// The target at topological position `pos` (`0..len()`, the order of
    /// [`BuildGraph::topo_order`]).
    pub fn label_at(&self, pos: usize) -> &Label {
        &self.graph[self.order[pos]]
    }

    /// The topological position of `label`, if it is in the graph.
    pub fn position(&self, label: &Label) -> Option<usize> {
        self.index
            .get(label)
            .map(|n| self.position[n.index()] as usize)
    }

    /// Positions of the dependencies of the target at `pos`, in the order its `deps`
    /// lists them.
    pub fn dependencies_at(&self, pos: usize) -> &[u32] {
        self.deps.get(pos)
    }

    /// Positions of the targets depending on the one at `pos`, sorted by label (the
    /// order of [`BuildGraph::dependents`]).
    pub fn dependents_at(&self, pos: usize) -> &[u32] {
        self.dependents.get(pos)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A workspace with `//:a`, `//:b` (deps a) and `//:c` (deps b, a), in a temp dir.
    fn workspace() -> (Workspace, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("mlbuild-graph-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("MLBUILD.toml"), "").unwrap();
        std::fs::write(
            dir.join("BUILD.toml"),
            r#"
[target.a]
cmd = ["true"]

[target.c]
deps = ["//:b", "//:a"]
cmd = ["true"]

[target.b]
deps = ["//:a"]
cmd = ["true"]
"#,
        )
        .unwrap();
        let ws = Workspace::load(&dir).unwrap();
        (ws, dir)
    }

    #[test]
    fn positions_agree_with_label_queries() {
        let (ws, dir) = workspace();
        let roots = [Label::new("", "c")];
        let graph = BuildGraph::new(&ws, &roots).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
        assert_eq!(graph.len(), 3);
        for (pos, label) in graph.topo_order().enumerate() {
            assert_eq!(graph.label_at(pos), label);
            assert_eq!(graph.position(label), Some(pos));
            let deps: Vec<&Label> = graph
                .dependencies_at(pos)
                .iter()
                .map(|&p| graph.label_at(p as usize))
                .collect();
            let declared: Vec<&Label> = ws.target(label).unwrap().deps.iter().collect();
            assert_eq!(deps, declared, "dependencies of {label} in `deps` order");
            assert!(deps.iter().all(|d| graph.position(d).unwrap() < pos));
            let dependents: Vec<&Label> = graph
                .dependents_at(pos)
                .iter()
                .map(|&p| graph.label_at(p as usize))
                .collect();
            assert_eq!(dependents, graph.dependents(label));
        }
        assert_eq!(graph.position(&Label::new("", "nope")), None);
        let a = graph.position(&Label::new("", "a")).unwrap();
        assert_eq!(graph.dependents_at(a).len(), 2);
    }
}
