//! `mlbuild build --junit FILE`: the build's events as a JUnit XML report.
//!
//! CI systems (GitLab, Jenkins, GitHub test reporters) display JUnit natively, so a failed
//! stage or gate shows up as a failed test with its message. One `testsuite` per package,
//! one `testcase` per target and one per gate; targets not built because a dependency
//! failed are `skipped`. Written by hand rather than with an XML crate: the format is
//! small, and [`escape`] is the only part that needs care. Main function: [`render`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use mlbuild_exec::{fmt_threshold, fmt_value, gate_table, Event, GateResult, TargetStatus};

/// One `<testcase>`.
struct Case {
    name: String,
    classname: String,
    time_ms: u64,
    outcome: Outcome,
}

enum Outcome {
    Passed,
    Failed {
        message: String,
        kind: &'static str,
        body: String,
    },
    Skipped {
        message: String,
    },
}

/// The JUnit XML for a build's events; `timestamp` is the build's start, Unix seconds.
pub fn render(events: &[Event], timestamp: i64) -> String {
    // Gates are reported before their target finishes; keep them with the target so a
    // package's cases read target, then its gates.
    let mut gates: BTreeMap<&str, Vec<&GateResult>> = BTreeMap::new();
    for e in events {
        if let Event::GateChecked(g) = e {
            gates.entry(g.label.as_str()).or_default().push(g);
        }
    }
    let mut suites: BTreeMap<String, Vec<Case>> = BTreeMap::new();
    for e in events {
        let Event::TargetFinished {
            label,
            status,
            duration_ms,
            message,
            ..
        } = e
        else {
            continue;
        };
        let package = package_of(label);
        let outcome = match status {
            TargetStatus::Executed | TargetStatus::Cached => Outcome::Passed,
            TargetStatus::Failed => {
                let body = message.clone().unwrap_or_default();
                Outcome::Failed {
                    message: body.lines().next().unwrap_or("failed").to_owned(),
                    kind: if gates
                        .get(label.as_str())
                        .is_some_and(|g| g.iter().any(|g| !g.passed))
                    {
                        "gate"
                    } else {
                        "build"
                    },
                    body,
                }
            }
            TargetStatus::Skipped => Outcome::Skipped {
                message: "not built: a dependency failed or the build stopped early".to_owned(),
            },
        };
        let cases = suites.entry(package.clone()).or_default();
        cases.push(Case {
            name: label.clone(),
            classname: classname(&package),
            time_ms: *duration_ms,
            outcome,
        });
        for g in gates.get(label.as_str()).into_iter().flatten() {
            let outcome = if g.passed {
                Outcome::Passed
            } else {
                Outcome::Failed {
                    message: format!(
                        "{} = {}, required {} {}",
                        g.metric,
                        fmt_value(g.actual),
                        g.op,
                        fmt_threshold(g)
                    ),
                    kind: "gate",
                    body: gate_table(&[g]),
                }
            };
            cases.push(Case {
                name: format!("{label} gate: {}", g.gate),
                classname: classname(&package),
                time_ms: 0,
                outcome,
            });
        }
    }

    let count =
        |cases: &[&Case], f: fn(&Outcome) -> bool| cases.iter().filter(|c| f(&c.outcome)).count();
    let all: Vec<&Case> = suites.values().flatten().collect();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"mlbuild\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{}\">",
        all.len(),
        count(&all, |o| matches!(o, Outcome::Failed { .. })),
        count(&all, |o| matches!(o, Outcome::Skipped { .. })),
        seconds(all.iter().map(|c| c.time_ms).sum()),
    );
    let stamp = iso8601(timestamp);
    for (package, cases) in &suites {
        let cases: Vec<&Case> = cases.iter().collect();
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{}\" timestamp=\"{stamp}\">",
            escape(&format!("//{package}")),
            cases.len(),
            count(&cases, |o| matches!(o, Outcome::Failed { .. })),
            count(&cases, |o| matches!(o, Outcome::Skipped { .. })),
            seconds(cases.iter().map(|c| c.time_ms).sum()),
        );
        for case in cases {
            let _ = write!(
                xml,
                "    <testcase name=\"{}\" classname=\"{}\" time=\"{}\"",
                escape(&case.name),
                escape(&case.classname),
                seconds(case.time_ms)
            );
            match &case.outcome {
                Outcome::Passed => xml.push_str("/>\n"),
                Outcome::Failed {
                    message,
                    kind,
                    body,
                } => {
                    let _ = writeln!(
                        xml,
                        ">\n      <failure message=\"{}\" type=\"{kind}\">{}</failure>\n    </testcase>",
                        escape(message),
                        escape(body)
                    );
                }
                Outcome::Skipped { message } => {
                    let _ = writeln!(
                        xml,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                        escape(message)
                    );
                }
            }
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

/// The package of `//pkg:name` (or `//pkg:name[variant]`).
fn package_of(label: &str) -> String {
    let body = label.strip_prefix("//").unwrap_or(label);
    body.split(':').next().unwrap_or_default().to_owned()
}

/// `models.train` style class names, which CI tools group into a tree; the root package
/// is `_root`, as in `mlbuild-out/`.
fn classname(package: &str) -> String {
    if package.is_empty() {
        "_root".to_owned()
    } else {
        package.replace('/', ".")
    }
}

fn seconds(ms: u64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

/// `2026-11-22T08:03:26` (UTC; JUnit's timestamp has no zone designator).
fn iso8601(secs: i64) -> String {
    crate::commands::utc(secs)
        .replace(' ', "T")
        .trim_end_matches('Z')
        .to_owned()
}

/// Text safe inside an XML attribute or element: the five markup characters become
/// entities, and characters XML 1.0 forbids (control characters from a command's stderr,
/// e.g. ANSI escapes) are dropped, since no entity can represent them.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Keep newlines and tabs in attributes as references, so parsers do not
            // normalise them to spaces.
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if (c as u32) < 0x20 || matches!(c, '\u{FFFE}' | '\u{FFFF}') => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_drops_forbidden_characters() {
        assert_eq!(
            escape("a<b & \"c\" 'd'>\n\u{1b}[31mred\u{7}"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;&#10;[31mred"
        );
        assert_eq!(escape("f1 >= 0.9 — ok"), "f1 &gt;= 0.9 — ok");
    }

    #[test]
    fn one_case_per_target_and_gate() {
        let finished = |label: &str, status, message: Option<&str>| Event::TargetFinished {
            label: label.into(),
            status,
            key: None,
            duration_ms: 1500,
            message: message.map(Into::into),
        };
        let gate = |passed| GateResult {
            label: "//m:train".into(),
            gate: "f1 >= 0.9".into(),
            metric: "f1".into(),
            op: ">=".into(),
            threshold: 0.9,
            actual: if passed { 0.95 } else { 0.85 },
            passed,
            baseline: None,
            baseline_value: None,
        };
        let events = vec![
            finished("//:data", TargetStatus::Executed, None),
            Event::GateChecked(gate(false)),
            finished(
                "//m:train",
                TargetStatus::Failed,
                Some("`//m:train`: 1 of 1 gates failed"),
            ),
            finished("//m:report", TargetStatus::Skipped, None),
        ];
        let xml = render(&events, 0);
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"mlbuild\" tests=\"4\" failures=\"2\" errors=\"0\" skipped=\"1\" time=\"4.500\">"), "{xml}");
        assert!(xml.contains("<testsuite name=\"//\" tests=\"1\" failures=\"0\" errors=\"0\" skipped=\"0\" time=\"1.500\" timestamp=\"1970-01-01T00:00:00\">"), "{xml}");
        assert!(
            xml.contains("<testcase name=\"//:data\" classname=\"_root\" time=\"1.500\"/>"),
            "{xml}"
        );
        assert!(xml.contains("<testcase name=\"//m:train gate: f1 &gt;= 0.9\" classname=\"m\" time=\"0.000\">\n      <failure message=\"f1 = 0.85, required &gt;= 0.9\" type=\"gate\">"), "{xml}");
        assert!(
            xml.contains("<failure message=\"`//m:train`: 1 of 1 gates failed\" type=\"gate\">"),
            "{xml}"
        );
        assert!(xml.contains("<testcase name=\"//m:report\" classname=\"m\" time=\"1.500\">\n      <skipped message="), "{xml}");
        assert!(xml.ends_with("</testsuites>\n"));

        let passing = render(
            &[
                Event::GateChecked(gate(true)),
                finished("//m:train", TargetStatus::Cached, None),
            ],
            0,
        );
        assert!(passing.contains("failures=\"0\""), "{passing}");
        assert!(
            passing.contains(
                "<testcase name=\"//m:train gate: f1 &gt;= 0.9\" classname=\"m\" time=\"0.000\"/>"
            ),
            "{passing}"
        );
    }
}
