//! Audits: running actions a second time, without the cache, and comparing what they
//! produce with what was recorded.
//!
//! Main function: [`audit`]. Each action runs in a fresh exec root and sandbox exactly as
//! a build runs it, but the result is only ingested into the store, never recorded in the
//! action cache, so an audit cannot replace a recorded result with its own and a later
//! build reuses what was there before. Two ways to feed inputs ([`AuditInputs`]):
//! `Recorded` gives every action its dependencies' *recorded* outputs, so each action is
//! judged on its own and one nondeterministic stage does not make everything below it
//! look nondeterministic too; `Rebuilt` chains every action on the outputs its
//! dependencies produced in this very run, which is what reproducing an artifact from its
//! sources means. With recorded inputs, the recorded results are those the action cache
//! holds for the targets' current keys, not the workspace's latest keys, so an audit
//! needs no build that updated the workspace. The second outputs are kept under
//! `mlbuild-out/.audit/<pkg>/<name>/` for inspection, beside the recorded ones they
//! differ from (`mlbuild-out/.audit/.recorded/<pkg>/<name>/`); [`diff_outputs`] and
//! [`diff_digests`] say which files differ and, for JSON files, which values.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use mlbuild_digest::Digest;
use mlbuild_graph::{BuildGraph, ReadyQueue};
use mlbuild_sandbox::Isolation;
use mlbuild_store::{ActionResult, OutputFile, Store};
use mlbuild_workspace::{Label, Target, Workspace};
use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinSet;

use crate::action::{execute, ActionEnv, Logs};
use crate::admission::Admission;
use crate::events::{Event, TargetStatus};
use crate::outputs::out_dir_rel;
use crate::plan::{Outputs, Planned, Planner};
use crate::scheduler::{ingest_filegroup, render, select_isolation, shutdown_signal, EventSink};
use crate::tools::ToolResolver;
use crate::ExecError;

/// At most this many differing JSON values are listed per file; the rest are counted.
pub const MAX_JSON_CHANGES: usize = 20;

/// JSON files larger than this are compared by digest only: a key-level diff would hold
/// both documents in memory.
const MAX_JSON_BYTES: u64 = 64 << 20;

/// Where an audited action's inputs come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditInputs {
    /// Every action that runs a command gets its dependencies' recorded outputs (the
    /// action cache must hold a result for every target's current key: build first),
    /// and its new outputs are compared with its recorded ones. Filegroups and sweep selections run
    /// no command and are not audited.
    Recorded,
    /// Every target runs, dependencies first, on the outputs its dependencies produced in
    /// this audit; nothing is compared here, the caller holds the reference (an
    /// artifact's provenance).
    Rebuilt,
}

/// How an audit runs.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    /// Actions running at once.
    pub jobs: usize,
    /// `None` probes the machine when the first action runs.
    pub isolation: Option<Isolation>,
    pub inputs: AuditInputs,
}

/// The verdict on one action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditStatus {
    /// Every output has the recorded bytes.
    Reproducible,
    /// Some output differs, and the target does not say it may.
    NotReproducible,
    /// Some output differs, as the target declares with `nondeterministic = "reason"`.
    Nondeterministic,
    /// Rebuilt with [`AuditInputs::Rebuilt`]; the caller compares.
    Rebuilt,
    /// The second run failed (or its inputs are not the recorded ones).
    Failed,
    /// Not run: a dependency failed, or the audit was interrupted.
    Skipped,
}

impl ActionAudit {
    /// Whether its recorded result is known to come from a run outside the sandbox (or
    /// does not say how it ran).
    pub fn recorded_unsandboxed(&self) -> bool {
        self.recorded_isolation
            .as_deref()
            .is_some_and(|i| i != "namespaces" && i != "in_process")
    }
}

impl AuditStatus {
    /// Whether this verdict lets the audit succeed.
    pub fn is_ok(self) -> bool {
        matches!(
            self,
            AuditStatus::Reproducible | AuditStatus::Nondeterministic | AuditStatus::Rebuilt
        )
    }
}

