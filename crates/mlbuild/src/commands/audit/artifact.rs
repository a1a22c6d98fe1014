//! `mlbuild audit --artifact FILE --key PUB`: is this signed artifact what the current
//! workspace's sources build?
//!
//! Each step is a reason to stop, in this order: the artifact must match its signature
//! (the `mlbuild verify` check); its provenance must be signed by the same key and list
//! the artifact among its subjects; the workspace must hold the inputs the provenance
//! records (every source file with its digest, the same targets with the same params),
//! else there is nothing to reproduce from. Then every action of the target's closure runs
//! again without the cache, each on the outputs its dependencies produced in this run, as
//! a build from sources would, and the rebuilt archive must have the artifact's bytes.
//! Intermediate outputs are compared with the digests the provenance recorded, so a
//! mismatch names the first stage that did not reproduce, not just the artifact.
//! Exit codes: 0 reproduced, 1 not reproduced or not verified, 2 bad input (including a
//! workspace that does not hold the artifact's inputs).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use mlbuild_digest::Digest;
use mlbuild_exec::audit::{self, ActionAudit, AuditInputs, AuditStatus, FileChange, JsonChange};
use mlbuild_graph::BuildGraph;
use mlbuild_sign::intoto::ResourceDescriptor;
use mlbuild_sign::model::{sha256_file, SIGNATURE_FILE};
use mlbuild_sign::provenance::ProvenanceStatement;
use mlbuild_sign::PublicKey;
use mlbuild_workspace::Label;
use serde::Serialize;
use serde_json::Value;

use super::super::verify::{self, Rejection};
use super::{AuditArgs, Summary};
use crate::cli::Cli;
use crate::context::Context;
use crate::exit::{CmdResult, Code, Failure};

/// The outcome of an artifact audit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Verdict {
    /// The rebuilt archive has the artifact's bytes.
    Reproduced,
    /// Every file of the artifact was rebuilt with the same bytes except its signature,
    /// which this workspace signs with another key or not at all.
    ContentReproduced,
    /// Some file of the artifact differs.
    NotReproduced,
    /// The artifact does not match its signature.
    SignatureInvalid,
    /// The provenance is not signed by the key, or does not describe this artifact.
    ProvenanceInvalid,
    /// The workspace does not hold the inputs the provenance records.
    InputsChanged,
    /// An action failed when run again.
    RebuildFailed,
    Interrupted,
}

impl Verdict {
    fn code(self) -> Code {
        match self {
            Verdict::Reproduced | Verdict::ContentReproduced => Code::Ok,
            Verdict::InputsChanged => Code::BadInput,
            Verdict::Interrupted => Code::Interrupted,
            _ => Code::BuildFailed,
        }
    }
}

/// The JSON report of `mlbuild audit --artifact`.
#[derive(Serialize)]
struct Report {
    version: u32,
    mode: &'static str,
    artifact: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    provenance: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    key_id: String,
    success: bool,
    verdict: Verdict,
    message: String,
    /// Signature or provenance problems, one per line of output.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    problems: Vec<String>,
    /// Inputs of the workspace that are not the recorded ones.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    inputs: Vec<InputChange>,
    /// Tools that differ from the recorded ones (a warning: they may still give the
    /// same bytes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    archive: Option<ArchiveComparison>,
    /// Files of the artifact whose rebuilt bytes differ.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    files: Vec<ArtifactFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<Summary>,
    /// Every action of the closure, compared with the outputs the provenance recorded.
    actions: Vec<ActionAudit>,
}

/// An input of the workspace that is not as recorded.
#[derive(Debug, Serialize)]
struct InputChange {
    /// A workspace-relative source path, or a target label.
    name: String,
    /// `changed`, `missing`, `added` (sources); `params`, `target_missing`,
    /// `target_added` (targets); `unreadable`.
    change: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    recorded: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    current: Option<String>,
    /// For `params`: the params that differ.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    params: Vec<JsonChange>,
}

#[derive(Debug, Serialize)]
struct ToolChange {
    name: String,
    recorded: String,
    current: String,
}

#[derive(Debug, Serialize)]
struct ArchiveComparison {
    name: String,
    recorded_sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rebuilt_sha256: Option<String>,
    identical: bool,
}

