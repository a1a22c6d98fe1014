//! The parallel build loop.
//!
//! Main function: [`build`]. Targets are planned in dependency order on the scheduler
//! task itself (planning is a few `stat`s and a hash, cheaper than handing it to a
//! thread), cache hits complete inline, and only misses are executed on blocking threads,
//! bounded by `--jobs` and by the declared resources against the workspace's capacity.
//! Fail-fast stops starting new actions but lets running ones finish, so their results are
//! still cached; Ctrl-C or SIGTERM kills running actions' process groups instead.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mlbuild_digest::Digest;
use mlbuild_graph::{diff_preimages, BuildGraph, ReadyQueue};
use mlbuild_sandbox::Isolation;
use mlbuild_store::{
    ActionResult, FileDigestCache, Invocation, LatestKey, OutputsLock, RemoteCache, RemoteError,
    RemoteErrorKind, Store, StoreLock, TargetRecord, TargetRun,
};
use mlbuild_workspace::{Label, Target, Workspace};
use rayon::prelude::*;
use tokio::task::JoinSet;

use crate::action::{execute, ActionEnv, Logs};
use crate::admission::Admission;
use crate::events::{BuildSummary, Event, TargetStatus};
use crate::gates::GateRunner;
use crate::outputs::link_into_workspace;
use crate::plan::{Outputs, Planned, Planner};
use crate::tools::ToolResolver;
use crate::ExecError;

/// How a build behaves.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub jobs: usize,
    pub keep_going: bool,
    /// Whether cached results may be reused (off for audits).
    pub cache_reads: bool,
    /// How actions are isolated; `None` probes the machine when the first action has to
    /// run, so a fully cached build never pays for the probe.
    pub isolation: Option<Isolation>,
    /// The command line, recorded in the build history.
    pub command_line: String,
    /// A remote cache tried after a local miss (when `cache_reads`) and, when it may
    /// write, given the results of executed actions. It can never fail a build: its
    /// errors become warnings and local rebuilds.
    pub remote: Option<Arc<dyn RemoteCache>>,
    /// Whether the build updates the workspace: links outputs into `mlbuild-out/`, keeps
    /// logs in `mlbuild-out/.logs/` and saves each target's latest key (what `why`,
    /// `status`, `log` and gc's roots read). Off for an audit's build, which must leave
    /// the workspace as its last build left it: its results still go to the action
    /// cache and its invocation to the history, and its logs to `mlbuild-out/.audit/`.
    pub update_workspace: bool,
    /// Record in the history the key of every target run, cached ones included (a named
    /// build: gc keeps the results it used). Otherwise cached runs are recorded without
    /// their keys, compactly.
    pub record_cached_keys: bool,
    /// The metrics of the model each release channel named by a `baseline =
    /// "channel:NAME"` holds, or why it could not be read.
    pub channel_baselines:
        std::collections::HashMap<String, Result<mlbuild_store::MetricValues, String>>,
}

/// Uploads running at once. Each holds a blocking thread (the CLI sizes its pool for
/// `jobs` plus these) and the client bounds its own connections anyway.
pub const UPLOADS_IN_FLIGHT: usize = 2;

pub(crate) type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// A miss waiting for a slot.
struct Pending {
    /// The target's topological position in the graph.
    pos: usize,
    label: Label,
    planned: Planned,
    reasons: Vec<String>,
}

type TaskResult = (
    usize,
    Label,
    Digest,
    String,
    Result<(ActionResult, bool), ExecError>,
    u64,
);

/// What a build reads from the store before planning: the shared store lock that keeps
/// gc out while it runs, each target's latest key with its cached result, and the file
/// digest cache. Tens of milliseconds for a large workspace, so the CLI loads it on
/// another thread while the workspace is still being parsed.
pub struct BuildState {
    ws_root: PathBuf,
    _gc_guard: StoreLock,
    records: HashMap<String, LatestKey>,
    files: FileDigestCache,
}

impl BuildState {
    /// Takes the shared store lock (waiting while gc runs), then loads the state of the
    /// workspace rooted at `ws_root` (canonical, as [`Workspace::root`]). Also removes
    /// the scratch left in the store by builds that died (see
    /// [`Store::reclaim_scratch`]), so crashes never accumulate there.
    pub fn load(store: &Store, ws_root: &Path) -> Result<BuildState, ExecError> {
        let gc_guard = store.build_lock_shared()?;
        // Best effort: what cannot be removed now is tried again by the next build, gc
        // and fsck, and must not stop this build.
        let _ = store.reclaim_scratch();
        let records = store.load_latest_keys(&ws_root.to_string_lossy())?;
        let files = store.file_digest_cache(ws_root)?;
        Ok(BuildState {
            ws_root: ws_root.to_path_buf(),
            _gc_guard: gc_guard,
            records,
            files,
        })
    }

