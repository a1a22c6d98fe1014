//! Metric gate expressions (`f1 >= 0.9`, `f1 >= baseline.f1 - 0.01`) and baselines.
//!
//! Gates are parsed when `BUILD.toml` is loaded, not when they are evaluated, so a typo in
//! an expression is reported at its line and column before any action runs. Evaluation
//! (reading metrics files, resolving baselines) lives in the executor. Main types:
//! [`Gate`], [`Threshold`], [`Baseline`].

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{closest, ErrorKind, WorkspaceError};
use crate::label::Label;
use crate::package::TargetSpans;
use crate::source::{sub_span, SourceText, Span};

/// A comparison operator of a gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GateOp {
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl GateOp {
    pub fn as_str(self) -> &'static str {
        match self {
            GateOp::Ge => ">=",
            GateOp::Le => "<=",
            GateOp::Gt => ">",
            GateOp::Lt => "<",
            GateOp::Eq => "==",
            GateOp::Ne => "!=",
        }
    }

    /// Whether `actual OP threshold` holds. `==`/`!=` compare exactly: metrics are
    /// usually counts or flags when compared for equality, and a tolerance would be a
    /// second, hidden threshold.
    pub fn holds(self, actual: f64, threshold: f64) -> bool {
        match self {
            GateOp::Ge => actual >= threshold,
            GateOp::Le => actual <= threshold,
            GateOp::Gt => actual > threshold,
            GateOp::Lt => actual < threshold,
            GateOp::Eq => actual == threshold,
            GateOp::Ne => actual != threshold,
        }
    }
}

impl fmt::Display for GateOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An adjustment applied to a baseline value.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Adjust {
    Add(f64),
    Sub(f64),
    Mul(f64),
}

impl Adjust {
    pub fn apply(self, v: f64) -> f64 {
        match self {
            Adjust::Add(n) => v + n,
            Adjust::Sub(n) => v - n,
            Adjust::Mul(n) => v * n,
        }
    }
}

/// The right-hand side of a gate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Threshold {
    Number(f64),
    /// `baseline.METRIC`, optionally `+ N`, `- N` or `* N`.
    Baseline {
        metric: String,
        adjust: Option<Adjust>,
    },
}

/// One parsed gate, e.g. `f1 >= baseline.f1 - 0.01`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    /// The expression as written.
    pub text: String,
    /// The metric on the left, dotted for nested JSON keys (`eval.f1`).
    pub metric: String,
    pub op: GateOp,
    pub threshold: Threshold,
    /// The metric name's span in `BUILD.toml` (the whole string when it has escapes).
    pub metric_span: Span,
    /// The baseline metric's span, for errors about the baseline.
    pub baseline_span: Option<Span>,
}

/// Where a target's baseline metrics come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// `build:NAME`: the metrics recorded by a named (or numbered) earlier build.
    Build(String),
    /// A JSON metrics file, workspace-relative POSIX path.
    File(String),
    /// `channel:NAME`: the metrics recorded with the model a release channel holds now,
    /// read from the channel's log (shared through the remote cache when there is one).
    Channel(String),
}

impl fmt::Display for Baseline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Baseline::Build(name) => write!(f, "build:{name}"),
            Baseline::File(path) => write!(f, "//{path}"),
            Baseline::Channel(name) => write!(f, "channel:{name}"),
        }
    }
}

/// A syntax error in a gate: `range` is a byte range inside the expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateSyntaxError {
    pub message: String,
    pub range: Range<usize>,
}

pub(crate) const GATE_HELP: &str = "a gate is `METRIC OP VALUE`: OP is one of `>=`, `<=`, `>`, `<`, `==`, `!=`; VALUE is a number or `baseline.METRIC`, optionally followed by `+ N`, `- N` or `* N` (e.g. `f1 >= baseline.f1 - 0.01`)";

/// Whether `c` may appear in a metric name. `-` is excluded so `baseline.f1-0.01` reads as
/// a subtraction; JSON keys with other characters cannot be gated on.
fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'.'
}

struct Cursor<'a> {
    text: &'a str,
    pos: usize,
    /// What the reference model is called: `baseline`, or `current` in channel gates.
    reference: &'a str,
}

