//! Which targets of a [`BuildGraph`] may start, given which have finished (Kahn's
//! algorithm), shared by the build scheduler and the audit so the two never disagree on
//! when a target is ready.

use std::collections::VecDeque;

use crate::BuildGraph;

/// Targets by topological position: how many unfinished dependencies each waits for,
/// and those waiting for none, in the order they became ready.
#[derive(Debug)]
pub struct ReadyQueue {
    waiting_on: Vec<usize>,
    ready: VecDeque<usize>,
}

impl ReadyQueue {
    /// Every target waits for its dependencies.
    pub fn new(graph: &BuildGraph) -> ReadyQueue {
        let waiting_on: Vec<usize> = (0..graph.len())
            .map(|pos| graph.dependencies_at(pos).len())
            .collect();
        let ready = (0..graph.len())
            .filter(|&pos| waiting_on[pos] == 0)
            .collect();
        ReadyQueue { waiting_on, ready }
    }

    /// Every target is ready at once, in topological order (when every input is known
    /// up front, as for an audit against recorded outputs).
    pub fn all_ready(graph: &BuildGraph) -> ReadyQueue {
        ReadyQueue {
            waiting_on: vec![0; graph.len()],
            ready: (0..graph.len()).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }

    /// The target that became ready first.
    pub fn pop(&mut self) -> Option<usize> {
        self.ready.pop_front()
    }

    /// Every ready target, in the order they became ready.
    pub fn take_all(&mut self) -> impl Iterator<Item = usize> + '_ {
        self.ready.drain(..)
    }

    /// Target `pos` finished: its dependents that wait for nothing else become ready.
    pub fn complete(&mut self, graph: &BuildGraph, pos: usize) {
        for &dependent in graph.dependents_at(pos) {
            let n = &mut self.waiting_on[dependent as usize];
            *n -= 1;
            if *n == 0 {
                self.ready.push_back(dependent as usize);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlbuild_workspace::{Label, Workspace};

    /// A diamond: `d` depends on `b` and `c`, which depend on `a`.
    fn diamond() -> (tempfile::TempDir, BuildGraph) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("MLBUILD.toml"), "").unwrap();
        std::fs::write(
            dir.path().join("BUILD.toml"),
            "[target.a]\ncmd = [\"true\"]\n\
             [target.b]\ndeps = [\":a\"]\ncmd = [\"true\"]\n\
             [target.c]\ndeps = [\":a\"]\ncmd = [\"true\"]\n\
             [target.d]\ndeps = [\":b\", \":c\"]\ncmd = [\"true\"]\n",
        )
        .unwrap();
        let ws = Workspace::load(dir.path()).unwrap();
        let graph = BuildGraph::new(&ws, &[Label::new("", "d")]).unwrap();
        (dir, graph)
    }

    fn names(graph: &BuildGraph, positions: impl Iterator<Item = usize>) -> Vec<String> {
        positions.map(|p| graph.label_at(p).name.clone()).collect()
    }

    #[test]
    fn targets_become_ready_when_their_last_dependency_completes() {
        let (_dir, graph) = diamond();
        let pos = |name: &str| graph.position(&Label::new("", name)).unwrap();
        let mut q = ReadyQueue::new(&graph);
        assert_eq!(names(&graph, q.take_all()), ["a"]);
        assert!(q.is_empty());
        q.complete(&graph, pos("a"));
        let mut next = names(&graph, q.take_all());
        next.sort();
        assert_eq!(next, ["b", "c"]);
        q.complete(&graph, pos("b"));
        assert_eq!(q.pop(), None, "d still waits for c");
        q.complete(&graph, pos("c"));
        assert_eq!(names(&graph, q.pop().into_iter()), ["d"]);

        let mut all = ReadyQueue::all_ready(&graph);
        assert_eq!(names(&graph, all.take_all()).len(), 4);
    }
}
