//! Plain-process fallback used where namespaces are unavailable (or forced off).
//!
//! It gives no isolation, only what a build still needs everywhere: the exact
//! environment, working directory, output capture, an own process group for killing,
//! the timeout, and (on Linux) a watchdog in that group that kills it if mlbuild dies,
//! since no PID namespace does. The entry point is [`run`].

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
    #[cfg(target_os = "linux")]
    let watch = watchdog::Watch::new(&mut cmd)?;
    let start = Instant::now();
    let spawned = cmd.spawn();
    #[cfg(target_os = "linux")]
    let mut watchdog = watch.spawned();
    let child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let status = ExitStatusKind::SpawnFailed(spawn_error_message(&spec.argv[0], &e));
            return Ok(Outcome {
                status,
                duration: start.elapsed(),
            });
        }
    };
    #[cfg(target_os = "linux")]
    watchdog.guards(child.id() as libc::pid_t);
    let registration = registry::register(child.id() as i32);
    let waited = wait::wait_child(child, registration, spec.timeout);
    // The action's leader is gone: the watchdog kills whatever it left in its group.
    #[cfg(target_os = "linux")]
    drop(watchdog);
    let waited = waited?;
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

/// The plain mode's watchdog. Without a PID namespace nothing kills an action's children
/// when mlbuild is killed (`kill -9`, OOM): the action's leader gets the parent-death
/// signal, but a shell's `sleep` or a training's data loaders would run on. So between
/// fork and exec the leader clones a watchdog into its process group, as a child of
/// mlbuild (`CLONE_PARENT`, so the action never sees an unknown child of its own). The
/// watchdog blocks reading a socket whose other end only mlbuild holds; when that end
/// closes because mlbuild died, it SIGKILLs the group, itself included. When the action
/// ends, mlbuild kills what is left of the group itself and reaps the watchdog. Being in
/// the group, the watchdog keeps the group id from being reused while it exists, so
/// neither can ever kill an unrelated group.
#[cfg(target_os = "linux")]
mod watchdog {
    use std::io::{self, Read};
    use std::os::fd::{AsRawFd, RawFd};
    use std::os::unix::net::UnixStream;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    /// The two ends of the watchdog's socket while the action is spawned.
    pub(super) struct Watch {
        /// mlbuild's end: open while mlbuild lives and the action runs.
        ours: UnixStream,
        /// The watchdog's end; closed here once the action is spawned.
        theirs: UnixStream,
    }

    /// A running watchdog: dropping it kills the action's process group, watchdog
    /// included, and reaps the watchdog.
    pub(super) struct Running {
        ours: Option<UnixStream>,
        pid: Option<libc::pid_t>,
        /// The action's process group, once the action has started.
        group: Option<libc::pid_t>,
    }

    impl Watch {
        /// Makes `cmd` start a watchdog before it executes the action.
        pub(super) fn new(cmd: &mut Command) -> io::Result<Watch> {
            // Close-on-exec, so no other program mlbuild starts keeps `ours` open.
            let (ours, theirs) = UnixStream::pair()?;
            let fd = theirs.as_raw_fd();
            let parent = std::process::id() as libc::pid_t;
            // SAFETY: the closure only makes async-signal-safe syscalls (setpgid, prctl,
            // getppid, clone, write) and the watchdog only raw syscalls until it exits.
            unsafe {
                cmd.pre_exec(move || start(parent, fd));
            }
            Ok(Watch { ours, theirs })
        }

        /// After `spawn`, successful or not: the watchdog's pid, which the leader wrote
        /// into the socket before exec, so it is there when `spawn` returns.
        pub(super) fn spawned(self) -> Running {
            let Watch { mut ours, theirs } = self;
            drop(theirs);
            let mut buf = [0u8; 4];
            let pid = ours
                .set_nonblocking(true)
                .and_then(|()| ours.read_exact(&mut buf))
                .ok()
                .map(|()| libc::pid_t::from_ne_bytes(buf));
            Running {
                ours: Some(ours),
                pid,
                group: None,
            }
        }
    }