impl<'a> Cursor<'a> {
    fn skip_ws(&mut self) {
        while self.pos < self.text.len() && self.text.as_bytes()[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    /// The range of the next character (or an empty range at the end), for errors.
    fn here(&self) -> Range<usize> {
        match self.text[self.pos..].chars().next() {
            Some(c) => self.pos..self.pos + c.len_utf8(),
            None => self.pos..self.pos,
        }
    }

    fn err(&self, message: impl Into<String>) -> GateSyntaxError {
        GateSyntaxError {
            message: message.into(),
            range: self.here(),
        }
    }

    /// A metric name: starts with a letter or `_`, no empty dotted segment.
    fn name(&mut self, what: &str) -> Result<(&'a str, Range<usize>), GateSyntaxError> {
        let start = self.pos;
        let bytes = self.text.as_bytes();
        if self.at_end() || !(bytes[start].is_ascii_alphabetic() || bytes[start] == b'_') {
            return Err(self.err(format!("expected {what}")));
        }
        while self.pos < bytes.len() && is_name_char(bytes[self.pos]) {
            self.pos += 1;
        }
        let name = &self.text[start..self.pos];
        if name.split('.').any(str::is_empty) {
            return Err(GateSyntaxError {
                message: format!("invalid metric name `{name}`"),
                range: start..self.pos,
            });
        }
        Ok((name, start..self.pos))
    }

    fn op(&mut self) -> Result<GateOp, GateSyntaxError> {
        let rest = &self.text[self.pos..];
        let (op, len) = if rest.starts_with(">=") {
            (GateOp::Ge, 2)
        } else if rest.starts_with("<=") {
            (GateOp::Le, 2)
        } else if rest.starts_with("==") {
            (GateOp::Eq, 2)
        } else if rest.starts_with("!=") {
            (GateOp::Ne, 2)
        } else if rest.starts_with('>') {
            (GateOp::Gt, 1)
        } else if rest.starts_with('<') {
            (GateOp::Lt, 1)
        } else if rest.starts_with("=>") || rest.starts_with("=<") {
            let flipped: String = rest[..2].chars().rev().collect();
            return Err(GateSyntaxError {
                message: format!("`{}` is not a comparison, write `{flipped}`", &rest[..2]),
                range: self.pos..self.pos + 2,
            });
        } else if rest.starts_with('=') {
            return Err(GateSyntaxError {
                message: "`=` is not a comparison".into(),
                range: self.pos..self.pos + 1,
            });
        } else {
            return Err(self.err("expected a comparison operator"));
        };
        self.pos += len;
        Ok(op)
    }

    /// A finite number such as `0.9`, `-3`, `1e-3`.
    fn number(&mut self) -> Result<f64, GateSyntaxError> {
        let start = self.pos;
        let bytes = self.text.as_bytes();
        if self.pos < bytes.len() && (bytes[self.pos] == b'-' || bytes[self.pos] == b'+') {
            self.pos += 1;
        }
        while self.pos < bytes.len() {
            let c = bytes[self.pos];
            let exp_sign = (c == b'-' || c == b'+')
                && self.pos > start
                && matches!(bytes[self.pos - 1], b'e' | b'E');
            // Letters are taken too, so `0.9x` is reported as one bad number.
            if c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || exp_sign {
                self.pos += 1;
            } else {
                break;
            }
        }
        let text = &self.text[start..self.pos];
        match text.parse::<f64>() {
            Ok(n) if n.is_finite() && text.bytes().any(|b| b.is_ascii_digit()) => Ok(n),
            _ if text.is_empty() => {
                Err(self.err(format!("expected a number or `{}.METRIC`", self.reference)))
            }
            _ => Err(GateSyntaxError {
                message: format!("invalid number `{text}`"),
                range: start..self.pos,
            }),
        }
    }
}

/// The parts of a parsed expression, with ranges relative to the expression text.
#[derive(Debug, PartialEq)]
pub(crate) struct ParsedGate {
    pub metric: String,
    pub metric_range: Range<usize>,
    pub op: GateOp,
    pub threshold: Threshold,
    pub baseline_range: Option<Range<usize>>,
}

/// Parses `METRIC OP (NUMBER | baseline.METRIC [(+|-|*) NUMBER])`.
#[cfg(test)]
pub(crate) fn parse_gate(text: &str) -> Result<ParsedGate, GateSyntaxError> {
    parse_gate_with(text, "baseline")
}

/// [`parse_gate`] with another word for the reference model: release channels' gates
/// compare against `current.METRIC`, the model in the channel now.
pub(crate) fn parse_gate_with(text: &str, reference: &str) -> Result<ParsedGate, GateSyntaxError> {
    let mut c = Cursor {
        text,
        pos: 0,
        reference,
    };
    let dotted = format!("{reference}.");
    c.skip_ws();
    if c.at_end() {
        return Err(GateSyntaxError {
            message: "empty gate".into(),
            range: 0..text.len(),
        });
    }
    let (metric, metric_range) = c.name("a metric name")?;
    if metric == reference || metric.starts_with(&dotted) {
        return Err(GateSyntaxError {
            message: format!(
                "the left side of a gate is a metric of this target, not the {reference}"
            ),
            range: metric_range,
        });
    }
    c.skip_ws();
    let op = c.op()?;
    c.skip_ws();
    let mut baseline_range = None;
    let threshold = if text[c.pos..].starts_with(reference) {
        let (name, range) = c.name(&format!("`{reference}.METRIC`"))?;
        let Some(base_metric) = name.strip_prefix(&dotted) else {
            return Err(GateSyntaxError {
                message: format!("expected `{reference}.METRIC`, found `{name}`"),
                range,
            });
        };
        baseline_range = Some(range);
        c.skip_ws();
        let adjust = if c.at_end() {
            None
        } else {
            let sign = c.text.as_bytes()[c.pos];
            if !matches!(sign, b'+' | b'-' | b'*') {
                return Err(c.err(format!(
                    "expected `+`, `-` or `*` after the `{reference}` metric"
                )));
            }
            c.pos += 1;
            c.skip_ws();
            let n = c.number()?;
            Some(match sign {
                b'+' => Adjust::Add(n),
                b'-' => Adjust::Sub(n),
                _ => Adjust::Mul(n),
            })
        };
        Threshold::Baseline {
            metric: base_metric.to_owned(),
            adjust,
        }
    } else {
        Threshold::Number(c.number()?)
    };
    c.skip_ws();
    if !c.at_end() {
        return Err(GateSyntaxError {
            message: format!("unexpected `{}` after the gate", &text[c.pos..].trim_end()),
            range: c.pos..text.trim_end().len(),
        });
    }
    Ok(ParsedGate {
        metric: metric.to_owned(),
        metric_range,
        op,
        threshold,
        baseline_range,
    })
}

fn invalid(source: &Arc<SourceText>, span: Span, message: String) -> WorkspaceError {
    WorkspaceError::new(ErrorKind::Invalid, message).at(source, span)
}

/// Parses the gate written in the string token at `token`, pointing a syntax error at
/// the offending characters inside it.
pub(crate) fn parse_gate_at(
    source: &Arc<SourceText>,
    text: &str,
    token: Span,
) -> Result<Gate, WorkspaceError> {
    parse_gate_at_with(source, text, token, "baseline")
}

/// [`parse_gate_at`] for gates whose reference model is called `reference`.
pub(crate) fn parse_gate_at_with(
    source: &Arc<SourceText>,
    text: &str,
    token: Span,
    reference: &str,
) -> Result<Gate, WorkspaceError> {
    let to_file = |range: Range<usize>| sub_span(&source.text, &token, text, range);
    match parse_gate_with(text, reference) {
        Ok(p) => Ok(Gate {
            text: text.to_owned(),
            metric: p.metric,
            op: p.op,
            threshold: p.threshold,
            metric_span: to_file(p.metric_range),
            baseline_span: p.baseline_range.map(to_file),
        }),
        Err(e) => {
            // An empty range (the end of the text) has nothing to put a caret under:
            // widen it to the closing quote, or the last character.
            let range = if e.range.is_empty() && e.range.start > 0 {
                e.range.start - 1..e.range.start
            } else {
                e.range
            };
            Err(invalid(
                source,
                to_file(range),
                format!("invalid gate `{text}`: {}", e.message),
            )
            .with_label("here")
            .with_help(GATE_HELP.replace("baseline", reference)))
        }
    }
}

/// `build:NAME` or a metrics file: package-relative, or workspace-relative with `//`.
pub(crate) fn parse_baseline(
    source: &Arc<SourceText>,
    package: &str,
    text: &str,
    span: Span,
) -> Result<Baseline, WorkspaceError> {
    const HELP: &str = "write `baseline = \"build:NAME\"` (a build made with `mlbuild build --name NAME`), `baseline = \"channel:NAME\"` (the model a release channel holds) or a metrics file path: relative to the package, or to the workspace with `//`";
    if let Some(name) = text.strip_prefix("channel:") {
        if !crate::channel::is_valid_channel_name(name) {
            return Err(invalid(source, span, format!("invalid baseline `{text}`"))
                .with_label("not a channel name")
                .with_help(crate::channel::CHANNEL_NAME_HELP));
        }
        return Ok(Baseline::Channel(name.to_owned()));
    }
    if let Some(name) = text.strip_prefix("build:") {
        if name.trim().is_empty() || name.trim() != name {
            return Err(invalid(source, span, format!("invalid baseline `{text}`"))
                .with_label("empty or padded build name")
                .with_help(HELP));
        }
        return Ok(Baseline::Build(name.to_owned()));
    }
    let (rel, prefix) = match text.strip_prefix("//") {
        Some(rest) => (rest, String::new()),
        None if package.is_empty() => (text, String::new()),
        None => (text, format!("{package}/")),
    };
    let bad = rel.is_empty()
        || rel.starts_with('/')
        || rel.ends_with('/')
        || rel.contains('\\')
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(invalid(source, span, format!("invalid baseline `{text}`"))
            .with_label("not a build or a file path inside the workspace")
            .with_help(HELP));
    }
    Ok(Baseline::File(format!("{prefix}{rel}")))
}

/// Each metrics file must be one of the target's outputs: a declared file, or a file
/// under a declared directory.
pub(crate) fn check_metrics(
    source: &Arc<SourceText>,
    label: &Label,
    kind: &str,
    metrics: &[String],
    spans: &[Span],
    outs: &[String],
) -> Result<(), WorkspaceError> {
    for (metric, span) in metrics.iter().zip(spans) {
        if kind == "filegroup" {
            return Err(invalid(
                source,
                span.clone(),
                format!("filegroup `{label}` cannot have `metrics`"),
            )
            .with_label("not allowed for filegroup")
            .with_help("declare metrics on the target whose command writes them"));
        }
        let declared = outs.iter().any(|o| match o.strip_suffix('/') {
            Some(dir) => metric
                .strip_prefix(dir)
                .is_some_and(|r| r.len() > 1 && r.starts_with('/')),
            None => o == metric,
        });
        if !declared || metric.ends_with('/') {
            let mut help =
                "list the metrics file in `outs` too; metrics are read from the target's outputs"
                    .to_owned();
            if let Some(s) = closest(metric, outs.iter().map(String::as_str)) {
                help = format!("did you mean `{s}`? {help}");
            }
            return Err(invalid(
                source,
                span.clone(),
                format!("metrics file `{metric}` of `{label}` is not one of its outputs"),
            )
            .with_label("not in `outs`")
            .with_help(help));
        }
    }
    Ok(())
}

/// Gates need metrics to check, and a baseline when they refer to one.
pub(crate) fn check_gates(
    source: &Arc<SourceText>,
    label: &Label,
    gates: &[Gate],
    spans: &TargetSpans,
    has_baseline: bool,
) -> Result<(), WorkspaceError> {
    if let (Some(span), true) = (spans.gates.first(), spans.metrics.is_empty()) {
        return Err(invalid(
            source,
            span.clone(),
            format!("`{label}` has gates but no `metrics`"),
        )
        .with_label("nothing to check")
        .with_help(
            "add `metrics = [\"metrics.json\"]` naming the JSON metrics files among its `outs`",
        ));
    }
    if !has_baseline {
        if let Some(span) = gates.iter().find_map(|g| g.baseline_span.clone()) {
            return Err(invalid(
                source,
                span,
                format!("a gate of `{label}` refers to the baseline, but `{label}` has no `baseline`"),
            )
            .with_label("no baseline")
            .with_help("add `baseline = \"build:NAME\"` or `baseline = \"path/to/metrics.json\"` to the target"));
        }
    }
    if let (Some(span), false) = (
        spans.baseline.clone(),
        gates.iter().any(|g| g.baseline_span.is_some()),
    ) {
        // A baseline nothing uses is almost always a gate that forgot `baseline.`.
        return Err(invalid(
            source,
            span,
            format!("`{label}` has a `baseline` but no gate uses it"),
        )
        .with_label("unused")
        .with_help("compare against it in a gate, e.g. `f1 >= baseline.f1 - 0.01`, or remove it"));
    }
    Ok(())
}

/// The closest of `candidates` to `wanted`, for did-you-mean help (shared with the
/// executor, which checks gate metrics against the metrics a build produced).
pub fn suggest<'a, I>(wanted: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    closest(wanted, candidates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> (String, GateOp, Threshold) {
        let p = parse_gate(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        (p.metric, p.op, p.threshold)
    }

