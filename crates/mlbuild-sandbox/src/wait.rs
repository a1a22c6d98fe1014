//! Waiting for an action's process with an optional deadline, shared by both isolation
//! modes.
//!
//! The leader is waited for without reaping it first (`waitid` with `WNOWAIT`), so its
//! process group can be killed and unregistered while its pid is still reserved; the
//! main entry point is [`wait_child`].

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use crate::registry;

/// How waiting ended.
pub(crate) enum Waited {
    Exited(ExitStatus),
    TimedOut,
}

/// Wait for `child` (the leader of its own process group, registered as such), killing
/// the group if `timeout` elapses. Unregisters the group, then reaps the child.
pub(crate) fn wait_child(
    mut child: Child,
    registration: registry::Registration,
    timeout: Option<Duration>,
) -> io::Result<Waited> {
    let pid = child.id() as i32;
    let exited = match timeout {
        None => {
            wait_exited(pid, None)?;
            true
        }
        Some(t) => wait_exited(pid, Some(Instant::now() + t))?,
    };
    if !exited {
        registry::kill_group(pid);
        wait_exited(pid, None)?;
    }
    drop(registration);
    let status = child.wait()?;
    Ok(if exited {
        Waited::Exited(status)
    } else {
        Waited::TimedOut
    })
}

/// Block until `pid` has exited (without reaping it) or `deadline` passes; returns
/// whether it exited.
pub(crate) fn wait_exited(pid: i32, deadline: Option<Instant>) -> io::Result<bool> {
    let Some(deadline) = deadline else {
        loop {
            match waitid_nowait(pid, 0) {
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    };
    // A pidfd lets poll() sleep exactly until exit or deadline; older kernels get a
    // 5 ms polling loop instead.
    match pidfd_open(pid) {
        Some(fd) => loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as i32;
            let mut pfd = libc::pollfd {
                fd: fd.fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r > 0 {
                return Ok(true);
            }
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        },
        None => loop {
            if waitid_nowait(pid, libc::WNOHANG)? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(5));
        },
    }
}

/// `waitid(P_PID, pid, WEXITED | WNOWAIT | extra)`; true if the child has exited.
fn waitid_nowait(pid: i32, extra: i32) -> io::Result<bool> {
    // SAFETY: siginfo_t is plain data; zeroed is a valid "nothing happened" value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a siginfo_t we own.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOWAIT | extra,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: reading si_pid of a siginfo filled (or left zeroed) by waitid.
    Ok(unsafe { info.si_pid() } != 0)
}

pub(crate) struct Fd {
    pub(crate) fd: i32,
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own this descriptor.
        unsafe {
            libc::close(self.fd);
        }
    }
}

#[cfg(target_os = "linux")]
pub(crate) fn pidfd_open(pid: i32) -> Option<Fd> {
    // SAFETY: plain syscall; returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    (fd >= 0).then_some(Fd { fd: fd as i32 })
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn pidfd_open(_pid: i32) -> Option<Fd> {
    None
}

/// Translate a reaped status into the public kind.
pub(crate) fn status_kind(status: ExitStatus) -> crate::ExitStatusKind {
    match (status.code(), status.signal()) {
        (Some(code), _) => crate::ExitStatusKind::Exited(code),
        (None, Some(sig)) => crate::ExitStatusKind::Signaled(sig),
        (None, None) => crate::ExitStatusKind::Exited(-1),
    }
}

/// Reap `child` without blocking the caller: a process that already did its job may
/// still spend milliseconds in its exit path (namespace teardown). One shared thread
/// does the waiting; if it cannot be started, wait inline.
pub(crate) fn reap_in_background(child: Child) {
    use std::sync::mpsc::{channel, Sender};
    use std::sync::{Mutex, OnceLock};

    static REAPER: OnceLock<Option<Mutex<Sender<Child>>>> = OnceLock::new();
    let reaper = REAPER.get_or_init(|| {
        let (tx, rx) = channel::<Child>();
        std::thread::Builder::new()
            .name("mlbuild-sandbox-reaper".into())
            .spawn(move || {
                for mut child in rx {
                    let _ = child.wait();
                }
            })
            .ok()
            .map(|_| Mutex::new(tx))
    });
    let unsent = match reaper {
        Some(tx) => match tx.lock().unwrap_or_else(|e| e.into_inner()).send(child) {
            Ok(()) => None,
            Err(e) => Some(e.0),
        },
        None => Some(child),
    };
    if let Some(mut child) = unsent {
        let _ = child.wait();
    }
}
