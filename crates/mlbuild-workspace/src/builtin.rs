//! Built-in kinds (`validate`, `drift`, `package`, `python_env`): their fields, checked
//! at load time, and the ordinary action each one becomes.
//!
//! A built-in target is sugar for a command target whose program is mlbuild itself
//! (`mlbuild rule <kind> ...`, see `crates/mlbuild/src/commands/rule.rs`). Lowering it here,
//! before anything else looks at the target, means the graph, the key, the sandbox, the
//! cache, `why`, the remote cache and `audit` treat it like any other action; the only
//! special case left downstream is that the program resolves to the running binary
//! ([`BUILTIN_PROGRAM`]) rather than to a tool on the sandbox path.
//!
//! Paths in these fields are either package-relative files, which become `srcs`, or start
//! with a `{deps.NAME}` placeholder and name a dependency's output.

use std::collections::BTreeMap;
use std::sync::Arc;

use toml::Spanned;

use crate::error::{closest, ErrorKind, WorkspaceError};
use crate::package::is_relative_path;
use crate::source::{SourceText, Span};

/// `cmd[0]` of every built-in kind; the executor resolves it to the running mlbuild.
pub const BUILTIN_PROGRAM: &str = "mlbuild";

/// The kinds lowered here.
pub const BUILTIN_KINDS: [&str; 4] = ["validate", "drift", "package", "python_env"];

/// Where the `uv` binary that builds a locked `python_env` is mounted in its sandbox
/// (found on the host through `MLBUILD_UV`, `[python] uv` or the sandbox path; its digest
/// is in the key as the tool `uv`).
pub const UV_IN_SANDBOX: &str = "/mlbuild/bin/uv";

/// Where uv's download cache (`<store>/cache/uv`, shared by every environment build of
/// the store) is mounted, writable, in an environment's build. Safe to share: every wheel
/// is checked against the lock's hashes however it arrives.
pub const UV_CACHE_IN_SANDBOX: &str = "/mlbuild/cache/uv";

/// `params` a `drift` target may set, and the `mlbuild rule drift` flag each becomes.
const DRIFT_PARAMS: [(&str, &str); 5] = [
    ("bins", "--bins"),
    ("psi_warn", "--psi-warn"),
    ("psi_fail", "--psi-fail"),
    ("js_warn", "--js-warn"),
    ("js_fail", "--js-fail"),
];

/// The fields only built-in kinds use, as written.
#[derive(Default)]
pub(crate) struct BuiltinFields {
    pub data: Option<Spanned<String>>,
    pub schema: Option<Spanned<String>>,
    pub reference: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
    pub files: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    pub lock: Option<Spanned<String>>,
    pub python: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub allow_missing_hashes: Option<Spanned<bool>>,
    pub allow_source_builds: Option<Spanned<bool>>,
}

/// What a built-in target lowers to.
pub(crate) struct Lowered {
    pub cmd: Vec<String>,
    /// One span per `cmd` argument (the field it came from), for placeholder errors.
    pub cmd_spans: Vec<Span>,
    pub outs: Vec<String>,
    /// Package-relative files named by the fields; added to `srcs`.
    pub srcs: Vec<(String, Span)>,
    /// Tools the lowered command needs besides mlbuild (`python_env`: the interpreter and
    /// `uv`), with the field that named each.
    pub tools: Vec<(String, Span)>,
    pub python_env: Option<crate::package::PythonEnv>,
}

/// Whether `kind` is lowered by this module.
pub fn is_builtin(kind: &str) -> bool {
    BUILTIN_KINDS.contains(&kind)
}

struct Ctx<'a> {
    source: &'a Arc<SourceText>,
    label: &'a str,
    kind: &'a str,
    kind_span: Span,
    lowered: Lowered,
}