/// What auditing one action found.
#[derive(Clone, Debug, Serialize)]
pub struct ActionAudit {
    pub label: String,
    pub kind: String,
    /// The action key (hex) of the second run: the recorded one with recorded inputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub status: AuditStatus,
    /// The target's declared reason for differing outputs, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nondeterministic: Option<String>,
    /// Something worth knowing that does not change the verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Output files that differ from the recorded ones.
    pub files: Vec<FileDiff>,
    /// Workspace-relative directory holding the second run's outputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuilt_dir: Option<String>,
    /// Workspace-relative directory holding the recorded outputs the second run was
    /// compared with, when they differ ([`AuditInputs::Recorded`]): an audit leaves
    /// `mlbuild-out/<pkg>/<name>/` as the workspace's last build left it, which need not
    /// be the result the audit's own build recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded_dir: Option<String>,
    /// Why the second run failed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How the recorded result was isolated when it was built ([`AuditInputs::Recorded`]):
    /// `namespaces`, `plain` (no sandbox), `in_process` or `unknown` (recorded before
    /// mlbuild recorded it). Only `namespaces` and `in_process` count as sandboxed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded_isolation: Option<String>,
    pub duration_ms: u64,
    /// The second run's outputs.
    #[serde(skip)]
    pub rebuilt: Option<Outputs>,
    /// The tools the second run resolved, by name (for comparing with provenance).
    #[serde(skip)]
    pub tools: BTreeMap<String, Digest>,
}

/// One output file that differs.
#[derive(Clone, Debug, Serialize)]
pub struct FileDiff {
    /// Output-directory-relative path.
    pub path: String,
    pub change: FileChange,
    /// BLAKE3 (hex) of the recorded file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded: Option<String>,
    /// BLAKE3 (hex) of the rebuilt file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuilt: Option<String>,
    /// For JSON files: the values that differ, at most [`MAX_JSON_CHANGES`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub json: Vec<JsonChange>,
    /// How many more JSON values differ than are listed.
    #[serde(skip_serializing_if = "is_zero")]
    pub json_more: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Workspace-relative path of diffoscope's report on this file, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diffoscope: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// How a file differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileChange {
    /// Different bytes.
    Modified,
    /// Recorded, but the second run did not produce it.
    Missing,
    /// Produced by the second run only.
    Extra,
    /// The same bytes with a different execute bit.
    Mode,
}

impl FileChange {
    pub fn as_str(self) -> &'static str {
        match self {
            FileChange::Modified => "modified",
            FileChange::Missing => "missing",
            FileChange::Extra => "extra",
            FileChange::Mode => "mode",
        }
    }
}

/// One JSON value that differs; an absent side means the key or element is not there.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JsonChange {
    /// `$`, `$.metrics.f1`, `$.coef[2]`, `$["odd key"]`.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuilt: Option<Value>,
}

/// Every audited action, in dependency order.
#[derive(Debug)]
pub struct AuditRun {
    pub actions: Vec<ActionAudit>,
    pub interrupted: bool,
}

/// Workspace-relative directory where the audit keeps `label`'s second outputs:
/// `mlbuild-out/.audit/<pkg>/<name>` (hidden directories are never packages, so this
/// cannot collide with a target's own output directory).
pub fn audit_dir_rel(label: &Label) -> String {
    let own = out_dir_rel(label);
    format!(
        "mlbuild-out/.audit/{}",
        own.strip_prefix("mlbuild-out/").unwrap_or(&own)
    )
}

/// Workspace-relative directory where the audit keeps the recorded outputs of `label`
/// when its second run's differ: `mlbuild-out/.audit/.recorded/<pkg>/<name>`.
pub fn recorded_dir_rel(label: &Label) -> String {
    let own = out_dir_rel(label);
    format!(
        "mlbuild-out/.audit/.recorded/{}",
        own.strip_prefix("mlbuild-out/").unwrap_or(&own)
    )
}

