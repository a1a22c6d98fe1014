//! Staleness without building: `mlbuild status` and `mlbuild why`.
//!
//! Main functions: [`status`] and [`explain`]. Both re-plan targets against the outputs
//! recorded by the last build, exactly as a build would, so what they report is what a
//! build would do; a target below a stale dependency is reported as stale because of it,
//! since its own key cannot be known until the dependency has run. `explain` takes its
//! verdict from the same pass as `status` and follows that dependency down to the change
//! that made it stale, so the two commands never disagree about a target.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use mlbuild_graph::{diff_preimages, BuildGraph, Change};
use mlbuild_store::{Store, TargetRecord};
use mlbuild_workspace::{Label, Workspace};
use serde::Serialize;

use crate::plan::{Outputs, Planner};
use crate::tools::ToolResolver;
use crate::ExecError;

/// Whether a target would be rebuilt, and the first reason.
#[derive(Clone, Debug, Serialize)]
pub struct TargetState {
    pub label: String,
    pub stale: bool,
    pub reason: Option<String>,
}

/// Why a target would (or would not) rebuild, in full.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    pub label: String,
    /// What `status` says: stale or not, and the first reason.
    pub stale: bool,
    pub reason: Option<String>,
    /// When the target is stale because a dependency is: that dependency with its own
    /// reason, then the dependency that one waits for, and so on down to the target whose
    /// own inputs changed.
    pub stale_chain: Vec<TargetState>,
    pub last_key: Option<String>,
    /// The key now; `None` while a dependency is stale (the key depends on its outputs).
    pub current_key: Option<String>,
    /// The target's own preimage against its last build, with its dependencies' outputs
    /// as last recorded (what changed in this target, not upstream).
    pub changes: Vec<Change>,
    /// Dependencies that are themselves stale: their outputs, and so this key, may
    /// change again once they rebuild.
    pub stale_dependencies: Vec<String>,
    /// Set when the target cannot be planned at all (e.g. a missing source).
    pub error: Option<String>,
}

/// Why a target is stale.
#[derive(Clone, Debug)]
enum Reason {
    /// A dependency is stale, so this target's key cannot be known before it has run.
    Dependency(Label),
    /// The target itself: a changed input, never built, a missing result.
    Own(String),
    /// Never built in this workspace, but its key's result is in the store (another
    /// checkout sharing the store built it): the next build links it, running nothing.
    CachedInStore(Outputs),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Dependency(dep) => write!(f, "dependency `{dep}` is stale"),
            Reason::Own(reason) => f.write_str(reason),
            Reason::CachedInStore(_) => f.write_str(
                "cached in the store (built by another workspace): the next build reuses it without running it",
            ),
        }
    }
}

/// The state of every target of `graph`, in execution order.
pub fn status(
    ws: &Workspace,
    store: &Store,
    graph: &BuildGraph,
) -> Result<Vec<TargetState>, ExecError> {
    let ctx = Ctx::new(ws, store)?;
    let states = reasons(&ctx, graph)
        .into_iter()
        .map(|(label, reason)| state(label, reason.as_ref()))
        .collect();
    ctx.files.flush(store)?;
    Ok(states)
}

fn state(label: &Label, reason: Option<&Reason>) -> TargetState {
    TargetState {
        label: label.to_string(),
        stale: reason.is_some(),
        reason: reason.map(ToString::to_string),
    }
}

/// Every target's reason to rebuild (`None`: up to date), in execution order, planned with
/// one loaded context: the one truth behind both `status` and `explain`.
fn reasons<'g>(ctx: &Ctx<'_>, graph: &'g BuildGraph) -> Vec<(&'g Label, Option<Reason>)> {
    let mut known: HashMap<Label, Outputs> = HashMap::new();
    let mut out = Vec::new();
    for label in graph.topo_order() {
        let reason = ctx.reason(label, &known);
        match &reason {
            None => {
                if let Some(result) = ctx.record(label).and_then(|r| r.result.as_ref()) {
                    known.insert(label.clone(), result.outputs.clone());
                }
            }
            // Its outputs are known as surely as a recorded build's: plan what follows.
            Some(Reason::CachedInStore(outputs)) => {
                known.insert(label.clone(), outputs.clone());
            }
            Some(_) => {}
        }
        out.push((label, reason));
    }
    out
}

