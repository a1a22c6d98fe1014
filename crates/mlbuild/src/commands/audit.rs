//! `mlbuild audit TARGETS`: does every action in the targets' closure produce the same
//! bytes when it runs again?
//!
//! First the targets are built as `mlbuild build` builds them, so every action has a
//! recorded result, but into the store only: an audit never changes what `mlbuild-out/`
//! holds outside `mlbuild-out/.audit/` (an audit run without the signing key must not
//! put an unsigned artifact where the signed one was). Then every action that runs a command runs a second time with
//! `mlbuild_exec::audit` (fresh exec root and sandbox, no cache reads, nothing recorded),
//! on its dependencies' recorded outputs, and its outputs are compared with the recorded
//! ones. The verdicts go to stderr as a table, to `mlbuild-out/.audit/report.json` (or
//! `--report`) and, with `--json`, to stdout; the second outputs stay under
//! `mlbuild-out/.audit/<pkg>/<name>/` and, where they differ, the recorded ones under
//! `mlbuild-out/.audit/.recorded/<pkg>/<name>/`. `--artifact` audits a signed package artifact
//! instead ([`artifact`]). Exit codes: 0 everything reproducible (declared
//! nondeterminism allowed), 1 something is not or a second run failed, 2 bad input.
//! Format and details: docs/audit.md. Main type: [`AuditArgs`].

mod artifact;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use clap::Args;
use mlbuild_digest::Digest;
use mlbuild_exec::audit::{
    self, ActionAudit, AuditInputs, AuditOptions, AuditRun, AuditStatus, FileDiff,
};
use mlbuild_exec::Event;
use mlbuild_graph::BuildGraph;
use serde::Serialize;

use crate::cli::{BuildArgs, Cli, Command as CliCommand};
use crate::context::Context;
use crate::exit::{CmdResult, Code, Failure};

/// The version of the report format; bumped on any incompatible change.
const REPORT_VERSION: u32 = 1;

/// Differing JSON values shown per file in the table (the report holds more).
const SHOWN_JSON_CHANGES: usize = 5;

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Targets or patterns whose closure is audited.
    #[arg(
        value_name = "TARGETS",
        required_unless_present = "artifact",
        conflicts_with = "artifact"
    )]
    pub targets: Vec<String>,
    /// Maximum number of actions running at once (default: number of cores).
    #[arg(short, long)]
    pub jobs: Option<usize>,
    /// Write the JSON report to FILE (default: `mlbuild-out/.audit/report.json`).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Run `diffoscope` (which must be on your PATH) on every differing file and keep its
    /// text report under `mlbuild-out/.audit/.diffoscope/`.
    #[arg(long)]
    pub diffoscope: bool,
    /// Audit a signed package artifact (`NAME.tar.zst` or its directory) instead: verify
    /// it and its provenance, rebuild it from this workspace's sources without the cache,
    /// and compare the bytes.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub artifact: Option<PathBuf>,
    /// The public key the artifact and its provenance are signed with (with `--artifact`).
    #[arg(long, value_name = "FILE", requires = "artifact")]
    pub key: Option<PathBuf>,
    /// The artifact's signed provenance (default: `NAME.intoto.jsonl` beside the artifact,
    /// or one directory up).
    #[arg(long, value_name = "FILE", requires = "artifact")]
    pub provenance: Option<PathBuf>,
    #[command(flatten)]
    pub remote: super::cache::RemoteArgs,
}

/// The JSON report of `mlbuild audit TARGETS`.
#[derive(Serialize)]
struct Report<'a> {
    version: u32,
    mode: &'static str,
    targets: &'a [String],
    success: bool,
    interrupted: bool,
    summary: Summary,
    actions: &'a [ActionAudit],
}

/// Counts of verdicts.
#[derive(Default, Serialize)]
pub(crate) struct Summary {
    actions: usize,
    reproducible: usize,
    not_reproducible: usize,
    nondeterministic: usize,
    failed: usize,
    skipped: usize,
    /// Actions whose recorded result was built outside the sandbox, or does not say.
    unsandboxed: usize,
}

