//! Rendering build events: a live progress display on a terminal, plain lines in CI and
//! pipes, JSON lines with `--json`.
//!
//! Main type: [`Reporter`]. Human output goes to stderr so stdout stays clean for JSON and
//! for commands whose output is data; every mode ends with one summary line that names the
//! counts of actions executed, cached and failed.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mlbuild_exec::{BuildSummary, Event, GateResult, TargetStatus};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Json,
    Live,
    Plain,
}

struct State {
    total: usize,
    done: usize,
    cached: usize,
    running: BTreeSet<String>,
    bar: Option<ProgressBar>,
    /// Every gate checked, printed as one table before the summary line.
    gates: Vec<GateResult>,
}

pub struct Reporter {
    mode: Mode,
    state: Mutex<State>,
}

impl Reporter {
    pub fn new(json: bool) -> Arc<Reporter> {
        let mode = if json {
            Mode::Json
        } else if std::io::stderr().is_terminal() && std::env::var_os("CI").is_none() {
            Mode::Live
        } else {
            Mode::Plain
        };
        Arc::new(Reporter {
            mode,
            state: Mutex::new(State {
                total: 0,
                done: 0,
                cached: 0,
                running: BTreeSet::new(),
                bar: None,
                gates: Vec::new(),
            }),
        })
    }

    pub fn handle(&self, event: Event) {
        if self.mode == Mode::Json {
            let line = serde_json::to_string(&event).expect("events serialize");
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
            return;
        }
        let mut st = self.state.lock().expect("reporter lock");
        match event {
            Event::BuildStarted { targets, .. } => {
                st.total = targets;
                if self.mode == Mode::Live {
                    let bar = ProgressBar::with_draw_target(
                        Some(targets as u64),
                        ProgressDrawTarget::stderr(),
                    );
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{spinner} [{pos}/{len}] {elapsed_precise} {wide_msg}",
                        )
                        .expect("valid template"),
                    );
                    bar.enable_steady_tick(Duration::from_millis(120));
                    st.bar = Some(bar);
                }
            }
            Event::SandboxSelected { .. } => {}
            Event::GateChecked(result) => st.gates.push(result),
            Event::RemoteDownloaded {
                label,
                blobs,
                bytes,
                ..
            } => {
                if self.mode == Mode::Plain {
                    self.line(
                        &st,
                        &format!(
                            "[{}/{}] downloaded {label} from the remote cache ({blobs} blobs, {})",
                            st.done,
                            st.total,
                            human_bytes(bytes)
                        ),
                    );
                }
            }
            Event::RemoteUploaded { .. } => {}
            Event::Warning { message } => self.line(&st, &format!("warning: {message}")),
            Event::ActionStarted { label, reasons, .. } => {
                let why = reasons.first().cloned().unwrap_or_default();
                let more = if reasons.len() > 1 {
                    format!(" (+{} more)", reasons.len() - 1)
                } else {
                    String::new()
                };
                if self.mode == Mode::Plain {
                    self.line(
                        &st,
                        &format!("[{}/{}] running {label}: {why}{more}", st.done, st.total),
                    );
                }
                st.running.insert(label);
                self.refresh(&st);
            }
            Event::TargetFinished {
                label,
                status,
                duration_ms,
                message,
                ..
            } => {
                st.running.remove(&label);
                st.done += 1;
                if status == TargetStatus::Cached {
                    st.cached += 1;
                }
                match status {
                    TargetStatus::Executed => self.line(
                        &st,
                        &format!(
                            "[{}/{}] executed {label} in {}",
                            st.done,
                            st.total,
                            secs(duration_ms)
                        ),
                    ),
                    TargetStatus::Failed => {
                        self.line(&st, &format!("[{}/{}] FAILED {label}", st.done, st.total));
                        if let Some(m) = message {
                            self.line(&st, &m);
                        }
                    }
                    TargetStatus::Cached | TargetStatus::Skipped => {}
                }
                if let Some(bar) = &st.bar {
                    bar.set_position(st.done as u64);
                }
                self.refresh(&st);
            }
            Event::BuildFinished(summary) => {
                if let Some(bar) = st.bar.take() {
                    bar.finish_and_clear();
                }
                if let Some(table) = gates_report(&st.gates) {
                    eprintln!("{table}");
                }
                eprintln!("{}", summary_line(&summary));
            }
        }
    }

    fn refresh(&self, st: &State) {
        if let Some(bar) = &st.bar {
            let running: Vec<&str> = st.running.iter().map(String::as_str).take(3).collect();
            let extra = st.running.len().saturating_sub(3);
            let mut msg = format!("{} cached | running: {}", st.cached, running.join(", "));
            if extra > 0 {
                msg.push_str(&format!(" +{extra}"));
            }
            bar.set_message(msg);
        }
    }

    fn line(&self, st: &State, text: &str) {
        match &st.bar {
            Some(bar) => bar.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }
}

