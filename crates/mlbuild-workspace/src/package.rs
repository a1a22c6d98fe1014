//! Parsing and load-time validation of one `BUILD.toml` into a [`Package`] of [`Target`]s.
//!
//! Everything that can be checked from a single file is checked here, with spans, so a
//! typo is reported at the line that has it rather than when an action runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::config::{check_amount, WorkspaceConfig};
use crate::error::{closest, ErrorKind, WorkspaceError};
use crate::gate::{Baseline, Gate};
use crate::label::{is_valid_target_name, Label};
use crate::source::{SourceText, Span};

/// Every allowed `kind`. All but `filegroup` run a command; `validate`, `drift`,
/// `package` and `python_env` are built in (see [`crate::builtin`]).
pub const KINDS: [&str; 12] = [
    "command",
    "data",
    "features",
    "train",
    "eval",
    "test",
    "transform",
    "filegroup",
    "validate",
    "drift",
    "package",
    "python_env",
];

/// Env vars mlbuild sets itself in every action; declaring them would break hermeticity.
pub const RESERVED_ENV: [&str; 7] = [
    "HOME",
    "TMPDIR",
    "TZ",
    "LC_ALL",
    "SOURCE_DATE_EPOCH",
    "PATH",
    "VIRTUAL_ENV",
];

/// Thread-count variables of the numeric stack (OpenMP, MKL, OpenBLAS). Unless a target
/// sets them, each is its declared `cpu` count (at least 1): a BLAS or OpenMP loop that
/// splits its work by the machine's core count can round differently on another machine.
pub const THREAD_ENV: [&str; 3] = ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"];

/// Where a Python environment built by mlbuild lives inside every sandbox that uses it.
/// A venv embeds its own absolute path (script shebangs, `VIRTUAL_ENV`), so the path is
/// a function of the target's label alone, never of the workspace or the store.
pub const PYTHON_ENV_ROOT: &str = "/mlbuild/env";

/// What a `python_env` target is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PythonEnv {
    /// Built by mlbuild from a lock file, mounted at `prefix` (under [`PYTHON_ENV_ROOT`]).
    Locked { prefix: String },
    /// An environment mlbuild did not build, at this canonical host path; it is mounted
    /// at the same path (its files name it) and its tree's digest enters every key.
    External { path: std::path::PathBuf },
}

/// One `BUILD.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Package {
    /// Workspace-relative directory, POSIX, `""` for the root.
    pub name: String,
    /// Absolute path of the `BUILD.toml`.
    pub build_file: PathBuf,
    /// Targets by name.
    #[serde(deserialize_with = "crate::load_cache::bulk_map")]
    pub targets: BTreeMap<String, Target>,
    /// The file's text, shared with its targets for diagnostics. Not in the parse cache,
    /// which re-attaches the text it was keyed by.
    #[serde(skip)]
    pub source: Arc<SourceText>,
}

/// One `[target.NAME]` table, validated and with defaults filled in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub label: Label,
    /// One of [`KINDS`].
    pub kind: String,
    /// Package-relative files or globs, as written (expand with `Workspace::expand_srcs`).
    pub srcs: Vec<String>,
    /// Resolved labels, in the order written.
    pub deps: Vec<Label>,
    pub cmd: Vec<String>,
    /// Relative POSIX paths as written; a trailing `/` marks a directory output.
    pub outs: Vec<String>,
    #[serde(with = "crate::load_cache::values")]
    pub params: BTreeMap<String, toml::Value>,
    pub env: BTreeMap<String, String>,
    pub secret_env: Vec<String>,
    pub tools: Vec<String>,
    /// Requested resources; `cpu` is always present (default 1).
    pub resources: BTreeMap<String, f64>,
    pub timeout: Option<Duration>,
    pub network: bool,
    /// Metrics files among the outputs (paths relative to `{out}`), JSON objects whose
    /// numeric leaves are metrics.
    pub metrics: Vec<String>,
    /// Gates checked against the metrics after every build of this target.
    pub gates: Vec<Gate>,
    /// What `baseline.METRIC` in gates refers to.
    pub baseline: Option<Baseline>,
    /// The params file `param_keys` are read from, workspace-relative: `params_file` as
    /// written, else (once keys are resolved) `[workspace] params`.
    pub params_file: Option<String>,
    /// Dotted keys of the params file this target uses; their values are merged into
    /// `params` at load time, so only they enter the action key.
    pub param_keys: Vec<String>,
    /// The grid of a swept target; kept on its selection after expansion.
    pub sweep: Option<crate::sweep::Sweep>,
    /// How the selection of a sweep picks its variant (set on selections only).
    pub select: Option<crate::sweep::Select>,
    /// The swept values of a sweep variant (set on variants only).
    #[serde(with = "crate::load_cache::optional_values")]
    pub variant: Option<BTreeMap<String, toml::Value>>,
    /// Why this target's outputs are allowed to differ between runs: `mlbuild audit`
    /// reports it instead of failing.
    pub nondeterministic: Option<String>,
    /// Set on `python_env` targets.
    pub python_env: Option<PythonEnv>,
    /// `env = "//envs:train"`: the dependency that must be a `python_env` (checked when
    /// planning, where every package is known).
    pub env_target: Option<Label>,
    /// The `BUILD.toml` this target came from (shared, never copied per target).
    #[serde(skip)]
    pub source: Arc<SourceText>,
    /// Where each part of the target is written in `source`.
    pub spans: TargetSpans,
}

