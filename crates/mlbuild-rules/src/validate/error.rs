//! [`DataError`]: the error of the data rules (`validate`, `drift`) for bad input.
//!
//! Bad input is a schema that does not parse, a data file that cannot be read or is not
//! CSV / JSON Lines, or a bad command line. A failed check is not an error: it is a
//! report. Schema errors carry the schema's text and a span so they render with
//! `file:line:column` and a caret under the offending TOML.

use std::fmt;
use std::path::Path;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode, SourceSpan};

/// What went wrong, for callers that branch on it (the message says the rest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataErrorKind {
    /// Reading an input or writing an output failed.
    Io,
    /// The schema TOML does not parse or breaks a schema rule.
    Schema,
    /// The data file is malformed (bad CSV, a JSON line that is not an object, ...).
    Data,
    /// The command line is wrong.
    Usage,
}

/// An error in a data rule's input; renders as a miette diagnostic. Boxed so results stay
/// one pointer wide on the happy path.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct DataError(Box<Inner>);

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Inner {
    kind: DataErrorKind,
    message: String,
    help: Option<String>,
    label: Option<String>,
    source_code: Option<NamedSource<String>>,
    span: Option<SourceSpan>,
}

impl DataError {
    pub(crate) fn new(kind: DataErrorKind, message: impl Into<String>) -> Self {
        DataError(Box::new(Inner {
            kind,
            message: message.into(),
            help: None,
            label: None,
            source_code: None,
            span: None,
        }))
    }

    pub(crate) fn io(action: &str, path: &Path, err: &std::io::Error) -> Self {
        DataError::new(
            DataErrorKind::Io,
            format!("cannot {action} `{}`: {err}", path.display()),
        )
    }

    pub(crate) fn data(path: &Path, message: impl fmt::Display) -> Self {
        DataError::new(
            DataErrorKind::Data,
            format!("`{}`: {message}", path.display()),
        )
    }

    pub(crate) fn with_help(mut self, help: impl Into<String>) -> Self {
        self.0.help = Some(help.into());
        self
    }

    pub(crate) fn with_label(mut self, label: impl Into<String>) -> Self {
        self.0.label = Some(label.into());
        self
    }

    /// Point the error at byte range `span` of the file `name` whose text is `text`.
    pub(crate) fn at(mut self, name: &str, text: &str, span: std::ops::Range<usize>) -> Self {
        // Clamp so that a synthetic span can never make rendering fail.
        let start = span.start.min(text.len());
        let end = span.end.clamp(start, text.len());
        self.0.source_code = Some(NamedSource::new(name, text.to_owned()));
        self.0.span = Some(SourceSpan::from(start..end));
        self
    }

    /// The category of the error.
    pub fn kind(&self) -> DataErrorKind {
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

    /// The 1-based line and column the error points at, if it points into a file.
    pub fn line_col(&self) -> Option<(usize, usize)> {
        let span = self.0.span?;
        let text = self.0.source_code.as_ref()?.inner();
        let before = &text[..span.offset().min(text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        Some((line, col))
    }

    /// Render as plain text (no colour) with `file:line:col` and a caret, for logs and tests.
    pub fn render_plain(&self) -> String {
        let handler =
            miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
                .with_width(120)
                .with_links(false);
        let mut out = String::new();
        if handler.render_report(&mut out, self).is_err() {
            out = self.to_string();
        }
        out
    }
}

impl Diagnostic for DataError {
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
        Some(Box::new(std::iter::once(LabeledSpan::new_with_span(
            Some(self.0.label.clone().unwrap_or_else(|| "here".to_owned())),
            span,
        ))))
    }
}