impl Summary {
    pub(crate) fn of(actions: &[ActionAudit]) -> Summary {
        let mut s = Summary {
            actions: actions.len(),
            ..Summary::default()
        };
        for a in actions {
            match a.status {
                AuditStatus::Reproducible | AuditStatus::Rebuilt => s.reproducible += 1,
                AuditStatus::NotReproducible => s.not_reproducible += 1,
                AuditStatus::Nondeterministic => s.nondeterministic += 1,
                AuditStatus::Failed => s.failed += 1,
                AuditStatus::Skipped => s.skipped += 1,
            }
            s.unsandboxed += usize::from(a.recorded_unsandboxed());
        }
        s
    }

    fn line(&self) -> String {
        let mut line = format!(
            "{} actions: {} reproducible, {} not reproducible, {} nondeterministic (declared), {} failed",
            self.actions,
            self.reproducible,
            self.not_reproducible,
            self.nondeterministic,
            self.failed
        );
        if self.skipped > 0 {
            line.push_str(&format!(", {} skipped", self.skipped));
        }
        if self.unsandboxed > 0 {
            line.push_str(&format!(
                "; {} recorded without the sandbox",
                self.unsandboxed
            ));
        }
        line
    }
}

pub fn run(cli: &Cli, args: &AuditArgs) -> CmdResult {
    let diffoscope = args.diffoscope.then(find_diffoscope).transpose()?;
    if let Some(file) = &args.artifact {
        return artifact::run(cli, args, file, diffoscope.as_deref());
    }

    // A recorded result for every action: the build `mlbuild build` would run, except
    // that it leaves `mlbuild-out/` and the workspace's latest keys alone (an audit only
    // adds `mlbuild-out/.audit/`). It reads only the global options; its events stay
    // human-readable on stderr so that with `--json` stdout carries the report alone.
    let build_cli = Cli {
        directory: cli.directory.clone(),
        store: cli.store.clone(),
        json: false,
        set: cli.set.clone(),
        command: CliCommand::Clean,
    };
    let build_args = BuildArgs {
        targets: args.targets.clone(),
        jobs: args.jobs,
        keep_going: false,
        remote: args.remote.clone(),
        junit: None,
        name: None,
    };
    let built = super::build::run_for_audit(&build_cli, &build_args)?;
    if built != Code::Ok {
        eprintln!("error: the build did not succeed, so nothing was audited");
        return Ok(built);
    }

    let ctx = Context::load(cli)?;
    let labels = ctx.resolve(&args.targets)?;
    let graph = BuildGraph::new(&ctx.ws, &labels)?;
    let mut run = run_engine(&ctx, &graph, args.jobs, AuditInputs::Recorded)?;
    if let Some(tool) = &diffoscope {
        for action in &mut run.actions {
            diffoscope_action(&ctx, tool, action);
        }
    }

    let success = !run.interrupted && run.actions.iter().all(|a| a.status.is_ok());
    let report = Report {
        version: REPORT_VERSION,
        mode: "targets",
        targets: &args.targets,
        success,
        interrupted: run.interrupted,
        summary: Summary::of(&run.actions),
        actions: &run.actions,
    };
    let report_path = write_report(cli, &ctx, args.report.as_deref(), &report)?;
    print_table(&run.actions);
    eprintln!(
        "audit {}: {}; report: {}",
        if success { "succeeded" } else { "FAILED" },
        report.summary.line(),
        report_path.display()
    );
    if cli.json {
        super::print_json(&report);
    }
    Ok(exit_code(&run, success))
}

pub(crate) fn exit_code(run: &AuditRun, success: bool) -> Code {
    if run.interrupted {
        Code::Interrupted
    } else if success {
        Code::Ok
    } else {
        Code::BuildFailed
    }
}