impl Ctx<'_> {
    fn err(&self, span: Span, message: String) -> WorkspaceError {
        WorkspaceError::new(ErrorKind::Invalid, message).at(self.source, span)
    }

    /// A fixed argument, attributed to the `kind` field.
    fn arg(&mut self, arg: &str) {
        self.lowered.cmd.push(arg.to_owned());
        self.lowered.cmd_spans.push(self.kind_span.clone());
    }

    /// `flag path`, where `path` is a dependency output or a source of the package.
    fn path_arg(
        &mut self,
        flag: &str,
        field: &str,
        value: &Spanned<String>,
    ) -> Result<(), WorkspaceError> {
        let path = self.path(field, value)?;
        self.arg(flag);
        self.lowered.cmd.push(path);
        self.lowered.cmd_spans.push(value.span());
        Ok(())
    }

    /// Checks one path field; a plain path becomes a source.
    fn path(&mut self, field: &str, value: &Spanned<String>) -> Result<String, WorkspaceError> {
        let text = value.get_ref();
        if text.starts_with("{deps.") {
            return Ok(text.clone());
        }
        if text.contains('{') || !is_relative_path(text) {
            return Err(self
                .err(value.span(), format!("invalid path `{text}` in `{field}` of `{}`", self.label))
                .with_label("not a package file or dependency output")
                .with_help("write a file of the package (`schema.toml`) or a dependency's output (`{deps.NAME}/file.csv`)"));
        }
        if !self.lowered.srcs.iter().any(|(s, _)| s == text) {
            self.lowered.srcs.push((text.clone(), value.span()));
        }
        Ok(text.clone())
    }

    fn required<'f>(
        &self,
        field: &str,
        value: &'f Option<Spanned<String>>,
        example: &str,
        name_span: &Span,
    ) -> Result<&'f Spanned<String>, WorkspaceError> {
        value.as_ref().ok_or_else(|| {
            self.err(
                name_span.clone(),
                format!("`{}` target `{}` has no `{field}`", self.kind, self.label),
            )
            .with_label(format!("`{field}` missing"))
            .with_help(format!("add `{field} = \"{example}\"`"))
        })
    }
}

/// Checks that only the right kinds use the built-in fields (called for every target).
pub(crate) fn check_fields(
    source: &Arc<SourceText>,
    label: &str,
    kind: &str,
    fields: &BuiltinFields,
) -> Result<(), WorkspaceError> {
    let data_kinds: &[&str] = &["validate", "drift"];
    let env_kind: &[&str] = &["python_env"];
    let span = |f: &Option<Spanned<String>>| f.as_ref().map(Spanned::span);
    let flag_span = |f: &Option<Spanned<bool>>| f.as_ref().map(Spanned::span);
    // Field, where it is written, and the kinds that use it.
    let table: [(&str, Option<Span>, &[&str]); 10] = [
        ("data", span(&fields.data), data_kinds),
        ("schema", span(&fields.schema), data_kinds),
        ("format", span(&fields.format), data_kinds),
        ("reference", span(&fields.reference), &["drift"]),
        (
            "files",
            fields.files.as_ref().map(Spanned::span),
            &["package"],
        ),
        ("lock", span(&fields.lock), env_kind),
        ("python", span(&fields.python), env_kind),
        ("path", span(&fields.path), env_kind),
        (
            "allow_missing_hashes",
            flag_span(&fields.allow_missing_hashes),
            env_kind,
        ),
        (
            "allow_source_builds",
            flag_span(&fields.allow_source_builds),
            env_kind,
        ),
    ];
    for (field, written, kinds) in table {
        let Some(span) = written.filter(|_| !kinds.contains(&kind)) else {
            continue;
        };
        let allowed_on = kinds.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>();
        return Err(WorkspaceError::new(
            ErrorKind::Invalid,
            format!("`{field}` is not a field of `{kind}` target `{label}`"),
        )
        .at(source, span)
        .with_label("not allowed here")
        .with_help(format!(
            "`{field}` is only used by {} targets",
            allowed_on.join(" and ")
        )));
    }
    Ok(())
}

