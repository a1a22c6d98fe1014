//! Runs one build action as a real subprocess, isolated from the host as far as the
//! platform allows.
//!
//! Hermetic builds need actions that cannot read undeclared inputs, write outside their
//! output directory or reach the network; on Linux this crate gets that from user, mount,
//! PID, network, IPC and UTS namespaces (like bubblewrap), elsewhere it falls back to a
//! plain process. The main type is [`SandboxSpec`], executed by [`run`].
//!
//! Namespace mode executes an init program so that no namespace or mount work happens
//! in a child of the multi-threaded caller before `exec`: by default [`INIT_PROGRAM_NAME`]
//! beside the running binary (a small program, cheap to load), else the running binary
//! itself; either must call [`maybe_run_init`] first thing in `main`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

#[cfg(target_os = "linux")]
mod init;
#[cfg(target_os = "linux")]
mod mounts;
#[cfg(target_os = "linux")]
mod namespace;
mod plain;
mod protocol;
mod registry;
mod wait;

pub use mounts::SYSTEM_DIRS;
pub use registry::kill_all_running;

/// Everything needed to run one action; paths are absolute and identical inside and
/// outside the sandbox, so argv works unchanged in both isolation modes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxSpec {
    /// `argv[0]` is an absolute path, already resolved by the caller.
    pub argv: Vec<String>,
    /// Working directory: absolute, inside `exec_root`.
    pub cwd: PathBuf,
    /// The complete environment; nothing is inherited from the caller.
    pub env: BTreeMap<String, String>,
    /// Directory holding the action's inputs, visible read-only at the same path.
    pub exec_root: PathBuf,
    /// Directories inside `exec_root` (the output dir) that are writable, same path.
    pub writable: Vec<PathBuf>,
    /// Writable scratch dir, mounted as `/tmp` and also visible at its own path.
    pub tmp_dir: PathBuf,
    /// Extra host paths (tool install prefixes, e.g. a venv) visible read-only.
    pub expose_readonly: Vec<PathBuf>,
    /// Host directories that must not be visible, even under an exposed directory.
    pub hide: Vec<PathBuf>,
    /// Host paths shown at another path inside (namespace mode only): a Python
    /// environment at its fixed prefix, whatever the store's location.
    pub binds: Vec<Bind>,
    /// `false`: own network namespace with only loopback.
    pub network: bool,
    /// Kill the action's whole process group after this long.
    pub timeout: Option<Duration>,
    /// File created (truncated) to receive the action's stdout.
    pub stdout: PathBuf,
    /// File created (truncated) to receive the action's stderr.
    pub stderr: PathBuf,
}

/// One host path shown at another path inside the sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    /// Absolute host path (a directory or a file).
    pub host: PathBuf,
    /// Absolute path inside the sandbox.
    pub inside: PathBuf,
    pub writable: bool,
}

/// How actions are isolated on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// User, mount, PID, network, IPC and UTS namespaces with a fresh root.
    Namespaces,
    /// A plain process: own process group, cleared environment, no isolation.
    Plain,
}

/// The result of one action run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub status: ExitStatusKind,
    /// Wall time from spawn to exit (includes sandbox setup).
    pub duration: Duration,
}

/// How the action ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitStatusKind {
    /// Exited normally with this code.
    Exited(i32),
    /// Killed by this signal (e.g. 9 after [`kill_all_running`]).
    Signaled(i32),
    /// Killed because `timeout` elapsed.
    TimedOut,
    /// The command could not be started, e.g. `command not found: /usr/bin/nope`.
    SpawnFailed(String),
}

impl ExitStatusKind {
    pub fn success(&self) -> bool {
        matches!(self, ExitStatusKind::Exited(0))
    }
}

/// Name of the environment variable that selects the isolation mode (`plain` or
/// `namespaces`); unset means auto-detect.
pub const MODE_ENV: &str = "MLBUILD_SANDBOX";

/// The program executed as sandbox init; `None` means the default ([`default_init`]).
static INIT_PROGRAM: Mutex<Option<PathBuf>> = Mutex::new(None);