    #[test]
    fn parses_valid_gates() {
        let n = Threshold::Number;
        let base = |m: &str, adjust| Threshold::Baseline {
            metric: m.into(),
            adjust,
        };
        let cases = [
            ("f1 >= 0.9", ("f1", GateOp::Ge, n(0.9))),
            ("latency_ms<=50", ("latency_ms", GateOp::Le, n(50.0))),
            ("  eval.auc > 1e-3 ", ("eval.auc", GateOp::Gt, n(1e-3))),
            ("loss < -0.5", ("loss", GateOp::Lt, n(-0.5))),
            ("rows == 1000", ("rows", GateOp::Eq, n(1000.0))),
            ("nan_count != 0", ("nan_count", GateOp::Ne, n(0.0))),
            ("f1 >= baseline.f1", ("f1", GateOp::Ge, base("f1", None))),
            (
                "f1 >= baseline.f1 - 0.01",
                ("f1", GateOp::Ge, base("f1", Some(Adjust::Sub(0.01)))),
            ),
            (
                "f1>=baseline.f1-0.01",
                ("f1", GateOp::Ge, base("f1", Some(Adjust::Sub(0.01)))),
            ),
            (
                "p99 <= baseline.p99 * 1.1",
                ("p99", GateOp::Le, base("p99", Some(Adjust::Mul(1.1)))),
            ),
            (
                "a.b >= baseline.c.d + 2",
                ("a.b", GateOp::Ge, base("c.d", Some(Adjust::Add(2.0)))),
            ),
        ];
        for (text, (metric, op, threshold)) in cases {
            assert_eq!(ok(text), (metric.to_string(), op, threshold), "{text}");
        }
    }

