//! Process-wide registry of running actions' process groups.
//!
//! On Ctrl-C or SIGTERM the caller must stop every running action at once, from any
//! thread, without knowing which threads run them; the main type is [`Registration`], a
//! guard that keeps one process group listed while its action runs.

use std::collections::BTreeSet;
use std::sync::Mutex;

static RUNNING: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// Lists a process group until dropped. Drop it after the leader has exited but before
/// it is reaped: until then its pid (and so the pgid) cannot be reused by the kernel, so
/// `kill_all_running` never hits an unrelated process group.
pub(crate) struct Registration {
    pgid: i32,
}

pub(crate) fn register(pgid: i32) -> Registration {
    lock().insert(pgid);
    Registration { pgid }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock().remove(&self.pgid);
    }
}

fn lock() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    // A panic elsewhere while holding the lock cannot leave the set inconsistent.
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// SIGKILL the process group of every running action (for Ctrl-C / SIGTERM handling).
/// In namespace mode this kills the sandbox's init, and with it everything inside.
/// Safe to call from any thread (not from a raw signal handler: it takes a lock).
pub fn kill_all_running() {
    for &pgid in lock().iter() {
        // SAFETY: plain syscall; a group that already exited yields ESRCH, ignored.
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
    }
}

/// SIGKILL one process group (used on timeout).
pub(crate) fn kill_group(pgid: i32) {
    // SAFETY: plain syscall on a group we still hold registered (not yet reaped).
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}