    /// The workspace root this state was loaded for.
    pub fn ws_root(&self) -> &Path {
        &self.ws_root
    }
}

/// Builds every target of `graph`, reporting progress through `events`. Returns the
/// summary; errors of individual actions are reported as events, while errors that stop
/// the whole build (the store is unusable) are returned.
pub async fn build(
    ws: Arc<Workspace>,
    store: Arc<Store>,
    graph: &BuildGraph,
    opts: BuildOptions,
    events: EventSink,
) -> Result<BuildSummary, ExecError> {
    let state = BuildState::load(&store, &ws.root)?;
    build_with_state(ws, store, graph, opts, events, state).await
}

/// [`build`] with its [`BuildState`] loaded already, from the same store and for the
/// same workspace.
pub async fn build_with_state(
    ws: Arc<Workspace>,
    store: Arc<Store>,
    graph: &BuildGraph,
    opts: BuildOptions,
    events: EventSink,
    state: BuildState,
) -> Result<BuildSummary, ExecError> {
    assert_eq!(state.ws_root, ws.root, "build state of another workspace");
    let started = Instant::now();
    let started_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let BuildState {
        _gc_guard,
        mut records,
        files,
        ..
    } = state;
    // Shared with the threads that execute actions, which remember the links they make.
    let files = Arc::new(files);
    let ws_id = ws.root.to_string_lossy().into_owned();
    let tools = ToolResolver::new(ws.config.sandbox_path.clone());
    let jobs = opts.jobs.max(1);

    events(Event::BuildStarted {
        targets: graph.len(),
        jobs,
    });
    let mut isolation = opts.isolation;

    // Per-target state lives in arrays indexed by the target's topological position.
    let mut ready = ReadyQueue::new(graph);
    let mut outputs: Vec<Option<Outputs>> = (0..graph.len()).map(|_| None).collect();
    // Each target and its label's text, found and formatted once (on all cores) for
    // planning, records, events and history.
    let (targets, mut label_texts): (Vec<&Target>, Vec<String>) = (0..graph.len())
        .into_par_iter()
        .map(|pos| {
            let label = graph.label_at(pos);
            let target = ws.target(label).expect("graph targets exist");
            (target, label.to_string())
        })
        .unzip();
    // Each target is planned once per build, so its record can be taken; what is left
    // belongs to targets this build does not plan.
    let mut recorded: Vec<Option<LatestKey>> =
        label_texts.iter().map(|l| records.remove(l)).collect();
    let mut finished: Vec<Option<TargetStatus>> = vec![None; graph.len()];
    let mut new_records: Vec<(String, TargetRecord)> = Vec::new();
    let mut runs: Vec<TargetRun> = Vec::new();
    let mut summary = BuildSummary::default();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut running: JoinSet<TaskResult> = JoinSet::new();
    let mut admission = Admission::new(&ws);
    let mut gates = GateRunner::new(&ws_id).with_channels(opts.channel_baselines.clone());
    let tally = Arc::new(RemoteTally::default());
    let mut uploads: JoinSet<()> = JoinSet::new();
    let upload_slots = Arc::new(tokio::sync::Semaphore::new(UPLOADS_IN_FLIGHT));
    let mut stopping = false;
    let mut interrupted = false;
    let mut shutdown = Box::pin(shutdown_signal());
    // Another build of this workspace may be linking the same targets right now.
    let outputs_lock = Arc::new(store.outputs_lock(&ws.root));

    loop {
        // Plan every ready target at once: they are independent, and planning is mostly
        // `stat` calls, so a wave of them spreads over all cores. Hits complete here, in
        // the order the targets became ready; misses wait for a slot.
        while !stopping && !ready.is_empty() {
            let wave: Vec<(usize, Option<LatestKey>)> = ready
                .take_all()
                .map(|pos| (pos, recorded[pos].take()))
                .collect();
            let prep = Prep {
                ws: &ws,
                ws_id: &ws_id,
                store: &store,
                planner: Planner {
                    ws: &ws,
                    files: &files,
                    tools: &tools,
                },
                graph,
                targets: &targets,
                outputs: &outputs,
                cache_reads: opts.cache_reads,
                update_workspace: opts.update_workspace,
                outputs_lock: &outputs_lock,
            };
            let prepared: Vec<(usize, Prepared)> = wave
                .into_par_iter()
                .map(|(pos, record)| (pos, prep.prepare(pos, record)))
                .collect();
            for (pos, prepared) in prepared {
                let label = graph.label_at(pos);
                match prepared {
                    Prepared::Failed { error, ms } => {
                        fail(
                            label,
                            None,
                            error,
                            &events,
                            &mut summary,
                            &mut finished[pos],
                            &mut runs,
                            ms,
                        );
                        stopping = stopping || !opts.keep_going;
                    }
                    Prepared::Hit {
                        key,
                        key_hex,
                        result,
                        new_record,
                        ms,
                    } => {
                        let target = targets[pos];
                        if let Err(error) =
                            gates.check(&ws, &store, target, &result.outputs, &*events)
                        {
                            // The action's result stays valid; only this build fails.
                            if let Some(record) = new_record {
                                new_records.push((label.to_string(), record));
                            }
                            fail(
                                label,
                                Some(key),
                                error,
                                &events,
                                &mut summary,
                                &mut finished[pos],
                                &mut runs,
                                ms,
                            );
                            stopping = stopping || !opts.keep_going;
                            continue;
                        }
                        let label_text = std::mem::take(&mut label_texts[pos]);
                        events(Event::TargetFinished {
                            label: label_text.clone(),
                            status: TargetStatus::Cached,
                            key: Some(key_hex),
                            duration_ms: ms,
                            message: None,
                        });
                        summary.cached += 1;
                        runs.push(TargetRun {
                            label: label_text,
                            key: Some(key),
                            status: TargetStatus::Cached.as_str().to_string(),
                            duration_ms: ms,
                        });
                        if let Some(record) = new_record {
                            new_records.push((label.to_string(), record));
                        }
                        finished[pos] = Some(TargetStatus::Cached);
                        outputs[pos] = Some(result.outputs);
                        ready.complete(graph, pos);
                    }
                    Prepared::Miss(miss) => pending.push_back(miss),
                }
            }
        }

        // Start as many misses as jobs and resources allow, in the order they became ready.
        while !stopping && running.len() < jobs {
            // An idle machine always takes the first waiting action, whatever it asks for:
            // `check_schedulable` already refused requests no machine state could satisfy.
            let Some(pos) = admission.next(&pending, running.is_empty(), |p| &p.label) else {
                break;
            };
            let Pending {
                pos,
                label,
                planned,
                reasons,
            } = pending.remove(pos).expect("position is valid");
            admission.take(&label);
            let isolation = *isolation.get_or_insert_with(|| select_isolation(&events));
            let (ws2, store2, cache_reads) = (ws.clone(), store.clone(), opts.cache_reads);
            let update_workspace = opts.update_workspace;
            let (remote2, events2, tally2) = (opts.remote.clone(), events.clone(), tally.clone());
            let files2 = files.clone();
            let lock2 = outputs_lock.clone();
            running.spawn_blocking(move || {
                let t0 = Instant::now();
                let target = ws2.target(&label).expect("exists");
                let env = ActionEnv {
                    ws: &ws2,
                    store: &store2,
                    isolation,
                    audit: false,
                    logs: if update_workspace {
                        Logs::Build
                    } else {
                        Logs::Audit
                    },
                };
                let before = BeforeExecuting {
                    remote: remote2.as_deref(),
                    events: &events2,
                    tally: &tally2,
                    reasons,
                };
                let result = run_locked(&env, &store2, target, &planned, cache_reads, before)
                    .and_then(|(r, hit)| {
                        if update_workspace {
                            let links = Some(&*files2);
                            link_into_workspace(
                                &store2, &ws2.root, &label, &r.outputs, true, links, &lock2,
                            )?;
                        }
                        Ok((r, hit))
                    });
                let ms = t0.elapsed().as_millis() as u64;
                (pos, label, planned.key, planned.preimage_json, result, ms)
            });
        }

        if running.is_empty() {
            break;
        }

        tokio::select! {
            joined = running.join_next() => {
                let Some(joined) = joined else { continue };
                let (pos, label, key, preimage_json, result, ms) = match joined {
                    Ok(r) => r,
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                };
                let target = ws.target(&label).expect("exists");
                admission.release(&label);
                let result = result.and_then(|(result, hit)| {
                    let checked = gates.check(&ws, &store, target, &result.outputs, &*events);
                    checked.map(|()| (result, hit)).inspect_err(|_| {
                        // The action's result stays valid; only this build fails.
                        let record = TargetRecord { key, preimage: preimage_json.clone(), result: None };
                        new_records.push((label.to_string(), record));
                    })
                });
                match result {
                    Ok((result, hit)) => {
                        let status = if hit { TargetStatus::Cached } else { TargetStatus::Executed };
                        events(Event::TargetFinished {
                            label: label.to_string(),
                            status,
                            key: Some(key.to_hex()),
                            duration_ms: ms,
                            message: None,
                        });
                        if hit { summary.cached += 1 } else { summary.executed += 1 }
                        if let Some(remote) = opts.remote.as_ref().filter(|r| !hit && r.can_write() && target.kind != "filegroup") {
                            let upload = Upload { remote: remote.clone(), store: store.clone(), label: label.to_string(), key, result: result.clone() };
                            spawn_upload(&mut uploads, &upload_slots, upload, &events, &tally);
                        }
                        runs.push(run(&label, key, status, ms));
                        new_records.push((label.to_string(), TargetRecord { key, preimage: preimage_json, result: None }));
                        finished[pos] = Some(status);
                        outputs[pos] = Some(result.outputs);
                        ready.complete(graph, pos);
                    }
                    Err(e) if interrupted => {
                        let _ = e;
                        finished[pos] = Some(TargetStatus::Skipped);
                    }
                    Err(e) => {
                        fail(&label, Some(key), e, &events, &mut summary, &mut finished[pos], &mut runs, ms);
                        stopping = stopping || !opts.keep_going;
                    }
                }
            }
            _ = &mut shutdown, if !interrupted => {
                interrupted = true;
                stopping = true;
                mlbuild_sandbox::kill_all_running();
                events(Event::Warning { message: "interrupted: stopping running actions".into() });
            }
        }
    }

    // Uploads finish before the build returns, so the next runner finds the results.
    if interrupted {
        uploads.abort_all();
    }
    while uploads.join_next().await.is_some() {}
    let untrusted = tally
        .untrusted
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .warnings();
    for message in untrusted {
        events(Event::Warning { message });
    }
    summary.remote_hits = tally.hits.load(Ordering::Relaxed) as usize;
    summary.remote_downloaded_bytes = tally.downloaded_bytes.load(Ordering::Relaxed);
    summary.remote_uploads = tally.uploads.load(Ordering::Relaxed) as usize;
    summary.remote_uploaded_bytes = tally.uploaded_bytes.load(Ordering::Relaxed);
    summary.remote = opts.remote.is_some();
    summary.remote_limitation = opts.remote.as_ref().and_then(|r| r.limitation());

    // Everything that never ran was skipped because of a failure or an interruption.
    for (label, finished) in graph.topo_order().zip(&finished) {
        if finished.is_none() {
            events(Event::TargetFinished {
                label: label.to_string(),
                status: TargetStatus::Skipped,
                key: None,
                duration_ms: 0,
                message: None,
            });
            summary.skipped += 1;
        }
    }

    files.flush(&store)?;
    // The exec directories of this build's actions are gone before it returns.
    crate::trash::drain();
    if opts.update_workspace {
        if !new_records.is_empty() {
            store.save_workspace_state(&ws_id, &new_records)?;
        }
        // Records left untouched belong to targets this build did not plan; those no
        // longer declared anywhere in the workspace would otherwise root their outputs
        // against gc forever.
        let removed: Vec<String> = records
            .into_keys()
            .filter(|label| {
                Label::parse(label, "")
                    .ok()
                    .is_none_or(|l| ws.target(&l).is_none())
            })
            .collect();
        if !removed.is_empty() {
            store.forget_targets(&ws_id, &removed)?;
        }
    }
    summary.wall_ms = started.elapsed().as_millis() as u64;
    summary.interrupted = interrupted;
    summary.success = summary.failed == 0 && summary.skipped == 0 && !interrupted;
    if !opts.record_cached_keys {
        for run in runs
            .iter_mut()
            .filter(|r| r.status == TargetStatus::Cached.as_str())
        {
            run.key = None;
        }
    }
    summary.invocation_id = store.record_invocation(&Invocation {
        workspace: ws_id,
        command: opts.command_line.clone(),
        started_at,
        duration_ms: summary.wall_ms,
        success: summary.success,
        targets: runs,
    })?;
    store.record_metrics(summary.invocation_id, &gates.recorded)?;
    store.record_experiments(summary.invocation_id, &gates.checked, &gates.selections)?;
    events(Event::BuildFinished(summary.clone()));
    Ok(summary)
}

