//! Child side of the Linux namespace sandbox: the re-executed init program.
//!
//! It runs single-threaded (before the host program starts any thread), so it may
//! allocate and do real work between `fork` and `execve`, which the multi-threaded
//! caller cannot. Three processes are involved: the *outer* init unshares the namespaces
//! and waits; its child is PID 1 of the new PID namespace, builds the root filesystem
//! (see `mounts.rs`), then forks the *action* and reaps zombies until the action exits,
//! after which the kernel kills anything the action left behind. Entry point: [`run_init`].

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};

use crate::mounts;
use crate::protocol::{bytes_path, InitSpec, Record, EXEC_FAILED_CODE};

/// Become the sandbox init described by the `MLBUILD_SANDBOX_INIT` value; returns the
/// exit code for the outer init process.
pub(crate) fn run_init(value: &OsStr) -> i32 {
    let Some((spec_fd, status_fd, parent)) = parse_value(value) else {
        eprintln!("mlbuild-sandbox: malformed MLBUILD_SANDBOX_INIT value");
        return 125;
    };
    // The parent armed the parent-death signal before exec; arm it again in case this
    // program dropped it on exec (a set-user-ID init), and stop if mlbuild is gone.
    if let Some(parent) = parent {
        if crate::die_with_parent(parent).is_err() {
            return 125;
        }
    }
    // One socket for both directions (the parent spawns us with it as stdin, which lets
    // it use `posix_spawn` instead of forking its large multi-threaded address space):
    // the status side gets its own descriptor above stdio, and stdin becomes /dev/null
    // once the spec is read, so the action never inherits the socket.
    let status_fd = if status_fd == spec_fd {
        // SAFETY: fcntl on a descriptor the parent handed us.
        let dup = unsafe { libc::fcntl(spec_fd, libc::F_DUPFD_CLOEXEC, 3) };
        if dup < 0 {
            eprintln!(
                "mlbuild-sandbox: cannot duplicate the status socket: {}",
                io::Error::last_os_error()
            );
            return 125;
        }
        dup
    } else {
        status_fd
    };
    // SAFETY: the parent handed us these descriptors (or we just duplicated one) and
    // nothing else owns them.
    let (mut spec_in, status) =
        unsafe { (File::from_raw_fd(spec_fd), File::from_raw_fd(status_fd)) };
    // Close-on-exec so the action's successful execve closes its copy, while failures
    // before that can still be reported.
    set_cloexec(status_fd);
    let mut status = Status { file: status };
    status.send(&Record::Hello);

    let mut raw = Vec::new();
    if let Err(e) = spec_in.read_to_end(&mut raw) {
        return status.setup_failed(format!("cannot read sandbox spec: {e}"));
    }
    drop(spec_in);
    if spec_fd == 0 {
        if let Err(e) = null_stdin() {
            return status.setup_failed(format!("cannot open `/dev/null` as stdin: {e}"));
        }
    }
    let spec: InitSpec = match serde_json::from_slice(&raw) {
        Ok(spec) => spec,
        Err(e) => return status.setup_failed(format!("cannot decode sandbox spec: {e}")),
    };
    match outer(&spec, &mut status) {
        Ok(code) => code,
        Err(msg) => status.setup_failed(msg),
    }
}

struct Status {
    file: File,
}

impl Status {
    fn send(&mut self, record: &Record) {
        // Nothing useful to do if the parent is gone.
        let _ = self.file.write_all(&record.encode());
    }

    fn setup_failed(&mut self, msg: String) -> i32 {
        eprintln!("mlbuild-sandbox: {msg}");
        self.send(&Record::SetupFailed(msg));
        125
    }
}