/// Runs the audit engine on `graph`, printing which action runs again on stderr.
pub(crate) fn run_engine(
    ctx: &Context,
    graph: &BuildGraph,
    jobs: Option<usize>,
    inputs: AuditInputs,
) -> Result<AuditRun, Failure> {
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let sink = Arc::new(|e: Event| match e {
        Event::Warning { message } => eprintln!("warning: {message}"),
        Event::ActionStarted { label, .. } => eprintln!("auditing {label}"),
        _ => {}
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(jobs.max(1) + 2)
        .enable_all()
        .build()
        .map_err(|e| Failure::store(miette::miette!("cannot start the async runtime: {e}")))?;
    let opts = AuditOptions {
        jobs,
        isolation: None,
        inputs,
    };
    Ok(runtime.block_on(audit::audit(
        ctx.ws.clone(),
        ctx.store.clone(),
        graph,
        opts,
        sink,
    ))?)
}

/// Writes the report as pretty JSON to `path` (relative to `-C DIR`) or to
/// `mlbuild-out/.audit/report.json`; returns the path as shown to the user.
pub(crate) fn write_report<T: Serialize>(
    cli: &Cli,
    ctx: &Context,
    path: Option<&Path>,
    report: &T,
) -> Result<PathBuf, Failure> {
    let (full, shown) = match path {
        Some(p) => (super::verify::resolve(cli, p), p.to_owned()),
        None => {
            let rel = PathBuf::from("mlbuild-out/.audit/report.json");
            (ctx.ws.root.join(&rel), rel)
        }
    };
    let mut text = serde_json::to_string_pretty(report).expect("plain data serializes");
    text.push('\n');
    if let Some(dir) = full.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            Failure::bad_input(miette::miette!("cannot create `{}`: {e}", dir.display()))
        })?;
    }
    std::fs::write(&full, text).map_err(|e| {
        Failure::bad_input(miette::miette!(
            "cannot write the audit report `{}`: {e}",
            shown.display()
        ))
    })?;
    Ok(shown)
}

/// One line per action, then the differing files and JSON values of each that differs.
pub(crate) fn print_table(actions: &[ActionAudit]) {
    let width = actions.iter().map(|a| a.label.len()).max().unwrap_or(0);
    for action in actions {
        let verdict = match action.status {
            AuditStatus::Reproducible => "reproducible",
            AuditStatus::NotReproducible => "NOT REPRODUCIBLE",
            AuditStatus::Nondeterministic => "nondeterministic",
            AuditStatus::Rebuilt => "rebuilt",
            AuditStatus::Failed => "FAILED",
            AuditStatus::Skipped => "skipped",
        };
        let files: Vec<&str> = action.files.iter().map(|f| f.path.as_str()).collect();
        let mut line = format!("{verdict:<17} {:<width$}", action.label);
        if !files.is_empty() {
            line.push_str(&format!("  {}", files.join(", ")));
        }
        if let (AuditStatus::Nondeterministic, Some(reason)) =
            (action.status, &action.nondeterministic)
        {
            line.push_str(&format!(" (declared: {reason})"));
        }
        eprintln!("{}", line.trim_end());
        if action.recorded_unsandboxed() {
            let isolation = action.recorded_isolation.as_deref().unwrap_or_default();
            eprintln!(
                "    unsandboxed: the recorded result was built without the sandbox (isolation `{isolation}`); `[sandbox] require = true` rebuilds it in the sandbox"
            );
        }
        if let Some(note) = &action.note {
            eprintln!("    note: {note}");
        }
        if let Some(error) = &action.error {
            for l in error.lines() {
                eprintln!("    {l}");
            }
        }
        if action.status == AuditStatus::NotReproducible
            || action.status == AuditStatus::Nondeterministic
        {
            for file in &action.files {
                print_file(file);
            }
            if let Some(dir) = &action.rebuilt_dir {
                eprintln!("    second output: {dir}/");
            }
            if let Some(dir) = &action.recorded_dir {
                eprintln!("    recorded output: {dir}/");
            }
        }
    }
}

/// A differing file and, for JSON, its differing values.
pub(crate) fn print_file(file: &FileDiff) {
    eprintln!("    {}: {}", file.path, file.change.as_str());
    for change in file.json.iter().take(SHOWN_JSON_CHANGES) {
        eprintln!(
            "      {}: {} -> {}",
            change.path,
            shown_value(change.recorded.as_ref()),
            shown_value(change.rebuilt.as_ref())
        );
    }
    let more = file.json_more + file.json.len().saturating_sub(SHOWN_JSON_CHANGES);
    if more > 0 {
        eprintln!("      ... and {more} more (see the report)");
    }
    if let Some(note) = &file.note {
        eprintln!("      {note}");
    }
    if let Some(path) = &file.diffoscope {
        eprintln!("      diffoscope: {path}");
    }
}