/// What planning one ready target found.
// Each value is made once per planned target and moved straight into a queue or the
// summary; boxing the larger variants would only add an allocation per target.
#[allow(clippy::large_enum_variant)]
enum Prepared {
    /// Reusable: its outputs are linked into the workspace already (or, for a build that
    /// leaves the workspace alone, all in the store).
    Hit {
        key: Digest,
        /// `key` in hex, formatted while planning in parallel rather than when reporting.
        key_hex: String,
        result: ActionResult,
        /// The record to save when the key differs from the last build's.
        new_record: Option<TargetRecord>,
        ms: u64,
    },
    /// Must execute.
    Miss(Pending),
    /// Cannot be planned (a missing source) or can never fit the machine.
    Failed { error: ExecError, ms: u64 },
}

/// Everything planning a wave of targets shares; only read, so the wave runs in parallel.
struct Prep<'a> {
    ws: &'a Workspace,
    ws_id: &'a str,
    store: &'a Store,
    planner: Planner<'a>,
    graph: &'a BuildGraph,
    /// By position: every target.
    targets: &'a [&'a Target],
    /// By position: the outputs of every target finished so far.
    outputs: &'a [Option<Outputs>],
    cache_reads: bool,
    update_workspace: bool,
    outputs_lock: &'a OutputsLock,
}

