//! `mlbuild build`: plan, run what is stale, link outputs, print a summary.

use std::sync::{Arc, Mutex};

use mlbuild_exec::{BuildOptions, BuildState, BuildSummary, Event, TargetStatus};
use mlbuild_graph::BuildGraph;
use mlbuild_store::Store;
use mlbuild_workspace::{SourceText, Workspace, WorkspaceConfig, WORKSPACE_FILE};

use crate::cli::{BuildArgs, Cli};
use crate::context::Context;
use crate::exit::{CmdResult, Code, Failure};
use crate::report::Reporter;

pub fn run(cli: &Cli, args: &BuildArgs) -> CmdResult {
    build(cli, args, true)
}

/// The build a command runs before its own work (`promote`): as `mlbuild build`, but its
/// report is always the human one on stderr, so that with `--json` stdout carries only
/// the command's own result.
pub(crate) fn run_quiet(cli: &Cli, args: &BuildArgs) -> CmdResult {
    build_reporting(cli, args, true, false)
}

/// The build an audit starts with: the same build, recorded in the action cache and the
/// history, that leaves `mlbuild-out/` (outputs, logs, provenance) and the workspace's
/// latest keys as the last `mlbuild build` left them. An audit run without the signing
/// key must not replace a signed artifact with an unsigned one.
pub(crate) fn run_for_audit(cli: &Cli, args: &BuildArgs) -> CmdResult {
    build(cli, args, false)
}

fn build(cli: &Cli, args: &BuildArgs, update_workspace: bool) -> CmdResult {
    build_reporting(cli, args, update_workspace, cli.json)
}