/// A JSON value on one line, shortened; `(absent)` for a missing key.
fn shown_value(value: Option<&serde_json::Value>) -> String {
    const MAX: usize = 60;
    let Some(value) = value else {
        return "(absent)".to_string();
    };
    let text = value.to_string();
    if text.chars().count() <= MAX {
        return text;
    }
    let cut: String = text.chars().take(MAX).collect();
    format!("{cut}...")
}

/// `diffoscope` on the host PATH (it compares files outside any sandbox).
fn find_diffoscope() -> Result<PathBuf, Failure> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("diffoscope"))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            Failure::bad_input(miette::miette!(
                help = "install it (`pip install diffoscope` or your distribution's package), or drop `--diffoscope`",
                "`--diffoscope` was given, but `diffoscope` is not on your PATH"
            ))
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs diffoscope on each modified file of `action` whose two versions are both in the
/// store, and records where its report went (or why there is none).
pub(crate) fn diffoscope_action(ctx: &Context, tool: &Path, action: &mut ActionAudit) {
    let label = action.label.clone();
    for file in &mut action.files {
        let (Some(old), Some(new)) = (digest(&file.recorded), digest(&file.rebuilt)) else {
            continue;
        };
        if !ctx.store.has_blob(&old) || !ctx.store.has_blob(&new) {
            continue;
        }
        let result = diffoscope_file(
            ctx,
            tool,
            &label,
            &file.path,
            &ctx.store.blob_path(&old),
            &ctx.store.blob_path(&new),
        );
        record_diffoscope(file, result);
    }
}

pub(crate) fn record_diffoscope(file: &mut FileDiff, result: Result<String, String>) {
    match result {
        Ok(path) => file.diffoscope = Some(path),
        Err(why) => {
            let note = format!("diffoscope failed: {why}");
            file.note = Some(match file.note.take() {
                Some(n) => format!("{n}; {note}"),
                None => note,
            });
        }
    }
}

fn digest(hex: &Option<String>) -> Option<Digest> {
    hex.as_deref()?.parse().ok()
}

/// Compares `recorded` with `rebuilt` (copied under their output name, so the report
/// reads `recorded/<path>` vs `rebuilt/<path>`) and writes diffoscope's text report to
/// `mlbuild-out/.audit/.diffoscope/<pkg>/<name>/<path>.txt`; returns that path.
pub(crate) fn diffoscope_file(
    ctx: &Context,
    tool: &Path,
    label: &str,
    rel: &str,
    recorded: &Path,
    rebuilt: &Path,
) -> Result<String, String> {
    let label = mlbuild_workspace::Label::parse(label, "").map_err(|e| e.to_string())?;
    let own = mlbuild_exec::out_dir_rel(&label);
    let out_rel = format!(
        "mlbuild-out/.audit/.diffoscope/{}/{rel}.txt",
        own.strip_prefix("mlbuild-out/").unwrap_or(&own)
    );
    let out = ctx.ws.root.join(&out_rel);
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    for (side, from) in [("recorded", recorded), ("rebuilt", rebuilt)] {
        let dest = tmp.path().join(side).join(rel);
        std::fs::create_dir_all(dest.parent().expect("has a parent")).map_err(|e| e.to_string())?;
        std::fs::copy(from, &dest).map_err(|e| format!("cannot copy `{rel}`: {e}"))?;
    }
    std::fs::create_dir_all(out.parent().expect("has a parent")).map_err(|e| e.to_string())?;
    let status = Command::new(tool)
        .arg("--text")
        .arg(&out)
        .arg("--no-progress")
        .arg(Path::new("recorded").join(rel))
        .arg(Path::new("rebuilt").join(rel))
        .current_dir(tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", tool.display()))?;
    // 0: no differences found, 1: differences found; anything else is an error.
    match status.status.code() {
        Some(0 | 1) => Ok(out_rel),
        _ => Err(String::from_utf8_lossy(&status.stderr)
            .lines()
            .last()
            .unwrap_or("it exited with an error")
            .to_string()),
    }
}