/// Where a second run's logs go, apart from the build's `mlbuild-out/.logs`.
pub(crate) fn log_dir_rel(target: &Target) -> String {
    let own = crate::action::log_dir_rel(target);
    format!(
        "mlbuild-out/.audit/{}",
        own.strip_prefix("mlbuild-out/").unwrap_or(&own)
    )
}

/// A target ready to run a second time.
struct Job {
    label: Label,
    planned: Planned,
    /// The recorded outputs to compare with ([`AuditInputs::Recorded`]).
    recorded: Option<Outputs>,
}

type Finished = (Label, Result<(Outputs, Vec<FileDiff>), ExecError>, u64);

/// Runs every target of `graph` a second time, as `opts.inputs` says, and reports on
/// each. Failures of single actions are verdicts; an unusable store is an error.
pub async fn audit(
    ws: Arc<Workspace>,
    store: Arc<Store>,
    graph: &BuildGraph,
    opts: AuditOptions,
    events: EventSink,
) -> Result<AuditRun, ExecError> {
    let _gc_guard = store.build_lock_shared()?;
    let files = store.file_digest_cache(&ws.root)?;
    let tools = ToolResolver::new(ws.config.sandbox_path.clone());
    let planner = Planner {
        ws: &ws,
        files: &files,
        tools: &tools,
    };
    let recorded_mode = opts.inputs == AuditInputs::Recorded;
    let jobs = opts.jobs.max(1);
    let mut isolation = opts.isolation;

    // The outputs dependents are planned against and, with recorded inputs, every
    // target's job, planned up front on recorded outputs.
    let mut known: HashMap<Label, Outputs> = HashMap::new();
    let mut isolations: HashMap<Label, ActionIsolationName> = HashMap::new();
    let mut recorded_jobs: HashMap<Label, Result<Job, String>> = if recorded_mode {
        plan_recorded(&planner, &ws, &store, graph, &mut known, &mut isolations)?
    } else {
        HashMap::new()
    };

    // With recorded inputs nothing waits: every input is known up front.
    let mut ready = if recorded_mode {
        ReadyQueue::all_ready(graph)
    } else {
        ReadyQueue::new(graph)
    };

    let mut done: HashMap<Label, ActionAudit> = HashMap::new();
    let mut pending: VecDeque<Job> = VecDeque::new();
    let mut running: JoinSet<Finished> = JoinSet::new();
    // What the report needs of each running action's plan: its key and tools.
    let mut started: HashMap<Label, (Digest, BTreeMap<String, Digest>)> = HashMap::new();
    let mut admission = Admission::new(&ws);
    let mut interrupted = false;
    let mut shutdown = Box::pin(shutdown_signal());

    loop {
        while let Some(label) = (!interrupted)
            .then(|| ready.pop())
            .flatten()
            .map(|pos| graph.label_at(pos).clone())
        {
            let target = ws.target(&label).expect("graph targets exist");
            if recorded_mode && !target.runs_command() {
                continue;
            }
            let job = match recorded_jobs.remove(&label) {
                Some(job) => job,
                None => prepare(&planner, target, &known),
            };
            match job {
                Ok(job) => pending.push_back(job),
                Err(message) => {
                    done.insert(label.clone(), failed(target, None, message, 0));
                }
            }
        }

        while !interrupted && running.len() < jobs {
            let Some(pos) = admission.next(&pending, running.is_empty(), |j| &j.label) else {
                break;
            };
            let job = pending.remove(pos).expect("position is valid");
            admission.take(&job.label);
            let isolation = *isolation.get_or_insert_with(|| select_isolation(&events));
            events(Event::ActionStarted {
                label: job.label.to_string(),
                key: job.planned.key.to_hex(),
                reasons: vec!["audit: running again without the cache".to_string()],
            });
            let Job {
                label,
                planned,
                recorded,
            } = job;
            let (ws2, store2) = (ws.clone(), store.clone());
            let tools = planned
                .tools
                .iter()
                .map(|(n, t)| (n.clone(), t.digest))
                .collect();
            started.insert(label.clone(), (planned.key, tools));
            running.spawn_blocking(move || {
                let t0 = Instant::now();
                let result =
                    run_again(&ws2, &store2, isolation, &label, &planned).and_then(|outputs| {
                        let root = &ws2.root;
                        keep_outputs(&store2, &root.join(audit_dir_rel(&label)), &outputs)?;
                        let diffs = recorded
                            .as_ref()
                            .map(|r| diff_outputs(&store2, r, &outputs))
                            .unwrap_or_default();
                        let differing = recorded.as_ref().filter(|_| !diffs.is_empty());
                        keep_recorded_outputs(&store2, root, &label, differing)?;
                        Ok((outputs, diffs))
                    });
                (label, result, t0.elapsed().as_millis() as u64)
            });
        }

        if running.is_empty() {
            break;
        }

        tokio::select! {
            joined = running.join_next() => {
                let Some(joined) = joined else { continue };
                let (label, result, ms) = match joined {
                    Ok(r) => r,
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                };
                let target = ws.target(&label).expect("exists");
                admission.release(&label);
                let (key, tools) = started.remove(&label).expect("started before it finished");
                let audit = match result {
                    Ok((outputs, diffs)) => {
                        let audit =
                            verdict(target, key, tools, outputs.clone(), diffs, recorded_mode, ms);
                        if !recorded_mode {
                            known.insert(label.clone(), outputs);
                            let pos = graph.position(&label).expect("graph targets have positions");
                            ready.complete(graph, pos);
                        }
                        audit
                    }
                    Err(_) if interrupted => skipped(target, "interrupted".to_string()),
                    Err(e) => failed(target, Some(key), render(&e), ms),
                };
                events(Event::TargetFinished {
                    label: label.to_string(),
                    status: if audit.status == AuditStatus::Failed {
                        TargetStatus::Failed
                    } else {
                        TargetStatus::Executed
                    },
                    key: Some(key.to_hex()),
                    duration_ms: ms,
                    message: audit.error.clone(),
                });
                done.insert(label, audit);
            }
            _ = &mut shutdown, if !interrupted => {
                interrupted = true;
                mlbuild_sandbox::kill_all_running();
                events(Event::Warning { message: "interrupted: stopping running actions".into() });
            }
        }
    }
    files.flush(&store)?;
    crate::trash::drain();

    let mut actions = Vec::new();
    for label in graph.topo_order() {
        let target = ws.target(label).expect("graph targets exist");
        if recorded_mode && !target.runs_command() {
            continue;
        }
        let mut audit = match done.remove(label) {
            Some(audit) => audit,
            None if interrupted => skipped(target, "interrupted".to_string()),
            None => {
                let failed_dep = graph
                    .dependencies(label)
                    .into_iter()
                    .find(|d| !known.contains_key(*d))
                    .map_or_else(String::new, |d| format!(" `{d}`"));
                skipped(
                    target,
                    format!("not run: its dependency{failed_dep} was not rebuilt"),
                )
            }
        };
        audit.recorded_isolation = isolations.get(label).map(|name| (*name).to_owned());
        actions.push(audit);
    }
    Ok(AuditRun {
        actions,
        interrupted,
    })
}

