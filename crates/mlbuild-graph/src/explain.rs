//! Field-by-field difference of two action preimages, for `mlbuild why` and `status`.
//!
//! Main function: [`diff_preimages`]. Bazel makes users diff execution logs by hand to
//! learn why something rebuilt; keeping each target's last preimage lets us answer
//! directly: which file, which param (old and new value), which env var, which tool.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

/// One difference between the previous and the current preimage.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// What changed, e.g. `param \`lr\`` or `input \`models/train.py\``.
    pub subject: String,
    /// Old value, `None` when the subject is new.
    pub old: Option<String>,
    /// New value, `None` when the subject was removed.
    pub new: Option<String>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.old, &self.new) {
            (Some(old), Some(new)) => write!(f, "{} changed: {old} -> {new}", self.subject),
            (None, Some(new)) => write!(f, "{} added: {new}", self.subject),
            (Some(old), None) => write!(f, "{} removed (was {old})", self.subject),
            (None, None) => write!(f, "{} changed", self.subject),
        }
    }
}

/// Differences between two canonical preimage encodings, most specific first: inputs and
/// params before argv (a param change also shows up in argv; the param is the cause).
pub fn diff_preimages(old: &str, new: &str) -> Vec<Change> {
    let (Ok(old), Ok(new)) = (
        serde_json::from_str::<Value>(old),
        serde_json::from_str::<Value>(new),
    ) else {
        return vec![Change {
            subject: "the recorded key preimage is unreadable".into(),
            old: None,
            new: None,
        }];
    };
    let mut changes = Vec::new();
    if old.get("schema") != new.get("schema") {
        changes.push(field_change(
            "key schema version",
            &old["schema"],
            &new["schema"],
        ));
        return changes;
    }
    diff_inputs(&old["inputs"], &new["inputs"], &mut changes);
    diff_tree("param", "", &old["params"], &new["params"], &mut changes);
    diff_map("env var", &old["env"], &new["env"], &mut changes);
    diff_map("tool", &old["tools"], &new["tools"], &mut changes);
    diff_map(
        "python environment",
        &old["environments"],
        &new["environments"],
        &mut changes,
    );
    diff_map("dependency", &old["deps"], &new["deps"], &mut changes);
    for field in [
        "argv",
        "outs",
        "kind",
        "cwd",
        "network",
        "source_date_epoch",
        "platform",
    ] {
        if old.get(field) != new.get(field) {
            changes.push(field_change(
                &format!("`{field}`"),
                &old[field],
                &new[field],
            ));
        }
    }
    changes
}

fn field_change(subject: &str, old: &Value, new: &Value) -> Change {
    Change {
        subject: subject.to_string(),
        old: (!old.is_null()).then(|| render(old)),
        new: (!new.is_null()).then(|| render(new)),
    }
}

fn render(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn diff_inputs(old: &Value, new: &Value, changes: &mut Vec<Change>) {
    let empty = serde_json::Map::new();
    let old = old.as_object().unwrap_or(&empty);
    let new = new.as_object().unwrap_or(&empty);
    let paths: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for path in paths {
        let (o, n) = (old.get(path), new.get(path));
        if o == n {
            continue;
        }
        let subject = match path.strip_prefix("mlbuild-out/") {
            Some(rest) => format!("dependency output `{rest}`"),
            None => format!("input `{path}`"),
        };
        let digest = |v: Option<&Value>| {
            v.map(|v| {
                let d = v["digest"].as_str().unwrap_or("?");
                let exec = if v["executable"].as_bool() == Some(true) {
                    " (executable)"
                } else {
                    ""
                };
                format!("{}{exec}", &d[..d.len().min(12)])
            })
        };
        changes.push(Change {
            subject,
            old: digest(o),
            new: digest(n),
        });
    }
}

fn diff_tree(kind: &str, prefix: &str, old: &Value, new: &Value, changes: &mut Vec<Change>) {
    if old == new {
        return;
    }
    if let (Value::Object(o), Value::Object(n)) = (old, new) {
        let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
        for k in keys {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            diff_tree(
                kind,
                &path,
                o.get(k).unwrap_or(&Value::Null),
                n.get(k).unwrap_or(&Value::Null),
                changes,
            );
        }
        return;
    }
    changes.push(field_change(&format!("{kind} `{prefix}`"), old, new));
}

fn diff_map(kind: &str, old: &Value, new: &Value, changes: &mut Vec<Change>) {
    let empty = serde_json::Map::new();
    let o = old.as_object().unwrap_or(&empty);
    let n = new.as_object().unwrap_or(&empty);
    let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    for k in keys {
        let (a, b) = (
            o.get(k).unwrap_or(&Value::Null),
            n.get(k).unwrap_or(&Value::Null),
        );
        if a != b {
            changes.push(field_change(&format!("{kind} `{k}`"), a, b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_param_input_env_and_tool_changes() {
        let old = r#"{"schema":1,"argv":["a"],"params":{"train":{"lr":0.05},"seed":1},
            "inputs":{"m/t.py":{"digest":"aaaaaaaaaaaaaaaa","executable":false},
                      "mlbuild-out/d/x/f.csv":{"digest":"bbbbbbbbbbbbbbbb","executable":false}},
            "env":{"A":"1"},"tools":{"python3":"cccc"},"deps":{}}"#;
        let new = r#"{"schema":1,"argv":["a"],"params":{"train":{"lr":0.1},"seed":1},
            "inputs":{"m/t.py":{"digest":"dddddddddddddddd","executable":false},
                      "mlbuild-out/d/x/f.csv":{"digest":"bbbbbbbbbbbbbbbb","executable":false},
                      "m/new.py":{"digest":"eeeeeeeeeeeeeeee","executable":true}},
            "env":{"A":"2"},"tools":{"python3":"ffff"},"deps":{}}"#;
        let rendered: Vec<String> = diff_preimages(old, new)
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            rendered,
            vec![
                "input `m/new.py` added: eeeeeeeeeeee (executable)",
                "input `m/t.py` changed: aaaaaaaaaaaa -> dddddddddddd",
                "param `train.lr` changed: 0.05 -> 0.1",
                "env var `A` changed: 1 -> 2",
                "tool `python3` changed: cccc -> ffff",
            ]
        );
    }

    #[test]
    fn identical_preimages_have_no_changes() {
        let p =
            r#"{"schema":1,"argv":["a"],"params":{},"inputs":{},"env":{},"tools":{},"deps":{}}"#;
        assert!(diff_preimages(p, p).is_empty());
    }

    #[test]
    fn dependency_outputs_are_named_as_such() {
        let old = r#"{"schema":1,"inputs":{"mlbuild-out/f/t/a.csv":{"digest":"aaaaaaaaaaaaaaaa","executable":false}}}"#;
        let new = r#"{"schema":1,"inputs":{"mlbuild-out/f/t/a.csv":{"digest":"bbbbbbbbbbbbbbbb","executable":false}}}"#;
        assert_eq!(
            diff_preimages(old, new)[0].to_string(),
            "dependency output `f/t/a.csv` changed: aaaaaaaaaaaa -> bbbbbbbbbbbb"
        );
    }
}
