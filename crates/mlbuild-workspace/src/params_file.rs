//! Params files (`params.toml`, `.json`, `.yaml`): named hyperparameters shared by
//! targets, of which each target takes only the keys it lists in `param_keys`.
//!
//! Resolution happens once at load time: each listed key's value is copied into the
//! target's `params` at the same dotted path, so it reaches `{params.a.b}`, the params
//! JSON file and the action key exactly like an inline param, and a key the target does
//! not list can change without touching its key. `--set key=value` overrides
//! ([`ParamOverride`]) are applied to the files' contents before that copy.
//! Main function: [`resolve`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use crate::config::WorkspaceConfig;
use crate::error::{closest, ErrorKind, WorkspaceError};
use crate::package::Package;
use crate::source::{SourceText, Span};
use crate::sweep::is_valid_param_key;

/// One `--set KEY=VALUE` from the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamOverride {
    /// Dotted key into the params files.
    pub key: String,
    pub value: toml::Value,
}

impl ParamOverride {
    /// Parse `train.lr=0.1`: the value is a TOML value (`0.1`, `"adam"`, `[1, 2]`,
    /// `{ a = 1 }`), so its type is never guessed.
    pub fn parse(text: &str) -> Result<ParamOverride, WorkspaceError> {
        let bad = |why: String| {
            WorkspaceError::new(ErrorKind::Invalid, format!("invalid `--set {text}`: {why}"))
        };
        let Some((key, value)) = text.split_once('=') else {
            return Err(bad("expected `KEY=VALUE`".to_owned())
                .with_help("for example `--set train.lr=0.1`"));
        };
        let key = key.trim();
        if !is_valid_param_key(key) {
            return Err(bad(format!("`{key}` is not a params key"))
                .with_help("keys are dotted paths into the params file, like `train.lr`"));
        }
        let value = value.trim();
        let parsed: Result<toml::Table, _> = toml::from_str(&format!("v = {value}"));
        match parsed.ok().and_then(|mut t| t.remove("v")) {
            Some(value) => Ok(ParamOverride {
                key: key.to_owned(),
                value,
            }),
            None => Err(bad(format!("`{value}` is not a TOML value")).with_help(format!(
                "quote strings: `--set '{key}=\"{value}\"'`; numbers, booleans, `[arrays]` and `{{ tables }}` are written as in TOML"
            ))),
        }
    }
}

/// A parsed params file's content, as JSON (TOML and YAML convert losslessly enough:
/// datetimes become strings).
struct ParamsDoc {
    value: serde_json::Value,
}

impl ParamsDoc {
    fn get(&self, key: &str) -> Option<&serde_json::Value> {
        key.split('.')
            .try_fold(&self.value, |v, part| v.as_object()?.get(part))
    }

    /// Replace the value at `key`; false if the file has no such key.
    fn set(&mut self, key: &str, value: serde_json::Value) -> bool {
        let mut slot = &mut self.value;
        for part in key.split('.') {
            match slot.as_object_mut().and_then(|o| o.get_mut(part)) {
                Some(next) => slot = next,
                None => return false,
            }
        }
        *slot = value;
        true
    }

    /// Every key path (tables and leaves), for did-you-mean suggestions.
    fn keys(&self) -> Vec<String> {
        fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
            if let Some(obj) = v.as_object() {
                for (k, child) in obj {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    out.push(path.clone());
                    walk(&path, child, out);
                }
            }
        }
        let mut out = Vec::new();
        walk("", &self.value, &mut out);
        out
    }
}

/// Byte offset of 1-based `line` and `column` in `text` (clamped), for parsers that
/// report positions rather than offsets.
fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    (start + column.saturating_sub(1)).min(text.len())
}

