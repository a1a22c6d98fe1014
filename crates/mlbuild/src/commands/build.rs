//! `mlbuild build`: plan, run what is stale, link outputs, print a summary.

use std::sync::{Arc, Mutex};

use mlbuild_exec::{BuildOptions, BuildSummary, Event, TargetStatus};
use mlbuild_graph::BuildGraph;

use crate::cli::{BuildArgs, Cli};
use crate::context::Context;
use crate::exit::{CmdResult, Code, Failure};
use crate::report::Reporter;

pub fn run(cli: &Cli, args: &BuildArgs) -> CmdResult {
    if let Some(name) = &args.name {
        super::params::check_build_name(name)?;
    }
    let ctx = Context::load(cli)?;
    let labels = ctx.resolve(&args.targets)?;
    let graph = BuildGraph::new(&ctx.ws, &labels)?;
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
    };
    let reporter = Reporter::new(cli.json);
    // With `--junit`, events are also kept to write the report once the build ends.
    let recorded: Option<Arc<Mutex<Vec<Event>>>> = args.junit.as_ref().map(|_| Arc::default());
    let started_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    // Package targets that succeeded, with their keys: they get provenance afterwards.
    let packaged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
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
                if package_labels.contains(label) {
                    packaged
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((label.clone(), key.clone()));
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
    let summary = runtime.block_on(mlbuild_exec::build(
        ctx.ws.clone(),
        ctx.store.clone(),
        &graph,
        opts,
        sink,
    ))?;
    if let (Some(path), Some(events)) = (&args.junit, &recorded) {
        let events = events.lock().unwrap_or_else(|e| e.into_inner());
        std::fs::write(path, crate::junit::render(&events, started_at)).map_err(|e| {
            Failure::bad_input(miette::miette!(
                "cannot write the JUnit report `{}`: {e}",
                path.display()
            ))
        })?;
    }
    super::params::record_build(&ctx, &graph, &summary, args.name.as_deref())?;
    let packaged = std::mem::take(&mut *packaged.lock().unwrap_or_else(|e| e.into_inner()));
    write_provenance(&ctx, &summary, build_started, packaged)?;
    Ok(if summary.interrupted {
        Code::Interrupted
    } else if summary.success {
        Code::Ok
    } else if summary.input_errors > 0 {
        Code::BadInput
    } else {
        Code::BuildFailed
    })
}

/// Signs provenance for each package target that succeeded, or says once why not.
fn write_provenance(
    ctx: &Context,
    summary: &BuildSummary,
    started: std::time::SystemTime,
    packaged: Vec<(String, String)>,
) -> Result<(), Failure> {
    if packaged.is_empty() {
        return Ok(());
    }
    let Some(key) = crate::signing::loaded_key(&ctx.ws) else {
        let labels: Vec<&str> = packaged.iter().map(|(l, _)| l.as_str()).collect();
        eprintln!(
            "warning: {} unsigned and without provenance: set `{}` to a PEM private key \
             (`mlbuild key generate`) or `[signing] key` in MLBUILD.toml",
            labels.join(", ") + if labels.len() == 1 { " is" } else { " are" },
            crate::signing::KEY_FILE_ENV,
        );
        return Ok(());
    };
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
        if let Some(path) = crate::provenance::write(&facts, &label, &action_key, &key)? {
            let shown = path.strip_prefix(&ctx.ws.root).unwrap_or(&path);
            eprintln!("signed provenance of {label}: {}", shown.display());
        }
    }
    Ok(())
}
