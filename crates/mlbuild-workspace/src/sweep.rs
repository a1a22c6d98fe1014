//! Sweeps: a grid over params that expands one target into a variant per combination,
//! plus the selection rule that picks the best variant for everything downstream.
//!
//! Each variant is an ordinary target named `base[k1=v1,k2=v2]` (keys sorted, values in
//! the canonical form of [`render_value`]), so it gets its own action key and cache entry
//! and adding a value to the grid only adds new targets. The plain label `base` becomes
//! the selection: it depends on every variant and is run in-process by the executor.
//! Main types: [`Sweep`], [`Select`]; main function: [`expand`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::{closest, ErrorKind, WorkspaceError};
use crate::label::{is_valid_target_name, Label};
use crate::package::{Package, Target};
use crate::source::{SourceText, Span};

/// The output every selection adds, recording each variant's metric and the choice.
pub const SELECTION_FILE: &str = "selection.json";

/// More variants than this is almost certainly a mistake in the grid (and would plan
/// that many actions on every build).
const MAX_VARIANTS: usize = 10_000;

/// A target's grid: dotted param key -> the values it takes, keys sorted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    #[serde(with = "crate::load_cache::value_lists")]
    pub axes: BTreeMap<String, Vec<toml::Value>>,
}

impl Sweep {
    /// Every combination, in a stable order (the last axis varies fastest).
    pub fn combinations(&self) -> Vec<BTreeMap<String, toml::Value>> {
        let mut out = vec![BTreeMap::new()];
        for (key, values) in &self.axes {
            out = out
                .into_iter()
                .flat_map(|combo| {
                    values.iter().map(move |v| {
                        let mut c = combo.clone();
                        c.insert(key.clone(), v.clone());
                        c
                    })
                })
                .collect();
        }
        out
    }
}

/// Whether the best variant has the highest or the lowest metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Goal {
    Max,
    Min,
}

impl Goal {
    pub fn as_str(self) -> &'static str {
        match self {
            Goal::Max => "max",
            Goal::Min => "min",
        }
    }
}

/// `select = { metric = "f1", goal = "max", file = "metrics.json" }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Select {
    /// Dotted path into the metrics file's JSON object.
    pub metric: String,
    pub goal: Goal,
    /// The metrics file among each variant's outputs (relative to `{out}`).
    pub file: String,
}