/// Read and parse the params file at workspace-relative `rel`. `origin` is where the file
/// is named (a `BUILD.toml` entry or `MLBUILD.toml`), for "no such file" errors.
fn load(
    root: &Path,
    rel: &str,
    origin: (&Arc<SourceText>, Span),
) -> Result<ParamsDoc, WorkspaceError> {
    let path = root.join(rel);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        let not_found = e.kind() == std::io::ErrorKind::NotFound;
        let err = WorkspaceError::new(
            ErrorKind::Invalid,
            if not_found {
                format!("params file `{rel}` does not exist")
            } else {
                format!("cannot read params file `{rel}`: {e}")
            },
        )
        .at(origin.0, origin.1.clone())
        .with_label("params file");
        if not_found {
            err.with_help(
                "paths are relative to the package (`//path` is relative to the workspace root)",
            )
        } else {
            err
        }
    })?;
    let source = Arc::new(SourceText {
        name: rel.to_owned(),
        text,
    });
    let syntax = |message: String, at: Span| {
        WorkspaceError::new(ErrorKind::Toml, message)
            .at(&source, at)
            .with_label("here")
    };
    let ext = rel.rsplit_once('.').map_or("", |(_, e)| e);
    let value: serde_json::Value = match ext {
        "toml" => {
            let table: toml::Table = toml::from_str(&source.text).map_err(|e| {
                let span = e.span().unwrap_or(0..0);
                syntax(
                    format!(
                        "invalid TOML in params file `{rel}`: {}",
                        e.message().trim_end()
                    ),
                    span,
                )
            })?;
            serde_json::to_value(table).map_err(|e| {
                syntax(
                    format!("params file `{rel}` cannot be represented: {e}"),
                    0..0,
                )
            })?
        }
        "json" => serde_json::from_str(&source.text).map_err(|e| {
            let at = offset_of(&source.text, e.line(), e.column());
            syntax(format!("invalid JSON in params file `{rel}`: {e}"), at..at)
        })?,
        "yaml" | "yml" => serde_yaml_ng::from_str(&source.text).map_err(|e| {
            let at = e.location().map_or(0, |l| l.index().min(source.text.len()));
            syntax(format!("invalid YAML in params file `{rel}`: {e}"), at..at)
        })?,
        _ => {
            return Err(WorkspaceError::new(
                ErrorKind::Invalid,
                format!("params file `{rel}` is not `.toml`, `.json`, `.yaml` or `.yml`"),
            )
            .at(origin.0, origin.1)
            .with_label("unknown format")
            .with_help("the format is chosen by the file extension"))
        }
    };
    if !value.is_object() {
        return Err(syntax(
            format!("params file `{rel}` must hold a table (a mapping of names to values)"),
            0..source.text.len().min(1),
        ));
    }
    Ok(ParamsDoc { value })
}

/// Copy each target's `param_keys` from its params file into its `params`, after
/// applying `overrides` to the files. Every file is read once however many targets use it;
/// returns their workspace-relative paths, sorted (the parse cache re-checks them).
pub(crate) fn resolve(
    root: &Path,
    config: &WorkspaceConfig,
    config_source: &Arc<SourceText>,
    packages: &mut BTreeMap<String, Package>,
    overrides: &[ParamOverride],
) -> Result<Vec<String>, WorkspaceError> {
    let mut docs: HashMap<String, ParamsDoc> = HashMap::new();
    if let (Some(rel), Some(span)) = (&config.params, &config.params_span) {
        docs.insert(rel.clone(), load(root, rel, (config_source, span.clone()))?);
    }
    for target in packages.values().flat_map(|p| p.targets.values()) {
        if let (Some(rel), Some(span)) = (&target.params_file, &target.spans.params_file) {
            if !docs.contains_key(rel) {
                docs.insert(
                    rel.clone(),
                    load(root, rel, (&target.source, span.clone()))?,
                );
            }
        }
    }

    for o in overrides {
        let json = serde_json::to_value(&o.value).map_err(|e| {
            WorkspaceError::new(
                ErrorKind::Invalid,
                format!("`--set {}`: the value cannot be used: {e}", o.key),
            )
        })?;
        let mut hit = false;
        for doc in docs.values_mut() {
            hit |= doc.set(&o.key, json.clone());
        }
        if !hit {
            let mut names: Vec<&str> = docs.keys().map(String::as_str).collect();
            names.sort();
            let keys: Vec<String> = docs.values().flat_map(ParamsDoc::keys).collect();
            let help = match (names.is_empty(), closest(&o.key, keys.iter().map(String::as_str))) {
                (true, _) => "`--set` changes keys of params files; this workspace uses none (set `params` under `[workspace]` in MLBUILD.toml or `params_file` on a target)".to_owned(),
                (false, Some(s)) => format!("did you mean `{s}`?"),
                (false, None) => format!(
                    "`--set` can only change keys that exist in {}",
                    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
                ),
            };
            let place = if names.is_empty() {
                "any params file".to_owned()
            } else {
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(WorkspaceError::new(
                ErrorKind::NotFound,
                format!("`--set {}`: no key `{}` in {place}", o.key, o.key),
            )
            .with_help(help));
        }
    }

    for package in packages.values_mut() {
        for target in package.targets.values_mut() {
            if target.param_keys.is_empty() {
                continue;
            }
            let rel = match (&target.params_file, &config.params) {
                (Some(rel), _) | (None, Some(rel)) => rel.clone(),
                (None, None) => {
                    let span = target.spans.param_keys[0].clone();
                    return Err(WorkspaceError::new(
                        ErrorKind::Invalid,
                        format!("`{}` lists `param_keys` but has no params file", target.label),
                    )
                    .at(&target.source, span)
                    .with_label("from which file?")
                    .with_help("set `params = \"params.toml\"` under `[workspace]` in MLBUILD.toml, or `params_file = \"...\"` on the target"));
                }
            };
            let doc = &docs[&rel];
            for (key, span) in target.param_keys.iter().zip(&target.spans.param_keys) {
                let Some(value) = doc.get(key) else {
                    let keys = doc.keys();
                    let help = match closest(key, keys.iter().map(String::as_str)) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("add `{key}` to `{rel}`, or remove it from `param_keys`"),
                    };
                    return Err(WorkspaceError::new(
                        ErrorKind::NotFound,
                        format!(
                            "params key `{key}` of `{}` does not exist in `{rel}`",
                            target.label
                        ),
                    )
                    .at(&target.source, span.clone())
                    .with_label("no such key")
                    .with_help(help));
                };
                let value: toml::Value = serde_json::from_value(value.clone()).map_err(|e| {
                    // TOML, and so params, have no null; JSON and YAML do.
                    let why = if value.is_null() || e.to_string().contains("unit") {
                        "holds a null, which a param cannot be".to_owned()
                    } else {
                        format!("cannot be a param: {e}")
                    };
                    WorkspaceError::new(
                        ErrorKind::Invalid,
                        format!("params key `{key}` in `{rel}` {why}"),
                    )
                    .at(&target.source, span.clone())
                    .with_label("unusable value")
                    .with_help(format!("give `{key}` a value TOML can hold in `{rel}`"))
                })?;
                insert(&mut target.params, key, value).map_err(|why| {
                    WorkspaceError::new(
                        ErrorKind::Invalid,
                        format!("params key `{key}` of `{}` {why}", target.label),
                    )
                    .at(&target.source, span.clone())
                    .with_label("conflict")
                    .with_help("a param comes either from `params` or from `param_keys`, not both")
                })?;
            }
            target.params_file = Some(rel);
        }
    }
    let mut read: Vec<String> = docs.into_keys().collect();
    read.sort();
    Ok(read)
}

