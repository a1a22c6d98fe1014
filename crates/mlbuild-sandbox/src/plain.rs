//! Plain-process fallback used where namespaces are unavailable (or forced off).
//!
//! It gives no isolation, only what a build still needs everywhere: the exact
//! environment, working directory, output capture, an own process group for killing,
//! and the timeout. The entry point is [`run`].

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::wait::{self, Waited};
use crate::{registry, ExitStatusKind, Outcome, SandboxSpec};

pub(crate) fn run(spec: &SandboxSpec) -> io::Result<Outcome> {
    if let Some(bind) = spec.binds.first() {
        // A plain process sees the host's tree; nothing can appear at another path.
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "`{}` can only be mounted at `{}` by the namespace sandbox, which this machine \
                 does not provide (or `MLBUILD_SANDBOX=plain` turned off)",
                bind.host.display(),
                bind.inside.display()
            ),
        ));
    }
    // A missing cwd would surface as the same ENOENT as a missing command; check it
    // first so it becomes a setup error instead of a misleading "command not found".
    if !spec.cwd.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("working directory `{}` does not exist", spec.cwd.display()),
        ));
    }
    std::fs::create_dir_all(&spec.tmp_dir).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot create tmp dir `{}`: {e}", spec.tmp_dir.display()),
        )
    })?;
    let (stdout, stderr) = open_outputs(spec)?;
    let mut cmd = Command::new(&spec.argv[0]);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .envs(&spec.env)
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    let start = Instant::now();
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let status = ExitStatusKind::SpawnFailed(spawn_error_message(&spec.argv[0], &e));
            return Ok(Outcome {
                status,
                duration: start.elapsed(),
            });
        }
    };
    let registration = registry::register(child.id() as i32);
    let waited = wait::wait_child(child, registration, spec.timeout)?;
    let status = match waited {
        Waited::TimedOut => ExitStatusKind::TimedOut,
        Waited::Exited(status) => wait::status_kind(status),
    };
    Ok(Outcome {
        status,
        duration: start.elapsed(),
    })
}

/// Create the stdout/stderr capture files (shared by both modes).
pub(crate) fn open_outputs(spec: &SandboxSpec) -> io::Result<(File, File)> {
    let open = |path: &std::path::Path, what: &str| {
        File::create(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create {what} file `{}`: {e}", path.display()),
            )
        })
    };
    Ok((open(&spec.stdout, "stdout")?, open(&spec.stderr, "stderr")?))
}

pub(crate) fn spawn_error_message(program: &str, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => format!("command not found: `{program}`"),
        io::ErrorKind::PermissionDenied => format!("permission denied: `{program}`"),
        _ => format!("cannot execute `{program}`: {e}"),
    }
}