/// Plans `target` against `known` outputs, to run on them with nothing to compare.
fn prepare(
    planner: &Planner<'_>,
    target: &Target,
    known: &HashMap<Label, Outputs>,
) -> Result<Job, String> {
    let mut dep_outputs: BTreeMap<Label, &Outputs> = BTreeMap::new();
    for dep in &target.deps {
        let outputs = known
            .get(dep)
            .ok_or_else(|| format!("its dependency `{dep}` has no recorded result"))?;
        dep_outputs.insert(dep.clone(), outputs);
    }
    let planned = planner.plan(target, &dep_outputs).map_err(|e| render(&e))?;
    Ok(Job {
        label: target.label.clone(),
        planned,
        recorded: None,
    })
}

/// What [`ActionIsolation::as_str`](mlbuild_store::ActionIsolation::as_str) names, or
/// `unknown`.
type ActionIsolationName = &'static str;

/// Finds the recorded result of every target of `graph` as a build finds it, without
/// reading the workspace's latest keys (an audit's own build never writes them, so that
/// the workspace keeps what its last build left): in dependency order, each target is
/// planned on its dependencies' recorded outputs and its key looked up in the action
/// cache. A recorded result's outputs go to `known`; each target gets its job, or why it
/// has none. A key with no result means the inputs changed since the build, and
/// comparing with anything else would be meaningless.
fn plan_recorded(
    planner: &Planner<'_>,
    ws: &Workspace,
    store: &Store,
    graph: &BuildGraph,
    known: &mut HashMap<Label, Outputs>,
    isolations: &mut HashMap<Label, ActionIsolationName>,
) -> Result<HashMap<Label, Result<Job, String>>, ExecError> {
    let mut jobs = HashMap::new();
    for label in graph.topo_order() {
        let target = ws.target(label).expect("graph targets exist");
        let job = match prepare(planner, target, known) {
            Ok(mut job) => match store.get_action(&job.planned.key)? {
                Some(result) => {
                    isolations.insert(label.clone(), result.isolation_name());
                    known.insert(label.clone(), result.outputs.clone());
                    job.recorded = Some(result.outputs);
                    Ok(job)
                }
                None => Err(format!(
                    "no recorded result for its inputs (key {}): they changed since the build \
                     (run the audit again to build them first)",
                    job.planned.key.short()
                )),
            },
            Err(e) => Err(e),
        };
        jobs.insert(label.clone(), job);
    }
    Ok(jobs)
}