#[derive(Debug, Serialize)]
struct ArtifactFile {
    /// `NAME/<path>`, as in the provenance's subjects.
    path: String,
    change: FileChange,
    #[serde(skip_serializing_if = "Option::is_none")]
    recorded_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rebuilt_sha256: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    json: Vec<JsonChange>,
    #[serde(skip_serializing_if = "is_zero")]
    json_more: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    diffoscope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

pub(super) fn run(
    cli: &Cli,
    args: &AuditArgs,
    file: &Path,
    diffoscope: Option<&Path>,
) -> CmdResult {
    let key_arg = args
        .key
        .as_ref()
        .expect("clap requires --key with --artifact");
    let key = PublicKey::load(&verify::resolve(cli, key_arg)).map_err(Failure::bad_input)?;
    let ctx = Context::load(cli)?;
    let path = verify::resolve(cli, file);
    let mut report = Report {
        version: super::REPORT_VERSION,
        mode: "artifact",
        artifact: file.to_owned(),
        provenance: None,
        target: None,
        key_id: key.key_id(),
        success: false,
        verdict: Verdict::NotReproduced,
        message: String::new(),
        problems: Vec::new(),
        inputs: Vec::new(),
        tools: Vec::new(),
        archive: None,
        files: Vec::new(),
        summary: None,
        actions: Vec::new(),
    };
    let finish = |mut report: Report, verdict: Verdict, message: String| -> CmdResult {
        report.verdict = verdict;
        report.success = verdict.code() == Code::Ok;
        report.message = message;
        let shown = super::write_report(cli, &ctx, args.report.as_deref(), &report)?;
        eprintln!(
            "audit {}: {}; report: {}",
            if report.success {
                "succeeded"
            } else {
                "FAILED"
            },
            report.message,
            shown.display()
        );
        if cli.json {
            super::super::print_json(&report);
        }
        Ok(verdict.code())
    };

    // 1. The artifact matches its signature.
    let checked = verify::check(&path, file, &key, None)?;
    match &checked.result {
        Ok(verified) => eprintln!(
            "verified `{}`: {} files signed by key {}",
            file.display(),
            verified.files.len(),
            verified.key_id
        ),
        Err(rejection) => {
            report.problems = match rejection {
                Rejection::Whole(message) => vec![message.clone()],
                Rejection::Files(problems) => problems.iter().map(ToString::to_string).collect(),
            };
            for problem in &report.problems {
                eprintln!("{problem}");
            }
            let message = format!("`{}` does not match its signature", file.display());
            return finish(report, Verdict::SignatureInvalid, message);
        }
    }

    // 2. The provenance is signed by the same key and describes this artifact.
    let canonical = std::fs::canonicalize(&path).map_err(|e| {
        Failure::bad_input(miette::miette!("cannot read `{}`: {e}", file.display()))
    })?;
    let is_dir = canonical.is_dir();
    let provenance_path = match &args.provenance {
        Some(p) => verify::resolve(cli, p),
        None => locate_provenance(&canonical, is_dir)?,
    };
    let shown_provenance = args
        .provenance
        .clone()
        .unwrap_or_else(|| shown_path(&ctx, &provenance_path));
    report.provenance = Some(shown_provenance.clone());
    let bytes = std::fs::read(&provenance_path).map_err(|e| {
        Failure::bad_input(miette::miette!(
            "cannot read the provenance `{}`: {e}",
            provenance_path.display()
        ))
    })?;
    let statement = match mlbuild_sign::provenance::verify(&bytes, &key) {
        Ok(s) => s,
        Err(e) => {
            let message = format!("provenance `{}`: {e}", shown_provenance.display());
            report.problems.push(message.clone());
            return finish(report, Verdict::ProvenanceInvalid, message);
        }
    };
    let label_text = statement
        .predicate
        .build_definition
        .external_parameters
        .target
        .clone();
    report.target = Some(label_text.clone());
    let label = match Label::parse(&label_text, "") {
        Ok(l) => l,
        Err(e) => {
            let message = format!("the provenance names no valid target: {e}");
            return finish(report, Verdict::ProvenanceInvalid, message);
        }
    };
    let subjects = subjects(&statement.subject);
    let name = label.name.clone();
    let problems = match (is_dir, &checked.dir) {
        (true, Some(dir)) => dir_covered(dir, &name, &subjects),
        _ => archive_covered(&canonical, &name, &subjects),
    };
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("{problem}");
        }
        report.problems = problems;
        let message = format!(
            "the provenance `{}` does not describe `{}`",
            shown_provenance.display(),
            file.display()
        );
        return finish(report, Verdict::ProvenanceInvalid, message);
    }
    eprintln!(
        "provenance `{}`: {label}, signed by the same key",
        shown_provenance.display()
    );

    // 3. The workspace holds the recorded inputs.
    let Some(_) = ctx.ws.target(&label) else {
        report.inputs.push(InputChange {
            name: label.to_string(),
            change: "target_missing",
            recorded: None,
            current: None,
            params: Vec::new(),
        });
        let message =
            format!("the workspace does not hold the artifact's inputs: `{label}` is not declared");
        return finish(report, Verdict::InputsChanged, message);
    };
    let graph = BuildGraph::new(&ctx.ws, std::slice::from_ref(&label))?;
    report.inputs = compare_inputs(&ctx, &graph, &statement);
    if !report.inputs.is_empty() {
        for change in &report.inputs {
            eprintln!("{}", describe_input(change));
        }
        let message = format!(
            "the workspace does not hold the artifact's inputs ({} difference{})",
            report.inputs.len(),
            if report.inputs.len() == 1 { "" } else { "s" }
        );
        return finish(report, Verdict::InputsChanged, message);
    }
    eprintln!(
        "inputs: the sources and params of {} target{} are as recorded",
        graph.len(),
        if graph.len() == 1 { "" } else { "s" }
    );

    // 4. Rebuild everything from sources, then compare.
    let run = super::run_engine(&ctx, &graph, args.jobs, AuditInputs::Rebuilt)?;
    let mut actions = run.actions;
    report.tools = compare_tools(&statement, &actions);
    for tool in &report.tools {
        eprintln!(
            "warning: tool `{}` is not the binary the artifact was built with (recorded blake3 {}, here {})",
            tool.name,
            short(&tool.recorded),
            short(&tool.current)
        );
    }
    compare_stages(&ctx, &statement, &label, &mut actions);
    if let Some(tool) = diffoscope {
        for action in &mut actions {
            super::diffoscope_action(&ctx, tool, action);
        }
    }
    let failed: Vec<&str> = actions
        .iter()
        .filter(|a| a.status == AuditStatus::Failed)
        .map(|a| a.label.as_str())
        .collect();
    let (verdict, message) = if run.interrupted {
        (Verdict::Interrupted, "interrupted".to_string())
    } else if !failed.is_empty() {
        let message = format!("the rebuild failed: {}", failed.join(", "));
        (Verdict::RebuildFailed, message)
    } else {
        let package = actions
            .iter()
            .find(|a| a.label == label.to_string())
            .expect("the target is in its own closure");
        let (archive, files) = compare_artifact(
            &ctx,
            &name,
            &subjects,
            package,
            checked.dir.as_deref(),
            diffoscope,
        );
        let (verdict, message) = artifact_verdict(&name, &archive, &files, &actions, &label);
        report.archive = Some(archive);
        report.files = files;
        let package = actions
            .iter_mut()
            .find(|a| a.label == label.to_string())
            .expect("the target is in its own closure");
        package.status = match verdict {
            Verdict::Reproduced | Verdict::ContentReproduced => AuditStatus::Reproducible,
            _ if package.nondeterministic.is_some() => AuditStatus::Nondeterministic,
            _ => AuditStatus::NotReproducible,
        };
        if verdict == Verdict::ContentReproduced {
            package.note = Some(format!(
                "every file but `{name}/{SIGNATURE_FILE}` is identical"
            ));
        }
        (verdict, message)
    };
    super::print_table(&actions);
    if !report.files.is_empty() {
        eprintln!("files of the artifact that differ:");
        for file in &report.files {
            print_artifact_file(file);
        }
    }
    report.summary = Some(Summary::of(&actions));
    report.actions = actions;
    finish(report, verdict, message)
}