/// Insert `value` at dotted `key` into `params`, creating tables; `Err` if something is
/// already there (an inline param or an overlapping key).
fn insert(
    params: &mut BTreeMap<String, toml::Value>,
    key: &str,
    value: toml::Value,
) -> Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    let (last, init) = parts.split_last().expect("keys are non-empty");
    let mut table: &mut toml::Table = {
        if init.is_empty() {
            if params.contains_key(*last) {
                return Err("is also set in `params`".to_owned());
            }
            params.insert((*last).to_owned(), value);
            return Ok(());
        }
        let slot = params
            .entry(init[0].to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        slot.as_table_mut().ok_or_else(|| {
            format!(
                "needs `{}` to be a table, but it is set in `params`",
                init[0]
            )
        })?
    };
    for (i, part) in init.iter().enumerate().skip(1) {
        let slot = table
            .entry(*part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = slot.as_table_mut().ok_or_else(|| {
            format!(
                "needs `{}` to be a table, but it is set already",
                init[..=i].join(".")
            )
        })?;
    }
    if table.contains_key(*last) {
        return Err("is set twice (in `params`, or by an overlapping key)".to_owned());
    }
    table.insert((*last).to_owned(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse_as_toml_values() {
        let o = ParamOverride::parse("train.lr=0.1").unwrap();
        assert_eq!(
            (o.key.as_str(), o.value),
            ("train.lr", toml::Value::Float(0.1))
        );
        let o = ParamOverride::parse("opt=\"adam\"").unwrap();
        assert_eq!(o.value, toml::Value::String("adam".into()));
        let o = ParamOverride::parse("layers=[1, 2]").unwrap();
        assert!(o.value.is_array());
        for bad in ["lr", "=1", "a..b=1", "opt=adam", "lr=", "lr=1 2"] {
            assert!(ParamOverride::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn offsets_from_line_and_column() {
        let text = "ab\ncde\nf";
        assert_eq!(offset_of(text, 1, 1), 0);
        assert_eq!(offset_of(text, 2, 2), 4);
        assert_eq!(offset_of(text, 3, 1), 7);
        assert_eq!(offset_of(text, 9, 9), text.len());
    }

    #[test]
    fn insert_merges_and_refuses_conflicts() {
        let mut p: BTreeMap<String, toml::Value> =
            toml::from_str("seed = 1\ntrain = { epochs = 3 }\n").unwrap();
        insert(&mut p, "train.lr", toml::Value::Float(0.1)).unwrap();
        insert(&mut p, "data.rows", toml::Value::Integer(5)).unwrap();
        assert_eq!(p["train"]["lr"].as_float(), Some(0.1));
        assert_eq!(p["data"]["rows"].as_integer(), Some(5));
        assert!(insert(&mut p, "seed", toml::Value::Integer(2)).is_err());
        assert!(insert(&mut p, "train.epochs", toml::Value::Integer(2)).is_err());
        assert!(insert(&mut p, "seed.x", toml::Value::Integer(2)).is_err());
    }
}