/// Why `label` would rebuild: `status`'s verdict and reason, the chain of stale
/// dependencies behind it, and the field-by-field difference between the target's last
/// recorded key and its key now.
pub fn explain(
    ws: &Workspace,
    store: &Store,
    graph: &BuildGraph,
    label: &Label,
) -> Result<Explanation, ExecError> {
    let ctx = Ctx::new(ws, store)?;
    let target = ws.target(label).expect("label resolved by the caller");
    let reasons: HashMap<&Label, Option<Reason>> = reasons(&ctx, graph).into_iter().collect();
    let reason_of = |l: &Label| reasons.get(l).and_then(Option::as_ref);
    let stale_dependencies: Vec<String> = graph
        .dependencies(label)
        .into_iter()
        .filter(|d| reason_of(d).is_some())
        .map(ToString::to_string)
        .collect();
    let mut stale_chain = Vec::new();
    let mut next = reason_of(label);
    while let Some(Reason::Dependency(dep)) = next {
        next = reason_of(dep);
        stale_chain.push(state(dep, next));
    }
    // Plan against the dependencies' last recorded outputs: that isolates what changed in
    // this target from what will change upstream.
    let empty = Outputs::new();
    let dep_outputs: BTreeMap<Label, &Outputs> = target
        .deps
        .iter()
        .map(|d| {
            let outs = ctx
                .record(d)
                .and_then(|r| r.result.as_ref())
                .map_or(&empty, |r| &r.outputs);
            (d.clone(), outs)
        })
        .collect();
    let record = ctx.record(label);
    let own = state(label, reason_of(label));
    let mut explanation = Explanation {
        label: own.label,
        stale: own.stale,
        reason: own.reason,
        stale_chain,
        last_key: record.map(|r| r.key.to_hex()),
        current_key: None,
        changes: Vec::new(),
        stale_dependencies,
        error: None,
    };
    match ctx.planner().plan(target, &dep_outputs) {
        Ok(planned) => {
            if explanation.stale_chain.is_empty() {
                explanation.current_key = Some(planned.key.to_hex());
            }
            if let Some(r) = record {
                explanation.changes = diff_preimages(&r.preimage, &planned.preimage_json);
            }
        }
        Err(e) => explanation.error = Some(e.to_string()),
    }
    ctx.files.flush(store)?;
    Ok(explanation)
}

struct Ctx<'a> {
    ws: &'a Workspace,
    store: &'a Store,
    records: HashMap<String, TargetRecord>,
    files: mlbuild_store::FileDigestCache,
    tools: ToolResolver,
}

impl<'a> Ctx<'a> {
    fn new(ws: &'a Workspace, store: &'a Store) -> Result<Self, ExecError> {
        Ok(Ctx {
            ws,
            store,
            records: store.load_workspace_state(&ws.root.to_string_lossy())?,
            files: store.file_digest_cache(&ws.root)?,
            tools: ToolResolver::new(ws.config.sandbox_path.clone()),
        })
    }

    fn planner(&self) -> Planner<'_> {
        Planner {
            ws: self.ws,
            files: &self.files,
            tools: &self.tools,
        }
    }

    fn record(&self, label: &Label) -> Option<&TargetRecord> {
        self.records.get(&label.to_string())
    }

    /// `None` when up to date; otherwise the first reason it is not.
    fn reason(&self, label: &Label, known: &HashMap<Label, Outputs>) -> Option<Reason> {
        let target = self.ws.target(label).expect("graph targets exist");
        if let Some(dep) = target.deps.iter().find(|d| !known.contains_key(*d)) {
            return Some(Reason::Dependency(dep.clone()));
        }
        self.own_reason(label, target, known)
    }

    /// Why a target whose dependencies are all up to date is not.
    fn own_reason(
        &self,
        label: &Label,
        target: &mlbuild_workspace::Target,
        known: &HashMap<Label, Outputs>,
    ) -> Option<Reason> {
        let dep_outputs: BTreeMap<Label, &Outputs> =
            target.deps.iter().map(|d| (d.clone(), &known[d])).collect();
        let planned = match self.planner().plan(target, &dep_outputs) {
            Ok(p) => p,
            Err(e) => return Some(Reason::Own(format!("cannot be planned: {e}"))),
        };
        let Some(record) = self.record(label) else {
            let cached = self
                .store
                .get_action(&planned.key)
                .ok()
                .flatten()
                .filter(|r| r.outputs.values().all(|o| self.store.has_blob(&o.digest)))
                .filter(|r| !self.ws.config.sandbox_require || r.sandboxed());
            return Some(match cached {
                Some(result) => Reason::CachedInStore(result.outputs),
                None => Reason::Own("never built in this workspace".to_string()),
            });
        };
        if record.key != planned.key {
            return Some(Reason::Own(
                diff_preimages(&record.preimage, &planned.preimage_json)
                    .first()
                    .map_or_else(|| "key changed".to_string(), ToString::to_string),
            ));
        }
        match &record.result {
            Some(r) if self.ws.config.sandbox_require && !r.sandboxed() => Some(Reason::Own(format!(
                "cached result was not built in the sandbox (isolation `{}`) and `[sandbox] require = true`",
                r.isolation_name()
            ))),
            Some(r) if r.outputs.values().all(|o| self.store.has_blob(&o.digest)) => None,
            _ => Some(Reason::Own(
                "cached result is missing from the store".to_string(),
            )),
        }
    }
}
