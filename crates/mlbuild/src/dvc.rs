//! Translating a DVC pipeline (`dvc.yaml`) into mlbuild targets.
//!
//! A team moving from DVC keeps its scripts, its params file and its data layout; only
//! the pipeline description changes. DVC runs each stage in the project directory, where
//! it reads and writes files at their project paths; an mlbuild action runs in a sandbox
//! where only its declared inputs exist and its outputs go to `{out}`. So each stage
//! becomes a target whose command lays out a scratch copy of the project (links to its
//! source deps, to the dependency targets' outputs, and the params it reads), runs the
//! stage's `cmd` there unchanged, and copies the declared outs into `{out}` at the same
//! relative paths: `mlbuild-out/<pkg>/<stage>/data/x.csv` holds what `dvc repro` writes to
//! `data/x.csv`, byte for byte. What has no mlbuild equivalent is listed by stage and
//! field instead of being dropped. Main function: [`import`]; main types: [`Imported`],
//! [`Note`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

/// Something of `dvc.yaml` that mlbuild does not do the same way.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Note {
    pub stage: String,
    pub field: String,
    pub message: String,
}

/// The result of an import.
#[derive(Debug)]
pub struct Imported {
    /// The text of `BUILD.toml`.
    pub build_toml: String,
    /// Target names, sorted.
    pub targets: Vec<String>,
    /// What was not carried over as it was.
    pub notes: Vec<Note>,
}

/// A stage after `foreach` expansion and interpolation, with project-relative paths.
#[derive(Debug, Default)]
struct Stage {
    /// The target name.
    name: String,
    /// The DVC stage name (`train@0`), for notes.
    dvc_name: String,
    cmd: String,
    /// The working directory, project-relative (`""` for the project root).
    wdir: String,
    deps: Vec<String>,
    outs: Vec<Out>,
    /// Params file (project-relative) -> keys (empty: the whole file).
    params: BTreeMap<String, Vec<String>>,
    always_changed: bool,
    /// A `matrix` turned into a sweep: axis -> values.
    sweep: Option<BTreeMap<String, Vec<Value>>>,
}

#[derive(Debug, Clone)]
struct Out {
    /// Project-relative path; for a swept stage it may hold `{params.item.K}`.
    path: String,
    metric: bool,
    dir: bool,
}

/// The DVC default params file.
const DEFAULT_PARAMS: &str = "params.yaml";

type Error = String;

/// Imports `dvc.yaml` at `path`; its directory is the DVC project and the package the
/// targets go to.
pub fn import(path: &Path) -> Result<Imported, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let project = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| format!("`{}` is not valid YAML: {e}", path.display()))?;
    let doc = to_json(doc);
    let mut notes = Vec::new();
    let vars = load_vars(&project, &doc)?;
    let Some(stages) = doc.get("stages").and_then(Value::as_object) else {
        return Err(format!("`{}` has no `stages`", path.display()));
    };
    let lock = load_lock(&project);
    let mut expanded = Vec::new();
    for (name, def) in stages {
        expand_stage(&project, name, def, &vars, &lock, &mut expanded, &mut notes)?;
    }
    let build_toml = render(&project, &expanded, &mut notes)?;
    Ok(Imported {
        build_toml,
        targets: expanded.into_iter().map(|s| s.name).collect(),
        notes,
    })
}

/// `serde_yaml_ng` values as JSON values (mapping keys as strings), which is what DVC's
/// interpolation works on.
fn to_json(v: serde_yaml_ng::Value) -> Value {
    use serde_yaml_ng::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(seq) => Value::Array(seq.into_iter().map(to_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Y::String(s) => s,
                        other => scalar_text(&to_json(other)),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(t) => to_json(t.value),
    }
}

/// The variables `${...}` may use: `params.yaml` when it exists (DVC reads it by
/// default), then each `vars` entry (a file, `file:key,...`, or a mapping), later ones
/// taking precedence.
fn load_vars(project: &Path, doc: &Value) -> Result<Value, Error> {
    let mut vars = serde_json::Map::new();
    let default = project.join(DEFAULT_PARAMS);
    if default.is_file() {
        merge(&mut vars, read_data_file(&default)?);
    }
    for entry in doc
        .get("vars")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match entry {
            Value::String(spec) => {
                let (file, keys) = match spec.split_once(':') {
                    Some((f, k)) => (f, Some(k)),
                    None => (spec.as_str(), None),
                };
                let data = read_data_file(&project.join(file))?;
                match keys {
                    None => merge(&mut vars, data),
                    Some(keys) => {
                        for key in keys.split(',').map(str::trim) {
                            if let Some(v) = data.get(key) {
                                vars.insert(key.to_owned(), v.clone());
                            }
                        }
                    }
                }
            }
            Value::Object(map) => merge(&mut vars, Value::Object(map.clone())),
            other => return Err(format!("unsupported `vars` entry `{other}`")),
        }
    }
    Ok(Value::Object(vars))
}

