//! The selection of a sweep: read each variant's metric, pick the best, and output the
//! winner's files plus `selection.json` saying why.
//!
//! It runs in-process like a filegroup (reading a few small JSON files does not need a
//! sandbox) and is cached like any action: its key covers every variant's outputs, so it
//! reruns exactly when a variant's results change or a variant is added. Ties are broken
//! by label so the choice never depends on scheduling. Main function: [`run_select`].

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use mlbuild_store::{ActionResult, OutputFile, Store};
use mlbuild_workspace::{render_value, Goal, Select, Target, Workspace, SELECTION_FILE};
use serde::Serialize;

use crate::plan::Planned;
use crate::ExecError;

/// One variant's entry in `selection.json`.
#[derive(Clone, Serialize)]
struct VariantScore {
    label: String,
    /// The swept values of this variant.
    params: BTreeMap<String, toml::Value>,
    value: f64,
}

/// The content of `selection.json`.
#[derive(Serialize)]
struct Selection<'a> {
    selected: String,
    params: BTreeMap<String, toml::Value>,
    metric: &'a str,
    goal: Goal,
    file: &'a str,
    value: f64,
    reason: String,
    /// Every variant, best first.
    variants: Vec<VariantScore>,
}

fn error(target: &Target, message: String, help: Option<String>) -> ExecError {
    ExecError::Select {
        label: target.label.to_string(),
        message,
        help: help.unwrap_or_default(),
    }
}

/// Pick the best variant of the selection `target`; the caller records the result.
pub(crate) fn run_select(
    ws: &Workspace,
    store: &Store,
    target: &Target,
    planned: &Planned,
) -> Result<ActionResult, ExecError> {
    let select: &Select = target.select.as_ref().expect("only selections get here");
    let mut scores: Vec<(VariantScore, &str)> = Vec::with_capacity(target.deps.len());
    for dep in &target.deps {
        let dir = &planned.dep_dirs[&dep.name];
        let prefix = format!("{dir}/");
        let files: BTreeMap<&str, &OutputFile> = planned
            .dep_outputs
            .iter()
            .filter_map(|(rel, f)| rel.strip_prefix(&prefix).map(|r| (r, f)))
            .collect();
        let Some(file) = files.get(select.file.as_str()) else {
            return Err(error(
                target,
                format!("variant `{dep}` has no metrics file `{}`", select.file),
                Some(format!(
                    "`{}` must write `{}` under `{{out}}`",
                    dep, select.file
                )),
            ));
        };
        let bytes = store.read_blob(&file.digest)?;
        let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            error(
                target,
                format!(
                    "`{}` of variant `{dep}` is not valid JSON: {e}",
                    select.file
                ),
                Some(format!("see `{prefix}{}`", select.file)),
            )
        })?;
        let found = select
            .metric
            .split('.')
            .try_fold(&json, |v, part| v.as_object()?.get(part));
        let value = match found.and_then(serde_json::Value::as_f64) {
            Some(v) if v.is_finite() => v,
            Some(_) | None => {
                let what = if found.is_some() {
                    "is not a finite number"
                } else {
                    "is missing"
                };
                let keys: Vec<String> = json
                    .as_object()
                    .map(|o| o.keys().map(|k| format!("`{k}`")).collect())
                    .unwrap_or_default();
                return Err(error(
                    target,
                    format!(
                        "metric `{}` {what} in `{}` of variant `{dep}`",
                        select.metric, select.file
                    ),
                    Some(if keys.is_empty() {
                        "the file holds no metrics".to_owned()
                    } else {
                        format!("the file has {}", keys.join(", "))
                    }),
                ));
            }
        };
        let params = ws
            .target(dep)
            .and_then(|t| t.variant.clone())
            .unwrap_or_default();
        scores.push((
            VariantScore {
                label: dep.to_string(),
                params,
                value,
            },
            dir.as_str(),
        ));
    }
    if scores.is_empty() {
        return Err(error(target, "the sweep has no variants".to_owned(), None));
    }
    // Best first; equal values keep label order, so the smallest label wins a tie.
    scores.sort_by(|(a, _), (b, _)| {
        let order = a.value.total_cmp(&b.value);
        let order = match select.goal {
            Goal::Max => order.reverse(),
            Goal::Min => order,
        };
        order.then_with(|| a.label.cmp(&b.label))
    });
    let (best, best_dir) = &scores[0];
    let tied = scores.iter().filter(|(s, _)| s.value == best.value).count();
    let word = match select.goal {
        Goal::Max => "highest",
        Goal::Min => "lowest",
    };
    let mut reason = format!(
        "{word} `{}` ({}) of {} variants",
        select.metric,
        best.value,
        scores.len()
    );
    if tied > 1 {
        reason.push_str(&format!("; {tied} variants tie, the first by label wins"));
    }

    let mut outputs: BTreeMap<String, OutputFile> = BTreeMap::new();
    let prefix = format!("{best_dir}/");
    for (rel, file) in &planned.dep_outputs {
        if let Some(r) = rel.strip_prefix(&prefix) {
            outputs.insert(r.to_owned(), *file);
        }
    }
    let selection = Selection {
        selected: best.label.clone(),
        params: best.params.clone(),
        metric: &select.metric,
        goal: select.goal,
        file: &select.file,
        value: best.value,
        reason: reason.clone(),
        variants: scores.iter().map(|(s, _)| s.clone()).collect(),
    };
    let mut json = serde_json::to_string_pretty(&selection).expect("plain data serializes");
    json.push('\n');
    let digest = store.put_bytes(json.as_bytes())?;
    outputs.insert(
        SELECTION_FILE.to_owned(),
        OutputFile {
            digest,
            size: json.len() as u64,
            executable: false,
        },
    );

    // The log of a selection is its table, so `mlbuild log` answers "why this one".
    let mut log = format!("selected {} ({reason})\n", best.label);
    for (s, _) in &scores {
        let swept: Vec<String> = s
            .params
            .iter()
            .map(|(k, v)| format!("{k}={}", render_value(v)))
            .collect();
        log.push_str(&format!(
            "  {:>12}  {}  {}\n",
            s.value,
            if s.label == best.label { "*" } else { " " },
            if swept.is_empty() {
                s.label.clone()
            } else {
                swept.join(" ")
            }
        ));
    }
    let stdout = store.put_bytes(log.as_bytes())?;
    let stderr = store.put_bytes(b"")?;
    let result = ActionResult {
        outputs,
        exit_code: 0,
        stdout,
        stderr,
        duration_ms: 0,
        created_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
        isolation: Some(mlbuild_store::ActionIsolation::InProcess),
    };
    Ok(result)
}