impl Select {
    /// What enters the selection's action key in place of a command.
    pub fn argv(&self) -> Vec<String> {
        vec![
            "select".to_owned(),
            format!("metric={}", self.metric),
            format!("goal={}", self.goal.as_str()),
            format!("file={}", self.file),
        ]
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSelect {
    metric: Spanned<String>,
    goal: Spanned<String>,
    file: Option<Spanned<String>>,
}

pub(crate) type RawSweep = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

fn invalid(source: &Arc<SourceText>, span: Span, message: String) -> WorkspaceError {
    WorkspaceError::new(ErrorKind::Invalid, message).at(source, span)
}

/// Whether `key` is a dotted param path: `[A-Za-z0-9_-]+` segments joined by `.`.
pub(crate) fn is_valid_param_key(key: &str) -> bool {
    !key.is_empty()
        && key.split('.').all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

/// Validate `[target.X.sweep]`: every axis a non-empty list of distinct scalars that can
/// be written in a label. Nested tables (`train.lr = [...]`) are dotted keys.
pub(crate) fn parse_sweep(
    source: &Arc<SourceText>,
    label: &Label,
    raw: RawSweep,
) -> Result<Sweep, WorkspaceError> {
    let mut axes = BTreeMap::new();
    for (key, value) in raw {
        let span = key.span();
        flatten(
            source,
            label,
            key.get_ref(),
            value.into_inner(),
            &span,
            &mut axes,
        )?;
    }
    let count = axes
        .values()
        .try_fold(1usize, |n, v: &Vec<toml::Value>| n.checked_mul(v.len()));
    if count.is_none_or(|n| n > MAX_VARIANTS) {
        return Err(WorkspaceError::new(
            ErrorKind::Invalid,
            format!("the sweep of `{label}` has more than {MAX_VARIANTS} combinations"),
        )
        .with_help("sweep fewer values; each combination is its own action"));
    }
    Ok(Sweep { axes })
}

fn flatten(
    source: &Arc<SourceText>,
    label: &Label,
    key: &str,
    value: toml::Value,
    span: &Span,
    axes: &mut BTreeMap<String, Vec<toml::Value>>,
) -> Result<(), WorkspaceError> {
    if !is_valid_param_key(key) {
        return Err(
            invalid(source, span.clone(), format!("invalid sweep key `{key}`"))
                .with_label("invalid key")
                .with_help("sweep keys are param paths like `lr` or `train.lr`"),
        );
    }
    let values = match value {
        toml::Value::Table(table) => {
            for (sub, v) in table {
                flatten(source, label, &format!("{key}.{sub}"), v, span, axes)?;
            }
            return Ok(());
        }
        toml::Value::Array(values) => values,
        other => {
            return Err(invalid(
                source,
                span.clone(),
                format!(
                    "sweep axis `{key}` of `{label}` must be a list of values, not a {}",
                    other.type_str()
                ),
            )
            .with_label("not a list")
            .with_help(format!("write `{key} = [{other}]` to sweep over one value")));
        }
    };
    if values.is_empty() {
        return Err(invalid(
            source,
            span.clone(),
            format!("sweep axis `{key}` of `{label}` is empty: zero combinations"),
        )
        .with_label("empty list")
        .with_help("list at least one value, or remove the axis"));
    }
    for (i, v) in values.iter().enumerate() {
        if let Err(why) = check_value(v) {
            return Err(invalid(
                source,
                span.clone(),
                format!("invalid value in sweep axis `{key}`: {why}"),
            )
            .with_label("invalid value")
            .with_help("sweep values are integers, finite floats, booleans, or words of `A-Z a-z 0-9 _ . + -` starting with a letter; they become part of labels and directory names"));
        }
        if values[..i].contains(v) {
            return Err(invalid(
                source,
                span.clone(),
                format!(
                    "sweep axis `{key}` of `{label}` lists `{}` twice",
                    render_value(v)
                ),
            )
            .with_label("duplicate value"));
        }
    }
    axes.insert(key.to_owned(), values);
    Ok(())
}

/// Whether a string has only characters that are safe in labels and output directory
/// names. Sweep values must also be bare words ([`is_bare_word`]), so that no label or
/// directory name ever holds a quote that a shell command would strip.
fn is_safe_string(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-'))
}

fn check_value(v: &toml::Value) -> Result<(), String> {
    match v {
        toml::Value::Integer(_) | toml::Value::Boolean(_) => Ok(()),
        toml::Value::Float(f) if f.is_finite() => Ok(()),
        toml::Value::Float(f) => Err(format!("`{f}` is not a finite number")),
        toml::Value::String(s) if is_bare_word(s) => Ok(()),
        toml::Value::String(s) if is_safe_string(s) => Err(format!(
            "`{s}` would need quotes in a label: start it with a letter or `_`, and not as `true`, `inf` or `nan`"
        )),
        toml::Value::String(s) => Err(format!("`{s}` has characters a label cannot hold")),
        other => Err(format!("a {} cannot be swept", other.type_str())),
    }
}

/// The canonical text of a sweep value inside a label: integers and booleans as TOML
/// writes them, floats always with a `.` or exponent (`1.0`, `0.05`), strings bare when
/// they read as a word (`adam`) and double-quoted otherwise (`"1x"`, `"true"`).
pub fn render_value(v: &toml::Value) -> String {
    match v {
        toml::Value::Float(f) => {
            let s = f.to_string();
            if s.contains(['.', 'e', 'E']) || !f.is_finite() {
                s
            } else {
                format!("{s}.0")
            }
        }
        toml::Value::String(s) if is_bare_word(s) => s.clone(),
        toml::Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

/// A string written without quotes: starts with a letter or `_`, and is not something
/// TOML would read as another type (`true`, `inf`, `nan`).
fn is_bare_word(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && is_safe_string(s)
        && parse_toml_scalar(s).is_none()
}

fn parse_toml_scalar(text: &str) -> Option<toml::Value> {
    let table: toml::Table = toml::from_str(&format!("v = {text}")).ok()?;
    match table.get("v")? {
        v @ (toml::Value::Integer(_)
        | toml::Value::Float(_)
        | toml::Value::Boolean(_)
        | toml::Value::String(_)) => Some(v.clone()),
        _ => None,
    }
}

/// Parse one value as written in a label: a TOML scalar, or a bare word as a string.
fn parse_label_value(text: &str) -> Option<toml::Value> {
    if let Some(v) = parse_toml_scalar(text) {
        return check_value(&v).is_ok().then_some(v);
    }
    (text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') && is_safe_string(text))
        .then(|| toml::Value::String(text.to_owned()))
}

/// The name of the variant of `base` with `values`: `base[k1=v1,k2=v2]`.
pub fn variant_name(base: &str, values: &BTreeMap<String, toml::Value>) -> String {
    let inner: Vec<String> = values
        .iter()
        .map(|(k, v)| format!("{k}={}", render_value(v)))
        .collect();
    format!("{base}[{}]", inner.join(","))
}

/// Canonicalize a variant target name written by a user (`fm[lr=5e-2, l2=0]`): keys
/// sorted, values re-rendered. `Err` says what is wrong.
pub(crate) fn canonical_variant_name(name: &str) -> Result<String, String> {
    let Some((base, rest)) = name.split_once('[') else {
        return Err("no `[`".to_owned());
    };
    if !is_valid_target_name(base) {
        return Err(format!("`{base}` is not a valid target name"));
    }
    let Some(inner) = rest.strip_suffix(']') else {
        return Err("a variant name ends with `]`, like `name[lr=0.05]`".to_owned());
    };
    if inner.trim().is_empty() {
        return Err("`[]` names no param".to_owned());
    }
    let mut values = BTreeMap::new();
    for item in inner.split(',') {
        let item = item.trim();
        let Some((key, value)) = item.split_once('=') else {
            return Err(format!("`{item}` is not `key=value`"));
        };
        let key = key.trim();
        if !is_valid_param_key(key) {
            return Err(format!("`{key}` is not a param key"));
        }
        let Some(value) = parse_label_value(value.trim()) else {
            return Err(format!(
                "`{}` is not a number, boolean or string value",
                value.trim()
            ));
        };
        if values.insert(key.to_owned(), value).is_some() {
            return Err(format!("`{key}` is given twice"));
        }
    }
    Ok(variant_name(base, &values))
}

/// Parse `select = { ... }`, defaulting `file` to the target's only metrics file.
pub(crate) fn parse_select(
    source: &Arc<SourceText>,
    label: &Label,
    raw: RawSelect,
    metrics: &[String],
    outs: &[String],
) -> Result<Select, WorkspaceError> {
    let goal = match raw.goal.get_ref().as_str() {
        "max" => Goal::Max,
        "min" => Goal::Min,
        other => {
            let mut help = "`goal` is `max` (higher is better) or `min`".to_owned();
            if let Some(s) = closest(other, ["max", "min"]) {
                help = format!("did you mean `{s}`? {help}");
            }
            return Err(
                invalid(source, raw.goal.span(), format!("unknown goal `{other}`"))
                    .with_label("unknown goal")
                    .with_help(help),
            );
        }
    };
    let metric = raw.metric.get_ref();
    if !is_valid_param_key(metric) {
        return Err(invalid(
            source,
            raw.metric.span(),
            format!("invalid metric name `{metric}`"),
        )
        .with_label("invalid metric")
        .with_help("a metric is a key of the metrics file's JSON object, dotted for nested keys (`eval.f1`)"));
    }
    let file = match raw.file {
        Some(file) => {
            let declared = outs.iter().any(|o| match o.strip_suffix('/') {
                Some(dir) => file
                    .get_ref()
                    .strip_prefix(dir)
                    .is_some_and(|r| r.len() > 1 && r.starts_with('/')),
                None => o == file.get_ref(),
            });
            if !declared {
                let mut help = "the metrics file must be one of the target's outputs".to_owned();
                if let Some(s) = closest(file.get_ref(), outs.iter().map(String::as_str)) {
                    help = format!("did you mean `{s}`? {help}");
                }
                return Err(invalid(
                    source,
                    file.span(),
                    format!(
                        "`{}` in `select` of `{label}` is not one of its outputs",
                        file.get_ref()
                    ),
                )
                .with_label("not in `outs`")
                .with_help(help));
            }
            file.into_inner()
        }
        None => match metrics {
            [only] => only.clone(),
            _ => {
                return Err(invalid(
                    source,
                    raw.metric.span(),
                    format!("`select` of `{label}` does not say which file holds `{metric}`"),
                )
                .with_label("which file?")
                .with_help("add `file = \"metrics.json\"` to `select` (it may be left out when the target lists exactly one `metrics` file)"));
            }
        },
    };
    if let Some(i) = outs.iter().position(|o| o == SELECTION_FILE) {
        let _ = i;
        return Err(invalid(
            source,
            raw.metric.span(),
            format!("`{label}` declares an output `{SELECTION_FILE}`, which its selection writes"),
        )
        .with_help(format!(
            "rename that output; the selection adds `{SELECTION_FILE}`"
        )));
    }
    Ok(Select {
        metric: metric.clone(),
        goal,
        file,
    })
}

/// Replace every swept target by its variants plus its selection.
pub(crate) fn expand(packages: &mut BTreeMap<String, Package>) {
    for package in packages.values_mut() {
        let swept: Vec<String> = package
            .targets
            .values()
            .filter(|t| t.sweep.is_some())
            .map(|t| t.label.name.clone())
            .collect();
        for name in swept {
            let base = package.targets.remove(&name).expect("listed above");
            let (selection, variants) = expand_target(base);
            for v in variants {
                package.targets.insert(v.label.name.clone(), v);
            }
            package.targets.insert(name, selection);
        }
    }
}

fn expand_target(base: Target) -> (Target, Vec<Target>) {
    let sweep = base.sweep.clone().expect("only swept targets are expanded");
    let mut variants = Vec::new();
    for combo in sweep.combinations() {
        let mut v = base.clone();
        v.label = Label::new(
            base.label.package.as_str(),
            variant_name(&base.label.name, &combo),
        );
        for (key, value) in &combo {
            set_path(&mut v.params, key, value.clone());
        }
        v.sweep = None;
        v.select = None;
        // Gates judge the chosen model, so they stay on the selection only.
        v.gates = Vec::new();
        v.baseline = None;
        v.variant = Some(combo);
        variants.push(v);
    }
    let mut selection = base;
    selection.kind = "select".to_owned();
    selection.deps = variants.iter().map(|v| v.label.clone()).collect();
    selection.srcs = Vec::new();
    selection.cmd = Vec::new();
    selection.outs.push(SELECTION_FILE.to_owned());
    selection.params = BTreeMap::new();
    selection.param_keys = Vec::new();
    selection.params_file = None;
    selection.env = BTreeMap::new();
    selection.secret_env = Vec::new();
    selection.tools = Vec::new();
    // Selection runs in-process in microseconds; it must never wait for a CPU slot.
    selection.resources = BTreeMap::from([("cpu".to_owned(), 0.0)]);
    selection.timeout = None;
    selection.network = false;
    selection.spans.srcs.clear();
    selection.spans.cmd.clear();
    selection.spans.deps.clear();
    selection.spans.tools.clear();
    selection.spans.env.clear();
    selection.spans.secret_env.clear();
    (selection, variants)
}

/// Set dotted `key` in `params`, creating (or replacing non-table values with) tables
/// along the way: a swept value overrides whatever the target had there.
fn set_path(params: &mut BTreeMap<String, toml::Value>, key: &str, value: toml::Value) {
    let mut parts = key.split('.');
    let first = parts.next().expect("keys are non-empty");
    let rest: Vec<&str> = parts.collect();
    if rest.is_empty() {
        params.insert(first.to_owned(), value);
        return;
    }
    let mut slot = params
        .entry(first.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    for part in rest[..rest.len() - 1].iter() {
        if !slot.is_table() {
            *slot = toml::Value::Table(toml::Table::new());
        }
        slot = slot
            .as_table_mut()
            .expect("made a table above")
            .entry(*part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    if !slot.is_table() {
        *slot = toml::Value::Table(toml::Table::new());
    }
    slot.as_table_mut()
        .expect("made a table above")
        .insert(rest[rest.len() - 1].to_owned(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_values_canonically() {
        use toml::Value::*;
        let cases = [
            (Float(0.05), "0.05"),
            (Float(1.0), "1.0"),
            (Float(0.0), "0.0"),
            (Float(-0.5), "-0.5"),
            (Integer(3), "3"),
            (Boolean(true), "true"),
            (String("adam".into()), "adam"),
            (String("v1.2".into()), "v1.2"),
        ];
        for (v, want) in cases {
            assert_eq!(render_value(&v), want);
            // What we render parses back to the same value.
            assert_eq!(parse_label_value(want), Some(v));
        }
        // Strings that would need quotes cannot be swept, so no label names them.
        for (v, want) in [("1x", "\"1x\""), ("true", "\"true\""), ("nan", "\"nan\"")] {
            let v = String(v.into());
            assert_eq!(render_value(&v), want);
            assert!(check_value(&v).is_err());
            assert_eq!(parse_label_value(want), None);
        }
    }

    #[test]
    fn canonicalizes_variant_names() {
        let cases = [
            ("fm[lr=0.05,l2=0.001]", "fm[l2=0.001,lr=0.05]"),
            ("fm[lr=5e-2]", "fm[lr=0.05]"),
            ("fm[ lr = 0.05 , opt = adam ]", "fm[lr=0.05,opt=adam]"),
            ("fm[opt=\"adam\"]", "fm[opt=adam]"),
            ("fm[n=1_000]", "fm[n=1000]"),
            ("fm[train.lr=1.0]", "fm[train.lr=1.0]"),
        ];
        for (text, want) in cases {
            assert_eq!(canonical_variant_name(text).as_deref(), Ok(want), "{text}");
        }
        for text in [
            "fm[]",
            "fm[lr]",
            "fm[lr=0.1",
            "fm[lr=0.1,lr=0.2]",
            "fm[lr=[1]]",
            "fm[lr=a/b]",
            "[lr=1]",
            "fm[l r=1]",
            "fm[lr=\"a b\"]",
        ] {
            assert!(canonical_variant_name(text).is_err(), "{text}");
        }
    }

    #[test]
    fn combinations_cover_the_grid() {
        let sweep = Sweep {
            axes: BTreeMap::from([
                (
                    "lr".into(),
                    vec![toml::Value::Float(0.1), toml::Value::Float(0.2)],
                ),
                (
                    "l2".into(),
                    vec![toml::Value::Integer(0), toml::Value::Integer(1)],
                ),
            ]),
        };
        let names: Vec<String> = sweep
            .combinations()
            .iter()
            .map(|c| variant_name("m", c))
            .collect();
        assert_eq!(
            names,
            [
                "m[l2=0,lr=0.1]",
                "m[l2=0,lr=0.2]",
                "m[l2=1,lr=0.1]",
                "m[l2=1,lr=0.2]"
            ]
        );
    }

    #[test]
    fn set_path_overrides_nested() {
        let mut p: BTreeMap<String, toml::Value> =
            toml::from_str("seed = 1\ntrain = { lr = 0.5, epochs = 3 }\n").unwrap();
        set_path(&mut p, "train.lr", toml::Value::Float(0.1));
        set_path(&mut p, "seed", toml::Value::Integer(2));
        set_path(&mut p, "a.b.c", toml::Value::Integer(3));
        assert_eq!(
            toml::to_string(&p).unwrap(),
            "seed = 2\n\n[a.b]\nc = 3\n\n[train]\nepochs = 3\nlr = 0.1\n"
        );
    }
}