/// Byte spans into a target's `BUILD.toml`, parallel to the fields of [`Target`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetSpans {
    /// The target's name in `[target.NAME]`.
    pub name: Span,
    pub kind: Option<Span>,
    pub srcs: Vec<Span>,
    pub deps: Vec<Span>,
    pub cmd: Vec<Span>,
    pub outs: Vec<Span>,
    pub tools: Vec<Span>,
    /// Spans of the `env` keys, by name.
    pub env: BTreeMap<String, Span>,
    pub secret_env: Vec<Span>,
    pub params: Option<Span>,
    pub timeout: Option<Span>,
    pub metrics: Vec<Span>,
    /// The span of each gate's string token.
    pub gates: Vec<Span>,
    pub baseline: Option<Span>,
    pub params_file: Option<Span>,
    pub param_keys: Vec<Span>,
    pub sweep: Option<Span>,
    pub select: Option<Span>,
}

impl Target {
    /// Whether this kind runs a command (everything but `filegroup` and a sweep's
    /// `select`).
    pub fn runs_command(&self) -> bool {
        self.kind != "filegroup" && self.select.is_none()
    }

    /// An error pointing at `span` in this target's `BUILD.toml`, for checks made later
    /// (e.g. a tool missing from the sandbox path, pointed at `spans.cmd[0]`).
    pub fn error_at(
        &self,
        kind: ErrorKind,
        message: impl Into<String>,
        span: Span,
    ) -> WorkspaceError {
        WorkspaceError::new(kind, message).at(&self.source, span)
    }

    /// Whether this is a built-in kind (`validate`, `drift`, `package`), whose program is
    /// mlbuild itself.
    pub fn is_builtin(&self) -> bool {
        crate::builtin::is_builtin(&self.kind)
    }

    /// The environment variables the action runs with and its key records: the declared
    /// `env`, plus `PYTHONHASHSEED=0` and the [`THREAD_ENV`] variables (the declared
    /// `cpu` count) unless declared.
    pub fn action_env(&self) -> BTreeMap<String, String> {
        let mut env = self.env.clone();
        let cpus = self
            .resources
            .get("cpu")
            .copied()
            .unwrap_or(1.0)
            .floor()
            .max(1.0);
        for name in THREAD_ENV {
            env.entry(name.to_owned())
                .or_insert_with(|| format!("{cpus}"));
        }
        env.entry("PYTHONHASHSEED".to_owned())
            .or_insert_with(|| "0".to_owned());
        env
    }

    /// The names usable as `{deps.NAME}`: each dep's target name.
    pub fn dep_names(&self) -> impl Iterator<Item = &str> {
        self.deps.iter().map(|d| d.name.as_str())
    }
}

/// Deserialize TOML text with `T`'s schema, turning syntax and schema errors into
/// diagnostics that point at the offending text.
pub(crate) fn from_toml<T: serde::de::DeserializeOwned>(
    source: &Arc<SourceText>,
) -> Result<T, WorkspaceError> {
    toml::from_str(&source.text).map_err(|e| {
        let raw = e.message().trim_end().trim_end_matches('.').to_owned();
        let span = e.span().map(|span| visible_span(&source.text, span));
        let place = span.as_ref().map(|s| Place::of(&source.text, s.start));
        let (message, label, help) = explain_toml_error(&raw, place.as_ref());
        let err = WorkspaceError::new(ErrorKind::Toml, message)
            .with_label(label)
            .with_help_opt(help);
        match (span, place) {
            (Some(span), Some(place)) => {
                let err = err.at(source, span);
                let owner = place.owner();
                match (place.table, owner) {
                    (Some((header, _)), Some(owner)) => {
                        err.with_context(header, format!("in {owner}"))
                    }
                    _ => err,
                }
            }
            (Some(span), None) => err.at(source, span),
            _ => err.at(source, 0..0),
        }
    })
}