impl Prep<'_> {
    fn prepare(&self, pos: usize, mut record: Option<LatestKey>) -> Prepared {
        let t0 = Instant::now();
        let label = self.graph.label_at(pos);
        let target = self.targets[pos];
        let dep_outputs: Vec<&Outputs> = self
            .graph
            .dependencies_at(pos)
            .iter()
            .map(|&d| {
                self.outputs[d as usize]
                    .as_ref()
                    .expect("dependencies are planned before their dependents")
            })
            .collect();
        let planned = self.planner.plan_deps(target, &dep_outputs).and_then(|p| {
            check_schedulable(label, &target.resources, &self.ws.config.capacity).map(|()| p)
        });
        let planned = match planned {
            Ok(p) => p,
            Err(error) => {
                return Prepared::Failed {
                    error,
                    ms: elapsed_ms(t0),
                }
            }
        };
        let same_as_last = record.as_ref().is_some_and(|r| r.key == planned.key);
        let mut unavailable = None;
        let mut unsandboxed = None;
        if self.cache_reads {
            let found = lookup(self.store, record.as_mut(), &planned);
            // `[sandbox] require = true`: a result from an unisolated run is rebuilt.
            let found = found.filter(|r| {
                let accepted = !self.ws.config.sandbox_require || r.sandboxed();
                if !accepted {
                    unsandboxed = Some(r.isolation_name());
                }
                accepted
            });
            if let Some(result) = found {
                // A blob that vanished from the store turns the hit into a rebuild.
                let linked = if self.update_workspace {
                    link_into_workspace(
                        self.store,
                        &self.ws.root,
                        label,
                        &result.outputs,
                        !same_as_last,
                        Some(self.planner.files),
                        self.outputs_lock,
                    )
                } else {
                    match result
                        .outputs
                        .values()
                        .find(|o| !self.store.has_blob(&o.digest))
                    {
                        None => Ok(()),
                        Some(o) => Err(ExecError::Store(mlbuild_store::StoreError::Missing {
                            digest: o.digest,
                        })),
                    }
                };
                match linked {
                    Ok(()) => {
                        return Prepared::Hit {
                            key: planned.key,
                            key_hex: planned.key.to_hex(),
                            new_record: (!same_as_last).then(|| record_of(&planned)),
                            result,
                            ms: elapsed_ms(t0),
                        }
                    }
                    Err(e) => unavailable = Some(e),
                }
            }
        }
        let reasons = match record {
            _ if unsandboxed.is_some() => vec![format!(
                "cached result was not built in the sandbox (isolation `{}`) and `[sandbox] require = true`",
                unsandboxed.unwrap_or_default()
            )],
            None => vec!["never built in this workspace".to_string()],
            Some(r) if r.key == planned.key => vec![match unavailable {
                // A blob that is missing, or was altered in place and dropped.
                Some(e) => format!("cached result unavailable: {e}"),
                None => "cached result unavailable".to_string(),
            }],
            Some(_) => {
                // Read only now: a no-op build never needs the old preimages.
                let old = self
                    .store
                    .recorded_preimage(self.ws_id, &label.to_string())
                    .ok()
                    .flatten();
                let changes =
                    old.map_or_else(Vec::new, |old| diff_preimages(&old, &planned.preimage_json));
                if changes.is_empty() {
                    vec!["key changed".to_string()]
                } else {
                    changes.iter().map(ToString::to_string).collect()
                }
            }
        };
        Prepared::Miss(Pending {
            pos,
            label: label.clone(),
            planned,
            reasons,
        })
    }
}

