//! The text of a parsed TOML file, [`SourceText`], shared by every target it defines.
//!
//! Errors found long after parsing (missing deps, bad placeholders, missing srcs) must
//! still point into the file, so each target holds an `Arc` to it instead of a copy.

use std::ops::Range;

use miette::{MietteError, SourceCode, SourceSpan, SpanContents};

/// A file's workspace-relative name (e.g. `models/BUILD.toml`) and its full text.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SourceText {
    /// Workspace-relative POSIX path, used as the file name in diagnostics.
    pub name: String,
    /// The full file contents.
    pub text: String,
}

impl SourceCode for SourceText {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        self.text
            .read_span(span, context_lines_before, context_lines_after)
    }
}

/// A byte range into a [`SourceText`].
pub type Span = Range<usize>;

/// Narrow `token` (the span of a TOML string token, quotes included) to the bytes of
/// `value[inner]` when the token is a plain string whose text equals its value; otherwise
/// (escapes, multi-line strings) keep the whole token, which is still the right line.
pub(crate) fn sub_span(source: &str, token: &Span, value: &str, inner: Range<usize>) -> Span {
    let Some(raw) = source.get(token.clone()) else {
        return token.clone();
    };
    let quoted = (raw.starts_with('"') || raw.starts_with('\''))
        && raw.len() >= 2
        && !raw.starts_with("\"\"\"")
        && !raw.starts_with("'''");
    if quoted && &raw[1..raw.len() - 1] == value && inner.end <= value.len() {
        (token.start + 1 + inner.start)..(token.start + 1 + inner.end)
    } else {
        token.clone()
    }
}
