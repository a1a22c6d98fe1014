//! Parent side of the Linux namespace sandbox: spawns the init program and interprets
//! what it reports.
//!
//! The caller is multi-threaded, so nothing runs between fork and exec here: the init
//! gets one socket as its stdin (the spec in, status records out) and arms its own
//! parent-death signal, which lets the standard library start it with `posix_spawn`
//! (`vfork` semantics: no copy of the caller's page tables, which for a large build
//! was most of an action's start-up cost). All namespace and mount work happens in the
//! single-threaded init (see `init.rs`), by default the small `mlbuild-sandbox-init`
//! program installed beside the caller. The entry point is [`run`].

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt as _;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Instant;

use crate::protocol::{path_bytes, InitSpec, Record, INIT_ARG, INIT_ENV};
use crate::wait::{self, Waited};
use crate::{plain, registry, ExitStatusKind, InitProgram, Outcome, SandboxSpec};

pub(crate) fn run(spec: &SandboxSpec, init_program: &InitProgram) -> io::Result<Outcome> {
    // Bind-mount sources must exist before the sandbox is built.
    for dir in spec.writable.iter().chain([&spec.tmp_dir]) {
        std::fs::create_dir_all(dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create sandbox dir `{}`: {e}", dir.display()),
            )
        })?;
    }
    if !spec.exec_root.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "exec root `{}` is not a directory",
                spec.exec_root.display()
            ),
        ));
    }
    let (stdout, stderr) = plain::open_outputs(spec)?;
    let wire = serde_json::to_vec(&to_init_spec(spec))
        .map_err(|e| io::Error::other(format!("cannot encode sandbox spec: {e}")))?;

    // Both ends are close-on-exec here, so children spawned concurrently by other
    // threads never inherit them (which would hold the socket open); the child's end
    // becomes the init's stdin. No `pre_exec` closure: that would make the standard
    // library fork instead of `posix_spawn`. The init arms the parent-death signal
    // itself and then checks that `parent` is still its parent, which covers mlbuild
    // dying while the init program is still loading.
    let (ours, theirs) = socket_pair()?;
    let parent = std::process::id() as libc::pid_t;
    let mut cmd = Command::new(init_program.exec_path());
    cmd.arg(INIT_ARG)
        .env_clear()
        .env(INIT_ENV, format!("0,0,{parent}"))
        .current_dir("/")
        .stdin(Stdio::from(theirs))
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    let start = Instant::now();
    let child = cmd.spawn().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot start sandbox init `{}`: {e}",
                init_program.path.display()
            ),
        )
    })?;
    let registration = registry::register(child.id() as i32);
    // Drop our copy of the child's end (the Command holds it).
    drop(cmd);

    // A write error (EPIPE) means the init died early; its status explains why. Then
    // end our direction, so the init reads the spec to its end.
    let _ = send_all(&ours, &wire);
    // SAFETY: shutdown of the write direction of a socket we own.
    unsafe { libc::shutdown(ours.as_raw_fd(), libc::SHUT_WR) };
    let status_r = ours;
    set_nonblocking(&status_r);

    let deadline = spec.timeout.map(|t| start + t);
    let (waited, records) = match wait::pidfd_open(child.id() as i32) {
        Some(pidfd) => wait_for_init(child, registration, &pidfd, status_r, deadline)?,
        // Old kernels: wait for the init's full exit, then read what it reported.
        None => {
            let waited = wait::wait_child(child, registration, spec.timeout)?;
            (waited, read_records(&status_r, &mut Vec::new())?)
        }
    };
    let duration = start.elapsed();
    let status = interpret(waited, &records, &init_program.path)?;
    Ok(Outcome { status, duration })
}