/// Where in a TOML file an error is: the key written on its line, and the nearest table
/// header above it (`[target.train]`, `[remote]`) with its span.
struct Place {
    key: Option<String>,
    table: Option<(std::ops::Range<usize>, String)>,
}

impl Place {
    fn of(text: &str, offset: usize) -> Place {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line = &text[line_start..];
        let line = &line[..line.find('\n').unwrap_or(line.len())];
        let key = line
            .split_once('=')
            .map(|(k, _)| k.trim().trim_matches('"').to_owned())
            .filter(|k| !k.is_empty() && !k.starts_with('[') && !k.contains(char::is_whitespace));
        // Inside an inline table (`resources = { cpu = "2" }`) the value's own key is the
        // last `NAME =` before it on the line.
        let before = &text[line_start..offset];
        let inner = before.rfind('=').and_then(|eq| {
            let name = before[..eq].trim_end();
            let start = name
                .char_indices()
                .rfind(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '"'))
                .map_or(0, |(i, c)| i + c.len_utf8());
            let name = name[start..].trim_matches('"');
            (!name.is_empty()).then(|| name.to_owned())
        });
        let key = match (key, inner) {
            (Some(k), Some(i)) if k != i => Some(format!("{k}.{i}")),
            (k, i) => k.or(i),
        };
        let mut table = None;
        let mut at = 0;
        for l in text[..line_start].split_inclusive('\n') {
            let trimmed = l.trim();
            if trimmed.starts_with('[') && !trimmed.starts_with("[[") {
                let name = trimmed
                    .trim_start_matches('[')
                    .split(']')
                    .next()
                    .unwrap_or("")
                    .trim();
                let lead = l.len() - l.trim_start().len();
                table = Some((at + lead..at + lead + trimmed.len(), name.to_owned()));
            }
            at += l.len();
        }
        Place { key, table }
    }

    /// `target `train``, `[remote]`, or nothing at the top level.
    fn owner(&self) -> Option<String> {
        let (_, name) = self.table.as_ref()?;
        Some(match name.strip_prefix("target.") {
            Some(target) => format!("target `{}`", target.split('.').next().unwrap_or(target)),
            None => format!("`[{name}]`"),
        })
    }
}

/// A serde/TOML message in the words of the file's format: the field and where it is,
/// type names a user writes (`a number`, not `f64`), and a did-you-mean for a misspelled
/// field. Returns (message, label, help).
fn explain_toml_error(raw: &str, place: Option<&Place>) -> (String, String, Option<String>) {
    let owner = place.and_then(Place::owner);
    let inside = owner.as_ref().map_or(String::new(), |o| format!(" in {o}"));
    if let Some(rest) = raw.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let suggestion = closest(field, known.iter().copied());
        let list = known
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let help = match (suggestion, known.is_empty()) {
            (Some(s), _) => Some(format!("did you mean `{s}`? the fields are {list}")),
            (None, false) => Some(format!("the fields are {list}")),
            (None, true) => None,
        };
        return (
            format!("unknown field `{field}`{inside}"),
            "unknown field".into(),
            help,
        );
    }
    if let Some(rest) = raw.strip_prefix("invalid type: ") {
        let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let field = place
            .and_then(|p| p.key.clone())
            .map_or_else(|| "a value".to_owned(), |k| format!("`{k}`"));
        let message = format!(
            "{field}{inside} must be {}, not {}",
            type_words(expected),
            found_words(found)
        );
        return (message, "wrong type".into(), None);
    }
    if let Some(rest) = raw.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        return (
            format!("missing field `{field}`{inside}"),
            "missing field".into(),
            Some(format!("add `{field} = ...`")),
        );
    }
    (raw.to_owned(), "here".into(), None)
}