/// A cached result for `planned`, from the state loaded at start (no query) or the action
/// cache (another workspace or an earlier key may have produced it).
fn lookup(
    store: &Store,
    record: Option<&mut LatestKey>,
    planned: &Planned,
) -> Option<ActionResult> {
    if let Some(r) = record.filter(|r| r.key == planned.key) {
        if let Some(result) = r.result.take() {
            return Some(result);
        }
    }
    store.get_action(&planned.key).ok().flatten()
}

/// Remote-cache traffic of one build, added up from the threads that ran it.
#[derive(Default)]
struct RemoteTally {
    hits: AtomicU64,
    downloaded_bytes: AtomicU64,
    uploads: AtomicU64,
    uploaded_bytes: AtomicU64,
    untrusted: std::sync::Mutex<Untrusted>,
}

/// Entries refused because no trusted key signed them: the same answer for every action
/// of a build (whose keys to trust is a setup question), so it is said once, with counts.
#[derive(Default)]
struct Untrusted {
    /// Entries signed, but only by keys not in `trusted_keys`.
    signed: u64,
    /// Their signers' key ids.
    signers: std::collections::BTreeSet<String>,
    /// Entries not signed at all.
    unsigned: u64,
}

impl Untrusted {
    fn add(&mut self, signers: Vec<String>) {
        if signers.is_empty() {
            self.unsigned += 1;
        } else {
            self.signed += 1;
            self.signers.extend(signers);
        }
    }

