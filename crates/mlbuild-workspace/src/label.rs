//! Target labels (`//models:fraud`) and target patterns (`//...`, `//models:all`).
//!
//! Labels name targets on the command line and in `deps`; they are parsed strictly because
//! package and target names become directory names in the store and output tree.
//! Main types: [`Label`], [`Pattern`].

use std::fmt;

use crate::error::{ErrorKind, WorkspaceError};

/// `//package:name`. `package` has no leading `//`; `""` is the root package.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Label {
    pub package: String,
    pub name: String,
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "//{}:{}", self.package, self.name)
    }
}

/// Whether `name` is a valid target name: `[A-Za-z0-9_.+-]+`, not `.` or `..`.
///
/// Target names are used as directory names, so they must be safe path components.
pub fn is_valid_target_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-'))
}

/// Whether `package` is a valid package name: `""` or `/`-separated valid components.
pub fn is_valid_package_name(package: &str) -> bool {
    package.is_empty() || package.split('/').all(is_valid_target_name)
}

fn bad_label(text: &str, why: &str) -> WorkspaceError {
    WorkspaceError::new(ErrorKind::Label, format!("invalid label `{text}`: {why}"))
        .with_label("invalid label")
}

/// Reasons a package path is bad, shared by labels and patterns.
fn check_package(text: &str, package: &str) -> Result<(), WorkspaceError> {
    if package.contains('\\') {
        return Err(bad_label(text, "backslashes are not allowed")
            .with_help("package paths use `/` as the separator"));
    }
    if package.chars().any(char::is_whitespace) {
        return Err(bad_label(text, "whitespace is not allowed"));
    }
    if package.ends_with('/') {
        return Err(bad_label(text, "package path ends with `/`")
            .with_help(format!("write `//{}`", package.trim_end_matches('/'))));
    }
    if package.is_empty() {
        return Ok(());
    }
    for comp in package.split('/') {
        match comp {
            "" => return Err(bad_label(text, "package path has an empty component")),
            "." | ".." => {
                return Err(bad_label(
                    text,
                    &format!("package path may not contain `{comp}`"),
                ))
            }
            c if !is_valid_target_name(c) => {
                return Err(bad_label(
                    text,
                    &format!("`{c}` is not a valid package name component"),
                )
                .with_help("package names may only contain `A-Z a-z 0-9 _ . + -`"))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Check a target name, returning it in canonical form: a sweep variant's
/// `name[k=v,...]` is rewritten with sorted keys and canonical values, so every way of
/// writing a variant names the same target.
fn canonical_name(text: &str, name: &str) -> Result<String, WorkspaceError> {
    if name.contains('[') {
        return crate::sweep::canonical_variant_name(name).map_err(|why| {
            bad_label(text, &format!("invalid sweep variant: {why}")).with_help(
                "a variant is written `name[key=value,...]`, e.g. `//models:fraud[lr=0.05]`",
            )
        });
    }
    check_name(text, name)?;
    Ok(name.to_owned())
}

fn check_name(text: &str, name: &str) -> Result<(), WorkspaceError> {
    if name.is_empty() {
        return Err(bad_label(text, "target name is empty"));
    }
    if name.contains('\\') {
        return Err(bad_label(text, "backslashes are not allowed"));
    }
    if name.chars().any(char::is_whitespace) {
        return Err(bad_label(text, "whitespace is not allowed"));
    }
    if !is_valid_target_name(name) {
        return Err(
            bad_label(text, &format!("`{name}` is not a valid target name")).with_help(
                "target names may only contain `A-Z a-z 0-9 _ . + -` and may not be `.` or `..`",
            ),
        );
    }
    Ok(())
}

impl Label {
    /// Build a label from parts that are already known to be valid.
    pub fn new(package: impl Into<String>, name: impl Into<String>) -> Label {
        Label {
            package: package.into(),
            name: name.into(),
        }
    }

    /// Parse `//pkg/sub:name`, `:name` (in `current_package`), `//pkg` (= `//pkg:pkg`'s
    /// last component) or `//:name`.
    pub fn parse(text: &str, current_package: &str) -> Result<Label, WorkspaceError> {
        if text.is_empty() {
            return Err(WorkspaceError::new(ErrorKind::Label, "empty label")
                .with_label("invalid label")
                .with_help("write `//package:name` or `:name`"));
        }
        if let Some(name) = text.strip_prefix(':') {
            let name = canonical_name(text, name)?;
            check_package(text, current_package)?;
            return Ok(Label::new(current_package, name));
        }
        let Some(rest) = text.strip_prefix("//") else {
            let help = if is_valid_target_name(text) {
                format!("write `:{text}` for a target in the current package, or `//{text}` for a package")
            } else {
                "labels look like `//package:name` or `:name`".to_owned()
            };
            return Err(bad_label(text, "labels start with `//` or `:`").with_help(help));
        };
        if rest == "..." || rest.ends_with("/...") {
            return Err(bad_label(text, "this is a pattern, not a single target")
                .with_help("name one target, like `//package:name`"));
        }
        let (package, name) = match rest.split_once(':') {
            Some((package, name)) => {
                check_package(text, package)?;
                if name.contains(':') {
                    return Err(bad_label(text, "more than one `:`"));
                }
                (package, canonical_name(text, name)?)
            }
            None => {
                check_package(text, rest)?;
                if rest.is_empty() {
                    return Err(bad_label(text, "the root package needs a target name")
                        .with_help("write `//:name`"));
                }
                let last = rest.rsplit('/').next().unwrap_or(rest);
                (rest, last.to_owned())
            }
        };
        Ok(Label::new(package, name))
    }
}

impl std::str::FromStr for Label {
    type Err = WorkspaceError;

    /// Parse an absolute label (relative `:name` resolves in the root package).
    fn from_str(s: &str) -> Result<Label, WorkspaceError> {
        Label::parse(s, "")
    }
}

/// A set of targets named on the command line.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pattern {
    /// Exactly one target.
    Label(Label),
    /// `//pkg:all` (or `:all`): every target in one package.
    AllInPackage(String),
    /// `//pkg/...` (or `//...`): every target in the package and all packages below it.
    Recursive(String),
}

impl Pattern {
    /// Parse `//...`, `//pkg/...`, `//pkg:all`, `:all` or a label.
    ///
    /// A target literally named `all` can only be reached through a recursive pattern,
    /// as in Bazel.
    pub fn parse(text: &str, current_package: &str) -> Result<Pattern, WorkspaceError> {
        if text == "//..." {
            return Ok(Pattern::Recursive(String::new()));
        }
        if let Some(package) = text.strip_prefix("//").and_then(|r| r.strip_suffix("/...")) {
            check_package(text, package)?;
            if package.is_empty() {
                return Err(bad_label(text, "package path has an empty component")
                    .with_help("write `//...` for the whole workspace"));
            }
            return Ok(Pattern::Recursive(package.to_owned()));
        }
        if text == "..." || text.ends_with("/...") {
            return Err(bad_label(text, "recursive patterns start with `//`")
                .with_help(format!("write `//{}`", text.trim_start_matches('/'))));
        }
        if text == ":all" {
            check_package(text, current_package)?;
            return Ok(Pattern::AllInPackage(current_package.to_owned()));
        }
        if let Some(package) = text.strip_prefix("//").and_then(|r| r.strip_suffix(":all")) {
            check_package(text, package)?;
            return Ok(Pattern::AllInPackage(package.to_owned()));
        }
        Label::parse(text, current_package).map(Pattern::Label)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Label(label) => label.fmt(f),
            Pattern::AllInPackage(p) => write!(f, "//{p}:all"),
            Pattern::Recursive(p) if p.is_empty() => f.write_str("//..."),
            Pattern::Recursive(p) => write!(f, "//{p}/..."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_labels() {
        let cases: &[(&str, &str, &str, &str)] = &[
            ("//models:fraud", "", "models", "fraud"),
            ("//models/sub:x.y+z-1_", "", "models/sub", "x.y+z-1_"),
            (":prep", "data", "data", "prep"),
            (":prep", "", "", "prep"),
            ("//models", "", "models", "models"),
            ("//a/b/c", "x", "a/b/c", "c"),
            ("//:root_t", "pkg", "", "root_t"),
            ("//a.b:c", "", "a.b", "c"),
            ("//:...x", "", "", "...x"),
        ];
        for &(text, cur, pkg, name) in cases {
            let l = Label::parse(text, cur).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((l.package.as_str(), l.name.as_str()), (pkg, name), "{text}");
        }
    }

    #[test]
    fn bad_labels() {
        let cases = [
            "",
            "//",
            "//:",
            ":",
            "//a:",
            "//a/:b",
            "//a//b:c",
            "///a:b",
            "//../a:b",
            "//a/..:b",
            "//./a:b",
            "//a:..",
            "//a:.",
            "//a\\b:c",
            "//a:b\\c",
            "//a b:c",
            "//a:b c",
            " //a:b",
            "//a:b:c",
            "//a:b/c",
            "//a/",
            "fraud",
            "models/fraud",
            "//...",
            "//a/...",
            "//a:b\n",
            "//a:é",
            ":a\tb",
        ];
        for text in cases {
            assert!(
                Label::parse(text, "").is_err(),
                "{text:?} should be rejected"
            );
        }
        // The current package is validated too, so a bad caller cannot smuggle `..` in.
        assert!(Label::parse(":x", "../up").is_err());
    }

    #[test]
    fn display_round_trips() {
        for text in ["//models:fraud", "//:x", "//a/b:c"] {
            assert_eq!(Label::parse(text, "").unwrap().to_string(), text);
        }
        assert_eq!(Label::parse("//a/b", "").unwrap().to_string(), "//a/b:b");
    }

    #[test]
    fn patterns() {
        let cases: &[(&str, &str, Pattern)] = &[
            ("//...", "x", Pattern::Recursive(String::new())),
            ("//models/...", "", Pattern::Recursive("models".into())),
            ("//a/b/...", "", Pattern::Recursive("a/b".into())),
            ("//models:all", "", Pattern::AllInPackage("models".into())),
            ("//:all", "x", Pattern::AllInPackage(String::new())),
            (":all", "data", Pattern::AllInPackage("data".into())),
            (
                "//models:fraud",
                "",
                Pattern::Label(Label::new("models", "fraud")),
            ),
            (":t", "p", Pattern::Label(Label::new("p", "t"))),
            (
                "//m:fm[lr=0.05,l2=0]",
                "",
                Pattern::Label(Label::new("m", "fm[l2=0,lr=0.05]")),
            ),
        ];
        for (text, cur, want) in cases {
            assert_eq!(&Pattern::parse(text, cur).unwrap(), want, "{text}");
        }
        for text in [
            "...",
            "models/...",
            "//models/../...",
            "///...",
            "//a//...",
            "//a/:all",
            "",
            "x",
        ] {
            assert!(
                Pattern::parse(text, "").is_err(),
                "{text:?} should be rejected"
            );
        }
    }
}