/// Runs `label` again in audit mode and returns its outputs, ingested into the store.
fn run_again(
    ws: &Workspace,
    store: &Store,
    isolation: Isolation,
    label: &Label,
    planned: &Planned,
) -> Result<Outputs, ExecError> {
    let target = ws.target(label).expect("exists");
    let result: ActionResult = if target.kind == "filegroup" {
        ingest_filegroup(store, target, planned)?
    } else if target.select.is_some() {
        crate::select::run_select(ws, store, target, planned)?
    } else {
        let env = ActionEnv {
            ws,
            store,
            isolation,
            audit: true,
            logs: Logs::Audit,
        };
        execute(&env, target, planned)?
    };
    Ok(result.outputs)
}

/// Makes `dest` (e.g. `mlbuild-out/.audit/<pkg>/<name>/`) hold exactly `outputs`,
/// hardlinked from the store like the build's own outputs.
fn keep_outputs(store: &Store, dest: &Path, outputs: &Outputs) -> Result<(), ExecError> {
    clear(dest)?;
    std::fs::create_dir_all(dest)
        .map_err(|e| ExecError::io(format!("cannot create `{}`", dest.display()), e))?;
    for (rel, file) in outputs {
        store.materialize(&file.digest, &dest.join(rel), file.executable)?;
    }
    Ok(())
}

/// Keeps the recorded outputs that differ from the second run's beside them (those still
/// in the store), or removes what an earlier audit kept there when none differ.
fn keep_recorded_outputs(
    store: &Store,
    ws_root: &Path,
    label: &Label,
    recorded: Option<&Outputs>,
) -> Result<(), ExecError> {
    let dest = ws_root.join(recorded_dir_rel(label));
    match recorded {
        Some(outputs) => {
            let present: Outputs = outputs
                .iter()
                .filter(|(_, f)| store.has_blob(&f.digest))
                .map(|(rel, f)| (rel.clone(), *f))
                .collect();
            keep_outputs(store, &dest, &present)
        }
        None => clear(&dest),
    }
}

fn clear(dir: &Path) -> Result<(), ExecError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .map_err(|e| ExecError::io(format!("cannot clear `{}`", dir.display()), e))?;
    }
    Ok(())
}