    /// The build's warnings, at most one per kind.
    fn warnings(&self) -> Vec<String> {
        let entries = |n: u64| match n {
            1 => "1 entry was".to_owned(),
            n => format!("{n} entries were"),
        };
        let mut out = Vec::new();
        if self.signed > 0 {
            let ids: Vec<String> = self.signers.iter().map(|id| format!("`{id}`")).collect();
            let (keys, them) = if ids.len() == 1 {
                ("a key", "that key")
            } else {
                ("keys", "those keys")
            };
            out.push(format!(
                "remote cache: {} signed by {keys} not in `trusted_keys` ({}) and not used: \
                 built locally instead (if you trust {them}, add {} to `[remote] trusted_keys`)",
                entries(self.signed),
                ids.join(", "),
                if ids.len() == 1 {
                    "its public key"
                } else {
                    "their public keys"
                },
            ));
        }
        if self.unsigned > 0 {
            out.push(format!(
                "remote cache: {} unsigned and not used (`trusted_keys` is set): built \
                 locally instead (writers sign entries with `--remote-signing-key`)",
                entries(self.unsigned),
            ));
        }
        out
    }
}

/// What a miss needs between taking its lock and executing: the remote to try, and the
/// `action_started` event to emit only once it really executes.
struct BeforeExecuting<'a> {
    remote: Option<&'a dyn RemoteCache>,
    events: &'a EventSink,
    tally: &'a RemoteTally,
    reasons: Vec<String>,
}

/// Executes under the cross-process action lock; another mlbuild process may have built
/// the same action while we waited for it, or the remote cache may have it.
fn run_locked(
    env: &ActionEnv<'_>,
    store: &Store,
    target: &mlbuild_workspace::Target,
    planned: &Planned,
    cache_reads: bool,
    before: BeforeExecuting<'_>,
) -> Result<(ActionResult, bool), ExecError> {
    let _lock = store.lock_action(&planned.key)?;
    let require = env.ws.config.sandbox_require;
    if cache_reads {
        if let Some(result) = store.get_action(&planned.key)? {
            if result.outputs.values().all(|o| store.has_blob(&o.digest))
                && (!require || result.sandboxed())
            {
                return Ok((result, true));
            }
        }
        // A filegroup's outputs are local files already: copying beats downloading.
        if target.kind != "filegroup" {
            if let Some(result) = fetch_remote(&before, store, &target.label, &planned.key, require)
            {
                return Ok((result, true));
            }
        }
    }
    (before.events)(Event::ActionStarted {
        label: target.label.to_string(),
        key: planned.key.to_hex(),
        reasons: before.reasons,
    });
    if target.kind == "filegroup" || target.select.is_some() {
        // Computed in-process; `execute` records its own result.
        let result = if target.kind == "filegroup" {
            ingest_filegroup(store, target, planned)?
        } else {
            crate::select::run_select(env.ws, store, target, planned)?
        };
        store.put_action(&planned.key, &result)?;
        return Ok((result, false));
    }
    Ok((execute(env, target, planned)?, false))
}

