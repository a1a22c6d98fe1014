//! Expansion of `cmd` placeholders into a concrete argv.
//!
//! Main function: [`expand_argv`]. It runs twice per action with different contexts: once
//! for the key (params expanded, paths kept symbolic so the sandbox location never enters
//! the key) and once for execution (paths made absolute inside the exec root).

use std::collections::BTreeMap;

use mlbuild_workspace::{parse_cmd_arg, CmdPart};

/// What placeholders expand to.
pub struct ArgvContext<'a> {
    /// `{out}`; `None` keeps the placeholder verbatim.
    pub out: Option<&'a str>,
    /// `{params_file}`; `None` keeps it verbatim.
    pub params_file: Option<&'a str>,
    /// `{deps.NAME}` -> path; `None` keeps them verbatim.
    pub deps: Option<&'a BTreeMap<String, String>>,
    /// Always expanded.
    pub params: &'a serde_json::Value,
}

/// A placeholder that cannot be expanded. The workspace loader validates placeholders
/// with source spans first (with the same parser), so users normally see that error instead.
#[derive(Debug, thiserror::Error, miette::Diagnostic, PartialEq, Eq)]
pub enum PlaceholderError {
    #[error("unknown placeholder `{{{0}}}` in `cmd`")]
    Unknown(String),
    #[error("invalid `cmd` argument `{arg}`: {message}")]
    Invalid { arg: String, message: String },
}

/// Expands every argument of `cmd`.
pub fn expand_argv(cmd: &[String], ctx: &ArgvContext<'_>) -> Result<Vec<String>, PlaceholderError> {
    cmd.iter().map(|arg| expand_one(arg, ctx)).collect()
}

fn expand_one(arg: &str, ctx: &ArgvContext<'_>) -> Result<String, PlaceholderError> {
    // Most arguments hold no braces at all: they are their own expansion (what the parser
    // below would also say), and every build expands every target's `cmd`.
    if !arg.contains(['{', '}']) {
        return Ok(arg.to_owned());
    }
    // The workspace loader validates `cmd` with this same parser, so expansion can never
    // disagree with what was checked.
    let parts = parse_cmd_arg(arg).map_err(|e| PlaceholderError::Invalid {
        arg: arg.to_string(),
        message: e.message,
    })?;
    let mut out = String::with_capacity(arg.len());
    for part in parts {
        match part {
            CmdPart::Literal(text) => out.push_str(&text),
            CmdPart::Out => out.push_str(ctx.out.unwrap_or("{out}")),
            CmdPart::ParamsFile => out.push_str(ctx.params_file.unwrap_or("{params_file}")),
            CmdPart::Dep(name) => match ctx.deps {
                None => {
                    out.push_str("{deps.");
                    out.push_str(name);
                    out.push('}');
                }
                Some(deps) => out.push_str(
                    deps.get(name)
                        .ok_or_else(|| PlaceholderError::Unknown(format!("deps.{name}")))?,
                ),
            },
            CmdPart::Param(path) => {
                let mut value = ctx.params;
                for part in &path {
                    value = value.get(part).ok_or_else(|| {
                        PlaceholderError::Unknown(format!("params.{}", path.join(".")))
                    })?;
                }
                match value {
                    serde_json::Value::String(s) => out.push_str(s),
                    // A `Value`'s objects are sorted maps: its plain JSON is canonical.
                    other => out.push_str(
                        &serde_json::to_string(other).expect("JSON values always serialize"),
                    ),
                }
            }
        }
    }
    Ok(out)
}

/// Canonical JSON value of TOML params. TOML datetimes become their RFC 3339 text.
pub fn params_to_json(params: &BTreeMap<String, toml::Value>) -> serde_json::Value {
    serde_json::to_value(params).expect("toml values are representable as json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(
        params: &'a serde_json::Value,
        deps: Option<&'a BTreeMap<String, String>>,
    ) -> ArgvContext<'a> {
        ArgvContext {
            out: Some("/x/out"),
            params_file: None,
            deps,
            params,
        }
    }

    #[test]
    fn expands_table() {
        let params = serde_json::json!({"lr": 0.05, "name": "a b", "m": {"k": [1, 2]}});
        let deps = BTreeMap::from([("data".to_string(), "/x/d".to_string())]);
        let c = ctx(&params, Some(&deps));
        let cases = [
            ("plain", "plain"),
            ("{out}/m.json", "/x/out/m.json"),
            ("--lr={params.lr}", "--lr=0.05"),
            ("{params.name}", "a b"),
            ("{params.m.k}", "[1,2]"),
            ("{deps.data}/t.csv", "/x/d/t.csv"),
            ("{params_file}", "{params_file}"),
            ("{{literal}}", "{literal}"),
        ];
        for (input, want) in cases {
            assert_eq!(expand_one(input, &c).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn keys_keep_paths_symbolic() {
        let params = serde_json::json!({"v": 1});
        let c = ArgvContext {
            out: None,
            params_file: None,
            deps: None,
            params: &params,
        };
        let cases = [
            ("", ""),
            ("sh", "sh"),
            (
                "cat {deps.t0}/o.txt > {out}/o.txt",
                "cat {deps.t0}/o.txt > {out}/o.txt",
            ),
            ("v={params.v} {params_file}", "v=1 {params_file}"),
        ];
        for (input, want) in cases {
            assert_eq!(expand_one(input, &c).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn errors() {
        let params = serde_json::json!({});
        let no_deps = BTreeMap::new();
        let c = ctx(&params, Some(&no_deps));
        assert!(matches!(
            expand_one("{nope}", &c),
            Err(PlaceholderError::Invalid { .. })
        ));
        assert!(matches!(
            expand_one("{out", &c),
            Err(PlaceholderError::Invalid { .. })
        ));
        assert!(matches!(
            expand_one("{params.x}", &c),
            Err(PlaceholderError::Unknown(_))
        ));
        assert!(matches!(
            expand_one("{deps.x}", &c),
            Err(PlaceholderError::Unknown(_))
        ));
    }
}