    #[test]
    fn rejects_malformed_gates_with_a_position() {
        let cases = [
            ("", "empty gate", 0..0),
            ("f1", "expected a comparison operator", 2..2),
            ("f1 => 0.9", "write `>=`", 3..5),
            ("f1 = 0.9", "`=` is not a comparison", 3..4),
            ("f1 >= ", "expected a number", 6..6),
            ("f1 >= 0.9x", "invalid number `0.9x`", 6..10),
            ("f1 >= 0.9 extra", "unexpected `extra`", 10..15),
            ("f1 >= baseline", "expected `baseline.METRIC`", 6..14),
            ("f1 >= baseline.f1 / 2", "expected `+`, `-` or `*`", 18..19),
            ("f1 >= baseline.f1 -", "expected a number", 19..19),
            ("baseline.f1 >= 0.9", "not the baseline", 0..11),
            ("1f >= 2", "expected a metric name", 0..1),
            ("a..b >= 2", "invalid metric name `a..b`", 0..4),
            ("f1 >= 1e999", "invalid number", 6..11),
        ];
        for (text, message, range) in cases {
            let e = parse_gate(text).expect_err(text);
            assert!(
                e.message.contains(message),
                "{text}: {} !~ {message}",
                e.message
            );
            assert_eq!(e.range, range, "{text}");
        }
    }

