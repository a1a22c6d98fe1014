//! Errors of planning and running actions.
//!
//! Main type: [`ExecError`]. Action failures carry what a user needs to act without
//! re-running anything: the exit status, the tail of stderr and where the full log is.

use std::path::PathBuf;

use miette::Diagnostic;

#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum ExecError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Workspace(#[from] mlbuild_workspace::WorkspaceError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Store(#[from] mlbuild_store::StoreError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Graph(#[from] mlbuild_graph::GraphError),

    #[error("`{label}`: command not found: `{tool}` is not on the sandbox path ({})", .path.join(":"))]
    #[diagnostic(
        help("install `{tool}` in one of those directories, or add its directory to `[sandbox] path` in MLBUILD.toml")
    )]
    ToolNotFound {
        label: String,
        tool: String,
        path: Vec<String>,
    },

    #[error("`{label}`: actions must run in the sandbox (`[sandbox] require = true`), but they would run without isolation: {why}")]
    #[diagnostic(help(
        "unset `MLBUILD_SANDBOX=plain`, or build on a machine with unprivileged user namespaces; remove `require` from `[sandbox]` in MLBUILD.toml to accept unisolated actions"
    ))]
    SandboxRequired { label: String, why: String },

    #[error("`{label}`: `{path}` is outside the system directories, so its content would not enter the action key")]
    #[diagnostic(help("{help}"))]
    UndeclaredEnvironment {
        label: String,
        path: String,
        help: String,
    },

    #[error("`{label}`: the program `{program}` is not declared in `srcs`")]
    #[diagnostic(help("{help}"))]
    ProgramNotInSrcs {
        label: String,
        program: String,
        help: String,
    },

    #[error("`{label}`: cannot use the Python environment `{env}`: {reason}")]
    #[diagnostic(help("{help}"))]
    Environment {
        label: String,
        env: String,
        reason: String,
        help: String,
    },

    #[error("`{label}` failed: {status}\n{stderr_tail}")]
    #[diagnostic(
        help("full log: {}", .log.display())
    )]
    ActionFailed {
        label: String,
        status: String,
        stderr_tail: String,
        log: PathBuf,
    },

    #[error("`{label}` did not create its declared output `{path}`")]
    #[diagnostic(help("write it under the `{{out}}` directory, or remove it from `outs`"))]
    MissingOutput { label: String, path: String },

    #[error("`{label}` created `{path}`, which is not a declared output")]
    #[diagnostic(help("add it to `outs` (a trailing `/` declares a whole directory)"))]
    UndeclaredOutput { label: String, path: String },

    #[error("`{label}` wrote `{path}` outside its output directory")]
    #[diagnostic(help("actions may only write under `{{out}}` and $TMPDIR"))]
    WroteOutside { label: String, path: String },

    #[error("`{label}`: output `{path}` is a symlink")]
    #[diagnostic(help(
        "outputs must be regular files or directories; copy the file instead of linking it"
    ))]
    OutputSymlink { label: String, path: String },

    #[error("`{label}` needs {resource} = {need}, but the machine's capacity is {capacity}")]
    #[diagnostic(help(
        "lower the target's `resources`, or raise `[resources] {resource}` in MLBUILD.toml"
    ))]
    Unschedulable {
        label: String,
        resource: String,
        need: f64,
        capacity: f64,
    },

    #[error("`{label}` needs the secret environment variable `{name}`, which is not set")]
    MissingSecret { label: String, name: String },

    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("`{label}`: {message}")]
    Placeholder { label: String, message: String },

    #[error(transparent)]
    #[diagnostic(transparent)]
    Gate(#[from] Box<crate::gates::GateError>),

    #[error("`{label}`: {failed} of {total} gates failed\n{table}")]
    #[diagnostic(help("gates are listed under `gates` in the target's BUILD.toml; `mlbuild metrics show {label}` prints every metric"))]
    GatesFailed {
        label: String,
        failed: usize,
        total: usize,
        table: String,
    },

    /// A sweep's selection cannot choose (a variant lacks the metric or its file).
    #[error("`{label}`: {message}")]
    #[diagnostic(help("{help}"))]
    Select {
        label: String,
        message: String,
        help: String,
    },

    #[error("build interrupted")]
    Interrupted,
}

impl ExecError {
    /// Whether the workspace is at fault rather than a command: the CLI reports these
    /// with the bad-input exit code.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            ExecError::Workspace(_)
                | ExecError::Graph(_)
                | ExecError::Unschedulable { .. }
                | ExecError::Placeholder { .. }
                | ExecError::MissingSecret { .. }
        ) || matches!(self, ExecError::Gate(e) if e.input)
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ExecError::Io {
            context: context.into(),
            source,
        }
    }
}
