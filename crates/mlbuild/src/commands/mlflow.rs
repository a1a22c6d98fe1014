//! `mlbuild mlflow export`: a recorded build's targets as MLflow runs, and its package
//! artifacts as registered model versions.
//!
//! Teams that track experiments in MLflow keep doing so: each executed or cached target
//! of a build becomes a run carrying the params it read, its metrics (values and files),
//! and tags naming its label, action key, output digest, build and commit; sweep
//! variants become child runs of their selection; a `package` target's artifact is
//! uploaded with its `model.sig` and provenance and registered as a model version whose
//! source is the run. Runs are found again by their action key, so exporting a build
//! twice (or a cached target of a later build) changes nothing. Export reads only the
//! store's history and results: a failing server never touches a build's outcome.
//! Main functions: [`run`], [`export`], [`export_after_build`].

use std::collections::{BTreeMap, HashMap};

use clap::{Args, Subcommand};
use mlbuild_store::{ActionResult, InvocationRecord, TargetRun};
use mlbuild_workspace::Target;
use serde::Serialize;
use serde_json::Value;

use crate::cli::Cli;
use crate::commands::print_json;
use crate::context::Context;
use crate::exit::{CmdResult, Code, Failure};
use crate::mlflow_client::{quote, MlflowClient, MlflowError};

#[derive(Debug, Args)]
pub struct MlflowArgs {
    #[command(subcommand)]
    pub command: MlflowCommand,
}