fn verdict(
    target: &Target,
    key: Digest,
    tools: BTreeMap<String, Digest>,
    outputs: Outputs,
    files: Vec<FileDiff>,
    recorded_mode: bool,
    ms: u64,
) -> ActionAudit {
    let declared = target.nondeterministic.clone();
    let (status, note) = if !recorded_mode {
        (AuditStatus::Rebuilt, None)
    } else if files.is_empty() {
        let note = declared
            .as_ref()
            .map(|_| "declared nondeterministic, but reproduced identically".to_string());
        (AuditStatus::Reproducible, note)
    } else if declared.is_some() {
        (AuditStatus::Nondeterministic, None)
    } else {
        (AuditStatus::NotReproducible, None)
    };
    let recorded_dir =
        (recorded_mode && !files.is_empty()).then(|| recorded_dir_rel(&target.label));
    ActionAudit {
        label: target.label.to_string(),
        kind: target.kind.clone(),
        key: Some(key.to_hex()),
        status,
        nondeterministic: declared,
        note,
        files,
        rebuilt_dir: Some(audit_dir_rel(&target.label)),
        recorded_dir,
        error: None,
        recorded_isolation: None,
        duration_ms: ms,
        rebuilt: Some(outputs),
        tools,
    }
}

fn failed(target: &Target, key: Option<Digest>, error: String, ms: u64) -> ActionAudit {
    ActionAudit {
        label: target.label.to_string(),
        kind: target.kind.clone(),
        key: key.map(|k| k.to_hex()),
        status: AuditStatus::Failed,
        nondeterministic: target.nondeterministic.clone(),
        note: None,
        files: Vec::new(),
        rebuilt_dir: None,
        recorded_dir: None,
        error: Some(error),
        recorded_isolation: None,
        duration_ms: ms,
        rebuilt: None,
        tools: BTreeMap::new(),
    }
}

fn skipped(target: &Target, why: String) -> ActionAudit {
    ActionAudit {
        status: AuditStatus::Skipped,
        ..failed(target, None, why, 0)
    }
}

/// The files of `rebuilt` that differ from `recorded`: bytes, presence or execute bit.
pub fn diff_outputs(store: &Store, recorded: &Outputs, rebuilt: &Outputs) -> Vec<FileDiff> {
    let side = |o: &Outputs| -> BTreeMap<String, (Digest, Option<bool>)> {
        o.iter()
            .map(|(p, f): (&String, &OutputFile)| (p.clone(), (f.digest, Some(f.executable))))
            .collect()
    };
    diff(store, &side(recorded), &side(rebuilt))
}

/// Like [`diff_outputs`], for files known only by digest (e.g. from provenance).
pub fn diff_digests(
    store: &Store,
    recorded: &BTreeMap<String, Digest>,
    rebuilt: &BTreeMap<String, Digest>,
) -> Vec<FileDiff> {
    let side = |m: &BTreeMap<String, Digest>| -> BTreeMap<String, (Digest, Option<bool>)> {
        m.iter().map(|(p, d)| (p.clone(), (*d, None))).collect()
    };
    diff(store, &side(recorded), &side(rebuilt))
}

fn diff(
    store: &Store,
    recorded: &BTreeMap<String, (Digest, Option<bool>)>,
    rebuilt: &BTreeMap<String, (Digest, Option<bool>)>,
) -> Vec<FileDiff> {
    let paths: BTreeSet<&String> = recorded.keys().chain(rebuilt.keys()).collect();
    let mut out = Vec::new();
    for path in paths {
        let (old, new) = (recorded.get(path), rebuilt.get(path));
        let change = match (old, new) {
            (Some((a, _)), Some((b, _))) if a != b => FileChange::Modified,
            (Some((_, Some(x))), Some((_, Some(y)))) if x != y => FileChange::Mode,
            (Some(_), Some(_)) => continue,
            (Some(_), None) => FileChange::Missing,
            (None, _) => FileChange::Extra,
        };
        let mut file = FileDiff {
            path: path.clone(),
            change,
            recorded: old.map(|(d, _)| d.to_hex()),
            rebuilt: new.map(|(d, _)| d.to_hex()),
            json: Vec::new(),
            json_more: 0,
            note: None,
            diffoscope: None,
        };
        if let (FileChange::Modified, Some((a, _)), Some((b, _))) = (change, old, new) {
            if is_json(path) {
                compare_json(store, a, b, &mut file);
            }
        }
        out.push(file);
    }
    out
}