    impl Running {
        /// The action started as the leader of process group `group`.
        pub(super) fn guards(&mut self, group: libc::pid_t) {
            self.group = Some(group);
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            // The watchdog would see its socket close and do the same; killing here
            // does not depend on that, and the group id cannot have been reused: the
            // watchdog, a member, is this process's child and not reaped yet.
            drop(self.ours.take());
            let Some(pid) = self.pid else { return };
            // SAFETY: plain syscalls on our own, unreaped child and its group.
            unsafe {
                match self.group {
                    Some(group) => libc::killpg(group, libc::SIGKILL),
                    // The action never started; the watchdog is alone in its group.
                    None => libc::kill(pid, libc::SIGKILL),
                };
            }
            loop {
                // SAFETY: waiting for our own child; a null status pointer is allowed.
                let r = unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
                if r >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
        }
    }

    /// In the action's leader, between fork and exec.
    fn start(parent: libc::pid_t, fd: RawFd) -> io::Result<()> {
        // SAFETY: plain syscalls; see `Watch::new`.
        unsafe {
            // Already done by `process_group(0)`; repeated so that the group killed
            // below can only ever be the action's own.
            if libc::setpgid(0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            crate::die_with_parent(parent)?;
            let group = libc::getpid();
            let pid = clone_sibling();
            if pid < 0 {
                return Err(io::Error::last_os_error());
            }
            if pid == 0 {
                watch(fd, group);
            }
            let bytes = (pid as libc::pid_t).to_ne_bytes();
            libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        }
        Ok(())
    }

    /// `clone(CLONE_PARENT)`: a copy of this process whose parent is mlbuild.
    unsafe fn clone_sibling() -> libc::c_long {
        let flags = (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong;
        // No new stack: like fork, the child continues on its copy of this one.
        #[cfg(target_arch = "s390x")]
        // SAFETY: see above; s390x takes the stack first.
        let r = unsafe { libc::syscall(libc::SYS_clone, 0usize, flags, 0usize, 0usize, 0usize) };
        #[cfg(not(target_arch = "s390x"))]
        // SAFETY: see above.
        let r = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
        r
    }

    /// The watchdog: hold nothing but its end of the socket, wait for the other end to
    /// close, kill the group. Raw syscalls only (it is a copy of a multi-threaded
    /// process's fork, and never executes anything).
    fn watch(fd: RawFd, group: libc::pid_t) -> ! {
        // SAFETY: raw syscalls on this process's own descriptors and signal state.
        unsafe {
            close_all_but(fd);
            // mlbuild's own handlers (Ctrl-C) mean nothing here.
            for sig in 1..32 {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            let mut byte = 0u8;
            loop {
                let n = libc::read(fd, (&mut byte as *mut u8).cast(), 1);
                if n < 0 && *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                // EOF (or an error, or bytes nobody sends): the action is over either way.
                break;
            }
            libc::kill(-group, libc::SIGKILL);
            libc::_exit(0)
        }
    }

    /// Closes every descriptor except `keep` (the action's log files, mlbuild's pipes,
    /// sockets and locks), so the watchdog holds nothing open for anyone.
    unsafe fn close_all_but(keep: RawFd) {
        // SAFETY: close_range and close on descriptor numbers only.
        unsafe {
            let high = libc::c_uint::MAX;
            let low_ok = keep == 0
                || libc::syscall(libc::SYS_close_range, 0u32, (keep - 1) as u32, 0u32) == 0;
            let high_ok = libc::syscall(libc::SYS_close_range, (keep + 1) as u32, high, 0u32) == 0;
            if low_ok && high_ok {
                return;
            }
            // Kernels before 5.9: close them one by one, up to the descriptor limit.
            let mut limit: libc::rlimit = std::mem::zeroed();
            let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                limit.rlim_cur.min(1 << 20) as RawFd
            } else {
                1 << 16
            };
            for fd in 0..max {
                if fd != keep {
                    libc::close(fd);
                }
            }
        }
    }
}