/// A build whose events are JSON lines on stdout when `json_events`, else the human
/// report on stderr.
fn build_reporting(
    cli: &Cli,
    args: &BuildArgs,
    update_workspace: bool,
    json_events: bool,
) -> CmdResult {
    if let Some(name) = &args.name {
        super::params::check_build_name(name)?;
    }
    let ahead = read_ahead(cli);
    // The graph is built before waiting for the store read ahead, which takes about as
    // long as loading the workspace.
    let ws = crate::context::load_workspace(cli)?;
    let current_package = crate::context::current_package(cli, &ws)?;
    let labels = crate::context::resolve(&ws, &current_package, &args.targets)?;
    let graph = BuildGraph::new(&ws, &labels)?;
    let mut ahead_state = None;
    let ctx = Context::with_workspace(cli, ws, current_package, |store_root| {
        let ahead = ahead.join().ok().flatten()?;
        (ahead.store.root() == store_root).then(|| {
            ahead_state = Some(ahead.state);
            ahead.store
        })
    })?;
    let state = match ahead_state.filter(|s| s.ws_root() == ctx.ws.root) {
        Some(state) => state,
        None => BuildState::load(&ctx.store, &ctx.ws.root)?,
    };
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let opts = BuildOptions {
        jobs,
        keep_going: args.keep_going,
        cache_reads: true,
        isolation: None,
        command_line: std::env::args().collect::<Vec<_>>().join(" "),
        remote: super::cache::open_remote(&ctx.ws, &args.remote)?,
        update_workspace,
        record_cached_keys: args.name.is_some(),
        channel_baselines: super::release::channel_baselines(&ctx.ws, &ctx.store, &args.remote)?,
    };
    let reporter = Reporter::new(json_events);
    // With `--junit`, events are also kept to write the report once the build ends.
    let recorded: Option<Arc<Mutex<Vec<Event>>>> = args.junit.as_ref().map(|_| Arc::default());
    let started_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    // Package targets that succeeded, with their keys: they get provenance afterwards.
    let packaged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let signing_key = crate::signing::loaded_key(&ctx.ws);
    let unsigned = signing_key.is_none();
    let build_started = std::time::SystemTime::now();
    let sink = {
        let reporter = reporter.clone();
        let recorded = recorded.clone();
        let packaged = packaged.clone();
        let package_labels: std::collections::HashSet<String> = ctx
            .ws
            .targets()
            .filter(|t| t.kind == "package")
            .map(|t| t.label.to_string())
            .collect();
        Arc::new(move |e: Event| {
            if let Event::TargetFinished {
                label,
                status: TargetStatus::Executed | TargetStatus::Cached,
                key: Some(key),
                ..
            } = &e
            {
                if !package_labels.is_empty() && package_labels.contains(label) {
                    packaged
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((label.clone(), key.clone()));
                }
            }
            // Said before the summary, and with `--json` as an event in the stream.
            if unsigned && matches!(e, Event::BuildFinished(_)) {
                let packaged = packaged.lock().unwrap_or_else(|e| e.into_inner());
                if !packaged.is_empty() {
                    reporter.handle(Event::Warning {
                        message: unsigned_warning(&packaged),
                    });
                }
            }
            if let Some(recorded) = &recorded {
                recorded
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(e.clone());
            }
            reporter.handle(e)
        })
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(jobs.max(1) + 2 + mlbuild_exec::UPLOADS_IN_FLIGHT)
        .enable_all()
        .build()
        .map_err(|e| Failure::store(miette::miette!("cannot start the async runtime: {e}")))?;
    // The params document only depends on the workspace: encode it while the build runs.
    let (summary, params) = std::thread::scope(|scope| {
        let params = scope.spawn(|| super::params::params_document(&ctx.ws, &graph));
        let summary = runtime.block_on(mlbuild_exec::build_with_state(
            ctx.ws.clone(),
            ctx.store.clone(),
            &graph,
            opts,
            sink,
            state,
        ));
        let params = params
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (summary, params)
    });
    let summary = summary?;
    if let (Some(path), Some(events)) = (&args.junit, &recorded) {
        let events = events.lock().unwrap_or_else(|e| e.into_inner());
        std::fs::write(path, crate::junit::render(&events, started_at)).map_err(|e| {
            Failure::bad_input(miette::miette!(
                "cannot write the JUnit report `{}`: {e}",
                path.display()
            ))
        })?;
    }
    super::params::record_build(&ctx, &params, &summary, args.name.as_deref())?;
    let packaged = std::mem::take(&mut *packaged.lock().unwrap_or_else(|e| e.into_inner()));
    // An audit's build leaves the workspace, its provenance included, as it was.
    if let (true, Some(key)) = (update_workspace, signing_key) {
        write_provenance(&ctx, &summary, build_started, packaged, &key)?;
    }
    // `[export.mlflow]`: after everything the build records, so a failing server
    // changes none of it.
    let exported = if update_workspace && summary.success {
        super::mlflow::export_after_build(&ctx, summary.invocation_id)
    } else {
        Ok(())
    };
    if let Err(failure) = &exported {
        eprintln!("{:?}", failure.report);
    }
    // The workspace is the process's largest structure, several small allocations per
    // target: freeing them one by one was ~5% of a 10,000-target no-op build, for memory
    // the process returns to the system on exit a moment later anyway.
    std::mem::forget(Arc::clone(&ctx.ws));
    Ok(if summary.interrupted {
        Code::Interrupted
    } else if summary.success {
        exported.map_or(Code::BuildFailed, |()| Code::Ok)
    } else if summary.input_errors > 0 {
        Code::BadInput
    } else {
        Code::BuildFailed
    })
}

/// The store and build state a build will need, read on another thread while the main
/// one parses the workspace: for a large workspace both take tens of milliseconds, mostly
/// on one core. Best effort and side-effect free: it only opens a store that exists and
/// needs no migration, and whatever fails or differs from what the workspace turns out
/// to use is left to the normal path, which reports it.
struct ReadAhead {
    store: Arc<Store>,
    state: BuildState,
}

fn read_ahead(cli: &Cli) -> std::thread::JoinHandle<Option<ReadAhead>> {
    let start = crate::context::start_dir(cli).ok();
    let store_flag = cli.store.clone();
    std::thread::spawn(move || {
        let root = Workspace::discover(&start?).ok()?;
        let store_root = match store_flag {
            Some(root) => root,
            None => {
                let text = std::fs::read_to_string(root.join(WORKSPACE_FILE)).ok()?;
                let source = Arc::new(SourceText {
                    name: WORKSPACE_FILE.to_owned(),
                    text,
                });
                WorkspaceConfig::parse(&source, &root)
                    .ok()?
                    .store
                    .unwrap_or_else(Store::default_root)
            }
        };
        let store = Arc::new(Store::open_existing(&store_root)?);
        let state = BuildState::load(&store, &root).ok()?;
        Some(ReadAhead { store, state })
    })
}

/// Why the package targets that succeeded have no signature and no provenance.
fn unsigned_warning(packaged: &[(String, String)]) -> String {
    let labels: Vec<&str> = packaged.iter().map(|(l, _)| l.as_str()).collect();
    format!(
        "{} unsigned and without provenance: set `{}` to a PEM private key \
         (`mlbuild key generate`) or `[signing] key` in MLBUILD.toml",
        labels.join(", ") + if labels.len() == 1 { " is" } else { " are" },
        crate::signing::KEY_FILE_ENV,
    )
}

/// Signs provenance for each package target that succeeded.
fn write_provenance(
    ctx: &Context,
    summary: &BuildSummary,
    started: std::time::SystemTime,
    packaged: Vec<(String, String)>,
    key: &mlbuild_sign::PrivateKey,
) -> Result<(), Failure> {
    if packaged.is_empty() {
        return Ok(());
    }
    let records = ctx
        .store
        .load_workspace_state(&ctx.ws.root.to_string_lossy())?;
    let facts = crate::provenance::BuildFacts {
        ws: &ctx.ws,
        records: &records,
        invocation_id: summary.invocation_id,
        started,
        finished: std::time::SystemTime::now(),
    };
    for (label, action_key) in packaged {
        let label = ctx.resolve_one(&label)?;
        if let Some(path) = crate::provenance::write(&facts, &label, &action_key, key)? {
            let shown = path.strip_prefix(&ctx.ws.root).unwrap_or(&path);
            eprintln!("signed provenance of {label}: {}", shown.display());
        }
    }
    Ok(())
}
