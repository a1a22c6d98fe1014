//! The one error type of this crate, [`WorkspaceError`], and its plain-text renderer.
//!
//! Users meet these errors while editing TOML, so every error tied to a file carries the
//! file's text and a span, and renders with a marker under the offending text.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode, SourceSpan};

use crate::source::SourceText;

/// What went wrong, for callers that want to branch on it (the message says the rest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Reading a file or walking a directory failed.
    Io,
    /// No `MLBUILD.toml` in the start directory or any ancestor.
    NoWorkspace,
    /// The TOML does not parse, or does not fit the schema (unknown field, wrong type).
    Toml,
    /// A value parses but is not allowed (bad kind, env name, timeout, resources, ...).
    Invalid,
    /// A label or pattern is malformed.
    Label,
    /// A label or pattern names something that does not exist.
    NotFound,
    /// A dep is missing, duplicated by name, or is the target itself.
    Dep,
    /// A `{...}` placeholder in `cmd` is invalid.
    Placeholder,
    /// A `srcs` entry is missing, hostile or matches nothing.
    Src,
    /// An `outs` entry is malformed.
    Out,
}

/// An error from parsing or querying a workspace.
///
/// Context (file, span, help) wraps a [`ErrorKind`]; the message is the `Display` text.
/// Boxed so `Result<_, WorkspaceError>` stays one pointer wide on the happy path.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct WorkspaceError(Box<Inner>);

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Inner {
    kind: ErrorKind,
    message: String,
    help: Option<String>,
    label: Option<String>,
    source_code: Option<NamedSource<Arc<SourceText>>>,
    span: Option<SourceSpan>,
    /// A second place in the same file that says where the error is (the
    /// `[target.NAME]` header of the target it is in), with its label.
    context: Option<(SourceSpan, String)>,
    #[source]
    cause: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl WorkspaceError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        WorkspaceError(Box::new(Inner {
            kind,
            message: message.into(),
            help: None,
            label: None,
            source_code: None,
            span: None,
            context: None,
            cause: None,
        }))
    }

    pub(crate) fn io(action: &str, path: &Path, err: std::io::Error) -> Self {
        let mut e = WorkspaceError::new(
            ErrorKind::Io,
            format!("failed to {action} `{}`: {err}", path.display()),
        );
        e.0.cause = Some(Box::new(err));
        e
    }

    pub(crate) fn with_help(mut self, help: impl Into<String>) -> Self {
        self.0.help = Some(help.into());
        self
    }

    /// Attach a help line only if `help` is `Some` (e.g. a did-you-mean that may not exist).
    pub(crate) fn with_help_opt(mut self, help: Option<String>) -> Self {
        if help.is_some() {
            self.0.help = help;
        }
        self
    }

    pub(crate) fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.0.kind = kind;
        self
    }

    pub(crate) fn with_label(mut self, label: impl Into<String>) -> Self {
        self.0.label = Some(label.into());
        self
    }

    /// Point the error at `span` (byte range) inside `source`.
    pub(crate) fn at(mut self, source: &Arc<SourceText>, span: std::ops::Range<usize>) -> Self {
        // Clamp so that a stale or synthetic span can never make rendering fail.
        let len = source.text.len();
        let start = span.start.min(len);
        let end = span.end.clamp(start, len);
        self.0.source_code = Some(NamedSource::new(&source.name, Arc::clone(source)));
        self.0.span = Some(SourceSpan::from(start..end));
        self
    }

    /// Also mark `span` of the same file with `label` (e.g. the target's header, so the
    /// snippet shows which target the offending line belongs to).
    pub(crate) fn with_context(
        mut self,
        span: std::ops::Range<usize>,
        label: impl Into<String>,
    ) -> Self {
        if let Some(source) = &self.0.source_code {
            let len = source.inner().text.len();
            let start = span.start.min(len);
            let end = span.end.clamp(start, len);
            self.0.context = Some((SourceSpan::from(start..end), label.into()));
        }
        self
    }

    /// The category of the error.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The one-line message (same as `Display`).
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The `help:` text, if a fix is known.
    pub fn help_text(&self) -> Option<&str> {
        self.0.help.as_deref()
    }

    /// The workspace-relative name of the file the error points into, if any.
    pub fn file_name(&self) -> Option<&str> {
        self.0.source_code.as_ref().map(|s| s.name())
    }

    /// The byte span inside that file, if any.
    pub fn span(&self) -> Option<SourceSpan> {
        self.0.span
    }
}

impl Diagnostic for WorkspaceError {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.0
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display + 'a>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.0.source_code.as_ref().map(|s| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.0.span?;
        self.0.source_code.as_ref()?;
        // Primary: the `file:line:col` heading names the offending text, not the context.
        let main = LabeledSpan::new_primary_with_span(
            Some(self.0.label.clone().unwrap_or_else(|| "here".to_owned())),
            span,
        );
        let context = self
            .0
            .context
            .as_ref()
            .filter(|(c, _)| c.offset() != span.offset())
            .map(|(c, label)| LabeledSpan::new_with_span(Some(label.clone()), *c));
        Some(Box::new(context.into_iter().chain(std::iter::once(main))))
    }
}

/// Render a diagnostic as plain text (no colour, unicode box drawing), with `file:line:col`
/// and a marker under the offending span; for tests, logs and non-terminal output, so
/// lines are not wrapped (a label split across lines cannot be grepped).
pub fn render_plain(err: &dyn Diagnostic) -> String {
    let handler =
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
            .with_wrap_lines(false)
            .with_links(false);
    let mut out = String::new();
    if handler.render_report(&mut out, err).is_err() {
        // Rendering only fails on fmt errors; fall back to the message rather than panic.
        out = err.to_string();
    }
    out
}

/// The closest candidate to `wanted` (Jaro-Winkler), if it is close enough to suggest.
pub(crate) fn closest<'a, I>(wanted: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut best: Option<(f64, &'a str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(wanted, c);
        // Jaro-Winkler is harsh on very short names (`lf` vs `lr`, `rwa` vs `raw`), so one
        // edit or one swap of adjacent letters also counts.
        let near = score >= 0.7 || (wanted.len() >= 2 && strsim::osa_distance(wanted, c) <= 1);
        if near && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}