/// The default provenance: `NAME.intoto.jsonl` in the directory holding the artifact,
/// then one directory up (the build writes `mlbuild-out/<pkg>/<name>.intoto.jsonl`
/// beside `mlbuild-out/<pkg>/<name>/`, which holds `<name>.tar.zst` and `<name>/`).
fn locate_provenance(artifact: &Path, is_dir: bool) -> Result<PathBuf, Failure> {
    let file_name = artifact
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = if is_dir {
        file_name.as_str()
    } else {
        file_name
            .strip_suffix(".tar.zst")
            .or_else(|| file_name.strip_suffix(".tzst"))
            .unwrap_or(&file_name)
    };
    let provenance = format!("{name}.intoto.jsonl");
    let near = artifact.parent();
    let candidates: Vec<PathBuf> = [near, near.and_then(Path::parent)]
        .into_iter()
        .flatten()
        .map(|d| d.join(&provenance))
        .collect();
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        let looked: Vec<String> = candidates.iter().map(|p| format!("`{}`", p.display())).collect();
        Failure::bad_input(miette::miette!(
            help = "pass it with `--provenance FILE`; a build writes it when a signing key is configured",
            "no provenance found for `{}`: looked for {}",
            artifact.display(),
            looked.join(" and ")
        ))
    })
}