/// Tries the remote cache. Whatever goes wrong (unreachable, evicted, corrupt, untrusted)
/// is a warning and `None`: the caller builds locally.
fn fetch_remote(
    before: &BeforeExecuting<'_>,
    store: &Store,
    label: &Label,
    key: &Digest,
    require_sandbox: bool,
) -> Option<ActionResult> {
    let remote = before.remote?;
    let warn = |message: String| (before.events)(Event::Warning { message });
    match remote.fetch(key, store) {
        // Not recorded locally either: the local rebuild replaces it.
        Ok(Some(hit)) if require_sandbox && !hit.result.sandboxed() => None,
        Ok(Some(hit)) => {
            // Every blob is verified and in the store; record the entry so the next
            // build, and `mlbuild log`, find it locally.
            if let Err(e) = store.put_action(key, &hit.result) {
                warn(format!("cannot record the remote result of {label}: {e}"));
                return None;
            }
            before.tally.hits.fetch_add(1, Ordering::Relaxed);
            before
                .tally
                .downloaded_bytes
                .fetch_add(hit.transfer.bytes, Ordering::Relaxed);
            (before.events)(Event::RemoteDownloaded {
                label: label.to_string(),
                key: key.to_hex(),
                blobs: hit.transfer.blobs,
                bytes: hit.transfer.bytes,
            });
            Some(hit.result)
        }
        Ok(None) => None,
        Err(RemoteError {
            kind: RemoteErrorKind::Untrusted { signers },
            ..
        }) => {
            // Said once, at the end of the build.
            before
                .tally
                .untrusted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .add(signers);
            None
        }
        Err(e) => {
            warn(format!("remote cache: {e}; building {label} locally"));
            None
        }
    }
}

/// An executed result to upload.
struct Upload {
    remote: Arc<dyn RemoteCache>,
    store: Arc<Store>,
    label: String,
    key: Digest,
    result: ActionResult,
}

/// Uploads in the background, at most [`UPLOADS_IN_FLIGHT`] at once; a failure is a
/// warning, never a failed build.
fn spawn_upload(
    uploads: &mut JoinSet<()>,
    slots: &Arc<tokio::sync::Semaphore>,
    upload: Upload,
    events: &EventSink,
    tally: &Arc<RemoteTally>,
) {
    let (slots, events, tally) = (slots.clone(), events.clone(), tally.clone());
    uploads.spawn(async move {
        let Ok(_permit) = slots.acquire_owned().await else {
            return;
        };
        let Upload {
            remote,
            store,
            label,
            key,
            result,
        } = upload;
        let outcome =
            tokio::task::spawn_blocking(move || remote.upload(&key, &result, &store)).await;
        match outcome {
            // This client may no longer write (refused or down), already reported.
            Ok(Ok(None)) => {}
            Ok(Ok(Some(transfer))) => {
                tally.uploads.fetch_add(1, Ordering::Relaxed);
                tally
                    .uploaded_bytes
                    .fetch_add(transfer.bytes, Ordering::Relaxed);
                events(Event::RemoteUploaded {
                    label,
                    key: key.to_hex(),
                    blobs: transfer.blobs,
                    bytes: transfer.bytes,
                });
            }
            Ok(Err(e)) => events(Event::Warning {
                message: format!("remote cache: uploading {label} failed: {e}"),
            }),
            Err(_) => {}
        }
    });
}