#[derive(Debug, Subcommand)]
pub enum MlflowCommand {
    /// Export a build's targets as MLflow runs and its package artifacts as registered
    /// model versions (idempotent: runs are found again by their action key).
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Only these targets or patterns (default: every target the build executed or
    /// reused); a swept target's pattern includes its variants.
    #[arg(value_name = "TARGETS")]
    pub targets: Vec<String>,
    /// The tracking server's URL (default: `MLFLOW_TRACKING_URI`, else `[export.mlflow]
    /// tracking_uri` in MLBUILD.toml).
    #[arg(long, value_name = "URL")]
    pub tracking_uri: Option<String>,
    /// The MLflow experiment (default: `[export.mlflow] experiment`, else the workspace
    /// name, else `mlbuild`); created when missing.
    #[arg(long, value_name = "NAME")]
    pub experiment: Option<String>,
    /// Export this build (a name from `build --name`, or an id) instead of the last one.
    #[arg(long, value_name = "NAME|ID")]
    pub build: Option<String>,
}

/// Tags every exported run carries; `mlbuild.action_key` and `mlbuild.label` find it again.
pub const TAG_LABEL: &str = "mlbuild.label";
pub const TAG_ACTION_KEY: &str = "mlbuild.action_key";
pub const TAG_STORE_DIGEST: &str = "mlbuild.store_digest";
pub const TAG_BUILD: &str = "mlbuild.build";
pub const TAG_VCS_COMMIT: &str = "mlbuild.vcs_commit";

/// The domain of the digest in [`TAG_STORE_DIGEST`]: BLAKE3 of the canonical JSON of the
/// action's output manifest (path -> digest, size, executable).
const OUTPUTS_DOMAIN: &str = "mlbuild-mlflow-outputs";

/// What happened to one target.
#[derive(Debug, Serialize)]
pub struct Exported {
    pub label: String,
    pub run_id: String,
    /// `created`, or `unchanged` when a finished run with the same action key existed.
    pub outcome: &'static str,
    pub parent_run_id: Option<String>,
    /// `NAME/VERSION` of the model version registered for a package target.
    pub model_version: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ExportReport {
    pub tracking_uri: String,
    pub experiment: String,
    pub experiment_id: String,
    pub invocation_id: i64,
    pub runs: Vec<Exported>,
}

/// Where and what to export.
pub struct ExportRequest<'a> {
    pub tracking_uri: &'a str,
    pub experiment: &'a str,
    /// A build name or id; `None` is the workspace's last build.
    pub build: Option<&'a str>,
    /// Labels and patterns; empty is every run of the build.
    pub targets: &'a [String],
}

pub fn run(cli: &Cli, args: &MlflowArgs) -> CmdResult {
    match &args.command {
        MlflowCommand::Export(args) => run_export(cli, args),
    }
}

fn run_export(cli: &Cli, args: &ExportArgs) -> CmdResult {
    let ctx = Context::load(cli)?;
    let settings = ctx.ws.config.mlflow_export.as_ref();
    let tracking_uri = args
        .tracking_uri
        .clone()
        .or_else(|| {
            std::env::var("MLFLOW_TRACKING_URI")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .or_else(|| settings.map(|s| s.tracking_uri.clone()))
        .ok_or_else(|| {
            Failure::bad_input(miette::miette!(
                help = "pass `--tracking-uri http://HOST:PORT`, set `MLFLOW_TRACKING_URI`, \
                        or add `[export.mlflow] tracking_uri = \"...\"` to MLBUILD.toml",
                "no MLflow tracking server given"
            ))
        })?;
    let experiment = args
        .experiment
        .clone()
        .unwrap_or_else(|| default_experiment(&ctx));
    let report = export(
        &ctx,
        &ExportRequest {
            tracking_uri: &tracking_uri,
            experiment: &experiment,
            build: args.build.as_deref(),
            targets: &args.targets,
        },
    )?;
    if cli.json {
        print_json(&report);
    } else {
        print_report(&report);
    }
    Ok(Code::Ok)
}

/// `[export.mlflow] experiment`, else the workspace's name, else `mlbuild`.
fn default_experiment(ctx: &Context) -> String {
    ctx.ws
        .config
        .mlflow_export
        .as_ref()
        .and_then(|s| s.experiment.clone())
        .or_else(|| ctx.ws.config.name.clone())
        .unwrap_or_else(|| "mlbuild".to_owned())
}

fn print_report(report: &ExportReport) {
    for run in &report.runs {
        let mut line = format!("{} {}: run {}", run.outcome, run.label, run.run_id);
        if let Some(parent) = &run.parent_run_id {
            line.push_str(&format!(" (child of {parent})"));
        }
        if let Some(version) = &run.model_version {
            line.push_str(&format!(", model version {version}"));
        }
        println!("{line}");
    }
    let created = report
        .runs
        .iter()
        .filter(|r| r.outcome == "created")
        .count();
    println!(
        "exported build #{} to experiment `{}` ({}) at {}: {} created, {} unchanged",
        report.invocation_id,
        report.experiment,
        report.experiment_id,
        report.tracking_uri,
        created,
        report.runs.len() - created
    );
}

/// After `mlbuild build`, when MLBUILD.toml has `[export.mlflow]`: exports that build
/// and prints one line. The build's results and history are already recorded, whatever
/// happens here.
pub(crate) fn export_after_build(ctx: &Context, invocation_id: i64) -> Result<(), Failure> {
    let Some(settings) = &ctx.ws.config.mlflow_export else {
        return Ok(());
    };
    let experiment = default_experiment(ctx);
    let id = invocation_id.to_string();
    let report = export(
        ctx,
        &ExportRequest {
            tracking_uri: &settings.tracking_uri,
            experiment: &experiment,
            build: Some(&id),
            targets: &[],
        },
    )
    .map_err(|f| Failure {
        code: Code::BuildFailed,
        report: miette::miette!(
            help = format!(
                "the build succeeded and is recorded; run `mlbuild mlflow export --build {id}` \
                 once the server is reachable"
            ),
            "exporting build #{id} to MLflow failed: {:#}",
            f.report
        ),
    })?;
    let created = report
        .runs
        .iter()
        .filter(|r| r.outcome == "created")
        .count();
    eprintln!(
        "exported to MLflow experiment `{}`: {created} runs created, {} unchanged",
        report.experiment,
        report.runs.len() - created
    );
    Ok(())
}

fn mlflow_failure(e: MlflowError) -> Failure {
    let help = match &e {
        MlflowError::Unreachable { .. } => {
            "is `mlflow server` running there? Nothing of the build changes; export again later"
        }
        MlflowError::Status { status: 401 | 403, .. } => {
            "the server refused the credentials; MLflow's authentication is not supported yet"
        }
        _ => "the build's results are unchanged; what was exported so far is found again by its action keys on the next export",
    };
    Failure::bad_input(miette::miette!(help = help, "{e}"))
}

/// Exports one recorded build.
pub fn export(ctx: &Context, req: &ExportRequest<'_>) -> Result<ExportReport, Failure> {
    let client = MlflowClient::new(req.tracking_uri)
        .map_err(|e| Failure::bad_input(miette::miette!("{e}")))?;
    let ws_id = ctx.ws.root.to_string_lossy().into_owned();
    let record = find_build(ctx, &ws_id, req.build)?;
    let runs = selected_runs(ctx, &record, req.targets)?;
    let keys = run_keys(ctx, &ws_id, &record, &runs)?;
    let params = ctx.store.params_of(record.id)?.unwrap_or_default();
    let build_tag = ctx
        .store
        .invocation_name(record.id)?
        .unwrap_or_else(|| record.id.to_string());
    let commit = vcs_commit(&ctx.ws.root);
    let targets: HashMap<String, &Target> =
        ctx.ws.targets().map(|t| (t.label.to_string(), t)).collect();

    let experiment_id = client
        .experiment_id(req.experiment)
        .map_err(mlflow_failure)?;
    let mut run_ids: HashMap<String, String> = HashMap::new();
    let mut exported = Vec::new();
    // Selections (and every other plain target) before variants, so that a variant's
    // parent run exists when it is created.
    // Each group in label order, so that the report does not depend on which action
    // finished first.
    let mut ordered: Vec<&TargetRun> = runs.iter().collect();
    ordered
        .sort_by(|a, b| (a.label.contains('['), &a.label).cmp(&(b.label.contains('['), &b.label)));
    let started_ms = record.invocation.started_at.saturating_mul(1000);
    for run in ordered {
        let key = &keys[&run.label];
        let result = ctx.store.get_action(key)?.ok_or_else(|| {
            Failure::bad_input(miette::miette!(
                help = "rebuild it (`mlbuild build {}`), then export again",
                "the result of `{}` (action key {}) is no longer in the store",
                run.label,
                key.short()
            ))
        })?;
        let parent = run
            .label
            .split_once('[')
            .and_then(|(base, _)| run_ids.get(base))
            .cloned();
        let target = targets.get(&run.label).copied();
        let metrics: Vec<(String, f64)> = ctx
            .store
            .metrics_of(record.id, &run.label)?
            .map(|m| m.values.into_iter().collect())
            .unwrap_or_default();
        let one = RunExport {
            metrics,
            client: &client,
            ctx,
            experiment_id: &experiment_id,
            run,
            key: &key.to_hex(),
            result: &result,
            target,
            params: params.get(&run.label),
            build_tag: &build_tag,
            commit: commit.as_deref(),
            parent: parent.as_deref(),
            start_ms: started_ms,
        };
        let done = one.export().map_err(mlflow_failure)?;
        run_ids.insert(run.label.clone(), done.run_id.clone());
        exported.push(done);
    }
    Ok(ExportReport {
        tracking_uri: client.base().to_owned(),
        experiment: req.experiment.to_owned(),
        experiment_id,
        invocation_id: record.id,
        runs: exported,
    })
}

fn find_build(
    ctx: &Context,
    ws_id: &str,
    build: Option<&str>,
) -> Result<InvocationRecord, Failure> {
    let found = match build {
        Some(name) => ctx.store.find_invocation(ws_id, name)?,
        None => match ctx.store.recent_invocations(ws_id, 1)?.first() {
            Some(last) => ctx.store.invocation(ws_id, last.id)?,
            None => None,
        },
    };
    found.ok_or_else(|| match build {
        Some(name) => Failure::bad_input(miette::miette!(
            help = "`mlbuild history` lists the builds; name one with `mlbuild build --name NAME`",
            "no build named `{name}` in this workspace's history"
        )),
        None => Failure::bad_input(miette::miette!(
            help = "run `mlbuild build` first",
            "no build recorded in this workspace yet"
        )),
    })
}

/// The build's executed and cached runs, narrowed to `patterns` when given (a swept
/// target's label also selects its variants).
fn selected_runs(
    ctx: &Context,
    record: &InvocationRecord,
    patterns: &[String],
) -> Result<Vec<TargetRun>, Failure> {
    let wanted: Option<std::collections::HashSet<String>> = if patterns.is_empty() {
        None
    } else {
        Some(
            ctx.resolve(patterns)?
                .iter()
                .map(ToString::to_string)
                .collect(),
        )
    };
    let runs: Vec<TargetRun> = record
        .invocation
        .targets
        .iter()
        .filter(|r| r.status == "executed" || r.status == "cached")
        .filter(|r| {
            wanted.as_ref().is_none_or(|w| {
                w.contains(&r.label) || r.label.split_once('[').is_some_and(|(b, _)| w.contains(b))
            })
        })
        .cloned()
        .collect();
    if runs.is_empty() {
        return Err(Failure::bad_input(miette::miette!(
            help = "`mlbuild history` lists what each build ran",
            "build #{} executed or reused none of the targets asked for",
            record.id
        )));
    }
    Ok(runs)
}

/// Each run's action key. Executed runs and every run of a named build record theirs;
/// the cached runs of an unnamed build are the workspace's latest keys, known only while
/// it is the last build.
fn run_keys(
    ctx: &Context,
    ws_id: &str,
    record: &InvocationRecord,
    runs: &[TargetRun],
) -> Result<HashMap<String, mlbuild_digest::Digest>, Failure> {
    let mut keys = HashMap::new();
    let mut latest = None;
    for run in runs {
        let key = match run.key {
            Some(key) => key,
            None => {
                if latest.is_none() {
                    let last = ctx.store.recent_invocations(ws_id, 1)?;
                    latest = Some(if last.first().map(|l| l.id) == Some(record.id) {
                        ctx.store.load_latest_keys(ws_id)?
                    } else {
                        HashMap::new()
                    });
                }
                match latest.as_ref().and_then(|l| l.get(&run.label)) {
                    Some(latest) => latest.key,
                    None => {
                        return Err(Failure::bad_input(miette::miette!(
                            help = "export a build while it is the last one, or name builds \
                                    (`mlbuild build --name NAME`): a named build records every key",
                            "build #{} did not record the action key of `{}`, which it reused from the cache",
                            record.id,
                            run.label
                        )))
                    }
                }
            }
        };
        keys.insert(run.label.clone(), key);
    }
    Ok(keys)
}

/// The commit checked out in the workspace, when it is a git work tree with one.
fn vcs_commit(root: &std::path::Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["rev-parse", "--verify", "--quiet", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !commit.is_empty()).then_some(commit)
}

/// One target's export.
struct RunExport<'a> {
    client: &'a MlflowClient,
    ctx: &'a Context,
    experiment_id: &'a str,
    run: &'a TargetRun,
    key: &'a str,
    result: &'a ActionResult,
    target: Option<&'a Target>,
    params: Option<&'a Value>,
    metrics: Vec<(String, f64)>,
    build_tag: &'a str,
    commit: Option<&'a str>,
    parent: Option<&'a str>,
    start_ms: i64,
}

impl RunExport<'_> {
    fn export(&self) -> Result<Exported, MlflowError> {
        let label = &self.run.label;
        let filter = format!(
            "tags.\"{TAG_ACTION_KEY}\" = '{}' and tags.\"{TAG_LABEL}\" = '{}'",
            quote(self.key),
            quote(label)
        );
        let found = self.client.search_runs(self.experiment_id, &filter)?;
        if let Some(done) = found.iter().find(|r| r.status == "FINISHED") {
            return Ok(Exported {
                label: label.clone(),
                run_id: done.run_id.clone(),
                outcome: "unchanged",
                // Where the run was filed when it was made (an earlier build's selection,
                // if the grid has grown since).
                parent_run_id: done.parent_run_id.clone(),
                model_version: None,
            });
        }
        // A run left unfinished by an export that was interrupted: start it over.
        for stale in &found {
            self.client.delete_run(&stale.run_id)?;
        }
        let run = self
            .client
            .create_run(self.experiment_id, label, self.start_ms, &self.tags())?;
        let params = self.params.map(flatten_params).unwrap_or_default();
        self.client
            .log_batch(&run.run_id, &params, &self.metrics, self.start_ms)?;
        // The metrics files themselves, at their output paths.
        for file in self
            .target
            .map(|t| t.metrics.as_slice())
            .unwrap_or_default()
        {
            if let Some(out) = self.result.outputs.get(file) {
                self.upload(&run.artifact_uri, file, &out.digest)?;
            }
        }
        let model_version = match self.target {
            Some(t) if t.kind == "package" => Some(self.export_package(t, &run)?),
            _ => None,
        };
        self.client
            .finish_run(&run.run_id, self.start_ms + self.run.duration_ms as i64)?;
        Ok(Exported {
            label: label.clone(),
            run_id: run.run_id,
            outcome: "created",
            parent_run_id: self.parent.map(str::to_owned),
            model_version,
        })
    }

    fn tags(&self) -> Vec<(String, String)> {
        let (digest, _) = mlbuild_digest::digest_canonical(OUTPUTS_DOMAIN, &self.result.outputs);
        let mut tags = vec![
            (TAG_LABEL.to_owned(), self.run.label.clone()),
            (TAG_ACTION_KEY.to_owned(), self.key.to_owned()),
            (TAG_STORE_DIGEST.to_owned(), digest.to_hex()),
            (TAG_BUILD.to_owned(), self.build_tag.to_owned()),
            ("mlbuild.status".to_owned(), self.run.status.clone()),
            ("mlflow.source.name".to_owned(), self.run.label.clone()),
        ];
        if let Some(t) = self.target {
            tags.push(("mlbuild.kind".to_owned(), t.kind.clone()));
        }
        if let Some(commit) = self.commit {
            tags.push((TAG_VCS_COMMIT.to_owned(), commit.to_owned()));
            tags.push(("mlflow.source.git.commit".to_owned(), commit.to_owned()));
        }
        if let Some(parent) = self.parent {
            tags.push(("mlflow.parentRunId".to_owned(), parent.to_owned()));
        }
        tags
    }

    fn upload(
        &self,
        artifact_uri: &str,
        path: &str,
        digest: &mlbuild_digest::Digest,
    ) -> Result<(), MlflowError> {
        self.client
            .upload_artifact(artifact_uri, path, &self.ctx.store.blob_path(digest))
    }

    /// Uploads the artifact directory, its archive and its provenance, and registers the
    /// directory as a version of the model named after the target.
    fn export_package(
        &self,
        target: &Target,
        run: &crate::mlflow_client::RunInfo,
    ) -> Result<String, MlflowError> {
        for (path, out) in &self.result.outputs {
            self.upload(&run.artifact_uri, path, &out.digest)?;
        }
        let name = &target.label.name;
        // The provenance lives beside the outputs in the workspace, not in the store; it
        // goes along only when it describes this very action.
        let provenance = self
            .ctx
            .ws
            .root
            .join(crate::provenance::path_of(&target.label));
        let matches = std::fs::read(&provenance).is_ok_and(|bytes| describes(&bytes, self.key));
        if matches {
            self.client.upload_artifact(
                &run.artifact_uri,
                &format!("{name}.intoto.jsonl"),
                &provenance,
            )?;
        }
        self.client.ensure_registered_model(name)?;
        if let Some(version) = self
            .client
            .model_versions_of_run(name, &run.run_id)?
            .into_iter()
            .next()
        {
            return Ok(format!("{name}/{version}"));
        }
        let signed = self
            .result
            .outputs
            .contains_key(&format!("{name}/model.sig"));
        let tags = vec![
            (TAG_LABEL.to_owned(), self.run.label.clone()),
            (TAG_ACTION_KEY.to_owned(), self.key.to_owned()),
            ("mlbuild.signed".to_owned(), signed.to_string()),
            ("mlbuild.provenance".to_owned(), matches.to_string()),
        ];
        let version = self.client.create_model_version(
            name,
            &format!("{}/{name}", run.artifact_uri.trim_end_matches('/')),
            &run.run_id,
            &format!(
                "{} built by mlbuild (action key {})",
                self.run.label, self.key
            ),
            &tags,
        )?;
        Ok(format!("{name}/{version}"))
    }
}

/// Whether a provenance file (a DSSE envelope) describes the action with key `key` (the
/// file is overwritten by each signed build of the package, so it may be another's).
fn describes(envelope: &[u8], key: &str) -> bool {
    serde_json::from_slice::<mlbuild_sign::dsse::Envelope>(envelope)
        .ok()
        .and_then(|e| serde_json::from_slice::<Value>(&e.payload).ok())
        .is_some_and(|statement| {
            statement["predicate"]["buildDefinition"]["internalParameters"]["actionKey"] == key
        })
}

/// A target's params as MLflow params: dotted keys, strings as they are, other values
/// as JSON.
fn flatten_params(params: &Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
        match v {
            Value::Object(obj) if !obj.is_empty() => {
                for (k, child) in obj {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&path, child, out);
                }
            }
            Value::String(s) if !prefix.is_empty() => {
                out.insert(prefix.to_owned(), s.clone());
            }
            _ if !prefix.is_empty() => {
                out.insert(prefix.to_owned(), v.to_string());
            }
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    walk("", params, &mut out);
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_flatten_to_dotted_keys() {
        let p = serde_json::json!({"train": {"lr": 0.05, "opt": "adam", "layers": [64, 32]}, "seed": 42, "e": {}});
        assert_eq!(
            flatten_params(&p),
            [
                ("e".to_owned(), "{}".to_owned()),
                ("seed".to_owned(), "42".to_owned()),
                ("train.layers".to_owned(), "[64,32]".to_owned()),
                ("train.lr".to_owned(), "0.05".to_owned()),
                ("train.opt".to_owned(), "adam".to_owned()),
            ]
        );
    }
}