fn shown_path(ctx: &Context, path: &Path) -> PathBuf {
    let root = std::fs::canonicalize(&ctx.ws.root).unwrap_or_else(|_| ctx.ws.root.clone());
    path.strip_prefix(&root)
        .map_or_else(|_| path.to_owned(), Path::to_owned)
}

/// Subject name -> sha256.
fn subjects(subject: &[ResourceDescriptor]) -> BTreeMap<String, String> {
    subject
        .iter()
        .filter_map(|s| Some((s.name.clone()?, s.digest.get("sha256")?.clone())))
        .collect()
}

fn archive_covered(archive: &Path, name: &str, subjects: &BTreeMap<String, String>) -> Vec<String> {
    let subject = format!("{name}.tar.zst");
    let Some(recorded) = subjects.get(&subject) else {
        return vec![format!("the provenance has no subject `{subject}`")];
    };
    match sha256_file(archive) {
        Ok(actual) if &actual == recorded => Vec::new(),
        Ok(actual) => vec![format!(
            "`{subject}`: the provenance records sha256 {recorded}, the file has {actual}"
        )],
        Err(e) => vec![format!("`{}`: cannot be read: {e}", archive.display())],
    }
}

fn dir_covered(dir: &Path, name: &str, subjects: &BTreeMap<String, String>) -> Vec<String> {
    let files = match mlbuild_sign::provenance::dir_subjects(dir) {
        Ok(f) => f,
        Err(e) => return vec![e.to_string()],
    };
    let mut problems = Vec::new();
    let mut present = BTreeSet::new();
    for file in files {
        let (Some(rel), Some(actual)) = (file.name, file.digest.get("sha256")) else {
            continue;
        };
        let subject = format!("{name}/{rel}");
        match subjects.get(&subject) {
            Some(recorded) if recorded == actual => {}
            Some(recorded) => problems.push(format!(
                "`{subject}`: the provenance records sha256 {recorded}, the file has {actual}"
            )),
            None => problems.push(format!("`{subject}`: not a subject of the provenance")),
        }
        present.insert(subject);
    }
    let prefix = format!("{name}/");
    for subject in subjects.keys().filter(|s| s.starts_with(&prefix)) {
        if !present.contains(subject) {
            problems.push(format!(
                "`{subject}`: a subject of the provenance, missing from the directory"
            ));
        }
    }
    problems
}

/// The annotation `kind` of a resolved dependency.
fn kind(d: &ResourceDescriptor) -> Option<&str> {
    d.annotations.as_ref()?.get("kind")?.as_str()
}

fn blake3(d: &ResourceDescriptor) -> Option<&str> {
    d.digest.get("blake3").map(String::as_str)
}