fn merge(into: &mut serde_json::Map<String, Value>, from: Value) {
    if let Value::Object(map) = from {
        into.extend(map);
    }
}

/// A YAML, JSON or TOML file's content.
fn read_data_file(path: &Path) -> Result<Value, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let parsed = if path.extension().is_some_and(|e| e == "toml") {
        toml::from_str::<toml::Value>(&text)
            .map_err(|e| e.to_string())
            .and_then(|v| serde_json::to_value(v).map_err(|e| e.to_string()))
    } else {
        serde_yaml_ng::from_str(&text)
            .map(to_json)
            .map_err(|e| e.to_string())
    };
    parsed.map_err(|e| format!("cannot parse `{}`: {e}", path.display()))
}

/// `dvc.lock`, to tell directory outputs from files when they are not on disk.
fn load_lock(project: &Path) -> Value {
    std::fs::read_to_string(project.join("dvc.lock"))
        .ok()
        .and_then(|t| serde_yaml_ng::from_str(&t).ok())
        .map_or(Value::Null, to_json)
}

/// Interpolates `${...}` in every string of `v`. A string that is exactly one `${x}`
/// becomes `x`'s value, as in DVC.
fn interpolate(v: &Value, ctx: &Value, keep_item: bool) -> Result<Value, Error> {
    Ok(match v {
        Value::String(s) => interpolate_str(s, ctx, keep_item)?,
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| interpolate(x, ctx, keep_item))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, x) in m {
                let key = match interpolate_str(k, ctx, keep_item)? {
                    Value::String(s) => s,
                    other => scalar_text(&other),
                };
                out.insert(key, interpolate(x, ctx, keep_item)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// With `keep_item`, `${item.K}` becomes the mlbuild placeholder `{params.item.K}` (a
/// swept stage's value differs per variant), escaping other braces for `cmd`.
fn interpolate_str(s: &str, ctx: &Value, keep_item: bool) -> Result<Value, Error> {
    let trimmed = s.trim();
    if trimmed.starts_with("${")
        && trimmed.ends_with('}')
        && trimmed[2..].find('}') == Some(trimmed.len() - 3)
    {
        let expr = trimmed[2..trimmed.len() - 1].trim();
        if !(keep_item && is_item(expr)) {
            return lookup(ctx, expr).cloned();
        }
    }
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in `{s}`"))?;
        let expr = after[..end].trim();
        if keep_item && is_item(expr) {
            out.push_str(&format!("\u{0}params.{expr}\u{1}"));
        } else {
            out.push_str(&scalar_text(lookup(ctx, expr)?));
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Value::String(out))
}

fn is_item(expr: &str) -> bool {
    expr == "item" || expr.starts_with("item.")
}

/// `a.b.c` or `a[0].b` in the variables.
fn lookup<'a>(ctx: &'a Value, expr: &str) -> Result<&'a Value, Error> {
    let mut v = ctx;
    for part in expr.split('.') {
        let (name, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            v = v
                .get(name)
                .ok_or_else(|| format!("`${{{expr}}}`: no variable `{name}`"))?;
        }
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            let index = index.trim_end_matches(']');
            v = match index.parse::<usize>() {
                Ok(i) => v.get(i),
                Err(_) => v.get(index),
            }
            .ok_or_else(|| format!("`${{{expr}}}`: no element `{index}`"))?;
        }
    }
    Ok(v)
}

/// A value as DVC prints it into a string: strings raw, booleans lowercase, numbers as
/// JSON writes them.
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "None".to_owned(),
        other => other.to_string(),
    }
}