/// `<spec fd>,<status fd>[,<parent pid>]`; both fds are the same socket (`0,0`) when
/// started by this crate.
fn parse_value(value: &OsStr) -> Option<(i32, i32, Option<libc::pid_t>)> {
    let mut parts = value.to_str()?.split(',');
    let spec = parts.next()?.parse().ok()?;
    let status = parts.next()?.parse().ok()?;
    let parent = match parts.next() {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    Some((spec, status, parent))
}

/// The outer init: create the namespaces, then wait for PID 1 and mirror its exit. It
/// dies with mlbuild (the parent-death signal armed before exec), PID 1 dies with it (see
/// below), and the kernel kills everything in a PID namespace whose PID 1 dies.
fn outer(spec: &InitSpec, status: &mut Status) -> Result<i32, String> {
    // SAFETY: trivial getters.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    if !spec.network {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: single-threaded here, as unshare(CLONE_NEWUSER) requires.
    if unsafe { libc::unshare(flags) } < 0 {
        return Err(format!(
            "unshare of user/mount/pid namespaces failed: {}",
            io::Error::last_os_error()
        ));
    }
    // Map ourselves to root inside; `deny` setgroups is required before an unprivileged
    // gid_map write and keeps the action from dropping supplementary groups.
    write_proc("/proc/self/setgroups", "deny", true)?;
    write_proc("/proc/self/uid_map", &format!("0 {uid} 1\n"), false)?;
    write_proc("/proc/self/gid_map", &format!("0 {gid} 1\n"), false)?;

    // PID 1 learns whether this process is still alive from this pipe: its parent is
    // outside its PID namespace, so `getppid` says 0 whoever the parent is.
    let (alive_r, alive_w) = alive_pipe()?;
    // SAFETY: single-threaded process; the child only runs our own code.
    let pid1 = unsafe { libc::fork() };
    if pid1 < 0 {
        return Err(format!(
            "fork of sandbox pid 1 failed: {}",
            io::Error::last_os_error()
        ));
    }
    if pid1 == 0 {
        drop(alive_w);
        // SAFETY: plain prctl.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        if parent_gone(&alive_r) {
            // The outer init died before the signal was armed; so did mlbuild.
            // SAFETY: leave without running anything else.
            unsafe { libc::_exit(125) };
        }
        drop(alive_r);
        let code = match pid_one(spec, status) {
            Ok(code) => code,
            Err(msg) => status.setup_failed(msg),
        };
        // SAFETY: leave without running the outer init's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    drop(alive_r);
    let wstatus = wait_for(pid1);
    drop(alive_w);
    if libc::WIFEXITED(wstatus) {
        let code = libc::WEXITSTATUS(wstatus);
        status.send(&Record::Finished(code));
        Ok(code)
    } else {
        let sig = libc::WTERMSIG(wstatus);
        status.send(&Record::Signaled(sig));
        Ok(128 + sig)
    }
}

/// PID 1 inside the sandbox: build the root, start the action, reap until it exits.
fn pid_one(spec: &InitSpec, status: &mut Status) -> Result<i32, String> {
    mounts::build_root(spec)?;
    // Deterministic hostname; failure is harmless.
    let host = b"mlbuild";
    // SAFETY: valid buffer and length.
    unsafe { libc::sethostname(host.as_ptr().cast(), host.len()) };
    if !spec.network {
        // Loopback lets actions use 127.0.0.1 between their own processes; optional.
        let _ = loopback_up();
    }
    let cwd = bytes_path(&spec.cwd);
    std::env::set_current_dir(&cwd)
        .map_err(|e| format!("cannot enter working directory `{}`: {e}", cwd.display()))?;

    let argv =
        cstrings(spec.argv.iter().map(|s| s.as_bytes())).ok_or("argv contains a NUL byte")?;
    let envp = cstrings(
        spec.env
            .iter()
            .map(|(k, v)| format!("{k}={v}").into_bytes()),
    )
    .ok_or("environment contains a NUL byte")?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|c| c.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());

    // SAFETY: single-threaded; the child only execs or exits.
    let action = unsafe { libc::fork() };
    if action < 0 {
        return Err(format!(
            "fork of the action failed: {}",
            io::Error::last_os_error()
        ));
    }
    if action == 0 {
        reset_signals();
        if let Err(e) = drop_privileges() {
            let msg = format!("cannot drop capabilities: {e}");
            status.send(&Record::SetupFailed(msg));
            // SAFETY: leave the forked child immediately.
            unsafe { libc::_exit(125) };
        }
        // SAFETY: both arrays are NUL-terminated and outlive the call.
        unsafe { libc::execve(argv_ptrs[0], argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
        let err = io::Error::last_os_error();
        let program = &spec.argv[0];
        let msg = match err.raw_os_error() {
            Some(libc::ENOENT) => format!("command not found: `{program}`"),
            Some(libc::EACCES) => format!("permission denied: `{program}`"),
            _ => format!("cannot execute `{program}`: {err}"),
        };
        eprintln!("mlbuild-sandbox: {msg}");
        status.send(&Record::ExecFailed(msg));
        // SAFETY: leave the forked child immediately.
        unsafe { libc::_exit(EXEC_FAILED_CODE) };
    }
    // As PID 1 we inherit every orphan; reap them all until the action itself exits.
    loop {
        let mut wstatus = 0;
        // SAFETY: valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut wstatus, 0) };
        if pid < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("waiting for the action failed: {err}"));
        }
        if pid != action {
            continue;
        }
        if libc::WIFEXITED(wstatus) {
            return Ok(libc::WEXITSTATUS(wstatus));
        }
        let sig = libc::WTERMSIG(wstatus);
        status.send(&Record::Signaled(sig));
        return Ok(128 + sig);
    }
}