    fn load(build: &str) -> Result<crate::Package, WorkspaceError> {
        let source = Arc::new(SourceText {
            name: "m/BUILD.toml".into(),
            text: build.into(),
        });
        crate::package::parse_package(
            "m",
            "/ws/m/BUILD.toml".into(),
            source,
            &crate::WorkspaceConfig::defaults(),
        )
    }

    /// The error's message and the text its span covers.
    fn load_err(build: &str) -> (String, String) {
        let e = load(build).expect_err(build);
        let span = e.span().expect("located");
        let at = build[span.offset()..span.offset() + span.len()].to_string();
        (e.message().to_string(), at)
    }

    const HEAD: &str = "[target.t]\ncmd = [\"true\"]\nouts = [\"metrics.json\", \"eval/\"]\n";

    #[test]
    fn loads_metrics_gates_and_baselines() {
        let p = load(&format!(
            "{HEAD}metrics = [\"metrics.json\", \"eval/m.json\"]\ngates = [\"f1 >= baseline.f1 - 0.01\", \"n == 3\"]\nbaseline = \"base.json\"\n"
        ))
        .unwrap();
        let t = &p.targets["t"];
        assert_eq!(t.metrics, ["metrics.json", "eval/m.json"]);
        assert_eq!(t.gates.len(), 2);
        assert_eq!(t.gates[0].metric, "f1");
        assert_eq!(t.baseline, Some(Baseline::File("m/base.json".into())));
        let text = &t.source.text;
        assert_eq!(&text[t.gates[1].metric_span.clone()], "n");

        for (baseline, parsed) in [
            ("build:release", Baseline::Build("release".into())),
            (
                "//baselines/m.json",
                Baseline::File("baselines/m.json".into()),
            ),
        ] {
            let p = load(&format!(
                "{HEAD}metrics = [\"metrics.json\"]\ngates = [\"f1 >= baseline.f1\"]\nbaseline = \"{baseline}\"\n"
            ))
            .unwrap();
            assert_eq!(p.targets["t"].baseline, Some(parsed));
        }
    }