fn is_json(path: &str) -> bool {
    path.to_ascii_lowercase().ends_with(".json")
}

/// Fills `file.json` (or a note saying why there is no key-level diff).
fn compare_json(store: &Store, recorded: &Digest, rebuilt: &Digest, file: &mut FileDiff) {
    let load = |d: &Digest| -> Result<Value, String> {
        if !store.has_blob(d) {
            return Err("the recorded file is not in the local store".to_string());
        }
        let size = std::fs::metadata(store.blob_path(d)).map_or(0, |m| m.len());
        if size > MAX_JSON_BYTES {
            return Err(format!(
                "larger than {} MiB: compared by digest only",
                MAX_JSON_BYTES >> 20
            ));
        }
        let bytes = store.read_blob(d).map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| format!("not valid JSON ({e})"))
    };
    match (load(recorded), load(rebuilt)) {
        (Ok(a), Ok(b)) => {
            let (changes, total) = json_diff(&a, &b);
            if total == 0 {
                file.note = Some(
                    "the same JSON value, written differently (key order, spacing or number format)"
                        .to_string(),
                );
            }
            file.json_more = total - changes.len();
            file.json = changes;
        }
        (Err(why), _) => file.note = Some(format!("recorded side: {why}")),
        (_, Err(why)) => file.note = Some(format!("rebuilt side: {why}")),
    }
}

/// The values that differ between two JSON documents, at most [`MAX_JSON_CHANGES`], and
/// how many differ in all.
pub fn json_diff(recorded: &Value, rebuilt: &Value) -> (Vec<JsonChange>, usize) {
    let mut changes = Vec::new();
    let mut total = 0;
    json_changes(
        recorded,
        rebuilt,
        &mut "$".to_string(),
        &mut changes,
        &mut total,
    );
    (changes, total)
}

/// Appends every leaf where `a` and `b` differ (up to [`MAX_JSON_CHANGES`]) and counts
/// all of them in `total`.
fn json_changes(
    a: &Value,
    b: &Value,
    path: &mut String,
    out: &mut Vec<JsonChange>,
    total: &mut usize,
) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                let len = path.len();
                push_key(path, key);
                match (x.get(key), y.get(key)) {
                    (Some(u), Some(v)) => json_changes(u, v, path, out, total),
                    (u, v) => push_change(path, u, v, out, total),
                }
                path.truncate(len);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                match (x.get(i), y.get(i)) {
                    (Some(u), Some(v)) => json_changes(u, v, path, out, total),
                    (u, v) => push_change(path, u, v, out, total),
                }
                path.truncate(len);
            }
        }
        (x, y) if x != y => push_change(path, Some(x), Some(y), out, total),
        _ => {}
    }
}

fn push_change(
    path: &str,
    old: Option<&Value>,
    new: Option<&Value>,
    out: &mut Vec<JsonChange>,
    total: &mut usize,
) {
    *total += 1;
    if out.len() < MAX_JSON_CHANGES {
        out.push(JsonChange {
            path: path.to_string(),
            recorded: old.cloned(),
            rebuilt: new.cloned(),
        });
    }
}

