//! SLSA provenance for `package` artifacts, written after a build.
//!
//! The artifact's bytes must be reproducible, so everything that varies between runs (the
//! invocation, the times, the machine's tool paths) lives here instead, in a signed
//! in-toto statement beside the output directory: `mlbuild-out/<pkg>/<name>.intoto.jsonl`.
//! It is assembled from what the store recorded for every action in the artifact's
//! closure (each action's key preimage and outputs), so it describes exactly the inputs
//! the action keys covered: every source file, every tool binary, every intermediate
//! output, and the params of every target.
//!
//! Statement layout (relied on by `mlbuild audit --artifact`, see docs/signing.md):
//! subjects `NAME.tar.zst` and `NAME/<file>` (sha256); `externalParameters` = the target
//! label and `{label: params}` for the closure; `internalParameters` = the package's
//! action key, its kind, `actions` (`{label: key}`), `isolation` (`{label: how its
//! recorded result was isolated}`: `namespaces`, `plain`, `in_process`, `unknown`),
//! `platform`, `sourceDateEpoch` and,
//! when any target of the closure declares it, `nondeterministic` (`{label: reason}`);
//! `resolvedDependencies` = sources (`annotations.kind = "source"`), tools (`"tool"`) and
//! intermediate outputs (`"output"`), each with its BLAKE3 digest.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use mlbuild_sign::intoto::ResourceDescriptor;
use mlbuild_sign::provenance::{
    self, BuildMetadata, Builder, InternalParameters, Provenance, RunDetails, LOCAL_BUILDER_ID,
};
use mlbuild_sign::PrivateKey;
use mlbuild_store::TargetRecord;
use mlbuild_workspace::{Label, Workspace};
use serde_json::{json, Value};

use crate::exit::Failure;

/// Where the provenance of package target `label` is written, workspace-relative.
pub fn path_of(label: &Label) -> String {
    format!("{}.intoto.jsonl", mlbuild_exec::out_dir_rel(label))
}

/// One finished build, as far as provenance cares.
pub struct BuildFacts<'a> {
    pub ws: &'a Workspace,
    pub records: &'a HashMap<String, TargetRecord>,
    pub invocation_id: i64,
    pub started: SystemTime,
    pub finished: SystemTime,
}

/// Writes (or keeps, when it already describes the same action) the signed provenance
/// of package target `label`, whose action with key `key` just succeeded. Returns the
/// path when a new file was written.
pub fn write(
    facts: &BuildFacts<'_>,
    label: &Label,
    key: &str,
    signing_key: &PrivateKey,
) -> Result<Option<PathBuf>, Failure> {
    let path = facts.ws.root.join(path_of(label));
    let current = [
        ("actions", closure_keys(facts, label)),
        ("isolation", closure_isolation(facts, label)),
    ];
    if is_current(&path, &current, signing_key) {
        return Ok(None);
    }
    let statement = statement(facts, label, key)?;
    provenance::write_signed(&path, &statement, signing_key).map_err(|e| {
        Failure::store(miette::miette!(
            "cannot write the provenance of `{label}`: {e}"
        ))
    })?;
    Ok(Some(path))
}

/// Every action key of `label`'s closure, by label, as recorded by the build.
fn closure_keys(facts: &BuildFacts<'_>, label: &Label) -> serde_json::Map<String, Value> {
    closure(facts.ws, label)
        .iter()
        .filter_map(|l| {
            let name = l.to_string();
            let key = facts.records.get(&name)?.key.to_hex();
            Some((name, json!(key)))
        })
        .collect()
}

/// How each action of `label`'s closure was isolated, by label, as its recorded result
/// says: a result reused from an unsandboxed run must not pass for a sandboxed one.
fn closure_isolation(facts: &BuildFacts<'_>, label: &Label) -> serde_json::Map<String, Value> {
    closure(facts.ws, label)
        .iter()
        .filter_map(|l| {
            let name = l.to_string();
            let result = facts.records.get(&name)?.result.as_ref()?;
            Some((name, json!(result.isolation_name())))
        })
        .collect()
}