/// Sources (by digest), the set of targets and their params, against the workspace now.
fn compare_inputs(
    ctx: &Context,
    graph: &BuildGraph,
    statement: &ProvenanceStatement,
) -> Vec<InputChange> {
    let definition = &statement.predicate.build_definition;
    let mut changes = Vec::new();
    let change = |name: String,
                  change: &'static str,
                  recorded: Option<String>,
                  current: Option<String>| InputChange {
        name,
        change,
        recorded,
        current,
        params: Vec::new(),
    };

    let mut recorded_sources = BTreeSet::new();
    for dep in definition
        .resolved_dependencies
        .iter()
        .filter(|d| kind(d) == Some("source"))
    {
        let (Some(name), Some(digest)) = (dep.name.clone(), blake3(dep)) else {
            continue;
        };
        recorded_sources.insert(name.clone());
        let relative = Path::new(&name)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        if !relative {
            changes.push(change(
                name,
                "unreadable",
                Some(digest.to_owned()),
                Some("not a workspace-relative path".into()),
            ));
            continue;
        }
        match mlbuild_digest::hash_file(&ctx.ws.root.join(&name)) {
            Ok((current, _)) if current.to_hex() == digest => {}
            Ok((current, _)) => changes.push(change(
                name,
                "changed",
                Some(digest.to_owned()),
                Some(current.to_hex()),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                changes.push(change(name, "missing", Some(digest.to_owned()), None))
            }
            Err(e) => changes.push(change(
                name,
                "unreadable",
                Some(digest.to_owned()),
                Some(e.to_string()),
            )),
        }
    }

    let recorded_params = definition
        .external_parameters
        .params
        .as_object()
        .cloned()
        .unwrap_or_default();
    let closure: BTreeSet<String> = graph.topo_order().map(ToString::to_string).collect();
    for (label_text, recorded) in &recorded_params {
        let target = Label::parse(label_text, "")
            .ok()
            .and_then(|l| ctx.ws.target(&l));
        let Some(target) = target.filter(|_| closure.contains(label_text)) else {
            changes.push(change(label_text.clone(), "target_missing", None, None));
            continue;
        };
        let current = mlbuild_graph::params_to_json(&target.params);
        if &current != recorded {
            let (params, _) = audit::json_diff(recorded, &current);
            changes.push(InputChange {
                params,
                ..change(label_text.clone(), "params", None, None)
            });
        }
    }
    for label in graph.topo_order() {
        let text = label.to_string();
        if !recorded_params.contains_key(&text) {
            changes.push(change(text, "target_added", None, None));
            continue;
        }
        let target = ctx.ws.target(label).expect("graph targets exist");
        match ctx.ws.expand_srcs(target) {
            Ok(srcs) => {
                for src in srcs {
                    if !recorded_sources.contains(&src.path) {
                        let current = mlbuild_digest::hash_file(&src.abs)
                            .ok()
                            .map(|(d, _)| d.to_hex());
                        changes.push(change(src.path, "added", None, current));
                    }
                }
            }
            Err(e) => {
                // A declared source is gone: the digest check above names it already when
                // the provenance recorded it.
                if !changes.iter().any(|c| c.change == "missing") {
                    changes.push(change(text, "unreadable", None, Some(e.to_string())));
                }
            }
        }
    }
    changes
}

fn describe_input(c: &InputChange) -> String {
    match c.change {
        "changed" => format!(
            "source `{}`: changed (recorded blake3 {}, now {})",
            c.name,
            short(c.recorded.as_deref().unwrap_or_default()),
            short(c.current.as_deref().unwrap_or_default())
        ),
        "missing" => format!("source `{}`: missing from the workspace", c.name),
        "added" => format!("source `{}`: an input now, but not of the artifact", c.name),
        "params" => {
            let which: Vec<String> = c
                .params
                .iter()
                .map(|p| {
                    format!(
                        "{}: {} -> {}",
                        p.path,
                        p.recorded
                            .as_ref()
                            .map_or("(absent)".into(), Value::to_string),
                        p.rebuilt
                            .as_ref()
                            .map_or("(absent)".into(), Value::to_string)
                    )
                })
                .collect();
            format!("params of `{}` changed: {}", c.name, which.join(", "))
        }
        "target_missing" => format!(
            "target `{}`: in the artifact's closure, not in this workspace's",
            c.name
        ),
        "target_added" => format!(
            "target `{}`: in the closure now, but not when the artifact was built",
            c.name
        ),
        _ => format!(
            "`{}`: {}",
            c.name,
            c.current.as_deref().unwrap_or("cannot be read")
        ),
    }
}

/// Tools the rebuild resolved to other binaries than the recorded ones.
fn compare_tools(statement: &ProvenanceStatement, actions: &[ActionAudit]) -> Vec<ToolChange> {
    let mut changes: BTreeMap<String, ToolChange> = BTreeMap::new();
    let deps = &statement.predicate.build_definition.resolved_dependencies;
    for dep in deps.iter().filter(|d| kind(d) == Some("tool")) {
        let (Some(name), Some(recorded)) = (&dep.name, blake3(dep)) else {
            continue;
        };
        let current = actions
            .iter()
            .filter_map(|a| a.tools.get(name))
            .find(|d| d.to_hex() != recorded);
        if let Some(current) = current {
            changes.insert(
                name.clone(),
                ToolChange {
                    name: name.clone(),
                    recorded: recorded.to_owned(),
                    current: current.to_hex(),
                },
            );
        }
    }
    changes.into_values().collect()
}

/// Each rebuilt intermediate stage against the outputs the provenance recorded for it.
fn compare_stages(
    ctx: &Context,
    statement: &ProvenanceStatement,
    artifact: &Label,
    actions: &mut [ActionAudit],
) {
    let definition = &statement.predicate.build_definition;
    let outputs: Vec<(&str, &str)> = definition
        .resolved_dependencies
        .iter()
        .filter(|d| kind(d) == Some("output"))
        .filter_map(|d| Some((d.name.as_deref()?, blake3(d)?)))
        .collect();
    let keys = definition.internal_parameters.extra.get("actions");
    for action in actions.iter_mut() {
        if action.label == artifact.to_string() || action.status != AuditStatus::Rebuilt {
            continue;
        }
        let Ok(label) = Label::parse(&action.label, "") else {
            continue;
        };
        let prefix = format!("{}/", mlbuild_exec::out_dir_rel(&label));
        let recorded: BTreeMap<String, Digest> = outputs
            .iter()
            .filter_map(|(name, digest)| {
                Some((name.strip_prefix(&prefix)?.to_owned(), digest.parse().ok()?))
            })
            .collect();
        let rebuilt: BTreeMap<String, Digest> = action
            .rebuilt
            .iter()
            .flatten()
            .map(|(rel, f)| (rel.clone(), f.digest))
            .collect();
        if recorded.is_empty() && !rebuilt.is_empty() {
            action.note = Some("the provenance records no outputs of it".to_string());
            continue;
        }
        action.files = audit::diff_digests(&ctx.store, &recorded, &rebuilt);
        action.status = match (action.files.is_empty(), &action.nondeterministic) {
            (true, _) => AuditStatus::Reproducible,
            (false, Some(_)) => AuditStatus::Nondeterministic,
            (false, None) => AuditStatus::NotReproducible,
        };
        let recorded_key = keys
            .and_then(|k| k.get(&action.label))
            .and_then(Value::as_str);
        if let (Some(recorded_key), Some(key)) = (recorded_key, &action.key) {
            if recorded_key != key {
                action.note = Some(format!(
                    "its action key differs from the recorded one ({} here, {} recorded): an upstream output or a tool differs",
                    short(key),
                    short(recorded_key)
                ));
            }
        }
    }
}

/// The rebuilt archive and artifact files against the provenance's subjects; `original`
/// is the artifact's directory (unpacked), for value-level diffs of differing files.
fn compare_artifact(
    ctx: &Context,
    name: &str,
    subjects: &BTreeMap<String, String>,
    package: &ActionAudit,
    original: Option<&Path>,
    diffoscope: Option<&Path>,
) -> (ArchiveComparison, Vec<ArtifactFile>) {
    let sha_of = |d: &Digest| sha256_file(&ctx.store.blob_path(d)).ok();
    let outputs = package.rebuilt.clone().unwrap_or_default();
    let archive_name = format!("{name}.tar.zst");
    let recorded_sha256 = subjects.get(&archive_name).cloned().unwrap_or_default();
    let rebuilt_sha256 = outputs.get(&archive_name).and_then(|f| sha_of(&f.digest));
    let archive = ArchiveComparison {
        identical: rebuilt_sha256.as_deref() == Some(recorded_sha256.as_str()),
        name: archive_name,
        recorded_sha256,
        rebuilt_sha256,
    };

    let prefix = format!("{name}/");
    let rebuilt: BTreeMap<String, (String, Digest)> = outputs
        .iter()
        .filter(|(rel, _)| rel.starts_with(&prefix))
        .filter_map(|(rel, f)| Some((rel.clone(), (sha_of(&f.digest)?, f.digest))))
        .collect();
    let recorded: BTreeMap<&String, &String> = subjects
        .iter()
        .filter(|(s, _)| s.starts_with(&prefix))
        .collect();
    let paths: BTreeSet<&String> = recorded.keys().copied().chain(rebuilt.keys()).collect();
    let mut files = Vec::new();
    for path in paths {
        let old = recorded.get(path).copied();
        let new = rebuilt.get(path);
        let change = match (old, new) {
            (Some(a), Some((b, _))) if a == b => continue,
            (Some(_), Some(_)) => FileChange::Modified,
            (Some(_), None) => FileChange::Missing,
            (None, _) => FileChange::Extra,
        };
        let mut file = ArtifactFile {
            path: path.clone(),
            change,
            recorded_sha256: old.cloned(),
            rebuilt_sha256: new.map(|(s, _)| s.clone()),
            json: Vec::new(),
            json_more: 0,
            diffoscope: None,
            note: None,
        };
        let original_file = original.map(|d| d.join(&path[prefix.len()..]));
        if let (FileChange::Modified, Some(orig), Some((_, digest))) = (change, &original_file, new)
        {
            let rebuilt_file = ctx.store.blob_path(digest);
            if path.to_ascii_lowercase().ends_with(".json") {
                if let (Some(a), Some(b)) = (read_json(orig), read_json(&rebuilt_file)) {
                    let (json, total) = audit::json_diff(&a, &b);
                    file.json_more = total - json.len();
                    file.json = json;
                }
            }
            if let Some(tool) = diffoscope {
                let rel = &path[prefix.len()..];
                let result = super::diffoscope_file(
                    ctx,
                    tool,
                    &package.label,
                    &format!("{name}/{rel}"),
                    orig,
                    &rebuilt_file,
                );
                match result {
                    Ok(path) => file.diffoscope = Some(path),
                    Err(why) => file.note = Some(format!("diffoscope failed: {why}")),
                }
            }
        }
        files.push(file);
    }
    (archive, files)
}

fn read_json(path: &Path) -> Option<Value> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn artifact_verdict(
    name: &str,
    archive: &ArchiveComparison,
    files: &[ArtifactFile],
    actions: &[ActionAudit],
    artifact: &Label,
) -> (Verdict, String) {
    if archive.identical {
        return (
            Verdict::Reproduced,
            format!(
                "`{}` was rebuilt from this workspace with the same bytes (sha256 {})",
                archive.name, archive.recorded_sha256
            ),
        );
    }
    let signature = format!("{name}/{SIGNATURE_FILE}");
    let content: Vec<&ArtifactFile> = files.iter().filter(|f| f.path != signature).collect();
    if content.is_empty() {
        let how = match files.iter().find(|f| f.path == signature) {
            Some(f) if f.change == FileChange::Missing => {
                "the rebuild is unsigned (no signing key is configured here)"
            }
            _ => "the rebuild is signed with another key",
        };
        return (
            Verdict::ContentReproduced,
            format!(
                "every file of `{name}` was rebuilt with the same bytes, but not its signature: {how}; configure the artifact's signing key to compare the archive bytes"
            ),
        );
    }
    let differing: Vec<&str> = content.iter().map(|f| f.path.as_str()).collect();
    let mut message = format!(
        "`{}` is not reproducible: {} differ",
        archive.name,
        differing.join(", ")
    );
    let artifact = artifact.to_string();
    let stages: Vec<String> = actions
        .iter()
        .filter(|a| a.label != artifact)
        .filter(|a| {
            matches!(
                a.status,
                AuditStatus::NotReproducible | AuditStatus::Nondeterministic
            )
        })
        .map(|a| match (&a.status, &a.nondeterministic) {
            (AuditStatus::Nondeterministic, Some(reason)) => {
                format!("{} (declared nondeterministic: {reason})", a.label)
            }
            _ => a.label.clone(),
        })
        .collect();
    if !stages.is_empty() {
        message.push_str(&format!(
            "; stages that did not reproduce: {}",
            stages.join(", ")
        ));
    }
    (Verdict::NotReproduced, message)
}

fn print_artifact_file(file: &ArtifactFile) {
    eprintln!("    {}: {}", file.path, file.change.as_str());
    for change in file.json.iter().take(5) {
        eprintln!(
            "      {}: {} -> {}",
            change.path,
            change
                .recorded
                .as_ref()
                .map_or("(absent)".into(), Value::to_string),
            change
                .rebuilt
                .as_ref()
                .map_or("(absent)".into(), Value::to_string)
        );
    }
    if let Some(path) = &file.diffoscope {
        eprintln!("      diffoscope: {path}");
    }
    if let Some(note) = &file.note {
        eprintln!("      {note}");
    }
}

fn short(hex: &str) -> &str {
    &hex[..hex.len().min(12)]
}