/// A project-relative, normalized path for `p` as written in a stage with working
/// directory `wdir`; `None` when it leaves the project.
fn project_path(wdir: &str, p: &str) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    let joined = if wdir.is_empty() {
        PathBuf::from(p)
    } else {
        Path::new(wdir).join(p)
    };
    for c in joined.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    let path = parts.join("/");
    (!path.is_empty() || p == "." || p.is_empty()).then_some(path)
}

/// A valid mlbuild target name for DVC stage `name` (`train@0` -> `train-0`).
fn target_name(name: &str) -> String {
    let mapped: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if mapped.is_empty() || mapped == "." || mapped == ".." {
        format!("stage-{mapped}")
    } else {
        mapped
    }
}

/// The items a `foreach` iterates: (key for the name, `item`, `key` variable).
fn foreach_items(v: &Value) -> Result<Vec<(String, Value, Option<String>)>, Error> {
    match v {
        Value::Array(items) => Ok(items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let key = match item {
                    Value::Object(_) | Value::Array(_) => i.to_string(),
                    scalar => scalar_text(scalar),
                };
                (key, item.clone(), None)
            })
            .collect()),
        Value::Object(map) => Ok(map
            .iter()
            .map(|(k, item)| (k.clone(), item.clone(), Some(k.clone())))
            .collect()),
        other => Err(format!(
            "`foreach` must be a list or a mapping, not `{other}`"
        )),
    }
}

/// Every combination of a `matrix`, axes in name order.
fn matrix_items(axes: &BTreeMap<String, Vec<Value>>) -> Vec<(String, Value)> {
    let mut combos: Vec<(Vec<String>, serde_json::Map<String, Value>)> =
        vec![(Vec::new(), serde_json::Map::new())];
    for (axis, values) in axes {
        let mut next = Vec::new();
        for (names, item) in &combos {
            for v in values {
                let mut names = names.clone();
                names.push(scalar_text(v));
                let mut item = item.clone();
                item.insert(axis.clone(), v.clone());
                next.push((names, item));
            }
        }
        combos = next;
    }
    combos
        .into_iter()
        .map(|(names, item)| (names.join("-"), Value::Object(item)))
        .collect()
}

fn expand_stage(
    project: &Path,
    name: &str,
    def: &Value,
    vars: &Value,
    lock: &Value,
    out: &mut Vec<Stage>,
    notes: &mut Vec<Note>,
) -> Result<(), Error> {
    let note = |notes: &mut Vec<Note>, stage: &str, field: &str, message: String| {
        notes.push(Note {
            stage: stage.to_owned(),
            field: field.to_owned(),
            message,
        })
    };
    if let (Some(foreach), Some(body)) = (def.get("foreach"), def.get("do")) {
        let foreach = interpolate(foreach, vars, false)?;
        for (key, item, key_var) in foreach_items(&foreach)? {
            let mut ctx = vars.clone();
            ctx["item"] = item;
            if let Some(k) = key_var {
                ctx["key"] = Value::String(k);
            }
            let body = interpolate(body, &ctx, false)?;
            let dvc_name = format!("{name}@{key}");
            out.push(stage_of(project, &dvc_name, &body, lock, notes)?);
        }
        return Ok(());
    }
    if let Some(matrix) = def.get("matrix") {
        let matrix = interpolate(matrix, vars, false)?;
        let mut axes = BTreeMap::new();
        for (axis, values) in matrix.as_object().into_iter().flatten() {
            let values = values
                .as_array()
                .ok_or_else(|| format!("`matrix` axis `{axis}` of stage `{name}` is not a list"))?;
            axes.insert(axis.clone(), values.clone());
        }
        // A sweep needs every variant's outputs at fixed paths below fixed directories
        // and a metrics file to select by; otherwise each combination becomes a target.
        let templated = interpolate(def, vars, true)?;
        let mut swept = stage_of(project, name, &templated, lock, &mut Vec::new())?;
        let sweepable = axes.values().flatten().all(sweepable_value)
            && !swept.deps.iter().any(|d| d.contains('\u{0}'))
            && swept.outs.iter().any(|o| o.metric)
            && swept.outs.iter().all(|o| {
                !o.path.contains('\u{0}')
                    || o.path
                        .rsplit_once('/')
                        .is_some_and(|(dir, _)| !dir.contains('\u{0}'))
            });
        if sweepable {
            let mut inner = Vec::new();
            swept = stage_of(project, name, &templated, lock, &mut inner)?;
            notes.extend(inner);
            swept.sweep = Some(
                axes.iter()
                    .map(|(k, v)| (format!("item.{k}"), v.clone()))
                    .collect(),
            );
            out.push(swept);
        } else {
            note(
                notes,
                name,
                "matrix",
                "no `sweep` equivalent (a variant's deps or output directories depend on the \
                 item, a value is not a word or number, or there is no metrics file to select \
                 the best variant by): each combination became a target"
                    .to_owned(),
            );
            for (key, item) in matrix_items(&axes) {
                let mut ctx = vars.clone();
                ctx["item"] = item;
                let body = interpolate(def, &ctx, false)?;
                out.push(stage_of(
                    project,
                    &format!("{name}@{key}"),
                    &body,
                    lock,
                    notes,
                )?);
            }
        }
        return Ok(());
    }
    let def = interpolate(def, vars, false)?;
    out.push(stage_of(project, name, &def, lock, notes)?);
    Ok(())
}

