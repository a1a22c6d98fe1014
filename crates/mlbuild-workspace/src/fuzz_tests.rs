//! Property tests of the parsers users type into: `BUILD.toml`, `MLBUILD.toml`, labels,
//! patterns, gates and `--set` overrides. Whatever the input, parsing returns a value
//! or an error, never panics, and an error that points into the input points inside it
//! (and renders). Inputs are built from the format's own vocabulary, mutated, so that
//! most of them get past the TOML syntax into the checks behind it.

use std::sync::Arc;

use proptest::prelude::*;

use crate::config::WorkspaceConfig;
use crate::label::{Label, Pattern};
use crate::params_file::ParamOverride;
use crate::source::SourceText;
use crate::WorkspaceError;

/// Values a field may be given, good and bad.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"x\"".to_owned()),
        Just("\"\"".to_owned()),
        Just("\"/abs\"".to_owned()),
        Just("\"../up\"".to_owned()),
        Just("\"{out}\"".to_owned()),
        Just("\"{deps.\"".to_owned()),
        Just("\"{params.a.b}\"".to_owned()),
        Just("\"f1 >= 0.9\"".to_owned()),
        Just("\"f1 >= baseline.f1 - 0.01\"".to_owned()),
        Just("\"//pkg:t\"".to_owned()),
        Just("\":t\"".to_owned()),
        Just("\"build:\"".to_owned()),
        Just("[]".to_owned()),
        Just("[\"a\", \"b/\"]".to_owned()),
        Just("[\"sh\", \"-c\", \"echo {out}\"]".to_owned()),
        Just("{ cpu = 2 }".to_owned()),
        Just("{ lr = [0.1, 0.2] }".to_owned()),
        Just("{ metric = \"f1\", goal = \"max\" }".to_owned()),
        Just("1".to_owned()),
        Just("-1".to_owned()),
        Just("nan".to_owned()),
        Just("true".to_owned()),
        Just("1e400".to_owned()),
        "\"[ -~]{0,12}\"".prop_map(|s| s),
        any::<i64>().prop_map(|n| n.to_string()),
    ]
}

fn key() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "kind",
        "srcs",
        "deps",
        "cmd",
        "outs",
        "params",
        "env",
        "secret_env",
        "tools",
        "resources",
        "timeout",
        "network",
        "metrics",
        "gates",
        "baseline",
        "params_file",
        "param_keys",
        "sweep",
        "select",
        "nondeterministic",
        "data",
        "schema",
        "reference",
        "format",
        "files",
        "lock",
        "python",
        "path",
        "allow_missing_hashes",
        "allow_source_builds",
        "tiemout",
    ])
}

fn kind() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "command",
        "train",
        "filegroup",
        "validate",
        "drift",
        "package",
        "python_env",
        "bogus",
    ])
}

/// A BUILD.toml-like text: a few targets of random fields, then a random edit.
fn build_file() -> impl Strategy<Value = String> {
    let target = (
        "[a-z][a-z0-9_.-]{0,6}",
        kind(),
        prop::collection::vec((key(), value()), 0..6),
    )
        .prop_map(|(name, kind, fields)| {
            let mut t = format!("[target.{name}]\nkind = \"{kind}\"\n");
            for (k, v) in fields {
                t.push_str(&format!("{k} = {v}\n"));
            }
            t
        });
    (
        prop::collection::vec(target, 0..4),
        any::<prop::sample::Index>(),
        "[ -~\n]{0,3}",
    )
        .prop_map(|(targets, at, junk)| {
            let mut text = targets.concat();
            if !text.is_empty() {
                let mut i = at.index(text.len() + 1);
                while !text.is_char_boundary(i) {
                    i -= 1;
                }
                text.insert_str(i, &junk);
            }
            text
        })
}

fn source(name: &str, text: &str) -> Arc<SourceText> {
    Arc::new(SourceText {
        name: name.into(),
        text: text.into(),
    })
}

/// An error that names a span names one inside `text`, and renders.
fn points_inside(err: &WorkspaceError, text: &str) {
    if let Some(span) = err.span() {
        assert!(
            span.offset() + span.len() <= text.len(),
            "span {span:?} outside {} bytes: {err}",
            text.len()
        );
    }
    let rendered = crate::render_plain(err);
    assert!(!rendered.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn build_files_never_panic(text in build_file()) {
        let config = WorkspaceConfig::defaults();
        let src = source("pkg/BUILD.toml", &text);
        if let Err(e) = crate::package::parse_package("pkg", "/ws/pkg/BUILD.toml".into(), src, &config) {
            points_inside(&e, &text);
        }
    }

    #[test]
    fn arbitrary_text_never_panics_as_a_build_file(text in "\\PC{0,200}") {
        let config = WorkspaceConfig::defaults();
        let src = source("pkg/BUILD.toml", &text);
        if let Err(e) = crate::package::parse_package("pkg", "/ws/pkg/BUILD.toml".into(), src, &config) {
            points_inside(&e, &text);
        }
    }

    #[test]
    fn workspace_files_never_panic(
        table in prop::sample::select(vec!["workspace", "resources", "sandbox", "remote", "signing", "python"]),
        fields in prop::collection::vec((prop::sample::select(vec!["name", "store", "params", "source_date_epoch", "cpu", "path", "url", "read_only", "trusted_keys", "timeout", "key", "uv", "token"]), value()), 0..5),
    ) {
        let mut text = format!("[{table}]\n");
        for (k, v) in fields {
            text.push_str(&format!("{k} = {v}\n"));
        }
        if let Err(e) = WorkspaceConfig::parse(&source("MLBUILD.toml", &text), std::path::Path::new("/ws")) {
            points_inside(&e, &text);
        }
    }

    #[test]
    fn labels_and_patterns_never_panic(text in "[/:.a-z0-9_+@ -]{0,24}|\\PC{0,24}", pkg in "[a-z/]{0,8}") {
        let _ = Label::parse(&text, &pkg);
        let _ = Pattern::parse(&text, &pkg);
    }

    #[test]
    fn gates_never_panic_and_point_inside_their_string(
        text in "[a-z_.0-9 <>=!+*/()-]{0,24}|(f1|auc|baseline\\.f1|current\\.f1) (>=|<=|>|<|==) (0\\.9|baseline\\.f1|baseline\\.f1 - 0\\.01|1e9|-)",
    ) {
        let line = format!("gates = [\"{text}\"]\n");
        let src = source("BUILD.toml", &line);
        let start = line.find('"').unwrap();
        if let Err(e) = crate::gate::parse_gate_at(&src, &text, start..start + text.len() + 2) {
            points_inside(&e, &line);
        }
    }

    #[test]
    fn set_overrides_never_panic(text in "\\PC{0,40}") {
        let _ = ParamOverride::parse(&text);
    }
}