/// A filegroup's outputs are its sources, relative to its package. They are copied into
/// the store (never hardlinked: that would make the user's files read-only); the caller
/// records the result.
pub(crate) fn ingest_filegroup(
    store: &Store,
    target: &mlbuild_workspace::Target,
    planned: &Planned,
) -> Result<ActionResult, ExecError> {
    let prefix = if target.label.package.is_empty() {
        String::new()
    } else {
        format!("{}/", target.label.package)
    };
    let mut outputs = BTreeMap::new();
    for (src, fd) in &planned.srcs {
        if !store.has_blob(&fd.digest) {
            let tmp = tempfile::NamedTempFile::new_in(store.tmp_dir())
                .map_err(|e| ExecError::io("cannot create a temp file in the store", e))?;
            std::fs::copy(&src.abs, tmp.path())
                .map_err(|e| ExecError::io(format!("cannot read `{}`", src.path), e))?;
            let stored = store.ingest_file(tmp.path())?;
            if stored.digest != fd.digest {
                return Err(ExecError::io(
                    format!("`{}` changed while it was being read", src.path),
                    std::io::Error::other("content changed"),
                ));
            }
        }
        let rel = src
            .path
            .strip_prefix(&prefix)
            .unwrap_or(&src.path)
            .to_string();
        outputs.insert(
            rel,
            mlbuild_store::OutputFile {
                digest: fd.digest,
                size: fd.size,
                executable: fd.executable,
            },
        );
    }
    let empty = store.put_bytes(b"")?;
    let result = ActionResult {
        outputs,
        exit_code: 0,
        stdout: empty,
        stderr: empty,
        duration_ms: 0,
        created_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
        isolation: Some(mlbuild_store::ActionIsolation::InProcess),
    };
    Ok(result)
}

/// Probes for namespace support once per build, and says which isolation actions get.
pub(crate) fn select_isolation(events: &EventSink) -> Isolation {
    let isolation = mlbuild_sandbox::probe();
    events(Event::SandboxSelected {
        sandbox: match isolation {
            Isolation::Namespaces => "namespaces".into(),
            Isolation::Plain => "none".into(),
        },
    });
    if isolation == Isolation::Plain {
        let why = mlbuild_sandbox::probe_failure().unwrap_or("user namespaces are unavailable");
        events(Event::Warning {
            message: format!(
                "actions run without isolation ({why}): undeclared files and the network are reachable"
            ),
        });
    }
    isolation
}

/// Plain-text rendering of a diagnostic with its help, for events. Unlike
/// `mlbuild_workspace::render_plain` it does not wrap lines: event messages also reach JSON
/// consumers and logs, where a help sentence split at column 120 reads as two.
pub(crate) fn render(error: &dyn miette::Diagnostic) -> String {
    let mut out = String::new();
    let handler =
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
            .with_wrap_lines(false);
    if handler.render_report(&mut out, error).is_err() {
        return error.to_string();
    }
    out.trim_end().to_string()
}

fn elapsed_ms(t0: Instant) -> u64 {
    t0.elapsed().as_millis() as u64
}

fn record_of(planned: &Planned) -> TargetRecord {
    TargetRecord {
        key: planned.key,
        preimage: planned.preimage_json.clone(),
        result: None,
    }
}

fn run(label: &Label, key: Digest, status: TargetStatus, ms: u64) -> TargetRun {
    TargetRun {
        label: label.to_string(),
        key: Some(key),
        status: status.as_str().to_string(),
        duration_ms: ms,
    }
}

#[allow(clippy::too_many_arguments)]
fn fail(
    label: &Label,
    key: Option<Digest>,
    error: ExecError,
    events: &EventSink,
    summary: &mut BuildSummary,
    finished: &mut Option<TargetStatus>,
    runs: &mut Vec<TargetRun>,
    ms: u64,
) {
    events(Event::TargetFinished {
        label: label.to_string(),
        status: TargetStatus::Failed,
        key: key.map(|k| k.to_hex()),
        duration_ms: ms,
        message: Some(render(&error)),
    });
    summary.failed += 1;
    if error.is_input_error() {
        summary.input_errors += 1;
    }
    *finished = Some(TargetStatus::Failed);
    if let Some(key) = key {
        runs.push(run(label, key, TargetStatus::Failed, ms));
    }
}

fn check_schedulable(
    label: &Label,
    need: &BTreeMap<String, f64>,
    capacity: &BTreeMap<String, f64>,
) -> Result<(), ExecError> {
    for (resource, &amount) in need {
        let cap = capacity.get(resource).copied().unwrap_or(0.0);
        // A target asking for more CPUs than the machine has still runs, alone.
        if amount > cap && resource != "cpu" {
            return Err(ExecError::Unschedulable {
                label: label.to_string(),
                resource: resource.clone(),
                need: amount,
                capacity: cap,
            });
        }
    }
    Ok(())
}

pub(crate) async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