/// A value a sweep axis (and so a label) can hold.
fn sweepable_value(v: &Value) -> bool {
    match v {
        Value::Number(_) | Value::Bool(_) => true,
        Value::String(s) => {
            s.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-'))
                && !matches!(s.as_str(), "true" | "false" | "inf" | "nan")
        }
        _ => false,
    }
}

/// The entries of a `deps`, `outs`, `metrics` or `plots` list: (path, its options).
fn path_entries(v: Option<&Value>) -> Vec<(String, Value)> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| match e {
            Value::String(s) => Some((s.clone(), Value::Null)),
            Value::Object(m) => m.iter().next().map(|(k, v)| (k.clone(), v.clone())),
            _ => None,
        })
        .collect()
}

fn stage_of(
    project: &Path,
    dvc_name: &str,
    def: &Value,
    lock: &Value,
    notes: &mut Vec<Note>,
) -> Result<Stage, Error> {
    let mut note = |field: &str, message: String| {
        notes.push(Note {
            stage: dvc_name.to_owned(),
            field: field.to_owned(),
            message,
        })
    };
    let cmd = match def.get("cmd") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(scalar_text)
            .collect::<Vec<_>>()
            .join(" && "),
        _ => return Err(format!("stage `{dvc_name}` has no `cmd`")),
    };
    let wdir_text = def.get("wdir").map(scalar_text).unwrap_or_default();
    let wdir = match project_path("", &wdir_text) {
        Some(w) => w,
        None => {
            return Err(format!(
                "stage `{dvc_name}`: `wdir: {wdir_text}` is outside the project; mlbuild runs \
                 an action only inside its package (move the stage's files into the project)"
            ))
        }
    };
    let mut stage = Stage {
        name: target_name(dvc_name),
        dvc_name: dvc_name.to_owned(),
        cmd,
        wdir: wdir.clone(),
        ..Stage::default()
    };
    let rel = |p: &str| project_path(&wdir, p);
    for (p, _) in path_entries(def.get("deps")) {
        match rel(&p) {
            Some(p) => stage.deps.push(p),
            None => note("deps", format!("`{p}` is outside the project: dropped")),
        }
    }
    for (field, metric) in [("outs", false), ("metrics", true), ("plots", false)] {
        for (p, opts) in path_entries(def.get(field)) {
            let Some(path) = rel(&p) else {
                note(field, format!("`{p}` is outside the project: dropped"));
                continue;
            };
            if opts.get("persist").and_then(Value::as_bool) == Some(true) {
                note(
                    field,
                    format!(
                        "`{p}`: `persist` has no equivalent: every run starts from an empty \
                         output directory"
                    ),
                );
            }
            if opts.get("checkpoint").and_then(Value::as_bool) == Some(true) {
                note(field, format!("`{p}`: `checkpoint` has no equivalent"));
            }
            if field == "plots" {
                note(
                    "plots",
                    format!("`{p}`: plots have no equivalent (no `dvc plots`): kept as an output"),
                );
            }
            let metric = metric && {
                let json = path.ends_with(".json");
                if !json {
                    note(
                        "metrics",
                        format!(
                            "`{p}`: mlbuild reads metrics from JSON files only: kept as an output"
                        ),
                    );
                }
                json
            };
            let dir = is_dir_out(project, &path, &p, dvc_name, lock);
            stage.outs.push(Out { path, metric, dir });
        }
    }
    match def.get("params") {
        None => {}
        Some(Value::Array(entries)) => {
            for entry in entries {
                match entry {
                    Value::String(key) => stage
                        .params
                        .entry(project_path(&wdir, DEFAULT_PARAMS).unwrap_or_default())
                        .or_default()
                        .push(key.clone()),
                    Value::Object(files) => {
                        for (file, keys) in files {
                            let file = rel(file).unwrap_or_else(|| file.clone());
                            let list = stage.params.entry(file).or_default();
                            for k in keys.as_array().into_iter().flatten() {
                                list.push(scalar_text(k));
                            }
                        }
                    }
                    other => note("params", format!("unsupported entry `{other}`: dropped")),
                }
            }
        }
        Some(other) => note("params", format!("unsupported value `{other}`: dropped")),
    }
    stage.always_changed = def.get("always_changed").and_then(Value::as_bool) == Some(true);
    if def.get("frozen").and_then(Value::as_bool) == Some(true) {
        note(
            "frozen",
            "no equivalent: mlbuild rebuilds a target whenever its inputs change; \
             imported as an ordinary target"
                .to_owned(),
        );
    }
    for field in def.as_object().into_iter().flatten().map(|(k, _)| k) {
        if !matches!(
            field.as_str(),
            "cmd"
                | "wdir"
                | "deps"
                | "outs"
                | "metrics"
                | "plots"
                | "params"
                | "always_changed"
                | "frozen"
                | "matrix"
                | "foreach"
                | "do"
                | "desc"
                | "meta"
        ) {
            note(field, "no equivalent: dropped".to_owned());
        }
    }
    Ok(stage)
}