/// Rust type names in serde messages, as the TOML a user writes.
fn type_words(expected: &str) -> String {
    let e = expected.trim();
    let words = match e {
        "f64" | "f32" => "a number",
        "u64" | "u32" | "u16" | "u8" | "usize" => "a whole number (0 or more)",
        "i64" | "i32" | "i16" | "i8" | "isize" => "a whole number",
        "a boolean" | "bool" => "`true` or `false`",
        "a string" | "a borrowed string" | "a character" => "a string",
        "a sequence" => "an array",
        _ if e.starts_with("struct ") || e.starts_with("a map") || e == "a table" => "a table",
        _ => return e.to_owned(),
    };
    words.to_owned()
}

/// serde's description of what was found (`string "10"`, `integer `3``, `sequence`).
fn found_words(found: &str) -> String {
    let f = found.trim();
    let (kind, value) = f.split_once(' ').unwrap_or((f, ""));
    let noun = match kind {
        "string" => "a string",
        "integer" => "an integer",
        "float" => "a number",
        "boolean" => "a boolean",
        "sequence" => "an array",
        "map" => "a table",
        _ => return f.to_owned(),
    };
    if value.is_empty() {
        noun.to_owned()
    } else {
        format!("{noun} ({value})")
    }
}

/// A syntax error found at the end of the file (an unclosed array or string) has an empty
/// span past the last character, under which nothing can be marked; point at the last
/// non-blank character instead, which is where the user stopped typing.
fn visible_span(text: &str, span: std::ops::Range<usize>) -> std::ops::Range<usize> {
    if span.start < text.trim_end().len() {
        return span;
    }
    let end = text.trim_end().len();
    match text[..end].char_indices().next_back() {
        Some((i, c)) => i..i + c.len_utf8(),
        None => span,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    #[serde(default)]
    target: BTreeMap<Spanned<String>, Spanned<RawTarget>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    kind: Option<Spanned<String>>,
    #[serde(default)]
    srcs: Vec<Spanned<String>>,
    #[serde(default)]
    deps: Vec<Spanned<String>>,
    #[serde(default)]
    cmd: Vec<Spanned<String>>,
    #[serde(default)]
    outs: Vec<Spanned<String>>,
    params: Option<Spanned<BTreeMap<String, toml::Value>>>,
    env: Option<Spanned<RawEnv>>,
    #[serde(default)]
    secret_env: Vec<Spanned<String>>,
    #[serde(default)]
    tools: Vec<Spanned<String>>,
    resources: Option<Spanned<BTreeMap<Spanned<String>, Spanned<f64>>>>,
    timeout: Option<Spanned<f64>>,
    #[serde(default)]
    network: bool,
    #[serde(default)]
    metrics: Vec<Spanned<String>>,
    #[serde(default)]
    gates: Vec<Spanned<String>>,
    baseline: Option<Spanned<String>>,
    params_file: Option<Spanned<String>>,
    #[serde(default)]
    param_keys: Vec<Spanned<String>>,
    sweep: Option<Spanned<crate::sweep::RawSweep>>,
    select: Option<Spanned<crate::sweep::RawSelect>>,
    nondeterministic: Option<Spanned<String>>,
    // Fields of the built-in kinds (see `crate::builtin`).
    data: Option<Spanned<String>>,
    schema: Option<Spanned<String>>,
    reference: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
    files: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    lock: Option<Spanned<String>>,
    python: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    allow_missing_hashes: Option<Spanned<bool>>,
    allow_source_builds: Option<Spanned<bool>>,
}

/// `env`: a table of declared variables, or the label of a `python_env` target to run in
/// (`env = "//envs:train"`), which then joins `deps`.
enum RawEnv {
    Vars(BTreeMap<Spanned<String>, Spanned<String>>),
    Python(String),
}

impl<'de> Deserialize<'de> for RawEnv {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawEnv;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table of strings or the label of a python_env target")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawEnv, E> {
                Ok(RawEnv::Python(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawEnv, A::Error> {
                let mut vars = BTreeMap::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let value = map.next_value::<Spanned<String>>()?;
                    vars.insert(key, value);
                }
                Ok(RawEnv::Vars(vars))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

fn invalid(source: &Arc<SourceText>, span: Span, message: String) -> WorkspaceError {
    WorkspaceError::new(ErrorKind::Invalid, message).at(source, span)
}

/// Whether `path` is a relative POSIX path without `.`, `..` or empty components.
pub(crate) fn is_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

fn split_spanned(items: Vec<Spanned<String>>) -> (Vec<String>, Vec<Span>) {
    let spans = items.iter().map(Spanned::span).collect();
    let values = items.into_iter().map(Spanned::into_inner).collect();
    (values, spans)
}

/// Whether `name` is a portable environment variable name.
pub(crate) fn is_valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn check_env_name(source: &Arc<SourceText>, name: &str, span: Span) -> Result<(), WorkspaceError> {
    if !is_valid_env_name(name) {
        return Err(invalid(
            source,
            span,
            format!("invalid environment variable name `{name}`"),
        )
        .with_label("invalid name")
        .with_help("names may only contain `A-Z a-z 0-9 _` and may not start with a digit"));
    }
    if RESERVED_ENV.contains(&name) {
        return Err(invalid(
            source,
            span,
            format!("`{name}` is set by mlbuild and cannot be declared"),
        )
        .with_label("reserved")
        .with_help(format!(
            "mlbuild fixes {} in every action so results are reproducible",
            RESERVED_ENV.map(|n| format!("`{n}`")).join(", ")
        )));
    }
    Ok(())
}

/// Check `outs`: relative POSIX paths without `.`/`..`/empty components, and no two
/// outputs that are equal or nested (they would fight over the same path).
fn check_outs(
    source: &Arc<SourceText>,
    label: &Label,
    outs: &[String],
    spans: &[Span],
) -> Result<(), WorkspaceError> {
    let mut seen: Vec<&str> = Vec::with_capacity(outs.len());
    for (out, span) in outs.iter().zip(spans) {
        let bad = |why: &str| {
            Err(WorkspaceError::new(ErrorKind::Out, format!("invalid output path `{out}` of `{label}`: {why}"))
                .at(source, span.clone())
                .with_label("invalid output")
                .with_help("outputs are relative paths inside the output directory, like `model.json` or `plots/`"))
        };
        if out.is_empty() {
            return bad("it is empty");
        }
        if out.starts_with('/') {
            return bad("it is absolute");
        }
        if out.contains('\\') {
            return bad("backslashes are not allowed");
        }
        let trimmed = out.strip_suffix('/').unwrap_or(out);
        for comp in trimmed.split('/') {
            match comp {
                "" => return bad("it has an empty component"),
                "." | ".." => return bad(&format!("it contains `{comp}`")),
                _ => {}
            }
        }
        let overlaps = |o: &&&str| {
            **o == trimmed
                || trimmed.strip_prefix(*o).is_some_and(|r| r.starts_with('/'))
                || o.strip_prefix(trimmed).is_some_and(|r| r.starts_with('/'))
        };
        if let Some(other) = seen.iter().find(overlaps) {
            return Err(WorkspaceError::new(ErrorKind::Out, format!("output `{out}` of `{label}` overlaps output `{other}`"))
                .at(source, span.clone())
                .with_label("duplicate output")
                .with_help("list each output path once; a directory output already contains everything below it"));
        }
        seen.push(trimmed);
    }
    Ok(())
}

/// Parse and validate one `BUILD.toml`.
pub(crate) fn parse_package(
    name: &str,
    build_file: PathBuf,
    source: Arc<SourceText>,
    config: &WorkspaceConfig,
) -> Result<Package, WorkspaceError> {
    let raw: RawBuild = from_toml(&source)?;
    let mut targets = BTreeMap::new();
    for (key, raw_target) in raw.target {
        let key_span = key.span();
        let target_name = key.into_inner();
        if !is_valid_target_name(&target_name) {
            return Err(invalid(
                &source,
                key_span,
                format!("invalid target name `{target_name}`"),
            )
            .with_label("invalid name")
            .with_help(
                "target names may only contain `A-Z a-z 0-9 _ . + -` and may not be `.` or `..`",
            ));
        }
        let target = parse_target(
            Label::new(name, target_name.as_str()),
            key_span,
            raw_target.into_inner(),
            &source,
            config,
        )?;
        targets.insert(target_name, target);
    }
    Ok(Package {
        name: name.to_owned(),
        build_file,
        targets,
        source,
    })
}

fn parse_target(
    label: Label,
    name_span: Span,
    raw: RawTarget,
    source: &Arc<SourceText>,
    config: &WorkspaceConfig,
) -> Result<Target, WorkspaceError> {
    let mut spans = TargetSpans {
        name: name_span.clone(),
        ..TargetSpans::default()
    };

    let kind = match raw.kind {
        Some(kind) => {
            if !KINDS.contains(&kind.get_ref().as_str()) {
                let suggestion = closest(kind.get_ref(), KINDS.iter().copied());
                let mut help = format!(
                    "kind must be one of {}",
                    KINDS.map(|k| format!("`{k}`")).join(", ")
                );
                if let Some(s) = suggestion {
                    help = format!("did you mean `{s}`? {help}");
                }
                return Err(invalid(
                    source,
                    kind.span(),
                    format!("unknown kind `{}`", kind.get_ref()),
                )
                .with_label("unknown kind")
                .with_help(help));
            }
            spans.kind = Some(kind.span());
            kind.into_inner()
        }
        None => "command".to_owned(),
    };

    let (mut srcs, src_spans) = split_spanned(raw.srcs);
    spans.srcs = src_spans;
    let (mut cmd, cmd_spans) = split_spanned(raw.cmd);
    spans.cmd = cmd_spans;
    let (mut outs, out_spans) = split_spanned(raw.outs);
    spans.outs = out_spans;

    let builtin_fields = crate::builtin::BuiltinFields {
        data: raw.data,
        schema: raw.schema,
        reference: raw.reference,
        format: raw.format,
        files: raw.files,
        lock: raw.lock,
        python: raw.python,
        path: raw.path,
        allow_missing_hashes: raw.allow_missing_hashes,
        allow_source_builds: raw.allow_source_builds,
    };
    crate::builtin::check_fields(source, &label.to_string(), &kind, &builtin_fields)?;
    let mut python_env = None;
    let mut tools_extra: Vec<(String, Span)> = Vec::new();
    if crate::builtin::is_builtin(&kind) {
        let kind_span = spans.kind.clone().unwrap_or_else(|| name_span.clone());
        for (field, first) in [("cmd", spans.cmd.first()), ("outs", spans.outs.first())] {
            if let Some(span) = first {
                return Err(invalid(
                    source,
                    span.clone(),
                    format!("`{kind}` target `{label}` cannot have `{field}`"),
                )
                .with_label(format!("`{kind}` is built in"))
                .with_help(format!(
                    "mlbuild runs `{kind}` itself and knows its outputs; see docs for its fields"
                )));
            }
        }
        let params_span = raw.params.as_ref().map(Spanned::span);
        let empty = BTreeMap::new();
        let params = raw.params.as_ref().map_or(&empty, |p| p.get_ref());
        let lowered = crate::builtin::lower(
            source,
            &label.to_string(),
            &label.name,
            &kind,
            kind_span,
            &name_span,
            &builtin_fields,
            params,
            params_span,
        )?;
        python_env = lowered.python_env;
        if python_env.is_some() {
            tools_extra = lowered.tools;
        }
        cmd = lowered.cmd;
        spans.cmd = lowered.cmd_spans;
        outs = lowered.outs;
        // Synthesized outputs have no text of their own: point at the kind.
        spans.outs = vec![spans.kind.clone().unwrap_or_else(|| name_span.clone()); outs.len()];
        for (src, span) in lowered.srcs {
            if !srcs.contains(&src) {
                srcs.push(src);
                spans.srcs.push(span);
            }
        }
    }
    let (mut tools, tool_spans) = split_spanned(raw.tools);
    spans.tools = tool_spans;
    for (tool, span) in tools_extra {
        if !tools.contains(&tool) {
            tools.push(tool);
            spans.tools.push(span);
        }
    }

    let mut deps = Vec::with_capacity(raw.deps.len());
    for dep in raw.deps {
        let parsed =
            Label::parse(dep.get_ref(), &label.package).map_err(|e| e.at(source, dep.span()))?;
        deps.push(parsed);
        spans.deps.push(dep.span());
    }
    let (env_vars, python_env_dep) = match raw.env {
        None => (BTreeMap::new(), None),
        Some(env) => {
            let span = env.span();
            match env.into_inner() {
                RawEnv::Vars(vars) => (vars, None),
                RawEnv::Python(text) => {
                    let parsed = Label::parse(&text, &label.package)
                        .map_err(|e| e.at(source, span.clone()))?;
                    if !deps.contains(&parsed) {
                        deps.push(parsed.clone());
                        spans.deps.push(span);
                    }
                    (BTreeMap::new(), Some(parsed))
                }
            }
        }
    };

    // Point "missing cmd" errors at the target's name: the table may be empty or implicit.
    if kind == "filegroup" {
        if let Some(span) = spans.cmd.first() {
            return Err(invalid(
                source,
                span.clone(),
                format!("filegroup `{label}` cannot have a `cmd`"),
            )
            .with_label("not allowed for filegroup")
            .with_help("a filegroup only bundles its `srcs`; use another kind to run a command"));
        }
        if let Some(span) = spans.outs.first() {
            return Err(invalid(
                source,
                span.clone(),
                format!("filegroup `{label}` cannot have `outs`"),
            )
            .with_label("not allowed for filegroup")
            .with_help("a filegroup's outputs are its `srcs`"));
        }
        if srcs.is_empty() {
            return Err(invalid(
                source,
                name_span,
                format!("filegroup `{label}` has no `srcs`"),
            )
            .with_label("no srcs")
            .with_help("add `srcs = [\"file\", \"dir/**\"]`"));
        }
    } else if cmd.is_empty() {
        return Err(invalid(source, name_span, format!("target `{label}` has no `cmd`"))
            .with_label(format!("kind `{kind}` runs a command"))
            .with_help("add `cmd = [\"program\", \"arg\", ...]`, or use `kind = \"filegroup\"` to only bundle files"));
    } else if cmd[0].trim().is_empty() {
        return Err(invalid(
            source,
            spans.cmd[0].clone(),
            format!("the program in `cmd` of `{label}` is empty"),
        )
        .with_label("empty program"));
    }

    check_outs(source, &label, &outs, &spans.outs)
        .map_err(|e| e.with_context(name_span.clone(), format!("in target `{label}`")))?;

    let mut env = BTreeMap::new();
    for (key, value) in env_vars {
        check_env_name(source, key.get_ref(), key.span())?;
        spans.env.insert(key.get_ref().clone(), key.span());
        env.insert(key.into_inner(), value.into_inner());
    }
    let mut secret_env = Vec::with_capacity(raw.secret_env.len());
    for name in raw.secret_env {
        check_env_name(source, name.get_ref(), name.span())?;
        if env.contains_key(name.get_ref()) || secret_env.contains(name.get_ref()) {
            return Err(invalid(source, name.span(), format!("`{}` is declared twice", name.get_ref()))
                .with_label("duplicate")
                .with_help("a variable is either in `env` (value part of the key) or in `secret_env` (copied from the host), not both"));
        }
        spans.secret_env.push(name.span());
        secret_env.push(name.into_inner());
    }

    for (tool, span) in tools.iter().zip(&spans.tools) {
        if tool.is_empty() || tool.chars().any(char::is_whitespace) {
            return Err(
                invalid(source, span.clone(), format!("invalid tool name `{tool}`"))
                    .with_label("invalid tool")
                    .with_help("tools are program names resolved on `[sandbox] path`, like `sh`"),
            );
        }
    }

    let mut resources = BTreeMap::new();
    resources.insert("cpu".to_owned(), 1.0);
    if let Some(raw_resources) = raw.resources {
        for (key, value) in raw_resources.into_inner() {
            if !config.capacity.contains_key(key.get_ref()) {
                let known = config.capacity.keys().map(String::as_str);
                let mut help = format!(
                    "declare it under `[resources]` in `MLBUILD.toml`, e.g. `{} = 1`",
                    key.get_ref()
                );
                if let Some(s) = closest(key.get_ref(), known) {
                    help = format!("did you mean `{s}`? or {help}");
                }
                return Err(invalid(
                    source,
                    key.span(),
                    format!("unknown resource `{}`", key.get_ref()),
                )
                .with_label("unknown resource")
                .with_help(help));
            }
            check_amount(source, key.get_ref(), &value)?;
            resources.insert(key.into_inner(), value.into_inner());
        }
    }

    let timeout = match raw.timeout {
        None => None,
        Some(t) => {
            let secs = *t.get_ref();
            match Duration::try_from_secs_f64(secs) {
                Ok(d) if secs > 0.0 => {
                    spans.timeout = Some(t.span());
                    Some(d)
                }
                _ => {
                    return Err(invalid(
                        source,
                        t.span(),
                        format!("`timeout` must be a positive number of seconds, got `{secs}`"),
                    )
                    .with_label("invalid timeout")
                    .with_help("remove `timeout` for no limit"))
                }
            }
        }
    };

    let params = match raw.params {
        Some(p) => {
            spans.params = Some(p.span());
            p.into_inner()
        }
        None => BTreeMap::new(),
    };

    let (metrics, metric_spans) = split_spanned(raw.metrics);
    spans.metrics = metric_spans;
    crate::gate::check_metrics(source, &label, &kind, &metrics, &spans.metrics, &outs)?;
    let baseline = match raw.baseline {
        Some(b) => {
            spans.baseline = Some(b.span());
            Some(crate::gate::parse_baseline(
                source,
                &label.package,
                b.get_ref(),
                b.span(),
            )?)
        }
        None => None,
    };
    let mut gates = Vec::with_capacity(raw.gates.len());
    for gate in raw.gates {
        spans.gates.push(gate.span());
        gates.push(crate::gate::parse_gate_at(
            source,
            gate.get_ref(),
            gate.span(),
        )?);
    }
    crate::gate::check_gates(source, &label, &gates, &spans, baseline.is_some())?;

    let params_file = match raw.params_file {
        None => None,
        Some(file) => {
            spans.params_file = Some(file.span());
            let text = file.get_ref();
            let (rel, prefix) = match text.strip_prefix("//") {
                Some(rest) => (rest, String::new()),
                None if label.package.is_empty() => (text.as_str(), String::new()),
                None => (text.as_str(), format!("{}/", label.package)),
            };
            if !is_relative_path(rel) {
                return Err(invalid(
                    source,
                    file.span(),
                    format!("invalid params file path `{text}`"),
                )
                .with_label("not a path inside the workspace")
                .with_help(
                    "paths are relative to the package; `//path` is relative to the workspace root",
                ));
            }
            Some(format!("{prefix}{rel}"))
        }
    };
    let mut param_keys = Vec::with_capacity(raw.param_keys.len());
    for key in raw.param_keys {
        if !crate::sweep::is_valid_param_key(key.get_ref()) {
            return Err(invalid(
                source,
                key.span(),
                format!("invalid params key `{}`", key.get_ref()),
            )
            .with_label("invalid key")
            .with_help("keys are dotted paths into the params file, like `train.lr`"));
        }
        if param_keys.contains(key.get_ref()) {
            return Err(invalid(
                source,
                key.span(),
                format!("params key `{}` is listed twice", key.get_ref()),
            )
            .with_label("duplicate"));
        }
        spans.param_keys.push(key.span());
        param_keys.push(key.into_inner());
    }
    let sweep = match raw.sweep {
        None => None,
        Some(sweep) => {
            spans.sweep = Some(sweep.span());
            if kind == "filegroup" {
                return Err(invalid(
                    source,
                    sweep.span(),
                    format!("filegroup `{label}` cannot have a `sweep`"),
                )
                .with_label("not allowed for filegroup"));
            }
            Some(crate::sweep::parse_sweep(
                source,
                &label,
                sweep.into_inner(),
            )?)
        }
    };
    let select = match raw.select {
        None => None,
        Some(select) => {
            spans.select = Some(select.span());
            if sweep.is_none() {
                return Err(invalid(
                    source,
                    select.span(),
                    format!("`select` of `{label}` has no `sweep` to choose from"),
                )
                .with_label("select without sweep")
                .with_help(
                    "add a `sweep` table (e.g. `sweep = { lr = [0.01, 0.1] }`), or remove `select`",
                ));
            }
            Some(crate::sweep::parse_select(
                source,
                &label,
                select.into_inner(),
                &metrics,
                &outs,
            )?)
        }
    };
    if let (Some(span), None) = (&spans.sweep, &select) {
        return Err(invalid(source, span.clone(), format!("the sweep of `{label}` has no `select` rule"))
            .with_label("which variant wins?")
            .with_help("add `select = { metric = \"f1\", goal = \"max\", file = \"metrics.json\" }`: `//pkg:name` then names the best variant"));
    }

    let nondeterministic = match raw.nondeterministic {
        None => None,
        Some(reason) if reason.get_ref().trim().is_empty() => {
            return Err(invalid(
                source,
                reason.span(),
                format!("`nondeterministic` of `{label}` needs a reason"),
            )
            .with_label("empty reason")
            .with_help("say why its outputs differ between runs, e.g. `nondeterministic = \"records the wall-clock time\"`"))
        }
        Some(reason) => Some(reason.into_inner()),
    };

    Ok(Target {
        label,
        kind,
        srcs,
        deps,
        cmd,
        outs,
        params,
        env,
        secret_env,
        tools,
        resources,
        timeout,
        // A locked environment's build is the one action that downloads (its lock pins
        // every wheel by hash); an external environment's is a local hash.
        network: raw.network || matches!(python_env, Some(PythonEnv::Locked { .. })),
        metrics,
        gates,
        baseline,
        params_file,
        param_keys,
        sweep,
        select,
        variant: None,
        nondeterministic,
        python_env,
        env_target: python_env_dep,
        source: Arc::clone(source),
        spans,
    })
}