/// Lowers a built-in target into its command, outputs and extra sources.
#[allow(clippy::too_many_arguments)]
pub(crate) fn lower(
    source: &Arc<SourceText>,
    label: &str,
    target_name: &str,
    kind: &str,
    kind_span: Span,
    name_span: &Span,
    fields: &BuiltinFields,
    params: &BTreeMap<String, toml::Value>,
    params_span: Option<Span>,
) -> Result<Lowered, WorkspaceError> {
    let mut ctx = Ctx {
        source,
        label,
        kind,
        kind_span,
        lowered: Lowered {
            cmd: Vec::new(),
            cmd_spans: Vec::new(),
            outs: Vec::new(),
            srcs: Vec::new(),
            tools: Vec::new(),
            python_env: None,
        },
    };
    ctx.arg(BUILTIN_PROGRAM);
    ctx.arg("rule");
    ctx.arg(kind);
    match kind {
        "validate" | "drift" => {
            let data = ctx.required("data", &fields.data, "{deps.NAME}/data.csv", name_span)?;
            ctx.path_arg("--data", "data", data)?;
            if kind == "validate" {
                let schema = ctx.required("schema", &fields.schema, "schema.toml", name_span)?;
                ctx.path_arg("--schema", "schema", schema)?;
            } else {
                let reference =
                    ctx.required("reference", &fields.reference, "reference.csv", name_span)?;
                ctx.path_arg("--reference", "reference", reference)?;
                if let Some(schema) = &fields.schema {
                    ctx.path_arg("--schema", "schema", schema)?;
                }
            }
            if let Some(format) = &fields.format {
                if !["csv", "jsonl"].contains(&format.get_ref().as_str()) {
                    return Err(ctx
                        .err(format.span(), format!("unknown data format `{}`", format.get_ref()))
                        .with_label("unknown format")
                        .with_help("formats are `csv` and `jsonl`; without `format` the file's extension decides"));
                }
                ctx.arg("--format");
                ctx.arg(format.get_ref());
            }
            if kind == "drift" {
                for key in params.keys() {
                    let Some((_, flag)) = DRIFT_PARAMS.iter().find(|(k, _)| k == key) else {
                        let known = DRIFT_PARAMS.iter().map(|(k, _)| *k);
                        let mut help = format!(
                            "drift params are {}",
                            DRIFT_PARAMS.map(|(k, _)| format!("`{k}`")).join(", ")
                        );
                        if let Some(s) = closest(key, known) {
                            help = format!("did you mean `{s}`? {help}");
                        }
                        return Err(ctx
                            .err(
                                params_span.clone().unwrap_or_else(|| name_span.clone()),
                                format!("unknown drift param `{key}` in `{label}`"),
                            )
                            .with_label("unknown param")
                            .with_help(help));
                    };
                    ctx.arg(flag);
                    ctx.arg(&format!("{{params.{key}}}"));
                }
            }
            ctx.arg("--out");
            ctx.arg("{out}");
            ctx.lowered.outs = if kind == "validate" {
                vec!["report.json".into(), "stats.json".into()]
            } else {
                vec!["drift.json".into()]
            };
        }
        "package" => {
            let files = fields.files.as_ref().filter(|f| !f.get_ref().is_empty());
            let Some(files) = files else {
                let span = fields
                    .files
                    .as_ref()
                    .map_or(name_span.clone(), Spanned::span);
                return Err(ctx
                    .err(span, format!("`package` target `{label}` has no `files`"))
                    .with_label("nothing to package")
                    .with_help("add `files = { \"model.json\" = \"{deps.train}/model.json\" }`: artifact path = source"));
            };
            ctx.arg("--name");
            ctx.arg(target_name);
            for (dest, src) in files.get_ref() {
                let clean = dest.get_ref().strip_suffix('/').unwrap_or(dest.get_ref());
                if !is_relative_path(clean) || clean.contains('=') {
                    return Err(ctx
                        .err(dest.span(), format!("invalid artifact path `{}` in `files` of `{label}`", dest.get_ref()))
                        .with_label("not a relative path")
                        .with_help("artifact paths are relative, without `.`, `..` or `=`, like `model.json` or `serving/`"));
                }
                if ["manifest.json", "model.sig"].contains(&clean) {
                    return Err(ctx
                        .err(dest.span(), format!("`{clean}` in `files` of `{label}` is written by mlbuild"))
                        .with_label("reserved name")
                        .with_help("the manifest and the signature are added to every artifact; choose another name"));
                }
                let src_path = ctx.path("files", src)?;
                ctx.arg("--file");
                ctx.lowered
                    .cmd
                    .push(format!("{}={src_path}", dest.get_ref()));
                ctx.lowered.cmd_spans.push(src.span());
            }
            ctx.arg("--out");
            ctx.arg("{out}");
            ctx.lowered.outs = vec![format!("{target_name}/"), format!("{target_name}.tar.zst")];
        }
        "python_env" => lower_python_env(&mut ctx, fields, name_span)?,
        _ => unreachable!("lower is only called for built-in kinds"),
    }
    Ok(ctx.lowered)
}

