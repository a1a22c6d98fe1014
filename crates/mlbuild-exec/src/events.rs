//! What a build reports while it runs and when it ends.
//!
//! Main types: [`Event`] (streamed to the progress display or as JSON lines with `--json`)
//! and [`BuildSummary`]. Events are plain data so every front end renders the same facts.

use serde::Serialize;

use crate::gates::GateResult;

/// How one target ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetStatus {
    Executed,
    Cached,
    Failed,
    /// Not run because a dependency failed or the build stopped early.
    Skipped,
}

impl TargetStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetStatus::Executed => "executed",
            TargetStatus::Cached => "cached",
            TargetStatus::Failed => "failed",
            TargetStatus::Skipped => "skipped",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Emitted once, before anything runs.
    BuildStarted { targets: usize, jobs: usize },
    /// Emitted once, before the first action executes: `namespaces` or `none`.
    SandboxSelected { sandbox: String },
    /// A warning worth showing once (e.g. no sandbox isolation available).
    Warning { message: String },
    /// An action started executing; `reasons` says why it could not be reused.
    ActionStarted {
        label: String,
        key: String,
        reasons: Vec<String>,
    },
    /// A target finished (executed, cached, failed or skipped).
    TargetFinished {
        label: String,
        status: TargetStatus,
        key: Option<String>,
        duration_ms: u64,
        message: Option<String>,
    },
    /// One gate of a target was checked (emitted before the target's `target_finished`).
    GateChecked(GateResult),
    /// A target's result was downloaded from the remote cache (emitted before its
    /// `target_finished`, whose status is `cached`); `bytes` crossed the wire.
    RemoteDownloaded {
        label: String,
        key: String,
        blobs: u64,
        bytes: u64,
    },
    /// An executed target's result was uploaded to the remote cache.
    RemoteUploaded {
        label: String,
        key: String,
        blobs: u64,
        bytes: u64,
    },
    /// Emitted once, last.
    BuildFinished(BuildSummary),
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct BuildSummary {
    pub executed: usize,
    pub cached: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Failures caused by the workspace rather than a command (a missing source, a
    /// resource no machine has): the CLI exits with the bad-input code for these.
    pub input_errors: usize,
    pub wall_ms: u64,
    pub success: bool,
    pub interrupted: bool,
    /// The build's id in the store's history (for `--name`, params and metrics records).
    pub invocation_id: i64,
    /// Targets whose results came from the remote cache (counted in `cached` too).
    pub remote_hits: usize,
    /// Bytes downloaded from the remote cache (on the wire).
    pub remote_downloaded_bytes: u64,
    /// Executed targets whose results were uploaded to the remote cache.
    pub remote_uploads: usize,
    /// Bytes uploaded to the remote cache (on the wire).
    pub remote_uploaded_bytes: u64,
    /// Whether a remote cache was configured for this build.
    pub remote: bool,
    /// What limited the remote cache: `read-only`, `uploads refused`, `unreachable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_limitation: Option<String>,
}

impl BuildSummary {
    pub fn actions(&self) -> usize {
        self.executed + self.cached + self.failed + self.skipped
    }
}