/// File name of the dedicated init program looked for beside the running binary. Its
/// `main` only calls [`maybe_run_init`]; loading it costs a fraction of re-executing a
/// large binary (relocations and page faults were most of an action's start-up).
pub const INIT_PROGRAM_NAME: &str = "mlbuild-sandbox-init";

/// An init program: its path for messages and what to execute.
#[derive(Clone, Debug)]
pub(crate) struct InitProgram {
    pub path: PathBuf,
    /// `/proc/self/fd/N` of a descriptor opened once, so the program executed is the
    /// one found at start even if the file is replaced during a build (as
    /// `/proc/self/exe` is); otherwise `path`.
    exec: PathBuf,
}

impl InitProgram {
    pub(crate) fn exec_path(&self) -> &Path {
        &self.exec
    }
}

/// `INIT_PROGRAM_NAME` beside the running binary, held open, or `/proc/self/exe`.
fn default_init() -> InitProgram {
    static DEFAULT: OnceLock<InitProgram> = OnceLock::new();
    DEFAULT
        .get_or_init(|| {
            let sibling = std::env::current_exe()
                .ok()
                .and_then(|exe| Some(exe.parent()?.join(INIT_PROGRAM_NAME)))
                .filter(|p| p.is_file());
            #[cfg(target_os = "linux")]
            if let Some(path) = sibling {
                use std::os::fd::IntoRawFd;
                use std::os::unix::fs::OpenOptionsExt;
                let opened = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
                    .open(&path);
                if let Ok(file) = opened {
                    // Kept open for the life of the process, on purpose.
                    let fd = file.into_raw_fd();
                    return InitProgram {
                        path,
                        exec: PathBuf::from(format!("/proc/self/fd/{fd}")),
                    };
                }
            }
            #[cfg(not(target_os = "linux"))]
            let _ = sibling;
            let path = PathBuf::from("/proc/self/exe");
            InitProgram {
                exec: path.clone(),
                path,
            }
        })
        .clone()
}

/// Use `path` as the sandbox init program instead of the running binary. The program
/// must call [`maybe_run_init`] first thing in `main`; tests use this because the test
/// harness itself cannot act as init.
pub fn set_init_program(path: impl Into<PathBuf>) {
    let mut slot = INIT_PROGRAM.lock().unwrap_or_else(|e| e.into_inner());
    *slot = Some(path.into());
}

pub(crate) fn init_program() -> InitProgram {
    let slot = INIT_PROGRAM.lock().unwrap_or_else(|e| e.into_inner());
    match slot.clone() {
        Some(path) => InitProgram {
            exec: path.clone(),
            path,
        },
        None => default_init(),
    }
}

/// If this process was started as a sandbox init, become it and never return;
/// otherwise return immediately. Call it first thing in `main`, before any thread exists.
pub fn maybe_run_init() {
    #[cfg(target_os = "linux")]
    if let Some(value) = std::env::var_os(protocol::INIT_ENV) {
        let code = init::run_init(&value);
        // SAFETY: `_exit` skips atexit handlers and stdio flushing, which is what a
        // forked helper wants; nothing is buffered at this point.
        unsafe { libc::_exit(code) };
    }
}

struct ProbeResult {
    isolation: Isolation,
    why_not: Option<String>,
}

static PROBE: OnceLock<ProbeResult> = OnceLock::new();

/// The best isolation that really works here, detected once by running `/bin/true` in a
/// namespace sandbox. `MLBUILD_SANDBOX=plain` forces [`Isolation::Plain`];
/// `MLBUILD_SANDBOX=namespaces` forces [`Isolation::Namespaces`] without falling back, so
/// [`run`] reports why it does not work. Call [`set_init_program`] before, if needed.
pub fn probe() -> Isolation {
    probe_result().isolation
}

/// Why namespaces are not used (for the caller's one-time warning), if they are not.
pub fn probe_failure() -> Option<&'static str> {
    probe_result().why_not.as_deref()
}