/// Whether an output is a directory: on disk after `dvc repro`, else as `dvc.lock`
/// records it (an `md5` ending in `.dir`), else a trailing `/`.
fn is_dir_out(project: &Path, path: &str, written: &str, stage: &str, lock: &Value) -> bool {
    if path.contains('\u{0}') {
        return false;
    }
    if let Ok(meta) = std::fs::metadata(project.join(path)) {
        return meta.is_dir();
    }
    let locked = lock
        .get("stages")
        .and_then(|s| s.get(stage))
        .and_then(|s| s.get("outs"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|o| o.get("path").and_then(Value::as_str) == Some(written));
    if let Some(md5) = locked.and_then(|o| o.get("md5")).and_then(Value::as_str) {
        return md5.ends_with(".dir");
    }
    written.ends_with('/')
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Text for an mlbuild `cmd` argument: literal braces doubled, and the markers
/// [`interpolate_str`] left for swept values turned into `{params...}` placeholders.
fn cmd_text(s: &str) -> String {
    s.replace('{', "{{")
        .replace('}', "}}")
        .replace('\u{0}', "{")
        .replace('\u{1}', "}")
}

/// A shell word for `s` (single-quoted unless plain), leaving placeholders usable.
fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%{}\u{0}\u{1}".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The directory part of a project-relative path (`""` at the top).
fn parent(p: &str) -> &str {
    p.rsplit_once('/').map_or("", |(d, _)| d)
}

fn render(project: &Path, stages: &[Stage], notes: &mut Vec<Note>) -> Result<String, Error> {
    // Which stage writes each output.
    let mut producers: Vec<(&str, &Stage)> = Vec::new();
    for s in stages {
        for o in &s.outs {
            producers.push((o.path.as_str(), s));
        }
    }
    let producer_of = |dep: &str| {
        producers
            .iter()
            .find(|(out, _)| dep == *out || dep.starts_with(&format!("{out}/")))
            .map(|(out, s)| (*out, *s))
    };
    let mut toml = String::from(
        "# Imported from dvc.yaml by `mlbuild import dvc`; see docs/from-dvc.md.\n\
         # Each stage runs its `cmd` unchanged in a scratch copy of the project that holds\n\
         # its deps (and the params it reads); its outs are copied into {out} at the same\n\
         # paths, so mlbuild-out/<package>/<stage>/ mirrors what `dvc repro` writes.\n",
    );
    let mut tools: BTreeSet<&str> = BTreeSet::from(["ln", "mkdir", "cp", "mktemp"]);
    for s in stages {
        let mut srcs: BTreeSet<String> = BTreeSet::new();
        let mut deps: BTreeSet<String> = BTreeSet::new();
        let mut script = String::from("set -eu\nsrc=$PWD\nw=$(mktemp -d)\n");
        let link = |from: String, to: &str, script: &mut String| {
            let dir = parent(to);
            if !dir.is_empty() {
                let _ = writeln!(script, "mkdir -p \"$w\"/{}", sh_quote(&cmd_text(dir)));
            }
            let _ = writeln!(script, "ln -sfn {from} \"$w\"/{}", sh_quote(&cmd_text(to)));
        };
        for dep in &s.deps {
            match producer_of(dep) {
                Some((out, producer)) if producer.name != s.name => {
                    if producer.sweep.is_some() {
                        return Err(format!(
                            "stage `{}` depends on `{dep}`, an output of the swept stage `{}`; \
                             depend on its selection instead (not supported by the importer)",
                            s.dvc_name, producer.dvc_name
                        ));
                    }
                    deps.insert(producer.name.clone());
                    let from = format!("{{deps.{}}}/{}", producer.name, cmd_text(out));
                    link(format!("\"{from}\""), out, &mut script);
                }
                _ => {
                    let full = project.join(dep);
                    if full.is_dir() {
                        srcs.insert(format!("{dep}/**"));
                    } else if full.is_file() {
                        srcs.insert(dep.clone());
                    } else {
                        notes.push(Note {
                            stage: s.dvc_name.clone(),
                            field: "deps".to_owned(),
                            message: format!(
                                "`{dep}` is neither a file of the project nor another stage's \
                                 output: dropped (run `dvc pull` or `dvc repro` before importing)"
                            ),
                        });
                        continue;
                    }
                    link(
                        format!("\"$src\"/{}", sh_quote(&cmd_text(dep))),
                        dep,
                        &mut script,
                    );
                }
            }
        }
        // Files the command names but `deps` forgets (DVC would find them in the
        // project; the sandbox would not).
        for word in s.cmd.split_whitespace() {
            let Some(p) = project_path(&s.wdir, word) else {
                continue;
            };
            if word.contains('\u{0}')
                || srcs.contains(&p)
                || s.deps.contains(&p)
                || producer_of(&p).is_some()
                || !project.join(&p).is_file()
            {
                continue;
            }
            notes.push(Note {
                stage: s.dvc_name.clone(),
                field: "deps".to_owned(),
                message: format!(
                    "`cmd` names `{word}`, which `deps` does not list: added to `srcs`"
                ),
            });
            srcs.insert(p.clone());
            link(
                format!("\"$src\"/{}", sh_quote(&cmd_text(&p))),
                &p,
                &mut script,
            );
        }
        let mut param_keys = Vec::new();
        let mut params_file = None;
        for (file, keys) in &s.params {
            if params_file.is_some() {
                notes.push(Note {
                    stage: s.dvc_name.clone(),
                    field: "params".to_owned(),
                    message: format!(
                        "reads a second params file `{file}`: mlbuild takes params from one \
                         file per target; added to `srcs` whole"
                    ),
                });
                srcs.insert(file.clone());
                link(
                    format!("\"$src\"/{}", sh_quote(&cmd_text(file))),
                    file,
                    &mut script,
                );
                continue;
            }
            if !file.ends_with(".yaml") && !file.ends_with(".yml") && !file.ends_with(".json") {
                notes.push(Note {
                    stage: s.dvc_name.clone(),
                    field: "params".to_owned(),
                    message: format!(
                        "`{file}`: the command reads its params from a YAML or JSON copy \
                         holding only its keys; a TOML params file is added to `srcs` whole"
                    ),
                });
                srcs.insert(file.clone());
                link(
                    format!("\"$src\"/{}", sh_quote(&cmd_text(file))),
                    file,
                    &mut script,
                );
                continue;
            }
            let keys = if keys.is_empty() {
                // The whole file: each of its top-level keys.
                read_data_file(&project.join(file))?
                    .as_object()
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default()
            } else {
                keys.clone()
            };
            param_keys.extend(keys);
            params_file = Some(file.clone());
            // The params wiring: the stage reads its params file at its usual path,
            // holding exactly the keys it declared (JSON is YAML).
            let dir = parent(file);
            if !dir.is_empty() {
                let _ = writeln!(script, "mkdir -p \"$w\"/{}", sh_quote(&cmd_text(dir)));
            }
            let _ = writeln!(
                script,
                "cp {{params_file}} \"$w\"/{}",
                sh_quote(&cmd_text(file))
            );
        }
        // Output directories the command expects to exist are DVC's to create too? No:
        // DVC leaves that to the command, and so does this.
        let cd = if s.wdir.is_empty() {
            String::new()
        } else {
            format!("/{}", sh_quote(&cmd_text(&s.wdir)))
        };
        let _ = writeln!(
            script,
            "(cd \"$w\"{cd} && sh -c {})",
            sh_quote(&cmd_text(&s.cmd))
        );
        let mut outs = BTreeSet::new();
        let mut metrics = Vec::new();
        for o in &s.outs {
            let path = cmd_text(&o.path);
            let dir = parent(&o.path);
            if !dir.is_empty() {
                let _ = writeln!(script, "mkdir -p {{out}}/{}", sh_quote(&cmd_text(dir)));
            }
            let _ = writeln!(
                script,
                "cp -R \"$w\"/{} {{out}}/{}",
                sh_quote(&path),
                sh_quote(&path)
            );
            if o.path.contains('\u{0}') {
                outs.insert(format!("{}/", cmd_text(dir)));
            } else if o.dir {
                outs.insert(format!("{path}/"));
            } else {
                outs.insert(path.clone());
            }
            if o.metric && !o.path.contains('\u{0}') {
                metrics.push(path);
            }
        }
        // A swept stage's metrics file may be named per variant: a copy at a fixed path
        // is what `select` reads.
        let mut select = None;
        if let Some(m) = s
            .outs
            .iter()
            .find(|o| o.metric)
            .filter(|_| s.sweep.is_some())
        {
            let fixed = if m.path.contains('\u{0}') {
                let _ = writeln!(
                    script,
                    "cp \"$w\"/{} {{out}}/select-metrics.json",
                    sh_quote(&cmd_text(&m.path))
                );
                outs.insert("select-metrics.json".to_owned());
                metrics.push("select-metrics.json".to_owned());
                "select-metrics.json".to_owned()
            } else {
                cmd_text(&m.path)
            };
            let metric = first_metric(project, m).unwrap_or_else(|| "metric".to_owned());
            notes.push(Note {
                stage: s.dvc_name.clone(),
                field: "matrix".to_owned(),
                message: format!(
                    "became a sweep; mlbuild also picks the best variant for downstream \
                     targets: by `{metric}` (max) in `{fixed}`, a guess to edit in `select`"
                ),
            });
            select = Some((metric, fixed));
        }
        if let Some(t) = command_tool(&s.cmd) {
            tools.insert(t);
        }
        let _ = writeln!(toml, "\n[target.{}]", toml_key(&s.name));
        if s.name != s.dvc_name {
            let _ = writeln!(toml, "# dvc stage `{}`", s.dvc_name);
        }
        if !srcs.is_empty() {
            let _ = writeln!(toml, "srcs = {}", toml_list(srcs.iter()));
        }
        if !deps.is_empty() {
            let _ = writeln!(
                toml,
                "deps = {}",
                toml_list(deps.iter().map(|d| format!(":{d}")))
            );
        }
        let _ = writeln!(
            toml,
            "cmd = [\"sh\", \"-c\", \"\"\"\n{}\"\"\"]",
            script.replace('\\', "\\\\").replace('"', "\\\"")
        );
        let _ = writeln!(toml, "outs = {}", toml_list(outs.iter()));
        let mut all_tools: Vec<&str> = tools.iter().copied().collect();
        all_tools.retain(|t| *t != "sh");
        let _ = writeln!(toml, "tools = {}", toml_list(all_tools.iter()));
        if let Some(file) = &params_file {
            let _ = writeln!(toml, "params_file = {}", toml_str(file));
        }
        if !param_keys.is_empty() {
            let _ = writeln!(toml, "param_keys = {}", toml_list(param_keys.iter()));
        }
        if !metrics.is_empty() {
            let _ = writeln!(toml, "metrics = {}", toml_list(metrics.iter()));
        }
        if let Some(sweep) = &s.sweep {
            let axes: Vec<String> = sweep
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{} = [{}]",
                        toml_str(k),
                        v.iter()
                            .map(|x| match x {
                                Value::String(s) => toml_str(s),
                                other => other.to_string(),
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
                .collect();
            let _ = writeln!(toml, "sweep = {{ {} }}", axes.join(", "));
            if let Some((metric, file)) = &select {
                let _ = writeln!(
                    toml,
                    "select = {{ metric = {}, goal = \"max\", file = {} }}",
                    toml_str(metric),
                    toml_str(file)
                );
            }
        }
        if s.always_changed {
            let _ = writeln!(toml, "nondeterministic = \"always_changed in dvc.yaml\"");
        }
        tools = BTreeSet::from(["ln", "mkdir", "cp", "mktemp"]);
    }
    Ok(toml)
}

/// The program a stage's command starts, when it is a plain word to look up on the
/// sandbox path: its binary then enters the action key like any tool's.
fn command_tool(cmd: &str) -> Option<&str> {
    let first = cmd.split_whitespace().next()?;
    (first
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '+'))
        && !first.contains('='))
    .then_some(first)
}

/// The first numeric key of a metrics file `dvc repro` left in the project (for a swept
/// stage, any variant's), to propose as the selection metric.
fn first_metric(project: &Path, m: &Out) -> Option<String> {
    let path = if m.path.contains('\u{0}') {
        let (dir, _) = m.path.rsplit_once('/')?;
        std::fs::read_dir(project.join(dir))
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .min()?
    } else {
        project.join(&m.path)
    };
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    fn first(prefix: &str, v: &Value) -> Option<String> {
        match v {
            Value::Number(_) => Some(prefix.to_owned()),
            Value::Object(m) => m.iter().find_map(|(k, x)| {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                first(&p, x)
            }),
            _ => None,
        }
    }
    first("", &v)
}

fn toml_key(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        s.to_owned()
    } else {
        toml_str(s)
    }
}

fn toml_list<S: AsRef<str>>(items: impl Iterator<Item = S>) -> String {
    let items: Vec<String> = items.map(|s| toml_str(s.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn interpolation_keeps_types_and_formats_scalars() {
        let ctx = json!({"a": {"b": 3}, "l": [1, "x"], "f": 0.5, "t": true});
        assert_eq!(interpolate_str("${a.b}", &ctx, false).unwrap(), json!(3));
        assert_eq!(
            interpolate_str("n=${a.b} x=${l[1]} f=${f} ${t}", &ctx, false).unwrap(),
            json!("n=3 x=x f=0.5 true")
        );
        assert!(interpolate_str("${nope}", &ctx, false).is_err());
        assert_eq!(
            cmd_text(
                interpolate_str("lr ${item.lr} {x}", &ctx, true)
                    .unwrap()
                    .as_str()
                    .unwrap()
            ),
            "lr {params.item.lr} {{x}}"
        );
    }

    #[test]
    fn paths_stay_inside_the_project() {
        for (wdir, p, want) in [
            ("", "data/x.csv", Some("data/x.csv")),
            ("src", "../data/x.csv", Some("data/x.csv")),
            ("", "./a//b", Some("a/b")),
            ("", "../x", None),
            ("", "/etc/passwd", None),
        ] {
            assert_eq!(project_path(wdir, p).as_deref(), want, "{wdir} {p}");
        }
    }

    #[test]
    fn stage_names_become_target_names() {
        assert_eq!(target_name("train@0"), "train-0");
        assert_eq!(target_name("prep"), "prep");
        assert_eq!(target_name("a b@x/y"), "a-b-x-y");
    }

    #[test]
    fn matrix_combinations_in_axis_order() {
        let axes = BTreeMap::from([
            ("lr".to_owned(), vec![json!(0.1), json!(0.2)]),
            ("m".to_owned(), vec![json!("a")]),
        ]);
        let names: Vec<String> = matrix_items(&axes).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["0.1-a", "0.2-a"]);
    }
}