/// `python_env`: either `lock` (built by `mlbuild rule python_env` with uv, at a fixed
/// prefix) or `path` (an environment mlbuild did not build, hashed where it is).
fn lower_python_env(
    ctx: &mut Ctx<'_>,
    fields: &BuiltinFields,
    name_span: &Span,
) -> Result<(), WorkspaceError> {
    let label = ctx.label.to_owned();
    match (&fields.lock, &fields.path) {
        (Some(_), Some(path)) => {
            return Err(ctx
                .err(path.span(), format!("`python_env` target `{label}` has both `lock` and `path`"))
                .with_label("one or the other")
                .with_help("`lock` builds an environment from a lock file; `path` declares one that exists already"));
        }
        (None, None) => {
            return Err(ctx
                .err(name_span.clone(), format!("`python_env` target `{label}` has neither `lock` nor `path`"))
                .with_label("which environment?")
                .with_help("add `lock = \"requirements.lock\"` (pip `--require-hashes` format, `uv.lock` or `pylock.toml`) to build one, or `path = \"/opt/venv\"` to declare an existing one"));
        }
        (None, Some(path)) => {
            for (field, span) in [
                ("python", fields.python.as_ref().map(Spanned::span)),
                (
                    "allow_missing_hashes",
                    fields.allow_missing_hashes.as_ref().map(Spanned::span),
                ),
                (
                    "allow_source_builds",
                    fields.allow_source_builds.as_ref().map(Spanned::span),
                ),
            ] {
                if let Some(span) = span {
                    return Err(ctx
                        .err(span, format!("`{field}` of `{label}` only applies to an environment built from a `lock`"))
                        .with_label("not used with `path`")
                        .with_help("an existing environment already has its interpreter and packages"));
                }
            }
            let text = path.get_ref().trim();
            if text.is_empty() || text.contains('{') {
                return Err(ctx
                    .err(path.span(), format!("invalid environment path `{text}` in `{label}`"))
                    .with_label("not a directory path")
                    .with_help("write the environment's directory: absolute (`/opt/conda/envs/train`), under your home (`~/venvs/train`) or relative to the package (`.venv`)"));
            }
            let host = match text.strip_prefix("~/") {
                Some(rest) => std::env::var_os("HOME").map_or_else(
                    || std::path::PathBuf::from(text),
                    |home| std::path::Path::new(&home).join(rest),
                ),
                None => std::path::PathBuf::from(text),
            };
            ctx.arg("--external");
            ctx.lowered.cmd.push(host.to_string_lossy().into_owned());
            ctx.lowered.cmd_spans.push(path.span());
            ctx.arg("--out");
            ctx.arg("{out}");
            ctx.lowered.outs = vec!["python-env.json".into()];
            ctx.lowered.python_env = Some(crate::package::PythonEnv::External { path: host });
        }
        (Some(lock), None) => {
            let lock_path = ctx.path("lock", lock)?;
            let file_name = lock_path
                .rsplit('/')
                .next()
                .unwrap_or(&lock_path)
                .to_owned();
            if file_name == "uv.lock" {
                // `uv sync` reads the project's metadata beside its lock.
                let dir = lock_path.strip_suffix("uv.lock").unwrap_or("");
                let pyproject = format!("{dir}pyproject.toml");
                if !ctx.lowered.srcs.iter().any(|(s, _)| *s == pyproject) {
                    ctx.lowered.srcs.push((pyproject, lock.span()));
                }
            }
            let (python, python_span) = match &fields.python {
                None => ("python3".to_owned(), ctx.kind_span.clone()),
                Some(p) => (python_tool(ctx, &label, p)?, p.span()),
            };
            // `//pkg:name` lives at `<root>/pkg/name`, like its outputs under mlbuild-out.
            let (package, name) = label
                .trim_start_matches("//")
                .split_once(':')
                .unwrap_or(("", label.as_str()));
            let package = if package.is_empty() { "_root" } else { package };
            let prefix = format!("{}/{package}/{name}", crate::package::PYTHON_ENV_ROOT);
            ctx.arg("--lock");
            ctx.lowered.cmd.push(lock_path);
            ctx.lowered.cmd_spans.push(lock.span());
            ctx.arg("--python");
            ctx.lowered.cmd.push(python.clone());
            ctx.lowered.cmd_spans.push(python_span.clone());
            ctx.arg("--uv");
            ctx.arg(UV_IN_SANDBOX);
            ctx.arg("--uv-cache");
            ctx.arg(UV_CACHE_IN_SANDBOX);
            ctx.arg("--prefix");
            ctx.arg(&prefix);
            for (flag, value) in [
                ("--allow-missing-hashes", &fields.allow_missing_hashes),
                ("--allow-source-builds", &fields.allow_source_builds),
            ] {
                if value.as_ref().is_some_and(|v| *v.get_ref()) {
                    ctx.arg(flag);
                }
            }
            ctx.arg("--out");
            ctx.arg("{out}");
            ctx.lowered.outs = vec!["env/".into()];
            ctx.lowered.tools.push((python, python_span));
            ctx.lowered.tools.push(("uv".into(), lock.span()));
            ctx.lowered.python_env = Some(crate::package::PythonEnv::Locked { prefix });
        }
    }
    Ok(())
}

/// `python = "3.11"` is the tool `python3.11`; a bare name is that tool; an absolute path
/// must be under the system directories, which every sandbox shows.
fn python_tool(
    ctx: &Ctx<'_>,
    label: &str,
    python: &Spanned<String>,
) -> Result<String, WorkspaceError> {
    let text = python.get_ref().trim();
    let is_version = !text.is_empty()
        && text.split('.').count() <= 3
        && text
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if is_version {
        return Ok(format!("python{text}"));
    }
    if text.starts_with('/')
        && crate::config::is_system_path(std::path::Path::new(text))
        && !text.contains("/../")
    {
        return Ok(text.to_owned());
    }
    if !text.is_empty() && !text.contains('/') && !text.chars().any(char::is_whitespace) {
        return Ok(text.to_owned());
    }
    Err(ctx
        .err(python.span(), format!("invalid `python` `{text}` in `{label}`"))
        .with_label("not a version, program name or system path")
        .with_help("write a version (`3.11`: the interpreter `python3.11` on the sandbox path), a program name (`python3`), or an absolute path under the system directories (`/usr/bin/python3.11`)"))
}