/// Whether `path` already holds provenance, signed by this key, for exactly these
/// actions, isolated the same way: the artifact was a cache hit and the build that made
/// it is the one to describe. Every key of the closure is compared, not only the
/// package's: an upstream action can get a new key (an edited source) yet produce the
/// same bytes, leaving the package cached while its inputs changed; and an action rebuilt
/// in the sandbox keeps its key.
fn is_current(
    path: &Path,
    fields: &[(&str, serde_json::Map<String, Value>)],
    signing_key: &PrivateKey,
) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    provenance::verify(&bytes, &signing_key.public_key()).is_ok_and(|s| {
        let recorded = &s.predicate.build_definition.internal_parameters.extra;
        fields
            .iter()
            .all(|(name, value)| recorded.get(*name) == Some(&Value::Object(value.clone())))
    })
}

/// The unsigned statement for `label`.
fn statement(
    facts: &BuildFacts<'_>,
    label: &Label,
    key: &str,
) -> Result<provenance::ProvenanceStatement, Failure> {
    let ws = facts.ws;
    let closure = closure(ws, label);
    let mut params = serde_json::Map::new();
    let mut actions = serde_json::Map::new();
    let mut sources: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    let mut tools: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut environments: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut outputs = Vec::new();
    for member in &closure {
        let name = member.to_string();
        let record = facts.records.get(&name).ok_or_else(|| {
            Failure::store(miette::miette!(
                "no recorded build of `{name}`, a dependency of `{label}`"
            ))
        })?;
        let preimage: Value = serde_json::from_str(&record.preimage).map_err(|e| {
            Failure::store(miette::miette!(
                "the recorded key of `{name}` is unreadable: {e}"
            ))
        })?;
        params.insert(name.clone(), preimage["params"].clone());
        actions.insert(name.clone(), json!(record.key.to_hex()));
        if let Some(inputs) = preimage["inputs"].as_object() {
            for (path, entry) in inputs {
                if path.starts_with("mlbuild-out/") {
                    continue; // an upstream output, listed with its producer below
                }
                let digest = entry["digest"].as_str().unwrap_or_default().to_owned();
                sources
                    .entry(path.clone())
                    .or_insert_with(|| (digest, Vec::new()))
                    .1
                    .push(name.clone());
            }
        }
        if let Some(used) = preimage["tools"].as_object() {
            for (tool, digest) in used {
                let digest = digest.as_str().unwrap_or_default().to_owned();
                tools
                    .entry((tool.clone(), digest))
                    .or_default()
                    .push(name.clone());
            }
        }
        if let Some(used) = preimage["environments"].as_object() {
            for (env, digest) in used {
                let digest = digest.as_str().unwrap_or_default().to_owned();
                environments
                    .entry((env.clone(), digest))
                    .or_default()
                    .push(name.clone());
            }
        }
        if member != label {
            let dir = mlbuild_exec::out_dir_rel(member);
            for (rel, file) in record.result.iter().flat_map(|r| &r.outputs) {
                let mut d = ResourceDescriptor::named(
                    format!("{dir}/{rel}"),
                    "blake3",
                    file.digest.to_hex(),
                );
                d.annotations = annotations("output", std::slice::from_ref(&name));
                outputs.push(d);
            }
        }
    }

    // Targets allowed to differ between runs: a verifier must not take this artifact's
    // bytes as reproducible when any of these is in its closure.
    let nondeterministic: serde_json::Map<String, Value> = closure
        .iter()
        .filter_map(|l| {
            let reason = ws.target(l)?.nondeterministic.clone()?;
            Some((l.to_string(), json!(reason)))
        })
        .collect();
    let mut resolved = Vec::new();
    for (path, (digest, users)) in sources {
        let mut d = ResourceDescriptor::named(path, "blake3", digest);
        d.annotations = annotations("source", &users);
        resolved.push(d);
    }
    let resolver = mlbuild_exec::ToolResolver::new(ws.config.sandbox_path.clone());
    for ((tool, digest), users) in tools {
        let mut d = ResourceDescriptor::named(tool.clone(), "blake3", digest);
        d.uri = tool_path(&resolver, &tool).map(|p| format!("file://{}", p.display()));
        d.annotations = annotations("tool", &users);
        resolved.push(d);
    }
    // A Python environment is one digest over its whole tree (the files of one built by
    // mlbuild are also listed as that target's outputs).
    for ((env, digest), users) in environments {
        let mut d = ResourceDescriptor::named(env, "blake3", digest);
        d.annotations = annotations("python_env", &users);
        resolved.push(d);
    }
    resolved.extend(outputs);

    let mut internal = InternalParameters {
        action_key: key.to_owned(),
        kind: "package".to_owned(),
        extra: BTreeMap::from([
            ("actions".to_owned(), Value::Object(actions)),
            (
                "isolation".to_owned(),
                Value::Object(closure_isolation(facts, label)),
            ),
            (
                "sourceDateEpoch".to_owned(),
                json!(ws.config.source_date_epoch),
            ),
            (
                "platform".to_owned(),
                json!(mlbuild_graph::ActionPreimage::platform()),
            ),
        ]),
    };
    if !nondeterministic.is_empty() {
        internal.extra.insert(
            "nondeterministic".to_owned(),
            Value::Object(nondeterministic),
        );
    }
    let run_details = RunDetails {
        builder: Builder::mlbuild(LOCAL_BUILDER_ID),
        metadata: BuildMetadata::new(
            format!("{}#{}", ws.root.display(), facts.invocation_id),
            facts.started,
            facts.finished,
        ),
        byproducts: Vec::new(),
    };
    let predicate = Provenance::for_target(
        label.to_string(),
        Value::Object(params),
        internal,
        resolved,
        run_details,
    );
    Ok(predicate.statement(subjects(ws, label)?))
}