/// `.key` for identifier-like keys, `["key"]` for anything else.
fn push_key(path: &mut String, key: &str) {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        path.push('.');
        path.push_str(key);
    } else {
        path.push('[');
        path.push_str(&serde_json::to_string(key).expect("strings serialize"));
        path.push(']');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn changes(a: Value, b: Value) -> (Vec<JsonChange>, usize) {
        json_diff(&a, &b)
    }

    #[test]
    fn json_changes_name_each_differing_leaf() {
        let (out, total) = changes(
            json!({"t": 1, "same": [1, 2], "m": {"f1": 0.5, "odd key": "a"}, "gone": true}),
            json!({"t": 2, "same": [1, 2], "m": {"f1": 0.5, "odd key": "b"}, "arr": [1]}),
        );
        assert_eq!(total, 4);
        let paths: Vec<&str> = out.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["$.arr", "$.gone", r#"$.m["odd key"]"#, "$.t"]);
        assert_eq!(out[0].recorded, None);
        assert_eq!(out[0].rebuilt, Some(json!([1])));
        assert_eq!(out[1].rebuilt, None);
        assert_eq!(out[3].recorded, Some(json!(1)));
        assert_eq!(out[3].rebuilt, Some(json!(2)));

        let (out, _) = changes(json!([1, [2, 3]]), json!([1, [2, 4], 5]));
        let paths: Vec<&str> = out.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["$[1][1]", "$[2]"]);

        let (out, total) = changes(json!(1), json!("1"));
        assert_eq!((out[0].path.as_str(), total), ("$", 1));
    }

    #[test]
    fn json_changes_are_capped_but_counted() {
        let a: serde_json::Map<String, Value> =
            (0..50).map(|i| (format!("k{i:02}"), json!(i))).collect();
        let b: serde_json::Map<String, Value> = (0..50)
            .map(|i| (format!("k{i:02}"), json!(i + 1)))
            .collect();
        let (out, total) = changes(Value::Object(a), Value::Object(b));
        assert_eq!(out.len(), MAX_JSON_CHANGES);
        assert_eq!(total, 50);
    }

    #[test]
    fn file_diffs_cover_bytes_presence_mode_and_json() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let put = |bytes: &[u8]| store.put_bytes(bytes).unwrap();
        let file = |d: Digest, executable: bool| OutputFile {
            digest: d,
            size: 1,
            executable,
        };
        let (a, b) = (put(br#"{"t": 1, "n": 2}"#), put(br#"{"n": 2, "t": 3}"#));
        let same = put(b"same");
        let formatted = (put(br#"{"x":1}"#), put(br#"{ "x": 1 }"#));
        let recorded: Outputs = BTreeMap::from([
            ("m.json".into(), file(a, false)),
            ("f.json".into(), file(formatted.0, false)),
            ("same".into(), file(same, false)),
            ("run.sh".into(), file(same, false)),
            ("gone".into(), file(same, false)),
        ]);
        let rebuilt: Outputs = BTreeMap::from([
            ("m.json".into(), file(b, false)),
            ("f.json".into(), file(formatted.1, false)),
            ("same".into(), file(same, false)),
            ("run.sh".into(), file(same, true)),
            ("new".into(), file(same, false)),
        ]);
        let diffs = diff_outputs(&store, &recorded, &rebuilt);
        let summary: Vec<(&str, FileChange)> =
            diffs.iter().map(|d| (d.path.as_str(), d.change)).collect();
        assert_eq!(
            summary,
            [
                ("f.json", FileChange::Modified),
                ("gone", FileChange::Missing),
                ("m.json", FileChange::Modified),
                ("new", FileChange::Extra),
                ("run.sh", FileChange::Mode),
            ]
        );
        assert!(diffs[0].json.is_empty());
        assert!(diffs[0]
            .note
            .as_deref()
            .unwrap()
            .contains("same JSON value"));
        assert_eq!(
            diffs[2].json,
            [JsonChange {
                path: "$.t".into(),
                recorded: Some(json!(1)),
                rebuilt: Some(json!(3)),
            }]
        );
    }

    #[test]
    fn audit_dirs_mirror_output_dirs() {
        let l = Label::parse("//models:fraud", "").unwrap();
        assert_eq!(audit_dir_rel(&l), "mlbuild-out/.audit/models/fraud");
        let root = Label::parse("//:x", "").unwrap();
        assert_eq!(audit_dir_rel(&root), "mlbuild-out/.audit/_root/x");
    }
}
