//! The `{...}` placeholder language of `cmd` arguments, parsed into [`CmdPart`]s.
//!
//! The loader validates placeholders and the executor substitutes them; sharing one parser
//! means both agree on exactly what `{deps.x}` or `{{` means.

use std::ops::Range;

/// One piece of a `cmd` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CmdPart<'a> {
    /// Text copied as is (`{{` and `}}` already unescaped).
    Literal(String),
    /// `{out}`: the action's output directory.
    Out,
    /// `{params_file}`: a JSON file with all params.
    ParamsFile,
    /// `{deps.NAME}`: the output directory of the dep whose target name is `NAME`.
    Dep(&'a str),
    /// `{params.a.b}`: a param value, by path.
    Param(Vec<&'a str>),
}

/// Why a `cmd` argument does not parse; `range` is the byte range inside the argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlaceholderError {
    pub message: String,
    pub help: Option<String>,
    pub range: Range<usize>,
}

/// Split a `cmd` argument into literal text and placeholders.
///
/// Only the syntax is checked here; whether a dep or param exists is up to the caller.
pub fn parse_cmd_arg(arg: &str) -> Result<Vec<CmdPart<'_>>, PlaceholderError> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let bytes = arg.as_bytes();
    let mut i = 0;
    let mut lit_start = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => {
                literal.push_str(&arg[lit_start..i]);
                literal.push('{');
                i += 2;
                lit_start = i;
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => {
                literal.push_str(&arg[lit_start..i]);
                literal.push('}');
                i += 2;
                lit_start = i;
            }
            b'}' => {
                return Err(PlaceholderError {
                    message: "unmatched `}` in `cmd`".to_owned(),
                    help: Some("write `}}` for a literal `}`".to_owned()),
                    range: i..i + 1,
                });
            }
            b'{' => {
                literal.push_str(&arg[lit_start..i]);
                let Some(len) = arg[i + 1..]
                    .find(['}', '{'])
                    .filter(|&n| bytes[i + 1 + n] == b'}')
                else {
                    return Err(PlaceholderError {
                        message: "unclosed `{` in `cmd`".to_owned(),
                        help: Some(
                            "close the placeholder with `}`, or write `{{` for a literal `{`"
                                .to_owned(),
                        ),
                        range: i..i + 1,
                    });
                };
                let inner = &arg[i + 1..i + 1 + len];
                let range = i..i + len + 2;
                if !literal.is_empty() {
                    parts.push(CmdPart::Literal(std::mem::take(&mut literal)));
                }
                parts.push(parse_placeholder(inner, range)?);
                i += len + 2;
                lit_start = i;
            }
            _ => i += 1,
        }
    }
    literal.push_str(&arg[lit_start..]);
    if !literal.is_empty() {
        parts.push(CmdPart::Literal(literal));
    }
    Ok(parts)
}

const KNOWN: &str = "placeholders are `{out}`, `{params_file}`, `{deps.NAME}` and `{params.PATH}`; write `{{` and `}}` for literal braces";

fn parse_placeholder(inner: &str, range: Range<usize>) -> Result<CmdPart<'_>, PlaceholderError> {
    let err = |message: String| PlaceholderError {
        message,
        help: Some(KNOWN.to_owned()),
        range: range.clone(),
    };
    match inner {
        "out" => return Ok(CmdPart::Out),
        "params_file" => return Ok(CmdPart::ParamsFile),
        _ => {}
    }
    if let Some(name) = inner.strip_prefix("deps.") {
        // A sweep variant is a dep too, named canonically: `{deps.fm[lr=0.05]}`.
        let variant = crate::sweep::canonical_variant_name(name).is_ok_and(|c| c == name);
        if name.is_empty() || !(crate::label::is_valid_target_name(name) || variant) {
            return Err(err(format!(
                "invalid dep name in placeholder `{{{inner}}}`"
            )));
        }
        return Ok(CmdPart::Dep(name));
    }
    if let Some(path) = inner.strip_prefix("params.") {
        let keys: Vec<&str> = path.split('.').collect();
        if keys.iter().any(|k| k.is_empty()) {
            return Err(err(format!(
                "invalid param path in placeholder `{{{inner}}}`"
            )));
        }
        return Ok(CmdPart::Param(keys));
    }
    let mut e = err(format!("unknown placeholder `{{{inner}}}`"));
    if inner == "deps" || inner == "params" {
        e.help = Some(format!("write `{{{inner}.NAME}}`"));
    }
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use CmdPart::*;

    #[test]
    fn parses() {
        let cases: Vec<(&str, Vec<CmdPart<'_>>)> = vec![
            ("plain", vec![Literal("plain".into())]),
            ("", vec![]),
            ("{out}", vec![Out]),
            ("{out}/raw.csv", vec![Out, Literal("/raw.csv".into())]),
            (
                "--p={params_file}",
                vec![Literal("--p=".into()), ParamsFile],
            ),
            (
                "{deps.train_set}/x",
                vec![Dep("train_set"), Literal("/x".into())],
            ),
            ("{params.model.lr}", vec![Param(vec!["model", "lr"])]),
            ("{{x}}", vec![Literal("{x}".into())]),
            (
                "a{{{out}}}b",
                vec![Literal("a{".into()), Out, Literal("}b".into())],
            ),
            (
                "é{out}ü",
                vec![Literal("é".into()), Out, Literal("ü".into())],
            ),
        ];
        for (arg, want) in cases {
            assert_eq!(parse_cmd_arg(arg).unwrap(), want, "{arg}");
        }
    }

    #[test]
    fn rejects() {
        let cases = [
            ("{outs}", 0..6),
            ("x{", 1..2),
            ("x}", 1..2),
            ("{out", 0..1),
            ("{a{out}", 0..1),
            ("{}", 0..2),
            ("{deps.}", 0..7),
            ("{params.}", 0..9),
            ("{params.a..b}", 0..13),
            ("ab{deps}", 2..8),
            ("{deps.a/b}", 0..10),
        ];
        for (arg, range) in cases {
            let e = parse_cmd_arg(arg).expect_err(arg);
            assert_eq!(e.range, range, "{arg}");
        }
    }
}