/// A close-on-exec pipe whose write end only the outer init holds.
fn alive_pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0; 2];
    // SAFETY: valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(format!(
            "cannot create a pipe: {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: pipe2 just returned these two fresh descriptors.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// True when every write end of the pipe is closed: the outer init is dead.
fn parent_gone(alive_r: &OwnedFd) -> bool {
    let mut pfd = libc::pollfd {
        fd: alive_r.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    let r = unsafe { libc::poll(&mut pfd, 1, 0) };
    r > 0 && pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0
}

fn wait_for(pid: i32) -> i32 {
    loop {
        let mut wstatus = 0;
        // SAFETY: valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut wstatus, 0) };
        if r == pid {
            return wstatus;
        }
        if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            // Cannot happen for our own child; report it as a generic failure.
            return 125 << 8;
        }
    }
}

fn cstrings<I, B>(items: I) -> Option<Vec<CString>>
where
    I: Iterator<Item = B>,
    B: Into<Vec<u8>>,
{
    items.map(|b| CString::new(b).ok()).collect()
}

fn write_proc(path: &str, content: &str, optional: bool) -> Result<(), String> {
    match std::fs::write(path, content) {
        Ok(()) => Ok(()),
        // Kernels before 3.19 have no setgroups file.
        Err(e) if optional && e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot write `{path}`: {e}")),
    }
}

/// Makes descriptor 0 `/dev/null` again (the action's stdin, as for a plain process).
fn null_stdin() -> io::Result<()> {
    // Descriptor 0 is closed, so the lowest free descriptor is usually 0 itself.
    let fd = File::open("/dev/null")?.into_raw_fd();
    if fd != 0 {
        // SAFETY: dup2 onto descriptor 0, then close the descriptor we own.
        let r = unsafe {
            let r = libc::dup2(fd, 0);
            libc::close(fd);
            r
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn set_cloexec(fd: i32) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
}

/// Undo what the Rust runtime and the caller changed: Rust ignores SIGPIPE, and the
/// signal mask is inherited across fork and exec.
fn reset_signals() {
    // SAFETY: plain signal-state syscalls on our own process.
    unsafe {
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// The action is root in its user namespace; without this it could remount our
/// read-only binds writable. Empty the bounding set (so execve grants root nothing),
/// then clear the current sets, and forbid privilege gain through setuid binaries.
fn drop_privileges() -> io::Result<()> {
    // SAFETY: prctl/capset with valid arguments on our own process.
    unsafe {
        for cap in 0..64 {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EINVAL) {
                    break; // past the kernel's last capability
                }
                return Err(err);
            }
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let header = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let data = [Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Bring up `lo` in the fresh network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: socket/ioctl on a zeroed ifreq naming "lo"; the socket is closed below.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let mut result = Ok(());
        if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) < 0 {
            result = Err(io::Error::last_os_error());
        } else {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) < 0 {
                result = Err(io::Error::last_os_error());
            }
        }
        libc::close(sock);
        result
    }
}