fn probe_result() -> &'static ProbeResult {
    PROBE.get_or_init(|| match std::env::var(MODE_ENV).ok().as_deref() {
        Some("plain") => ProbeResult {
            isolation: Isolation::Plain,
            why_not: Some(format!("`{MODE_ENV}=plain` is set")),
        },
        Some("namespaces") => ProbeResult {
            isolation: Isolation::Namespaces,
            why_not: None,
        },
        _ => match try_namespaces() {
            Ok(()) => ProbeResult {
                isolation: Isolation::Namespaces,
                why_not: None,
            },
            Err(e) => ProbeResult {
                isolation: Isolation::Plain,
                why_not: Some(e.to_string()),
            },
        },
    })
}

fn try_namespaces() -> io::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("mlbuild-sandbox-probe")
        .tempdir()?;
    let root = dir.path().to_path_buf();
    let true_bin = ["/bin/true", "/usr/bin/true"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no `true` binary to probe with"))?;
    let spec = SandboxSpec {
        argv: vec![true_bin.to_string_lossy().into_owned()],
        cwd: root.join("exec"),
        env: BTreeMap::new(),
        exec_root: root.join("exec"),
        writable: vec![],
        tmp_dir: root.join("tmp"),
        expose_readonly: vec![],
        hide: vec![],
        binds: vec![],
        network: false,
        timeout: Some(Duration::from_secs(20)),
        stdout: root.join("stdout"),
        stderr: root.join("stderr"),
    };
    std::fs::create_dir_all(&spec.exec_root)?;
    let outcome = run(&spec, Isolation::Namespaces)?;
    match outcome.status {
        ExitStatusKind::Exited(0) => Ok(()),
        other => {
            let stderr = std::fs::read_to_string(&spec.stderr).unwrap_or_default();
            Err(io::Error::other(format!(
                "namespace sandbox probe ended with {other:?}: {}",
                stderr.trim()
            )))
        }
    }
}

/// Run one action to completion (synchronous; call it from a blocking thread).
/// `Err` means the sandbox itself could not be set up; anything the action does,
/// including not existing, is reported in [`Outcome::status`].
pub fn run(spec: &SandboxSpec, isolation: Isolation) -> io::Result<Outcome> {
    validate(spec)?;
    match isolation {
        Isolation::Plain => plain::run(spec),
        #[cfg(target_os = "linux")]
        Isolation::Namespaces => namespace::run(spec, &init_program()),
        #[cfg(not(target_os = "linux"))]
        Isolation::Namespaces => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "namespace sandboxing is only available on Linux",
        )),
    }
}

/// In a child forked by `parent` (between fork and exec: async-signal-safe calls only):
/// have the kernel SIGKILL this process when `parent` dies, then make sure `parent` had
/// not died already, since the signal is only sent for a death after it is armed. The
/// setting survives `execve` of anything but set-user-ID programs.
#[cfg(target_os = "linux")]
pub(crate) fn die_with_parent(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: prctl and getppid are plain syscalls on this process.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::getppid() != parent {
            // Re-parented: whoever forked us is gone, and so is the build.
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    Ok(())
}

fn validate(spec: &SandboxSpec) -> io::Result<()> {
    let invalid = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
    if spec.argv.is_empty() {
        return invalid("sandbox spec has an empty `argv`".into());
    }
    let named: [(&str, &Path); 5] = [
        ("cwd", &spec.cwd),
        ("exec_root", &spec.exec_root),
        ("tmp_dir", &spec.tmp_dir),
        ("stdout", &spec.stdout),
        ("stderr", &spec.stderr),
    ];
    let listed = spec
        .writable
        .iter()
        .map(|p| ("writable", p.as_path()))
        .chain(
            spec.expose_readonly
                .iter()
                .map(|p| ("expose_readonly", p.as_path())),
        )
        .chain(spec.hide.iter().map(|p| ("hide", p.as_path())))
        .chain(
            spec.binds
                .iter()
                .flat_map(|b| [("bind", b.host.as_path()), ("bind", b.inside.as_path())]),
        );
    for (what, path) in named.into_iter().chain(listed) {
        if !path.is_absolute() {
            return invalid(format!(
                "sandbox `{what}` path `{}` is not absolute",
                path.display()
            ));
        }
    }
    Ok(())
}