/// The archive and every file of the artifact directory, by SHA-256.
fn subjects(ws: &Workspace, label: &Label) -> Result<Vec<ResourceDescriptor>, Failure> {
    let out = ws.root.join(mlbuild_exec::out_dir_rel(label));
    let name = &label.name;
    let archive = out.join(format!("{name}.tar.zst"));
    let cannot = |what: &Path, e: &dyn std::fmt::Display| {
        Failure::store(miette::miette!(
            "cannot hash `{}` for the provenance of `{label}`: {e}",
            what.display()
        ))
    };
    let sha = mlbuild_sign::model::sha256_file(&archive).map_err(|e| cannot(&archive, &e))?;
    let mut subjects = vec![ResourceDescriptor::named(
        format!("{name}.tar.zst"),
        "sha256",
        sha,
    )];
    let dir = out.join(name);
    for mut file in provenance::dir_subjects(&dir).map_err(|e| cannot(&dir, &e))? {
        file.name = file.name.map(|n| format!("{name}/{n}"));
        subjects.push(file);
    }
    Ok(subjects)
}

/// `label` and everything it depends on, dependencies first.
fn closure(ws: &Workspace, label: &Label) -> Vec<Label> {
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    fn visit(ws: &Workspace, l: &Label, seen: &mut BTreeSet<Label>, order: &mut Vec<Label>) {
        if !seen.insert(l.clone()) {
            return;
        }
        if let Some(t) = ws.target(l) {
            for d in &t.deps {
                visit(ws, d, seen, order);
            }
        }
        order.push(l.clone());
    }
    visit(ws, label, &mut seen, &mut order);
    order
}

fn annotations(kind: &str, targets: &[String]) -> Option<serde_json::Map<String, Value>> {
    let mut map = serde_json::Map::new();
    map.insert("kind".into(), json!(kind));
    map.insert("targets".into(), json!(targets));
    Some(map)
}

/// Where a tool lives on this machine (informational: the digest is what identifies it).
fn tool_path(resolver: &mlbuild_exec::ToolResolver, tool: &str) -> Option<PathBuf> {
    if tool == mlbuild_workspace::BUILTIN_PROGRAM {
        return std::env::current_exe().ok();
    }
    resolver
        .search_path()
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}