/// Up to this many gates are listed even when they all pass; beyond it only failures are,
/// so a no-op build of a large workspace does not print thousands of lines.
const LISTED_GATES: usize = 20;

/// The gate table printed before the summary: every gate of a small build, only the
/// failing ones (and a count of the rest) of a large one.
fn gates_report(gates: &[GateResult]) -> Option<String> {
    if gates.is_empty() {
        return None;
    }
    let listed: Vec<&GateResult> = if gates.len() <= LISTED_GATES {
        gates.iter().collect()
    } else {
        gates.iter().filter(|g| !g.passed).collect()
    };
    let passed_unlisted = gates.len() - listed.len();
    let mut out = if listed.is_empty() {
        String::new()
    } else {
        mlbuild_exec::gate_table(&listed) + "\n"
    };
    if passed_unlisted > 0 {
        out.push_str(&format!("{passed_unlisted} gates passed\n"));
    }
    Some(out.trim_end().to_owned())
}

/// `build succeeded: 5 actions: 3 executed, 2 cached, 0 failed in 1.23s`
pub fn summary_line(s: &BuildSummary) -> String {
    let verdict = if s.interrupted {
        "build interrupted"
    } else if s.success {
        "build succeeded"
    } else {
        "build FAILED"
    };
    let mut line = format!(
        "{verdict}: {} actions: {} executed, {} cached, {} failed",
        s.actions(),
        s.executed,
        s.cached,
        s.failed
    );
    if s.skipped > 0 {
        line.push_str(&format!(", {} skipped", s.skipped));
    }
    line.push_str(&format!(" in {}", secs(s.wall_ms)));
    // With a remote configured the line always says what it did, so a refused token or
    // a cache that is down shows here too, not only in a warning further up.
    if s.remote || s.remote_hits > 0 || s.remote_uploads > 0 {
        line.push_str(&format!(
            "; remote: {} hits ({} down), {} uploaded ({} up)",
            s.remote_hits,
            human_bytes(s.remote_downloaded_bytes),
            s.remote_uploads,
            human_bytes(s.remote_uploaded_bytes)
        ));
        if let Some(limitation) = &s.remote_limitation {
            line.push_str(&format!(", {limitation}"));
        }
    }
    line
}

/// `512 B`, `1.5 kB`, `3.2 MB`, `20.0 GB`: decimal units, as `--max-size 20G` reads them,
/// so a size printed back is the size that was asked for.
pub fn human_bytes(n: u64) -> String {
    bytesize::ByteSize(n).display().si().to_string()
}

/// `850ms` below a second (a no-op build would otherwise read `0.00s`), `1.23s` above.
pub(crate) fn secs(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.2}s", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(i: usize, passed: bool) -> GateResult {
        GateResult {
            label: format!("//:t{i}"),
            gate: "f1 >= 0.9".into(),
            metric: "f1".into(),
            op: ">=".into(),
            threshold: 0.9,
            actual: if passed { 0.95 } else { 0.85 },
            passed,
            baseline: None,
            baseline_value: None,
        }
    }

    #[test]
    fn sizes_use_decimal_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1500), "1.5 kB");
        assert_eq!(human_bytes(4_300_000), "4.3 MB");
        assert_eq!(human_bytes(20_000_000_000), "20.0 GB");
    }

    #[test]
    fn small_builds_list_every_gate_large_ones_only_failures() {
        assert_eq!(gates_report(&[]), None);
        let small = gates_report(&[gate(0, true), gate(1, false)]).unwrap();
        assert_eq!(small.lines().count(), 3, "{small}");
        assert!(
            small.contains("//:t0") && small.contains("//:t1"),
            "{small}"
        );

        let mut many: Vec<GateResult> = (0..25).map(|i| gate(i, true)).collect();
        assert_eq!(gates_report(&many).unwrap(), "25 gates passed");
        many[7].passed = false;
        let report = gates_report(&many).unwrap();
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(lines.len(), 3, "{report}");
        assert!(
            lines[1].starts_with("//:t7 ") && lines[1].ends_with("FAIL"),
            "{report}"
        );
        assert_eq!(lines[2], "24 gates passed");
    }
}