/// Wait until the init reports the action's end (or exits, or the deadline passes),
/// whichever comes first.
fn wait_for_init(
    mut child: Child,
    registration: registry::Registration,
    pidfd: &wait::Fd,
    status_r: OwnedFd,
    deadline: Option<Instant>,
) -> io::Result<(Waited, Vec<Record>)> {
    let mut bytes = Vec::new();
    let mut pipe_open = true;
    loop {
        let timeout_ms = match deadline {
            None => -1,
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    // Timed out: kill everything, then reap as usual.
                    registry::kill_group(child.id() as i32);
                    wait::wait_exited(child.id() as i32, None)?;
                    drop(registration);
                    child.wait()?;
                    return Ok((Waited::TimedOut, read_records(&status_r, &mut bytes)?));
                }
                (d - now).as_millis().clamp(1, i32::MAX as u128) as i32
            }
        };
        let mut fds = [
            libc::pollfd {
                fd: pidfd.fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                // A negative fd is ignored by poll: stop watching the pipe after EOF.
                fd: if pipe_open { status_r.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
        if r < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if fds[1].revents != 0 {
            let before = bytes.len();
            let records = read_records(&status_r, &mut bytes)?;
            pipe_open = bytes.len() > before || fds[1].revents & libc::POLLHUP == 0;
            let finished = records
                .iter()
                .find(|r| matches!(r, Record::Finished(_) | Record::Signaled(_)));
            if let Some(last) = finished {
                // Everything in the sandbox is dead; only the init's exit remains.
                let code = match last {
                    Record::Finished(code) => *code,
                    _ => 0,
                };
                drop(registration);
                wait::reap_in_background(child);
                return Ok((Waited::Exited(ExitStatus::from_raw(code << 8)), records));
            }
        }
        if fds[0].revents != 0 {
            drop(registration);
            let status = child.wait()?;
            return Ok((Waited::Exited(status), read_records(&status_r, &mut bytes)?));
        }
    }
}

fn interpret(
    waited: Waited,
    records: &[Record],
    init_program: &Path,
) -> io::Result<ExitStatusKind> {
    for r in records {
        if let Record::SetupFailed(msg) = r {
            return Err(io::Error::other(format!("sandbox setup failed: {msg}")));
        }
    }
    let status = match waited {
        Waited::TimedOut => return Ok(ExitStatusKind::TimedOut),
        Waited::Exited(status) => wait::status_kind(status),
    };
    for r in records {
        match r {
            Record::ExecFailed(msg) => return Ok(ExitStatusKind::SpawnFailed(msg.clone())),
            Record::Signaled(sig) => return Ok(ExitStatusKind::Signaled(*sig)),
            _ => {}
        }
    }
    if !records.contains(&Record::Hello) && !matches!(status, ExitStatusKind::Signaled(_)) {
        return Err(io::Error::other(format!(
            "sandbox init program `{}` did not act as sandbox init ({status:?}); \
             help: call `mlbuild_sandbox::maybe_run_init()` first thing in its `main`, \
             or point `set_init_program` at a binary that does",
            init_program.display()
        )));
    }
    Ok(status)
}

fn to_init_spec(spec: &SandboxSpec) -> InitSpec {
    let paths = |v: &[std::path::PathBuf]| v.iter().map(|p| path_bytes(p)).collect();
    InitSpec {
        argv: spec.argv.clone(),
        cwd: path_bytes(&spec.cwd),
        env: spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        exec_root: path_bytes(&spec.exec_root),
        writable: paths(&spec.writable),
        tmp_dir: path_bytes(&spec.tmp_dir),
        expose_readonly: paths(&spec.expose_readonly),
        hide: paths(&spec.hide),
        binds: spec
            .binds
            .iter()
            .map(|b| (path_bytes(&b.host), path_bytes(&b.inside), b.writable))
            .collect(),
        network: spec.network,
    }
}

/// Append whatever the init has written so far to `bytes` and decode all of it. Reads
/// never block: a copy of the write end may linger for a moment in a sibling forked by
/// another thread, so EOF is not a reliable end marker.
fn read_records(status_r: &OwnedFd, bytes: &mut Vec<u8>) -> io::Result<Vec<Record>> {
    let fd = status_r.as_raw_fd();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reading into a local buffer from a descriptor we own.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            bytes.extend_from_slice(&buf[..n as usize]);
            continue;
        }
        if n == 0 {
            break;
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            // The init exited without reading all of the spec: as good as the end.
            io::ErrorKind::WouldBlock | io::ErrorKind::ConnectionReset => break,
            io::ErrorKind::Interrupted => continue,
            _ => return Err(err),
        }
    }
    Ok(Record::decode_all(bytes))
}

/// Writes all of `bytes` to a socket without raising SIGPIPE when the peer is gone
/// (`MSG_NOSIGNAL`): the caller may have restored its default action.
fn send_all(sock: &OwnedFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: sending from a valid buffer on a socket we own.
        let n = unsafe {
            libc::send(
                sock.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// A connected pair of close-on-exec Unix stream sockets.
fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: valid array of two ints.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these two fresh descriptors.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_nonblocking(fd: &OwnedFd) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}