    #[test]
    fn load_errors_point_into_the_file() {
        let cases = [
            (
                "metrics = [\"metric.json\"]\n",
                "metrics file `metric.json` of `//m:t` is not one of its outputs",
                "\"metric.json\"",
            ),
            (
                "metrics = [\"eval/\"]\n",
                "is not one of its outputs",
                "\"eval/\"",
            ),
            (
                "metrics = [\"metrics.json\"]\ngates = [\"f1 >= 0.9\", \"f1 => 0.9\"]\n",
                "invalid gate `f1 => 0.9`",
                "=>",
            ),
            (
                "metrics = [\"metrics.json\"]\ngates = [\"f1 >= \"]\n",
                "expected a number",
                " ",
            ),
            (
                "gates = [\"f1 >= 0.9\"]\n",
                "has gates but no `metrics`",
                "\"f1 >= 0.9\"",
            ),
            (
                "metrics = [\"metrics.json\"]\ngates = [\"f1 >= baseline.f1\"]\n",
                "has no `baseline`",
                "baseline.f1",
            ),
            (
                "metrics = [\"metrics.json\"]\ngates = [\"f1 >= 1\"]\nbaseline = \"build:x\"\n",
                "no gate uses it",
                "\"build:x\"",
            ),
            (
                "metrics = [\"metrics.json\"]\ngates = [\"f1 >= baseline.f1\"]\nbaseline = \"../x.json\"\n",
                "invalid baseline `../x.json`",
                "\"../x.json\"",
            ),
            (
                "metrics = [\"metrics.json\"]\ngates = [\"f1 >= baseline.f1\"]\nbaseline = \"build:\"\n",
                "invalid baseline `build:`",
                "\"build:\"",
            ),
        ];
        for (extra, message, at) in cases {
            let (m, a) = load_err(&format!("{HEAD}{extra}"));
            assert!(m.contains(message), "{extra}: {m}");
            assert_eq!(a, at, "{extra}: {m}");
        }
        let (m, _) =
            load_err("[target.f]\nkind = \"filegroup\"\nsrcs = [\"a\"]\nmetrics = [\"a\"]\n");
        assert!(m.contains("filegroup `//m:f` cannot have `metrics`"), "{m}");
    }

    #[test]
    fn operators_hold() {
        assert!(GateOp::Ge.holds(0.9, 0.9));
        assert!(!GateOp::Gt.holds(0.9, 0.9));
        assert!(GateOp::Le.holds(1.0, 2.0));
        assert!(GateOp::Lt.holds(1.0, 2.0));
        assert!(GateOp::Eq.holds(3.0, 3.0));
        assert!(GateOp::Ne.holds(3.0, 4.0));
        assert!(!GateOp::Ge.holds(f64::NAN, 0.0));
        assert_eq!(Adjust::Sub(0.01).apply(0.9), 0.9 - 0.01);
        assert_eq!(Adjust::Mul(2.0).apply(3.0), 6.0);
    }
}
