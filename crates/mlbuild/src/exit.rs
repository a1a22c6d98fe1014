//! Exit codes, documented in the README; scripts and CI depend on them.
//!
//! Main type: [`Code`]. A failure carries its code together with the report to print, so
//! every error path picks its code where the error is understood, not in a central guess.

use std::process::ExitCode;

/// The process exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Success; for `status`, everything is up to date.
    Ok = 0,
    /// A build ran and an action failed (or, for `status`, something is stale).
    BuildFailed = 1,
    /// Bad input: usage, malformed TOML, unknown label, cycle, hostile path.
    BadInput = 2,
    /// The store is unusable (I/O error, corrupt index) or `fsck` found corruption.
    Store = 3,
    /// Interrupted by Ctrl-C or SIGTERM.
    Interrupted = 130,
}

impl From<Code> for ExitCode {
    fn from(code: Code) -> Self {
        ExitCode::from(code as u8)
    }
}

/// An error report with the exit code it should end the process with.
pub struct Failure {
    pub code: Code,
    pub report: miette::Report,
}

impl Failure {
    pub fn bad_input(report: impl Into<miette::Report>) -> Self {
        Failure {
            code: Code::BadInput,
            report: report.into(),
        }
    }

    pub fn store(report: impl Into<miette::Report>) -> Self {
        Failure {
            code: Code::Store,
            report: report.into(),
        }
    }
}

impl From<mlbuild_workspace::WorkspaceError> for Failure {
    fn from(e: mlbuild_workspace::WorkspaceError) -> Self {
        Failure::bad_input(e)
    }
}

impl From<mlbuild_graph::GraphError> for Failure {
    fn from(e: mlbuild_graph::GraphError) -> Self {
        Failure::bad_input(e)
    }
}

impl From<mlbuild_store::StoreError> for Failure {
    fn from(e: mlbuild_store::StoreError) -> Self {
        Failure::store(e)
    }
}

impl From<mlbuild_exec::ExecError> for Failure {
    fn from(e: mlbuild_exec::ExecError) -> Self {
        match e {
            mlbuild_exec::ExecError::Store(_) | mlbuild_exec::ExecError::Io { .. } => {
                Failure::store(e)
            }
            mlbuild_exec::ExecError::Interrupted => Failure {
                code: Code::Interrupted,
                report: e.into(),
            },
            _ => Failure::bad_input(e),
        }
    }
}

pub type CmdResult = Result<Code, Failure>;
